use super::*;

fn applied(base: ImageConfig, changes: &[&str]) -> Result<ImageConfig, ChangeError> {
    let mut config = base;
    let changes: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
    apply(&mut config, &changes)?;
    Ok(config)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn cmd_and_entrypoint_take_the_exec_and_the_shell_form() {
    let config = applied(
        ImageConfig::default(),
        &[r#"CMD ["/bin/echo", "hi there"]"#, "entrypoint env"],
    )
    .unwrap();
    assert_eq!(config.entrypoint, Some(strings(&["/bin/sh", "-c", "env"])));
    // A CMD of the same changes survives the ENTRYPOINT after it.
    assert_eq!(config.cmd, Some(strings(&["/bin/echo", "hi there"])));
    let base = ImageConfig {
        cmd: Some(strings(&["sh"])),
        ..Default::default()
    };
    let config = applied(base, &[r#"ENTRYPOINT ["top"]"#]).unwrap();
    assert_eq!(
        config.cmd, None,
        "an inherited CMD goes with a new ENTRYPOINT"
    );
    let config = applied(ImageConfig::default(), &["CMD []"]).unwrap();
    assert_eq!(config.cmd, Some(vec![]));
}

#[test]
fn env_and_label_take_pairs_with_quotes_and_the_legacy_form() {
    let base = ImageConfig {
        env: strings(&["PATH=/bin", "A=old"]),
        ..Default::default()
    };
    let config = applied(
        base,
        &[
            r#"ENV A=1 B="two words" C='it''s' D=a\ b"#,
            "ENV LEGACY value with spaces",
            r#"LABEL "com.example.x"="y z" plain=1"#,
        ],
    )
    .unwrap();
    assert_eq!(
        config.env,
        strings(&[
            "PATH=/bin",
            "A=1",
            "B=two words",
            "C=its",
            "D=a b",
            "LEGACY=value with spaces"
        ])
    );
    let labels = config.labels.unwrap();
    assert_eq!(labels["com.example.x"], "y z");
    assert_eq!(labels["plain"], "1");
}

#[test]
fn expose_user_workdir_volume_and_stopsignal_apply() {
    let base = ImageConfig {
        working_dir: Some("/srv".into()),
        ..Default::default()
    };
    let config = applied(
        base,
        &[
            "EXPOSE 80 53/udp 8000-8002",
            "USER 1000:1000",
            "WORKDIR app/../data",
            "VOLUME /cache /logs",
            r#"VOLUME ["/json"]"#,
            "STOPSIGNAL SIGQUIT\nWORKDIR /abs",
        ],
    )
    .unwrap();
    let ports: Vec<&String> = config.exposed_ports.as_ref().unwrap().keys().collect();
    assert_eq!(
        ports,
        ["53/udp", "80/tcp", "8000/tcp", "8001/tcp", "8002/tcp"]
    );
    assert_eq!(config.user.as_deref(), Some("1000:1000"));
    assert_eq!(config.working_dir.as_deref(), Some("/abs"));
    let volumes: Vec<&String> = config.volumes.as_ref().unwrap().keys().collect();
    assert_eq!(volumes, ["/cache", "/json", "/logs"]);
    assert_eq!(config.stop_signal.as_deref(), Some("SIGQUIT"));
    let relative = applied(
        ImageConfig {
            working_dir: Some("/srv".into()),
            ..Default::default()
        },
        &["WORKDIR app/../data"],
    )
    .unwrap();
    assert_eq!(relative.working_dir.as_deref(), Some("/srv/data"));
}

#[test]
fn instructions_that_do_not_apply_or_are_malformed_are_refused() {
    let refused = |change: &str| applied(ImageConfig::default(), &[change]).unwrap_err();
    assert_eq!(refused("RUN rm -rf /"), ChangeError::Unknown("RUN".into()));
    assert_eq!(refused("FROM scratch"), ChangeError::Unknown("FROM".into()));
    for bad in [
        "ENV",
        "ENV A",
        "ENV =x",
        r#"ENV A="open"#,
        "EXPOSE 0",
        "EXPOSE 70000",
        "EXPOSE 80/icmp",
        "EXPOSE 9-1",
        "EXPOSE 1-65535",
        "USER a b",
        "VOLUME relative",
        "WORKDIR",
        "CMD",
    ] {
        assert!(
            applied(ImageConfig::default(), &[bad]).is_err(),
            "{bad} was taken"
        );
    }
    let many: Vec<String> = (0..=MAX_CHANGES).map(|i| format!("ENV A{i}=1")).collect();
    let mut config = ImageConfig::default();
    assert_eq!(apply(&mut config, &many), Err(ChangeError::TooMany));
    assert_eq!(
        apply(
            &mut config,
            &[format!("ENV A={}", "x".repeat(MAX_CHANGE_BYTES))]
        ),
        Err(ChangeError::TooMany)
    );
}

proptest::proptest! {
    #[test]
    fn any_change_is_applied_or_refused_never_a_panic(change in "\\PC{0,80}") {
        let mut config = ImageConfig::default();
        let _ = apply(&mut config, &[change]);
    }

    #[test]
    fn any_argument_of_each_instruction_is_applied_or_refused(
        keyword in "(CMD|ENTRYPOINT|ENV|LABEL|EXPOSE|USER|WORKDIR|VOLUME|STOPSIGNAL)",
        rest in "[ -~]{0,60}",
    ) {
        let mut config = ImageConfig::default();
        let _ = apply(&mut config, &[format!("{keyword} {rest}")]);
    }
}
