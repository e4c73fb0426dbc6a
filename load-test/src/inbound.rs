//! The receive hot path: complete frames in a read buffer → tokens → counters and histograms.
//!
//! Everything here runs once per delivered message, so it allocates nothing and copies
//! nothing: frames are parsed where they lie, tokens are found with a prepared `memmem`
//! searcher, and each delivery costs a tracker comparison and a histogram increment.

use std::sync::Arc;

use hdrhistogram::Histogram;

use crate::frame::{ClientOpcode, FrameError, FrameKind, parse_server_frame};
use crate::order::OrderPrint;
use crate::outbox::Outbox;
use crate::roundtrip::RoundTripBoard;
use crate::stats::{ReceiveStats, new_histogram};
use crate::token::{Token, TokenScanner};
use crate::tracker::{Arrival, SeqTracker};

/// One recipient's view of its room's publishers.
#[derive(Debug, Default)]
pub struct Recipient {
    /// Publisher id of `trackers[0]`.
    pub first_publisher: u32,
    pub trackers: Box<[SeqTracker]>,
    /// The order of this recipient's first arrivals (see [`crate::order`]).
    pub order: OrderPrint,
    /// This recipient's share of [`ReceiveStats::duplicates`]: a member with duplicates is
    /// left out of the order comparison.
    pub duplicates: u64,
}

impl Recipient {
    pub fn open_holes(&self) -> u64 {
        self.trackers.iter().map(|t| t.open_holes() as u64).sum()
    }
}

/// What the frames said about the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    KeepOpen,
    /// The server sent a close frame with this code (a reply is already queued).
    ServerClosed(u16),
    /// The bytes are not WebSocket: close without ceremony.
    Protocol(FrameError),
}

/// A thread's receive side: shared by all of its connections.
pub struct Inbound {
    scanner: TokenScanner,
    pub stats: ReceiveStats,
    /// Delivery latency (ns) of messages scheduled inside the measured window.
    pub latency: Histogram<u64>,
    measure_start_ns: u64,
    measure_end_ns: u64,
    board: Option<Arc<RoundTripBoard>>,
    max_frame: u64,
}

impl Inbound {
    pub fn new(max_frame: u64, board: Option<Arc<RoundTripBoard>>) -> Inbound {
        Inbound {
            scanner: TokenScanner::default(),
            stats: ReceiveStats::default(),
            latency: new_histogram(),
            // Nothing counts as measured until the run says when measuring starts.
            measure_start_ns: u64::MAX,
            measure_end_ns: u64::MAX,
            board,
            max_frame,
        }
    }

    pub fn set_window(&mut self, start_ns: u64, end_ns: u64) {
        self.measure_start_ns = start_ns;
        self.measure_end_ns = end_ns;
    }

    /// Consumes the complete frames at the start of `buf`, received at `now_ns`. Returns the
    /// bytes consumed (the rest is a partial frame to keep) and whether to stay open.
    pub fn consume(
        &mut self,
        buf: &[u8],
        recipient: &mut Recipient,
        outbox: &mut Outbox,
        now_ns: u64,
    ) -> (usize, Verdict) {
        let mut at = 0;
        loop {
            let frame = match parse_server_frame(&buf[at..], self.max_frame) {
                Ok(Some(frame)) => frame,
                Ok(None) => return (at, Verdict::KeepOpen),
                Err(e) => return (at, Verdict::Protocol(e)),
            };
            let payload = &buf[at + frame.payload_start..at + frame.payload_end];
            at += frame.payload_end;
            match frame.kind {
                FrameKind::Data => self.on_data(payload, recipient, now_ns),
                FrameKind::Ping => {
                    // Servers drop clients that ignore pings; a pong keeps a silent
                    // subscriber alive.
                    self.stats.pings += 1;
                    outbox.push(ClientOpcode::Pong, payload, 0);
                }
                FrameKind::Pong => {}
                FrameKind::Close => {
                    let code = match payload {
                        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
                        _ => 1005, // "no status received" (RFC 6455 7.4.1)
                    };
                    let echo = &payload[..payload.len().min(2)];
                    outbox.push(ClientOpcode::Close, echo, 0);
                    return (at, Verdict::ServerClosed(code));
                }
            }
        }
    }

    #[inline]
    fn on_data(&mut self, payload: &[u8], recipient: &mut Recipient, now_ns: u64) {
        let Inbound {
            scanner,
            stats,
            latency,
            measure_start_ns,
            measure_end_ns,
            board,
            ..
        } = self;
        stats.frames += 1;
        stats.bytes += payload.len() as u64;
        let count = scanner.scan(payload, |token: Token| {
            let slot = token.publisher.wrapping_sub(recipient.first_publisher) as usize;
            let Some(tracker) = recipient.trackers.get_mut(slot) else {
                stats.foreign += 1;
                return;
            };
            match tracker.observe(token.seq) {
                Arrival::InOrder => {}
                Arrival::Ahead { .. } => stats.gaps += 1,
                Arrival::Reordered => stats.reordered += 1,
                Arrival::Duplicate => {
                    stats.duplicates += 1;
                    recipient.duplicates += 1;
                    return;
                }
            }
            recipient.order.observe(token.publisher, token.seq);
            stats.delivered += 1;
            if (*measure_start_ns..*measure_end_ns).contains(&now_ns) {
                stats.delivered_in_window += 1;
            }
            if token.sent_ns >= *measure_start_ns {
                latency.saturating_record(now_ns.saturating_sub(token.sent_ns).max(1));
            }
            if let Some(board) = board
                && token.publisher == board.publisher()
            {
                board.arrive(token.seq, now_ns);
            }
        });
        stats.malformed += count.malformed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::MaskSource;
    use crate::token::MAX_TOKEN_LEN;

    fn server_text(payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mut frame = vec![0x81, payload.len() as u8];
        frame.extend_from_slice(payload);
        frame
    }

    fn token_text(publisher: u32, seq: u64, sent_ns: u64) -> Vec<u8> {
        let mut buf = [0u8; MAX_TOKEN_LEN];
        let len = Token {
            publisher,
            seq,
            sent_ns,
        }
        .encode(&mut buf);
        buf[..len].to_vec()
    }

    #[test]
    fn counts_deliveries_duplicates_and_foreign_tokens() {
        let mut inbound = Inbound::new(1 << 20, None);
        inbound.set_window(0, 1_000);
        let mut recipient = Recipient {
            first_publisher: 10,
            trackers: vec![SeqTracker::default(); 2].into(),
            ..Recipient::default()
        };
        let mut outbox = Outbox::new(MaskSource::new(1));
        let mut wire = Vec::new();
        for (publisher, seq) in [(10, 0), (11, 0), (10, 1), (10, 1), (12, 0)] {
            wire.extend(server_text(&token_text(publisher, seq, 100)));
        }
        wire.extend_from_slice(&[0x81, 5, b'S']); // a partial frame stays unconsumed
        let (used, verdict) = inbound.consume(&wire, &mut recipient, &mut outbox, 500);
        assert_eq!(verdict, Verdict::KeepOpen);
        assert_eq!(used, wire.len() - 3);
        let s = &inbound.stats;
        assert_eq!((s.delivered, s.duplicates, s.foreign), (3, 1, 1));
        assert_eq!(s.delivered_in_window, 3);
        assert_eq!(inbound.latency.len(), 3);
        // The recipient's own books: first arrivals in order, and its duplicate.
        let mut order = crate::order::OrderPrint::default();
        for (publisher, seq) in [(10, 0), (11, 0), (10, 1)] {
            order.observe(publisher, seq);
        }
        assert_eq!(recipient.order, order);
        assert_eq!(recipient.duplicates, 1);
    }

    #[test]
    fn answers_pings_and_closes() {
        let mut inbound = Inbound::new(1 << 20, None);
        let mut recipient = Recipient::default();
        let mut outbox = Outbox::new(MaskSource::new(1));
        let wire = [0x89, 1, b'p', 0x88, 2, 0x03, 0xF0, 0x81, 0];
        let (used, verdict) = inbound.consume(&wire, &mut recipient, &mut outbox, 0);
        assert_eq!(verdict, Verdict::ServerClosed(1008));
        assert_eq!(used, 7, "frames after the close are not read");
        assert_eq!(inbound.stats.pings, 1);
        assert!(outbox.pending() > 0);
    }
}
