//! docker's `--filter KEY=VALUE` flags, as the API's `filters` query wants them.

use std::collections::BTreeMap;

/// A `--filter` flag without `=`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid argument {0:?} for \"-f, --filter\" flag: bad format of filter (expected name=value)"
)]
pub struct FilterFlagError(pub String);

/// `key=value` flags grouped by key, as `{"key":["value",…]}`. The key ends at
/// the first `=`, so `label!=x` is the key `label!` with the value `x`.
pub fn flag_filters(entries: &[String]) -> Result<BTreeMap<String, Vec<String>>, FilterFlagError> {
    let mut filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in entries {
        let (key, value) = entry
            .split_once('=')
            .ok_or_else(|| FilterFlagError(entry.clone()))?;
        filters
            .entry(key.trim().to_lowercase())
            .or_default()
            .push(value.to_owned());
    }
    Ok(filters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_group_by_key_and_label_not_keeps_its_bang() {
        let flags = ["label=a=b", "label!=c", "until=10m", "label=d"].map(String::from);
        let filters = flag_filters(&flags).unwrap();
        assert_eq!(filters["label"], ["a=b", "d"]);
        assert_eq!(filters["label!"], ["c"]);
        assert_eq!(filters["until"], ["10m"]);
        assert!(flag_filters(&["dangling".to_owned()]).is_err());
    }
}
