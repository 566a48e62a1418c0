//! `docker cp`'s calls: a path's stat, a tar of it out of a container, and
//! a tar unpacked into one, running or stopped.

use std::path::Path;

use base64::Engine;
use hyper::{Method, StatusCode};

use super::{empty, Client, ClientError};
use crate::types::stats::ContainerPathStat;

/// Go's `os.ModeDir` bit in a stat's mode.
const MODE_DIR: u32 = 1 << 31;

impl ContainerPathStat {
    pub fn is_dir(&self) -> bool {
        self.mode & MODE_DIR != 0
    }
}

fn archive_path(container: &str, path: &str) -> String {
    let name = urlencoded(container);
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("path", path);
    format!("/containers/{name}/archive?{}", query.finish())
}

impl Client {
    /// The stat of `path` in `container`; `None` if there is nothing there.
    pub async fn stat_path(
        &self,
        container: &str,
        path: &str,
    ) -> Result<Option<ContainerPathStat>, ClientError> {
        let request = Self::request(Method::HEAD, &archive_path(container, path), empty());
        let response = self.send(request).await?;
        if response.status() == StatusCode::NOT_FOUND {
            // A missing path and a missing container both answer 404; only
            // the second has a message, which HEAD cannot carry: ask again.
            let (status, body) = self
                .call_raw(
                    Method::GET,
                    &format!("/containers/{}/json", urlencoded(container)),
                    Vec::new(),
                )
                .await?;
            if status == 404 {
                let message = serde_json::from_slice::<crate::types::ErrorBody>(&body)
                    .map(|e| e.message)
                    .unwrap_or_else(|_| format!("No such container: {container}"));
                return Err(ClientError::Api {
                    status: StatusCode::NOT_FOUND,
                    message,
                });
            }
            return Ok(None);
        }
        let response = Self::check(response).await?;
        let Some(header) = response.headers().get("x-docker-container-path-stat") else {
            return Ok(None);
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(header.as_bytes())
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok());
        Ok(decoded)
    }

    /// Writes a tar of `path` in `container` to `out`.
    pub async fn copy_from(
        &self,
        container: &str,
        path: &str,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<(), ClientError> {
        self.download(&archive_path(container, path), out).await
    }

    /// Unpacks the tar `archive` (a file, or stdin for `-`) into the
    /// directory `path` of `container`.
    pub async fn copy_to(
        &self,
        container: &str,
        path: &str,
        archive: &Path,
    ) -> Result<(), ClientError> {
        self.upload_as(Method::PUT, &archive_path(container, path), archive)
            .await
            .map(drop)
    }
}

fn urlencoded(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
