//! Posting a run's record to its cron's notify URL.
//!
//! A tenant's webhook is a stranger's URL that hulld requests from the
//! host: it reaches public addresses only (checked as the name resolves,
//! by the resolver the connection then uses, so a name that answers
//! public once and private later gains nothing), follows no redirect, and
//! gets a bounded number of attempts, each with a deadline. Notifications
//! waiting or in flight are bounded across all crons: past that, one is
//! dropped with a warning rather than held. The operator's own crons may
//! notify any address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hull_image::registry::reach::is_public;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// The longest notify URL taken.
pub const MAX_URL_LEN: usize = 2048;
/// Notifications held at once (waiting for a retry or in flight).
const MAX_PENDING: usize = 64;
/// Attempts per notification: the first and its retries.
const ATTEMPTS: u32 = 4;
/// The wait before the first retry; each next one waits twice as long.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// One attempt's deadline, connection and answer included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("the notify URL is longer than {MAX_URL_LEN} bytes")]
    TooLong,
    #[error("the notify URL {0:?} is not an http:// or https:// URL with a host")]
    BadUrl(String),
    #[error("{0} is not a public address: a tenant's notify URL reaches only public addresses")]
    NotPublic(String),
    #[error("cannot build the webhook client")]
    Client(#[source] reqwest::Error),
}

/// Checks a notify URL when a cron is made: its shape, and for a tenant
/// (`public_only`) that it names no private address outright. Names are
/// checked again at each post, as they resolve.
pub async fn check_url(url: &str, public_only: bool) -> Result<(), NotifyError> {
    let parsed = parse(url)?;
    if !public_only {
        return Ok(());
    }
    let host = parsed.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return if is_public(ip) {
            Ok(())
        } else {
            Err(NotifyError::NotPublic(host.to_owned()))
        };
    }
    let port = parsed.port_or_known_default().unwrap_or(80);
    let lookup = tokio::time::timeout(
        ATTEMPT_TIMEOUT,
        tokio::net::lookup_host((bare.to_owned(), port)),
    );
    // A name that does not resolve now may later; one that resolves to
    // private addresses only is refused now, with a clear reason.
    if let Ok(Ok(found)) = lookup.await {
        let found: Vec<SocketAddr> = found.collect();
        if !found.is_empty() && !found.iter().any(|a| is_public(a.ip())) {
            return Err(NotifyError::NotPublic(host.to_owned()));
        }
    }
    Ok(())
}

fn parse(url: &str) -> Result<reqwest::Url, NotifyError> {
    if url.len() > MAX_URL_LEN {
        return Err(NotifyError::TooLong);
    }
    let bad = || NotifyError::BadUrl(url.chars().take(120).collect());
    let parsed = reqwest::Url::parse(url).map_err(|_| bad())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad());
    }
    Ok(parsed)
}

/// Sends notifications in the background, a bounded number at once.
#[derive(Debug)]
pub struct Notifier {
    slots: Arc<Semaphore>,
}

impl Default for Notifier {
    fn default() -> Self {
        Self {
            slots: Arc::new(Semaphore::new(MAX_PENDING)),
        }
    }
}

impl Notifier {
    /// Posts `body` (JSON) to `url` in the background, retrying with
    /// backoff; `public_only` for a tenant's cron.
    pub fn post(&self, url: String, public_only: bool, body: Vec<u8>) {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            warn!(%url, "dropped a cron notification: {MAX_PENDING} are already pending");
            return;
        };
        tokio::spawn(async move {
            let _slot = slot;
            let client = match client(public_only) {
                Ok(client) => client,
                Err(err) => return warn!(error = %err, "cannot notify a cron's webhook"),
            };
            let mut backoff = FIRST_BACKOFF;
            for attempt in 1..=ATTEMPTS {
                match send(&client, &url, public_only, &body).await {
                    Ok(()) => return debug!(%url, attempt, "notified a cron's webhook"),
                    Err(reason) => {
                        debug!(%url, attempt, %reason, "a cron's webhook failed");
                        if attempt == ATTEMPTS {
                            warn!(%url, %reason, "gave up notifying a cron's webhook after {ATTEMPTS} attempts");
                            return;
                        }
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        });
    }
}

fn client(public_only: bool) -> Result<reqwest::Client, NotifyError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(ATTEMPT_TIMEOUT)
        .user_agent("hull-cron");
    if public_only {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    builder.build().map_err(NotifyError::Client)
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    public_only: bool,
    body: &[u8],
) -> Result<(), String> {
    if public_only {
        // A literal address meets no resolver.
        check_url(url, true).await.map_err(|e| e.to_string())?;
    }
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| hull_runtime::error_chain(&e))?;
    let status = response.status();
    // The answer's body is never read: a webhook cannot make hulld hold it.
    drop(response);
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the webhook answered {status}"))
    }
}

/// Resolves names to their public addresses only; a name with none fails.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| is_public(addr.ip()))
                .collect();
            if found.is_empty() {
                return Err(Box::new(NotifyError::NotPublic(host)) as Box<_>);
            }
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tenant_s_webhook_may_not_name_a_private_address() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
            "http://localhost/",
        ] {
            assert!(
                matches!(check_url(url, true).await, Err(NotifyError::NotPublic(_))),
                "{url} was allowed"
            );
            assert!(check_url(url, false).await.is_ok(), "{url}");
        }
        assert!(check_url("https://203.0.113.9/hook", true).await.is_ok());
    }

    #[tokio::test]
    async fn malformed_urls_are_refused() {
        for url in [
            "",
            "ftp://example.com/",
            "file:///etc/passwd",
            "not a url",
            "http://",
        ] {
            assert!(check_url(url, false).await.is_err(), "{url}");
        }
        let long = format!("http://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(matches!(
            check_url(&long, false).await,
            Err(NotifyError::TooLong)
        ));
    }
}
