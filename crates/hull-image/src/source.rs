//! `docker import URL`: an archive fetched from a URL. Only the operator
//! may have hulld fetch one (a tenant's import sends its archive as the
//! request's body), so any host is reached, as the operator's pulls are.

use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// How long the server may take to start answering.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0:?} is not an http:// or https:// URL")]
    Url(String),
    #[error("cannot fetch {url}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("{url} sends more than the {budget} bytes this host takes (hulld --max-image-size, or the free disk)")]
    TooLarge { url: String, budget: u64 },
    #[error("cannot write {}", .path.display())]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Fetches `url` into the file `out`, at most `budget` bytes; returns its length.
pub async fn download(url: &str, out: &Path, budget: u64) -> Result<u64, SourceError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| SourceError::Url(url.to_owned()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(SourceError::Url(url.to_owned()));
    }
    let fetch = |source| SourceError::Fetch {
        url: url.to_owned(),
        source,
    };
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(fetch)?;
    let mut response = client.get(parsed).send().await.map_err(fetch)?;
    if !response.status().is_success() {
        return Err(SourceError::Status {
            url: url.to_owned(),
            status: response.status(),
        });
    }
    let write = |source| SourceError::Write {
        path: out.to_owned(),
        source,
    };
    let mut file = tokio::fs::File::create(out).await.map_err(write)?;
    let mut written = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(fetch)? {
        written += chunk.len() as u64;
        if written > budget {
            return Err(SourceError::TooLarge {
                url: url.to_owned(),
                budget,
            });
        }
        file.write_all(&chunk).await.map_err(write)?;
    }
    file.flush().await.map_err(write)?;
    Ok(written)
}
