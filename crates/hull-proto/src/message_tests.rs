use super::*;

fn round_trip<T>(value: T)
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_string(&value).unwrap();
    assert_eq!(serde_json::from_str::<T>(&json).unwrap(), value, "{json}");
}

#[test]
fn every_message_survives_json() {
    round_trip(Request::Ping);
    round_trip(Request::Shutdown);
    round_trip(Request::Reattach);
    round_trip(Request::FreezeDisk {
        serial: "hull-vol-0".into(),
    });
    round_trip(Request::ThawDisk {
        serial: "hull-vol-0".into(),
    });
    round_trip(Request::ConfigureInterface {
        slot: 2,
        interface: None,
    });
    round_trip(Request::ConfigureNetwork(NetworkSpec {
        interfaces: vec![InterfaceSpec {
            mac: "02:00:00:00:00:01".into(),
            address: "10.0.2.15/24".into(),
            gateway: Some("10.0.2.2".into()),
            mtu: Some(1450),
            routes: vec![RouteSpec {
                destination: "10.244.0.0/16".into(),
                gateway: Some("10.0.2.1".into()),
            }],
        }],
        dns: vec!["10.0.2.3".into()],
        search: Vec::new(),
        hosts: vec![("10.0.2.15".into(), vec!["web".into()])],
    }));
    round_trip(Response::Reattached(vec![
        ProcessState {
            container: "c1".into(),
            process: "init".into(),
            pid: 12,
            terminal: false,
            stdin: Some(1),
            stdout: 2,
            stderr: Some(3),
            exited: None,
        },
        ProcessState {
            container: "c1".into(),
            process: "exec-1".into(),
            pid: 30,
            terminal: true,
            stdin: None,
            stdout: 4,
            stderr: None,
            exited: Some(ExitStatus::Signal(9)),
        },
    ]));
    round_trip(Request::CreateContainer(ContainerSpec {
        id: "c1".into(),
        hostname: "c1".into(),
        rootfs: RootfsSpec {
            serial: "hull-rootfs".into(),
            fs_type: "erofs".into(),
        },
        writable: Some(RootfsSpec {
            serial: "hull-rw".into(),
            fs_type: "ext4".into(),
        }),
        mounts: vec![
            MountSpec {
                source: MountSource::SharedDir {
                    name: "cache".into(),
                },
                target: "/var/cache/app".into(),
                read_only: true,
                copy_up: false,
            },
            MountSpec {
                source: MountSource::Disk {
                    serial: "hull-vol-0".into(),
                    fs_type: "ext4".into(),
                },
                target: "/data".into(),
                read_only: false,
                copy_up: true,
            },
            MountSpec {
                source: MountSource::HostDir {
                    tag: "hull9p0".into(),
                },
                target: "/src".into(),
                read_only: true,
                copy_up: false,
            },
            MountSpec {
                source: MountSource::HostSubdir {
                    tag: "hullshim".into(),
                    path: "c1/0".into(),
                },
                target: "/etc/config".into(),
                read_only: true,
                copy_up: false,
            },
        ],
        host_etc_files: vec!["hosts".into()],
    }));
    round_trip(Request::StartProcess(ProcessSpec {
        container: "c1".into(),
        id: "init".into(),
        args: vec!["sh".into(), "-c".into(), "exit 7".into()],
        env: vec!["A=1".into()],
        cwd: "/tmp".into(),
        user: "1000:1000".into(),
        terminal: false,
        stdin: Some(1),
        stdout: 2,
        stderr: Some(3),
        rlimits: vec![Rlimit::new("RLIMIT_NOFILE", 1024, 2048)],
        groups: Vec::new(),
        terminal_size: None,
    }));
    round_trip(Request::RemoveContainer {
        container: "c1".into(),
    });
    round_trip(Request::Signal {
        container: "c1".into(),
        process: "init".into(),
        signal: 15,
    });
    round_trip(Request::SetOnlineCpus { count: 2 });
    round_trip(Request::Resume {
        unix_time_nanos: 1_795_000_000_000_000_000,
        entropy: vec![1, 2, 3],
    });
    round_trip(Request::ListProcesses {
        container: "c1".into(),
    });
    round_trip(Request::Stats {
        container: "c1".into(),
    });
    round_trip(Response::Stats(GuestStats {
        cpu_total_ns: 1_500_000_000,
        system_ns: 9_000_000_000,
        online_cpus: 2,
        memory_used_bytes: 20 << 20,
        memory_limit_bytes: 128 << 20,
        pids: 3,
        networks: Default::default(),
    }));
    round_trip(Request::StatPath {
        container: "c1".into(),
        path: "/etc/hostname".into(),
    });
    round_trip(Request::ReadArchive {
        container: "c1".into(),
        path: "/etc".into(),
        stream: 4,
    });
    round_trip(Request::ReadFilesystem {
        container: "c1".into(),
        stream: 6,
        view: FilesystemView::Changes,
    });
    round_trip(Request::WriteArchive {
        container: "c1".into(),
        path: "/tmp".into(),
        stream: 5,
    });
    round_trip(Response::PathStat(PathStat {
        name: "sh".into(),
        size: 7,
        mode: path_mode::SYMLINK | 0o777,
        mtime_unix_nanos: 1_700_000_000_123_456_789,
        link_target: "/bin/busybox".into(),
    }));
    round_trip(Response::Started { pid: 42 });
    round_trip(Response::Processes(vec![ProcessInfo {
        pid: 7,
        ppid: 1,
        uid: 0,
        state: "S".into(),
        start_ticks: 1234,
        cpu_ticks: 5,
        tty: "pts/0".into(),
        args: vec!["sh".into(), "-c".into(), "sleep 1".into()],
    }]));
    round_trip(Response::Failed(RequestError::new(
        ErrorKind::CommandNotFound,
        "exec: \"nope\": executable file not found in $PATH",
    )));
    round_trip(Event::ProcessExited {
        container: "c1".into(),
        process: "init".into(),
        status: ExitStatus::Signal(9),
    });
}

#[test]
fn a_container_spec_without_a_writable_disk_still_decodes() {
    let json = r#"{"id":"c1","hostname":"c1","rootfs":{"serial":"r","fs_type":"erofs"}}"#;
    let spec: ContainerSpec = serde_json::from_str(json).unwrap();
    assert_eq!(spec.writable, None);
}

#[test]
fn a_process_spec_without_rlimits_still_decodes() {
    let json = concat!(
        r#"{"container":"c1","id":"init","args":["sh"],"env":[],"cwd":"/","#,
        r#""user":"","terminal":false,"stdin":null,"stdout":2,"stderr":3}"#
    );
    let spec: ProcessSpec = serde_json::from_str(json).unwrap();
    assert!(spec.rlimits.is_empty());
}

#[test]
fn signals_map_to_128_plus_n() {
    assert_eq!(ExitStatus::Code(7).code(), 7);
    assert_eq!(ExitStatus::Signal(9).code(), 137);
    assert_eq!(ExitStatus::Signal(2).code(), 130);
}

#[test]
fn reattach_speaks_the_json_the_host_expects() {
    assert_eq!(
        serde_json::to_string(&Request::Reattach).unwrap(),
        r#"{"op":"reattach"}"#
    );
    let listing = Response::Reattached(vec![ProcessState {
        container: "c1".into(),
        process: "init".into(),
        pid: 7,
        terminal: false,
        stdin: None,
        stdout: 2,
        stderr: Some(3),
        exited: Some(ExitStatus::Code(0)),
    }]);
    assert_eq!(
        serde_json::to_string(&listing).unwrap(),
        concat!(
            r#"{"result":"reattached","value":[{"container":"c1","process":"init","#,
            r#""pid":7,"terminal":false,"stdin":null,"stdout":2,"stderr":3,"#,
            r#""exited":{"code":0}}]}"#
        )
    );
}

#[test]
fn unknown_ops_are_a_decode_error() {
    assert!(serde_json::from_str::<Request>(r#"{"op":"reformat_disk"}"#).is_err());
}
