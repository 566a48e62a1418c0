//! Requests that look at a container without changing it: its processes
//! (`docker top`) and the guest's statistics (`docker stats`).

use std::path::Path;

use hull_proto::{ErrorKind, GuestStats, RequestError, Response};

use crate::agent::Agent;
use crate::start::INIT;
use crate::{error_chain, ps, stats};

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

    pub(crate) fn stats(&self, container: &str) -> Result<Response, RequestError> {
        let init = self.init_pid(container)?;
        let failed = |e: &dyn std::error::Error| {
            let message = format!(
                "cannot measure the guest of container {container}: {}",
                error_chain(e)
            );
            RequestError::new(ErrorKind::Internal, message)
        };
        let proc = Path::new(ps::PROC);
        let cpu = stats::cpu_times(proc).map_err(|e| failed(&e))?;
        let (total, available) = stats::memory(proc).map_err(|e| failed(&e))?;
        let pids = match init {
            Some(init) => ps::count(proc, init).map_err(|e| failed(&e))?,
            None => 0,
        };
        Ok(Response::Stats(GuestStats {
            cpu_total_ns: cpu.busy_ns,
            system_ns: cpu.total_ns,
            online_cpus: cpu.online_cpus,
            memory_used_bytes: total.saturating_sub(available),
            memory_limit_bytes: total,
            pids: u32::try_from(pids).unwrap_or(u32::MAX),
            networks: stats::networks(proc).map_err(|e| failed(&e))?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::lock;
    use crate::channel::Channel;
    use crate::testutil::Wire;

    #[test]
    fn processes_of_an_unknown_container_are_not_found() {
        let agent = Agent::new(Channel::new(Wire::default()));
        let err = agent.list_processes("nope").unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
    }

    #[test]
    fn stats_of_an_unknown_container_are_not_found() {
        let agent = Agent::new(Channel::new(Wire::default()));
        let err = agent.stats("nope").unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
    }

    #[test]
    fn a_created_container_without_processes_has_stats_and_no_processes() {
        let agent = Agent::new(Channel::new(Wire::default()));
        let container = crate::container::Container {
            id: "c".into(),
            hostname: "c".into(),
            dir: "/nonexistent".into(),
        };
        lock(&agent.containers).insert("c".into(), Some(std::sync::Arc::new(container)));
        assert_eq!(
            agent.list_processes("c").unwrap(),
            Response::Processes(Vec::new())
        );
        let Response::Stats(stats) = agent.stats("c").unwrap() else {
            panic!("not stats")
        };
        assert_eq!(stats.pids, 0);
        assert!(stats.memory_used_bytes <= stats.memory_limit_bytes);
        assert!(stats.cpu_total_ns <= stats.system_ns && stats.online_cpus >= 1);
    }
}
