//! `hull func`: functions whose every call runs a new container of an
//! image (Hyper.sh's Func).

use std::io::{Read, Write};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use hull_api::func::FuncView;
use hull_api::{Client, Method};
use serde_json::{json, Map, Value};

use crate::containers::failed;
use crate::each::{inspect_each, remove_each};
use crate::images::print_table;
use crate::tag::encode;

#[derive(Debug, Subcommand)]
pub enum FuncCommand {
    /// Create a function: each call runs IMAGE [CMD...] with the request
    /// on its stdin; its stdout is the answer. Prints the call URL last.
    Create(CreateArgs),
    /// List functions.
    #[command(alias = "list")]
    Ls {
        /// Every owner's functions (the operator only).
        #[arg(short, long)]
        all: bool,
    },
    /// Show functions as JSON.
    Inspect {
        #[arg(required = true)]
        funcs: Vec<String>,
    },
    /// Remove functions and their calls.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        funcs: Vec<String>,
    },
    /// Change a function; prints its call URL.
    Update(UpdateArgs),
    /// Call a function: prints its call id, or with --sync its answer.
    Call {
        name: String,
        /// Wait for the answer and print it.
        #[arg(long)]
        sync: bool,
        /// The call's body (its stdin); `-` reads it from stdin.
        #[arg(short, long)]
        data: Option<String>,
    },
    /// Show the events of a function's calls: CALL, QUEUED, RUNNING,
    /// FINISHED, FAILED, with the first bytes of stdin, stdout and stderr.
    Logs {
        name: String,
        /// Keep showing new events as calls come and go.
        #[arg(short, long)]
        follow: bool,
        /// Show the last N events, or all that are kept.
        #[arg(long, default_value = "all", value_name = "N")]
        tail: String,
        /// Only the events of this call.
        #[arg(long, value_name = "ID")]
        callid: Option<String>,
    },
    /// Count a function's calls: all, waiting, running, finished, failed.
    Status { name: String },
    /// Print a call's result (once: then it is gone).
    Get {
        name: String,
        call: String,
        /// Wait until the call is done.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long)]
    name: String,
    #[command(flatten)]
    settings: Settings,
    /// The image each call starts from.
    image: String,
    /// The command each call runs, instead of the image's.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    name: String,
    /// A new uuid: the old call URL answers 404 from now on.
    #[arg(long)]
    refresh: bool,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Debug, Args)]
struct Settings {
    /// Each call's VM size (S1 … L3).
    #[arg(long)]
    size: Option<String>,
    /// A call running longer is killed (30s, 2m, 1h).
    #[arg(long)]
    timeout: Option<String>,
    /// Calls that run at once; more wait in a queue.
    #[arg(long, value_name = "N")]
    max_concurrency: Option<u32>,
    /// Environment variables of each call (KEY=VALUE).
    #[arg(short, long = "env")]
    env: Vec<String>,
}

impl Settings {
    fn into_json(self) -> Result<Map<String, Value>> {
        let mut fields = Map::new();
        if let Some(size) = self.size {
            fields.insert("Size".into(), json!(size.to_ascii_uppercase()));
        }
        if let Some(timeout) = self.timeout {
            fields.insert("TimeoutSeconds".into(), json!(seconds(&timeout)?));
        }
        if let Some(n) = self.max_concurrency {
            fields.insert("MaxConcurrency".into(), json!(n));
        }
        if !self.env.is_empty() {
            fields.insert("Env".into(), json!(self.env));
        }
        Ok(fields)
    }
}

/// `30`, `30s`, `2m`, `1h` as seconds.
fn seconds(text: &str) -> Result<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => bail!("invalid --timeout {text:?}: give seconds, or 30s, 2m, 1h"),
    };
    let number: u64 = digits
        .parse()
        .with_context(|| format!("invalid --timeout {text:?}"))?;
    Ok(number.saturating_mul(scale))
}

pub async fn func(client: &Client, command: FuncCommand) -> Result<i32> {
    run(client, command).await.or_else(failed)
}

async fn run(client: &Client, command: FuncCommand) -> Result<i32> {
    let path_of = |name: &str| format!("/funcs/{}", encode(name));
    match command {
        FuncCommand::Create(args) => {
            let mut spec = args.settings.into_json()?;
            spec.insert("Image".into(), json!(args.image));
            if !args.command.is_empty() {
                spec.insert("Cmd".into(), json!(args.command));
            }
            let path = format!("/funcs/create?name={}", encode(&args.name));
            let view: FuncView = client.call_json(Method::POST, &path, Some(&spec)).await?;
            print_url(&view);
            Ok(0)
        }
        FuncCommand::Ls { all } => {
            let path = if all { "/funcs?all=1" } else { "/funcs" };
            let funcs: Vec<FuncView> = client.get_json(path).await?;
            print_table(&listing(&funcs, all));
            Ok(0)
        }
        FuncCommand::Inspect { funcs } => inspect_each(client, &funcs, path_of).await,
        FuncCommand::Rm { funcs } => remove_each(client, &funcs, path_of).await,
        FuncCommand::Update(args) => {
            let changes = args.settings.into_json()?;
            let refresh = if args.refresh { "?refresh=1" } else { "" };
            let path = format!("/funcs/{}/update{refresh}", encode(&args.name));
            let view: FuncView = client
                .call_json(Method::POST, &path, Some(&changes))
                .await?;
            print_url(&view);
            Ok(0)
        }
        FuncCommand::Call { name, sync, data } => {
            let body = match data.as_deref() {
                None => Vec::new(),
                Some("-") => {
                    let mut body = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut body)
                        .context("cannot read the call's body from stdin")?;
                    body
                }
                Some(text) => text.as_bytes().to_vec(),
            };
            let sync = if sync { "?sync=1" } else { "" };
            let path = format!("/funcs/{}/call{sync}", encode(&name));
            let answer = client.call_raw(Method::POST, &path, body).await?;
            print_answer(answer)
        }
        FuncCommand::Logs {
            name,
            follow,
            tail,
            callid,
        } => {
            let mut query = format!("tail={}", encode(&tail));
            if follow {
                query.push_str("&follow=1");
            }
            if let Some(call) = callid {
                query.push_str(&format!("&callid={}", encode(&call)));
            }
            let path = format!("/funcs/{}/logs?{query}", encode(&name));
            print_events(client.get_stream(&path).await?).await
        }
        FuncCommand::Status { name } => {
            let path = format!("/funcs/{}/status", encode(&name));
            let status: Value = client.get_json(&path).await?;
            let count = |key: &str| status[key].as_u64().unwrap_or(0).to_string();
            print_table(&[
                ["TOTAL", "PENDING", "RUNNING", "FINISHED", "FAILED"]
                    .map(str::to_owned)
                    .to_vec(),
                ["Total", "Pending", "Running", "Finished", "Failed"]
                    .map(count)
                    .to_vec(),
            ]);
            Ok(0)
        }
        FuncCommand::Get { name, call, wait } => {
            let wait = if wait { "?wait=1" } else { "" };
            let path = format!("/funcs/{}/output/{}{wait}", encode(&name), encode(&call));
            let answer = client.call_raw(Method::GET, &path, Vec::new()).await?;
            print_answer(answer)
        }
    }
}

/// Prints call events as they arrive, one line each as Hyper.sh's client
/// did; a message from hulld in their stead ends it with exit code 1.
async fn print_events(stream: impl tokio::io::AsyncBufRead + Unpin) -> Result<i32> {
    crate::stdio::print_json_lines(stream, |event| {
        let field = |key: &str| event[key].as_str().unwrap_or("").to_owned();
        let Some(kind) = event["Event"].as_str() else {
            eprintln!("hull: {}", field("Message"));
            return Err(1);
        };
        let head = format!("{} [{kind}] CallId: {}", field("Time"), field("CallId"));
        Ok(match kind {
            "CALL" => format!("{head}, ShortStdin: {}", field("ShortStdin")),
            "FINISHED" => format!(
                "{head}, ShortStdout: {}, ShortStderr: {}",
                field("ShortStdout"),
                field("ShortStderr")
            ),
            "FAILED" => format!(
                "{head}, Message: {}, ShortStderr: {}",
                field("Message"),
                field("ShortStderr")
            ),
            _ => head,
        })
    })
    .await
}

fn print_url(view: &FuncView) {
    match &view.call_url {
        Some(url) => println!("{url}"),
        None => {
            eprintln!("hulld serves no function calls: start it with --func-listen");
            println!("{}", view.name);
        }
    }
}

/// A call's answer: its body on stdout when it succeeded (or is still
/// going on), on stderr with exit code 1 otherwise.
fn print_answer((status, body): (u16, bytes::Bytes)) -> Result<i32> {
    if (200..300).contains(&status) {
        std::io::stdout().write_all(&body)?;
        return Ok(0);
    }
    let text = serde_json::from_slice::<hull_api::types::ErrorBody>(&body)
        .map(|e| e.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim_end().to_owned());
    eprintln!("hull: the call answered {status}: {text}");
    Ok(1)
}

fn listing(funcs: &[FuncView], all: bool) -> Vec<Vec<String>> {
    let mut header = vec![
        "NAME",
        "IMAGE",
        "COMMAND",
        "SIZE",
        "TIMEOUT",
        "CONCURRENCY",
        "RUNNING",
        "QUEUED",
        "CREATED",
    ];
    if all {
        header.insert(0, "TENANT");
    }
    let mut rows = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    for func in funcs {
        let spec = &func.spec;
        let mut row = vec![
            func.name.clone(),
            spec.image.clone(),
            spec.cmd.join(" "),
            spec.size.clone().unwrap_or_default(),
            format!("{}s", spec.timeout_seconds),
            spec.max_concurrency.to_string(),
            func.running.to_string(),
            func.queued.to_string(),
            func.created.clone(),
        ];
        if all {
            row.insert(0, func.tenant.clone().unwrap_or_default());
        }
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_take_units() {
        assert_eq!(seconds("30").unwrap(), 30);
        assert_eq!(seconds("30s").unwrap(), 30);
        assert_eq!(seconds("2m").unwrap(), 120);
        assert_eq!(seconds("1h").unwrap(), 3600);
        assert!(seconds("1d").is_err());
        assert!(seconds("s").is_err());
    }
}
