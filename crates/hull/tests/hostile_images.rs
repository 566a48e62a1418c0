//! Images built to attack the host: a layer that swaps a directory for a
//! symlink to a host directory, and a layer whose tar header claims gigabytes.
//! Each is loaded through hulld; the host keeps its files and its memory, the
//! store stays as it was, and good images still run.

mod common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::registry::Registry;
use common::{assert_fails, layered_archive, loaded_daemon, stdout_of, text, Daemon};

/// Mode, owner and mtime of a host file.
fn meta(path: &Path) -> (u32, u32, u32, i64) {
    let m = std::fs::symlink_metadata(path).unwrap();
    (m.mode(), m.uid(), m.gid(), m.mtime())
}

/// A layer tar: `d/`, `d/etc/` (mode 0777, uid 1000), then `d` replaced by a
/// symlink to `host`.
fn swapped_directory_layer(host: &Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, mode, uid) in [("d/", 0o755, 0), ("d/etc/", 0o777, 1000)] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(mode);
        header.set_uid(uid);
        header.set_gid(uid);
        header.set_mtime(1_000_000);
        header.set_size(0);
        builder.append_data(&mut header, name, &[][..]).unwrap();
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_mode(0o777);
    header.set_size(0);
    builder.append_link(&mut header, "d", host).unwrap();
    builder.into_inner().unwrap()
}

/// Every file of the image store with its size, to see that nothing changed,
/// once the rootfs of the images loaded so far is built and its build's
/// scratch directory, removed just after the image turns ready, is gone.
fn store_files(daemon: &Daemon) -> Vec<(PathBuf, u64)> {
    common::eventually(120, || {
        let images = stdout_of(&daemon.hull(&["images"]));
        match images.lines().skip(1).all(|l| l.ends_with(" ready")) {
            true => Ok(()),
            false => Err(format!("rootfs not built yet: {images}")),
        }
    });
    common::store_scratch_empties(daemon);
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(PathBuf, u64)>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            out.push((path.strip_prefix(base).unwrap().to_owned(), m.len()));
            if m.is_dir() {
                walk(&path, base, out);
            }
        }
    }
    let root = daemon.root.join("images");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    // Lock files are made on first use and hold nothing.
    files.retain(|(p, _)| !p.starts_with("locks"));
    files.sort();
    files
}

/// hulld's peak RSS, in MiB.
fn hulld_peak_mib(daemon: &Daemon) -> u64 {
    let pid = std::fs::read_to_string(daemon.root.join("hulld.pid")).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    common::proc_field_mib(&status, "VmHWM")
}

/// What a refused load or pull must leave as it was: the store's files, and
/// hulld's peak RSS within 64 MiB of what it was.
struct Before {
    files: Vec<(PathBuf, u64)>,
    peak_mib: u64,
}

impl Before {
    fn take(daemon: &Daemon) -> Before {
        Before {
            files: store_files(daemon),
            peak_mib: hulld_peak_mib(daemon),
        }
    }

    /// Asserts that the refused `what` (`load`, `pull`) kept to it.
    fn assert_kept(&self, daemon: &Daemon, what: &str) {
        let (start, peak) = (self.peak_mib, hulld_peak_mib(daemon));
        println!("hulld peak RSS: {start} MiB before the {what}, {peak} MiB after");
        assert!(
            peak < start + 64,
            "hulld's peak RSS grew from {start} MiB to {peak} MiB"
        );
        assert_eq!(
            store_files(daemon),
            self.files,
            "the refused {what} changed the store"
        );
    }
}

#[test]
fn a_layer_that_swaps_a_directory_for_a_host_symlink_leaves_the_host_alone() {
    let host = tempfile::tempdir().unwrap();
    let etc = host.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(etc.join("passwd"), "host\n").unwrap();
    let before = meta(&etc);

    let daemon = loaded_daemon(&[]);
    let archive = layered_archive(
        "swapped:latest",
        Some(swapped_directory_layer(host.path())),
        |_| {},
    );
    stdout_of(&daemon.hull(&["load", "-i", archive.to_str().unwrap()]));
    // The run needs the flattened rootfs, and boots a VM from it.
    let listed = stdout_of(&daemon.hull(&["run", "--rm", "swapped", "ls", "-ld", "/d"]));
    assert!(listed.contains("/d ->"), "{listed}");

    assert_eq!(meta(&etc), before, "the host's directory changed");
    assert_eq!(
        std::fs::read_to_string(etc.join("passwd")).unwrap(),
        "host\n"
    );
}

/// A gzip layer whose first entry is a GNU long name claiming `claimed` bytes,
/// and holding them: concatenated gzip members of one compressed MiB, so the
/// blob stays a few MB.
fn long_name_bomb(claimed: u64) -> Vec<u8> {
    let gzip = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_mode(0o644);
    header.set_size(claimed);
    header.set_cksum();
    let mut blob = gzip(header.as_bytes());
    let mib = gzip(&vec![b'a'; 1 << 20]);
    for _ in 0..claimed >> 20 {
        blob.extend_from_slice(&mib);
    }
    let mut tail = tar::Builder::new(Vec::new());
    let mut file = tar::Header::new_gnu();
    file.set_size(0);
    file.set_mode(0o644);
    tail.append_data(&mut file, "x", &[][..]).unwrap();
    blob.extend(gzip(&tail.into_inner().unwrap()));
    blob
}

#[test]
fn a_layer_header_claiming_gigabytes_is_refused_with_flat_memory() {
    let bomb = long_name_bomb(2 << 30);
    assert!(bomb.len() < 8 << 20, "the bomb is {} bytes", bomb.len());
    let archive = layered_archive("bomb:latest", Some(bomb), |_| {});

    let daemon = loaded_daemon(&[]);
    let before = Before::take(&daemon);
    let output = daemon.hull(&["load", "-i", archive.to_str().unwrap()]);
    let stderr = assert_fails(
        &output,
        125,
        &["is refused", "1048576 bytes", "extension headers"],
    );
    assert!(stderr.contains("layer sha256:"), "{stderr}");
    before.assert_kept(&daemon, "load");
    let images = stdout_of(&daemon.hull(&["images"]));
    assert!(!images.contains("bomb"), "{images}");

    let output = daemon.hull(&["run", "--rm", "busybox", "echo", "still fine"]);
    assert_eq!(
        stdout_of(&output),
        "still fine\n",
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn an_image_past_the_configured_size_is_refused_and_the_store_unchanged() {
    let layer = {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        // Far past the cap, so hulld refuses while the client still writes.
        header.set_size(48 << 20);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "big", &vec![0u8; 48 << 20][..])
            .unwrap();
        builder.into_inner().unwrap()
    };
    let archive = layered_archive("big:latest", Some(layer), |_| {});
    let daemon = loaded_daemon(&[("HULL_MAX_IMAGE_SIZE", "6M")]);
    let files = store_files(&daemon);
    let output = daemon.hull(&["load", "-i", archive.to_str().unwrap()]);
    assert_fails(
        &output,
        125,
        &["is refused", "6291456 bytes", "--max-image-size"],
    );
    assert_eq!(store_files(&daemon), files);
}

/// Uploads `blob` into `repository` of the registry through its API.
fn push_blob(registry: &Registry, repository: &str, blob: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(blob)));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), blob).unwrap();
    let started = std::process::Command::new("curl")
        .args(["-fsS", "-X", "POST", "-D", "-", "-o", "/dev/null"])
        .arg(format!(
            "http://{}/v2/{repository}/blobs/uploads/",
            registry.addr
        ))
        .output()
        .expect("curl runs");
    let headers = stdout_of(&started);
    let location = headers
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no upload location in {headers}"));
    let separator = if location.contains('?') { '&' } else { '?' };
    let url = match location.starts_with("http") {
        true => location.clone(),
        false => format!("http://{}{location}", registry.addr),
    };
    let finished = std::process::Command::new("curl")
        .args([
            "-fsS",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", file.path().display()))
        .arg(format!("{url}{separator}digest={digest}"))
        .output()
        .expect("curl runs");
    stdout_of(&finished);
    digest
}

#[test]
fn a_pulled_layer_header_claiming_gigabytes_is_refused_with_flat_memory() {
    let registry = Registry::start();
    let bomb = long_name_bomb(2 << 30);
    let layer = push_blob(&registry, "evil/bomb", &bomb);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    }))
    .unwrap();
    let config_digest = push_blob(&registry, "evil/bomb", &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": bomb.len()}],
    }))
    .unwrap();
    registry.put_manifest(
        "evil/bomb",
        "1",
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
    );

    let daemon = loaded_daemon(&[]);
    let before = Before::take(&daemon);
    let output = daemon.hull(&["pull", &registry.name("evil/bomb:1")]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    for needle in [
        format!("layer {layer} is refused"),
        "1048576 bytes".to_owned(),
    ] {
        assert!(stderr.contains(&needle), "{needle:?} not in {stderr}");
    }
    before.assert_kept(&daemon, "pull");
}
