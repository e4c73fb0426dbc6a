//! Where a client's byte stream stands between WebSocket frames, so that an open session can
//! give tungstenite's context back while it is at rest and make a fresh one when bytes come.
//!
//! tungstenite keeps no state that matters between two frames except an unfinished fragmented
//! message (and the close handshake, which the session tracks itself): a context that has
//! returned every complete frame, holds no part of the next one and is not inside a fragmented
//! message is as good as a new one. tungstenite does not say whether it holds part of a frame,
//! so this tracker reads the frame headers (RFC 6455 §5.2) of the same bytes the session feeds
//! it. It decides nothing about the frames: tungstenite still checks and rejects them.

/// The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEADER: usize = 14;

/// The position in the client's stream of frames (see the module docs).
#[derive(Debug, Default, Clone)]
pub struct Boundary {
    /// Bytes of the next frame's header seen so far.
    header: [u8; MAX_HEADER],
    header_len: u8,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// A data frame without FIN began a message that a final continuation has not ended.
    fragmented: bool,
}

impl Boundary {
    /// Follows `bytes`, the next bytes of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skip = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.payload_left -= skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            let have = usize::from(self.header_len);
            let need = header_len(&self.header[..have]).unwrap_or(2);
            let take = (need - have).min(bytes.len());
            self.header[have..have + take].copy_from_slice(&bytes[..take]);
            self.header_len += take as u8;
            bytes = &bytes[take..];
            let have = usize::from(self.header_len);
            if header_len(&self.header[..have]) == Some(have) {
                self.end_header(have);
            }
        }
    }

    /// True between frames and outside any fragmented message.
    pub fn at_rest(&self) -> bool {
        self.header_len == 0 && self.payload_left == 0 && !self.fragmented
    }

    /// A whole header of `len` bytes is in: its payload follows.
    fn end_header(&mut self, len: usize) {
        let h = &self.header[..len];
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0f;
        self.payload_left = match h[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
            short => u64::from(short),
        };
        // Control frames (opcode 8 and above) may come between a message's fragments.
        if opcode < 0x8 {
            self.fragmented = !fin;
        }
        self.header_len = 0;
    }
}

/// The length of the header that begins with `seen`, once its second byte says it.
fn header_len(seen: &[u8]) -> Option<usize> {
    let second = *seen.get(1)?;
    let length = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    Some(2 + length + mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame (the mask is zero: the tracker never looks at it).
    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match len {
            0..=125 => f.push(0x80 | len as u8),
            126..=0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[0; 4]);
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn whole_frames_leave_it_at_rest_however_they_are_cut() {
        let stream: Vec<u8> = [
            frame(true, 1, 5),
            frame(true, 2, 300),
            frame(true, 1, 70_000),
        ]
        .concat();
        for cut in [1, 2, 3, 7, 13, 64, 1000] {
            let mut b = Boundary::default();
            for (i, piece) in stream.chunks(cut).enumerate() {
                b.feed(piece);
                let fed = ((i + 1) * cut).min(stream.len());
                let ends = [11, 11 + 308, stream.len()];
                assert_eq!(b.at_rest(), ends.contains(&fed), "cut {cut}, fed {fed}");
            }
            assert!(b.at_rest());
        }
    }

    #[test]
    fn a_fragmented_message_is_not_at_rest_until_its_last_fragment() {
        let mut b = Boundary::default();
        b.feed(&frame(false, 1, 3));
        assert!(!b.at_rest());
        // A ping between fragments does not end the message.
        b.feed(&frame(true, 9, 0));
        assert!(!b.at_rest());
        b.feed(&frame(false, 0, 3));
        assert!(!b.at_rest());
        b.feed(&frame(true, 0, 3));
        assert!(b.at_rest());
    }

    #[test]
    fn an_empty_frame_ends_at_its_header() {
        let mut b = Boundary::default();
        let pong = frame(true, 0xA, 0);
        b.feed(&pong[..5]);
        assert!(!b.at_rest());
        b.feed(&pong[5..]);
        assert!(b.at_rest());
    }
}
