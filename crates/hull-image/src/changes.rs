//! The Dockerfile instructions `docker commit --change` and `docker import
//! --change` apply to the new image's config: CMD, ENTRYPOINT, ENV, EXPOSE,
//! LABEL, STOPSIGNAL, USER, VOLUME and WORKDIR, as a Dockerfile's build
//! would apply them (without variable expansion).

use std::collections::BTreeMap;

use crate::spec::ImageConfig;

/// Most instructions one request may carry, and the longest one: a
/// change is a line of a Dockerfile, not a file.
pub const MAX_CHANGES: usize = 128;
pub const MAX_CHANGE_BYTES: usize = 64 << 10;
/// Most ports one EXPOSE range may open.
const MAX_PORT_RANGE: u32 = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChangeError {
    #[error("{0} is not a Dockerfile instruction a commit or an import applies (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR)")]
    Unknown(String),
    #[error("{instruction} needs an argument")]
    Empty { instruction: &'static str },
    #[error("{instruction} {argument:?}: {reason}")]
    Invalid {
        instruction: &'static str,
        argument: String,
        reason: &'static str,
    },
    #[error("at most {MAX_CHANGES} changes of at most {MAX_CHANGE_BYTES} bytes each are taken")]
    TooMany,
}

/// Applies `changes` (each one or more lines of instructions) to `config`, in order.
pub fn apply(config: &mut ImageConfig, changes: &[String]) -> Result<(), ChangeError> {
    let lines: Vec<&str> = changes
        .iter()
        .flat_map(|change| change.lines())
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    if lines.len() > MAX_CHANGES || changes.iter().any(|c| c.len() > MAX_CHANGE_BYTES) {
        return Err(ChangeError::TooMany);
    }
    let mut cmd_set = false;
    for line in lines {
        let (keyword, rest) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(k, r)| (k, r.trim()));
        match keyword.to_ascii_uppercase().as_str() {
            "CMD" => {
                config.cmd = Some(command("CMD", rest)?);
                cmd_set = true;
            }
            "ENTRYPOINT" => {
                config.entrypoint = Some(command("ENTRYPOINT", rest)?);
                // As a build does: an entrypoint drops the inherited command.
                if !cmd_set {
                    config.cmd = None;
                }
            }
            "ENV" => {
                for (key, value) in pairs("ENV", rest)? {
                    let prefix = format!("{key}=");
                    config.env.retain(|e| !e.starts_with(&prefix) && *e != key);
                    config.env.push(format!("{key}={value}"));
                }
            }
            "LABEL" => {
                let labels = config.labels.get_or_insert_with(BTreeMap::new);
                labels.extend(pairs("LABEL", rest)?);
            }
            "EXPOSE" => {
                let ports = config.exposed_ports.get_or_insert_with(BTreeMap::new);
                for word in words("EXPOSE", rest)? {
                    for port in expose(&unquote(&word))? {
                        ports.insert(port, serde_json::json!({}));
                    }
                }
            }
            "USER" => config.user = Some(single("USER", rest)?),
            "STOPSIGNAL" => config.stop_signal = Some(single("STOPSIGNAL", rest)?),
            "WORKDIR" => {
                let dir = unquote(rest);
                if dir.is_empty() {
                    return Err(ChangeError::Empty {
                        instruction: "WORKDIR",
                    });
                }
                let base = config.working_dir.clone().unwrap_or_else(|| "/".into());
                config.working_dir = Some(clean_join(&base, &dir));
            }
            "VOLUME" => {
                let paths = match json_array(rest) {
                    Some(paths) => paths,
                    None => words("VOLUME", rest)?.iter().map(|w| unquote(w)).collect(),
                };
                let volumes = config.volumes.get_or_insert_with(BTreeMap::new);
                for path in paths {
                    if !path.starts_with('/') {
                        return Err(ChangeError::Invalid {
                            instruction: "VOLUME",
                            argument: path,
                            reason: "a volume's path must be absolute",
                        });
                    }
                    volumes.insert(path, serde_json::json!({}));
                }
            }
            _ => return Err(ChangeError::Unknown(keyword.to_owned())),
        }
    }
    Ok(())
}

/// CMD or ENTRYPOINT: a JSON array of strings (exec form), else the shell form.
fn command(instruction: &'static str, rest: &str) -> Result<Vec<String>, ChangeError> {
    if let Some(args) = json_array(rest) {
        return Ok(args);
    }
    if rest.is_empty() {
        return Err(ChangeError::Empty { instruction });
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), rest.to_owned()])
}

fn json_array(rest: &str) -> Option<Vec<String>> {
    rest.starts_with('[')
        .then(|| serde_json::from_str(rest).ok())
        .flatten()
}

/// The one word of USER or STOPSIGNAL.
fn single(instruction: &'static str, rest: &str) -> Result<String, ChangeError> {
    let words = words(instruction, rest)?;
    match words.as_slice() {
        [word] => Ok(unquote(word)),
        _ => Err(ChangeError::Invalid {
            instruction,
            argument: rest.to_owned(),
            reason: "it takes one word",
        }),
    }
}

/// `key=value …` (quotes and backslashes as a shell's), or the legacy
/// `key value with spaces`.
fn pairs(instruction: &'static str, rest: &str) -> Result<Vec<(String, String)>, ChangeError> {
    let words = words(instruction, rest)?;
    if !words[0].contains('=') {
        let (key, value) = rest
            .split_once(char::is_whitespace)
            .map_or((rest, ""), |(k, v)| (k, v.trim()));
        if value.is_empty() {
            return Err(ChangeError::Invalid {
                instruction,
                argument: rest.to_owned(),
                reason: "a key needs a value: key=value, or key value",
            });
        }
        return Ok(vec![(unquote(key), value.to_owned())]);
    }
    words
        .iter()
        .map(|word| {
            let (key, value) = word.split_once('=').ok_or_else(|| ChangeError::Invalid {
                instruction,
                argument: word.clone(),
                reason: "every word must be key=value",
            })?;
            let key = unquote(key);
            if key.is_empty() {
                return Err(ChangeError::Invalid {
                    instruction,
                    argument: word.clone(),
                    reason: "a key cannot be empty",
                });
            }
            Ok((key, unquote(value)))
        })
        .collect()
}

/// Splits on blanks outside quotes, keeping the quotes for [`unquote`].
fn words(instruction: &'static str, rest: &str) -> Result<Vec<String>, ChangeError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                continue;
            }
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (Some('\''), _) => {}
            (_, '\\') => {
                word.push(c);
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                continue;
            }
            _ => {}
        }
        word.push(c);
    }
    if quote.is_some() {
        return Err(ChangeError::Invalid {
            instruction,
            argument: rest.to_owned(),
            reason: "a quote is not closed",
        });
    }
    if !word.is_empty() {
        words.push(word);
    }
    if words.is_empty() {
        return Err(ChangeError::Empty { instruction });
    }
    Ok(words)
}

/// A word without its quotes; a backslash outside single quotes takes the
/// next character as it is.
fn unquote(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut quote = None;
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => out.push(c),
            (_, '\\') => out.extend(chars.next()),
            (_, c) => out.push(c),
        }
    }
    out
}

/// `80`, `80/udp`, `8000-8010/tcp` as docker's `port/proto` keys.
fn expose(word: &str) -> Result<Vec<String>, ChangeError> {
    let invalid = |reason| ChangeError::Invalid {
        instruction: "EXPOSE",
        argument: word.to_owned(),
        reason,
    };
    let (ports, proto) = word.split_once('/').unwrap_or((word, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(invalid("the protocol must be tcp, udp or sctp"));
    }
    let port = |text: &str| {
        text.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| invalid("a port is a number from 1 to 65535"))
    };
    let (first, last) = match ports.split_once('-') {
        Some((first, last)) => (port(first)?, port(last)?),
        None => (port(ports)?, port(ports)?),
    };
    if last < first || u32::from(last - first) >= MAX_PORT_RANGE {
        return Err(invalid("a range goes up, over at most 4096 ports"));
    }
    Ok((first..=last).map(|p| format!("{p}/{proto}")).collect())
}

/// `dir` taken from `base` as a Dockerfile's WORKDIR takes it, `..` and
/// `.` resolved lexically.
fn clean_join(base: &str, dir: &str) -> String {
    let joined = if dir.starts_with('/') {
        dir.to_owned()
    } else {
        format!("{base}/{dir}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
#[path = "changes_tests.rs"]
mod tests;
