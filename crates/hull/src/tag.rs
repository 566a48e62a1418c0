//! `hull tag` and `hull rmi`.

use anyhow::Result;
use clap::Args;
use hull_api::types::ImageDeleteItem;
use hull_api::{Client, Method, Reference};

#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image to tag: a name, an id or a digest.
    source: String,
    /// The new name: NAME[:TAG].
    target: String,
}

pub async fn tag(client: &Client, args: TagArgs) -> Result<()> {
    // hulld checks the name; split it as docker's client does when it parses.
    let mut query = vec![("repo", args.target.clone())];
    if let Ok(reference) = Reference::parse(&args.target) {
        if reference.digest().is_none() {
            query = vec![("repo", reference.name())];
            query.extend(reference.tag().map(|tag| ("tag", tag.to_owned())));
        }
    }
    let query: Vec<String> = query
        .into_iter()
        .map(|(k, v)| format!("{k}={}", encode(&v)))
        .collect();
    let path = format!("/images/{}/tag?{}", encode(&args.source), query.join("&"));
    client
        .call_json::<serde_json::Value>(Method::POST, &path, None::<&()>)
        .await?;
    Ok(())
}

/// Percent-encodes what a query value must not carry as is.
pub fn encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Remove an image that has several tags, with all of them.
    #[arg(short, long)]
    force: bool,
    /// Images to remove: names, ids or digests.
    #[arg(required = true)]
    images: Vec<String>,
}

/// Removes each image in turn, as docker does; exits 1 if any failed.
pub async fn rmi(client: &Client, args: RmiArgs) -> Result<i32> {
    let mut code = 0;
    for image in &args.images {
        let path = format!(
            "/images/{}?force={}",
            encode(image),
            if args.force { "1" } else { "0" }
        );
        match client
            .call_json::<Vec<ImageDeleteItem>>(Method::DELETE, &path, None::<&()>)
            .await
        {
            Ok(items) => print_removals(&items),
            Err(err) => {
                eprintln!("Error response from daemon: {err}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// docker's `Untagged: …` and `Deleted: …` lines.
fn print_removals(items: &[ImageDeleteItem]) {
    for item in items {
        if let Some(tag) = &item.untagged {
            println!("Untagged: {tag}");
        }
        if let Some(id) = &item.deleted {
            println!("Deleted: {id}");
        }
    }
}
