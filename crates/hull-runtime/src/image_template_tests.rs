use super::*;

fn base(dir: &Path) -> TemplateConfig {
    TemplateConfig {
        dir: dir.to_owned(),
        key: "k".into(),
        share_tag: None,
    }
}

fn prime(rootfs: &Path, program: &str) -> Prime {
    Prime {
        rootfs: rootfs.to_owned(),
        read: vec![program.into()],
        path: "/bin".into(),
    }
}

const S1: VmSize = VmSize {
    vcpus: 1,
    memory_mib: 64,
};

#[test]
fn each_size_and_image_has_a_template_of_its_own_keyed_by_what_is_primed() {
    let root = tempfile::tempdir().unwrap();
    let base = base(root.path());
    let a = base.for_image(S1, &prime(Path::new("/s/a.erofs"), "sh"));
    let a_again = base.for_image(S1, &prime(Path::new("/s/a.erofs"), "sh"));
    let a_other_program = base.for_image(S1, &prime(Path::new("/s/a.erofs"), "app"));
    let b = base.for_image(S1, &prime(Path::new("/s/b.erofs"), "sh"));
    let a_bigger = base.for_image(
        VmSize {
            vcpus: 1,
            memory_mib: 128,
        },
        &prime(Path::new("/s/a.erofs"), "sh"),
    );
    assert_eq!((a.dir.clone(), a.key.clone()), (a_again.dir, a_again.key));
    assert!(a.dir.starts_with(root.path().join(IMAGES_DIR)));
    assert_eq!(a.dir, a_other_program.dir);
    assert_ne!(a.key, a_other_program.key);
    assert_ne!(a.dir, b.dir);
    assert_ne!(a.dir, a_bigger.dir);
}

#[test]
fn frequent_images_are_built_within_the_budget_and_pinned_ones_are_kept() {
    let root = tempfile::tempdir().unwrap();
    let rootfs: Vec<PathBuf> = (0..3)
        .map(|i| {
            let path = root.path().join(format!("{i}.erofs"));
            fs::write(&path, b"erofs").unwrap();
            path
        })
        .collect();
    // Room for two S1 templates.
    let templates = ImageTemplates::new(base(&root.path().join("t")), 150);
    let first = prime(&rootfs[0], "sh");
    for _ in 1..AUTO_AFTER {
        assert!(matches!(templates.lookup(S1, &first), Lookup::None));
    }
    assert!(matches!(templates.lookup(S1, &first), Lookup::Build(_)));
    // Registered once: the next start does not build it again.
    assert!(matches!(templates.lookup(S1, &first), Lookup::None));
    templates
        .reserve(S1, &prime(&rootfs[1], "sh"), true)
        .unwrap();
    // The third evicts the unpinned one; a fourth finds only pinned ones.
    templates
        .reserve(S1, &prime(&rootfs[2], "sh"), true)
        .unwrap();
    let images: Vec<String> = templates.list().into_iter().map(|t| t.image_id).collect();
    assert_eq!(images, ["1", "2"]);
    let err = templates.reserve(S1, &first, true).unwrap_err().to_string();
    assert!(err.contains("128 of the 150 MiB"), "{err}");
    // An image removed takes its template along.
    fs::remove_file(&rootfs[1]).unwrap();
    let images: Vec<String> = templates.list().into_iter().map(|t| t.image_id).collect();
    assert_eq!(images, ["2"]);
    assert!(templates.reserve(S1, &first, true).is_ok());
}

#[test]
fn a_template_that_cannot_fit_evicts_nothing_and_a_remade_rootfs_is_not_its_image() {
    let root = tempfile::tempdir().unwrap();
    let small = root.path().join("small.erofs");
    let big = root.path().join("big.erofs");
    fs::write(&small, b"erofs").unwrap();
    fs::write(&big, b"erofs").unwrap();
    let templates = ImageTemplates::new(base(&root.path().join("t")), 100);
    templates.reserve(S1, &prime(&small, "sh"), false).unwrap();
    let large = VmSize {
        vcpus: 1,
        memory_mib: 512,
    };
    let err = templates
        .reserve(large, &prime(&big, "sh"), false)
        .unwrap_err();
    assert!(matches!(err, ImageTemplateError::Full { .. }), "{err}");
    assert_eq!(templates.list().len(), 1, "the small one stays");
    // The image is removed and made again: same name, another file.
    fs::remove_file(&small).unwrap();
    fs::write(&small, b"another erofs").unwrap();
    assert!(templates.list().is_empty());
}
