//! A minimal client of QEMU's machine protocol (QMP): one command at a time.

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP connection failed")]
    Io(#[from] std::io::Error),
    #[error("QEMU closed its QMP connection")]
    Closed,
    #[error("QEMU sent malformed QMP: {0}")]
    Malformed(String),
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
}

pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Qmp {
    /// Reads QEMU's greeting and leaves capability negotiation mode.
    pub async fn handshake(stream: UnixStream) -> Result<Self, QmpError> {
        let (read, writer) = stream.into_split();
        let mut qmp = Self {
            reader: BufReader::new(read),
            writer,
        };
        let greeting = qmp.read_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Malformed(greeting.to_string()));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Runs a command and returns its `return` value; events in between are skipped.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await?;
        loop {
            let message = self.read_message().await?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                let field = |name: &str| error[name].as_str().unwrap_or("?").to_string();
                return Err(QmpError::Command {
                    command: command.to_string(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            // Anything else is an asynchronous event.
        }
    }

    async fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            return Err(QmpError::Closed);
        }
        serde_json::from_str(&line).map_err(|_| QmpError::Malformed(line.trim().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn commands_skip_events_and_surface_errors() {
        let (client, mut server) = UnixStream::pair().unwrap();
        let peer = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            server
                .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .await
                .unwrap();
            let n = server.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).contains("qmp_capabilities"));
            server.write_all(b"{\"return\": {}}\n").await.unwrap();
            let n = server.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).contains("query-status"));
            server
                .write_all(b"{\"event\": \"RESUME\"}\n{\"return\": {\"status\": \"running\"}}\n")
                .await
                .unwrap();
            let _ = server.read(&mut buf).await.unwrap();
            server
                .write_all(
                    b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"no such device\"}}\n",
                )
                .await
                .unwrap();
        });
        let mut qmp = Qmp::handshake(client).await.unwrap();
        let status = qmp.execute("query-status", None).await.unwrap();
        assert_eq!(status["status"], "running");
        let err = qmp
            .execute("device_del", Some(json!({"id": "x"})))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no such device"));
        peer.await.unwrap();
    }
}
