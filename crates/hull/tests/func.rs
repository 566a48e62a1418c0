//! Hyper Func end to end: each call of a function runs a new container of
//! its image in a real VM, with the request on its stdin and headers in its
//! environment; failures, timeouts and oversized output answer as Hyper.sh
//! did, results are fetched once, calls past a function's concurrency
//! queue in order, the uuid is the call URL's secret, and a tenant's
//! functions are its own. A hostile tenant cannot take the host's share of
//! others: its calls' stored bytes stay within a budget, its calls running
//! at once within a bound across its functions, and its callers' call plane
//! connections within a share.

mod common;
#[path = "func/events.rs"]
mod events;
#[path = "func/shares.rs"]
mod shares;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::cloud::Cloud;
use common::{assert_fails, stdout_of, text};
use serde_json::Value;
use shares::{
    Acme, BIG, HELD_BUDGET, PER_ADDRESS_UNNAMED, PER_TENANT_CONNECTIONS, PER_TENANT_RUNNING,
};

/// Results are kept unfetched this long in this test's hulld.
const RESULT_TTL: u64 = 15;

/// The call plane of `cloud`'s hulld, reached from its namespace.
struct Plane<'a> {
    cloud: &'a Cloud,
    address: String,
}

impl Plane<'_> {
    /// `method path` with `headers` and `body`: the status and the body.
    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        let netns = self.cloud.netns.as_ref().expect("an isolated cloud");
        let address = self.address.clone();
        let mut stream = netns.within(move || TcpStream::connect(address).unwrap());
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: funcs\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        // A refused body may be cut off: the answer still comes.
        let _ = stream.write_all(body);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP answer: {}", text(&answer)));
        let head = text(&answer[..split]);
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, answer[split + 4..].to_vec())
    }

    fn call(&self, url_path: &str, body: &str) -> (u16, String) {
        let (status, body) = self.send("POST", url_path, &[], body.as_bytes());
        (status, text(&body))
    }

    /// Calls asynchronously: the call id.
    fn call_async(&self, url_path: &str, body: &str) -> String {
        self.call_async_with(url_path, &[], body.as_bytes())
    }

    fn call_async_with(&self, url_path: &str, headers: &[(&str, &str)], body: &[u8]) -> String {
        let (status, answer) = self.send("POST", url_path, headers, body);
        let answer = text(&answer);
        assert_eq!(status, 202, "{answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        answer["CallId"].as_str().unwrap().to_owned()
    }

    /// Runs a Python script in the plane's namespace with the plane's
    /// port and `args`: the JSON it prints.
    fn python(&self, script: &str, args: &[&str]) -> Value {
        let port = self.address.rsplit(':').next().unwrap();
        let output = self
            .cloud
            .command("python3")
            .args(["-c", script, port])
            .args(args)
            .output()
            .expect("python3 runs");
        serde_json::from_str(&stdout_of(&output))
            .unwrap_or_else(|e| panic!("{e}: {}", text(&output.stderr)))
    }
}

/// The function's call path (`/call/NAME/UUID`) from hull's last line.
fn call_path(output: &std::process::Output) -> (String, String) {
    let out = stdout_of(output);
    let url = out.lines().last().unwrap().trim().to_owned();
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("{url}"));
    let (address, path) = rest.split_once('/').unwrap();
    (address.to_owned(), format!("/{path}"))
}

fn output_path(call: &str, id: &str) -> String {
    call.replacen("/call/", "/output/", 1) + "/" + id
}

#[test]
fn functions_run_each_call_in_a_vm_answer_as_hyper_did_queue_and_stay_their_owner_s() {
    let started = Instant::now();
    let ttl = RESULT_TTL.to_string();
    let per_tenant_connections = PER_TENANT_CONNECTIONS.to_string();
    let per_address_unnamed = PER_ADDRESS_UNNAMED.to_string();
    let netns = common::netns::NetNs::new("func");
    // A port of its own, the same again after a restart.
    let port = netns.within(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    });
    let listen = format!("tcp://127.0.0.1:{port}");
    let env = [
        ("HULL_NO_TEMPLATES", "1"),
        ("HULL_FUNC_LISTEN", listen.as_str()),
        ("HULL_FUNC_MAX_IO", "64K"),
        ("HULL_FUNC_MAX_QUEUE", "2"),
        ("HULL_FUNC_RESULT_TTL", &ttl),
        ("HULL_FUNC_MAX_HELD", HELD_BUDGET),
        ("HULL_FUNC_MAX_RUNNING_PER_TENANT", PER_TENANT_RUNNING),
        (
            "HULL_FUNC_MAX_CONNECTIONS_PER_TENANT",
            &per_tenant_connections,
        ),
        (
            "HULL_FUNC_MAX_UNAUTHENTICATED_PER_ADDRESS",
            &per_address_unnamed,
        ),
    ];
    let cloud = Cloud::start_in(netns, &env);
    let archive = common::busybox_archive();
    let hull = |args: &[&str]| cloud.daemon.hull(args);
    stdout_of(&hull(&["load", "-i", archive.to_str().unwrap()]));

    let create = |name: &str, extra: &[&str], script: &str| {
        let mut args = vec!["func", "create", "--name", name, "--size", "S1"];
        args.extend_from_slice(extra);
        args.extend(["busybox", "sh", "-c", script]);
        call_path(&hull(&args))
    };
    let (address, echo) = create(
        "echo",
        &["--timeout", "30s", "-e", "GREETING=hi"],
        r#"echo "$HULL_FUNC_METHOD $GREETING $HTTP_X_COLOR [$HTTP_PROXY] $HULL_FUNC_PATH"; cat"#,
    );
    let plane = Plane {
        cloud: &cloud,
        address,
    };

    // Called synchronously: stdin in, stdout out, headers in the environment;
    // but not `Proxy:` (httpoxy), and not the secret uuid of the path.
    let (status, body) = plane.send(
        "POST",
        &format!("{echo}/sync"),
        &[("X-Color", "blue"), ("Proxy", "http://192.0.2.1:3128")],
        b"ping",
    );
    assert_eq!(
        (status, text(&body).as_str()),
        (200, "POST hi blue [] /call/echo\nping")
    );

    // Asynchronously: an id at once, the result once.
    let early = plane.call_async(&echo, "kept unfetched");
    let id = plane.call_async(&echo, "pong");
    let output = output_path(&echo, &id);
    let (status, body) = plane.send("GET", &format!("{output}/wait"), &[], b"");
    assert_eq!(
        (status, text(&body).as_str()),
        (200, "POST hi  [] /call/echo\npong")
    );
    let (status, _) = plane.send("GET", &output, &[], b"");
    assert_eq!(status, 404, "a result is fetched once");

    // Attacks: an oversized body runs nothing; a wrong uuid or name is unknown.
    let (status, _) = plane.send(
        "POST",
        &format!("{echo}/sync"),
        &[],
        &vec![b'x'; 100 * 1024],
    );
    assert_eq!(status, 413);
    let uuid = echo.rsplit('/').next().unwrap();
    for path in [
        format!("/call/echo/{}/sync", "0".repeat(32)),
        format!("/call/other/{uuid}/sync"),
        format!("/call/echo/{uuid}x"),
        format!("/output/echo/{}/{id}", "0".repeat(32)),
    ] {
        let (status, _) = plane.call(&path, "");
        let (get, _) = plane.send("GET", &path, &[], b"");
        assert!(status == 404 && get == 404, "{path}: {status} {get}");
    }

    // A failing call: 500 with its stderr.
    let (_, failing) = create("fail", &[], "echo oops >&2; exit 3");
    let (status, body) = plane.call(&format!("{failing}/sync"), "");
    assert_eq!((status, body.trim()), (500, "oops"));

    // Too much output: 509.
    let (_, chatty) = create("chatty", &[], "yes | head -c 200000");
    let (status, _) = plane.call(&format!("{chatty}/sync"), "");
    assert_eq!(status, 509);

    // Past its timeout: 504, and its VM is gone.
    let (_, slow) = create("slow", &["--timeout", "3s"], "sleep 60");
    let begun = Instant::now();
    let (status, body) = plane.call(&format!("{slow}/sync"), "");
    assert_eq!(status, 504, "{body}");
    assert!(
        begun.elapsed() < Duration::from_secs(30),
        "{:?}",
        begun.elapsed()
    );
    let ps = stdout_of(&hull(&["ps", "-a"]));
    assert!(!ps.contains("-call-"), "a call's container is left: {ps}");

    // Beyond its concurrency calls queue in order; past the queue, 429.
    let (_, queued) = create(
        "queued",
        &["--max-concurrency", "1"],
        "cat; echo; date +%s; sleep 1",
    );
    let ids: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|body| plane.call_async(&queued, body))
        .collect();
    let (status, body) = plane.call(&queued, "d");
    assert_eq!(status, 429, "{body}");
    let inspect: Value =
        serde_json::from_str(&stdout_of(&hull(&["func", "inspect", "queued"]))).unwrap();
    assert_eq!(inspect[0]["MaxConcurrency"], 1, "{inspect}");
    let mut starts = Vec::new();
    for (id, body) in ids.iter().zip(["a", "b", "c"]) {
        let (status, answer) = plane.send(
            "GET",
            &format!("{}/wait", output_path(&queued, id)),
            &[],
            b"",
        );
        let answer = text(&answer);
        assert_eq!(status, 200, "{answer}");
        let (echoed, at) = answer.trim().split_once('\n').unwrap();
        assert_eq!(echoed, body);
        starts.push(at.parse::<u64>().unwrap());
    }
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "not FIFO: {starts:?}"
    );

    let acme = Acme::new(&cloud, &archive);
    let hoard = acme.hogs_its_share(&plane, &echo);

    // hulld killed with calls running and queued. A running call goes on
    // in its VM: the next hulld takes it back, and its result holds what it
    // wrote before the crash and after. Queued calls run after the restart.
    let (_, survivor) = create(
        "survivor",
        &[],
        "cat; echo; echo started; sleep 10; echo finished",
    );
    let survivor_id = plane.call_async(&survivor, "in");
    let fed = cloud
        .daemon
        .root
        .join("funcs/calls")
        .join(format!("{survivor_id}.fed"));
    common::eventually(120, || {
        let spooled = fed.with_extension("stdout");
        let started = std::fs::read(&spooled).is_ok_and(|o| o.ends_with(b"started\n"));
        (fed.exists() && started)
            .then_some(())
            .ok_or_else(|| format!("{} not yet", spooled.display()))
    });
    let ids: Vec<String> = ["e", "f", "g"]
        .iter()
        .map(|body| plane.call_async(&queued, body))
        .collect();
    cloud.restart_after_crash_with(&env, || {});
    // Fetched at once, side by side: results here expire unfetched in seconds.
    let wait = |path: String| {
        let (status, answer) = plane.send("GET", &format!("{path}/wait"), &[], b"");
        (status, text(&answer))
    };
    let (survived, answers) = std::thread::scope(|s| {
        let survived = s.spawn(|| wait(output_path(&survivor, &survivor_id)));
        let others: Vec<_> = ids
            .iter()
            .map(|id| s.spawn(|| wait(output_path(&queued, id))))
            .collect();
        let others: Vec<_> = others.into_iter().map(|h| h.join().unwrap()).collect();
        (survived.join().unwrap(), others)
    });
    assert_eq!(
        (survived.0, survived.1.as_str()),
        (200, "in\nstarted\nfinished\n")
    );
    events::events_and_counts_are_kept(&cloud, &plane, &survivor, "survivor");
    // The budget is read back from what is stored: still full.
    let (status, body) = plane.send("POST", &acme.sleepy, &[], &[b'x'; BIG]);
    assert_eq!(status, 507, "{}", text(&body));
    acme.frees_its_budget(&plane, &hoard);
    for ((status, answer), body) in answers.iter().zip(["e", "f", "g"]) {
        let ran = *status == 200 && answer.starts_with(&format!("{body}\n"));
        let interrupted = *status == 500 && answer.contains("hulld stopped");
        assert!(ran || interrupted, "{answers:?}");
    }
    assert!(
        answers[1..].iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    // No call's container is left behind.
    common::eventually(60, || {
        let ps = stdout_of(&hull(&["ps", "-a"]));
        (!ps.contains("-call-")).then_some(()).ok_or(ps)
    });
    acme.holds_its_share_of_connections(&plane, &echo);

    // A refreshed uuid: the old URL is unknown, the new one answers.
    let (_, refreshed) = call_path(&hull(&["func", "update", "echo", "--refresh"]));
    assert_ne!(refreshed, echo);
    let (status, _) = plane.call(&format!("{echo}/sync"), "x");
    assert_eq!(status, 404);
    let begun = Instant::now();
    let (status, body) = plane.call(&format!("{refreshed}/sync"), "x");
    assert_eq!((status, body.as_str()), (200, "POST hi  [] /call/echo\nx"));
    // Each call is a new VM: its latency, for the record.
    eprintln!(
        "a sync call (cold boot, no templates) took {:?}",
        begun.elapsed()
    );

    tenants_keep_their_functions(&cloud, &plane, &acme);
    events::a_follower_sees_each_call_as_it_happens(&cloud, &plane, &refreshed);
    events::removal_stops_running_calls(&cloud, &plane);

    // A result left unfetched past its time: 410.
    let waited = started.elapsed();
    std::thread::sleep(Duration::from_secs(RESULT_TTL + 25).saturating_sub(waited));
    let (status, _) = plane.send("GET", &output_path(&refreshed, &early), &[], b"");
    assert_eq!(status, 410, "after {waited:?}");

    stdout_of(&hull(&[
        "func", "rm", "echo", "fail", "chatty", "slow", "queued", "survivor",
    ]));
    let listed = stdout_of(&hull(&["func", "ls"]));
    assert_eq!(listed.lines().count(), 1, "{listed}");
    eprintln!("functions test took {:?}", started.elapsed());
}

fn tenants_keep_their_functions(cloud: &Cloud, plane: &Plane<'_>, acme: &Acme<'_>) {
    let (beta, beta_secret) = cloud.tenant_with_key("beta");
    let acme_hull = |args: &[&str]| acme.hull(args);
    let beta_hull = |args: &[&str]| cloud.tenant(&beta, &beta_secret, args);
    let (_, path) = call_path(&acme_hull(&[
        "func",
        "create",
        "--name",
        "mine",
        "--size",
        "S1",
        "busybox",
        "sh",
        "-c",
        "echo acme; cat",
    ]));
    // Through the signed API, and through the call plane.
    let called = stdout_of(&acme_hull(&["func", "call", "mine", "--sync", "-d", "one"]));
    assert_eq!(called, "acme\none");
    let (status, body) = plane.call(&format!("{path}/sync"), "two");
    assert_eq!((status, body.as_str()), (200, "acme\ntwo"));

    let listed = stdout_of(&beta_hull(&["func", "ls"]));
    assert!(!listed.contains("mine"), "{listed}");
    for args in [
        &["func", "inspect", "mine"][..],
        &["func", "call", "mine", "--sync"],
        &["func", "update", "mine", "--refresh"],
        &["func", "get", "mine", "0"],
        &["func", "rm", "mine"],
    ] {
        assert_fails(&beta_hull(args), 1, &["no function mine"]);
    }
    let (status, _) = cloud.curl_as("beta", "GET", "/funcs/mine", None);
    assert_eq!(status, 404);
    // The operator's own listing shows it only when asked for all.
    let all = stdout_of(&cloud.daemon.hull(&["func", "ls", "--all"]));
    assert!(all.contains("mine") && all.contains("acme"), "{all}");
    stdout_of(&acme_hull(&["func", "rm", "mine"]));
    let (status, _) = plane.call(&format!("{path}/sync"), "three");
    assert_eq!(status, 404);
}
