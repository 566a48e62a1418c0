//! Container logs in docker's `json-file` format: one JSON object per line
//! of output, `{"log":"…\n","stream":"stdout","time":"…"}`, so that tools
//! that read docker's log files read Hull's. The log rotates by size
//! (docker's `max-size` and `max-file`), with a cap when none is given,
//! and is read in streams, never whole.

mod files;
mod read;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::warn;

use files::LogFile;

/// Output without a newline is written once it reaches this size, as docker does.
const MAX_PARTIAL_LINE: usize = 16 * 1024;
/// The cap when a container is given none: docker's `local` driver's.
pub const DEFAULT_MAX_SIZE: u64 = 20 << 20;
pub const DEFAULT_MAX_FILES: u32 = 5;
/// Log options of docker's that change nothing in where the bytes go.
const IGNORED_OPTIONS: [&str; 8] = [
    "compress",
    "mode",
    "max-buffer-size",
    "labels",
    "labels-regex",
    "env",
    "env-regex",
    "tag",
];

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
    #[error("Hull logs with the json-file driver (also taken for `local`), not {0:?}: leave --log-driver out or give json-file")]
    Driver(String),
    #[error("unknown log option {0:?}: Hull's log takes max-size and max-file")]
    UnknownOption(String),
    #[error("invalid log option {key}={value:?}: {why}")]
    InvalidOption {
        key: String,
        value: String,
        why: &'static str,
    },
}

/// How much of a container's output its log keeps: files of up to
/// `max_size` bytes, `max_files` of them with the one being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    pub max_size: u64,
    pub max_files: u32,
    /// Docker's `none` driver: nothing is kept, `logs` has nothing to read
    /// (attached clients still get the output live).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_size: DEFAULT_MAX_SIZE,
            max_files: DEFAULT_MAX_FILES,
            disabled: false,
        }
    }
}

impl LogConfig {
    /// Docker's `--log-driver` and `--log-opt`s; what is not given takes
    /// Hull's cap.
    pub fn from_docker(driver: &str, options: &BTreeMap<String, String>) -> Result<Self, LogError> {
        if driver == "none" {
            return Ok(Self {
                disabled: true,
                ..Self::default()
            });
        }
        if !matches!(driver, "" | "json-file" | "local") {
            return Err(LogError::Driver(driver.to_owned()));
        }
        let mut config = Self::default();
        for (key, value) in options {
            let invalid = |why| LogError::InvalidOption {
                key: key.clone(),
                value: value.clone(),
                why,
            };
            match key.as_str() {
                "max-size" => {
                    config.max_size = parse_size(value)
                        .filter(|&size| size > 0)
                        .ok_or_else(|| invalid("give a size such as 10m, 512k or 1g"))?;
                }
                "max-file" => {
                    config.max_files = value
                        .parse()
                        .ok()
                        .filter(|&count| count > 0)
                        .ok_or_else(|| invalid("give a count of files, 1 or more"))?;
                }
                key if IGNORED_OPTIONS.contains(&key) => {}
                _ => return Err(LogError::UnknownOption(key.clone())),
            }
        }
        Ok(config)
    }

    /// The options as docker's inspect shows them.
    pub fn docker_options(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("max-size".to_owned(), self.max_size.to_string()),
            ("max-file".to_owned(), self.max_files.to_string()),
        ])
    }
}

/// A size as docker's `max-size` takes it: bytes, or with k, m, g (or
/// kb, mb, gb; any case) for binary multiples.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim().trim_end_matches('b').trim_end_matches('i') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => return None,
    };
    number.checked_mul(1 << shift)
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
    /// Bytes written through this writer; followers wake on its change.
    pub written: u64,
    /// A process is running and may write more.
    pub open: bool,
}

/// Appends a container's output to its log, rotating it by size.
pub struct LogWriter {
    file: File,
    path: PathBuf,
    /// The current file's size.
    len: u64,
    config: LogConfig,
    partial: [Vec<u8>; 2],
    progress: watch::Sender<LogProgress>,
}

impl LogWriter {
    /// Opens `path` for appending; `progress` learns of every write.
    pub fn open(
        path: &Path,
        config: LogConfig,
        progress: watch::Sender<LogProgress>,
    ) -> Result<Self, LogError> {
        let file = open_append(path)?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        progress.send_modify(|p| p.open = true);
        Ok(Self {
            file,
            path: path.to_owned(),
            len,
            config,
            partial: [Vec::new(), Vec::new()],
            progress,
        })
    }

    /// Adds output; complete lines are written at once, a partial line
    /// waits for its end (or for `MAX_PARTIAL_LINE` bytes).
    pub fn append(&mut self, stream: LogStream, mut chunk: &[u8], now: SystemTime) {
        if self.config.disabled {
            return;
        }
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
            let mut encoded = serde_json::to_vec(&entry).expect("log lines serialize");
            encoded.push(b'\n');
            // A file ends before the line that would take it past its size.
            let full = self.len + (out.len() + encoded.len()) as u64 > self.config.max_size;
            if full && self.len + out.len() as u64 > 0 {
                self.write_out(&std::mem::take(&mut out));
                self.rotate();
            }
            out.extend_from_slice(&encoded);
        }
        self.write_out(&out);
    }

    /// One write per batch keeps every line whole for readers.
    fn write_out(&mut self, out: &[u8]) {
        if out.is_empty() {
            return;
        }
        match self.file.write_all(out) {
            Ok(()) => {
                self.len += out.len() as u64;
                self.progress.send_modify(|p| p.written += out.len() as u64);
            }
            Err(err) => {
                warn!(path = %self.path.display(), error = %err, "cannot write the container log")
            }
        }
    }

    fn rotate(&mut self) {
        let reopened = files::rotate(&self.path, self.config.max_files)
            .map_err(|source| LogError::Open {
                path: self.path.clone(),
                source,
            })
            .and_then(|()| open_append(&self.path));
        match reopened {
            Ok(file) => {
                self.file = file;
                self.len = 0;
            }
            Err(err) => {
                warn!(path = %self.path.display(), error = %crate::error_chain(&err), "cannot rotate the container log")
            }
        }
    }
}

fn open_append(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| LogError::Open {
            path: path.to_owned(),
            source,
        })
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

fn parse_line(line: &[u8]) -> Option<LogEntry> {
    let parsed: JsonLine = serde_json::from_slice(line).ok()?;
    Some(LogEntry {
        stream: parsed.stream,
        time: humantime::parse_rfc3339(&parsed.time).ok()?,
        line: parsed.log.into_owned().into_bytes(),
    })
}

/// Sends the entries written so far that `filter` accepts to `sink`, oldest
/// first, until it returns false. Returns the newest file and the offset
/// after its last whole line, where a follower goes on.
fn send_written(
    path: &Path,
    filter: &LogFilter,
    sink: read::Sink<'_>,
) -> Result<(Option<LogFile>, u64, bool), LogError> {
    let read_error = |source| LogError::Read {
        path: path.to_owned(),
        source,
    };
    let files = files::open_all(path).map_err(read_error)?;
    let from = match filter.tail {
        Some(count) => read::tail_start(&files, filter, count).map_err(read_error)?,
        None => (0, 0),
    };
    read::send_from(files, from, filter, sink).map_err(read_error)
}

/// The entries written so far that `filter` accepts, to `sink` until it
/// returns false.
pub fn read(
    path: &Path,
    filter: &LogFilter,
    sink: &mut dyn FnMut(LogEntry) -> bool,
) -> Result<(), LogError> {
    send_written(path, filter, sink).map(|_| ())
}

/// How often, and how long after, a follower looks again for the file
/// after the one it read when a rotation under way hides it.
const MAX_LOOKS: u32 = 1000;
const LOOK_AGAIN: std::time::Duration = std::time::Duration::from_millis(1);

/// Where a follower is: a file it holds open and how far it has read.
struct Position {
    file: Option<LogFile>,
    offset: u64,
}

/// Sends what was written since `at`, following the files through
/// rotations, to `sink`. Returns false once `sink` wants no more.
fn catch_up(
    path: &Path,
    at: &mut Position,
    filter: &LogFilter,
    sink: read::Sink<'_>,
) -> Result<bool, LogError> {
    let read_error = |source| LogError::Read {
        path: path.to_owned(),
        source,
    };
    let mut looks = 0;
    loop {
        let Some(log) = &at.file else {
            // Nothing was written yet: the current file, once there is one.
            let mut files = files::open_all(path).map_err(read_error)?;
            if files.is_empty() {
                return Ok(true);
            }
            at.file = Some(files.remove(0));
            at.offset = 0;
            continue;
        };
        let (offset, wanted) =
            read::send_lines(&log.file, at.offset, filter, sink).map_err(read_error)?;
        at.offset = offset;
        if !wanted {
            return Ok(false);
        }
        if files::current_id(path) == Some(log.id) || files::current_id(path).is_none() {
            return Ok(true);
        }
        // Rotated away: nothing more comes to this file once its
        // successor exists, so what it holds is read to the end first.
        let (_, wanted) =
            read::send_lines(&log.file, at.offset, filter, sink).map_err(read_error)?;
        if !wanted {
            return Ok(false);
        }
        let files = files::open_all(path).map_err(read_error)?;
        let dropped = files::is_removed(&log.file).map_err(read_error)?;
        let next = match files.iter().position(|f| f.id == log.id) {
            Some(index) => files.into_iter().nth(index + 1),
            // Dropped meanwhile: the oldest file left follows it.
            None if dropped => files.into_iter().next(),
            None => None,
        };
        match next {
            Some(next) => {
                at.file = Some(next);
                at.offset = 0;
            }
            // Its successor exists but a rotation under way hid it (or
            // the file itself) from this look: look again shortly, as
            // this pass may be the last.
            None if looks < MAX_LOOKS => {
                looks += 1;
                std::thread::sleep(LOOK_AGAIN);
            }
            None => return Ok(true),
        }
    }
}

/// Sends the accepted entries, then keeps sending new ones as they are
/// written, across rotations, until no process may write more (or the
/// receiver goes away).
pub fn follow(
    path: PathBuf,
    filter: LogFilter,
    mut progress: watch::Receiver<LogProgress>,
) -> mpsc::Receiver<Result<LogEntry, LogError>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut at: Option<Position> = None;
        loop {
            let now = *progress.borrow_and_update();
            let pass = {
                let (path, filter, tx) = (path.clone(), filter.clone(), tx.clone());
                let mut position = at.take();
                tokio::task::spawn_blocking(move || {
                    let mut sink = |entry| tx.blocking_send(Ok(entry)).is_ok();
                    let wanted = match &mut position {
                        Some(position) => catch_up(&path, position, &filter, &mut sink)?,
                        None => {
                            let (file, offset, wanted) = send_written(&path, &filter, &mut sink)?;
                            position = Some(Position { file, offset });
                            wanted
                        }
                    };
                    Ok::<_, LogError>((position, wanted))
                })
                .await
                .expect("log reads do not panic")
            };
            match pass {
                Ok((position, true)) => at = position,
                Ok((_, false)) => return,
                Err(err) => {
                    let _ = tx.send(Err(err)).await;
                    return;
                }
            }
            let past_until = filter.until.is_some_and(|until| SystemTime::now() > until);
            // A closed log was read after it closed: it is whole.
            if !now.open || past_until {
                return;
            }
            if progress.changed().await.is_err() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests;
