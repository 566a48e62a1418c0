//! Requests that look at a container without changing it: its processes
//! (`docker top`) and the guest's statistics (`docker stats`).

use std::path::Path;

use hull_proto::{ErrorKind, RequestError, Response};

use crate::agent::Agent;
use crate::start::INIT;
use crate::{error_chain, ps};

impl Agent {
    /// The pid of the container's init, `None` while it does not run.
    fn init_pid(&self, container: &str) -> Result<Option<i32>, RequestError> {
        self.container(container)?;
        Ok(self.running(container, INIT).ok().map(|init| init.pid))
    }

    pub(crate) fn list_processes(&self, container: &str) -> Result<Response, RequestError> {
        let Some(init) = self.init_pid(container)? else {
            return Ok(Response::Processes(Vec::new()));
        };
        let processes = ps::list(Path::new(ps::PROC), init).map_err(|e| {
            let message = format!(
                "cannot list the processes of container {container}: {}",
                error_chain(&e)
            );
            RequestError::new(ErrorKind::Internal, message)
        })?;
        Ok(Response::Processes(processes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Channel;
    use crate::testutil::Wire;

    #[test]
    fn processes_of_an_unknown_container_are_not_found() {
        let agent = Agent::new(Channel::new(Wire::default()));
        let err = agent.list_processes("nope").unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
    }
}
