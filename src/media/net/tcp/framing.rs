//! RFC 4571 framing: each packet on an ICE-TCP connection preceded by its 16-bit length.

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// A frame's buffer starts at most this large and grows as its bytes arrive, so a length
/// announced and never sent holds little.
const READ_CHUNK: usize = 4096;

/// One packet as an RFC 4571 §2 frame: a 16-bit length, then the packet (`TcpConns::send`
/// refuses packets too long for it).
pub(crate) fn frame(packet: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(2 + packet.len());
    framed.extend_from_slice(&(packet.len() as u16).to_be_bytes());
    framed.extend_from_slice(packet);
    framed
}

/// Reads one RFC 4571 frame of at most `max` bytes. Its buffer grows as its bytes arrive.
pub(crate) async fn read_frame(
    stream: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> io::Result<BytesMut> {
    read_frame_within(stream, || max).await
}

/// [`read_frame`], the cap asked for once the frame's length is in.
pub(super) async fn read_frame_within(
    stream: &mut (impl AsyncRead + Unpin),
    max: impl Fn() -> usize,
) -> io::Result<BytesMut> {
    let len = usize::from(stream.read_u16().await?);
    let max = max();
    if len == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "empty frame"));
    }
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes, over {max}"),
        ));
    }
    let mut data = BytesMut::with_capacity(len.min(READ_CHUNK));
    while data.len() < len {
        let left = len - data.len();
        data.reserve(left.min(READ_CHUNK));
        let room = left.min(data.capacity() - data.len());
        if (&mut *stream).take(room as u64).read_buf(&mut data).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(data)
}
