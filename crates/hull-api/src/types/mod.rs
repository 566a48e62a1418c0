//! Request and response bodies, named after the Docker Engine API's own fields
//! where they exist there.

pub mod container;
pub mod pod;
pub mod stats;
pub mod ulimit;

use hull_runtime::ProcessOptions;
use serde::{Deserialize, Serialize};

/// `GET /images/json` entries, as in the Engine API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageSummary {
    pub id: String,
    pub parent_id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub created: i64,
    pub size: i64,
    pub shared_size: i64,
    pub labels: std::collections::BTreeMap<String, String>,
    pub containers: i64,
    /// Hull's own: whether the image's erofs rootfs is built yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_ready: Option<bool>,
}

/// `GET /images/{name}/history` entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HistoryItem {
    pub id: String,
    pub created: i64,
    pub created_by: String,
    pub tags: Option<Vec<String>>,
    pub size: i64,
    pub comment: String,
}

/// The Engine API's error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}

/// One line of a JSON progress stream (`POST /images/load`, `POST /images/create`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProgressLine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The layer (short digest) or tag a `status` is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(
        default,
        rename = "progressDetail",
        skip_serializing_if = "Option::is_none"
    )]
    pub progress_detail: Option<ProgressDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(
        default,
        rename = "errorDetail",
        skip_serializing_if = "Option::is_none"
    )]
    pub error_detail: Option<ErrorBody>,
}

/// Bytes done of a download, in a progress line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// `GET /version`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    pub version: String,
    pub api_version: String,
    pub min_api_version: String,
    pub os: String,
    pub arch: String,
    pub kernel_version: String,
}

/// `GET /info`: the Engine API's basics and how Hull runs VMs here.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Info {
    pub images: usize,
    #[serde(rename = "OperatingSystem")]
    pub operating_system: String,
    #[serde(rename = "DockerRootDir")]
    pub root_dir: String,
    /// `kvm` or `tcg`, once known.
    pub accelerator: Option<String>,
    /// Why that accelerator, in one line.
    pub accelerator_reason: Option<String>,
    /// The VM template: `disabled`, `missing`, `building` or `ready`.
    #[serde(default)]
    pub template: Option<String>,
    /// Idle VMs waiting in the pool.
    #[serde(default)]
    pub pooled_vms: Option<usize>,
    /// How the most recent VMs were started, oldest first.
    #[serde(default)]
    pub recent_starts: Vec<StartSummary>,
}

/// One VM start, in `GET /info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartSummary {
    pub vm: String,
    /// `pool`, `template clone` or `cold boot`.
    pub path: String,
    pub elapsed_ms: u64,
    /// Unix seconds.
    pub at: i64,
}

/// `GET /hull/templates` entries: the ready VM templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateSummary {
    pub key: String,
    pub dir: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Bytes of guest RAM in the memory file that every clone shares.
    pub memory_bytes: u64,
    pub state_bytes: u64,
    /// Unix seconds.
    pub built: Option<i64>,
    /// An image template's image id; `None` for a size's template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// An image template kept until removed (`hull template create`), not
    /// one made for a frequent image and evicted when room is needed.
    #[serde(default)]
    pub pinned: bool,
    /// Starts of the image in this size since hulld started.
    #[serde(default)]
    pub uses: u64,
    /// `ready` or `building`.
    #[serde(default)]
    pub status: String,
}

/// Body of `POST /hull/templates`: an image template to build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TemplateCreate {
    pub image: String,
    /// A size's name (`S1`); the daemon's default size when absent.
    #[serde(default)]
    pub size: Option<String>,
}

/// One pool of `GET /hull/pool`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Hull's name of the pool's size (`S1`), if it is one.
    pub size: Option<String>,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Idle VMs the pool keeps.
    pub target: usize,
    pub ready: usize,
    /// Of the ready ones, those holding the rootfs of the image that ran
    /// last in this size.
    #[serde(default)]
    pub primed: usize,
}

/// Body of `POST /hull/run`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunSpec {
    pub image: String,
    #[serde(flatten)]
    pub process: ProcessOptions,
    /// The client will send stdin.
    #[serde(default)]
    pub stdin: bool,
    /// The client's terminal size, for `tty`.
    #[serde(default)]
    pub tty_size: Option<(u16, u16)>,
    /// The VM's size; the daemon's default without one.
    #[serde(default)]
    pub size: Option<hull_runtime::size::VmSize>,
    /// Memory and CPU limits within that size.
    #[serde(default)]
    pub limits: hull_runtime::size::Limits,
}

/// Sent by hulld on the run stream as `Event` frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// The process ended; the CLI exits with `code`.
    Exited { code: i32 },
    /// The run failed; `code` is what the CLI exits with (125, 126, 127).
    Failed { message: String, code: i32 },
}

/// Sent by the CLI on the run stream as `Event` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "control", rename_all = "snake_case")]
pub enum RunControlMessage {
    Resize { rows: u16, cols: u16 },
    Signal { signal: i32 },
}

/// `GET /images/{name}/json`, as in the Engine API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageInspect {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub parent: String,
    pub comment: String,
    /// The container a commit was made from ("" otherwise), and its config.
    #[serde(default)]
    pub container: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_config: Option<serde_json::Value>,
    /// RFC 3339, as the image config says.
    pub created: String,
    pub docker_version: String,
    pub author: String,
    pub config: hull_image::ImageConfig,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub os: String,
    pub size: i64,
    #[serde(rename = "RootFS")]
    pub root_fs: InspectRootFs,
}

/// The `RootFS` object of an image inspection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectRootFs {
    #[serde(rename = "Type")]
    pub kind: String,
    pub layers: Vec<String>,
}

/// One entry of `DELETE /images/{name}` and of a prune's `ImagesDeleted`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageDeleteItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untagged: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<String>,
}

/// `POST /images/prune`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImagePruneReport {
    pub images_deleted: Option<Vec<ImageDeleteItem>>,
    pub space_reclaimed: u64,
}

/// `GET /system/df`: Hull keeps images only.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DiskUsage {
    pub layers_size: i64,
    pub images: Vec<ImageSummary>,
    pub containers: Vec<serde_json::Value>,
    pub volumes: Vec<serde_json::Value>,
    pub build_cache: Vec<serde_json::Value>,
}

/// Body of `POST /auth`, as docker sends it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuthConfig {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default, rename = "serveraddress")]
    pub server_address: String,
}

/// Answer of `POST /auth`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AuthResponse {
    pub status: String,
    #[serde(default)]
    pub identity_token: String,
}
