//! Bodies of `docker top`, `docker stats` and `docker cp`'s path stat, in the
//! Engine API's shapes (its stats fields are snake_case, unlike the rest).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /containers/{id}/top`: `ps`'s column titles and one row per process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TopResponse {
    pub titles: Vec<String>,
    pub processes: Vec<Vec<String>>,
}

/// `GET /containers/{id}/stats`: one sample, with the one before it
/// (`precpu_stats`) for clients to compute CPU percentages.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatsResponse {
    pub name: String,
    pub id: String,
    /// RFC 3339; Go's zero time when there is no sample.
    pub read: String,
    pub preread: String,
    pub pids_stats: PidsStats,
    pub blkio_stats: BlkioStats,
    pub num_procs: u32,
    pub storage_stats: BTreeMap<String, u64>,
    pub cpu_stats: CpuStats,
    pub precpu_stats: CpuStats,
    pub memory_stats: MemoryStats,
    /// By interface name; absent without a network, as docker's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<BTreeMap<String, hull_proto::InterfaceStats>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PidsStats {
    pub current: u64,
}

/// Block I/O: not measured, so empty, as docker reports it without cgroup
/// figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BlkioStats {
    pub io_service_bytes_recursive: Option<Vec<serde_json::Value>>,
    pub io_serviced_recursive: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuStats {
    pub cpu_usage: CpuUsage,
    /// CPU time that passed on all CPUs together, in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_cpu_usage: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_cpus: Option<u32>,
    pub throttling_data: ThrottlingData,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuUsage {
    /// Busy CPU time of all CPUs together, in nanoseconds.
    pub total_usage: u64,
    pub usage_in_kernelmode: u64,
    pub usage_in_usermode: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ThrottlingData {
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_time: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemoryStats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<BTreeMap<String, u64>>,
}

/// Docker's `X-Docker-Container-Path-Stat` header, before base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPathStat {
    pub name: String,
    pub size: i64,
    /// Go's `os.FileMode`.
    pub mode: u32,
    /// RFC 3339.
    pub mtime: String,
    pub link_target: String,
}
