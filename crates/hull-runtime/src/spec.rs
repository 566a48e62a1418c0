//! What a container runs: the image's config merged with the user's options,
//! by docker's rules.

use hull_image::ImageConfig;
use hull_proto::Rlimit;
use serde::{Deserialize, Serialize};

/// The user's options for a container's main process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessOptions {
    /// Replaces the image's command.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Replaces the image's entrypoint; `Some(vec![])` clears it.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE` entries that override the image's.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub tty: bool,
    /// Resource limits of the process, and of those exec'd beside it.
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// Supplementary groups of the process and its execs (`GroupAdd`).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The process a container starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessConfig {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub tty: bool,
    pub rlimits: Vec<Rlimit>,
    pub groups: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("no command specified: the image has no entrypoint or command, so give one after the image name")]
    NoCommand,
    #[error("working directory '{0}' is not an absolute path")]
    RelativeWorkdir(String),
}

/// Merges options into the image config. As in docker, overriding the
/// entrypoint also drops the image's command.
pub fn process_config(
    image: &ImageConfig,
    options: &ProcessOptions,
) -> Result<ProcessConfig, SpecError> {
    let (entrypoint, default_cmd) = match &options.entrypoint {
        Some(entrypoint) => (entrypoint.clone(), Vec::new()),
        None => (
            image.entrypoint.clone().unwrap_or_default(),
            image.cmd.clone().unwrap_or_default(),
        ),
    };
    let cmd = if options.cmd.is_empty() {
        default_cmd
    } else {
        options.cmd.clone()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    let cwd = options
        .workdir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| image.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(SpecError::RelativeWorkdir(cwd));
    }
    Ok(ProcessConfig {
        args,
        env: merge_env(&image.env, &options.env),
        cwd,
        user: options
            .user
            .clone()
            .or_else(|| image.user.clone())
            .unwrap_or_default(),
        tty: options.tty,
        rlimits: options.rlimits.clone(),
        groups: options.groups.clone(),
    })
}

/// The image's environment with the user's entries replacing same-named ones.
fn merge_env(image: &[String], overrides: &[String]) -> Vec<String> {
    let key = |entry: &str| entry.split('=').next().unwrap_or_default().to_string();
    let mut merged: Vec<String> = image.to_vec();
    for entry in overrides {
        let name = key(entry);
        match merged.iter_mut().find(|e| key(e) == name) {
            Some(existing) => existing.clone_from(entry),
            None => merged.push(entry.clone()),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["serve".into(), "--port=80".into()]),
            env: vec!["PATH=/bin".into(), "A=image".into()],
            working_dir: Some("/srv".into()),
            user: Some("www".into()),
            ..Default::default()
        }
    }

    #[test]
    fn image_defaults_apply_when_nothing_is_given() {
        let config = process_config(&image(), &ProcessOptions::default()).unwrap();
        assert_eq!(config.args, ["/entry", "serve", "--port=80"]);
        assert_eq!(config.cwd, "/srv");
        assert_eq!(config.user, "www");
    }

    #[test]
    fn a_command_replaces_cmd_but_keeps_the_entrypoint() {
        let options = ProcessOptions {
            cmd: vec!["debug".into()],
            ..Default::default()
        };
        let config = process_config(&image(), &options).unwrap();
        assert_eq!(config.args, ["/entry", "debug"]);
    }

    #[test]
    fn overriding_the_entrypoint_drops_the_image_cmd() {
        let options = ProcessOptions {
            entrypoint: Some(vec!["sh".into()]),
            ..Default::default()
        };
        assert_eq!(process_config(&image(), &options).unwrap().args, ["sh"]);
        let options = ProcessOptions {
            entrypoint: Some(vec![]),
            cmd: vec!["ls".into()],
            ..Default::default()
        };
        assert_eq!(process_config(&image(), &options).unwrap().args, ["ls"]);
    }

    #[test]
    fn user_env_overrides_the_image_env_by_name() {
        let options = ProcessOptions {
            env: vec!["A=user".into(), "B=2".into()],
            ..Default::default()
        };
        let config = process_config(&image(), &options).unwrap();
        assert_eq!(config.env, ["PATH=/bin", "A=user", "B=2"]);
    }

    #[test]
    fn user_workdir_and_user_win() {
        let options = ProcessOptions {
            workdir: Some("/tmp".into()),
            user: Some("1000:1000".into()),
            ..Default::default()
        };
        let config = process_config(&image(), &options).unwrap();
        assert_eq!(
            (config.cwd.as_str(), config.user.as_str()),
            ("/tmp", "1000:1000")
        );
    }

    #[test]
    fn an_image_without_a_command_needs_one() {
        let empty = ImageConfig::default();
        assert_eq!(
            process_config(&empty, &ProcessOptions::default()),
            Err(SpecError::NoCommand)
        );
        let config = process_config(&empty, &ProcessOptions::default().with_cmd(&["true"]));
        assert_eq!(config.unwrap().cwd, "/");
    }

    #[test]
    fn a_relative_workdir_is_refused() {
        let options = ProcessOptions {
            workdir: Some("tmp".into()),
            ..Default::default()
        };
        assert!(matches!(
            process_config(&image(), &options),
            Err(SpecError::RelativeWorkdir(_))
        ));
    }

    impl ProcessOptions {
        fn with_cmd(mut self, cmd: &[&str]) -> Self {
            self.cmd = cmd.iter().map(|s| s.to_string()).collect();
            self
        }
    }
}
