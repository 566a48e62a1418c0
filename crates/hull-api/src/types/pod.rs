//! Bodies of Hull's `/hull/pods` endpoints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /hull/pods/create`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PodCreated {
    pub id: String,
    pub name: String,
    /// The ids of its containers, in the pod file's order.
    pub containers: Vec<String>,
}

/// `GET /hull/pods/json` entries and `GET /hull/pods/{name}/json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PodSummary {
    pub id: String,
    pub name: String,
    pub hostname: String,
    /// Unix seconds.
    pub created: i64,
    /// `created`, `running` or `exited`.
    pub state: String,
    /// `2/3 running`, `exited`, …
    pub status: String,
    /// `1 vCPU, 256 MiB`; empty for the daemon's default size.
    pub size: String,
    pub restart_policy: String,
    pub labels: BTreeMap<String, String>,
    pub volumes: Vec<String>,
    pub containers: Vec<PodContainerSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PodContainerSummary {
    pub id: String,
    /// `<pod>.<container>`: what `hull exec`, `logs` and `inspect` take.
    pub name: String,
    pub image: String,
    pub state: String,
    pub exit_code: i32,
    pub restart_count: u32,
}
