//! Reading a container's log files in streams: forward line by line, and
//! for `--tail` backwards in blocks from the end until enough lines are
//! found. Nothing holds more than a block and one line, however large the
//! files; a line longer than `MAX_LINE` (no writer of Hull's makes one) is
//! skipped.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::files::LogFile;
use super::{parse_line, LogEntry, LogFilter};

/// Bytes read at a time.
const BLOCK: usize = 64 * 1024;
/// The longest line kept: the writer cuts output at 16 KiB, which JSON
/// escaping may grow sixfold.
pub(super) const MAX_LINE: usize = 1 << 20;

/// What a sink says after each entry: whether it wants more.
pub(super) type Sink<'a> = &'a mut dyn FnMut(LogEntry) -> bool;

/// Calls `each` with every whole line of `file` from `offset` on (without
/// its newline), until it returns false. Returns the offset after the last
/// whole line, and whether `each` wanted them all.
pub(super) fn forward_lines(
    file: &File,
    mut offset: u64,
    each: &mut dyn FnMut(&[u8]) -> bool,
) -> std::io::Result<(u64, bool)> {
    let mut block = vec![0u8; BLOCK];
    let mut line: Vec<u8> = Vec::new();
    // Bytes of the current line so far, kept or not.
    let mut line_len: u64 = 0;
    // Within a line too long to keep, until its end.
    let mut skipping = false;
    let mut position = offset;
    loop {
        let read = file.read_at(&mut block, position)?;
        if read == 0 {
            return Ok((offset, true));
        }
        position += read as u64;
        let mut rest = &block[..read];
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            let keep = !skipping && line.len() + newline <= MAX_LINE;
            if keep {
                line.extend_from_slice(&rest[..newline]);
            }
            offset += line_len + newline as u64 + 1;
            line_len = 0;
            rest = &rest[newline + 1..];
            let wanted = !keep || each(&line);
            line.clear();
            skipping = false;
            if !wanted {
                return Ok((offset, false));
            }
        }
        line_len += rest.len() as u64;
        if !skipping {
            if line.len() + rest.len() > MAX_LINE {
                skipping = true;
                line.clear();
            } else {
                line.extend_from_slice(rest);
            }
        }
    }
}

/// Where the last `count` entries that `filter` accepts begin: the index
/// of their file in `files` and the offset in it. Reads backwards.
pub(super) fn tail_start(
    files: &[LogFile],
    filter: &LogFilter,
    count: usize,
) -> std::io::Result<(usize, u64)> {
    if count == 0 {
        let last = files.len().saturating_sub(1);
        let end = files
            .get(last)
            .map_or(Ok(0), |f| f.file.metadata().map(|m| m.len()))?;
        return Ok((last, end));
    }
    let mut found = 0;
    for (index, log) in files.iter().enumerate().rev() {
        let mut accepted_at = None;
        backward_lines(&log.file, &mut |line, start| {
            if parse_line(line).is_some_and(|entry| filter.accepts(&entry)) {
                found += 1;
                if found == count {
                    accepted_at = Some(start);
                    return false;
                }
            }
            true
        })?;
        if let Some(start) = accepted_at {
            return Ok((index, start));
        }
    }
    Ok((0, 0))
}

/// Calls `each` with every whole line of `file` and its offset, last
/// first, until it returns false. A last line without its newline is
/// still being written and is left out.
fn backward_lines(file: &File, each: &mut dyn FnMut(&[u8], u64) -> bool) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    let mut block = vec![0u8; BLOCK];
    // The bytes after `position` whose line's start is not yet found.
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_too_long = false;
    // Until the first newline from the end, bytes belong to a partial line.
    let mut seen_newline = false;
    let mut position = len;
    while position > 0 {
        let size = BLOCK.min(position as usize);
        position -= size as u64;
        file.read_exact_at(&mut block[..size], position)?;
        let mut end = size;
        while let Some(newline) = block[..end].iter().rposition(|&b| b == b'\n') {
            if seen_newline {
                let start = position + newline as u64 + 1;
                let too_long = pending_too_long || pending.len() + (end - newline - 1) > MAX_LINE;
                if !too_long {
                    let mut line = block[newline + 1..end].to_vec();
                    line.extend_from_slice(&pending);
                    if !each(&line, start) {
                        return Ok(());
                    }
                }
            }
            seen_newline = true;
            pending.clear();
            pending_too_long = false;
            end = newline;
        }
        if seen_newline && !pending_too_long {
            if pending.len() + end > MAX_LINE {
                pending_too_long = true;
                pending.clear();
            } else {
                let mut joined = block[..end].to_vec();
                joined.extend_from_slice(&pending);
                pending = joined;
            }
        }
    }
    if seen_newline && !pending_too_long && !pending.is_empty() {
        each(&pending, 0);
    }
    Ok(())
}

/// Sends the entries `filter` accepts from `files`, starting at `from`
/// (a file's index and an offset in it), to `sink`. Returns the last file
/// and the offset after its last whole line, and whether `sink` wanted all.
pub(super) fn send_from(
    files: Vec<LogFile>,
    from: (usize, u64),
    filter: &LogFilter,
    sink: Sink<'_>,
) -> std::io::Result<(Option<LogFile>, u64, bool)> {
    let mut last = None;
    let mut end = 0;
    for (index, log) in files.into_iter().enumerate().skip(from.0) {
        let offset = if index == from.0 { from.1 } else { 0 };
        let (next, wanted) = send_lines(&log.file, offset, filter, sink)?;
        end = next;
        last = Some(log);
        if !wanted {
            return Ok((last, end, false));
        }
    }
    Ok((last, end, true))
}

/// Sends the accepted entries of one file from `offset`.
pub(super) fn send_lines(
    file: &File,
    offset: u64,
    filter: &LogFilter,
    sink: Sink<'_>,
) -> std::io::Result<(u64, bool)> {
    forward_lines(file, offset, &mut |line| match parse_line(line) {
        Some(entry) if filter.accepts(&entry) => sink(entry),
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_of(text: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut temp = tempfile::NamedTempFile::new().unwrap();
        temp.write_all(text).unwrap();
        let file = File::open(temp.path()).unwrap();
        (temp, file)
    }

    fn forward(text: &[u8], offset: u64) -> (Vec<String>, u64) {
        let (_temp, file) = file_of(text);
        let mut lines = Vec::new();
        let (end, _) = forward_lines(&file, offset, &mut |l| {
            lines.push(String::from_utf8_lossy(l).into_owned());
            true
        })
        .unwrap();
        (lines, end)
    }

    fn backward(text: &[u8]) -> Vec<(String, u64)> {
        let (_temp, file) = file_of(text);
        let mut lines = Vec::new();
        backward_lines(&file, &mut |l, start| {
            lines.push((String::from_utf8_lossy(l).into_owned(), start));
            true
        })
        .unwrap();
        lines
    }

    #[test]
    fn forward_reads_whole_lines_and_stops_before_a_partial_one() {
        let (lines, end) = forward(b"one\ntwo\nthr", 0);
        assert_eq!(lines, ["one", "two"]);
        assert_eq!(end, 8);
        let (lines, end) = forward(b"one\ntwo\nthr", 4);
        assert_eq!(lines, ["two"]);
        assert_eq!(end, 8);
    }

    #[test]
    fn lines_across_blocks_are_joined_both_ways() {
        let long = "x".repeat(BLOCK + 10);
        let text = format!("a\n{long}\nb\n");
        let (lines, end) = forward(text.as_bytes(), 0);
        assert_eq!(lines, ["a", long.as_str(), "b"]);
        assert_eq!(end, text.len() as u64);
        let back = backward(text.as_bytes());
        assert_eq!(
            back,
            [
                ("b".to_owned(), (text.len() - 2) as u64),
                (long.clone(), 2),
                ("a".to_owned(), 0)
            ]
        );
    }

    #[test]
    fn backward_leaves_out_a_partial_last_line() {
        assert_eq!(
            backward(b"one\ntwo\nthr"),
            [("two".to_owned(), 4), ("one".to_owned(), 0)]
        );
        assert!(backward(b"").is_empty());
    }

    #[test]
    fn lines_past_the_limit_are_skipped_both_ways() {
        let huge = "y".repeat(MAX_LINE + 1);
        let text = format!("a\n{huge}\nb\n");
        let (lines, end) = forward(text.as_bytes(), 0);
        let lengths: Vec<usize> = lines.iter().map(String::len).collect();
        assert_eq!(lengths, [1, 1]);
        assert_eq!(end, text.len() as u64);
        let back: Vec<usize> = backward(text.as_bytes())
            .iter()
            .map(|(l, _)| l.len())
            .collect();
        assert_eq!(back, [1, 1]);
    }
}
