//! `hull images`.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use clap::Args;
use hull_api::types::ImageSummary;
use hull_api::Client;

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Show full image ids.
    #[arg(long)]
    no_trunc: bool,
    /// Show only image ids.
    #[arg(short, long)]
    quiet: bool,
    /// Show the digests images were pulled by.
    #[arg(long)]
    digests: bool,
}

pub async fn list(client: &Client, args: ImagesArgs) -> Result<()> {
    let mut images: Vec<ImageSummary> = client.get_json("/images/json").await?;
    images.sort_by_key(|image| std::cmp::Reverse(image.created));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut header = vec!["REPOSITORY".to_string(), "TAG".into()];
    if args.digests {
        header.push("DIGEST".into());
    }
    header.extend([
        "IMAGE ID".into(),
        "CREATED".into(),
        "SIZE".into(),
        "ROOTFS".into(),
    ]);
    let mut rows = vec![header];
    for image in &images {
        let id = image.id.trim_start_matches("sha256:");
        let id = if args.no_trunc {
            image.id.as_str()
        } else {
            &id[..id.len().min(12)]
        };
        if args.quiet {
            println!("{id}");
            continue;
        }
        let digests: Vec<(&str, &str)> = image
            .repo_digests
            .iter()
            .filter_map(|d| d.split_once('@'))
            .collect();
        let tags: Vec<(String, String)> = match (&image.repo_tags[..], &digests[..]) {
            ([], []) => vec![("<none>".into(), "<none>".into())],
            ([], digests) if args.digests => digests
                .iter()
                .map(|(repository, _)| (repository.to_string(), "<none>".into()))
                .collect(),
            ([], _) => vec![("<none>".into(), "<none>".into())],
            (tags, _) => tags.iter().map(|t| split_tag(t)).collect(),
        };
        for (repository, tag) in tags {
            let mut row = vec![repository.clone(), tag];
            if args.digests {
                let digest = digests.iter().find(|(r, _)| *r == repository);
                row.push(digest.map_or("<none>", |(_, d)| d).to_owned());
            }
            // Built in the background after a load or pull; a run waits for it.
            let rootfs = match image.rootfs_ready {
                Some(true) => "ready",
                Some(false) => "pending",
                None => "",
            };
            row.extend([
                id.to_string(),
                human_age(now - image.created),
                human_size(image.size),
                rootfs.to_owned(),
            ]);
            rows.push(row);
        }
    }
    if !args.quiet {
        print_table(&rows);
    }
    Ok(())
}

/// `name:tag` at the last colon after the last slash (a registry port is not a tag).
fn split_tag(reference: &str) -> (String, String) {
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (
            reference[..name_start + i].to_string(),
            reference[name_start + i + 1..].to_string(),
        ),
        None => (reference.to_string(), "<none>".into()),
    }
}

pub fn print_table(rows: &[Vec<String>]) {
    let mut widths = vec![0usize; rows[0].len()];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            // Characters, as `format!` pads: a cut command ends in a 3-byte `…`.
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// Like docker: "45 seconds ago", "3 minutes ago", "2 days ago".
fn human_age(seconds: i64) -> String {
    let units = [
        (365 * 24 * 3600, "year"),
        (30 * 24 * 3600, "month"),
        (7 * 24 * 3600, "week"),
        (24 * 3600, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    if seconds < 1 {
        return "Less than a second ago".into();
    }
    for (size, name) in units {
        let count = seconds / size;
        if count >= 1 {
            let plural = if count == 1 { "" } else { "s" };
            return format!("{count} {name}{plural} ago");
        }
    }
    unreachable!("seconds >= 1 matches the last unit")
}

/// Decimal units with three significant digits, as docker prints sizes.
pub fn human_size(bytes: i64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes.max(0) as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    let text = format!("{value:.3}");
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{:.*}", digits, text.parse::<f64>().unwrap_or(value));
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", units[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_after_the_registry_port() {
        assert_eq!(
            split_tag("busybox:latest"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/me/app:v1"),
            ("127.0.0.1:5000/me/app".into(), "v1".into())
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/me/app"),
            ("127.0.0.1:5000/me/app".into(), "<none>".into())
        );
    }

    #[test]
    fn sizes_and_ages_read_like_docker() {
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(human_age(45), "45 seconds ago");
        assert_eq!(human_age(3600), "1 hour ago");
        assert_eq!(human_age(3 * 24 * 3600), "3 days ago");
    }
}
