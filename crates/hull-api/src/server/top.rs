//! `GET /containers/{id}/top`: the container's processes in `ps -ef`'s
//! columns. Docker runs the host's `ps`; here the guest agent reads the
//! VM's `/proc` and hulld formats what it reports.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::RequestBody;
use hull_proto::{ProcessInfo, USER_HZ};
use hyper::{Request, Response, StatusCode};

use super::containers::Query;
use super::{json_response, ApiError, Body};
use crate::daemon::Daemon;
use crate::types::stats::TopResponse;

const TITLES: [&str; 8] = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"];

/// `GET /containers/{id}/top?ps_args=…`. `host_names`: users are named
/// from the host's `/etc/passwd`, as docker does; a tenant gets uids, since
/// the host's accounts are none of its business.
pub(super) async fn top(
    daemon: &Daemon,
    reference: &str,
    request: &Request<RequestBody>,
    host_names: bool,
) -> Result<Response<Body>, ApiError> {
    let container = daemon.containers().get(reference)?;
    check_ps_args(Query::of(request).get("ps_args").unwrap_or(""))?;
    let processes = container.processes().await?;
    let started = container.state().started_at;
    let users = if host_names {
        host_users()
    } else {
        BTreeMap::new()
    };
    let body = TopResponse {
        titles: TITLES.iter().map(|t| (*t).to_owned()).collect(),
        processes: rows(&processes, started, SystemTime::now(), &users),
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// Only `ps -ef`'s columns can be given: options that select processes
/// (all of the container's are listed anyway) or that ask for full
/// format are taken, others are refused rather than silently ignored.
fn check_ps_args(args: &str) -> Result<(), ApiError> {
    let accepted = args.split_whitespace().all(|word| {
        word.trim_start_matches('-')
            .chars()
            .all(|c| "eAfawx".contains(c))
    });
    if accepted {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Hull lists processes in the columns of ps -ef only; ps options {args:?} are not supported"),
        ))
    }
}

/// One row per process, as `ps -ef` prints them. Start times are counted
/// from the container's first process, which started when the container
/// did: the guest's boot time is not known to hulld (a template clone's
/// clock of ticks began in the template).
fn rows(
    processes: &[ProcessInfo],
    started: Option<SystemTime>,
    now: SystemTime,
    users: &BTreeMap<u32, String>,
) -> Vec<Vec<String>> {
    let first_ticks = processes.iter().map(|p| p.start_ticks).min().unwrap_or(0);
    let started = started.unwrap_or(now);
    processes
        .iter()
        .map(|process| {
            let since_first = ticks(process.start_ticks.saturating_sub(first_ticks));
            let start = started + since_first;
            let lifetime = now.duration_since(start).unwrap_or_default();
            let cpu = ticks(process.cpu_ticks);
            vec![
                users
                    .get(&process.uid)
                    .cloned()
                    .unwrap_or_else(|| process.uid.to_string()),
                process.pid.to_string(),
                process.ppid.to_string(),
                cpu_percent(cpu, lifetime).to_string(),
                clock_time(start),
                process.tty.clone(),
                cpu_time(cpu),
                process.args.join(" "),
            ]
        })
        .collect()
}

fn ticks(count: u64) -> Duration {
    Duration::from_millis(count.saturating_mul(1000) / USER_HZ)
}

/// `ps`'s `C`: CPU time over lifetime, in whole percent, at most 99.
fn cpu_percent(cpu: Duration, lifetime: Duration) -> u128 {
    if lifetime.is_zero() {
        return 0;
    }
    (cpu.as_millis() * 100 / lifetime.as_millis().max(1)).min(99)
}

/// `HH:MM` of the day, in UTC as hulld's logs are.
fn clock_time(time: SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(time).to_string();
    text.get(11..16).unwrap_or("?").to_owned()
}

/// `ps`'s `TIME`: `[DD-]HH:MM:SS`.
fn cpu_time(cpu: Duration) -> String {
    let seconds = cpu.as_secs();
    let (days, hours) = (seconds / 86_400, seconds / 3600 % 24);
    let clock = format!("{hours:02}:{:02}:{:02}", seconds / 60 % 60, seconds % 60);
    if days > 0 {
        format!("{days}-{clock}")
    } else {
        clock
    }
}

/// User names by uid from the host's `/etc/passwd`: docker's `ps` runs on
/// the host and names users as the host knows them.
fn host_users() -> BTreeMap<u32, String> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    parse_passwd(&passwd)
}

fn parse_passwd(text: &str) -> BTreeMap<u32, String> {
    let mut users = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split(':');
        if let (Some(name), Some(_), Some(uid)) = (fields.next(), fields.next(), fields.next()) {
            if let Ok(uid) = uid.parse() {
                users.entry(uid).or_insert_with(|| name.to_owned());
            }
        }
    }
    users
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn process(pid: i32, start_ticks: u64, cpu_ticks: u64, args: &[&str]) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid: 1,
            uid: 0,
            state: "S".into(),
            start_ticks,
            cpu_ticks,
            tty: "?".into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    #[test]
    fn rows_read_like_ps_ef() {
        // 2026-11-23 18:00:00 UTC.
        let started = UNIX_EPOCH + Duration::from_secs(1_795_456_800);
        let now = started + Duration::from_secs(600);
        let list = [
            process(80, 5_000, 12_345, &["sleep", "1000"]),
            process(95, 5_000 + 90 * USER_HZ, 30, &["sh"]),
        ];
        let users = parse_passwd("root:x:0:0:root:/root:/bin/sh\n");
        let rows = rows(&list, Some(started), now, &users);
        assert_eq!(
            rows[0],
            [
                "root",
                "80",
                "1",
                "20",
                "18:00",
                "?",
                "00:02:03",
                "sleep 1000"
            ]
        );
        assert_eq!(rows[1][4], "18:01");
        assert_eq!(rows[1][6], "00:00:00");
    }

    #[test]
    fn unknown_uids_stay_numbers() {
        let list = [ProcessInfo {
            uid: 4242,
            ..process(1, 0, 0, &["x"])
        }];
        let rows = rows(&list, None, SystemTime::now(), &BTreeMap::new());
        assert_eq!(rows[0][0], "4242");
    }

    #[test]
    fn cpu_time_counts_days() {
        assert_eq!(cpu_time(Duration::from_secs(59)), "00:00:59");
        assert_eq!(cpu_time(Duration::from_secs(90_061)), "1-01:01:01");
    }

    #[test]
    fn only_ps_ef_like_options_are_taken() {
        for taken in ["", "-ef", "-e -f", "ax"] {
            assert!(check_ps_args(taken).is_ok(), "{taken}");
        }
        for refused in ["aux", "-o pid,comm"] {
            assert!(check_ps_args(refused).is_err(), "{refused}");
        }
    }
}
