//! `hull pull`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use hull_api::types::ProgressLine;
use hull_api::{AuthFile, Client, Credentials, ProgressStream, Reference};

use crate::terminal;

/// `user:password` for the registry being pulled from.
const AUTH_ENV: &str = "HULL_REGISTRY_AUTH";
/// A docker-style `{"auths": …}` file; `~/.config/hull/auth.json` by default.
const AUTH_FILE_ENV: &str = "HULL_AUTH_FILE";

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image to pull: NAME[:TAG] or NAME@DIGEST.
    image: String,
    /// Reach the registry over plain HTTP (loopback registries always are).
    #[arg(long)]
    insecure: bool,
    /// Print only the pulled image's name.
    #[arg(short, long)]
    quiet: bool,
}

pub async fn pull(client: &Client, args: PullArgs) -> Result<()> {
    let reference = Reference::parse(&args.image)?.with_default_tag();
    let auth = credentials(reference.domain())?.map(|c| c.to_header());
    let stream = client
        .pull(&reference.to_string(), auth.as_deref(), args.insecure)
        .await?;
    follow(stream, args.quiet).await?;
    println!("{reference}");
    Ok(())
}

/// Pulls `image` unless hulld has it, as `docker run` and `docker create`
/// do, saying so on stderr so that the container's output stays its own.
pub(crate) async fn ensure_image(client: &Client, image: &str) -> Result<()> {
    let path = format!("/images/{}/json", crate::tag::encode(image));
    match client.get_json::<serde_json::Value>(&path).await {
        Ok(_) => return Ok(()),
        Err(hull_api::ClientError::Api { status, .. }) if status.as_u16() == 404 => {}
        Err(err) => return Err(err.into()),
    }
    let Ok(reference) = Reference::parse(image) else {
        // Not a name a registry knows: let the daemon say what is wrong.
        return Ok(());
    };
    let reference = reference.with_default_tag();
    eprintln!("Unable to find image '{image}' locally");
    let auth = credentials(reference.domain())?.map(|c| c.to_header());
    let stream = client
        .pull(&reference.to_string(), auth.as_deref(), false)
        .await?;
    follow(stream, true).await?;
    eprintln!("Status: Downloaded newer image for {reference}");
    Ok(())
}

/// Shows a pull's or push's progress until it ends; its error ends it.
pub(crate) async fn follow(mut stream: ProgressStream, quiet: bool) -> Result<()> {
    let mut view = View::new(terminal::is_terminal(1) && !quiet);
    while let Some(line) = stream.next().await? {
        if let Some(error) = line.error {
            bail!("{error}");
        }
        if !quiet {
            view.show(&line)?;
        }
    }
    Ok(())
}

/// The credentials for `domain`: `HULL_REGISTRY_AUTH`, else the auth file.
pub(crate) fn credentials(domain: &str) -> Result<Option<Credentials>> {
    if let Ok(pair) = std::env::var(AUTH_ENV) {
        let mut c = Credentials::parse_pair(domain, &pair)?;
        c.server_address = domain.to_owned();
        return Ok(Some(c));
    }
    let Some(path) = auth_file() else {
        return Ok(None);
    };
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let file =
        AuthFile::parse(&bytes).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(file.credentials(domain)?)
}

/// The credentials file: `HULL_AUTH_FILE`, else `~/.config/hull/auth.json`.
pub(crate) fn auth_file() -> Option<PathBuf> {
    match std::env::var_os(AUTH_FILE_ENV) {
        Some(path) => Some(PathBuf::from(path)),
        None => config_dir().map(|dir| dir.join("hull/auth.json")),
    }
}

fn config_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
}

/// Renders progress lines: on a terminal one line per layer, rewritten in
/// place as docker does; otherwise each change of status on its own line.
pub(crate) struct View {
    terminal: bool,
    /// Ids shown so far and their last status, in screen order.
    rows: Vec<(String, String)>,
}

impl View {
    pub(crate) fn new(terminal: bool) -> View {
        View {
            terminal,
            rows: Vec::new(),
        }
    }

    pub(crate) fn show(&mut self, line: &ProgressLine) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        let Some(status) = &line.status else {
            if let Some(text) = &line.stream {
                write!(out, "{text}")?;
            }
            return Ok(());
        };
        let Some(id) = &line.id else {
            self.rows.clear();
            return writeln!(out, "{status}");
        };
        let text = format!("{id}: {status}{}", bar(line, self.terminal));
        match self.rows.iter().position(|(row, _)| row == id) {
            Some(i) if self.terminal => {
                let up = self.rows.len() - i;
                write!(out, "\x1b[{up}A\r\x1b[2K{text}\x1b[{up}B\r")?;
                self.rows[i].1 = status.clone();
            }
            Some(i) => {
                if self.rows[i].1 != *status {
                    writeln!(out, "{text}")?;
                    self.rows[i].1 = status.clone();
                }
            }
            None => {
                writeln!(out, "{text}")?;
                self.rows.push((id.clone(), status.clone()));
            }
        }
        out.flush()
    }
}

/// `  [=====>     ]  1.2MB/3.4MB` on a terminal while downloading.
fn bar(line: &ProgressLine, terminal: bool) -> String {
    let Some(detail) = line.progress_detail.filter(|_| terminal) else {
        return String::new();
    };
    let (Some(current), Some(total)) = (detail.current, detail.total) else {
        return String::new();
    };
    const WIDTH: u64 = 40;
    let filled = (current.min(total) * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH);
    let mut bar = "=".repeat(filled as usize);
    if filled < WIDTH {
        bar.push('>');
    }
    format!(
        "  [{bar:<width$}]  {}/{}",
        human(current),
        human(total),
        width = WIDTH as usize
    )
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000 => format!("{:.1}MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.1}kB", b as f64 / 1e3),
        b => format!("{b}B"),
    }
}
