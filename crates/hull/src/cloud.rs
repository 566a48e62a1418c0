//! Reaching a Hull cloud as a tenant: `hull config` and `-H tcp://…`.
//!
//! Credentials live in `~/.hull/config.json` (0600), keyed by the cloud's
//! address, as the `hyper` client kept them in `~/.hyper/config.json`;
//! `HULL_ACCESS_KEY` and `HULL_SECRET_KEY` override them.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use hull_api::Client;
use serde::{Deserialize, Serialize};

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The tenant's access key.
    #[arg(long)]
    accesskey: Option<String>,
    /// The tenant's secret key.
    #[arg(long)]
    secretkey: Option<String>,
    /// The cloud's region.
    #[arg(long)]
    region: Option<String>,
    /// The CA that signed the cloud's certificate (PEM).
    #[arg(long)]
    tlscacert: Option<PathBuf>,
    /// The cloud's address, tcp://HOST:PORT.
    host: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    clouds: BTreeMap<String, CloudEntry>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct CloudEntry {
    #[serde(default)]
    accesskey: String,
    #[serde(default)]
    secretkey: String,
    #[serde(default)]
    region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cacert: Option<PathBuf>,
}

fn config_path() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("HULL_CONFIG") {
        return Ok(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME").context("HOME is not set: set HULL_CONFIG instead")?;
    Ok(Path::new(&home).join(".hull/config.json"))
}

fn read_config(path: &Path) -> Result<ConfigFile> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a Hull client config", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// `hull config`: records (or updates) the credentials for a cloud.
pub fn configure(args: ConfigArgs) -> Result<i32> {
    let authority = authority(&args.host)?;
    let path = config_path()?;
    let mut config = read_config(&path)?;
    let entry = config
        .clouds
        .entry(format!("tcp://{authority}"))
        .or_default();
    if let Some(key) = args.accesskey {
        entry.accesskey = key;
    }
    if let Some(key) = args.secretkey {
        entry.secretkey = key;
    }
    if let Some(region) = args.region {
        entry.region = region;
    }
    if let Some(ca) = args.tlscacert {
        let ca = ca
            .canonicalize()
            .with_context(|| format!("cannot find {}", ca.display()))?;
        entry.cacert = Some(ca);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(&serde_json::to_vec_pretty(&config)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "Saved the credentials of tcp://{authority} in {}",
        path.display()
    );
    Ok(0)
}

/// `tcp://HOST:PORT` into `HOST:PORT`.
fn authority(host: &str) -> Result<String> {
    let Some(authority) = host.strip_prefix("tcp://") else {
        bail!("a cloud's address is tcp://HOST:PORT, not {host:?}");
    };
    let authority = authority.trim_end_matches('/');
    if !authority.contains(':') {
        bail!("a cloud's address needs its port: tcp://{authority}:8443");
    }
    Ok(authority.to_owned())
}

/// A signing client of the cloud at `host`, with the credentials `hull
/// config` saved (or the environment's) and the CA given or saved.
pub fn tenant_client(host: &str, ca: Option<&Path>) -> Result<Client> {
    let authority = authority(host)?;
    let path = config_path()?;
    let mut entry = read_config(&path)?
        .clouds
        .get(&format!("tcp://{authority}"))
        .cloned()
        .unwrap_or_default();
    if let Ok(key) = std::env::var("HULL_ACCESS_KEY") {
        entry.accesskey = key;
    }
    if let Ok(key) = std::env::var("HULL_SECRET_KEY") {
        entry.secretkey = key;
    }
    if entry.accesskey.is_empty() || entry.secretkey.is_empty() {
        bail!(
            "no credentials for tcp://{authority}: run `hull config --accesskey AK --secretkey SK tcp://{authority}`"
        );
    }
    let Some(ca) = ca.map(Path::to_owned).or(entry.cacert) else {
        bail!("no CA for tcp://{authority}: pass --tlscacert ca.pem, or save it with `hull config --tlscacert`");
    };
    let region = if entry.region.is_empty() {
        "us-west-1".to_owned()
    } else {
        entry.region
    };
    let credentials = hull_cloud::sign::Credentials {
        access_key: entry.accesskey,
        secret_key: entry.secretkey,
        region,
    };
    Client::tls(&authority, &ca, credentials)
        .with_context(|| format!("cannot reach tcp://{authority}"))
}
