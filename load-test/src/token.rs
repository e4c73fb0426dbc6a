//! The measurement token every payload carries: `SCL1:<publisher>:<seq>:<send ns>;`.
//!
//! The token is searched for anywhere in a received message, so servers that wrap messages
//! (`nick: text`, JSON envelopes, several messages batched in one frame) can be measured as
//! long as they relay the text unchanged. Its characters need no escaping in JSON or HTML.
//! The send time is the *scheduled* send time in nanoseconds of [`crate::clock::Clock`].

use memchr::memmem::Finder;

/// Marks the start of a token; the padding never contains it.
pub const MAGIC: &[u8] = b"SCL1:";

/// Longest possible token: magic, three u64 in decimal, two colons and the terminator.
pub const MAX_TOKEN_LEN: usize = MAGIC.len() + 3 * 20 + 3;

/// Byte used to pad payloads up to the requested size.
pub const PADDING: u8 = b'x';

/// What a token says about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// Run-wide publisher id.
    pub publisher: u32,
    /// The publisher's message number, from 0, without gaps.
    pub seq: u64,
    /// Scheduled send time, ns since the process epoch.
    pub sent_ns: u64,
}

impl Token {
    /// Writes the token into `buf`, returning its length (no allocation: `buf` is on the stack).
    pub fn encode(&self, buf: &mut [u8; MAX_TOKEN_LEN]) -> usize {
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            buf[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        let mut digits = [0u8; 20];
        put(MAGIC);
        put(decimal(u64::from(self.publisher), &mut digits));
        put(b":");
        put(decimal(self.seq, &mut digits));
        put(b":");
        put(decimal(self.sent_ns, &mut digits));
        put(b";");
        len
    }
}

fn decimal(mut value: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &digits[start..];
        }
    }
}

/// Finds tokens in received payloads. Holds the prepared searcher, so make one per thread.
pub struct TokenScanner {
    finder: Finder<'static>,
}

impl Default for TokenScanner {
    fn default() -> Self {
        TokenScanner {
            finder: Finder::new(MAGIC),
        }
    }
}

/// What one payload held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanCount {
    pub tokens: u64,
    /// Magic found but the rest did not parse (truncated or mangled by the server).
    pub malformed: u64,
}

impl TokenScanner {
    /// Calls `on_token` for every well-formed token in `payload`, in order.
    #[inline]
    pub fn scan(&self, payload: &[u8], mut on_token: impl FnMut(Token)) -> ScanCount {
        let mut count = ScanCount::default();
        let mut at = 0;
        while let Some(found) = self.finder.find(&payload[at..]) {
            let body = at + found + MAGIC.len();
            match parse_body(&payload[body..]) {
                Some((token, used)) => {
                    count.tokens += 1;
                    on_token(token);
                    at = body + used;
                }
                None => {
                    count.malformed += 1;
                    at = body;
                }
            }
        }
        count
    }
}

/// Parses `<publisher>:<seq>:<ns>;` and returns the token and the bytes used.
fn parse_body(bytes: &[u8]) -> Option<(Token, usize)> {
    let (publisher, a) = number(bytes, b':')?;
    let (seq, b) = number(&bytes[a..], b':')?;
    let (sent_ns, c) = number(&bytes[a + b..], b';')?;
    let publisher = u32::try_from(publisher).ok()?;
    Some((
        Token {
            publisher,
            seq,
            sent_ns,
        },
        a + b + c,
    ))
}

/// A decimal u64 followed by `end`; returns the value and the bytes used (end included).
#[inline]
fn number(bytes: &[u8], end: u8) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(21) {
        match b {
            b'0'..=b'9' => {
                value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            }
            _ if b == end && i > 0 => return Some((value, i + 1)),
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(token: Token) -> Vec<u8> {
        let mut buf = [0u8; MAX_TOKEN_LEN];
        let len = token.encode(&mut buf);
        buf[..len].to_vec()
    }

    fn scan_all(payload: &[u8]) -> (Vec<Token>, ScanCount) {
        let mut found = Vec::new();
        let count = TokenScanner::default().scan(payload, |t| found.push(t));
        (found, count)
    }

    #[test]
    fn round_trips_extremes() {
        for token in [
            Token {
                publisher: 0,
                seq: 0,
                sent_ns: 0,
            },
            Token {
                publisher: u32::MAX,
                seq: u64::MAX,
                sent_ns: u64::MAX,
            },
        ] {
            let bytes = encoded(token);
            assert!(bytes.len() <= MAX_TOKEN_LEN);
            assert_eq!(scan_all(&bytes).0, vec![token]);
        }
        assert_eq!(
            encoded(Token {
                publisher: 7,
                seq: 42,
                sent_ns: 99
            }),
            b"SCL1:7:42:99;"
        );
    }

    #[test]
    fn finds_tokens_inside_wrapped_and_batched_text() {
        let t1 = Token {
            publisher: 1,
            seq: 2,
            sent_ns: 3,
        };
        let t2 = Token {
            publisher: 4,
            seq: 5,
            sent_ns: 6,
        };
        let wrapped = format!(
            r#"{{"nick":"bob","text":"{}xxxx"}} alice: {}xx"#,
            String::from_utf8(encoded(t1)).unwrap(),
            String::from_utf8(encoded(t2)).unwrap()
        );
        let (found, count) = scan_all(wrapped.as_bytes());
        assert_eq!(found, vec![t1, t2]);
        assert_eq!(count.malformed, 0);
    }

    #[test]
    fn counts_mangled_tokens_without_panicking() {
        for bad in [
            &b"SCL1:"[..],
            b"SCL1::1:2;",
            b"SCL1:1:2:3",
            b"SCL1:1:2:x;",
            b"SCL1:99999999999:1:1;",
        ] {
            let (found, count) = scan_all(bad);
            assert!(found.is_empty(), "{:?}", String::from_utf8_lossy(bad));
            assert_eq!(count.malformed, 1);
        }
        // A truncated token followed by a good one: the good one is still found.
        let (found, _) = scan_all(b"SCL1:1:SCL1:1:2:3;");
        assert_eq!(
            found,
            vec![Token {
                publisher: 1,
                seq: 2,
                sent_ns: 3
            }]
        );
    }
}
