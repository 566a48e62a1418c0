//! A tenant sees its objects by its own names only. The store qualifies
//! them (`data@acme`, `acme/web`) so that tenants' names never collide;
//! none of that reaches the tenant, in answers or in errors, and another
//! tenant's object answers exactly as one that does not exist. One VM
//! boots, for everything that shows only while a container runs.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::cloud::{tiny_archive, Cloud};
use common::{stdout_of, text};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Whether `body` shows a store name of `tenant`'s.
fn qualified(body: &str, tenant: &str) -> bool {
    body.contains(&format!("@{tenant}")) || body.contains(&format!("{tenant}/"))
}

#[test]
fn a_tenant_sees_only_its_own_names_and_others_objects_read_as_missing() {
    let began = now();
    let cloud = Cloud::start(&[]);
    let (acme, acme_secret) = cloud.tenant_with_key("acme");
    let (beta, beta_secret) = cloud.tenant_with_key("beta");
    let dir = tempfile::tempdir().unwrap();
    let busybox = common::busybox_archive();
    let loaded = cloud.tenant(
        &acme,
        &acme_secret,
        &["load", "-i", busybox.to_str().unwrap()],
    );
    assert!(loaded.status.success(), "{}", text(&loaded.stderr));
    let tiny = tiny_archive(dir.path(), "betaimg:1", "beta's own");
    let loaded = cloud.tenant(&beta, &beta_secret, &["load", "-i", tiny.to_str().unwrap()]);
    assert!(loaded.status.success(), "{}", text(&loaded.stderr));

    // Every answer acme gets, kept to be searched for store names.
    let seen = std::cell::RefCell::new(Vec::<(String, String)>::new());
    let as_acme = |method: &str, target: &str, body: Option<&str>| -> (u16, String) {
        let (code, answer) = cloud.curl_as("acme", method, target, body);
        seen.borrow_mut().push((
            format!("{method} {target} {}", body.unwrap_or("")),
            answer.clone(),
        ));
        (code, answer)
    };
    let as_beta = |method: &str, target: &str, body: Option<&str>| -> String {
        let (code, answer) = cloud.curl_as("beta", method, target, body);
        assert!(code < 300, "beta {method} {target}: {code} {answer}");
        answer
    };
    let expect = |(code, answer): (u16, String), wanted: u16, what: &str| -> String {
        assert_eq!(code, wanted, "{what}: {answer}");
        answer
    };

    // Beta's objects: a container, its network, a volume, a snapshot, an image.
    let bweb: serde_json::Value = serde_json::from_str(&as_beta(
        "POST",
        "/containers/create?name=bweb",
        Some(r#"{"Image":"betaimg:1"}"#),
    ))
    .unwrap();
    let bweb_id = bweb["Id"].as_str().unwrap().to_owned();
    as_beta("POST", "/volumes/create", Some(r#"{"Name":"bdata"}"#));
    as_beta(
        "POST",
        "/hull/volumes/bdata/snapshot",
        Some(r#"{"Name":"bsnap"}"#),
    );
    let networks: serde_json::Value =
        serde_json::from_str(&as_beta("GET", "/networks", None)).unwrap();
    let beta_network = networks[0]["Id"].as_str().unwrap().to_owned();

    // Acme's: a named volume, an anonymous one, a snapshot, and `web`
    // running with both volumes.
    expect(
        as_acme("POST", "/volumes/create", Some(r#"{"Name":"data"}"#)),
        201,
        "volume create",
    );
    expect(
        as_acme("POST", "/volumes/create", Some(r#"{"Name":"spare"}"#)),
        201,
        "volume create",
    );
    expect(
        as_acme(
            "POST",
            "/hull/volumes/spare/snapshot",
            Some(r#"{"Name":"monday"}"#),
        ),
        201,
        "snapshot",
    );
    let web = r#"{"Image":"busybox","Cmd":["sleep","600"],"HostConfig":{"Binds":["data:/data","/scratch"]}}"#;
    expect(
        as_acme("POST", "/containers/create?name=web", Some(web)),
        201,
        "create web",
    );
    expect(
        as_acme("POST", "/containers/web/start", None),
        204,
        "start web",
    );
    // A second container of the same volume cannot start while web has it.
    let web2 = r#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"Binds":["data:/data"]}}"#;
    expect(
        as_acme("POST", "/containers/create?name=web2", Some(web2)),
        201,
        "create web2",
    );
    let busy = expect(
        as_acme("POST", "/containers/web2/start", None),
        409,
        "start web2",
    );
    assert!(busy.contains("volume data is attached"), "{busy}");

    // Its processes carry uids: the host's account names are not its own.
    let top: serde_json::Value = serde_json::from_str(&expect(
        as_acme("GET", "/containers/web/top", None),
        200,
        "top",
    ))
    .unwrap();
    let sleeper = top["Processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row[7].as_str().unwrap_or("").contains("sleep"))
        .unwrap_or_else(|| panic!("no sleep in {top}"));
    assert_eq!(sleeper[0], "0", "{top}");

    // What acme reads of its own: inspect, list, volumes, snapshots,
    // networks, info, events, usage, and the errors of its own objects.
    let inspected: serde_json::Value = serde_json::from_str(&expect(
        as_acme("GET", "/containers/web/json", None),
        200,
        "inspect",
    ))
    .unwrap();
    assert_eq!(inspected["Name"], "/web");
    assert_eq!(
        inspected["HostConfig"]["Binds"],
        serde_json::json!(["data:/data"])
    );
    assert_eq!(
        inspected["LogPath"], "",
        "the host's paths are the operator's"
    );
    let mounts = inspected["Mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 2, "{inspected}");
    assert_eq!(mounts[0]["Name"], "data", "{inspected}");
    let anonymous = mounts[1]["Name"].as_str().unwrap();
    assert_eq!(anonymous.len(), 64, "{inspected}");
    for mount in mounts {
        assert_eq!(mount["Source"], "", "{inspected}");
    }
    let failed: serde_json::Value = serde_json::from_str(&expect(
        as_acme("GET", "/containers/web2/json", None),
        200,
        "inspect web2",
    ))
    .unwrap();
    let error = failed["State"]["Error"].as_str().unwrap();
    assert!(error.contains("volume data is attached"), "{failed}");
    let waited = expect(
        as_acme("POST", "/containers/web2/wait", None),
        200,
        "wait web2",
    );
    // A start that failed is no exit: wait reports its code, not its error.
    assert!(waited.contains(r#""StatusCode":125"#), "{waited}");
    let listed = expect(as_acme("GET", "/containers/json?all=1", None), 200, "list");
    assert!(listed.contains(r#""Names":["/web"]"#), "{listed}");
    let volumes = expect(as_acme("GET", "/volumes", None), 200, "volume ls");
    for name in ["data", "spare", anonymous] {
        assert!(
            volumes.contains(&format!(r#""Name":"{name}""#)),
            "{volumes}"
        );
    }
    for (method, target, body, code) in [
        ("GET", "/volumes/data".to_owned(), None, 200),
        ("GET", format!("/volumes/{anonymous}"), None, 200),
        (
            "POST",
            "/volumes/create".to_owned(),
            Some(r#"{"Name":"data"}"#),
            201,
        ),
        ("GET", "/hull/volumes/snapshots".to_owned(), None, 200),
        (
            "GET",
            "/hull/volumes/snapshots/monday".to_owned(),
            None,
            200,
        ),
        ("GET", "/networks".to_owned(), None, 200),
        ("GET", "/networks/tenant:acme".to_owned(), None, 200),
        ("GET", "/info".to_owned(), None, 200),
        ("GET", "/hull/usage".to_owned(), None, 200),
        // Its own objects' errors: in use, a bad name, taken names.
        ("DELETE", "/volumes/data".to_owned(), None, 409),
        (
            "POST",
            "/volumes/create".to_owned(),
            Some(r#"{"Name":"x"}"#),
            400,
        ),
        (
            "POST",
            "/containers/create".to_owned(),
            Some(r#"{"Image":"busybox","HostConfig":{"Binds":["x:/d"]}}"#),
            400,
        ),
        (
            "POST",
            "/hull/volumes/spare/snapshot".to_owned(),
            Some(r#"{"Name":"monday"}"#),
            409,
        ),
        (
            "POST",
            "/hull/volumes/create".to_owned(),
            Some(r#"{"Name":"spare","From":"monday"}"#),
            409,
        ),
    ] {
        expect(as_acme(method, &target, body), code, &target);
    }
    let network: serde_json::Value = serde_json::from_str(&expect(
        as_acme("GET", "/networks/tenant:acme", None),
        200,
        "network",
    ))
    .unwrap();
    let id = inspected["Id"].as_str().unwrap();
    assert_eq!(network["Containers"][id]["Name"], "web", "{network}");
    let events = expect(
        as_acme(
            "GET",
            &format!("/events?since={began}&until={}", now()),
            None,
        ),
        200,
        "events",
    );
    assert!(events.contains(r#""name":"web""#), "{events}");
    assert!(!events.contains("bweb"), "{events}");

    // Another tenant's object, by any name, reads as a missing one does.
    let random_id = "f".repeat(64);
    let pairs: Vec<(&str, &str, Option<&str>, &str, &str)> = vec![
        ("GET", "/containers/NAME/json", None, "bweb", "nosuch"),
        (
            "GET",
            "/containers/NAME/json",
            None,
            bweb_id.as_str(),
            random_id.as_str(),
        ),
        (
            "GET",
            "/containers/NAME/json",
            None,
            "beta%2Fbweb",
            "nobody%2Fbweb",
        ),
        ("POST", "/containers/NAME/start", None, "bweb", "nosuch"),
        ("DELETE", "/containers/NAME?force=1", None, "bweb", "nosuch"),
        ("POST", "/containers/NAME/pause", None, "bweb", "nosuch"),
        ("POST", "/containers/NAME/unpause", None, "bweb", "nosuch"),
        (
            "GET",
            "/containers/NAME/archive?path=%2Fetc",
            None,
            "bweb",
            "nosuch",
        ),
        (
            "POST",
            "/containers/NAME/exec",
            Some(r#"{"Cmd":["true"]}"#),
            "bweb",
            "nosuch",
        ),
        ("GET", "/volumes/NAME", None, "bdata", "nosuch"),
        ("GET", "/volumes/NAME", None, "bdata@beta", "zzdata@nobody"),
        ("DELETE", "/volumes/NAME", None, "bdata", "nosuch"),
        (
            "POST",
            "/hull/volumes/NAME/snapshot",
            Some(r#"{"Name":"s1"}"#),
            "bdata",
            "nosuch",
        ),
        (
            "GET",
            "/hull/volumes/snapshots/NAME",
            None,
            "bsnap",
            "nosuch",
        ),
        (
            "DELETE",
            "/hull/volumes/snapshots/NAME",
            None,
            "bsnap",
            "nosuch",
        ),
        (
            "POST",
            "/hull/volumes/create",
            Some(r#"{"Name":"stolen","From":"NAME"}"#),
            "bsnap",
            "nosuch",
        ),
        (
            "GET",
            "/networks/NAME",
            None,
            "tenant:beta",
            "tenant:nobody",
        ),
        (
            "GET",
            "/networks/NAME",
            None,
            beta_network.as_str(),
            random_id.as_str(),
        ),
        ("GET", "/images/NAME/json", None, "betaimg:1", "nosuchimg:1"),
        ("DELETE", "/images/NAME", None, "betaimg:1", "nosuchimg:1"),
        (
            "POST",
            "/containers/create",
            Some(r#"{"Image":"NAME"}"#),
            "betaimg:1",
            "nosuchimg:1",
        ),
        (
            "POST",
            "/containers/create",
            Some(r#"{"Image":"busybox","HostConfig":{"Binds":["NAME:/d"]}}"#),
            "bdata@beta",
            "zzdata@nobody",
        ),
        (
            "DELETE",
            "/containers/NAME/x?link=1",
            None,
            "bweb",
            "nosuchweb",
        ),
        // A link names containers of the tenant's own only, by name or id.
        (
            "POST",
            "/containers/create",
            Some(r#"{"Image":"busybox","HostConfig":{"Links":["NAME:x"]}}"#),
            "bweb",
            "nosuchweb",
        ),
        (
            "POST",
            "/containers/create",
            Some(r#"{"Image":"busybox","HostConfig":{"Links":["NAME:x"]}}"#),
            bweb_id.as_str(),
            random_id.as_str(),
        ),
    ];
    for (method, target, body, other, missing) in pairs {
        let ask = |name: &str| {
            let body = body.map(|b| b.replace("NAME", name));
            as_acme(method, &target.replace("NAME", name), body.as_deref())
        };
        let ((other_code, other_answer), (missing_code, missing_answer)) =
            (ask(other), ask(missing));
        assert!(
            other_code >= 400,
            "{method} {target} {other}: {other_answer}"
        );
        // The answer names what was asked for, as the path decodes it.
        let unnamed = |answer: &str, name: &str| answer.replace(&name.replace("%2F", "/"), "NAME");
        assert_eq!(
            (other_code, unnamed(&other_answer, other)),
            (missing_code, unnamed(&missing_answer, missing)),
            "{method} {target}: {other} against {missing}"
        );
    }

    // Nothing acme was told names anything the way the store does.
    for (request, answer) in seen.borrow().iter() {
        assert!(!qualified(answer, "acme"), "{request}: {answer}");
    }
    // The store does: the operator sees acme's volume as `data@acme`.
    let operator = stdout_of(&cloud.daemon.hull(&["inspect", "acme/web"]));
    assert!(operator.contains("data@acme"), "{operator}");
    // Beta's container is untouched by all of acme's tries.
    let bweb = as_beta("GET", "/containers/bweb/json", None);
    assert!(bweb.contains(&bweb_id), "{bweb}");
}
