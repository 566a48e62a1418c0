//! The guest's CPU, memory and network figures, from `/proc/stat`,
//! `/proc/meminfo` and `/proc/net/dev`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use hull_proto::{InterfaceStats, USER_HZ};

/// Nanoseconds in one `USER_HZ` tick of `/proc/stat`.
const NS_PER_TICK: u64 = 1_000_000_000 / USER_HZ;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("cannot read {}", .0.display())]
    Read(PathBuf, #[source] io::Error),
    #[error("{} has no {what}", .path.display())]
    Missing { path: PathBuf, what: &'static str },
}

/// CPU times of all CPUs together, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// user + nice + system + irq + softirq + steal.
    pub busy_ns: u64,
    /// The busy times plus idle and iowait. The guest and guest_nice fields
    /// are left out: the kernel counts them in user and nice already.
    pub total_ns: u64,
    /// The `cpuN` lines: CPUs online now.
    pub online_cpus: u32,
}

/// Parses `/proc/stat`: the `cpu` line holds, in ticks, user, nice, system,
/// idle, iowait, irq, softirq, steal, guest, guest_nice.
pub fn parse_cpu_times(stat: &str) -> Option<CpuTimes> {
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some("cpu"))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let field = |n: usize| ticks.get(n).copied().unwrap_or(0);
    let (idle, iowait) = (field(3), field(4));
    let busy = [0, 1, 2, 5, 6, 7].iter().map(|&n| field(n)).sum::<u64>();
    let online = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some(CpuTimes {
        busy_ns: busy * NS_PER_TICK,
        total_ns: (busy + idle + iowait) * NS_PER_TICK,
        online_cpus: u32::try_from(online).unwrap_or(u32::MAX),
    })
}

/// Total and available memory in bytes, from `/proc/meminfo` (in kB there).
pub fn parse_meminfo(meminfo: &str) -> Option<(u64, u64)> {
    let kib = |key: &str| {
        meminfo.lines().find_map(|line| {
            let value = line.strip_prefix(key)?.strip_prefix(':')?;
            value.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    Some((kib("MemTotal")? * 1024, kib("MemAvailable")? * 1024))
}

fn read(path: PathBuf) -> Result<(String, PathBuf), StatsError> {
    match fs::read_to_string(&path) {
        Ok(text) => Ok((text, path)),
        Err(e) => Err(StatsError::Read(path, e)),
    }
}

/// The CPU times of the guest whose procfs is `proc`.
pub fn cpu_times(proc: &Path) -> Result<CpuTimes, StatsError> {
    let (text, path) = read(proc.join("stat"))?;
    parse_cpu_times(&text).ok_or(StatsError::Missing {
        path,
        what: "cpu line",
    })
}

/// Total and available memory of the guest whose procfs is `proc`.
pub fn memory(proc: &Path) -> Result<(u64, u64), StatsError> {
    let (text, path) = read(proc.join("meminfo"))?;
    parse_meminfo(&text).ok_or(StatsError::Missing {
        path,
        what: "MemTotal or MemAvailable",
    })
}

/// Parses `/proc/net/dev`: two header lines, then `name: ` and 16
/// counters, the first eight received, the last eight sent. Loopback is
/// left out, as docker's figures are of the container's own interfaces.
pub fn parse_net_dev(text: &str) -> BTreeMap<String, InterfaceStats> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            let n: Vec<u64> = counters
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            if name == "lo" || n.len() < 16 {
                return None;
            }
            let counters = InterfaceStats {
                rx_bytes: n[0],
                rx_packets: n[1],
                rx_errors: n[2],
                rx_dropped: n[3],
                tx_bytes: n[8],
                tx_packets: n[9],
                tx_errors: n[10],
                tx_dropped: n[11],
            };
            Some((name.to_owned(), counters))
        })
        .collect()
}

/// The network interfaces of the guest whose procfs is `proc`.
pub fn networks(proc: &Path) -> Result<BTreeMap<String, InterfaceStats>, StatsError> {
    let (text, _) = read(proc.join("net/dev"))?;
    Ok(parse_net_dev(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 2 30 1000 5 1 2 3 50 0\n\
                        cpu0 50 1 15 500 2 0 1 1 25 0\n\
                        cpu1 50 1 15 500 3 1 1 2 25 0\n\
                        intr 12345\nctxt 999\nbtime 1700000000\n";

    #[test]
    fn busy_time_leaves_out_idle_iowait_and_guest_time() {
        let times = parse_cpu_times(STAT).unwrap();
        assert_eq!(times.busy_ns, 138 * 10_000_000);
        assert_eq!(times.total_ns, (138 + 1000 + 5) * 10_000_000);
        assert_eq!(times.online_cpus, 2);
    }

    #[test]
    fn old_kernels_with_fewer_cpu_fields_still_parse() {
        let times = parse_cpu_times("cpu 1 2 3 4\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(times.busy_ns, 6 * 10_000_000);
        assert_eq!(times.total_ns, 10 * 10_000_000);
    }

    #[test]
    fn a_stat_without_a_cpu_line_is_refused() {
        assert_eq!(parse_cpu_times("cpu0 1 2 3\n"), None);
        assert_eq!(parse_cpu_times("cpu x y\n"), None);
    }

    #[test]
    fn memory_is_read_in_kib_and_returned_in_bytes() {
        let meminfo =
            "MemTotal:         131072 kB\nMemFree:  1000 kB\nMemAvailable:     65536 kB\n";
        assert_eq!(parse_meminfo(meminfo), Some((128 << 20, 64 << 20)));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn interfaces_but_loopback_are_read_with_their_counters() {
        let dev = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n\
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n\
  eth0:    5000      40    1    2    0     0          0         0     3000      30    3    4    0     0       0          0\n\
  bad: 1 2\n";
        let found = parse_net_dev(dev);
        assert_eq!(found.len(), 1, "{found:?}");
        let eth0 = &found["eth0"];
        assert_eq!(
            (
                eth0.rx_bytes,
                eth0.rx_packets,
                eth0.rx_errors,
                eth0.rx_dropped
            ),
            (5000, 40, 1, 2)
        );
        assert_eq!(
            (
                eth0.tx_bytes,
                eth0.tx_packets,
                eth0.tx_errors,
                eth0.tx_dropped
            ),
            (3000, 30, 3, 4)
        );
    }

    #[test]
    fn the_real_procfs_parses() {
        let times = cpu_times(Path::new("/proc")).unwrap();
        assert!(times.online_cpus >= 1 && times.busy_ns <= times.total_ns);
        let (total, available) = memory(Path::new("/proc")).unwrap();
        assert!(available <= total);
    }
}
