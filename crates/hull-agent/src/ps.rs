//! The processes of a container as `/proc` shows them: for `docker top`,
//! and the pid count of the guest's statistics.
//!
//! A container is its PID namespace: every process the agent started in it
//! joined its init's, and so did their descendants. Functions take the proc
//! directory so tests can hand them a fake one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use hull_proto::ProcessInfo;

/// Where the guest's procfs is mounted.
pub const PROC: &str = "/proc";

#[derive(Debug, thiserror::Error)]
pub enum PsError {
    #[error("cannot list the processes in {}", .0.display())]
    List(PathBuf, #[source] io::Error),
}

/// The fields of `/proc/<pid>/stat` that `ps` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub tty_nr: u32,
    pub utime: u64,
    pub stime: u64,
    pub starttime: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses
/// and may itself hold spaces and parentheses, so the fields after it are
/// counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // Field 3 (state) is the first after the name.
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).copied();
    let number = |n: usize| field(n)?.parse::<u64>().ok();
    Some(Stat {
        comm,
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        tty_nr: field(7)?.parse::<i64>().ok()? as u32,
        utime: number(14)?,
        stime: number(15)?,
        starttime: number(22)?,
    })
}

/// The effective uid from `/proc/<pid>/status` (`Uid: real effective saved fs`).
pub fn parse_effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The name `ps` gives a `tty_nr`: `pts/N`, `ttyN`, `ttySN`, `console`, or `?`.
pub fn tty_name(tty_nr: u32) -> String {
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    match major {
        0 => "?".to_owned(),
        // Unix98 ptys: majors 136-143 each hold 256 minors.
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 if minor < 64 => format!("tty{minor}"),
        4 => format!("ttyS{}", minor - 64),
        5 if minor == 1 => "console".to_owned(),
        _ => "?".to_owned(),
    }
}

/// The arguments of `/proc/<pid>/cmdline` (NUL-separated); `[comm]` when it
/// is empty, as for kernel threads and zombies.
pub fn parse_cmdline(bytes: &[u8], comm: &str) -> Vec<String> {
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    if bytes.is_empty() {
        return vec![format!("[{comm}]")];
    }
    bytes
        .split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// The PID namespace of `pid`: the target of its `ns/pid` link, like
/// `pid:[4026532200]`, which names the namespace uniquely while it lives.
pub fn pid_namespace(proc: &Path, pid: i32) -> io::Result<PathBuf> {
    fs::read_link(proc.join(pid.to_string()).join("ns/pid"))
}

/// Every pid under `proc` in `namespace`, sorted. A process that exits
/// while the list is made is left out.
pub fn pids_in_namespace(proc: &Path, namespace: &Path) -> Result<Vec<i32>, PsError> {
    let entries = fs::read_dir(proc).map_err(|e| PsError::List(proc.to_owned(), e))?;
    let mut pids: Vec<i32> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|&pid| pid_namespace(proc, pid).is_ok_and(|ns| ns == namespace))
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// What `ps` shows of `pid`.
pub fn process_info(proc: &Path, pid: i32) -> io::Result<ProcessInfo> {
    let dir = proc.join(pid.to_string());
    let stat_text = fs::read_to_string(dir.join("stat"))?;
    let stat = parse_stat(&stat_text).ok_or_else(|| {
        let message = format!("malformed /proc/{pid}/stat: {stat_text:?}");
        io::Error::new(io::ErrorKind::InvalidData, message)
    })?;
    let uid = parse_effective_uid(&fs::read_to_string(dir.join("status"))?).unwrap_or(0);
    // A zombie's cmdline reads empty; an unreadable one is treated alike.
    let cmdline = fs::read(dir.join("cmdline")).unwrap_or_default();
    Ok(ProcessInfo {
        pid,
        ppid: stat.ppid,
        uid,
        state: stat.state.to_string(),
        start_ticks: stat.starttime,
        cpu_ticks: stat.utime + stat.stime,
        tty: tty_name(stat.tty_nr),
        args: parse_cmdline(&cmdline, &stat.comm),
    })
}

/// The processes in the PID namespace of `init`, sorted by pid; none once
/// `init` is gone (its namespace dies with it).
pub fn list(proc: &Path, init: i32) -> Result<Vec<ProcessInfo>, PsError> {
    let Ok(namespace) = pid_namespace(proc, init) else {
        return Ok(Vec::new());
    };
    let pids = pids_in_namespace(proc, &namespace)?;
    Ok(pids
        .into_iter()
        .filter_map(|pid| process_info(proc, pid).ok())
        .collect())
}

/// How many processes share the PID namespace of `init`.
pub fn count(proc: &Path, init: i32) -> Result<usize, PsError> {
    match pid_namespace(proc, init) {
        Ok(namespace) => Ok(pids_in_namespace(proc, &namespace)?.len()),
        Err(_) => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SH_STAT: &str =
        "7 (sh) S 1 7 7 34816 7 4194560 100 0 0 0 3 4 0 0 20 0 1 0 1234 1000000 100 18446744073709551615";

    /// A fake procfs: (pid, namespace, stat, cmdline) per process.
    fn fake_proc(processes: &[(i32, &str, &str, &[u8])]) -> tempfile::TempDir {
        let proc = tempfile::tempdir().unwrap();
        for (pid, namespace, stat, cmdline) in processes {
            let dir = proc.path().join(pid.to_string());
            fs::create_dir_all(dir.join("ns")).unwrap();
            std::os::unix::fs::symlink(namespace, dir.join("ns/pid")).unwrap();
            fs::write(dir.join("stat"), stat).unwrap();
            fs::write(
                dir.join("status"),
                "Name:\tsh\nUid:\t1000\t1001\t1000\t1000\n",
            )
            .unwrap();
            fs::write(dir.join("cmdline"), cmdline).unwrap();
        }
        fs::create_dir(proc.path().join("sys")).unwrap();
        proc
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = parse_stat(SH_STAT).unwrap();
        assert_eq!(stat.comm, "sh");
        assert_eq!((stat.state, stat.ppid, stat.tty_nr), ('S', 1, 34816));
        assert_eq!((stat.utime, stat.stime, stat.starttime), (3, 4, 1234));
        let odd = SH_STAT.replace("(sh)", "(a) b (c)");
        assert_eq!(parse_stat(&odd).unwrap().comm, "a) b (c");
        assert_eq!(parse_stat(&odd).unwrap().starttime, 1234);
    }

    #[test]
    fn truncated_stat_lines_do_not_parse() {
        assert_eq!(parse_stat("7 (sh) S 1 7"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn the_effective_uid_is_the_second_of_status() {
        assert_eq!(parse_effective_uid("Uid:\t0\t1001\t0\t0\n"), Some(1001));
        assert_eq!(parse_effective_uid("Name: x\n"), None);
    }

    #[test]
    fn terminals_are_named_as_ps_names_them() {
        assert_eq!(tty_name(0), "?");
        assert_eq!(tty_name(136 << 8), "pts/0");
        assert_eq!(tty_name((136 << 8) | 3), "pts/3");
        assert_eq!(tty_name(137 << 8 | 1), "pts/257");
        assert_eq!(tty_name((4 << 8) | 1), "tty1");
        assert_eq!(tty_name((4 << 8) | 64), "ttyS0");
        assert_eq!(tty_name((5 << 8) | 1), "console");
    }

    #[test]
    fn an_empty_cmdline_shows_the_name_in_brackets() {
        assert_eq!(parse_cmdline(b"sleep\x0010\x00", "sleep"), ["sleep", "10"]);
        assert_eq!(parse_cmdline(b"", "kworker"), ["[kworker]"]);
        assert_eq!(parse_cmdline(b"a\x00\x00b\x00", "a"), ["a", "", "b"]);
    }

    #[test]
    fn only_processes_of_the_inits_namespace_are_listed_by_pid() {
        let other = SH_STAT.replacen("7 ", "30 ", 1);
        let child = SH_STAT.replacen("7 (sh) S 1", "12 (sleep) S 7", 1);
        let proc = fake_proc(&[
            (30, "pid:[1]", &other, b"other\0"),
            (12, "pid:[9]", &child, b"sleep\x0010\0"),
            (7, "pid:[9]", SH_STAT, b"sh\0"),
        ]);
        let listed = list(proc.path(), 7).unwrap();
        let pids: Vec<i32> = listed.iter().map(|p| p.pid).collect();
        assert_eq!(pids, [7, 12]);
        let sleep = &listed[1];
        assert_eq!((sleep.ppid, sleep.uid), (7, 1001));
        assert_eq!((sleep.state.as_str(), sleep.tty.as_str()), ("S", "pts/0"));
        assert_eq!((sleep.start_ticks, sleep.cpu_ticks), (1234, 7));
        assert_eq!(sleep.args, ["sleep", "10"]);
        assert_eq!(count(proc.path(), 7).unwrap(), 2);
    }

    #[test]
    fn a_container_whose_init_is_gone_has_no_processes() {
        let proc = fake_proc(&[(30, "pid:[1]", SH_STAT, b"sh\0")]);
        assert!(list(proc.path(), 7).unwrap().is_empty());
        assert_eq!(count(proc.path(), 7).unwrap(), 0);
    }

    #[test]
    fn the_real_procfs_shows_this_process() {
        let me = std::process::id() as i32;
        let listed = list(Path::new(PROC), me).unwrap();
        let info = listed.iter().find(|p| p.pid == me).expect("listed");
        let args: Vec<String> = std::env::args().collect();
        assert_eq!(info.args, args);
        assert!(info.start_ticks > 0);
    }
}
