//! Container logs in docker's `json-file` format: one JSON object per line of
//! output, `{"log":"…\n","stream":"stdout","time":"…"}`, so that tools that
//! read docker's log files read Hull's.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::warn;

/// Output without a newline is written once it reaches this size, as docker does.
const MAX_PARTIAL_LINE: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot open the log file {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the log file {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One line of output (with its newline, unless it was cut).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub stream: LogStream,
    pub time: SystemTime,
    pub line: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct JsonLine<'a> {
    log: std::borrow::Cow<'a, str>,
    stream: LogStream,
    time: String,
}

/// How far the log has been written, and whether more may come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogProgress {
    pub len: u64,
    /// A process is running and may write more.
    pub open: bool,
}

/// Appends a container's output to its log file.
pub struct LogWriter {
    file: File,
    path: PathBuf,
    partial: [Vec<u8>; 2],
    progress: watch::Sender<LogProgress>,
}

impl LogWriter {
    /// Opens `path` for appending; `progress` learns of every write.
    pub fn open(path: &Path, progress: watch::Sender<LogProgress>) -> Result<Self, LogError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| LogError::Open {
                path: path.to_owned(),
                source,
            })?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        progress.send_replace(LogProgress { len, open: true });
        Ok(Self {
            file,
            path: path.to_owned(),
            partial: [Vec::new(), Vec::new()],
            progress,
        })
    }

    /// Adds output; complete lines are written at once, a partial line
    /// waits for its end (or for `MAX_PARTIAL_LINE` bytes).
    pub fn append(&mut self, stream: LogStream, mut chunk: &[u8], now: SystemTime) {
        let mut lines = Vec::new();
        let partial = &mut self.partial[stream as usize];
        while let Some(newline) = chunk.iter().position(|&b| b == b'\n') {
            partial.extend_from_slice(&chunk[..=newline]);
            lines.push(std::mem::take(partial));
            chunk = &chunk[newline + 1..];
        }
        partial.extend_from_slice(chunk);
        if partial.len() >= MAX_PARTIAL_LINE {
            lines.push(std::mem::take(partial));
        }
        self.write(stream, lines, now);
    }

    /// Writes what is left of unfinished lines: the process's output ended.
    /// Followers keep following until [`LogWriter::close`].
    pub fn flush(&mut self, now: SystemTime) {
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let partial = std::mem::take(&mut self.partial[stream as usize]);
            if !partial.is_empty() {
                self.write(stream, vec![partial], now);
            }
        }
    }

    /// Ends the followers of the log written through `progress`: the
    /// process's exit is recorded, so a follower that returns sees it.
    pub fn close(progress: &watch::Sender<LogProgress>) {
        progress.send_modify(|p| p.open = false);
    }

    fn write(&mut self, stream: LogStream, lines: Vec<Vec<u8>>, now: SystemTime) {
        if lines.is_empty() {
            return;
        }
        let time = humantime::format_rfc3339_nanos(now).to_string();
        let mut out = Vec::new();
        for line in &lines {
            let entry = JsonLine {
                log: String::from_utf8_lossy(line),
                stream,
                time: time.clone(),
            };
            serde_json::to_writer(&mut out, &entry).expect("log lines serialize");
            out.push(b'\n');
        }
        // One write per batch keeps every line whole for concurrent readers.
        match self.file.write_all(&out) {
            Ok(()) => self.progress.send_modify(|p| p.len += out.len() as u64),
            Err(err) => {
                warn!(path = %self.path.display(), error = %err, "cannot write the container log")
            }
        }
    }
}

/// Which entries a reader wants.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub stdout: bool,
    pub stderr: bool,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    /// Only the last N entries of what is already written.
    pub tail: Option<usize>,
}

impl LogFilter {
    fn accepts(&self, entry: &LogEntry) -> bool {
        let stream = match entry.stream {
            LogStream::Stdout => self.stdout,
            LogStream::Stderr => self.stderr,
        };
        stream
            && self.since.is_none_or(|since| entry.time > since)
            && self.until.is_none_or(|until| entry.time <= until)
    }
}

/// Reads whole lines of `path` from `offset`; returns the entries and the
/// offset after the last whole line.
fn read_from(path: &Path, offset: u64) -> Result<(Vec<LogEntry>, u64), LogError> {
    let read_error = |source| LogError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(err) => return Err(read_error(err)),
    };
    file.seek(SeekFrom::Start(offset)).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(read_error)?;
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let entries = bytes[..whole]
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(parse_line)
        .collect();
    Ok((entries, offset + whole as u64))
}

fn parse_line(line: &[u8]) -> Option<LogEntry> {
    let parsed: JsonLine = serde_json::from_slice(line).ok()?;
    Some(LogEntry {
        stream: parsed.stream,
        time: humantime::parse_rfc3339(&parsed.time).ok()?,
        line: parsed.log.into_owned().into_bytes(),
    })
}

/// The entries written so far that `filter` accepts.
pub fn read(path: &Path, filter: &LogFilter) -> Result<Vec<LogEntry>, LogError> {
    let (entries, _) = read_from(path, 0)?;
    Ok(select(entries, filter))
}

fn select(entries: Vec<LogEntry>, filter: &LogFilter) -> Vec<LogEntry> {
    let mut entries: Vec<LogEntry> = entries.into_iter().filter(|e| filter.accepts(e)).collect();
    if let Some(tail) = filter.tail {
        entries.drain(..entries.len().saturating_sub(tail));
    }
    entries
}

/// Sends the accepted entries, then keeps sending new ones as they are
/// written until no process may write more (or the receiver goes away).
pub fn follow(
    path: PathBuf,
    filter: LogFilter,
    mut progress: watch::Receiver<LogProgress>,
) -> mpsc::Receiver<Result<LogEntry, LogError>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut offset = 0;
        let mut first = true;
        loop {
            let now = *progress.borrow_and_update();
            let read = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || read_from(&path, offset))
                    .await
                    .expect("log reads do not panic")
            };
            let entries = match read {
                Ok((entries, next)) => {
                    offset = next;
                    entries
                }
                Err(err) => {
                    let _ = tx.send(Err(err)).await;
                    return;
                }
            };
            let entries = if first {
                select(entries, &filter)
            } else {
                entries.into_iter().filter(|e| filter.accepts(e)).collect()
            };
            first = false;
            for entry in entries {
                if tx.send(Ok(entry)).await.is_err() {
                    return;
                }
            }
            let past_until = filter.until.is_some_and(|until| SystemTime::now() > until);
            if (!now.open && offset >= now.len) || past_until {
                return;
            }
            if progress.changed().await.is_err() && offset >= progress.borrow().len {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn output_is_split_into_lines_like_docker() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let (progress, _) = watch::channel(LogProgress::default());
        let mut writer = LogWriter::open(&path, progress).unwrap();
        writer.append(LogStream::Stdout, b"one\ntw", at(1));
        writer.append(LogStream::Stderr, b"err\n", at(2));
        writer.append(LogStream::Stdout, b"o\nthree", at(3));
        writer.flush(at(4));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(r#"{"log":"one\n","stream":"stdout","time":"2023-11-14T22:13:21"#),
            "{text}"
        );
        let entries = read(&path, &all()).unwrap();
        assert_eq!(lines(&entries), ["one\n", "err\n", "two\n", "three"]);
        assert_eq!(entries[1].stream, LogStream::Stderr);
        assert_eq!(entries[2].time, at(3));
    }

    #[test]
    fn filters_pick_streams_times_and_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let (progress, _) = watch::channel(LogProgress::default());
        let mut writer = LogWriter::open(&path, progress).unwrap();
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
            lines(&read(&path, &stdout_tail).unwrap()),
            ["out 3\n", "out 4\n"]
        );
        let window = LogFilter {
            since: Some(at(2)),
            until: Some(at(3)),
            ..all()
        };
        assert_eq!(
            lines(&read(&path, &window).unwrap()),
            ["out 3\n", "err 3\n"]
        );
    }

    #[test]
    fn long_lines_are_cut_and_bad_lines_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let (progress, _) = watch::channel(LogProgress::default());
        let mut writer = LogWriter::open(&path, progress).unwrap();
        writer.append(LogStream::Stdout, &vec![b'x'; MAX_PARTIAL_LINE + 1], at(0));
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"not json\n")
            .unwrap();
        let entries = read(&path, &all()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].line.len(), MAX_PARTIAL_LINE + 1);
    }

    #[tokio::test]
    async fn followers_see_new_lines_and_end_with_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let (progress, watcher) = watch::channel(LogProgress::default());
        let mut writer = LogWriter::open(&path, progress).unwrap();
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
}
