use super::*;

fn parse(spec: &str) -> Result<VolumeMount, VolumeError> {
    parse_bind(spec, || "anon".into())
}

#[test]
fn volume_specs_parse_as_docker_reads_them() {
    let named = parse("data:/data").unwrap();
    assert_eq!(
        named.source,
        VolumeSource::Volume {
            name: "data".into()
        }
    );
    assert_eq!((named.target.as_str(), named.read_only), ("/data", false));
    let bind = parse("/srv/src:/src:ro").unwrap();
    assert_eq!(
        bind.source,
        VolumeSource::Bind {
            path: "/srv/src".into()
        }
    );
    assert!(bind.read_only);
    let anonymous = parse("/cache").unwrap();
    assert_eq!(
        anonymous.source,
        VolumeSource::Anonymous {
            name: "anon".into()
        }
    );
    assert!(parse("/cache:ro").unwrap().read_only);
    for bad in [
        "data:rel",
        "data:/",
        "./src:/src",
        "src/x:/src",
        "d:/x:rw:z",
        "x:/y:rx",
        "-a:/y",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn image_volumes_not_mounted_by_the_user_become_anonymous_volumes() {
    let mut mounts = vec![parse("data:/data").unwrap()];
    let image: Vec<String> = ["/data/", "/cache", "relative", "/logs/"]
        .map(String::from)
        .to_vec();
    let mut count = 0;
    add_image_volumes(&mut mounts, &image, || {
        count += 1;
        format!("anon{count}")
    });
    let added: Vec<(&str, &VolumeSource)> = mounts[1..]
        .iter()
        .map(|m| (m.target.as_str(), &m.source))
        .collect();
    assert_eq!(
        added,
        [
            (
                "/cache",
                &VolumeSource::Anonymous {
                    name: "anon1".into()
                }
            ),
            (
                "/logs",
                &VolumeSource::Anonymous {
                    name: "anon2".into()
                }
            )
        ]
    );
}

#[test]
fn options_take_a_kind_and_a_block_volumes_size() {
    let size = |s| parse_options([("size", s)]).unwrap().size;
    assert_eq!(size("1g"), Some(1 << 30));
    assert_eq!(size("64m"), Some(64 << 20));
    assert_eq!(parse_options([]).unwrap(), VolumeOptions::default());
    assert_eq!(
        parse_options([("size", "1g")]).unwrap().kind,
        Some(VolumeKind::Block)
    );
    assert_eq!(
        parse_options([("type", "dir")]).unwrap().kind,
        Some(VolumeKind::Dir)
    );
    assert!(parse_options([("size", "1k")]).is_err());
    assert!(parse_options([("type", "nfs")]).is_err());
    assert!(parse_options([("type", "dir"), ("size", "1g")]).is_err());
    assert!(parse_options([("device", "/dev/sda")]).is_err());
}

#[test]
fn volumes_are_created_once_listed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let volumes = Volumes::open(dir.path()).unwrap();
    let made = volumes
        .create("data", parse_options([("size", "32m")]).unwrap(), false)
        .unwrap();
    assert_eq!(made.record.size, 32 << 20);
    assert_eq!(made.kind(), VolumeKind::Block);
    assert!(made.path.is_file());
    // Creating it again returns the same volume.
    let again = volumes
        .create("data", VolumeOptions::default(), false)
        .unwrap();
    assert_eq!(again.record.created, made.record.created);
    assert_eq!(volumes.list().len(), 1);
    assert!(matches!(
        volumes.create("!bad", VolumeOptions::default(), false),
        Err(VolumeError::InvalidName(_))
    ));
    // A namespace's own `data` is another volume; a name cannot carry
    // a second namespace to reach into another's.
    volumes
        .create("data@acme", VolumeOptions::default(), false)
        .unwrap();
    assert_eq!(volumes.list().len(), 2);
    for bad in ["data@beta@acme", "data@", "@acme", "d@acme", "data@-x"] {
        assert!(
            matches!(
                volumes.create(bad, VolumeOptions::default(), false),
                Err(VolumeError::InvalidName(_))
            ),
            "{bad}"
        );
    }
    volumes.remove("data@acme").unwrap();
    volumes.remove("data").unwrap();
    assert!(matches!(volumes.get("data"), Err(VolumeError::NotFound(_))));
}

#[test]
fn the_operators_volumes_are_directories_and_a_tenants_are_disks() {
    let dir = tempfile::tempdir().unwrap();
    let volumes = Volumes::open(dir.path()).unwrap();
    let shared = volumes
        .create("shared", VolumeOptions::default(), false)
        .unwrap();
    assert_eq!(shared.kind(), VolumeKind::Dir);
    assert!(shared.path.is_dir());
    assert_eq!(shared.path.file_name().unwrap(), "_data");
    let tenant = volumes
        .create("data@acme", VolumeOptions::default(), false)
        .unwrap();
    assert_eq!(tenant.kind(), VolumeKind::Block);
    let dir_option = parse_options([("type", "dir")]).unwrap();
    assert!(matches!(
        volumes.create("other@acme", dir_option, false),
        Err(VolumeError::TenantDir(_))
    ));
    let block = volumes
        .create("fast", parse_options([("type", "block")]).unwrap(), false)
        .unwrap();
    assert_eq!(
        (block.kind(), block.record.size),
        (VolumeKind::Block, DEFAULT_VOLUME_BYTES)
    );
    // A record from before dir volumes names no kind: a block volume.
    let old = dir.path().join("old");
    fs::create_dir(&old).unwrap();
    fs::write(
        old.join(RECORD_FILE),
        r#"{"name":"old","created":{"secs_since_epoch":1,"nanos_since_epoch":0},"size":16777216}"#,
    )
    .unwrap();
    assert_eq!(volumes.get("old").unwrap().kind(), VolumeKind::Block);
    volumes.remove("shared").unwrap();
    assert!(!shared.path.exists());
}
