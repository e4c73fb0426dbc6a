//! Every way out of a session: a close frame sent politely (and its reply awaited), a close
//! frame sent on a failure, the peer's end of input, and the `Discard` phase that delivers
//! the last bytes before the connection ends. The first [`CloseReason`] is kept for the
//! access log and counted once.

use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use super::outbound::Chunk;
use super::wsio::WsIo;
use super::{CloseReason, Ctx, Phase, Progress, Session, Transport, WsReader};
use crate::frame;
use crate::metrics::{Counter, Counters};

impl<S: Transport> Session<S> {
    /// Records why the WebSocket ends, once: later reasons (a close that times out, a peer
    /// that vanishes while we wait for its reply) do not replace the first.
    pub(super) fn ended(&mut self, reason: CloseReason, code: u16, counters: &mut Counters) {
        if self.close.is_none() && self.room.is_some() {
            self.close = Some(reason);
            self.close_code = code;
            counters.bump(Counter::closed_by(reason));
        }
    }

    /// Sends a close frame through tungstenite and waits (up to `close_timeout`) for the
    /// peer's reply, still reading but no longer relaying.
    pub(super) fn close_politely(&mut self, reason: CloseReason, cx: &mut Ctx) {
        let code = reason.code().unwrap_or(1000);
        self.close_politely_with(reason, code, reason.text(), cx);
    }

    /// [`Session::close_politely`] with a close code and text of the caller's choice (the
    /// server API's disconnect).
    pub(super) fn close_politely_with(
        &mut self,
        reason: CloseReason,
        code: u16,
        text: &str,
        cx: &mut Ctx,
    ) {
        let Phase::Open {
            ws, closing_until, ..
        } = &mut self.phase
        else {
            return;
        };
        if closing_until.is_some() {
            return;
        }
        // tungstenite must know of our close to take the reply: an idle session gets its
        // reader back for the close handshake.
        let ws = ws.get_or_insert_with(|| WsReader::new(cx.config));
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: text.to_owned().into(),
        };
        // The adapter never blocks, so this only fails if tungstenite is closed already.
        if ws
            .ctx
            .close(&mut WsIo::new(&[], &mut self.out), Some(frame))
            .is_ok()
        {
            cx.counters.close_code(code);
            *closing_until = Some(cx.now + cx.config.close_timeout);
            self.ended(reason, code, cx.counters);
        } else {
            self.enter_discard(cx);
        }
    }

    /// Queues a close frame and stops taking input and broadcasts.
    pub(super) fn fail(&mut self, reason: CloseReason, cx: &mut Ctx) {
        let code = reason.code().unwrap_or(1011);
        tracing::debug!("closing with {code}: {}", reason.text());
        cx.counters.close_code(code);
        self.ended(reason, code, cx.counters);
        self.out
            .push(Chunk::Owned(frame::encode_close(code, reason.text())));
        self.enter_discard(cx);
    }

    pub(super) fn enter_discard(&mut self, cx: &Ctx) {
        self.phase = Phase::Discard { write_shut: false };
        self.deadline = Some(cx.now + cx.config.close_timeout);
    }

    pub(super) fn on_eof(&mut self, cx: &mut Ctx) -> Progress {
        self.peer_eof = true;
        if let Phase::Open {
            closing_until: None,
            ..
        } = self.phase
        {
            tracing::debug!("peer closed the connection without a close frame");
        }
        self.ended(CloseReason::PeerGone, 0, cx.counters);
        if !self.has_output() {
            return Progress::Finished;
        }
        // The peer may have only shut its write side: deliver what is queued (within the
        // close deadline), then finish.
        if !matches!(self.phase, Phase::Discard { .. }) {
            self.enter_discard(cx);
        }
        Progress::Idle
    }
}
