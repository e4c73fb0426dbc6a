//! WebSocket framing on the hot path, without per-message allocation.
//!
//! tungstenite's `WebSocket::read`/`send` move every message through an owned `Message`
//! (a heap buffer each), which at millions of deliveries per second would cost more than the
//! measurement itself. So payloads are handled in place: tungstenite's [`FrameHeader`] formats
//! and parses the headers, client frames are encoded and masked straight into the
//! connection's reusable output buffer, and server frames are parsed where they lie in the
//! read buffer.

use std::io::Cursor;

use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// What a complete server frame is, for the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Text, binary or continuation: scanned for tokens.
    Data,
    Ping,
    Pong,
    Close,
}

/// A complete frame at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerFrame {
    pub kind: FrameKind,
    /// Where the payload lies in the buffer that was parsed.
    pub payload_start: usize,
    pub payload_end: usize,
}

/// Why the server's bytes are not WebSocket: the connection is closed and counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("malformed frame header: {0}")]
    Header(String),
    #[error("server frame is masked (RFC 6455 5.1 forbids it)")]
    Masked,
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(u64),
}

/// Parses the frame at the start of `buf`: `Ok(None)` until all of it has arrived.
#[inline]
pub fn parse_server_frame(buf: &[u8], max_payload: u64) -> Result<Option<ServerFrame>, FrameError> {
    let mut cursor = Cursor::new(buf);
    let Some((header, len)) =
        FrameHeader::parse(&mut cursor).map_err(|e| FrameError::Header(e.to_string()))?
    else {
        return Ok(None);
    };
    if header.mask.is_some() {
        return Err(FrameError::Masked);
    }
    if len > max_payload {
        return Err(FrameError::TooLarge(len));
    }
    let payload_start = cursor.position() as usize;
    let payload_end = payload_start + len as usize;
    if buf.len() < payload_end {
        return Ok(None);
    }
    let kind = match header.opcode {
        OpCode::Data(_) => FrameKind::Data,
        OpCode::Control(Control::Ping) => FrameKind::Ping,
        OpCode::Control(Control::Pong) => FrameKind::Pong,
        OpCode::Control(Control::Close) => FrameKind::Close,
        OpCode::Control(Control::Reserved(_)) => {
            return Err(FrameError::Header("reserved control opcode".into()));
        }
    };
    Ok(Some(ServerFrame {
        kind,
        payload_start,
        payload_end,
    }))
}

/// Client frame opcodes the load generator sends.
#[derive(Debug, Clone, Copy)]
pub enum ClientOpcode {
    Text,
    Pong,
    Close,
}

impl ClientOpcode {
    fn opcode(self) -> OpCode {
        match self {
            ClientOpcode::Text => OpCode::Data(Data::Text),
            ClientOpcode::Pong => OpCode::Control(Control::Pong),
            ClientOpcode::Close => OpCode::Control(Control::Close),
        }
    }
}

/// Appends one final, masked client frame to `out`: `body` followed by `pad` padding bytes.
pub fn push_client_frame(
    out: &mut Vec<u8>,
    opcode: ClientOpcode,
    mask: [u8; 4],
    body: &[u8],
    pad: usize,
) {
    let len = body.len() + pad;
    let header = FrameHeader {
        opcode: opcode.opcode(),
        mask: Some(mask),
        ..FrameHeader::default()
    };
    // Writing into a Vec cannot fail.
    let _ = header.format(len as u64, out);
    let start = out.len();
    out.extend_from_slice(body);
    out.resize(start + len, crate::token::PADDING);
    apply_mask(&mut out[start..], mask);
}

/// XORs `payload` with the mask (RFC 6455 5.3), four bytes at a time where possible.
fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let masked = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i];
    }
}

/// A tiny xorshift generator for mask keys: masks must vary, but need not be cryptographic
/// (RFC 6455 wants them unpredictable to proxies; nothing here crosses a proxy).
#[derive(Debug, Clone)]
pub struct MaskSource(u64);

impl MaskSource {
    pub fn new(seed: u64) -> MaskSource {
        MaskSource(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x as u32).to_ne_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_are_masked_and_decode_with_tungstenite() {
        let mut out = Vec::new();
        let mask = [1, 2, 3, 4];
        push_client_frame(&mut out, ClientOpcode::Text, mask, b"hello", 3);
        let mut cursor = Cursor::new(&out[..]);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        assert_eq!(header.mask, Some(mask));
        assert_eq!(len, 8);
        let mut payload = out[cursor.position() as usize..].to_vec();
        apply_mask(&mut payload, mask);
        assert_eq!(payload, b"helloxxx");
    }

    #[test]
    fn parses_server_frames_in_place_and_waits_for_partial_ones() {
        let mut wire = vec![0x81, 3, b'a', b'b', b'c', 0x89, 0];
        let frame = parse_server_frame(&wire, 1 << 20).unwrap().unwrap();
        assert_eq!(frame.kind, FrameKind::Data);
        assert_eq!(&wire[frame.payload_start..frame.payload_end], b"abc");
        let ping = parse_server_frame(&wire[5..], 1 << 20).unwrap().unwrap();
        assert_eq!(ping.kind, FrameKind::Ping);
        assert_eq!(parse_server_frame(&wire[..4], 1 << 20), Ok(None));
        assert_eq!(parse_server_frame(&wire[..1], 1 << 20), Ok(None));
        wire[1] = 126; // 16-bit length follows, but it has not arrived
        assert_eq!(parse_server_frame(&wire[..3], 1 << 20), Ok(None));
    }

    #[test]
    fn rejects_masked_and_oversized_server_frames() {
        assert_eq!(
            parse_server_frame(&[0x81, 0x81, 0, 0, 0, 0, b'a'], 1 << 20),
            Err(FrameError::Masked)
        );
        assert_eq!(
            parse_server_frame(&[0x82, 126, 0x10, 0x00], 100),
            Err(FrameError::TooLarge(4096))
        );
    }

    #[test]
    fn masks_differ() {
        let mut source = MaskSource::new(7);
        assert_ne!(source.next_mask(), source.next_mask());
    }
}
