//! One blob's download: streamed to a file while its size and sha256 are
//! checked, retried on transient failures, resumed with `Range` when the
//! registry (or the storage it redirects to) honours it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::client::{ClientError, Repository};
use super::streamed::StreamedCheck;
use crate::digest::Digest;
use crate::spec::Descriptor;

/// Bytes written between two nudges of the kernel to write the blob back:
/// the fsync at the commit then finds most of a large layer on disk already.
pub(crate) const WRITEBACK_EVERY: u64 = 8 << 20;
/// Attempts per blob before giving up.
const ATTEMPTS: u32 = 4;
/// Pause before the first retry; doubled for each one after it.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Errors of downloading a blob.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("cannot download blob {digest}")]
    Fetch {
        digest: Digest,
        #[source]
        source: ClientError,
    },
    #[error("the download of blob {digest} failed {attempts} times")]
    Interrupted {
        digest: Digest,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    #[error("blob {digest} ended after {actual} of its {expected} bytes, {attempts} times")]
    Truncated {
        digest: Digest,
        expected: u64,
        actual: u64,
        attempts: u32,
    },
    #[error("blob {digest} is longer than the {expected} bytes its descriptor says")]
    TooLong { digest: Digest, expected: u64 },
    #[error("blob {digest} failed verification: the registry sent content with digest {actual}")]
    DigestMismatch { digest: Digest, actual: Digest },
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a retried download starts: where it stopped if the answer is a
/// partial one (206), from the start otherwise (the server ignored `Range`).
pub(crate) fn resume_offset(status: StatusCode, requested: u64) -> u64 {
    if requested > 0 && status == StatusCode::PARTIAL_CONTENT {
        requested
    } else {
        0
    }
}

/// Whether a failed request is worth repeating: the network, the registry
/// being overloaded or failing for a moment; never a refusal or a 404.
pub(crate) fn retryable(error: &ClientError) -> bool {
    match error {
        ClientError::Http { .. } => true,
        ClientError::Status { status, .. } => {
            status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
        }
        _ => false,
    }
}

fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF * 2u32.pow(attempt.saturating_sub(1).min(5))
}

/// Downloads the blob `descriptor` names into `dest`, reporting bytes so far
/// to `progress` and handing each chunk to `check`, if any. On success
/// `dest` holds exactly the verified content.
pub(crate) async fn blob(
    repository: &Repository,
    descriptor: &Descriptor,
    dest: &Path,
    progress: &mut (dyn FnMut(u64) + Send),
    mut check: Option<&mut StreamedCheck>,
) -> Result<(), DownloadError> {
    let digest = &descriptor.digest;
    let expected = descriptor.size;
    let write_err = |source| DownloadError::Write {
        path: dest.to_owned(),
        source,
    };
    let mut file = tokio::fs::File::create(dest).await.map_err(write_err)?;
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    let mut written_back = 0u64;
    let mut attempt = 0;
    loop {
        attempt += 1;
        if attempt > 1 {
            tokio::time::sleep(backoff(attempt - 1)).await;
        }
        let response = match repository.blob(digest, written).await {
            Ok(response) => response,
            Err(e) if retryable(&e) && attempt < ATTEMPTS => {
                tracing::warn!(blob = %digest, error = %e, "retrying blob download");
                continue;
            }
            Err(source) => {
                return Err(DownloadError::Fetch {
                    digest: digest.clone(),
                    source,
                })
            }
        };
        if resume_offset(response.status(), written) == 0 && written > 0 {
            tracing::info!(blob = %digest, "registry ignored Range: restarting the download");
            file.set_len(0).await.map_err(write_err)?;
            file = tokio::fs::File::create(dest).await.map_err(write_err)?;
            hasher = Sha256::new();
            written = 0;
            written_back = 0;
            if let Some(check) = check.as_deref_mut() {
                check.abandon();
            }
        }
        let mut body = response.bytes_stream();
        let mut failure = None;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            if written + chunk.len() as u64 > expected {
                return Err(DownloadError::TooLong {
                    digest: digest.clone(),
                    expected,
                });
            }
            file.write_all(&chunk).await.map_err(write_err)?;
            hasher.update(&chunk);
            if let Some(check) = check.as_deref_mut() {
                check.feed(&chunk).await;
            }
            written += chunk.len() as u64;
            if written - written_back >= WRITEBACK_EVERY {
                // tokio's File writes behind this task: flushing first
                // puts every byte of the range in the page cache.
                file.flush().await.map_err(write_err)?;
                crate::fsutil::start_writeback(&file, written_back, written - written_back);
                written_back = written;
            }
            progress(written);
        }
        if written == expected {
            break;
        }
        if attempt >= ATTEMPTS {
            return Err(match failure {
                Some(source) => DownloadError::Interrupted {
                    digest: digest.clone(),
                    attempts: attempt,
                    source,
                },
                None => DownloadError::Truncated {
                    digest: digest.clone(),
                    expected,
                    actual: written,
                    attempts: attempt,
                },
            });
        }
        tracing::warn!(blob = %digest, written, expected, "blob download interrupted: resuming");
    }
    file.flush().await.map_err(write_err)?;
    let actual =
        Digest::from_hex(&hex::encode(hasher.finalize())).expect("sha256 is 64 hex digits");
    if &actual != digest {
        return Err(DownloadError::DigestMismatch {
            digest: digest.clone(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_answers_resume_and_full_ones_restart() {
        assert_eq!(resume_offset(StatusCode::PARTIAL_CONTENT, 100), 100);
        assert_eq!(resume_offset(StatusCode::OK, 100), 0);
        assert_eq!(resume_offset(StatusCode::OK, 0), 0);
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let status = |status| ClientError::Status {
            registry: "r".into(),
            what: "blob".into(),
            status,
            message: String::new(),
        };
        assert!(retryable(&status(StatusCode::BAD_GATEWAY)));
        assert!(retryable(&status(StatusCode::TOO_MANY_REQUESTS)));
        assert!(!retryable(&status(StatusCode::NOT_FOUND)));
        assert!(!retryable(&ClientError::Unauthorized {
            registry: "r".into(),
            repository: "a".into(),
            message: String::new(),
        }));
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert_eq!(backoff(1), FIRST_BACKOFF);
        assert_eq!(backoff(2), FIRST_BACKOFF * 2);
        assert!(backoff(30) <= FIRST_BACKOFF * 32);
    }
}
