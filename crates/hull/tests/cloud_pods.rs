//! Tenants' own pods over the TLS listener: each tenant's pod names live
//! in its own namespace, its pods' containers are its containers (sized,
//! counted against its quota, on its own network, from its own images),
//! another tenant's pod answers as one that does not exist, and what in a
//! pod file reaches the host is refused.

mod common;

use std::path::PathBuf;

use common::cloud::Cloud;
use common::{assert_fails, stdout_of, text};

/// Writes a pod file next to the daemon's state.
fn pod_file(cloud: &Cloud, name: &str, text: &str) -> PathBuf {
    let path = cloud
        .daemon
        .root
        .parent()
        .unwrap()
        .join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A pod `app` whose container `main` says hello for `owner` and runs on,
/// and whose `side` (with `side`) ends at once, each of size S1.
fn app(owner: &str, side: bool) -> String {
    let mut file = format!(
        r#"
metadata:
  name: app
  labels: {{sh_hyper_instancetype: S1, sh.hull.tenant: someone-else}}
spec:
  restartPolicy: Never
  containers:
    - name: main
      image: busybox
      command: [sh, -c, 'echo "hello from $OWNER"; exec sleep 600']
      env: [{{name: OWNER, value: {owner}}}]
"#
    );
    if side {
        file.push_str("    - {name: side, image: busybox, command: [echo, side done]}\n");
    }
    file
}

fn json(output: &str) -> serde_json::Value {
    serde_json::from_str(output).unwrap_or_else(|e| panic!("{e}: {output}"))
}

#[test]
fn tenants_run_their_own_pods_in_their_own_namespaces_within_their_quota() {
    let cloud = Cloud::start_isolated(&[("HULL_NO_TEMPLATES", "1")]);
    let (acme, acme_secret) = cloud.tenant_with_key("acme");
    let (beta, beta_secret) = cloud.tenant_with_key("beta");
    stdout_of(&cloud.daemon.hull(&[
        "admin",
        "tenant",
        "quota",
        "acme",
        "containers=3,memory=192m",
    ]));
    type Hull<'a> = &'a dyn Fn(&[&str]) -> std::process::Output;
    let acme_hull = |args: &[&str]| cloud.tenant(&acme, &acme_secret, args);
    let beta_hull = |args: &[&str]| cloud.tenant(&beta, &beta_secret, args);
    let run = |hull: Hull, args: &[&str]| {
        let output = hull(args);
        assert!(
            output.status.success(),
            "{args:?}: {}\n{}",
            text(&output.stderr),
            cloud.daemon.log()
        );
        stdout_of(&output).trim().to_owned()
    };
    // Only beta has an image: acme's pod of it is refused as missing.
    let archive = common::busybox_archive();
    run(&beta_hull, &["load", "-i", archive.to_str().unwrap()]);
    let acme_app = pod_file(&cloud, "acme-app", &app("acme", true));
    let (code, unseen) = cloud.curl_file_as("acme", "POST", "/hull/pods/create", Some(&acme_app));
    assert_eq!(code, 404, "{unseen}");
    run(&acme_hull, &["load", "-i", archive.to_str().unwrap()]);

    // Both tenants run a pod `app`; acme's has two containers, beta's one.
    let acme_id = run(
        &acme_hull,
        &["pod", "run", "-f", acme_app.to_str().unwrap()],
    );
    let beta_app = pod_file(&cloud, "beta-app", &app("beta", false));
    let beta_id = run(
        &beta_hull,
        &["pod", "run", "-f", beta_app.to_str().unwrap()],
    );
    assert_ne!(acme_id, beta_id);
    for (hull, owner) in [(&acme_hull as Hull, "acme"), (&beta_hull, "beta")] {
        common::eventually(120, || {
            let logs = hull(&["logs", "app.main"]);
            let said = stdout_of(&logs);
            (said == format!("hello from {owner}\n"))
                .then_some(())
                .ok_or_else(|| format!("{owner}: {said:?} {}", text(&logs.stderr)))
        });
    }

    // Each lists and inspects only its own `app`, its containers its own.
    let pods_of = |hull: Hull| -> Vec<String> {
        run(hull, &["pod", "ls"])
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().nth(1).unwrap().to_owned())
            .collect()
    };
    assert_eq!(pods_of(&acme_hull), ["app"]);
    assert_eq!(pods_of(&beta_hull), ["app"]);
    let pod_of =
        |hull: Hull, reference: &str| json(&run(hull, &["pod", "inspect", reference]))[0].clone();
    common::eventually(60, || {
        let pod = pod_of(&acme_hull, "app");
        (pod["Status"] == "1/2 running")
            .then_some(())
            .ok_or(pod.to_string())
    });
    assert_eq!(run(&acme_hull, &["logs", "app.side"]), "side done");
    let pod = pod_of(&acme_hull, "app");
    assert_eq!(pod["Id"], acme_id.as_str());
    // The VM holds both containers' sizes: 2 × S1.
    assert_eq!(pod["Size"], "2 vCPUs, 128 MiB");
    assert_eq!(pod["Labels"]["sh.hull.tenant"], "acme");
    let names = |hull: Hull| {
        let mut names: Vec<String> = run(hull, &["ps", "-a"])
            .lines()
            .skip(1)
            .filter_map(|line| line.split_whitespace().last().map(str::to_owned))
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&acme_hull), ["app.main", "app.side"]);
    assert_eq!(names(&beta_hull), ["app.main"]);
    let main = json(&run(&acme_hull, &["inspect", "app.main"]))[0].clone();
    let labels = &main["Config"]["Labels"];
    assert_eq!(labels["sh.hull.tenant"], "acme");
    assert_eq!(labels["sh_hyper_instancetype"], "S1");
    // On acme's own network, the pod's one address in its containers' VM.
    let address = main["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(address.starts_with("10.1"), "{main}");
    assert_eq!(
        main["NetworkSettings"]["Networks"]["tenant:acme"]["IPAddress"],
        address.as_str()
    );
    let inside = run(&acme_hull, &["exec", "app.main", "ip", "-4", "addr"]);
    assert!(inside.contains(&format!("inet {address}/")), "{inside}");

    // The operator sees both, each by its qualified name.
    let all = run(&|a| cloud.daemon.hull(a), &["pod", "ls"]);
    assert!(
        all.contains("acme/app") && all.contains("beta/app"),
        "{all}"
    );
    let theirs = json(&run(
        &|a| cloud.daemon.hull(a),
        &["pod", "inspect", "beta/app"],
    ));
    assert_eq!(theirs[0]["Id"], beta_id.as_str());
    assert_eq!(theirs[0]["Containers"][0]["Name"], "beta/app.main");
    let beta_main = theirs[0]["Containers"][0]["Id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Another tenant's pod answers exactly as one that does not exist.
    let missing = "0".repeat(64);
    for (method, action) in [
        ("GET", "/json"),
        ("POST", "/start"),
        ("POST", "/stop"),
        ("DELETE", "?force=1"),
    ] {
        let ask = |reference: &str| {
            let (code, body) = cloud.curl_file_as(
                "acme",
                method,
                &format!("/hull/pods/{reference}{action}"),
                None,
            );
            let decoded = reference.replace("%2F", "/");
            (code, body.replace(&decoded, "REF"))
        };
        for (theirs, nothing) in [
            (beta_id.as_str(), missing.as_str()),
            (&beta_id[..12], &missing[..12]),
            ("beta%2Fapp", "nobody%2Fapp"),
        ] {
            let answer = ask(theirs);
            assert_eq!(answer.0, 404, "{method} {theirs}: {}", answer.1);
            assert_eq!(answer, ask(nothing), "{method} {theirs}");
        }
    }
    assert_fails(
        &acme_hull(&["pod", "inspect", &beta_id]),
        1,
        &["No such pod"],
    );
    assert_fails(
        &acme_hull(&["pod", "rm", "-f", &beta_id]),
        1,
        &["No such pod"],
    );
    // Nor are its containers acme's.
    assert_fails(&acme_hull(&["logs", &beta_main]), 1, &["No such container"]);
    assert_eq!(pod_of(&beta_hull, "app")["Status"], "1/1 running");

    // What reaches the host is refused, and nothing is made.
    let escape = pod_file(
        &cloud,
        "escape",
        "metadata: {name: escape}\nspec:\n  volumes: [{name: root, hostPath: {path: /}}]\n  containers: [{name: c, image: busybox, volumeMounts: [{name: root, mountPath: /host}]}]\n",
    );
    let (code, refused) = cloud.curl_file_as("acme", "POST", "/hull/pods/create", Some(&escape));
    assert_eq!(code, 403, "{refused}");
    assert!(refused.contains("hostPath"), "{refused}");
    assert_fails(
        &acme_hull(&["pod", "create", escape.to_str().unwrap()]),
        1,
        &["hostPath", "not open to tenants"],
    );
    for (name, container) in [
        ("privileged", "securityContext: {privileged: true}"),
        ("hostPort", "ports: [{containerPort: 22, hostPort: 2222}]"),
    ] {
        let file = pod_file(
            &cloud,
            name,
            &format!("metadata: {{name: x}}\nspec: {{containers: [{{name: c, image: busybox, {container}}}]}}\n"),
        );
        assert_fails(
            &acme_hull(&["pod", "create", file.to_str().unwrap()]),
            1,
            &[name, "not open to tenants"],
        );
    }
    let host_network = pod_file(
        &cloud,
        "host-network",
        "metadata: {name: x}\nspec: {hostNetwork: true, containers: [{name: c, image: busybox}]}\n",
    );
    let (code, refused) =
        cloud.curl_file_as("acme", "POST", "/hull/pods/create", Some(&host_network));
    assert_eq!(
        (code, refused.contains("hostNetwork")),
        (403, true),
        "{refused}"
    );

    // Over quota: two more containers past 3, then memory past 192 MiB;
    // the VM still holds the share of the container that ended.
    let pair = pod_file(
        &cloud,
        "pair",
        "metadata: {name: pair}\nspec: {containers: [{name: a, image: busybox}, {name: b, image: busybox}]}\n",
    );
    let (code, refused) = cloud.curl_file_as("acme", "POST", "/hull/pods/create", Some(&pair));
    assert_eq!(code, 403, "{refused}");
    for needle in [
        "quota exceeded",
        "containers",
        "in use 2",
        "asked 2",
        "limit 3",
    ] {
        assert!(refused.contains(needle), "{needle}: {refused}");
    }
    assert_eq!(pods_of(&acme_hull), ["app"]);
    assert_eq!(names(&acme_hull), ["app.main", "app.side"]);
    let big = pod_file(
        &cloud,
        "big",
        "metadata: {name: big, labels: {sh_hyper_instancetype: S2}}\nspec: {containers: [{name: a, image: busybox, command: [sleep, \"600\"]}]}\n",
    );
    assert_fails(
        &acme_hull(&["pod", "run", big.to_str().unwrap()]),
        1,
        &[
            "quota exceeded",
            "memory",
            "in use 128",
            "asked 128",
            "limit 192",
        ],
    );
    let big_pod = pod_of(&acme_hull, "big");
    assert_eq!(big_pod["State"], "created", "nothing started: {big_pod}");
    let detail = json(&stdout_of(
        &cloud.daemon.hull(&["admin", "tenant", "inspect", "acme"]),
    ));
    let used = &detail["Used"];
    assert_eq!(
        (&used["Containers"], &used["Running"], &used["MemoryMib"]),
        (&3.into(), &1.into(), &128.into()),
        "{detail}"
    );
    run(&acme_hull, &["pod", "rm", "big"]);

    // The owner stops and removes its pod; beta's runs on untouched.
    run(&acme_hull, &["pod", "stop", "-t", "1", "app"]);
    let stopped = pod_of(&acme_hull, "app");
    assert_eq!(stopped["State"], "exited", "{stopped}");
    run(&acme_hull, &["pod", "rm", "app"]);
    assert!(pods_of(&acme_hull).is_empty());
    assert!(names(&acme_hull).is_empty());
    assert_eq!(pod_of(&beta_hull, "app")["Status"], "1/1 running");
    assert_eq!(run(&beta_hull, &["logs", "app.main"]), "hello from beta");

    // A hulld killed and started again takes beta's pod back with its VM,
    // its address and its tap on beta's network.
    let address_of = |hull: Hull| {
        json(&run(hull, &["inspect", "app.main"]))[0]["NetworkSettings"]["IPAddress"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let beta_address = address_of(&beta_hull);
    assert!(beta_address.starts_with("10.1"), "{beta_address}");
    let tap = format!("ht-{}", &beta_id[..12]);
    let tap_exists = || {
        cloud
            .command("ip")
            .args(["link", "show", &tap])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(tap_exists(), "{tap}");
    cloud.restart_after_crash_with(&[("HULL_NO_TEMPLATES", "1")], || {});
    assert_eq!(pod_of(&beta_hull, "app")["Status"], "1/1 running");
    assert_eq!(address_of(&beta_hull), beta_address);
    // Once hulld has taken the VM back, exec reaches into it again.
    common::eventually(60, || {
        let inside = beta_hull(&["exec", "app.main", "ip", "-4", "addr"]);
        let said = text(&inside.stdout);
        said.contains(&format!("inet {beta_address}/"))
            .then_some(())
            .ok_or_else(|| format!("{said} {}", text(&inside.stderr)))
    });
    assert!(tap_exists(), "{tap} removed at the restart");

    // A tenant removed with --force takes its pods along, and their taps.
    stdout_of(
        &cloud
            .daemon
            .hull(&["admin", "tenant", "rm", "--force", "beta"]),
    );
    let all = run(&|a| cloud.daemon.hull(a), &["pod", "ls"]);
    assert!(!all.contains("app"), "{all}");
    let containers = run(&|a| cloud.daemon.hull(a), &["ps", "-a"]);
    assert!(!containers.contains("app."), "{containers}");
    assert!(!tap_exists(), "{tap} left behind");
}
