//! `GET /containers/{id}/changes` (`docker diff`): what the container
//! changed in its image's files, read from the layer a commit would make
//! of them (a stopped container's in a VM started for the read).
//!
//! Whiteouts are deletions and directories in the layer are changed ones,
//! as docker shows them. A file in the layer counts as added: the layer
//! alone does not say whether the image had a file of that name.

use std::collections::BTreeMap;
use std::io::Read;

use hull_runtime::container::FilesystemView;
use serde::Serialize;
use tokio::sync::mpsc;

use super::*;

/// The most changes one answer lists: a guest that sends more is cut off,
/// so that it cannot grow hulld's memory without bound.
const MAX_CHANGES: usize = 200_000;

/// Docker's kinds of change.
const MODIFIED: u8 = 0;
const ADDED: u8 = 1;
const DELETED: u8 = 2;

#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Change {
    path: String,
    kind: u8,
}

/// `GET /containers/{id}/changes`.
pub(in crate::server) async fn changes(
    daemon: &Daemon,
    reference: &str,
) -> Result<Response<Body>, ApiError> {
    let container = container(daemon, reference)?;
    let runtime = runtime(daemon).await?;
    let tar = daemon
        .containers()
        .read_filesystem(&runtime, &container, FilesystemView::Changes)
        .await?;
    let listed = tokio::task::spawn_blocking(move || changes_of(ChunkReader::new(tar)))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the diff task failed"))?
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the container's changes: {e}"),
            )
        })?;
    Ok(json_response(StatusCode::OK, &listed))
}

/// The changes a layer (a tar with OCI whiteouts) records, by path.
pub(super) fn changes_of(reader: impl Read) -> std::io::Result<Vec<Change>> {
    let mut changes: BTreeMap<String, u8> = BTreeMap::new();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let entry = entry?;
        let Some(parts) = clean_parts(&entry.path_bytes()) else {
            continue;
        };
        let Some((name, parents)) = parts.split_last() else {
            continue;
        };
        let parent = format!("/{}", parents.join("/"));
        let (path, kind) = if name == ".wh..wh..opq" {
            (parent.clone(), MODIFIED)
        } else if let Some(hidden) = name.strip_prefix(".wh.") {
            (join(&parent, hidden), DELETED)
        } else if entry.header().entry_type().is_dir() {
            (join(&parent, name), MODIFIED)
        } else {
            (join(&parent, name), ADDED)
        };
        // The directories above a change changed too, as docker lists them.
        for depth in 1..=parents.len() {
            changes
                .entry(format!("/{}", parents[..depth].join("/")))
                .or_insert(MODIFIED);
        }
        if path != "/" {
            changes.insert(path, kind);
        }
        if changes.len() > MAX_CHANGES {
            return Err(std::io::Error::other(format!(
                "the container changed more than {MAX_CHANGES} files"
            )));
        }
    }
    Ok(changes
        .into_iter()
        .map(|(path, kind)| Change { path, kind })
        .collect())
}

fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// The components of an entry's path, without `.` and empty ones; `None`
/// for a path that climbs (`..`) or is not UTF-8.
fn clean_parts(path: &[u8]) -> Option<Vec<String>> {
    let path = std::str::from_utf8(path).ok()?;
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part => parts.push(part.to_owned()),
        }
    }
    Some(parts)
}

/// The tar's chunks as a blocking reader, for the tar parser on a
/// blocking thread.
struct ChunkReader {
    chunks: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChunkReader {
    fn new(chunks: mpsc::Receiver<Bytes>) -> Self {
        Self {
            chunks,
            current: Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, tar::EntryType)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(0);
            header.set_mode(0o644);
            header.set_path(path).unwrap();
            header.set_cksum();
            builder.append(&header, std::io::empty()).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn listed(tar: &[u8]) -> Vec<(String, u8)> {
        changes_of(tar)
            .unwrap()
            .into_iter()
            .map(|c| (c.path, c.kind))
            .collect()
    }

    #[test]
    fn a_layer_lists_as_docker_diff_does() {
        use tar::EntryType::{Directory, Regular};
        let tar = layer(&[
            ("./", Directory),
            ("./test", Regular),
            ("etc/", Directory),
            ("etc/.wh.group", Regular),
            ("var/cache/new", Regular),
            ("opt/.wh..wh..opq", Regular),
        ]);
        let expected: Vec<(String, u8)> = [
            ("/etc", MODIFIED),
            ("/etc/group", DELETED),
            ("/opt", MODIFIED),
            ("/test", ADDED),
            ("/var", MODIFIED),
            ("/var/cache", MODIFIED),
            ("/var/cache/new", ADDED),
        ]
        .iter()
        .map(|(p, k)| (p.to_string(), *k))
        .collect();
        assert_eq!(listed(&tar), expected);
    }

    #[test]
    fn hostile_layers_neither_climb_nor_crash() {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..9].copy_from_slice(b"../escape");
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(0);
        header.set_cksum();
        let mut tar = header.as_bytes().to_vec();
        tar.extend_from_slice(&[0; 1024]);
        assert!(listed(&tar).is_empty());
        // Not a tar at all, or one cut short.
        if let Ok(listed) = changes_of(&b"not a tar"[..]) {
            assert!(listed.is_empty());
        }
        let whole = layer(&[("a", tar::EntryType::Regular)]);
        let _ = changes_of(&whole[..700]);
    }
}
