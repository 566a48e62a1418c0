//! Tenants' own containers: created over the TLS listener in the tenant's
//! namespace, sized as Hyper.sh sized them, counted against its quota, and
//! refused every option that reaches the host.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::cloud::Cloud;
use common::{assert_fails, stdout_of, text};

#[test]
fn tenants_run_their_own_named_and_sized_containers_within_their_quota() {
    let began = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let cloud = Cloud::start(&[]);
    let (acme, acme_secret) = cloud.tenant_with_key("acme");
    let (beta, beta_secret) = cloud.tenant_with_key("beta");
    stdout_of(&cloud.daemon.hull(&[
        "admin",
        "tenant",
        "quota",
        "acme",
        "containers=2,memory=640m",
    ]));
    let archive = common::busybox_archive();
    type Hull<'a> = &'a dyn Fn(&[&str]) -> std::process::Output;
    let acme_hull = |args: &[&str]| cloud.tenant(&acme, &acme_secret, args);
    let beta_hull = |args: &[&str]| cloud.tenant(&beta, &beta_secret, args);
    for load in [&acme_hull as Hull, &beta_hull] {
        let loaded = load(&["load", "-i", archive.to_str().unwrap()]);
        assert!(loaded.status.success(), "{}", text(&loaded.stderr));
    }

    // Two tenants each have their `web`; acme's gets the default size.
    let run = |hull: Hull, args: &[&str]| {
        let output = hull(args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
        stdout_of(&output).trim().to_owned()
    };
    let acme_web = run(
        &acme_hull,
        &["run", "-d", "--name", "web", "busybox", "sleep", "600"],
    );
    let beta_web = run(
        &beta_hull,
        &[
            "run", "-d", "--name", "web", "--size", "S1", "busybox", "sleep", "600",
        ],
    );
    assert_ne!(acme_web, beta_web);
    let inspect = |hull: Hull, reference: &str| -> serde_json::Value {
        let listed: serde_json::Value =
            serde_json::from_str(&run(hull, &["inspect", reference])).expect("inspect prints JSON");
        listed[0].clone()
    };
    let size_of = |hull: Hull| {
        let web = inspect(hull, "web");
        let labels = &web["Config"]["Labels"];
        format!(
            "{} {} {}",
            labels["sh_hyper_instancetype"].as_str().unwrap_or_default(),
            web["HostConfig"]["Memory"],
            labels["sh.hull.tenant"].as_str().unwrap_or_default()
        )
    };
    assert_eq!(size_of(&acme_hull), format!("S4 {} acme", 512 << 20));
    assert_eq!(size_of(&beta_hull), format!("S1 {} beta", 64 << 20));
    let all = stdout_of(&cloud.daemon.hull(&["ps"]));
    assert!(
        all.contains("acme/web") && all.contains("beta/web"),
        "{all}"
    );
    // The operator names a tenant's container by its qualified name.
    let qualified = stdout_of(&cloud.daemon.hull(&["inspect", "acme/web"]));
    assert!(qualified.contains(&acme_web), "{qualified}");
    assert_fails(
        &acme_hull(&["create", "--name", "web", "busybox"]),
        125,
        &["already in use"],
    );
    // A tenant cannot take another's label, nor step outside its namespace by name.
    let sneaky = run(
        &acme_hull,
        &[
            "create",
            "--name",
            "sneaky",
            "--label",
            "sh.hull.tenant=beta",
            "busybox",
        ],
    );
    assert_eq!(
        inspect(&acme_hull, &sneaky)["Config"]["Labels"]["sh.hull.tenant"],
        "acme"
    );
    assert_fails(&beta_hull(&["inspect", &sneaky]), 1, &["No such object"]);
    assert_fails(&acme_hull(&["inspect", "beta/web"]), 1, &["No such object"]);

    // Over quota: a third container, then memory beyond 640 MiB (512 + 256).
    assert_fails(
        &acme_hull(&["create", "--name", "third", "busybox"]),
        125,
        &["quota exceeded", "containers", "in use 2", "limit 2"],
    );
    run(&acme_hull, &["rm", "sneaky"]);
    run(
        &acme_hull,
        &[
            "create", "--name", "second", "--size", "S3", "busybox", "echo", "ran",
        ],
    );
    assert_fails(
        &acme_hull(&["start", "second"]),
        1,
        &["quota exceeded", "memory", "in use 512", "limit 640"],
    );
    assert_eq!(
        inspect(&acme_hull, "second")["State"]["Status"],
        "created",
        "nothing started"
    );
    // The operator sees what acme uses, as its quota counts it.
    let detail: serde_json::Value = serde_json::from_str(&stdout_of(
        &cloud.daemon.hull(&["admin", "tenant", "inspect", "acme"]),
    ))
    .unwrap();
    let used = &detail["Used"];
    assert_eq!(
        (
            &used["Containers"],
            &used["Running"],
            &used["MemoryMib"],
            &used["Images"]
        ),
        (&2.into(), &1.into(), &512.into(), &1.into()),
        "{detail}"
    );
    assert_fails(
        &cloud.daemon.hull(&["admin", "tenant", "rm", "acme"]),
        1,
        &["still owns 2 containers"],
    );
    run(&acme_hull, &["rm", "-f", "web"]);
    run(&acme_hull, &["start", "second"]);
    let waited = run(&acme_hull, &["wait", "second"]);
    assert_eq!(waited, "0");
    assert_eq!(run(&acme_hull, &["logs", "second"]), "ran");
    let info = run(&acme_hull, &["info"]);
    for line in ["Tenant: acme", "Containers: 1 (0 running)", "Containers 2"] {
        assert!(info.contains(line), "{info}");
    }
    assert!(!info.contains("Root Dir"), "the host's paths: {info}");
    // `hull run --rm` as a tenant streams its output as it does locally.
    let echoed = acme_hull(&["run", "--rm", "--size", "S1", "busybox", "echo", "hello"]);
    assert_eq!(stdout_of(&echoed), "hello\n", "{}", text(&echoed.stderr));

    // Beta's container is untouched by all of it, and renames within beta.
    run(&beta_hull, &["rename", "web", "site"]);
    assert_eq!(inspect(&beta_hull, "site")["Id"], beta_web.as_str());
    run(&beta_hull, &["rm", "-f", "site"]);

    // Volumes and snapshots: each tenant's `data` is its own.
    run(&acme_hull, &["volume", "create", "data"]);
    run(&beta_hull, &["volume", "create", "data"]);
    let names = |listing: String| -> Vec<String> {
        listing
            .lines()
            .skip(1)
            .filter_map(|line| line.split_whitespace().last().map(str::to_owned))
            .collect()
    };
    assert_eq!(names(run(&acme_hull, &["volume", "ls"])), ["data"]);
    let everyone = names(stdout_of(&cloud.daemon.hull(&["volume", "ls"])));
    for name in ["data@acme", "data@beta"] {
        assert!(everyone.iter().any(|n| n == name), "{everyone:?}");
    }
    run(
        &acme_hull,
        &[
            "run",
            "--rm",
            "-v",
            "data:/d",
            "busybox",
            "sh",
            "-c",
            "echo acme > /d/f",
        ],
    );
    let read = beta_hull(&["run", "--rm", "-v", "data:/d", "busybox", "cat", "/d/f"]);
    assert!(!read.status.success(), "beta read acme's volume");
    // Nor can beta spell acme's volume as the store names it.
    let spelled = beta_hull(&["create", "-v", "data@acme:/d", "busybox"]);
    assert!(!spelled.status.success(), "beta mounted data@acme");
    assert!(!names(run(&beta_hull, &["volume", "ls"]))
        .iter()
        .any(|n| n.contains("acme")));
    run(&acme_hull, &["volume", "snapshot", "data", "monday"]);
    assert_eq!(
        names(run(&beta_hull, &["volume", "snapshot", "ls"])),
        Vec::<String>::new()
    );
    assert_fails(
        &beta_hull(&["volume", "inspect", "data@acme"]),
        1,
        &["no such volume"],
    );
    assert_fails(
        &beta_hull(&["volume", "rm", "data@acme"]),
        1,
        &["no such volume"],
    );
    assert_fails(
        &beta_hull(&["volume", "snapshot", "inspect", "monday@acme"]),
        1,
        &["no such snapshot"],
    );
    assert_fails(
        &beta_hull(&["volume", "create", "--from", "monday", "stolen"]),
        1,
        &["no such snapshot"],
    );

    // Events: beta's stream carries beta's containers alone.
    if common::has_docker_cli() {
        let until = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 1;
        let events = cloud.docker_as(
            "beta",
            &[
                "events",
                "--since",
                &began.to_string(),
                "--until",
                &until.to_string(),
                "--format",
                "{{.Actor.ID}} {{.Action}}",
            ],
        );
        let events = stdout_of(&events);
        assert!(events.contains(&format!("{beta_web} rename")), "{events}");
        assert!(!events.contains(&acme_web), "{events}");
        assert!(!events.contains(&sneaky), "{events}");
    }

    // Removing a tenant by force removes all it owns.
    stdout_of(
        &cloud
            .daemon
            .hull(&["admin", "tenant", "rm", "--force", "acme"]),
    );
    let left = stdout_of(&cloud.daemon.hull(&["ps", "-a"]));
    assert!(!left.contains("acme/"), "{left}");
    let volumes = stdout_of(&cloud.daemon.hull(&["volume", "ls"]));
    assert!(!volumes.contains("@acme"), "{volumes}");
    assert!(volumes.contains("data@beta"), "{volumes}");
}

#[test]
fn options_that_reach_the_host_are_refused_to_tenants() {
    if !common::has_docker_cli() {
        eprintln!("skipped: no docker CLI");
        return;
    }
    let cloud = Cloud::start(&[]);
    stdout_of(&cloud.daemon.hull(&["admin", "tenant", "create", "acme"]));
    let archive = common::busybox_archive();
    let loaded = cloud.docker_as("acme", &["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.status.success(), "{}", text(&loaded.stderr));
    let host_file = cloud.daemon.root.join("host-secret");
    std::fs::write(&host_file, "secret").unwrap();
    let bind = format!("{}:/secret", host_file.display());
    for (options, why) in [
        (vec!["--privileged"], "--privileged"),
        (vec!["-v", &bind], "bind mounts"),
        (
            vec!["--mount", "type=bind,source=/etc,target=/e"],
            "bind mounts",
        ),
        (vec!["--network", "host"], "--network host"),
        (vec!["--pid", "host"], "PidMode"),
        (vec!["--ipc", "host"], "IpcMode"),
        (vec!["--device", "/dev/kvm"], "devices"),
        (vec!["-p", "8080:80"], "publishing ports"),
    ] {
        let mut args = vec!["create"];
        args.extend(&options);
        args.extend(["busybox", "true"]);
        let refused = cloud.docker_as("acme", &args);
        assert!(!refused.status.success(), "{options:?} was allowed");
        let stderr = text(&refused.stderr);
        assert!(
            stderr.contains(why) && stderr.contains("not open to tenants"),
            "{options:?}: {stderr}"
        );
    }
    let listed = cloud.docker_as("acme", &["ps", "-a", "-q"]);
    assert_eq!(stdout_of(&listed).trim(), "", "nothing was created");
    // What stays inside the VM is the tenant's to choose.
    let created = cloud.docker_as(
        "acme",
        &[
            "create",
            "-v",
            "/scratch",
            "--tmpfs",
            "/t",
            "--network",
            "none",
            "busybox",
            "true",
        ],
    );
    assert!(created.status.success(), "{}", text(&created.stderr));
}
