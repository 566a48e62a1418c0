//! `docker cp` on the host: what a path of a container is, and tars of its
//! files moved over the agent's flow-controlled streams. The VM holds the
//! container's files: a running container's own agent copies them, a
//! stopped container's are copied by a VM started for the copy
//! ([`super::filesystem`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use hull_proto::{ErrorKind, PathStat, Request, Response};
use hull_vm::Hypervisor;
use tokio::sync::mpsc;

use super::exec::NEXT_STREAM;
use super::{Container, ContainerError, Containers};
use crate::agent::{AgentClient, AgentError, InputStream};
use crate::run::Runtime;

impl<H: Hypervisor> Containers<H> {
    /// What is at `path` in `container`, running or stopped; a symlink is
    /// described, not followed.
    pub async fn stat_path(
        self: &Arc<Self>,
        runtime: &Arc<Runtime<H>>,
        container: &Arc<Container>,
        path: &str,
    ) -> Result<PathStat, ContainerError> {
        if let Ok(agent) = container.running_agent() {
            return container.stat_with(&agent, path).await;
        }
        self.with_stopped_files(runtime, container, async |agent| {
            container.stat_with(agent, path).await
        })
        .await
    }

    /// What is at `path`, and a tar of it once the agent has found it:
    /// its entries are named from the path's base name, as docker names
    /// them. A stopped container's come from one VM started for both.
    pub async fn read_archive(
        self: &Arc<Self>,
        runtime: &Arc<Runtime<H>>,
        container: &Arc<Container>,
        path: &str,
    ) -> Result<(PathStat, mpsc::Receiver<Bytes>), ContainerError> {
        let path = path.to_owned();
        self.read_files(runtime, container, true, move |container, agent| {
            Box::pin(async move {
                let stat = container.stat_with(&agent, &path).await?;
                let tar = container.read_archive_with(&agent, &path).await?;
                Ok((stat, tar))
            })
        })
        .await
    }

    /// Unpacks the tar received on `archive` into the directory `path` of
    /// `container`, running or stopped; returns once every entry is
    /// written (for a stopped one: on its disk). An `Err` on `archive`
    /// means the upload broke off.
    pub async fn write_archive(
        self: &Arc<Self>,
        runtime: &Arc<Runtime<H>>,
        container: &Arc<Container>,
        path: &str,
        archive: mpsc::Receiver<std::io::Result<Bytes>>,
    ) -> Result<(), ContainerError> {
        if let Ok(agent) = container.running_agent() {
            return container.write_archive_with(&agent, path, archive).await;
        }
        self.with_stopped_files(runtime, container, async move |agent| {
            container.write_archive_with(agent, path, archive).await
        })
        .await
    }
}

/// Chunks of an archive read that may wait for a slow client.
const READ_BACKLOG: usize = 16;

impl Container {
    async fn stat_with(&self, agent: &AgentClient, path: &str) -> Result<PathStat, ContainerError> {
        let request = Request::StatPath {
            container: self.id.clone(),
            path: path.to_owned(),
        };
        match agent.request(&request).await {
            Ok(Response::PathStat(stat)) => Ok(stat),
            Ok(other) => Err(AgentError::UnexpectedResponse(other).into()),
            Err(err) => Err(self.copy_error(path, err)),
        }
    }

    async fn read_archive_with(
        &self,
        agent: &AgentClient,
        path: &str,
    ) -> Result<mpsc::Receiver<Bytes>, ContainerError> {
        let stream = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
        // Registered first: the agent sends right after its answer.
        let mut output = agent.open_output(stream);
        let request = Request::ReadArchive {
            container: self.id.clone(),
            path: path.to_owned(),
            stream,
        };
        agent
            .request_done(&request)
            .await
            .map_err(|err| self.copy_error(path, err))?;
        let (tx, rx) = mpsc::channel(READ_BACKLOG);
        tokio::spawn(async move {
            let mut client_gone = false;
            while let Some(chunk) = output.recv().await {
                // A departed client must not leave the agent blocked on its
                // window: keep taking (and crediting) the rest.
                if !client_gone && tx.send(chunk).await.is_err() {
                    client_gone = true;
                }
            }
        });
        Ok(rx)
    }

    async fn write_archive_with(
        &self,
        agent: &AgentClient,
        path: &str,
        mut archive: mpsc::Receiver<std::io::Result<Bytes>>,
    ) -> Result<(), ContainerError> {
        let stream = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
        let input = agent.open_input(stream);
        let request = Request::WriteArchive {
            container: self.id.clone(),
            path: path.to_owned(),
            stream,
        };
        let mut answer = Box::pin(agent.request_done(&request));
        let (sent, early) = {
            let sending = send_archive(&input, &mut archive);
            tokio::pin!(sending);
            // Biased: the request's frame must leave before the first data
            // frame, or the agent drops data for a stream it does not know.
            // A refusal that comes while sending stops the upload.
            tokio::select! {
                biased;
                answer = &mut answer => (Ok(()), Some(answer)),
                sent = &mut sending => (sent, None),
            }
        };
        // The agent takes the stream until its end, even after a refusal.
        let _ = input.close().await;
        let answer = match early {
            Some(answer) => answer,
            // The upload took what it took; its answer has a deadline.
            None => agent
                .within("WriteArchive", crate::agent::AFTER_UPLOAD, answer)
                .await
                .and_then(|answer| answer),
        };
        match (sent, answer) {
            (Err(Upload::Body(source)), _) => Err(ContainerError::ArchiveBody {
                path: path.to_owned(),
                source,
            }),
            (_, Err(err)) | (Err(Upload::Agent(err)), Ok(())) => Err(self.copy_error(path, err)),
            (Ok(()), Ok(())) => Ok(()),
        }
    }

    /// The agent's refusals in docker's terms.
    fn copy_error(&self, path: &str, error: AgentError) -> ContainerError {
        match error {
            AgentError::Refused(refusal) => match refusal.kind {
                ErrorKind::NotFound => ContainerError::PathNotFound {
                    path: path.to_owned(),
                    container: self.id.clone(),
                },
                ErrorKind::InvalidRequest => ContainerError::CopyRefused(refusal.message),
                _ => AgentError::Refused(refusal).into(),
            },
            AgentError::Disconnected => ContainerError::CopyNotRunning(self.id.clone()),
            other => other.into(),
        }
    }
}

/// Why an upload stopped before its end.
enum Upload {
    Body(std::io::Error),
    Agent(AgentError),
}

async fn send_archive(
    input: &InputStream,
    archive: &mut mpsc::Receiver<std::io::Result<Bytes>>,
) -> Result<(), Upload> {
    while let Some(chunk) = archive.recv().await {
        let chunk = chunk.map_err(Upload::Body)?;
        input.write(&chunk).await.map_err(Upload::Agent)?;
    }
    Ok(())
}
