//! Directory volumes shared by running containers, as docker's are: each
//! VM (a template clone) sees the others' writes at once, read-only where
//! asked; a block volume still goes to one VM at a time; and a compose
//! project whose services share a volume, wait on health and talk by name.

mod common;

use common::{assert_fails, daemon, stdout_of};

fn hull_out(args: &[&str]) -> String {
    stdout_of(&daemon().hull(args))
}

#[test]
fn a_directory_volume_is_shared_by_running_containers_cloned_from_templates() {
    let daemon = daemon();
    daemon.wait_for_template();
    let run = |name: &str, volume: &str| {
        hull_out(&[
            "run", "-d", "--name", name, "-v", volume, "busybox", "sleep", "1000",
        ])
        .trim()
        .to_owned()
    };
    let writer = run("sv-writer", "shared:/data");
    let other = run("sv-other", "shared:/data");
    let reader = run("sv-reader", "shared:/data:ro");
    for id in [&writer, &other, &reader] {
        assert!(
            daemon
                .log()
                .lines()
                .any(|l| l.contains(&id[..12]) && l.contains("start=\"template clone\"")),
            "{id} was not cloned from a template:\n{}",
            daemon.log()
        );
    }
    let exec = |name: &str, script: &str| hull_out(&["exec", name, "sh", "-c", script]);
    exec("sv-writer", "echo one > /data/f");
    assert_eq!(exec("sv-reader", "cat /data/f"), "one\n");
    exec("sv-other", "echo two >> /data/f");
    assert_eq!(exec("sv-writer", "cat /data/f"), "one\ntwo\n");
    assert_eq!(
        exec(
            "sv-reader",
            "touch /data/x 2>/dev/null && echo wrote || echo refused"
        ),
        "refused\n"
    );
    // Files made in one VM as another user keep their owner in the others.
    exec("sv-writer", "mkdir /data/d && chown 1000:1000 /data/d");
    assert_eq!(exec("sv-other", "stat -c %u:%g /data/d"), "1000:1000\n");

    // On the host, it is the volume's directory.
    let inspect: serde_json::Value =
        serde_json::from_str(&hull_out(&["volume", "inspect", "shared"])).unwrap();
    assert_eq!(inspect[0]["Options"]["type"], "dir", "{inspect}");
    let data = std::path::PathBuf::from(inspect[0]["Mountpoint"].as_str().unwrap());
    assert_eq!(data.file_name().unwrap(), "_data");
    assert_eq!(
        std::fs::read_to_string(data.join("f")).unwrap(),
        "one\ntwo\n"
    );
    assert_fails(&daemon.hull(&["volume", "rm", "shared"]), 1, &["in use"]);

    // A block volume's disk stays one VM's.
    hull_out(&[
        "volume",
        "create",
        "-o",
        "type=block",
        "-o",
        "size=64m",
        "sv-block",
    ]);
    run("sv-disk1", "sv-block:/b");
    assert_fails(
        &daemon.hull(&[
            "run",
            "-d",
            "--name",
            "sv-disk2",
            "-v",
            "sv-block:/b",
            "busybox",
            "true",
        ]),
        125,
        &[
            "volume sv-block is attached to the running container sv-disk1",
            "block volume",
        ],
    );

    hull_out(&[
        "rm",
        "-f",
        "sv-writer",
        "sv-other",
        "sv-reader",
        "sv-disk1",
        "sv-disk2",
    ]);
    // Their VMs are gone and the binds with them: the data stays, whole.
    assert_eq!(
        std::fs::read_to_string(data.join("f")).unwrap(),
        "one\ntwo\n"
    );
    hull_out(&["volume", "rm", "shared", "sv-block"]);
    assert!(!data.exists());
}

#[test]
fn compose_services_share_a_volume_wait_on_health_and_talk_by_name() {
    let daemon = daemon();
    let Some(project) = common::compose::Project::new(
        daemon,
        "shares",
        r#"version: "2.4"
services:
  web:
    image: busybox
    command: sh -c "echo from-web > /www/index.html && exec httpd -f -p 80 -h /www"
    volumes: ["static:/www"]
    healthcheck:
      test: ["CMD-SHELL", "wget -qO- http://127.0.0.1/index.html"]
      interval: 1s
      timeout: 2s
      retries: 60
  app:
    image: busybox
    command: sh -c "cat /static/index.html; wget -qO- http://web/index.html; echo from-app > /static/app.html; exec sleep 1000"
    volumes: ["static:/static"]
    depends_on:
      web:
        condition: service_healthy
volumes:
  static: {}
"#,
    ) else {
        return;
    };
    project.run(&["up", "-d"]);
    // app read web's page from the volume, then over the network by name.
    common::eventually(60, || {
        let logs = project.run(&["logs", "--no-color", "app"]);
        (logs.matches("from-web").count() == 2)
            .then_some(())
            .ok_or(logs)
    });
    // web serves what app wrote to the volume they share.
    common::eventually(30, || {
        let served = project.try_run(&[
            "exec",
            "-T",
            "web",
            "wget",
            "-qO-",
            "http://127.0.0.1/app.html",
        ])?;
        (served == "from-app\n").then_some(()).ok_or(served)
    });
    let volumes = hull_out(&["volume", "ls"]);
    assert!(volumes.contains("shares_static"), "{volumes}");
    project.run(&["down", "-v", "-t", "1"]);
    let volumes = hull_out(&["volume", "ls"]);
    assert!(!volumes.contains("shares_static"), "{volumes}");
}
