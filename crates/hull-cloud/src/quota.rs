//! A tenant's quota: how many objects it may keep and how much of the host
//! its running containers may hold.

use serde::{Deserialize, Serialize};

/// Limits; `None` is unlimited. Memory in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Quota {
    pub containers: Option<u64>,
    pub images: Option<u64>,
    pub volumes: Option<u64>,
    pub snapshots: Option<u64>,
    pub fips: Option<u64>,
    pub memory_mib: Option<u64>,
    pub cpus: Option<u64>,
}

impl Default for Quota {
    /// Hyper.sh's default quota per region; memory and vCPUs unlimited.
    fn default() -> Self {
        Self {
            containers: Some(10),
            images: Some(20),
            volumes: Some(40),
            snapshots: Some(40),
            fips: Some(2),
            memory_mib: None,
            cpus: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuotaError {
    #[error("quota entry {0:?} is not NAME=VALUE")]
    NotAPair(String),
    #[error(
        "unknown quota {0:?}: use containers, images, volumes, snapshots, fips, memory or cpus"
    )]
    Unknown(String),
    #[error("quota {name} has an invalid value {value:?}: a count, 'unlimited', or for memory a size such as 8g")]
    Value { name: String, value: String },
}

impl Quota {
    /// Applies `containers=20,volumes=40,fips=2,memory=8g,cpus=unlimited` on top of `self`.
    pub fn with_overrides(mut self, spec: &str) -> Result<Self, QuotaError> {
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, value) = entry
                .split_once('=')
                .ok_or_else(|| QuotaError::NotAPair(entry.to_owned()))?;
            let bad = || QuotaError::Value {
                name: name.to_owned(),
                value: value.to_owned(),
            };
            let parsed = if value.eq_ignore_ascii_case("unlimited") {
                None
            } else if name == "memory" {
                Some(parse_mib(value).ok_or_else(bad)?)
            } else {
                Some(value.parse::<u64>().map_err(|_| bad())?)
            };
            let slot = match name {
                "containers" => &mut self.containers,
                "images" => &mut self.images,
                "volumes" => &mut self.volumes,
                "snapshots" => &mut self.snapshots,
                "fips" => &mut self.fips,
                "memory" => &mut self.memory_mib,
                "cpus" => &mut self.cpus,
                _ => return Err(QuotaError::Unknown(name.to_owned())),
            };
            *slot = parsed;
        }
        Ok(self)
    }
}

/// `512m`, `8g`, `1t` or plain MiB, into MiB.
fn parse_mib(text: &str) -> Option<u64> {
    let text = text.to_ascii_lowercase();
    let text = text.strip_suffix('b').unwrap_or(&text);
    let (digits, scale) = match text.char_indices().last()? {
        (i, 'm') => (&text[..i], 1),
        (i, 'g') => (&text[..i], 1024),
        (i, 't') => (&text[..i], 1024 * 1024),
        _ => (text, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_on_top_of_hyper_sh_defaults() {
        let quota = Quota::default()
            .with_overrides("containers=20, volumes=40,fips=2,memory=8g,images=unlimited")
            .unwrap();
        assert_eq!(quota.containers, Some(20));
        assert_eq!(quota.fips, Some(2));
        assert_eq!(quota.memory_mib, Some(8192));
        assert_eq!(quota.images, None);
        assert_eq!(quota.snapshots, Some(40));
        assert_eq!(
            Quota::default().with_overrides("").unwrap(),
            Quota::default()
        );
    }

    #[test]
    fn bad_overrides_name_what_is_wrong() {
        let q = Quota::default();
        assert_eq!(
            q.with_overrides("gpus=1"),
            Err(QuotaError::Unknown("gpus".into()))
        );
        assert_eq!(
            q.with_overrides("containers"),
            Err(QuotaError::NotAPair("containers".into()))
        );
        assert!(matches!(
            q.with_overrides("containers=-1"),
            Err(QuotaError::Value { .. })
        ));
        assert!(matches!(
            q.with_overrides("memory=99999999999999t"),
            Err(QuotaError::Value { .. })
        ));
    }
}
