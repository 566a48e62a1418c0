use super::*;
use std::time::Duration;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn all() -> LogFilter {
    LogFilter {
        stdout: true,
        stderr: true,
        ..Default::default()
    }
}

fn lines(entries: &[LogEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.line).into_owned())
        .collect()
}

fn read_all(path: &Path, filter: &LogFilter) -> Vec<LogEntry> {
    let mut entries = Vec::new();
    read(path, filter, &mut |entry| {
        entries.push(entry);
        true
    })
    .unwrap();
    entries
}

fn writer(path: &Path, config: LogConfig) -> LogWriter {
    let (progress, _) = watch::channel(LogProgress::default());
    LogWriter::open(path, config, progress).unwrap()
}

fn small(max_size: u64, max_files: u32) -> LogConfig {
    LogConfig {
        max_size,
        max_files,
        disabled: false,
    }
}

#[test]
fn the_none_driver_keeps_nothing_and_others_are_refused_in_dockers_words() {
    let none = LogConfig::from_docker("none", &BTreeMap::new()).unwrap();
    assert!(none.disabled);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c-json.log");
    let mut writer =
        LogWriter::open(&path, none, watch::channel(LogProgress::default()).0).unwrap();
    writer.append(LogStream::Stdout, b"hello\n", SystemTime::now());
    drop(writer);
    assert_eq!(std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0), 0);
    assert!(matches!(
        LogConfig::from_docker("syslog", &BTreeMap::new()),
        Err(LogError::Driver(_))
    ));
}

#[test]
fn output_is_split_into_lines_like_docker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c-json.log");
    let mut writer = writer(&path, LogConfig::default());
    writer.append(LogStream::Stdout, b"one\ntw", at(1));
    writer.append(LogStream::Stderr, b"err\n", at(2));
    writer.append(LogStream::Stdout, b"o\nthree", at(3));
    writer.flush(at(4));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with(r#"{"log":"one\n","stream":"stdout","time":"2023-11-14T22:13:21"#),
        "{text}"
    );
    let entries = read_all(&path, &all());
    assert_eq!(lines(&entries), ["one\n", "err\n", "two\n", "three"]);
    assert_eq!(entries[1].stream, LogStream::Stderr);
    assert_eq!(entries[2].time, at(3));
}

#[test]
fn filters_pick_streams_times_and_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c-json.log");
    let mut writer = writer(&path, LogConfig::default());
    for i in 0..5u64 {
        writer.append(LogStream::Stdout, format!("out {i}\n").as_bytes(), at(i));
        writer.append(LogStream::Stderr, format!("err {i}\n").as_bytes(), at(i));
    }
    let stdout_tail = LogFilter {
        stdout: true,
        tail: Some(2),
        ..Default::default()
    };
    assert_eq!(
        lines(&read_all(&path, &stdout_tail)),
        ["out 3\n", "out 4\n"]
    );
    let window = LogFilter {
        since: Some(at(2)),
        until: Some(at(3)),
        ..all()
    };
    assert_eq!(lines(&read_all(&path, &window)), ["out 3\n", "err 3\n"]);
    let none = LogFilter {
        tail: Some(0),
        ..all()
    };
    assert!(read_all(&path, &none).is_empty());
    let more_than_all = LogFilter {
        tail: Some(100),
        ..all()
    };
    assert_eq!(read_all(&path, &more_than_all).len(), 10);
}

#[test]
fn long_lines_are_cut_and_bad_lines_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c-json.log");
    let mut writer = writer(&path, LogConfig::default());
    writer.append(LogStream::Stdout, &vec![b'x'; MAX_PARTIAL_LINE + 1], at(0));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"not json\n")
        .unwrap();
    let entries = read_all(&path, &all());
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].line.len(), MAX_PARTIAL_LINE + 1);
}

#[test]
fn the_log_rotates_within_its_size_and_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c-json.log");
    let mut writer = writer(&path, small(1000, 3));
    for i in 0..200u64 {
        writer.append(
            LogStream::Stdout,
            format!("line {i:04}\n").as_bytes(),
            at(i),
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["c-json.log", "c-json.log.1", "c-json.log.2"]);
    for name in &names {
        let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
        assert!(len <= 1000, "{name} holds {len} bytes");
    }
    // What remains is the newest lines, whole and in order.
    let kept = lines(&read_all(&path, &all()));
    assert!(kept.len() > 20, "{kept:?}");
    let expected: Vec<String> = (200 - kept.len()..200)
        .map(|i| format!("line {i:04}\n"))
        .collect();
    assert_eq!(kept, expected);
    // The tail reaches back across files.
    let tail = LogFilter {
        tail: Some(kept.len() - 1),
        ..all()
    };
    assert_eq!(lines(&read_all(&path, &tail)), expected[1..]);
}

#[test]
fn one_file_logs_start_again_when_full() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c-json.log");
    let mut writer = writer(&path, small(300, 1));
    for i in 0..20u64 {
        writer.append(
            LogStream::Stdout,
            format!("line {i:04}\n").as_bytes(),
            at(i),
        );
    }
    assert!(std::fs::metadata(&path).unwrap().len() <= 300);
    assert!(!files::numbered(&path, 1).exists());
    let kept = lines(&read_all(&path, &all()));
    assert_eq!(kept.last().unwrap(), "line 0019\n");
}

#[test]
fn docker_log_options_are_read_or_refused() {
    let options = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(
        LogConfig::from_docker("", &options(&[])).unwrap(),
        LogConfig::default()
    );
    assert_eq!(
        LogConfig::from_docker(
            "json-file",
            &options(&[("max-size", "10m"), ("max-file", "3")])
        )
        .unwrap(),
        small(10 << 20, 3)
    );
    assert_eq!(
        LogConfig::from_docker(
            "local",
            &options(&[("max-size", "512KiB"), ("compress", "false")])
        )
        .unwrap(),
        small(512 << 10, DEFAULT_MAX_FILES)
    );
    assert_eq!(parse_size("2048").unwrap(), 2048);
    assert_eq!(parse_size("1G").unwrap(), 1 << 30);
    let err = LogConfig::from_docker("syslog", &options(&[])).unwrap_err();
    assert!(err.to_string().contains("json-file"), "{err}");
    let err = LogConfig::from_docker("", &options(&[("max-size", "lots")])).unwrap_err();
    assert!(err.to_string().contains("max-size=\"lots\""), "{err}");
    let err = LogConfig::from_docker("", &options(&[("max-file", "0")])).unwrap_err();
    assert!(err.to_string().contains("max-file"), "{err}");
    let err = LogConfig::from_docker("", &options(&[("syslog-address", "x")])).unwrap_err();
    assert!(matches!(err, LogError::UnknownOption(_)), "{err}");
}

#[tokio::test]
async fn followers_see_new_lines_and_end_with_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c-json.log");
    let (progress, watcher) = watch::channel(LogProgress::default());
    let mut writer = LogWriter::open(&path, LogConfig::default(), progress).unwrap();
    writer.append(LogStream::Stdout, b"before\n", at(0));
    let mut followed = follow(path.clone(), all(), watcher);
    let first = followed.recv().await.unwrap().unwrap();
    assert_eq!(first.line, b"before\n");
    writer.append(LogStream::Stdout, b"after\n", at(1));
    let second = followed.recv().await.unwrap().unwrap();
    assert_eq!(second.line, b"after\n");
    writer.flush(at(2));
    LogWriter::close(&writer.progress);
    assert!(followed.recv().await.is_none());
}

#[tokio::test]
async fn followers_lose_nothing_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c-json.log");
    let (progress, watcher) = watch::channel(LogProgress::default());
    // Ten files of about ten lines: the follower reads as they rotate.
    let mut writer = LogWriter::open(&path, small(1000, 10), progress).unwrap();
    let tail = LogFilter {
        tail: Some(1),
        ..all()
    };
    writer.append(LogStream::Stdout, b"older\n", at(0));
    writer.append(LogStream::Stdout, b"before\n", at(0));
    let mut followed = follow(path.clone(), tail, watcher);
    // The follower has read what was written before it when this comes.
    let first = followed.recv().await.unwrap().unwrap();
    assert_eq!(first.line, b"before\n");
    let mut seen = Vec::new();
    for i in 0..60u64 {
        writer.append(
            LogStream::Stdout,
            format!("line {i:04}\n").as_bytes(),
            at(i),
        );
        if i % 7 == 0 {
            // Let the follower run now and then, as it would.
            seen.push(followed.recv().await.unwrap().unwrap());
        }
    }
    LogWriter::close(&writer.progress);
    while let Some(entry) = followed.recv().await {
        seen.push(entry.unwrap());
    }
    let expected: Vec<String> = (0..60).map(|i| format!("line {i:04}\n")).collect();
    assert_eq!(lines(&seen), expected);
}

#[test]
fn a_follower_finds_the_next_file_in_a_rotation_half_done() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c-json.log");
    // One line per file: .2 holds a, .1 holds b, the current file c.
    let mut writer = writer(&path, small(1, 10));
    for line in ["a\n", "b\n", "c\n"] {
        writer.append(LogStream::Stdout, line.as_bytes(), at(0));
    }
    let held = File::open(files::numbered(&path, 2)).unwrap();
    let mut position = Position {
        offset: held.metadata().unwrap().len(),
        file: Some(files::LogFile {
            id: files::file_id(&held).unwrap(),
            file: held,
        }),
    };
    // The next rotation has moved .2 and .1 up, not yet the current file.
    std::fs::rename(files::numbered(&path, 2), files::numbered(&path, 3)).unwrap();
    std::fs::rename(files::numbered(&path, 1), files::numbered(&path, 2)).unwrap();
    let mut seen = Vec::new();
    let wanted = catch_up(&path, &mut position, &all(), &mut |entry| {
        seen.push(entry);
        true
    })
    .unwrap();
    assert!(wanted);
    assert_eq!(lines(&seen), ["b\n", "c\n"]);
}
