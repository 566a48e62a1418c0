//! A process's environment and executable lookup, as docker builds them.

use hull_proto::{ErrorKind, RequestError};

pub use hull_proto::DEFAULT_PATH;

/// The value of `key` in a `KEY=value` list (the first one, as getenv finds).
pub fn lookup<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter().find_map(|entry| {
        entry
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
    })
}

/// The spec's environment plus the variables docker adds when they are absent.
pub fn with_defaults(env: &[String], hostname: &str, home: &str, terminal: bool) -> Vec<String> {
    let mut out = env.to_vec();
    let mut add = |key: &str, value: &str| {
        if lookup(&out, key).is_none() {
            out.push(format!("{key}={value}"));
        }
    };
    add("PATH", DEFAULT_PATH);
    add("HOSTNAME", hostname);
    add("HOME", home);
    if terminal {
        add("TERM", "xterm");
    }
    out
}

/// The paths to try `execve` on, in order: `name` itself when it holds a
/// slash, else each `PATH` entry joined with it (an empty entry means the
/// working directory, as in execvp).
pub fn exec_candidates(name: &str, env: &[String]) -> Vec<String> {
    if name.contains('/') {
        return vec![name.to_owned()];
    }
    if name.is_empty() {
        return Vec::new();
    }
    lookup(env, "PATH")
        .unwrap_or(DEFAULT_PATH)
        .split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            format!("{}/{name}", dir.trim_end_matches('/'))
        })
        .collect()
}

/// Maps the errno of a failed exec to docker's message for it.
pub fn exec_error(name: &str, errno: i32) -> RequestError {
    match errno {
        libc::ENOENT | libc::ENOTDIR if name.contains('/') => RequestError::new(
            ErrorKind::CommandNotFound,
            format!("exec: \"{name}\": stat {name}: no such file or directory"),
        ),
        libc::ENOENT | libc::ENOTDIR => RequestError::new(
            ErrorKind::CommandNotFound,
            format!("exec: \"{name}\": executable file not found in $PATH"),
        ),
        libc::EACCES | libc::EPERM => RequestError::new(
            ErrorKind::CommandNotExecutable,
            format!("exec: \"{name}\": permission denied"),
        ),
        libc::ENOEXEC => RequestError::new(
            ErrorKind::CommandNotExecutable,
            format!("exec: \"{name}\": exec format error"),
        ),
        other => RequestError::new(
            ErrorKind::Internal,
            format!(
                "exec: \"{name}\": {}",
                std::io::Error::from_raw_os_error(other)
            ),
        ),
    }
}

/// `/a/b/c` → `["/a", "/a/b", "/a/b/c"]`: the directories to create, in
/// order, for a working directory that may not exist yet.
pub fn dir_prefixes(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        current.push('/');
        current.push_str(part);
        out.push(current.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_fill_only_what_is_missing() {
        let env = with_defaults(&strings(&["PATH=/bin", "FOO=1"]), "box", "/root", false);
        assert_eq!(
            env,
            strings(&["PATH=/bin", "FOO=1", "HOSTNAME=box", "HOME=/root"])
        );
        let env = with_defaults(&strings(&["HOME=/x", "TERM=vt100"]), "box", "/", true);
        assert_eq!(lookup(&env, "PATH"), Some(DEFAULT_PATH));
        assert_eq!(lookup(&env, "HOME"), Some("/x"));
        assert_eq!(lookup(&env, "TERM"), Some("vt100"));
        let env = with_defaults(&[], "box", "/", true);
        assert_eq!(lookup(&env, "TERM"), Some("xterm"));
    }

    #[test]
    fn lookup_matches_whole_keys() {
        let env = strings(&["PATHX=1", "PATH=/a", "PATH=/b"]);
        assert_eq!(lookup(&env, "PATH"), Some("/a"));
        assert_eq!(lookup(&env, "PAT"), None);
    }

    #[test]
    fn a_name_with_a_slash_is_not_searched() {
        assert_eq!(exec_candidates("./run", &[]), strings(&["./run"]));
        assert_eq!(exec_candidates("/bin/sh", &[]), strings(&["/bin/sh"]));
    }

    #[test]
    fn a_bare_name_is_searched_along_path() {
        let env = strings(&["PATH=/usr/bin:/bin/::/opt"]);
        assert_eq!(
            exec_candidates("sh", &env),
            strings(&["/usr/bin/sh", "/bin/sh", "./sh", "/opt/sh"])
        );
        assert_eq!(exec_candidates("sh", &[]).len(), 6);
        assert!(exec_candidates("", &env).is_empty());
    }

    #[test]
    fn exec_errors_use_dockers_messages() {
        let err = exec_error("nope", libc::ENOENT);
        assert_eq!(err.kind, ErrorKind::CommandNotFound);
        assert_eq!(
            err.message,
            "exec: \"nope\": executable file not found in $PATH"
        );
        let err = exec_error("/x/y", libc::ENOENT);
        assert_eq!(
            err.message,
            "exec: \"/x/y\": stat /x/y: no such file or directory"
        );
        let err = exec_error("/etc/passwd", libc::EACCES);
        assert_eq!(err.kind, ErrorKind::CommandNotExecutable);
        assert_eq!(err.message, "exec: \"/etc/passwd\": permission denied");
        assert_eq!(
            exec_error("x", libc::ENOEXEC).kind,
            ErrorKind::CommandNotExecutable
        );
    }

    #[test]
    fn working_directory_prefixes_are_created_top_down() {
        assert_eq!(dir_prefixes("/a/b//c/"), strings(&["/a", "/a/b", "/a/b/c"]));
        assert!(dir_prefixes("/").is_empty());
    }
}
