use super::*;

fn container(labels: &[(&str, &str)]) -> ContainerConfig {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    serde_json::from_value(serde_json::json!({
        "image": "busybox", "image_id": "sha256:00", "hostname": "h",
        "process": {"args": ["sh", "-c", "echo hi"], "env": ["PATH=/bin", "A=1"],
                    "cwd": "/work", "user": "1000", "tty": false},
        "cmd": ["sh", "-c", "echo hi"], "entrypoint": [],
        "open_stdin": false, "stdin_once": false, "attach_stdin": false,
        "attach_stdout": true, "attach_stderr": true,
        "labels": labels, "restart": {"name": "no"}, "auto_remove": false,
        "stop_signal": null, "stop_timeout": null, "persistent": true,
        "ports": [{"protocol": "tcp", "host_ip": "", "host_port": 8080, "container_port": 80}],
    }))
    .unwrap()
}

#[test]
fn the_image_config_takes_the_containers_settings_without_hulls_own_labels() {
    let image = ImageConfig {
        cmd: Some(vec!["sh".into()]),
        entrypoint: Some(vec!["/init".into()]),
        labels: Some(BTreeMap::from([("from".into(), "image".into())])),
        exposed_ports: Some(BTreeMap::from([("53/udp".into(), serde_json::json!({}))])),
        ..Default::default()
    };
    let settings = container(&[(OWNER_LABEL, "acme"), (SIZE_LABEL, "S4"), ("mine", "1")]);
    let config = image_config(&image, &settings, None);
    assert_eq!(
        config.cmd,
        Some(vec!["sh".into(), "-c".into(), "echo hi".into()])
    );
    assert_eq!(config.entrypoint, None, "the container ran without one");
    assert_eq!(config.env, ["PATH=/bin", "A=1"]);
    assert_eq!(config.working_dir.as_deref(), Some("/work"));
    assert_eq!(config.user.as_deref(), Some("1000"));
    let ports: Vec<&String> = config.exposed_ports.as_ref().unwrap().keys().collect();
    assert_eq!(ports, ["53/udp", "80/tcp"]);
    let labels = config.labels.unwrap();
    assert_eq!(labels.len(), 2, "{labels:?}");
    assert_eq!(
        (labels["from"].as_str(), labels["mine"].as_str()),
        ("image", "1")
    );
    assert_eq!(command_line(&settings), "sh -c echo hi");
}

#[test]
fn the_body_overrides_what_it_gives() {
    let body: CommitBody = serde_json::from_str(
        r#"{"Cmd": ["/app"], "Env": ["B=2"], "Labels": {"x": "y"}, "Hostname": "ignored"}"#,
    )
    .unwrap();
    let config = image_config(&ImageConfig::default(), &container(&[]), Some(body));
    assert_eq!(config.cmd, Some(vec!["/app".into()]));
    assert_eq!(config.env, ["B=2"]);
    assert_eq!(config.labels.unwrap()["x"], "y");
    assert_eq!(config.user.as_deref(), Some("1000"));
}
