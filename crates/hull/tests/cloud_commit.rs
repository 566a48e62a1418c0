//! A tenant's commits, exports and imports: of its own containers only,
//! into its own image table, within its images quota; another tenant's
//! container answers as a missing one, and no tenant makes hulld fetch a
//! URL.

mod common;

use std::io::Read;

use common::cloud::Cloud;
use common::{has_docker_cli, stdout_of, text};

type Hull<'a> = &'a dyn Fn(&[&str]) -> std::process::Output;

fn ok(hull: Hull, args: &[&str]) -> String {
    let output = hull(args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        text(&output.stderr)
    );
    stdout_of(&output)
}

fn fails(hull: Hull, args: &[&str], needles: &[&str]) {
    let output = hull(args);
    assert!(!output.status.success(), "{args:?}: {}", stdout_of(&output));
    let stderr = text(&output.stderr).to_lowercase();
    for needle in needles {
        assert!(
            stderr.contains(&needle.to_lowercase()),
            "{args:?}: {needle:?} not in {stderr}"
        );
    }
}

/// The names of a tar's entries.
fn names(tar: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}

/// A one-file tar, small enough for any body.
fn tiny_tar(path: &std::path::Path, name: &str) {
    common::write_tar(path, [(name, &b"imported\n"[..])].into_iter());
}

#[test]
fn tenants_commit_export_and_import_only_their_own_within_their_quota() {
    let cloud = Cloud::start(&[]);
    let acme_keys = cloud.tenant_with_key("acme");
    let beta_keys = cloud.tenant_with_key("beta");
    let acme = |args: &[&str]| cloud.tenant(&acme_keys.0, &acme_keys.1, args);
    let beta = |args: &[&str]| cloud.tenant(&beta_keys.0, &beta_keys.1, args);
    let archive = common::busybox_archive();
    ok(&acme, &["load", "-i", archive.to_str().unwrap()]);

    let id = ok(
        &acme,
        &[
            "run", "-d", "--name", "src", "--size", "S1", "busybox", "sleep", "600",
        ],
    )
    .trim()
    .to_owned();
    ok(&acme, &["exec", "src", "sh", "-c", "echo tenant > /t"]);
    let committed = ok(
        &acme,
        &["commit", "-c", r#"CMD ["cat", "/t"]"#, "src", "mine:1"],
    );
    let image = committed.trim().to_owned();
    assert!(image.starts_with("sha256:"), "{committed}");
    let listed = ok(&acme, &["images", "--no-trunc"]);
    assert!(
        listed.contains("mine") && listed.contains(&image[7..]),
        "{listed}"
    );
    assert_eq!(
        ok(&acme, &["run", "--rm", "--size", "S1", "mine:1"]),
        "tenant\n"
    );
    let inspected: serde_json::Value =
        serde_json::from_str(&ok(&acme, &["image", "inspect", "mine:1"])).unwrap();
    let labels = &inspected[0]["Config"]["Labels"];
    assert!(
        labels.get("sh.hull.tenant").is_none() && labels.get("sh_hyper_instancetype").is_none(),
        "{labels}"
    );

    // Beta neither sees the image nor reaches acme's container, by name or id.
    let dir = tempfile::tempdir().unwrap();
    let stolen = dir.path().join("stolen.tar");
    let beta_images = ok(&beta, &["images", "--no-trunc"]);
    assert!(!beta_images.contains(&image[7..]), "{beta_images}");
    for reference in ["src", id.as_str(), &id[..12]] {
        fails(
            &beta,
            &["commit", reference, "stolen:1"],
            &["No such container"],
        );
        let stolen = stolen.to_str().unwrap();
        fails(
            &beta,
            &["export", "-o", stolen, reference],
            &["No such container"],
        );
    }
    fails(&beta, &["image", "inspect", "mine:1"], &["no such image"]);
    // The operator's tags are not the tenant's names.
    let operator = cloud.daemon.hull(&["image", "inspect", "mine:1"]);
    assert!(!operator.status.success(), "{}", stdout_of(&operator));

    assert!(!stolen.exists());
    let out = dir.path().join("src.tar");
    ok(&acme, &["export", "-o", out.to_str().unwrap(), "src"]);
    let exported = names(&std::fs::read(&out).unwrap());
    assert!(exported.iter().any(|n| n == "t"), "{exported:?}");

    // An import lands in acme's table only; a URL is refused.
    let tar = dir.path().join("tiny.tar");
    tiny_tar(&tar, "hello");
    let imported = ok(
        &acme,
        &[
            "import",
            "-c",
            "CMD /hello",
            tar.to_str().unwrap(),
            "tiny:1",
        ],
    );
    let tiny = imported.trim().to_owned();
    assert!(ok(&acme, &["images", "--no-trunc"]).contains(&tiny[7..]));
    assert!(!ok(&beta, &["images", "--no-trunc"]).contains(&tiny[7..]));
    fails(
        &acme,
        &["import", "http://127.0.0.1:1/rootfs.tar", "fetched:1"],
        &["a tenant imports only what it sends"],
    );
    // A streamed import is held to the hash it was signed with.
    let signed = std::fs::read(&tar).unwrap();
    let target = "/images/create?fromSrc=-&repo=forged";
    let headers = cloud.signed_headers("POST", target, &signed, &acme_keys.0, &acme_keys.1);
    let forged = dir.path().join("forged.tar");
    tiny_tar(&forged, "forged");
    let (code, body) = cloud.curl("POST", target, &headers, Some(&forged));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("reading the upload failed"), "{body}");
    let (code, body) = cloud.curl("POST", target, &headers, Some(&tar));
    assert_eq!(code, 200, "the signed body itself is taken: {body}");
    assert!(ok(&acme, &["images"]).contains("forged"));
    let hostile = dir.path().join("hostile.tar");
    common::write_tar(&hostile, [("../escape", &b"x"[..])].into_iter());
    fails(&acme, &["import", hostile.to_str().unwrap()], &["'..'"]);

    if has_docker_cli() {
        let docker = |args: &[&str]| cloud.docker_as("acme", args);
        let committed = ok(&docker, &["commit", "src", "dmine:1"]);
        assert!(committed.trim().starts_with("sha256:"), "{committed}");
        let streamed = ok(&docker, &["import", tar.to_str().unwrap(), "dtiny:1"]);
        assert!(streamed.trim().starts_with("sha256:"), "{streamed}");
        let out = cloud.docker_as("acme", &["export", "src"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let mut exported = Vec::new();
        (&out.stdout[..]).read_to_end(&mut exported).unwrap();
        assert!(names(&exported).iter().any(|n| n == "t"));
        let stolen = cloud.docker_as("beta", &["commit", &id, "stolen:1"]);
        assert!(!stolen.status.success());
        assert!(text(&stolen.stderr).contains("No such container"));
    }

    // At its images quota, a commit or an import is refused and nothing stays.
    let held = ok(&acme, &["images", "-q", "--no-trunc"]).lines().count();
    let quota = format!("images={held}");
    stdout_of(
        &cloud
            .daemon
            .hull(&["admin", "tenant", "quota", "acme", &quota]),
    );
    let stored = || stdout_of(&cloud.daemon.hull(&["images", "-q", "--no-trunc"]));
    let before = stored();
    fails(
        &acme,
        &["commit", "src", "over:1"],
        &["quota exceeded", "images"],
    );
    tiny_tar(&tar, "other");
    fails(
        &acme,
        &["import", tar.to_str().unwrap(), "over:2"],
        &["quota exceeded", "images"],
    );
    assert_eq!(stored(), before, "nothing was kept");
    assert_eq!(
        ok(&acme, &["images", "-q", "--no-trunc"]).lines().count(),
        held
    );
    ok(&acme, &["rm", "-f", "src"]);
}
