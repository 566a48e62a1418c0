//! Containers in VMs: merging image config with the user's options, the host
//! side of the agent protocol, the lifecycle of a run, and pods.

pub mod admission;
pub mod agent;
pub mod console;
pub mod container;
pub mod halt;
pub mod image_template;
pub mod pod;
pub mod pool;
pub mod prime;
mod records;
pub mod run;
pub mod share;
pub mod size;
pub mod spec;
pub mod start;
pub mod template;
pub mod volume;
pub mod warm;

pub use admission::{Admission, AdmissionConfig, AdmissionError};
pub use agent::{AgentClient, AgentError};
pub use container::{
    Container, ContainerError, ContainerUpdate, Containers, CreateOptions, WaitCondition,
};
pub use run::{
    new_container_id, Prepared, RunControl, RunError, RunIo, RunRequest, Runtime, RuntimeConfig,
};
pub use spec::{process_config, ProcessConfig, ProcessOptions, SpecError};
pub use start::{clock_and_entropy, StartHook, StartRecord};
pub use template::{Template, TemplateConfig, TemplateDirError, TemplateInfo, Templates};

/// An error and its causes on one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
