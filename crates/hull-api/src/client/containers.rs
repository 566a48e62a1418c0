//! The container and exec endpoints of the Engine API, as the `hull` CLI calls them.

use std::collections::BTreeMap;

use futures_util::TryStreamExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncRead;

use super::{content_type, empty, full, Client, ClientError};
use crate::types::container::{
    ContainerCreate, ContainerCreated, ContainerInspect, ContainerSummary, ContainerUpdate,
    ContainerUpdated, ContainersPruned, ExecCreate, ExecInspect, ExecStart, IdResponse,
    WaitResponse,
};

/// Docker's content type of output framed by stream (stdcopy).
const MULTIPLEXED: &str = "application/vnd.docker.multiplexed-stream";

/// A container's output (and, when taken over, its input): framed by stream
/// (see [`crate::stdcopy`]) unless the container or exec has a tty.
pub struct ContainerStream<S> {
    pub stream: S,
    pub multiplexed: bool,
}

/// What `GET /containers/{id}/logs` is asked for; times are docker's
/// `since`/`until` values (Unix seconds, with an optional fraction).
#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    pub follow: bool,
    pub timestamps: bool,
    pub tail: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

/// A `wait` hulld has accepted; its answer comes when the condition is met.
pub struct PendingWait {
    body: Incoming,
}

impl PendingWait {
    pub async fn result(self) -> Result<WaitResponse, ClientError> {
        let bytes = self.body.collect().await?.to_bytes();
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// A path segment or query value, encoded as hulld decodes it.
fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        query.append_pair(key, value);
    }
    query.finish()
}

impl Client {
    /// A request without body whose answer carries nothing to read; "not
    /// modified" (starting a running container) counts as done, as in docker.
    async fn action(&self, method: Method, path: &str) -> Result<(), ClientError> {
        let response = self.send(Self::request(method, path, empty())).await?;
        if response.status() == StatusCode::NOT_MODIFIED {
            return Ok(());
        }
        Self::check(response).await?.into_body().collect().await?;
        Ok(())
    }

    /// `POST /containers/create?name=…`.
    pub async fn create_container(
        &self,
        name: Option<&str>,
        body: &ContainerCreate,
    ) -> Result<ContainerCreated, ClientError> {
        let path = match name {
            Some(name) => format!("/containers/create?{}", query(&[("name", name)])),
            None => "/containers/create".to_owned(),
        };
        self.call_json(Method::POST, &path, Some(body)).await
    }

    /// `GET /containers/json`; `filters` as docker's `{"status":["exited"]}`.
    pub async fn list_containers(
        &self,
        all: bool,
        filters: &BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<ContainerSummary>, ClientError> {
        let filters = serde_json::to_string(filters)?;
        let all = if all { "1" } else { "0" };
        let path = format!(
            "/containers/json?{}",
            query(&[("all", all), ("filters", &filters)])
        );
        self.get_json(&path).await
    }

    pub async fn inspect_container(
        &self,
        reference: &str,
    ) -> Result<ContainerInspect, ClientError> {
        self.get_json(&format!("/containers/{}/json", encode(reference)))
            .await
    }

    pub async fn start_container(&self, reference: &str) -> Result<(), ClientError> {
        let path = format!("/containers/{}/start", encode(reference));
        self.action(Method::POST, &path).await
    }

    /// Stops with the container's stop signal, then SIGKILL after `timeout` seconds.
    pub async fn stop_container(
        &self,
        reference: &str,
        timeout: Option<i64>,
    ) -> Result<(), ClientError> {
        self.action(Method::POST, &timed(reference, "stop", timeout))
            .await
    }

    pub async fn restart_container(
        &self,
        reference: &str,
        timeout: Option<i64>,
    ) -> Result<(), ClientError> {
        self.action(Method::POST, &timed(reference, "restart", timeout))
            .await
    }

    /// Sends `signal` (a name or number; SIGKILL when `None`).
    pub async fn kill_container(
        &self,
        reference: &str,
        signal: Option<&str>,
    ) -> Result<(), ClientError> {
        let mut path = format!("/containers/{}/kill", encode(reference));
        if let Some(signal) = signal {
            path = format!("{path}?{}", query(&[("signal", signal)]));
        }
        self.action(Method::POST, &path).await
    }

    /// Freezes (`pause`) or thaws (`unpause`) a running container's VM.
    pub async fn pause_container(&self, reference: &str, pause: bool) -> Result<(), ClientError> {
        let action = if pause { "pause" } else { "unpause" };
        let path = format!("/containers/{}/{action}", encode(reference));
        self.action(Method::POST, &path).await
    }

    /// Registers a wait for `condition` (`not-running`, `next-exit`,
    /// `removed`); hulld has it once this returns.
    pub async fn wait_container(
        &self,
        reference: &str,
        condition: &str,
    ) -> Result<PendingWait, ClientError> {
        let path = format!(
            "/containers/{}/wait?{}",
            encode(reference),
            query(&[("condition", condition)])
        );
        let response = self
            .send(Self::request(Method::POST, &path, empty()))
            .await?;
        let body = Self::check(response).await?.into_body();
        Ok(PendingWait { body })
    }

    pub async fn remove_container(&self, reference: &str, force: bool) -> Result<(), ClientError> {
        let force = if force { "1" } else { "0" };
        let path = format!(
            "/containers/{}?{}",
            encode(reference),
            query(&[("force", force)])
        );
        self.action(Method::DELETE, &path).await
    }

    pub async fn rename_container(&self, reference: &str, name: &str) -> Result<(), ClientError> {
        let path = format!(
            "/containers/{}/rename?{}",
            encode(reference),
            query(&[("name", name)])
        );
        self.action(Method::POST, &path).await
    }

    /// `POST /containers/{id}/update`: limits and restart policy.
    pub async fn update_container(
        &self,
        reference: &str,
        update: &ContainerUpdate,
    ) -> Result<ContainerUpdated, ClientError> {
        let path = format!("/containers/{}/update", encode(reference));
        self.call_json(Method::POST, &path, Some(update)).await
    }

    /// Sets the size of the container's terminal.
    pub async fn resize_container(
        &self,
        reference: &str,
        rows: u16,
        cols: u16,
    ) -> Result<(), ClientError> {
        let path = format!(
            "/containers/{}/resize?{}",
            encode(reference),
            size(rows, cols)
        );
        self.action(Method::POST, &path).await
    }

    /// Removes every stopped container.
    pub async fn prune_containers(&self) -> Result<ContainersPruned, ClientError> {
        self.call_json(Method::POST, "/containers/prune", None::<&()>)
            .await
    }

    /// A GET whose body is read as it arrives: JSON lines that go on while
    /// the server has more (`/funcs/NAME/logs?follow=1`).
    pub async fn get_stream(
        &self,
        path: &str,
    ) -> Result<impl tokio::io::AsyncBufRead + Send + Unpin, ClientError> {
        let response = self.send(Self::request(Method::GET, path, empty())).await?;
        let response = Self::check(response).await?;
        let chunks = response
            .into_body()
            .into_data_stream()
            .map_err(std::io::Error::other);
        Ok(tokio_util::io::StreamReader::new(chunks))
    }

    /// The container's logs, both streams, as they are read.
    pub async fn container_logs(
        &self,
        reference: &str,
        options: &LogsOptions,
    ) -> Result<ContainerStream<impl AsyncRead + Send + Unpin>, ClientError> {
        let flag = |on: bool| if on { "1" } else { "0" };
        let mut pairs = vec![
            ("stdout", "1"),
            ("stderr", "1"),
            ("follow", flag(options.follow)),
            ("timestamps", flag(options.timestamps)),
        ];
        let optional = [
            ("tail", &options.tail),
            ("since", &options.since),
            ("until", &options.until),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                pairs.push((key, value));
            }
        }
        let path = format!("/containers/{}/logs?{}", encode(reference), query(&pairs));
        let response = self
            .send(Self::request(Method::GET, &path, empty()))
            .await?;
        let response = Self::check(response).await?;
        let multiplexed = content_type(&response) == MULTIPLEXED;
        let chunks = response
            .into_body()
            .into_data_stream()
            .map_err(std::io::Error::other);
        Ok(ContainerStream {
            stream: tokio_util::io::StreamReader::new(chunks),
            multiplexed,
        })
    }

    /// Takes over a connection carrying the container's output from now on,
    /// and its stdin when `stdin`.
    pub async fn attach_container(
        &self,
        reference: &str,
        stdin: bool,
    ) -> Result<ContainerStream<TokioIo<Upgraded>>, ClientError> {
        let stdin = if stdin { "1" } else { "0" };
        let path = format!(
            "/containers/{}/attach?{}",
            encode(reference),
            query(&[
                ("stream", "1"),
                ("stdin", stdin),
                ("stdout", "1"),
                ("stderr", "1")
            ])
        );
        self.hijack(&path, empty()).await
    }

    /// `POST /containers/{id}/exec`: returns the exec's id.
    pub async fn create_exec(
        &self,
        reference: &str,
        body: &ExecCreate,
    ) -> Result<String, ClientError> {
        let path = format!("/containers/{}/exec", encode(reference));
        let created: IdResponse = self.call_json(Method::POST, &path, Some(body)).await?;
        Ok(created.id)
    }

    /// Starts an exec whose output nobody reads.
    pub async fn start_exec_detached(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("/exec/{}/start", encode(id));
        let body = ExecStart {
            detach: true,
            ..Default::default()
        };
        self.call_json::<serde_json::Value>(Method::POST, &path, Some(&body))
            .await
            .map(drop)
    }

    /// Starts an exec over a taken-over connection carrying its stdio.
    pub async fn start_exec(
        &self,
        id: &str,
        body: &ExecStart,
    ) -> Result<ContainerStream<TokioIo<Upgraded>>, ClientError> {
        let path = format!("/exec/{}/start", encode(id));
        self.hijack(&path, full(serde_json::to_vec(body)?)).await
    }

    pub async fn inspect_exec(&self, id: &str) -> Result<ExecInspect, ClientError> {
        self.get_json(&format!("/exec/{}/json", encode(id))).await
    }

    pub async fn resize_exec(&self, id: &str, rows: u16, cols: u16) -> Result<(), ClientError> {
        let path = format!("/exec/{}/resize?{}", encode(id), size(rows, cols));
        self.action(Method::POST, &path).await
    }

    async fn hijack(
        &self,
        path: &str,
        body: super::Body,
    ) -> Result<ContainerStream<TokioIo<Upgraded>>, ClientError> {
        let (stream, content_type) = self.upgrade(path, body, "tcp").await?;
        Ok(ContainerStream {
            stream,
            multiplexed: content_type == MULTIPLEXED,
        })
    }
}

fn timed(reference: &str, action: &str, timeout: Option<i64>) -> String {
    let path = format!("/containers/{}/{action}", encode(reference));
    match timeout {
        Some(seconds) => format!("{path}?{}", query(&[("t", &seconds.to_string())])),
        None => path,
    }
}

fn size(rows: u16, cols: u16) -> String {
    query(&[("h", &rows.to_string()), ("w", &cols.to_string())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_values_are_encoded_as_hulld_decodes_them() {
        assert_eq!(encode("web"), "web");
        assert_eq!(encode("a/b c"), "a%2Fb+c");
        assert_eq!(timed("web", "stop", Some(1)), "/containers/web/stop?t=1");
        assert_eq!(size(24, 80), "h=24&w=80");
    }
}
