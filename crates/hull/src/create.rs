//! `hull create`, and `hull run` through docker's endpoints: create, then
//! attach, wait and start, as the docker CLI does; the container stays until
//! it is removed.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use hull_api::types::container::{
    ContainerCreate, CreateLogConfig, EndpointIpam, EndpointSettings, HostConfig, NetworkingConfig,
    RestartPolicy,
};
use hull_api::{Client, ClientError};

use crate::containers::describe;
use crate::run::{environment, RunArgs};
use crate::stdio::{self, SizeOf};

/// Runs the container; failures are reported here, with docker's exit codes.
pub async fn run(client: &Client, args: RunArgs) -> Result<i32> {
    match create_and_run(client, &args).await {
        Ok(code) => Ok(code),
        Err(err) => {
            eprintln!("hull: {}", describe(&err));
            Ok(125)
        }
    }
}

/// Creates the container and prints its id, as `docker create` does.
pub async fn create(client: &Client, args: RunArgs) -> Result<i32> {
    if let Err(err) = crate::pull::ensure_image(client, &args.image).await {
        // The pull failed in hulld, as docker's daemon reports it.
        eprintln!("hull: Error response from daemon: {err:#}");
        return Ok(125);
    }
    let created = match body(&args) {
        Ok(body) => client
            .create_container(args.name.as_deref(), &body)
            .await
            .map_err(anyhow::Error::from),
        Err(err) => Err(err),
    };
    match created {
        Ok(created) => {
            println!("{}", created.id);
            Ok(0)
        }
        Err(err) => {
            eprintln!("hull: {}", describe(&err));
            Ok(125)
        }
    }
}

async fn create_and_run(client: &Client, args: &RunArgs) -> Result<i32> {
    if !args.detach {
        stdio::check_tty_input(args.tty, args.interactive)?;
    }
    let body = body(args)?;
    let id = client
        .create_container(args.name.as_deref(), &body)
        .await?
        .id;
    if args.detach {
        if let Err(code) = start(client, &id).await {
            return Ok(code);
        }
        println!("{id}");
        return Ok(0);
    }
    let attached = client.attach_container(&id, args.interactive).await?;
    // As docker's CLI: with --rm, the run ends once the container is gone
    // (its VM, addresses and name freed), not at its process's exit.
    let condition = if args.rm { "removed" } else { "next-exit" };
    let wait = client.wait_container(&id, condition).await?;
    let _raw = stdio::raw_mode(args.tty, args.interactive);
    if let Err(code) = start(client, &id).await {
        return Ok(code);
    }
    if args.tty {
        stdio::follow_size(client, SizeOf::Container(id.clone()))?;
    } else {
        stdio::proxy_signals(client, &id)?;
    }
    stdio::relay(attached, args.interactive).await?;
    let status = wait.result().await?;
    drop(_raw);
    if let Some(error) = status.error.filter(|e| !e.message.is_empty()) {
        eprintln!("hull: {}", error.message);
    }
    Ok(i32::try_from(status.status_code).unwrap_or(125))
}

/// Starts the container; a failure is printed and becomes docker's exit
/// code: 127 for a missing command, 126 for one that cannot run, else 125.
async fn start(client: &Client, id: &str) -> Result<(), i32> {
    match client.start_container(id).await {
        Ok(()) => Ok(()),
        Err(err) => {
            let message = err.to_string();
            let code = if message.contains("executable file not found")
                || message.contains("no such file or directory")
            {
                127
            } else if message.contains("permission denied") || message.contains("is a directory") {
                126
            } else {
                125
            };
            match err {
                ClientError::Api { .. } => eprintln!("hull: Error response from daemon: {message}"),
                _ => eprintln!("hull: {message}"),
            }
            Err(code)
        }
    }
}

/// The create request of `args`, as the docker CLI builds it.
fn body(args: &RunArgs) -> Result<ContainerCreate> {
    let attached = !args.detach;
    let (memory, nano_cpus) = resources(args)?;
    Ok(ContainerCreate {
        hostname: args.hostname.clone().unwrap_or_default(),
        user: args.user.clone().unwrap_or_default(),
        attach_stdin: attached && args.interactive,
        attach_stdout: attached,
        attach_stderr: attached,
        tty: args.tty,
        open_stdin: args.interactive,
        stdin_once: attached && args.interactive,
        env: Some(environment(&args.env)),
        cmd: Some(args.command.clone()).filter(|c| !c.is_empty()),
        // `--entrypoint ""` is sent as `[""]`: it clears the image's.
        entrypoint: args.entrypoint.clone().map(|e| vec![e]),
        image: args.image.clone(),
        working_dir: args.workdir.clone().unwrap_or_default(),
        labels: Some(
            labels(&args.label)
                .into_iter()
                .chain(crate::sg::labels(&args.sg))
                .collect(),
        ),
        host_config: Some(HostConfig {
            restart_policy: args.restart.as_deref().map(restart_policy).transpose()?,
            auto_remove: args.rm,
            memory,
            nano_cpus,
            network_mode: args.network.first().cloned(),
            binds: Some(args.volume.clone()).filter(|v| !v.is_empty()),
            port_bindings: Some(port_bindings(&args.publish)?).filter(|b| !b.is_empty()),
            ulimits: Some(args.ulimit.clone()).filter(|u| !u.is_empty()),
            log_config: log_config(args)?,
            other: [
                ("ExtraHosts", &args.add_host),
                ("Links", &args.link),
                ("VolumesFrom", &args.volumes_from),
            ]
            .into_iter()
            .filter(|(_, values)| !values.is_empty())
            .map(|(key, values)| (key.to_owned(), serde_json::json!(values)))
            .collect(),
            ..Default::default()
        }),
        networking_config: endpoints(args),
        healthcheck: args.health.healthcheck()?,
        ..Default::default()
    })
}

/// `--log-driver` and `--log-opt`, as docker sends them.
fn log_config(args: &RunArgs) -> Result<Option<CreateLogConfig>> {
    if args.log_driver.is_none() && args.log_opt.is_empty() {
        return Ok(None);
    }
    let mut options = BTreeMap::new();
    for option in &args.log_opt {
        let Some((key, value)) = option.split_once('=') else {
            bail!("invalid --log-opt {option:?}: give KEY=VALUE, as max-size=10m");
        };
        options.insert(key.to_owned(), value.to_owned());
    }
    Ok(Some(CreateLogConfig {
        kind: args.log_driver.clone().unwrap_or_default(),
        config: Some(options),
    }))
}

/// `--network-alias` and `--ip`, as docker sends them: the endpoint
/// settings of the container's first network; its other networks, joined
/// besides, by name.
fn endpoints(args: &RunArgs) -> Option<NetworkingConfig> {
    let (first, others) = args.network.split_first()?;
    if others.is_empty() && args.network_alias.is_empty() && args.ip.is_none() {
        return None;
    }
    let settings = EndpointSettings {
        aliases: Some(args.network_alias.clone()).filter(|a| !a.is_empty()),
        ipam_config: args
            .ip
            .clone()
            .map(|ipv4_address| EndpointIpam { ipv4_address }),
    };
    let mut endpoints = BTreeMap::from([(first.clone(), settings)]);
    for network in others {
        endpoints
            .entry(network.clone())
            .or_insert_with(EndpointSettings::default);
    }
    Some(NetworkingConfig {
        endpoints_config: Some(endpoints),
    })
}

/// The size `--size`, `--memory` and `--cpus` ask for, as hulld fits it.
pub(crate) fn vm_size(args: &RunArgs) -> Result<Option<hull_api::size::VmSize>> {
    let (memory, nano_cpus) = resources(args)?;
    if memory.is_none() && nano_cpus.is_none() {
        return Ok(None);
    }
    let memory_mib = memory.map_or(0, |bytes| (bytes.max(0) as u64).div_ceil(1 << 20));
    let cpus = nano_cpus.map_or(0.0, |n| n as f64 / 1e9);
    Ok(Some(hull_api::size::fitting(cpus, memory_mib)?))
}

/// The limits `--memory` and `--cpus` set within the VM's size.
pub(crate) fn limits(args: &RunArgs) -> Result<hull_api::size::Limits> {
    let (memory, nano_cpus) = resources(args)?;
    Ok(hull_api::size::Limits::from_docker(memory, nano_cpus))
}

/// Docker's `Memory` (bytes) and `NanoCpus` for `--size`, `--memory` and
/// `--cpus`; hulld gives the VM the smallest size that holds them.
fn resources(args: &RunArgs) -> Result<(Option<i64>, Option<i64>)> {
    if let Some(name) = &args.size {
        let size = hull_api::size::named(name)?;
        return Ok((
            Some(i64::from(size.memory_mib) << 20),
            Some(i64::from(size.vcpus) * 1_000_000_000),
        ));
    }
    let memory = args
        .memory
        .as_deref()
        .map(|text| {
            parse_bytes(text)
                .with_context(|| format!("invalid argument {text:?} for \"-m, --memory\""))
        })
        .transpose()?;
    let nano_cpus = args.cpus.map(|cpus| (cpus * 1e9) as i64);
    Ok((memory, nano_cpus))
}

/// Docker's memory notation: a number with an optional b, k, m or g.
pub(crate) fn parse_bytes(text: &str) -> Result<i64> {
    let lower = text.trim().to_ascii_lowercase();
    let (number, unit) = match lower.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((at, _)) => lower.split_at(at),
        None => (lower.as_str(), ""),
    };
    let scale: i64 = match unit {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => bail!("expected a number with b, k, m or g"),
    };
    let value: f64 = number
        .parse()
        .context("expected a number with b, k, m or g")?;
    Ok((value * scale as f64) as i64)
}

/// `-p` entries as docker's `PortBindings`.
fn port_bindings(publish: &[String]) -> Result<BTreeMap<String, serde_json::Value>> {
    let mut bindings: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for entry in publish {
        for binding in hull_net::parse_publish(entry)? {
            let host_port = match binding.host_port {
                0 => String::new(),
                port => port.to_string(),
            };
            bindings
                .entry(binding.key())
                .or_default()
                .push(serde_json::json!({"HostIp": binding.host_ip, "HostPort": host_port}));
        }
    }
    Ok(bindings
        .into_iter()
        .map(|(key, hosts)| (key, serde_json::Value::Array(hosts)))
        .collect())
}

/// `KEY=VALUE`, or `KEY` with an empty value.
fn labels(entries: &[String]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|entry| match entry.split_once('=') {
            Some((key, value)) => (key.to_owned(), value.to_owned()),
            None => (entry.clone(), String::new()),
        })
        .collect()
}

/// `no`, `always`, `unless-stopped`, `on-failure[:N]`; hulld checks the name.
pub(crate) fn restart_policy(text: &str) -> Result<RestartPolicy> {
    let (name, count) = text.split_once(':').unwrap_or((text, ""));
    let maximum_retry_count = if count.is_empty() {
        0
    } else {
        if name != "on-failure" {
            bail!("invalid restart policy format: maximum retry count can only be used with 'on-failure'");
        }
        count
            .parse()
            .context("invalid restart policy format: maximum retry count must be an integer")?
    };
    Ok(RestartPolicy {
        name: name.to_owned(),
        maximum_retry_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_parse_like_dockers() {
        let policy = restart_policy("on-failure:2").unwrap();
        assert_eq!(
            (policy.name.as_str(), policy.maximum_retry_count),
            ("on-failure", 2)
        );
        assert_eq!(restart_policy("always").unwrap().maximum_retry_count, 0);
        assert!(restart_policy("always:3").is_err());
        assert!(restart_policy("on-failure:x").is_err());
    }

    #[test]
    fn labels_without_a_value_are_empty() {
        let parsed = labels(&["a=b=c".into(), "flag".into()]);
        assert_eq!(parsed["a"], "b=c");
        assert_eq!(parsed["flag"], "");
    }
}
