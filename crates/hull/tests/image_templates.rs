//! Image templates end to end: a size's template saved with one image's
//! rootfs mounted, cloned by the runs and containers of that image only;
//! made when asked or for a frequent image, within a memory budget, and
//! kept across a hulld restart.

mod common;

use common::{assert_fails, eventually, loaded_daemon, stdout_of, text, Daemon};

/// Budget for two templates of the default size (256 MiB), not three.
const BUDGET: (&str, &str) = ("HULL_IMAGE_TEMPLATE_MEMORY", "600");

/// How many starts the daemon's log shows as clones of an image template.
fn image_clones(daemon: &Daemon) -> usize {
    daemon
        .log()
        .matches("start=\"image template clone\"")
        .count()
}

/// The `hull template ls` row of the image template of `image_id`.
fn template_row(daemon: &Daemon, image_id: &str) -> Option<String> {
    let short = &image_id.trim_start_matches("sha256:")[..12];
    stdout_of(&daemon.hull(&["template", "ls"]))
        .lines()
        .find(|line| line.contains(short))
        .map(str::to_owned)
}

/// `hull run --rm busybox sh -c script`.
fn run_sh(daemon: &Daemon, script: &str) -> std::process::Output {
    daemon.hull(&["run", "--rm", "busybox", "sh", "-c", script])
}

/// A new image: busybox with one file more, so a rootfs of its own. Made
/// without a run of busybox, which would count towards its template.
fn derived_image(daemon: &Daemon, name: &str) -> String {
    let source = format!("src-{}", name.replace(':', "-"));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("made {name}\n")).unwrap();
    stdout_of(&daemon.hull(&["create", "--name", &source, "busybox", "true"]));
    let target = format!("{source}:/made");
    stdout_of(&daemon.hull(&["cp", file.path().to_str().unwrap(), &target]));
    stdout_of(&daemon.hull(&["commit", &source, name]));
    stdout_of(&daemon.hull(&["rm", &source]));
    daemon.image_id(name)
}

#[test]
fn an_image_template_serves_its_image_runs_and_containers_and_outlives_hulld() {
    let daemon = loaded_daemon(&[BUDGET]);
    let busybox = daemon.image_id("busybox");

    // Asked for: built before the answer, pinned.
    let created = daemon.hull(&["template", "create", "busybox"]);
    let key = stdout_of(&created).trim().to_owned();
    assert_eq!(key.len(), 16, "{key:?}");
    let row = template_row(&daemon, &busybox).expect("the image template is listed");
    assert!(
        row.contains(&key) && row.contains("(pinned)") && row.contains("ready"),
        "{row}"
    );

    // A run of the image is a clone of it, its rootfs already mounted.
    let before = image_clones(&daemon);
    let output = run_sh(
        &daemon,
        "cat /etc/hostname >/dev/null; echo ok > /x; cat /x; exit 3",
    );
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "ok\n");
    assert_eq!(image_clones(&daemon), before + 1, "{}", daemon.log());
    // Clones share no writes.
    let output = run_sh(&daemon, "cat /x 2>/dev/null || echo clean");
    assert_eq!(stdout_of(&output), "clean\n");

    // A container of the image: its writable layer is plugged in after the
    // resume and keeps its files across a stop and a start.
    stdout_of(&daemon.hull(&["run", "-d", "--name", "kept", "busybox", "sleep", "600"]));
    stdout_of(&daemon.hull(&["exec", "kept", "sh", "-c", "echo persisted > /f"]));
    stdout_of(&daemon.hull(&["stop", "-t", "1", "kept"]));
    stdout_of(&daemon.hull(&["start", "kept"]));
    assert_eq!(
        stdout_of(&daemon.hull(&["exec", "kept", "cat", "/f"])),
        "persisted\n"
    );
    assert_eq!(image_clones(&daemon), before + 4, "{}", daemon.log());
    stdout_of(&daemon.hull(&["rm", "-f", "kept"]));

    // Another image never gets this one's clone.
    let other = derived_image(&daemon, "other:1");
    let before = image_clones(&daemon);
    let output = daemon.hull(&["run", "--rm", "other:1", "cat", "/made"]);
    assert_eq!(stdout_of(&output), "made other:1\n");
    assert_eq!(image_clones(&daemon), before, "{}", daemon.log());
    assert!(template_row(&daemon, &other).is_none());

    // Bad requests say what is wrong.
    assert_fails(
        &daemon.hull(&["template", "create", "nosuch:image"]),
        1,
        &["nosuch"],
    );
    assert_fails(
        &daemon.hull(&["template", "create", "--size", "Z9", "busybox"]),
        1,
        &["Z9"],
    );
    let post = |body: &str| {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), body).unwrap();
        let raw = std::process::Command::new("curl")
            .args(["-sS", "--unix-socket"])
            .arg(&daemon.socket)
            .args(["-X", "POST", "-H", "Content-Type: application/json"])
            .arg("--data-binary")
            .arg(format!("@{}", file.path().display()))
            .args(["-w", "\n%{http_code}", "http://hulld/hull/templates"])
            .output()
            .expect("curl runs");
        text(&raw.stdout)
    };
    let answer = post("{\"Image\": 7}");
    assert!(
        answer.ends_with("\n400") && answer.contains("malformed"),
        "{answer}"
    );
    // A body past what a name and a size take is refused, not collected.
    let answer = post(&format!("{{\"Image\": \"{}\"}}", "a".repeat(512 << 10)));
    assert!(
        answer.ends_with("\n413") && answer.contains("at most"),
        "{answer}"
    );

    // A restarted hulld takes the template back, unbuilt again (its
    // runtime, and so its templates, come up with the first run).
    daemon.restart_after_crash(&[BUDGET]);
    let before = image_clones(&daemon);
    assert_eq!(
        stdout_of(&daemon.hull(&["run", "--rm", "busybox", "echo", "again"])),
        "again\n"
    );
    assert_eq!(image_clones(&daemon), before + 1, "{}", daemon.log());
    let row = template_row(&daemon, &busybox).expect("the image template survives a restart");
    assert!(row.contains(&key) && row.contains("(pinned)"), "{row}");

    // Removed, its directory goes and runs clone the size's template.
    let dir = row.split_whitespace().last().unwrap().to_owned();
    stdout_of(&daemon.hull(&["template", "rm", &key]));
    assert!(template_row(&daemon, &busybox).is_none());
    assert!(!std::path::Path::new(&dir).exists(), "{dir} is left");
    let before = image_clones(&daemon);
    stdout_of(&daemon.hull(&["run", "--rm", "busybox", "true"]));
    assert_eq!(image_clones(&daemon), before);
}

#[test]
fn frequent_images_get_templates_within_the_budget_and_lose_them_with_the_image() {
    let daemon = loaded_daemon(&[BUDGET]);
    let first = derived_image(&daemon, "first:1");
    let second = derived_image(&daemon, "second:1");
    let third = derived_image(&daemon, "third:1");

    // Two starts are not frequent; the third builds it, in the background.
    for _ in 0..2 {
        stdout_of(&daemon.hull(&["run", "--rm", "first:1", "true"]));
    }
    assert!(template_row(&daemon, &first).is_none());
    stdout_of(&daemon.hull(&["run", "--rm", "first:1", "true"]));
    eventually(60, || match template_row(&daemon, &first) {
        Some(row) if row.contains("ready") && !row.contains("pinned") => Ok(()),
        row => Err(format!("{row:?}")),
    });
    let before = image_clones(&daemon);
    let output = daemon.hull(&["run", "--rm", "first:1", "cat", "/made"]);
    assert_eq!(stdout_of(&output), "made first:1\n");
    assert_eq!(image_clones(&daemon), before + 1, "{}", daemon.log());

    // Pinned ones take the budget: the unpinned one makes room, then a
    // third pinned one is refused, and says why.
    stdout_of(&daemon.hull(&["template", "create", "second:1"]));
    stdout_of(&daemon.hull(&["template", "create", "third:1"]));
    assert!(
        template_row(&daemon, &first).is_none(),
        "the least recently used went"
    );
    assert!(template_row(&daemon, &third).is_some());
    assert_fails(
        &daemon.hull(&["template", "create", "first:1"]),
        1,
        &[
            "does not fit",
            "--image-template-memory",
            "hull template rm",
        ],
    );

    // Removing an image removes its template, pinned or not.
    stdout_of(&daemon.hull(&["rmi", "second:1"]));
    assert!(template_row(&daemon, &second).is_none());
    let files: Vec<_> = std::fs::read_dir(daemon.root.parent().unwrap().join("templates/images"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
}

#[test]
fn a_function_gets_its_image_template_after_its_first_call() {
    let daemon = loaded_daemon(&[BUDGET]);
    let busybox = daemon.image_id("busybox");
    stdout_of(&daemon.hull(&[
        "func", "create", "--name", "upper", "busybox", "tr", "a-z", "A-Z",
    ]));
    let call =
        |data: &str| stdout_of(&daemon.hull(&["func", "call", "--sync", "-d", data, "upper"]));
    assert_eq!(call("first"), "FIRST");
    // Built once the first call is done, unpinned: a cache like any other.
    eventually(60, || match template_row(&daemon, &busybox) {
        Some(row) if row.contains("ready") && !row.contains("pinned") => Ok(()),
        row => Err(format!("{row:?}")),
    });
    let before = image_clones(&daemon);
    assert_eq!(call("second"), "SECOND");
    assert_eq!(image_clones(&daemon), before + 1, "{}", daemon.log());
}
