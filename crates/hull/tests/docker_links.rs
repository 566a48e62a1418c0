//! What a container takes from others at its create, through the stock
//! docker CLI: legacy links (`--link`), extra host names (`--add-host`) and
//! another container's volumes (`--volumes-from`).

mod common;

use common::{assert_fails, daemon, has_docker_cli, stdout_of, text};

/// The `/etc/hosts` line of `name`, split into its fields.
fn hosts_line(hosts: &str, name: &str) -> Option<Vec<String>> {
    hosts
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|fields| fields.iter().skip(1).any(|field| field == name))
}

#[test]
fn links_hosts_and_volumes_from_reach_the_container() {
    if !has_docker_cli() {
        return;
    }
    let daemon = daemon();
    stdout_of(&daemon.docker(&[
        "run",
        "-d",
        "--name",
        "linked-db",
        "-e",
        "FOO=bar",
        "-v",
        "/shared",
        "busybox",
        "sh",
        "-c",
        "echo from-db > /shared/f; sleep 1000",
    ]));

    // On the default network: the link's variables, the extra hosts (the
    // gateway is the host as the VM reaches it) and the other's volume,
    // which both containers have at once.
    let run = daemon.docker(&[
        "run",
        "--name",
        "linker",
        "--link",
        "linked-db:my-db",
        "--add-host",
        "extra.example:10.9.8.7",
        "--add-host",
        "gw:host-gateway",
        "--volumes-from",
        "linked-db:ro",
        "busybox",
        "sh",
        "-c",
        "env; echo ---; cat /etc/hosts; echo ---; \
         until [ -s /shared/f ]; do sleep 0.1; done; cat /shared/f; \
         touch /shared/g 2>/dev/null && echo writable || echo read-only",
    ]);
    let out = stdout_of(&run);
    let mut parts = out.split("---\n");
    let (env, hosts, files) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let env: Vec<&str> = env.lines().collect();
    assert!(env.contains(&"MY_DB_NAME=/linker/my-db"), "{env:?}");
    assert!(env.contains(&"MY_DB_ENV_FOO=bar"), "{env:?}");
    assert!(
        !env.iter().any(|v| v.starts_with("MY_DB_ENV_PATH=")),
        "PATH is not shared: {env:?}"
    );
    assert_eq!(
        hosts_line(hosts, "extra.example").unwrap(),
        ["10.9.8.7", "extra.example"],
        "{hosts}"
    );
    assert_eq!(
        hosts_line(hosts, "gw").unwrap(),
        ["10.0.2.2", "gw"],
        "{hosts}"
    );
    // The default network hands out no address of the linked container.
    assert!(hosts_line(hosts, "my-db").is_none(), "{hosts}");
    assert_eq!(files, "from-db\nread-only\n");

    let inspect = stdout_of(&daemon.docker(&[
        "inspect",
        "-f",
        "{{json .HostConfig.Links}} {{json .HostConfig.ExtraHosts}}",
        "linker",
    ]));
    assert_eq!(
        inspect.trim(),
        r#"["/linked-db:/linker/my-db"] ["extra.example:10.9.8.7","gw:host-gateway"]"#
    );

    // A link needs its container running at each start, as docker's does.
    stdout_of(&daemon.docker(&["stop", "-t", "1", "linked-db"]));
    let again = daemon.docker(&["start", "linker"]);
    assert_fails(
        &again,
        1,
        &["Cannot link to a non running container: /linked-db AS /linker/my-db"],
    );
    // The link goes, the containers stay; then it starts.
    stdout_of(&daemon.docker(&["rm", "--link", "linker/my-db"]));
    let inspect =
        stdout_of(&daemon.docker(&["inspect", "-f", "{{json .HostConfig.Links}}", "linker"]));
    assert_eq!(inspect.trim(), "null");
    stdout_of(&daemon.docker(&["start", "-a", "linker"]));

    // What names nothing is refused before anything is made.
    let missing = daemon.docker(&["create", "--link", "no-such-thing:x", "busybox", "true"]);
    assert_fails(&missing, 1, &["could not get container for no-such-thing"]);
    let missing = daemon.docker(&[
        "create",
        "--volumes-from",
        "no-such-thing",
        "busybox",
        "true",
    ]);
    assert_fails(&missing, 1, &["No such container: no-such-thing"]);
    for bad in ["name", "bad name:1.2.3.4", "x:not-an-address"] {
        let refused = daemon.docker(&["create", "--add-host", bad, "busybox", "true"]);
        assert!(
            !refused.status.success(),
            "{bad}: {}",
            text(&refused.stdout)
        );
    }
    let refused = daemon.docker(&[
        "create",
        "--volumes-from",
        "linked-db:rx",
        "busybox",
        "true",
    ]);
    assert!(!refused.status.success());

    for name in ["linker", "linked-db"] {
        stdout_of(&daemon.docker(&["rm", "-f", "-v", name]));
    }
}

#[test]
fn a_link_on_a_shared_bridge_network_names_the_address_and_ports() {
    if !has_docker_cli() {
        return;
    }
    let daemon = daemon();
    stdout_of(&daemon.docker(&["network", "create", "linknet"]));
    stdout_of(&daemon.docker(&[
        "run",
        "-d",
        "--name",
        "linked-web",
        "--hostname",
        "webhost",
        "--network",
        "linknet",
        "--expose",
        "8080",
        "busybox",
        "sleep",
        "1000",
    ]));
    let address = stdout_of(&daemon.docker(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.linknet.IPAddress}}",
        "linked-web",
    ]));
    let address = address.trim();
    assert!(!address.is_empty());
    stdout_of(&daemon.docker(&[
        "run",
        "-d",
        "--name",
        "web-linker",
        "--network",
        "linknet",
        "--link",
        "linked-web:w",
        "busybox",
        "sleep",
        "1000",
    ]));
    // An exec gets the link's variables, as the main process did.
    let out = stdout_of(&daemon.docker(&[
        "exec",
        "web-linker",
        "sh",
        "-c",
        "env; echo ---; cat /etc/hosts",
    ]));
    let (env, hosts) = out.split_once("---\n").unwrap();
    let env: Vec<&str> = env.lines().collect();
    for wanted in [
        format!("W_PORT=tcp://{address}:8080"),
        format!("W_PORT_8080_TCP=tcp://{address}:8080"),
        format!("W_PORT_8080_TCP_ADDR={address}"),
        "W_PORT_8080_TCP_PORT=8080".into(),
        "W_PORT_8080_TCP_PROTO=tcp".into(),
    ] {
        assert!(env.contains(&wanted.as_str()), "{wanted} not in {env:?}");
    }
    assert_eq!(
        hosts_line(hosts, "w").unwrap(),
        [address, "w", "webhost", "linked-web"],
        "{hosts}"
    );
    // Docker's documented form names the link by its absolute name.
    stdout_of(&daemon.docker(&["rm", "--link", "/web-linker/w"]));
    let links = daemon.docker(&["inspect", "-f", "{{json .HostConfig.Links}}", "web-linker"]);
    assert_eq!(stdout_of(&links).trim(), "null");
    // Without an alias there is no link to remove, and the container stays.
    let api = daemon.docker(&["rm", "--link", "web-linker"]);
    assert!(!api.status.success());
    stdout_of(&daemon.docker(&["inspect", "web-linker"]));
    stdout_of(&daemon.docker(&["rm", "-f", "linked-web", "web-linker"]));
    stdout_of(&daemon.docker(&["network", "rm", "linknet"]));
}

#[test]
fn compose_links_extra_hosts_and_volumes_from() {
    let daemon = daemon();
    let Some(project) = common::compose::Project::new(
        daemon,
        "legacy",
        r#"version: "2.4"
services:
  db:
    image: busybox
    command: sh -c "echo from-db > /data/f; exec sleep 1000"
    environment: {ROLE: primary}
    volumes: ["/data"]
    expose: ["5432"]
  app:
    image: busybox
    command: sh -c "until [ -s /data/f ]; do sleep 0.1; done; cat /data/f; env; cat /etc/hosts; exec sleep 1000"
    links: ["db"]
    extra_hosts: ["cache.internal:10.1.2.3"]
    volumes_from: ["db"]
"#,
    ) else {
        return;
    };
    project.run(&["up", "-d"]);
    let mut logs = String::new();
    common::eventually(60, || {
        logs = project.run(&["logs", "--no-color", "app"]);
        logs.contains("cache.internal")
            .then_some(())
            .ok_or_else(|| logs.clone())
    });
    assert!(logs.contains("from-db"), "{logs}");
    assert!(logs.contains("DB_ENV_ROLE=primary"), "{logs}");
    assert!(logs.contains("DB_PORT_5432_TCP_ADDR="), "{logs}");
    // Compose's project network is a bridge: the alias names db's address.
    let hosts: Vec<&str> = logs.lines().filter(|l| l.contains('\t')).collect();
    assert!(
        hosts.iter().any(|l| l.contains("10.1.2.3\tcache.internal")),
        "{logs}"
    );
    assert!(
        hosts
            .iter()
            .any(|l| l.split_whitespace().skip(1).any(|name| name == "db")),
        "{logs}"
    );
    project.run(&["down", "-v", "-t", "1"]);
}
