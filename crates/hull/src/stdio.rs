//! A container's stdio relayed between this terminal and hulld, as docker's
//! attach, exec and logs relay it: output split onto stdout and stderr,
//! stdin sent until its end, the terminal's size and our signals passed on.

use anyhow::{bail, Context, Result};
use hull_api::client::ContainerStream;
use hull_api::stdcopy::{Decoder, Stream};
use hull_api::Client;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};

use crate::terminal;

/// Signals passed on to a container without a terminal, as docker's sig-proxy does.
pub const FORWARDED_SIGNALS: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Writes a container's output here until it ends.
pub async fn copy_output<R: AsyncRead + Unpin>(mut reader: R, multiplexed: bool) -> Result<()> {
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut decoder = Decoder::default();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = reader
            .read(&mut buffer)
            .await
            .context("lost the connection to hulld")?;
        if n == 0 {
            return Ok(());
        }
        if !multiplexed {
            stdout.write_all(&buffer[..n]).await?;
            stdout.flush().await?;
            continue;
        }
        decoder.extend(&buffer[..n]);
        while let Some((stream, payload)) = decoder.next_chunk()? {
            match stream {
                Stream::Stdout => {
                    stdout.write_all(&payload).await?;
                    stdout.flush().await?;
                }
                Stream::Stderr | Stream::SystemError => {
                    stderr.write_all(&payload).await?;
                    stderr.flush().await?;
                }
                Stream::Stdin => {}
            }
        }
    }
}

/// Relays a taken-over connection: its output here until it ends, and
/// this process's stdin to it when `stdin` (its end closes our side).
pub async fn relay<S>(attached: ContainerStream<S>, stdin: bool) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(attached.stream);
    if stdin {
        tokio::spawn(send_stdin(writer));
    }
    copy_output(reader, attached.multiplexed).await
}

async fn send_stdin<W: AsyncWrite + Unpin>(mut writer: W) {
    let mut stdin = tokio::io::stdin();
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        match stdin.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if writer.write_all(&buffer[..n]).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = writer.shutdown().await;
}

/// Whose terminal follows the size of ours.
#[derive(Debug, Clone)]
pub enum SizeOf {
    Container(String),
    Exec(String),
}

/// Sets the remote terminal to our size now and whenever ours changes.
pub fn follow_size(client: &Client, target: SizeOf) -> Result<()> {
    let mut winch = signal(SignalKind::window_change())?;
    let client = client.clone();
    tokio::spawn(async move {
        loop {
            if let Some((rows, cols)) = terminal::size(1) {
                let _ = match &target {
                    SizeOf::Container(id) => client.resize_container(id, rows, cols).await,
                    SizeOf::Exec(id) => client.resize_exec(id, rows, cols).await,
                };
            }
            if winch.recv().await.is_none() {
                return;
            }
        }
    });
    Ok(())
}

/// Passes the signals this process gets on to the container.
pub fn proxy_signals(client: &Client, id: &str) -> Result<()> {
    for number in FORWARDED_SIGNALS {
        // Registered here, not in the task, so no signal slips past.
        let mut signals = signal(SignalKind::from_raw(number))?;
        let (client, id) = (client.clone(), id.to_owned());
        tokio::spawn(async move {
            while signals.recv().await.is_some() {
                let _ = client.kill_container(&id, Some(&number.to_string())).await;
            }
        });
    }
    Ok(())
}

/// Fails as docker does when `-it` is asked for without a terminal to read.
pub fn check_tty_input(tty: bool, interactive: bool) -> Result<()> {
    if tty && interactive && !terminal::is_terminal(0) {
        bail!("the input device is not a TTY; drop -t to pipe input");
    }
    Ok(())
}

/// Raw mode for `-it`, so keys such as Ctrl-C reach the container's terminal.
pub fn raw_mode(tty: bool, interactive: bool) -> Option<terminal::RawMode> {
    (tty && interactive)
        .then(|| terminal::RawMode::enable(0))
        .flatten()
}

/// Prints what `line` makes of each JSON line of `stream` (events as hulld
/// streams them) as it comes, until the stream ends (exit code 0) or
/// `line` answers an exit code instead of a line.
pub async fn print_json_lines(
    stream: impl tokio::io::AsyncBufRead + Unpin,
    mut line: impl FnMut(&serde_json::Value) -> std::result::Result<String, i32>,
) -> Result<i32> {
    use std::io::Write;
    use tokio::io::AsyncBufReadExt;
    let mut lines = stream.lines();
    let mut out = std::io::stdout();
    while let Some(text) = lines.next_line().await.context("cannot read the events")? {
        if text.trim().is_empty() {
            continue;
        }
        let event: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("hulld sent an event that is not JSON: {text:?}"))?;
        match line(&event) {
            Ok(printed) => {
                writeln!(out, "{printed}")?;
                out.flush()?;
            }
            Err(code) => return Ok(code),
        }
    }
    Ok(0)
}
