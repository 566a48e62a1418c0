//! The operator's Prometheus metrics: one registry, owned by the daemon,
//! encoded in the text format on a listener of its own (`hulld --metrics`).
//!
//! Every label value comes from a fixed set: a size's name or `other`, a
//! start path, a method class, a status code, a listener, a pull result.
//! None is ever taken from what a client sends (an image name, a path, a
//! container id): each distinct label value is a series held in memory for
//! the daemon's life, so a label fed by user input is a memory attack.

mod listener;

use std::sync::Mutex;

use hull_runtime::size::VmSize;
use hyper::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use listener::{serve, MAX_CONNECTIONS};

/// The Prometheus text format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Start latency buckets, in seconds: a pooled VM starts in tens of
/// milliseconds, a cold boot under TCG in seconds.
const START_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Which listener served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The operator's Unix socket.
    Unix,
    /// The tenants' TLS listener.
    Tenant,
}

impl Listener {
    fn label(self) -> &'static str {
        match self {
            Listener::Unix => "unix",
            Listener::Tenant => "tenant",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: &'static str,
    method: &'static str,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
    size: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SizeLabels {
    size: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    /// A tenant's name (made by the operator, so a bounded set), or empty
    /// for the operator's own containers.
    tenant: String,
    size: &'static str,
}

/// Billed container seconds of one tenant and size, read from the usage
/// records at each scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantUsage {
    /// `None`: the operator's own.
    pub tenant: Option<String>,
    /// The size's name as metering recorded it.
    pub size: String,
    pub seconds: u64,
}

/// What one size's VMs are doing, read from the runtime at each scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeState {
    pub size: VmSize,
    /// VMs the runtime holds: containers', runs', pods', pooled and
    /// template builds.
    pub held: usize,
    /// Idle clones in the size's pool, and how many it keeps.
    pub pool_idle: usize,
    pub pool_target: usize,
    /// The template's state (`missing`, `building`, `ready`); `None`:
    /// templates are off.
    pub template: Option<&'static str>,
}

/// The series whose values are read at scrape time, not counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub sizes: Vec<SizeState>,
    pub usage: Vec<TenantUsage>,
}

/// Hull's metrics, shared by the API's listeners and the runtime's hook.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    pulls: Family<ResultLabels, Counter>,
    refused_connections: Family<LimitLabels, Counter>,
    starts: Family<PathLabels, Histogram>,
    vms: Family<StateLabels, Gauge>,
    templates: Family<StateLabels, Gauge>,
    pool_idle: Family<SizeLabels, Gauge>,
    pool_target: Family<SizeLabels, Gauge>,
    tenant_seconds: Family<TenantLabels, Counter>,
    /// One scrape at a time: a scrape clears and sets the gauges before it
    /// encodes them.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hull");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "API requests answered, by listener, method and status code",
            requests.clone(),
        );
        let pulls = Family::<ResultLabels, Counter>::default();
        registry.register(
            "image_pulls",
            "Image pulls from registries, by result (ok, error)",
            pulls.clone(),
        );
        let refused_connections = Family::<LimitLabels, Counter>::default();
        registry.register(
            "tenant_connections_refused",
            "Tenant listener connections refused, by the limit they met (address: unauthenticated ones per address; tenant: one tenant's; other_tenant: a request of another tenant's on a connection)",
            refused_connections.clone(),
        );
        let starts = Family::<PathLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(START_BUCKETS)) as fn() -> Histogram,
        );
        registry.register(
            "vm_start_seconds",
            "Time from a run's request for a VM to its agent's readiness, by path (pool, template_clone, image_template_clone, cold_boot)",
            starts.clone(),
        );
        let vms = Family::<StateLabels, Gauge>::default();
        registry.register(
            "vms",
            "VMs by state (running: containers', runs' and pods'; pooled: idle clones; template: ready templates) and size",
            vms.clone(),
        );
        let templates = Family::<StateLabels, Gauge>::default();
        registry.register(
            "templates",
            "VM templates by state (missing, building, ready) and size: 1 for the state a size's template is in",
            templates.clone(),
        );
        let pool_idle = Family::<SizeLabels, Gauge>::default();
        registry.register(
            "pool_idle_vms",
            "Idle resumed clones in each size's pool",
            pool_idle.clone(),
        );
        let pool_target = Family::<SizeLabels, Gauge>::default();
        registry.register(
            "pool_target_vms",
            "Idle clones each size's pool keeps",
            pool_target.clone(),
        );
        let tenant_seconds = Family::<TenantLabels, Counter>::default();
        registry.register(
            "tenant_container_seconds",
            "Billed container seconds (per second, 10 s at least per start) by tenant (empty: the operator's) and size",
            tenant_seconds.clone(),
        );
        Self {
            registry,
            requests,
            pulls,
            refused_connections,
            starts,
            vms,
            templates,
            pool_idle,
            pool_target,
            tenant_seconds,
            scrape: Mutex::new(()),
        }
    }

    /// Counts a request answered with `status`.
    pub fn request(&self, listener: Listener, method: &Method, status: StatusCode) {
        self.requests
            .get_or_create(&RequestLabels {
                listener: listener.label(),
                method: method_class(method),
                code: status.as_u16(),
            })
            .inc();
    }

    /// Counts a pull that ended.
    pub fn pull(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.pulls.get_or_create(&ResultLabels { result }).inc();
    }

    /// Counts a tenant listener connection refused at `limit` (`address`,
    /// `tenant`, `other_tenant`).
    pub fn refused_connection(&self, limit: &'static str) {
        self.refused_connections
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    /// Records a VM start: `path` as the runtime names it.
    pub fn start(&self, path: &str, elapsed_ms: u64) {
        self.starts
            .get_or_create(&PathLabels {
                path: start_path(path),
            })
            .observe(elapsed_ms as f64 / 1000.0);
    }

    /// The registry in the Prometheus text format, its gauges set from
    /// `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.set_gauges(snapshot);
        self.count_usage(&snapshot.usage);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    fn set_gauges(&self, snapshot: &Snapshot) {
        // Cleared first: a size gone from the snapshot leaves no series.
        for family in [&self.vms, &self.templates] {
            family.clear();
        }
        for family in [&self.pool_idle, &self.pool_target] {
            family.clear();
        }
        for state in &snapshot.sizes {
            let size = size_label(state.size);
            let template_ready = state.template == Some("ready");
            let building = state.template == Some("building");
            // A template build and the pool's idle clones hold VMs too;
            // what is left runs containers.
            let running = state
                .held
                .saturating_sub(state.pool_idle)
                .saturating_sub(usize::from(building));
            for (vm_state, count) in [
                ("running", running),
                ("pooled", state.pool_idle),
                ("template", usize::from(template_ready)),
            ] {
                self.vms
                    .get_or_create(&StateLabels {
                        state: vm_state,
                        size,
                    })
                    .set(gauge(count));
            }
            if let Some(template) = state.template {
                for template_state in ["missing", "building", "ready"] {
                    self.templates
                        .get_or_create(&StateLabels {
                            state: template_state,
                            size,
                        })
                        .set(i64::from(template == template_state));
                }
            }
            if state.pool_target > 0 {
                let labels = SizeLabels { size };
                self.pool_idle
                    .get_or_create(&labels)
                    .set(gauge(state.pool_idle));
                self.pool_target
                    .get_or_create(&labels)
                    .set(gauge(state.pool_target));
            }
        }
    }
}

impl Metrics {
    /// Brings the usage counters up to the records' totals. Counters only
    /// grow: a run's estimate that its recorded end lowers stays counted
    /// until the totals pass it again.
    fn count_usage(&self, usage: &[TenantUsage]) {
        let mut totals = std::collections::HashMap::new();
        for entry in usage {
            let labels = TenantLabels {
                tenant: entry.tenant.clone().unwrap_or_default(),
                size: named_size(&entry.size),
            };
            *totals.entry(labels).or_insert(0u64) += entry.seconds;
        }
        for (labels, seconds) in totals {
            let counter = self.tenant_seconds.get_or_create(&labels);
            counter.inc_by(seconds.saturating_sub(counter.get()));
        }
    }
}

/// A recorded size's name as a label: one of Hull's sizes or `other`.
fn named_size(name: &str) -> &'static str {
    hull_runtime::size::SIZES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("other", |(n, _)| n)
}

/// What `runtime`'s VMs, templates and pools are doing now.
pub fn snapshot<H: hull_vm::Hypervisor>(runtime: &hull_runtime::Runtime<H>) -> Snapshot {
    let mut sizes = std::collections::BTreeMap::new();
    fn state(
        sizes: &mut std::collections::BTreeMap<VmSize, SizeState>,
        size: VmSize,
    ) -> &mut SizeState {
        sizes.entry(size).or_insert(SizeState {
            size,
            held: 0,
            pool_idle: 0,
            pool_target: 0,
            template: None,
        })
    }
    for (size, held) in runtime.vms_by_size() {
        state(&mut sizes, size).held = held;
    }
    for (size, templates) in runtime.templates_by_size() {
        state(&mut sizes, size).template = Some(templates.status());
    }
    for pool in runtime.pool_status() {
        let state = state(&mut sizes, pool.size);
        state.pool_target = pool.target;
        state.pool_idle = pool.ready;
    }
    Snapshot {
        sizes: sizes.into_values().collect(),
        usage: Vec::new(),
    }
}

fn gauge(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Hull's name for a size (`S4`), or `other` for a size of no name: sizes
/// summed under one label stay a bounded set.
fn size_label(size: VmSize) -> &'static str {
    size.name().unwrap_or("other")
}

/// The common methods by name, all others as `other`: hyper admits any
/// token as a method, so a client could otherwise make up new labels.
fn method_class(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

/// The runtime's start paths as label values.
fn start_path(path: &str) -> &'static str {
    match path {
        "pool" => "pool",
        "template clone" => "template_clone",
        "image template clone" => "image_template_clone",
        "cold boot" => "cold_boot",
        _ => "other",
    }
}

#[cfg(test)]
mod tests;
