//! `image prune`: removing the unused images that docker's prune filters
//! choose (`dangling`, `until`, `label`, `label!`), then every blob and erofs
//! file no image refers to any more.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use super::tags::Removal;
use super::{ImageStore, StoreError, TAGS};
use crate::reference;
use crate::spec;

/// Errors of reading docker's prune filters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PruneFilterError {
    #[error("invalid filter '{0}'")]
    UnknownKey(String),
    #[error("invalid filter 'dangling={0}': it must be true or false")]
    Dangling(String),
    #[error("more than one until filter specified")]
    SeveralUntil,
    #[error("cannot read '{0}' as a timestamp (seconds since the epoch, or RFC 3339) or a duration (10m, 1h30m)")]
    Until(String),
}

/// What a prune removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// docker's lines: per image its names untagged, its id, its layers.
    pub removals: Vec<Removal>,
    /// Bytes of blobs and erofs files freed.
    pub space_reclaimed: u64,
}

/// `label=key` or `label=key=value`: an image has the label (with that value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelFilter {
    pub key: String,
    pub value: Option<String>,
}

impl LabelFilter {
    pub fn parse(text: &str) -> LabelFilter {
        match text.split_once('=') {
            Some((key, value)) => LabelFilter {
                key: key.to_owned(),
                value: Some(value.to_owned()),
            },
            None => LabelFilter {
                key: text.to_owned(),
                value: None,
            },
        }
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        labels
            .get(&self.key)
            .is_some_and(|v| self.value.as_ref().is_none_or(|want| want == v))
    }
}

/// Which unused images a prune removes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneFilter {
    /// Tagged images too, not only dangling ones (`prune -a`, `dangling=false`).
    pub all: bool,
    /// Only images created at or before this time, in seconds since the epoch.
    pub until: Option<i64>,
    /// An image must carry every one of these labels.
    pub labels: Vec<LabelFilter>,
    /// An image carrying every one of these labels is kept (`label!=…`).
    pub without_labels: Vec<LabelFilter>,
}

impl PruneFilter {
    /// Reads docker's `filters` of `POST /images/prune`, each key with its
    /// values; durations in `until` count back from `now`.
    pub fn from_docker(
        filters: &BTreeMap<String, Vec<String>>,
        now: SystemTime,
    ) -> Result<PruneFilter, PruneFilterError> {
        let mut filter = PruneFilter::default();
        for (key, values) in filters {
            match key.as_str() {
                "dangling" => filter.all = !dangling(values)?,
                "until" => match &values[..] {
                    [] => {}
                    [value] => filter.until = Some(until(value, now)?),
                    _ => return Err(PruneFilterError::SeveralUntil),
                },
                "label" => filter.labels = values.iter().map(|v| LabelFilter::parse(v)).collect(),
                "label!" => {
                    filter.without_labels = values.iter().map(|v| LabelFilter::parse(v)).collect()
                }
                other => return Err(PruneFilterError::UnknownKey(other.to_owned())),
            }
        }
        Ok(filter)
    }

    /// Whether an unused image goes: `created` as seconds since the epoch.
    fn chooses(
        &self,
        tagged: bool,
        created: Option<i64>,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        if tagged && !self.all {
            return false;
        }
        // Like docker, an image without a creation time is never "old enough".
        if let Some(until) = self.until {
            if created.is_none_or(|c| c > until) {
                return false;
            }
        }
        let kept_by_label = !self.without_labels.is_empty()
            && self.without_labels.iter().all(|l| l.matches(labels));
        self.labels.iter().all(|l| l.matches(labels)) && !kept_by_label
    }
}

/// docker's `dangling` filter: one boolean, `true` when absent.
fn dangling(values: &[String]) -> Result<bool, PruneFilterError> {
    let mut wanted = BTreeSet::new();
    for value in values {
        match value.to_ascii_lowercase().as_str() {
            "true" | "1" => wanted.insert(true),
            "false" | "0" => wanted.insert(false),
            _ => return Err(PruneFilterError::Dangling(value.clone())),
        };
    }
    match wanted.len() {
        0 => Ok(true),
        1 => Ok(wanted.contains(&true)),
        _ => Err(PruneFilterError::Dangling(values.join(","))),
    }
}

/// docker's `until`: a Go duration back from `now`, an RFC 3339 time (or a
/// bare date, taken as UTC), or seconds since the epoch with a fraction.
fn until(value: &str, now: SystemTime) -> Result<i64, PruneFilterError> {
    let invalid = || PruneFilterError::Until(value.to_owned());
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    // "0" reads as a duration in Go too, but docker takes it as the epoch.
    if value != "0" {
        if let Some(nanos) = go_duration(value) {
            let secs = i64::try_from(nanos / 1_000_000_000).map_err(|_| invalid())?;
            return now_secs.checked_sub(secs).ok_or_else(invalid);
        }
    }
    if let Some(secs) = spec::parse_rfc3339(value) {
        return Ok(secs);
    }
    let zoned = match value.len() {
        10 => format!("{value}T00:00:00Z"),
        _ => format!("{value}Z"),
    };
    if let Some(secs) = spec::parse_rfc3339(&zoned) {
        return Ok(secs);
    }
    let seconds = value.split_once('.').map_or(value, |(s, _)| s);
    let fraction_ok = value
        .split_once('.')
        .is_none_or(|(_, f)| f.bytes().all(|b| b.is_ascii_digit()));
    match seconds.parse::<i64>() {
        Ok(secs) if fraction_ok => Ok(secs),
        _ => Err(invalid()),
    }
}

/// A Go `time.ParseDuration` string (`300ms`, `-1.5h`, `2h45m`) in
/// nanoseconds, or `None` if it is not one.
fn go_duration(text: &str) -> Option<i128> {
    let (negative, mut rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale: f64 = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number.parse::<f64>().ok()? * scale;
    }
    // Go's durations end at about 292 years.
    if total > i64::MAX as f64 {
        return None;
    }
    let nanos = total.round() as i128;
    Some(if negative { -nanos } else { nanos })
}

impl ImageStore {
    /// Removes the images `filter` chooses among those not in `in_use`, with
    /// their tags; then every blob and erofs file no image refers to.
    pub fn prune(
        &self,
        filter: &PruneFilter,
        in_use: &BTreeSet<String>,
    ) -> Result<Pruned, StoreError> {
        let _blobs = self.lock("blobs")?;
        let _tags = self.lock("tags")?;
        let mut tags = self.tags()?;
        let mut pruned = Pruned::default();
        for record in self.records()? {
            let image = self.image(record, &tags)?;
            if in_use.contains(&image.id) {
                continue;
            }
            let created = image.created.as_deref().and_then(spec::parse_rfc3339);
            let labels = image.config.labels.clone().unwrap_or_default();
            if !filter.chooses(!image.repo_tags.is_empty(), created, &labels) {
                continue;
            }
            for tag in &image.repo_tags {
                tags.remove(tag);
                pruned
                    .removals
                    .push(Removal::Untagged(reference::familiar(tag)));
            }
            if !image.repo_tags.is_empty() {
                self.write_json(&self.root.join(TAGS), &tags)?;
            }
            let deleted = self.delete_image(&image.record)?;
            pruned.removals.extend(deleted.removals);
            pruned.space_reclaimed += deleted.space_reclaimed;
        }
        pruned.space_reclaimed += self.collect_garbage()?;
        Ok(pruned)
    }
}

#[cfg(test)]
#[path = "prune_tests.rs"]
mod tests;
