//! Reaching hulld, and starting one when none is running.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hull_api::{Client, ClientError};

const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A client of a running hulld; starts one in the background if needed, so
/// the first command a user types just works.
pub async fn connect(host: &str, root: &Path) -> Result<Client> {
    let client = Client::new(hull_api::socket_path(host));
    match client.ping().await {
        Ok(()) => return Ok(client),
        Err(ClientError::NoDaemon { .. }) => {}
        Err(err) => return Err(err.into()),
    }
    start_daemon(host, root)?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match client.ping().await {
            Ok(()) => {
                announce(&client).await;
                return Ok(client);
            }
            Err(ClientError::NoDaemon { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => {
                return Err(err).with_context(|| {
                    format!(
                        "hulld did not come up; see {}",
                        root.join("hulld.log").display()
                    )
                })
            }
        }
    }
}

/// Says once, when hull started the daemon, how it will run VMs here.
async fn announce(client: &Client) {
    if let Ok(info) = client.get_json::<hull_api::types::Info>("/info").await {
        if let Some(reason) = info.accelerator_reason {
            eprintln!("hull: started hulld; {reason}");
        }
    }
}

fn start_daemon(host: &str, root: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the hull executable")?;
    let hulld = exe.with_file_name("hulld");
    if !hulld.is_file() {
        bail!(
            "no hulld is running and {} does not exist: install Hull with scripts/install.sh",
            hulld.display()
        );
    }
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let log_path = root.join("hulld.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut command = std::process::Command::new(&hulld);
    command
        .arg("--root")
        .arg(root)
        .arg("--host")
        .arg(host)
        // hulld rotates its log; what it prints before it opens the log
        // (a bad flag, say) still lands in the same file.
        .arg("--log-file")
        .arg(&log_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid() is async-signal-safe; it detaches the daemon from the
    // terminal so that Ctrl-C in this shell does not reach it.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    command
        .spawn()
        .with_context(|| format!("cannot start {}", hulld.display()))?;
    Ok(())
}
