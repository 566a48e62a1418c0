//! `docker cp` on the host: what a path of a running container is, and tars
//! of its files moved over the agent's flow-controlled streams. The VM
//! holds the container's files, so copies need it running.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use hull_proto::{ErrorKind, PathStat, Request, Response};
use tokio::sync::mpsc;

use super::exec::NEXT_STREAM;
use super::{Container, ContainerError};
use crate::agent::{AgentClient, AgentError, InputStream};

/// Chunks of an archive read that may wait for a slow client.
const READ_BACKLOG: usize = 16;

impl Container {
    /// What is at `path` in the container; a symlink is described, not followed.
    pub async fn stat_path(&self, path: &str) -> Result<PathStat, ContainerError> {
        let agent = self.copy_agent()?;
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

    /// A tar of `path`, once the agent has found it: its entries are named
    /// from the path's base name, as docker names them.
    pub async fn read_archive(&self, path: &str) -> Result<mpsc::Receiver<Bytes>, ContainerError> {
        let agent = self.copy_agent()?;
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

    /// Unpacks the tar received on `archive` into the directory `path`;
    /// returns once every entry is written. An `Err` on `archive` means the
    /// upload broke off.
    pub async fn write_archive(
        &self,
        path: &str,
        mut archive: mpsc::Receiver<std::io::Result<Bytes>>,
    ) -> Result<(), ContainerError> {
        let agent = self.copy_agent()?;
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

    fn copy_agent(&self) -> Result<AgentClient, ContainerError> {
        self.running_agent()
            .map_err(|_| ContainerError::CopyNotRunning(self.id.clone()))
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
