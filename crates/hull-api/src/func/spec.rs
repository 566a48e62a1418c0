//! A function's definition, as the API takes it and the store keeps it,
//! and how it is shown.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The longest a call may run.
pub const MAX_TIMEOUT_SECONDS: u64 = 3600;
/// The most calls of one function that run at once.
pub const MAX_CONCURRENCY: u32 = 100;
/// The most environment entries a function's definition holds.
const MAX_ENV: usize = 100;
/// The most bytes of one environment entry or command word.
const MAX_WORD: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("the function names no image")]
    NoImage,
    #[error("the timeout must be 1 to {MAX_TIMEOUT_SECONDS} seconds, not {0}")]
    Timeout(u64),
    #[error("the max concurrency must be 1 to {MAX_CONCURRENCY}, not {0}")]
    Concurrency(u32),
    #[error("unknown size {0}")]
    Size(String),
    #[error("environment entry {0:?} is not KEY=VALUE")]
    Env(String),
    #[error(
        "the definition is too large: at most {MAX_ENV} environment entries of {MAX_WORD} bytes"
    )]
    TooLarge,
}

/// What each call of a function runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FuncSpec {
    pub image: String,
    /// The command, instead of the image's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// KEY=VALUE entries each call's environment holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// The VM size of each call (S1 … L3); hulld's default otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// A call running longer is killed and answers 504.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Calls of this function that run at once; more wait in its queue.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: u32,
}

fn default_timeout() -> u64 {
    30
}

fn default_concurrency() -> u32 {
    10
}

impl FuncSpec {
    pub fn check(&self) -> Result<(), SpecError> {
        if self.image.trim().is_empty() {
            return Err(SpecError::NoImage);
        }
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&self.timeout_seconds) {
            return Err(SpecError::Timeout(self.timeout_seconds));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.max_concurrency) {
            return Err(SpecError::Concurrency(self.max_concurrency));
        }
        if let Some(size) = &self.size {
            hull_runtime::size::named(size).map_err(|_| SpecError::Size(size.clone()))?;
        }
        let words = self.env.iter().chain(&self.cmd);
        if self.env.len() > MAX_ENV
            || self.cmd.len() > MAX_ENV
            || words.clone().any(|w| w.len() > MAX_WORD)
        {
            return Err(SpecError::TooLarge);
        }
        if let Some(bad) = self.env.iter().find(|e| !e.contains('=')) {
            return Err(SpecError::Env(bad.clone()));
        }
        Ok(())
    }

    /// The container config of one call, whose own environment is `env`.
    pub fn container_config(&self, env: &[String]) -> Value {
        // The owner's own entries last: a caller's header can't override them.
        let mut all_env = env.to_vec();
        all_env.extend_from_slice(&self.env);
        let mut config = json!({
            "Image": self.image,
            "Env": all_env,
            "OpenStdin": true,
            "StdinOnce": true,
            "AttachStdin": true,
            "AttachStdout": true,
            "AttachStderr": true,
        });
        if !self.cmd.is_empty() {
            config["Cmd"] = json!(self.cmd);
        }
        if let Some(size) = &self.size {
            if let Ok(vm) = hull_runtime::size::named(size) {
                config["Labels"] = json!({ crate::server::SIZE_LABEL: size.to_ascii_uppercase() });
                config["HostConfig"] = json!({
                    "Memory": i64::from(vm.memory_mib) << 20,
                    "NanoCpus": i64::from(vm.vcpus) * 1_000_000_000,
                });
            }
        }
        config
    }
}

/// A function as `inspect` and `ls` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FuncView {
    pub name: String,
    /// The owner, shown to the operator only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(flatten)]
    pub spec: FuncSpec,
    pub uuid: String,
    /// Where it is called, when hulld serves calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_url: Option<String>,
    pub running: usize,
    pub queued: usize,
    pub created: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FuncSpec {
        serde_json::from_value(json!({"Image": "busybox"})).unwrap()
    }

    #[test]
    fn defaults_and_bounds() {
        let spec = spec();
        assert_eq!((spec.timeout_seconds, spec.max_concurrency), (30, 10));
        assert_eq!(spec.check(), Ok(()));
        let bad = |change: &dyn Fn(&mut FuncSpec)| {
            let mut spec = spec.clone();
            change(&mut spec);
            spec.check().unwrap_err()
        };
        assert_eq!(bad(&|s| s.timeout_seconds = 0), SpecError::Timeout(0));
        assert_eq!(
            bad(&|s| s.max_concurrency = 1000),
            SpecError::Concurrency(1000)
        );
        assert_eq!(
            bad(&|s| s.size = Some("XXL".into())),
            SpecError::Size("XXL".into())
        );
        assert_eq!(
            bad(&|s| s.env = vec!["NOEQ".into()]),
            SpecError::Env("NOEQ".into())
        );
        assert_eq!(bad(&|s| s.image.clear()), SpecError::NoImage);
        assert_eq!(
            bad(&|s| s.cmd = vec!["x".repeat(5000)]),
            SpecError::TooLarge
        );
    }

    #[test]
    fn a_call_gets_stdin_its_size_and_both_environments() {
        let mut spec = spec();
        spec.size = Some("s2".into());
        spec.env = vec!["A=1".into()];
        let config = spec.container_config(&["HULL_FUNC_METHOD=POST".into()]);
        assert_eq!(config["OpenStdin"], true);
        assert_eq!(config["StdinOnce"], true);
        assert_eq!(config["Env"], json!(["HULL_FUNC_METHOD=POST", "A=1"]));
        assert_eq!(config["Labels"][crate::server::SIZE_LABEL], "S2");
        assert!(config["HostConfig"]["Memory"].as_i64().unwrap() > 0);
        assert!(config.get("Cmd").is_none());
    }
}
