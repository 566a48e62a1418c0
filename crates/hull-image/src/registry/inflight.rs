//! Blobs being downloaded right now, so that pulls running at the same time
//! fetch a shared layer once: the first claims it, the others wait for its
//! file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::digest::Digest;

/// The outcome a waiter learns: the downloaded file, or `None` if the
/// download failed and the waiter should claim it itself.
type Outcome = Option<Option<PathBuf>>;

#[derive(Default)]
pub struct InFlight(Mutex<HashMap<Digest, watch::Receiver<Outcome>>>);

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.0.lock().map(|map| map.len()).unwrap_or(0);
        write!(f, "InFlight({count} downloads)")
    }
}

pub enum Claim<'a> {
    /// This pull downloads the blob and must report how it went.
    Mine(Download<'a>),
    /// Another pull is downloading it.
    Theirs(watch::Receiver<Outcome>),
}

impl InFlight {
    pub fn claim(&self, digest: &Digest) -> Claim<'_> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = map.get(digest) {
            return Claim::Theirs(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(digest.clone(), rx);
        Claim::Mine(Download {
            flights: self,
            digest: digest.clone(),
            tx,
            done: false,
        })
    }

    fn end(&self, digest: &Digest) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(digest);
    }
}

/// A claimed download; dropping it unfinished tells the waiters it failed.
pub struct Download<'a> {
    flights: &'a InFlight,
    digest: Digest,
    tx: watch::Sender<Outcome>,
    done: bool,
}

impl Download<'_> {
    /// The blob is complete and verified at `path`.
    pub fn finish(mut self, path: PathBuf) {
        self.done = true;
        self.flights.end(&self.digest);
        self.tx.send_replace(Some(Some(path)));
    }
}

impl Drop for Download<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.flights.end(&self.digest);
            self.tx.send_replace(Some(None));
        }
    }
}

/// Waits for another pull's download of a blob.
pub async fn wait(mut rx: watch::Receiver<Outcome>) -> Option<PathBuf> {
    match rx.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone().flatten(),
        // The claimer vanished without a word: treat it as a failure.
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        Digest::from_hex(&"ab".repeat(32)).unwrap()
    }

    #[tokio::test]
    async fn the_second_claim_waits_for_the_first_download() {
        let flights = InFlight::default();
        let Claim::Mine(download) = flights.claim(&digest()) else {
            panic!("the first claim is its own")
        };
        let Claim::Theirs(rx) = flights.claim(&digest()) else {
            panic!("the second claim waits")
        };
        download.finish("/staging/blob".into());
        assert_eq!(wait(rx).await, Some(PathBuf::from("/staging/blob")));
        assert!(matches!(flights.claim(&digest()), Claim::Mine(_)));
    }

    #[tokio::test]
    async fn a_failed_download_lets_a_waiter_claim_it() {
        let flights = InFlight::default();
        let mine = flights.claim(&digest());
        let Claim::Theirs(rx) = flights.claim(&digest()) else {
            panic!("the second claim waits")
        };
        drop(mine);
        assert_eq!(wait(rx).await, None);
        assert!(matches!(flights.claim(&digest()), Claim::Mine(_)));
    }
}
