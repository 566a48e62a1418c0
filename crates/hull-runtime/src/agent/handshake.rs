//! Opening the channel: the hellos, the resync of a reconnection, and
//! reading one frame.

use hull_proto::{Frame, FrameKind, Hello, HEADER_LEN, PROTOCOL_VERSION};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::AgentError;

/// Reads the agent's hello and checks that it speaks our version.
pub(super) async fn expect_hello<R: AsyncRead + Unpin>(reader: &mut R) -> Result<(), AgentError> {
    let first = read_frame(reader).await?.ok_or(AgentError::Disconnected)?;
    if first.kind != FrameKind::Hello {
        return Err(AgentError::NoHello(first.kind));
    }
    let hello: Hello = first.parse()?;
    if hello.version != PROTOCOL_VERSION {
        return Err(AgentError::VersionMismatch {
            agent: hello.version,
            host: PROTOCOL_VERSION,
            software: hello.software,
        });
    }
    Ok(())
}

pub(super) async fn send_hello<W: AsyncWrite + Unpin>(writer: &mut W) -> Result<(), AgentError> {
    let ours = Hello {
        version: PROTOCOL_VERSION,
        software: format!("hulld {}", env!("CARGO_PKG_VERSION")),
    };
    writer
        .write_all(&Frame::json(FrameKind::Hello, 0, &ours).encode())
        .await
        .map_err(|_| AgentError::Disconnected)
}

/// Reads until just past the agent's resync marker. Holds 16 bytes however
/// much comes before it; the caller bounds the time.
pub(super) async fn skip_to_resync<R: AsyncRead + Unpin>(reader: &mut R) -> Result<(), AgentError> {
    let marker = hull_proto::RESYNC;
    let mut recent = [0u8; 16];
    let mut seen = 0usize;
    loop {
        let byte = reader
            .read_u8()
            .await
            .map_err(|_| AgentError::Disconnected)?;
        recent.rotate_left(1);
        recent[15] = byte;
        seen += 1;
        if seen >= marker.len() && recent == marker {
            return Ok(());
        }
    }
}

/// Reads one frame; `Ok(None)` at a clean end between frames.
pub(super) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Frame>, AgentError> {
    let Some((kind, channel, len)) = read_header(reader).await? else {
        return Ok(None);
    };
    let payload = read_payload(reader, len).await?;
    Ok(Some(Frame {
        kind,
        channel,
        payload,
    }))
}

/// Reads and checks a frame's header: its length is at most
/// [`hull_proto::MAX_PAYLOAD`], so a payload is never larger.
pub(super) async fn read_header<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<(FrameKind, u32, u32)>, AgentError> {
    let mut header = [0u8; HEADER_LEN];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(_) => return Err(AgentError::Disconnected),
    }
    Ok(Some(hull_proto::parse_header(&header)?))
}

pub(super) async fn read_payload<R: AsyncRead + Unpin>(
    reader: &mut R,
    len: u32,
) -> Result<Vec<u8>, AgentError> {
    let mut payload = vec![0u8; len as usize];
    reader
        .read_exact(&mut payload)
        .await
        .map_err(|_| AgentError::Disconnected)?;
    Ok(payload)
}
