//! `commit`, `export` and `import`: a container's changes become an image
//! that runs, its whole filesystem a tar, and a tar an image; with the
//! hull CLI, the stock docker CLI, and hostile archives that must store
//! nothing.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Command;

use common::{assert_fails, daemon, has_docker_cli, stdout_of, text, Daemon};

/// (name, contents or link target) of each entry of a tar.
fn entries(tar: &[u8]) -> Vec<(String, String)> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let mut body = Vec::new();
            match entry.link_name_bytes() {
                Some(link) => body.extend_from_slice(&link),
                None => {
                    entry.read_to_end(&mut body).unwrap();
                }
            }
            (name, String::from_utf8_lossy(&body).into_owned())
        })
        .collect()
}

fn content<'a>(entries: &'a [(String, String)], name: &str) -> Option<&'a str> {
    entries
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, c)| c.as_str())
}

/// A root filesystem of the host's static busybox: `bin/busybox`,
/// `bin/sh -> busybox`, and `hello.txt` saying `greeting`.
fn rootfs_tar(path: &Path, greeting: &str) {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, kind: tar::EntryType, mode: u32, link: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_mtime(1_700_000_000);
        if !link.is_empty() {
            header.set_link_name(link).unwrap();
        }
        builder.append_data(&mut header, name, data).unwrap();
    };
    add("bin/", tar::EntryType::Directory, 0o755, "", b"");
    add("bin/busybox", tar::EntryType::Regular, 0o755, "", &busybox);
    add("bin/sh", tar::EntryType::Symlink, 0o777, "busybox", b"");
    add(
        "hello.txt",
        tar::EntryType::Regular,
        0o644,
        "",
        greeting.as_bytes(),
    );
    builder.finish().unwrap();
}

fn inspect(daemon: &Daemon, name: &str) -> serde_json::Value {
    let output = stdout_of(&daemon.hull(&["image", "inspect", name]));
    let mut all: serde_json::Value = serde_json::from_str(&output).unwrap();
    all[0].take()
}

#[test]
fn a_containers_changes_commit_to_an_image_that_runs_and_its_files_export() {
    let daemon = daemon();
    let run = stdout_of(&daemon.hull(&[
        "run",
        "-d",
        "--name",
        "src",
        "-v",
        "srcvol:/data",
        "busybox",
        "sleep",
        "1000",
    ]));
    let id = run.trim().to_owned();
    let changed = daemon.hull(&[
        "exec",
        "src",
        "sh",
        "-c",
        "echo made > /made && rm /etc/group && echo in-volume > /data/v",
    ]);
    stdout_of(&changed);

    let committed = stdout_of(&daemon.hull(&[
        "commit",
        "-c",
        r#"CMD ["cat", "/made"]"#,
        "-c",
        "ENV COMMITTED=yes",
        "-m",
        "a test commit",
        "-a",
        "Tester <t@example.com>",
        "src",
        "committed:1",
    ]));
    let image_id = committed.trim();
    assert!(
        image_id.starts_with("sha256:") && image_id.len() == 71,
        "{committed}"
    );
    assert_eq!(daemon.image_id("committed:1"), image_id);
    let image = inspect(daemon, "committed:1");
    assert_eq!(image["Comment"], "a test commit");
    assert_eq!(image["Author"], "Tester <t@example.com>");
    assert_eq!(image["Config"]["Cmd"], serde_json::json!(["cat", "/made"]));
    assert_eq!(image["RootFS"]["Layers"].as_array().unwrap().len(), 2);

    // The new command, the file present, the deleted one gone, the volume's
    // contents left out.
    let ran = daemon.hull(&["run", "--rm", "committed:1"]);
    assert_eq!(stdout_of(&ran), "made\n");
    let script = "test -e /etc/group && echo present || echo gone; \
                  ls /data | wc -l; echo $COMMITTED; head -1 /etc/passwd";
    let ran = daemon.hull(&["run", "--rm", "committed:1", "sh", "-c", script]);
    assert_eq!(
        stdout_of(&ran),
        "gone\n0\nyes\nroot:x:0:0:root:/root:/bin/sh\n"
    );

    // Export: the image's files with the container's changes, no volume,
    // nothing of /proc.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("src.tar");
    stdout_of(&daemon.hull(&["export", "-o", out.to_str().unwrap(), "src"]));
    let exported = entries(&std::fs::read(&out).unwrap());
    assert_eq!(content(&exported, "made"), Some("made\n"));
    assert_eq!(content(&exported, "bin/sh"), Some("busybox"));
    assert!(content(&exported, "etc/passwd")
        .unwrap()
        .starts_with("root:x:0:0"));
    assert_eq!(content(&exported, "etc/group"), None);
    assert!(content(&exported, "data/").is_some());
    assert_eq!(content(&exported, "data/v"), None);
    assert!(!exported.iter().any(|(n, _)| n.starts_with("proc/1")));
    assert!(!exported
        .iter()
        .any(|(n, _)| n.starts_with('/') || n.starts_with("./")));

    // Stopped, its files are read in a VM of its own: a commit and an
    // export still see them.
    stdout_of(&daemon.hull(&["kill", "src"]));
    stdout_of(&daemon.hull(&["wait", "src"]));
    let stopped = dir.path().join("stopped.tar");
    stdout_of(&daemon.hull(&["export", "-o", stopped.to_str().unwrap(), "src"]));
    let exported = entries(&std::fs::read(&stopped).unwrap());
    assert_eq!(content(&exported, "made"), Some("made\n"));
    assert_eq!(content(&exported, "etc/group"), None);
    stdout_of(&daemon.hull(&["commit", "src", "committed:stopped"]));
    let ran = daemon.hull(&["run", "--rm", "committed:stopped", "cat", "/made"]);
    assert_eq!(stdout_of(&ran), "made\n");
    let state: serde_json::Value =
        serde_json::from_str(&stdout_of(&daemon.hull(&["inspect", "src"]))).unwrap();
    assert_eq!(
        state[0]["State"]["Status"], "exited",
        "reading it did not start it"
    );
    stdout_of(&daemon.hull(&["start", "src"]));
    let after = daemon.hull(&["exec", "src", "cat", "/made"]);
    assert_eq!(stdout_of(&after), "made\n", "container {id} starts again");
    stdout_of(&daemon.hull(&["rm", "-f", "src"]));

    let missing = daemon.hull(&["commit", "nope", "x:1"]);
    assert_fails(&missing, 1, &["No such container: nope"]);
    let bad = daemon.hull(&["commit", "-c", "RUN rm -rf /", "nope"]);
    assert_fails(&bad, 1, &["No such container: nope"]);
}

#[test]
fn an_imported_tar_runs_with_its_changes_applied() {
    let daemon = daemon();
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("rootfs.tar");
    rootfs_tar(&tar, "hello from a tar\n");
    let imported = daemon.hull(&[
        "import",
        "-c",
        r#"CMD ["/bin/busybox", "cat", "/hello.txt"]"#,
        "-c",
        "WORKDIR /bin",
        "-m",
        "built by a test",
        tar.to_str().unwrap(),
        "imported:1",
    ]);
    let id = stdout_of(&imported).trim().to_owned();
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(daemon.image_id("imported:1"), id);
    let image = inspect(daemon, "imported:1");
    assert_eq!(image["Comment"], "built by a test");
    assert_eq!(image["Os"], "linux");
    assert_eq!(image["Config"]["WorkingDir"], "/bin");
    let ran = daemon.hull(&["run", "--rm", "imported:1"]);
    assert_eq!(stdout_of(&ran), "hello from a tar\n");
    let ran = daemon.hull(&["run", "--rm", "imported:1", "/bin/sh", "-c", "pwd"]);
    assert_eq!(stdout_of(&ran), "/bin\n");

    // From standard input, gzip-compressed, named by id alone.
    let gzipped = {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, &std::fs::read(&tar).unwrap()).unwrap();
        encoder.finish().unwrap()
    };
    let from_stdin = daemon.hull_with_input(&["import", "-"], &gzipped);
    let id = stdout_of(&from_stdin).trim().to_owned();
    let ran = daemon.hull(&["run", "--rm", &id, "/bin/busybox", "cat", "/hello.txt"]);
    assert_eq!(stdout_of(&ran), "hello from a tar\n");
}

#[test]
fn the_docker_cli_commits_exports_and_imports() {
    if !has_docker_cli() {
        return;
    }
    let daemon = daemon();
    stdout_of(&daemon.docker(&["run", "-d", "--name", "dsrc", "busybox", "sleep", "1000"]));
    stdout_of(&daemon.docker(&["exec", "dsrc", "sh", "-c", "echo docker > /d"]));
    let committed = daemon.docker(&[
        "commit",
        "--change",
        r#"CMD ["cat", "/d"]"#,
        "-m",
        "by docker",
        "dsrc",
        "dcommitted:1",
    ]);
    assert!(stdout_of(&committed).trim().starts_with("sha256:"));
    let ran = daemon.docker(&["run", "--rm", "dcommitted:1"]);
    assert_eq!(stdout_of(&ran), "docker\n");
    let comment = daemon.docker(&["image", "inspect", "-f", "{{.Comment}}", "dcommitted:1"]);
    assert_eq!(stdout_of(&comment), "by docker\n");
    let history = stdout_of(&daemon.docker(&["history", "--no-trunc", "dcommitted:1"]));
    assert!(history.contains("sleep 1000"), "{history}");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d.tar");
    stdout_of(&daemon.docker(&["export", "-o", out.to_str().unwrap(), "dsrc"]));
    let exported = entries(&std::fs::read(&out).unwrap());
    assert_eq!(content(&exported, "d"), Some("docker\n"));
    assert!(content(&exported, "bin/busybox").is_some());
    stdout_of(&daemon.docker(&["rm", "-f", "dsrc"]));

    // The export back in as an image of its own, by file and by stdin.
    let imported = daemon.docker(&[
        "import",
        "--change",
        r#"CMD ["cat", "/d"]"#,
        out.to_str().unwrap(),
        "dimported:1",
    ]);
    assert!(stdout_of(&imported).trim().starts_with("sha256:"));
    let ran = daemon.docker(&["run", "--rm", "dimported:1"]);
    assert_eq!(stdout_of(&ran), "docker\n");
    let tar = dir.path().join("rootfs.tar");
    rootfs_tar(&tar, "via stdin\n");
    let piped = daemon.docker_with_input(
        &["import", "-", "dimported:2"],
        &std::fs::read(&tar).unwrap(),
    );
    assert!(stdout_of(&piped).trim().starts_with("sha256:"));
    let ran = daemon.docker(&[
        "run",
        "--rm",
        "dimported:2",
        "/bin/busybox",
        "cat",
        "/hello.txt",
    ]);
    assert_eq!(stdout_of(&ran), "via stdin\n");
}

/// `POST /images/create?fromSrc=-` of `body` on the daemon's socket:
/// (status, answer).
fn import_raw(daemon: &Daemon, body: &Path, query: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(&daemon.socket)
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!("http://hulld/images/create?fromSrc=-{query}"))
        .output()
        .expect("curl runs");
    let out = text(&output.stdout);
    let (answer, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.trim().parse().unwrap_or(0), answer.to_owned())
}

/// A raw tar entry: name, kind, link target, size field, data.
type Raw<'a> = (&'a str, tar::EntryType, &'a str, u64, &'a [u8]);

/// Writes a tar of raw entries, the name and link put in the header as
/// they are.
fn hostile_tar(path: &Path, entries: &[Raw<'_>]) {
    let mut out = Vec::new();
    for (name, kind, link, size, data) in entries {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        header.set_size(*size);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    std::fs::write(path, out).unwrap();
}

#[test]
fn hostile_imports_are_refused_and_store_nothing() {
    // A daemon of its own (no VM is booted), with a small image size cap.
    let daemon = Daemon::start(&[("HULL_MAX_IMAGE_SIZE", "8m")]);
    let dir = tempfile::tempdir().unwrap();
    let blobs = || {
        std::fs::read_dir(daemon.root.join("images/blobs/sha256"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = blobs();
    use tar::EntryType::{Block, Char, Link, Regular, Symlink};
    let cases: Vec<(&str, Vec<Raw<'_>>, &str)> = vec![
        (
            "parent",
            vec![("../../escaped", Regular, "", 2, b"x\n")],
            "'..'",
        ),
        (
            "absolute",
            vec![("/etc/escaped", Regular, "", 2, b"x\n")],
            "absolute path",
        ),
        (
            "link-out",
            vec![("evil", Symlink, "../../../etc", 0, b"")],
            "above the image's root",
        ),
        (
            "through-link",
            vec![
                ("evil", Symlink, "/tmp", 0, b""),
                ("evil/escaped", Regular, "", 2, b"x\n"),
            ],
            "beneath 'evil', a symlink",
        ),
        (
            "hard-link",
            vec![("h", Link, "/etc/shadow", 0, b"")],
            "hard link",
        ),
        ("char", vec![("dev/mem", Char, "", 0, b"")], "device node"),
        ("block", vec![("dev/sda", Block, "", 0, b"")], "device node"),
        (
            "huge-size",
            vec![("big", Regular, "", 8 << 30, b"")],
            "--max-image-size",
        ),
        (
            "truncated",
            vec![("short", Regular, "", 4096, b"only this")],
            "truncated",
        ),
    ];
    for (name, entries, needle) in &cases {
        let path = dir.path().join(format!("{name}.tar"));
        hostile_tar(&path, entries);
        let (status, answer) = import_raw(&daemon, &path, "&repo=hostile");
        assert_eq!(status, 400, "{name}: {answer}");
        assert!(
            answer.contains(needle),
            "{name}: {needle:?} not in {answer}"
        );
    }
    let not_tar = dir.path().join("not.tar");
    std::fs::write(&not_tar, "this is not a tar archive at all\n".repeat(40)).unwrap();
    let (status, answer) = import_raw(&daemon, &not_tar, "");
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("not a tar stream"), "{answer}");
    let empty = dir.path().join("empty.tar");
    std::fs::write(&empty, b"").unwrap();
    let (status, answer) = import_raw(&daemon, &empty, "");
    assert_eq!(status, 400, "{answer}");

    // A gzip bomb: 64 MiB of zeros in one file, about 64 KiB on the wire.
    let bomb = dir.path().join("bomb.tar.gz");
    {
        let file = std::fs::File::create(&bomb).unwrap();
        let encoder = flate2::write::GzEncoder::new(file, flate2::Compression::best());
        let mut builder = tar::Builder::new(encoder);
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(Regular);
        header.set_size(64 << 20);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "zeros", std::io::repeat(0).take(64 << 20))
            .unwrap();
        builder.into_inner().unwrap().finish().unwrap();
    }
    assert!(std::fs::metadata(&bomb).unwrap().len() < 1 << 20);
    let (status, answer) = import_raw(&daemon, &bomb, "");
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("--max-image-size"), "{answer}");

    // Changes are checked before the body is taken.
    let fine = dir.path().join("fine.tar");
    rootfs_tar(&fine, "fine\n");
    let (status, answer) = import_raw(&daemon, &fine, "&changes=RUN%20rm%20-rf%20%2F");
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("RUN is not a Dockerfile instruction"),
        "{answer}"
    );

    let images = stdout_of(&daemon.hull(&["images", "-q"]));
    assert_eq!(images.trim(), "", "nothing was stored");
    assert_eq!(blobs(), before, "no blob was kept");
    common::store_scratch_empties(&daemon);
    assert!(!dir.path().join("escaped").exists());
    assert!(!Path::new("/etc/escaped").exists());

    // The same daemon takes a proper archive.
    let (status, answer) = import_raw(&daemon, &fine, "&repo=fine&tag=1");
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"status\":\"sha256:"), "{answer}");
    let images = stdout_of(&daemon.hull(&["images"]));
    assert!(images.contains("fine "), "{images}");

    // The operator may have hulld fetch the archive from a URL.
    let url = serve_once(std::fs::read(&fine).unwrap());
    let fetched = daemon.hull(&["import", &url, "fetched:1"]);
    assert!(stdout_of(&fetched).starts_with("sha256:"));
    assert!(stdout_of(&daemon.hull(&["images"])).contains("fetched "));
    let missing = daemon.hull(&["import", "http://127.0.0.1:1/nothing.tar"]);
    assert_fails(
        &missing,
        1,
        &["cannot fetch http://127.0.0.1:1/nothing.tar"],
    );
}

/// A URL whose first GET is answered with `body`.
fn serve_once(body: Vec<u8>) -> String {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/rootfs.tar", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 2 {
            line.clear();
        }
        let mut stream = reader.into_inner();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
    });
    url
}
