//! Looking into a running container without changing it: its processes
//! (`docker top`) and its VM's figures (`docker stats`).

use hull_proto::{ErrorKind, GuestStats, ProcessInfo, Request, Response};

use super::{Container, ContainerError};
use crate::agent::AgentError;

impl Container {
    /// The processes of the container, sorted by pid.
    pub async fn processes(&self) -> Result<Vec<ProcessInfo>, ContainerError> {
        let request = Request::ListProcesses {
            container: self.id.clone(),
        };
        match self.ask(&request).await? {
            Response::Processes(list) => Ok(list),
            other => Err(AgentError::UnexpectedResponse(other).into()),
        }
    }

    /// CPU, memory and pid figures of the container's VM: a VM runs one
    /// container, so the guest's figures are the container's.
    pub async fn stats(&self) -> Result<GuestStats, ContainerError> {
        let request = Request::Stats {
            container: self.id.clone(),
        };
        match self.ask(&request).await? {
            Response::Stats(stats) => Ok(stats),
            other => Err(AgentError::UnexpectedResponse(other).into()),
        }
    }

    /// Asks the agent of the running container; a container that stopped
    /// between our look and the agent's answer is reported not running.
    async fn ask(&self, request: &Request) -> Result<Response, ContainerError> {
        let agent = self.running_agent()?;
        match agent.request(request).await {
            Ok(response) => Ok(response),
            Err(AgentError::Refused(refusal)) if refusal.kind == ErrorKind::NotFound => {
                Err(ContainerError::NotRunning(self.id.clone()))
            }
            Err(AgentError::Disconnected) => Err(ContainerError::NotRunning(self.id.clone())),
            Err(err) => Err(err.into()),
        }
    }
}
