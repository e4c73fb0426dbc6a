//! Encoding server frames once, for every recipient.
//!
//! Written by hand rather than through `tungstenite::protocol::frame::Frame::format` because
//! the broadcast path wants the header and payload in one exact-size shared allocation
//! (`Arc<[u8]>`), which that API (an `io::Write` sink plus an owned `Bytes` payload) reaches
//! only through an extra buffer, allocation and copy (`benches/frame.rs` measures both). The
//! tests check the bytes against tungstenite's.

use std::sync::Arc;

/// A complete server-to-client WebSocket frame (header and payload), encoded once and shared
/// by every recipient on every shard. Server frames are unmasked, so the same bytes serve all.
pub type SharedFrame = Arc<[u8]>;

/// Opcode of a text frame.
pub const OP_TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;

/// The header of an unmasked, final frame (RFC 6455 §5.2): at most 10 bytes.
fn header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | opcode;
    let used = if len < 126 {
        h[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, used)
}

/// A complete unmasked data frame carrying `payload`, in one shared allocation.
pub fn encode_shared(opcode: u8, payload: &[u8]) -> SharedFrame {
    let (h, used) = header(opcode, payload.len());
    let mut frame = Arc::<[u8]>::new_uninit_slice(used + payload.len());
    let bytes = Arc::get_mut(&mut frame).expect("a new Arc has no other owner");
    bytes[..used].write_copy_of_slice(&h[..used]);
    bytes[used..].write_copy_of_slice(payload);
    // SAFETY: the two copies above wrote every byte of the slice.
    unsafe { frame.assume_init() }
}

/// A close frame with `code` and `reason` (the reason is cut to fit the 125-byte limit of
/// control frames, on a character boundary).
pub fn encode_close(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let (h, used) = header(OP_CLOSE, 2 + reason.len());
    let mut frame = Vec::with_capacity(used + 2 + reason.len());
    frame.extend_from_slice(&h[..used]);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
    use tungstenite::protocol::frame::{CloseFrame, Frame};

    fn tungstenite_bytes(frame: Frame) -> Vec<u8> {
        let mut out = Vec::new();
        frame.format(&mut out).unwrap();
        out
    }

    #[test]
    fn data_frames_match_tungstenite_at_every_length_class() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload = vec![b'x'; len];
            for (op, data) in [(OP_TEXT, Data::Text), (OP_BINARY, Data::Binary)] {
                let ours = encode_shared(op, &payload);
                let theirs =
                    tungstenite_bytes(Frame::message(payload.clone(), OpCode::Data(data), true));
                assert_eq!(&ours[..], &theirs[..], "length {len}");
            }
        }
    }

    #[test]
    fn close_frames_match_tungstenite_and_fit_the_limit() {
        let ours = encode_close(1008, "slow consumer");
        let theirs = tungstenite_bytes(Frame::close(Some(CloseFrame {
            code: CloseCode::Policy,
            reason: "slow consumer".into(),
        })));
        assert_eq!(ours, theirs);
        let long = encode_close(1000, &"é".repeat(100));
        assert!(long.len() - 2 <= 125);
    }
}
