//! Containers in VMs: merging image config with the user's options, the host
//! side of the agent protocol, and the lifecycle of a run.

pub mod agent;
pub mod pool;
pub mod run;
pub mod spec;
mod start;
pub mod template;

pub use agent::{AgentClient, AgentError};
pub use run::{
    new_container_id, Prepared, RunControl, RunError, RunIo, RunRequest, Runtime, RuntimeConfig,
};
pub use spec::{process_config, ProcessConfig, ProcessOptions, SpecError};
pub use template::{Template, TemplateConfig, Templates};
