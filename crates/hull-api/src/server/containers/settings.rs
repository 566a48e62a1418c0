//! Docker's container settings that a VM makes moot (`CpuShares`,
//! `PidMode`, `Init`...): kept as the client sent them and shown back by
//! inspect, as docker shows what it stores. Only what Hull cannot honour
//! in any form (another runtime, another isolation) is refused.

use hull_runtime::container::ClientSettings;
use serde_json::{Map, Value};

use super::{ApiError, StatusCode};

/// The section of [`ClientSettings`] holding `HostConfig` keys.
pub(super) const HOST_CONFIG: &str = "HostConfig";
/// The section holding the container's `Config` keys.
pub(super) const CONFIG: &str = "Config";

/// The runtimes a client may name: Hull's VM is the only one there is,
/// and clients that name docker's default mean "the default".
const RUNTIMES: [&str; 3] = ["runc", "io.containerd.runc.v2", "hull"];

/// What docker answers for a key the client left out.
fn host_defaults() -> Map<String, Value> {
    const DEFAULTS: &str = r#"{
        "ContainerIDFile": "", "VolumeDriver": "", "VolumesFrom": null,
        "ConsoleSize": [0, 0], "CapAdd": null, "CapDrop": null,
        "CgroupnsMode": "private", "Dns": [], "DnsOptions": [], "DnsSearch": [],
        "ExtraHosts": null, "GroupAdd": null, "IpcMode": "private", "Cgroup": "",
        "Links": null, "OomScoreAdj": 0, "PidMode": "", "Privileged": false,
        "PublishAllPorts": false, "ReadonlyRootfs": false, "SecurityOpt": null,
        "UTSMode": "", "UsernsMode": "", "ShmSize": 67108864, "Runtime": "runc",
        "Isolation": "", "CpuShares": 0, "CgroupParent": "", "BlkioWeight": 0,
        "BlkioWeightDevice": [], "BlkioDeviceReadBps": [], "BlkioDeviceWriteBps": [],
        "BlkioDeviceReadIOps": [], "BlkioDeviceWriteIOps": [], "CpuPeriod": 0,
        "CpuQuota": 0, "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0,
        "CpusetCpus": "", "CpusetMems": "", "Devices": [], "DeviceCgroupRules": null,
        "DeviceRequests": null, "MemoryReservation": 0, "MemorySwap": 0,
        "MemorySwappiness": null, "OomKillDisable": null, "PidsLimit": null,
        "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
        "Mounts": null
    }"#;
    let json: Value = serde_json::from_str(DEFAULTS).expect("the defaults are JSON");
    match json {
        Value::Object(map) => map,
        _ => unreachable!("the defaults are an object"),
    }
}

/// Keys whose empty value means docker's default, which docker then shows.
const DEFAULTED: [&str; 4] = ["Runtime", "IpcMode", "ShmSize", "CgroupnsMode"];

/// Whether `value` leaves `key` at its default.
fn is_unset(key: &str, value: &Value) -> bool {
    value.is_null()
        || (DEFAULTED.contains(&key) && (value.as_str() == Some("") || value.as_i64() == Some(0)))
}

/// The settings of a create request to keep: `host` and `config` are the
/// keys of `HostConfig` and of the container's config that Hull does not
/// read otherwise. Refuses what Hull cannot honour.
pub(super) fn from_create(
    host: Map<String, Value>,
    config: Map<String, Value>,
    privileged: bool,
) -> Result<ClientSettings, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    let text = |key: &str| host.get(key).and_then(Value::as_str).unwrap_or_default();
    let runtime = text("Runtime");
    if !runtime.is_empty() && !RUNTIMES.contains(&runtime) {
        return Err(bad(format!(
            "Unknown runtime specified {runtime}: Hull runs every container in a VM of its own; \
             leave Runtime empty"
        )));
    }
    let isolation = text("Isolation");
    if !matches!(isolation, "" | "default") {
        return Err(bad(format!(
            "invalid isolation: {isolation:?} on linux; Hull's isolation is its VM (\"default\")"
        )));
    }
    let mut settings = ClientSettings::new();
    let mut host: Map<String, Value> = host
        .into_iter()
        .filter(|(key, value)| !is_unset(key, value))
        .collect();
    if privileged {
        host.insert("Privileged".into(), Value::Bool(true));
    }
    if !host.is_empty() {
        settings.insert(HOST_CONFIG.into(), host);
    }
    let config: Map<String, Value> = config.into_iter().filter(|(_, v)| !v.is_null()).collect();
    if !config.is_empty() {
        settings.insert(CONFIG.into(), config);
    }
    Ok(settings)
}

/// The settings an update changes, by docker's names.
pub(super) fn from_update(changes: &[(&str, Option<Value>)]) -> ClientSettings {
    let host: Map<String, Value> = changes
        .iter()
        .filter_map(|(key, value)| Some(((*key).to_owned(), value.clone()?)))
        .collect();
    if host.is_empty() {
        return ClientSettings::new();
    }
    ClientSettings::from([(HOST_CONFIG.to_owned(), host)])
}

/// The `HostConfig` keys inspect shows beside Hull's own (`computed`, which
/// win): the client's, then docker's defaults.
pub(super) fn host_config_extra(computed: &Value, stored: &ClientSettings) -> Map<String, Value> {
    let mut extra = host_defaults();
    if let Some(host) = stored.get(HOST_CONFIG) {
        extra.extend(host.clone());
    }
    without(extra, computed)
}

/// The container `Config` keys inspect shows beside Hull's own.
pub(super) fn config_extra(computed: &Value, stored: &ClientSettings) -> Map<String, Value> {
    without(stored.get(CONFIG).cloned().unwrap_or_default(), computed)
}

/// `extra` less the keys `computed` (an object) has.
fn without(mut extra: Map<String, Value>, computed: &Value) -> Map<String, Value> {
    if let Value::Object(computed) = computed {
        extra.retain(|key, _| !computed.contains_key(key));
    }
    extra
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn settings_a_vm_makes_moot_are_kept_and_shown_back() {
        let host = object(serde_json::json!({
            "CpuShares": 512, "PidMode": "host", "Init": true, "Tmpfs": {"/t": "size=1m"},
            "Runtime": "", "IpcMode": "", "Dns": null,
        }));
        let config =
            object(serde_json::json!({"MacAddress": "02:42:ac:11:00:0a", "Healthcheck": null}));
        let stored = from_create(host, config, true).unwrap();
        let computed = serde_json::json!({"Memory": 0, "NetworkMode": "default"});
        let shown = host_config_extra(&computed, &stored);
        assert_eq!(shown["CpuShares"], 512);
        assert_eq!(shown["PidMode"], "host");
        assert_eq!(shown["Init"], true);
        assert_eq!(shown["Tmpfs"]["/t"], "size=1m");
        assert_eq!(shown["Privileged"], true);
        // Empty means docker's default, which docker then shows.
        assert_eq!(shown["Runtime"], "runc");
        assert_eq!(shown["IpcMode"], "private");
        assert_eq!(shown["Dns"], serde_json::json!([]));
        assert!(!shown.contains_key("Memory"), "Hull's own value wins");
        let config = config_extra(&serde_json::json!({}), &stored);
        assert_eq!(config["MacAddress"], "02:42:ac:11:00:0a");
        assert!(!config.contains_key("Healthcheck"));
    }

    #[test]
    fn another_runtime_or_isolation_is_refused() {
        for host in [
            serde_json::json!({"Runtime": "nvidia"}),
            serde_json::json!({"Isolation": "hyperv"}),
        ] {
            let refused = from_create(object(host.clone()), Map::new(), false);
            assert!(refused.is_err(), "{host}");
        }
        for host in [
            serde_json::json!({"Runtime": "runc", "Isolation": "default"}),
            serde_json::json!({"Runtime": null, "Isolation": ""}),
        ] {
            assert!(
                from_create(object(host.clone()), Map::new(), false).is_ok(),
                "{host}"
            );
        }
    }

    #[test]
    fn an_update_keeps_only_what_it_sets() {
        let settings = from_update(&[("CpuShares", Some(Value::from(3))), ("CpusetCpus", None)]);
        let host = &settings[HOST_CONFIG];
        assert_eq!(host.len(), 1);
        assert_eq!(host["CpuShares"], 3);
        assert!(from_update(&[("PidsLimit", None)]).is_empty());
    }
}
