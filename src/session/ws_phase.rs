//! The `Open` phase: WebSocket frames in through tungstenite, complete messages out as
//! [`Event::Message`]s, control frames answered in the session's one ordered queue.
//!
//! A plain client's data messages are relayed as they are; a `shardcast.v1` client's text is
//! read by the rules in [`super::v1`]. Protocol violations close with their
//! [`CloseReason`]'s code; a closing session reads on but relays nothing.

use std::io;

use tungstenite::protocol::Message;

use super::outbound::Chunk;
use super::wsio::WsIo;
use super::{CloseReason, Ctx, Event, Phase, Session, Transport, WsReader, id_text, v1};
use crate::chat::envelope::ErrorCode;
use crate::chat::post::now_millis;
use crate::chat::{Body, Dialect, Nick, Post, envelope};
use crate::config::AuthMode;
use crate::history::Ask;
use crate::limits::Publish;
use crate::metrics::Counter;

impl<S: Transport> Session<S> {
    pub(super) fn consume_ws(
        &mut self,
        input: &[u8],
        cx: &mut Ctx,
        events: &mut Vec<Event>,
        budget: &mut usize,
    ) -> bool {
        let Phase::Open {
            ws: reader,
            liveness,
            closing_until,
            hello,
        } = &mut self.phase
        else {
            return true;
        };
        if input.is_empty() && !reader.as_ref().is_some_and(|ws| ws.buffered) {
            return true;
        }
        // An idle session has no reader: the first bytes make one (`ws_reader`).
        let ws = reader.get_or_insert_with(|| WsReader::new(cx.config));
        let closing = closing_until.is_some();
        let v1 = self.dialect == Dialect::V1;
        let mut sent_data = false;
        let mut io = WsIo::new(input, &mut self.out);
        loop {
            if *budget == 0 {
                let rest = io.rest();
                ws.boundary.feed(&input[..input.len() - rest.len()]);
                ws.stash.extend_from_slice(rest);
                ws.buffered = true;
                return false;
            }
            let failure = match ws.ctx.read(&mut io) {
                Ok(message) => {
                    *budget -= 1;
                    sent_data |= matches!(message, Message::Text(_) | Message::Binary(_));
                    match message {
                        Message::Text(_) | Message::Binary(_) if closing => continue,
                        Message::Binary(_) if v1 => Some(CloseReason::UnsupportedData),
                        // A plain member whose token does not allow publishing (a v1 member
                        // gets an error envelope from the v1 rules): one branch per message.
                        Message::Text(_) | Message::Binary(_)
                            if !v1 && self.grant.as_ref().is_some_and(|g| !g.publish) =>
                        {
                            Some(CloseReason::ReadOnly)
                        }
                        Message::Text(_) | Message::Binary(_) => {
                            let verdict = match cx.config.max_publish_rate {
                                // No limit: this one branch is all a message pays.
                                None => Publish::Accept,
                                Some(rate) => ws
                                    .publish
                                    .on_message(liveness.since_last_message(cx.now), rate),
                            };
                            liveness.saw_message(cx.now);
                            cx.counters.bump(Counter::MessagesIn);
                            match verdict {
                                Publish::Accept if v1 => {
                                    let Message::Text(text) = message else {
                                        continue; // a v1 binary frame closed above
                                    };
                                    let had_grant = self.grant.is_some();
                                    let state = v1::V1State {
                                        nick: &mut self.nick,
                                        hello,
                                        room: self.room.as_ref(),
                                        grant: &mut self.grant,
                                        verifier: cx.site.verifier(),
                                        now: cx.now,
                                        names: v1::NameTaker {
                                            names: cx.site.names(),
                                            session: self.id,
                                            reclaim: None,
                                        },
                                    };
                                    let (id_slot, id) = (&mut ws.id_text, self.id);
                                    let sender = || id_text(id_slot, id, cx.config);
                                    let answer = v1::on_text(&text, state, sender, events);
                                    if !had_grant && self.grant.is_some() {
                                        cx.counters.bump(Counter::TokenOk);
                                    }
                                    match answer {
                                        None => continue,
                                        Some(v1::Answer::Error(code)) => {
                                            cx.counters.bump(Counter::EnvelopeErrors);
                                            io.out().push(Chunk::Shared(envelope::error(code)));
                                            continue;
                                        }
                                        Some(v1::Answer::Refused(refusal)) => {
                                            cx.counters.bump(refusal.counter());
                                            cx.counters.bump(Counter::EnvelopeErrors);
                                            let (code, reason) = if refusal.unauthorized() {
                                                (ErrorCode::Unauthorized, CloseReason::Unauthorized)
                                            } else {
                                                (ErrorCode::Forbidden, CloseReason::RoomForbidden)
                                            };
                                            let error =
                                                envelope::error_saying(code, refusal.text());
                                            io.out().push(Chunk::Shared(error));
                                            Some(reason)
                                        }
                                    }
                                }
                                Publish::Accept => {
                                    let body = match message {
                                        Message::Text(text) => Body::Text(text),
                                        Message::Binary(data) => Body::Binary(data),
                                        _ => continue, // only data messages come here
                                    };
                                    events.push(Event::Message(Post {
                                        sender: id_text(&mut ws.id_text, self.id, cx.config),
                                        nick: None,
                                        user: self.grant.as_ref().map(|g| g.user.clone()),
                                        body,
                                        ts: now_millis(),
                                    }));
                                    continue;
                                }
                                Publish::Drop => {
                                    cx.counters.bump(Counter::RateLimited);
                                    if v1 {
                                        cx.counters.bump(Counter::EnvelopeErrors);
                                        let refusal = envelope::error(ErrorCode::RateLimited);
                                        io.out().push(Chunk::Shared(refusal));
                                    }
                                    continue;
                                }
                                Publish::Flood => {
                                    cx.counters.bump(Counter::RateLimited);
                                    tracing::debug!("flooding past the publish rate: closing");
                                    Some(CloseReason::RateLimit)
                                }
                            }
                        }
                        Message::Close(close) => {
                            match &close {
                                Some(c) => tracing::debug!(
                                    "client closed with code {}: {:?}",
                                    u16::from(c.code),
                                    c.reason.as_str()
                                ),
                                None => tracing::debug!("client closed without a code"),
                            }
                            let code = close.as_ref().map_or(0, |c| u16::from(c.code));
                            if !closing && close.is_some() {
                                // tungstenite echoes the peer's code (an empty close gets an
                                // empty reply, which carries no code to count).
                                cx.counters.close_code(code);
                            }
                            self.close.get_or_insert_with(|| {
                                cx.counters
                                    .bump(Counter::closed_by(CloseReason::ClientClose));
                                self.close_code = code;
                                CloseReason::ClientClose
                            });
                            // Queue tungstenite's reply (or nothing, if this answers our own
                            // close); it reports the exchange complete with ConnectionClosed.
                            let _ = ws.ctx.flush(&mut io);
                            None
                        }
                        // Pings are answered by tungstenite (the pong is already queued), but
                        // pongs to a peer that never reads must not pile up without bound.
                        Message::Ping(_) if io.out().queued_bytes() > cx.config.max_buffered => {
                            io.out().discard_unstarted();
                            cx.counters.bump(Counter::SlowConsumer);
                            Some(CloseReason::SlowConsumer)
                        }
                        // Pongs need nothing: any input already counted as a sign of life.
                        _ => continue,
                    }
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    // tungstenite took all of `input` and returned every whole frame in it.
                    ws.boundary.feed(input);
                    ws.buffered = false;
                    // A client that only answered a ping goes back to holding nothing; one
                    // that sends messages keeps its reader until its next deadline, so that
                    // a publisher does not make one per message (`Session::rest_reader`).
                    let since = liveness.since_last_message(cx.now);
                    if !sent_data && !closing && ws.at_rest(cx.config, since) {
                        *reader = None;
                    }
                    return true;
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    None
                }
                Err(e) => Some(CloseReason::for_ws_error(&e)),
            };
            match failure {
                // Our close frame is out already: one is all the peer gets.
                Some(reason) if !closing => self.fail(reason, cx),
                _ => self.enter_discard(cx),
            }
            return true;
        }
    }

    /// A v1 client just upgraded: with its token's name or a valid `?nick=` it joins now
    /// (unless its token is due in its `hello`); otherwise it is told why (a bad nickname)
    /// and has `handshake_timeout` to send a `hello`.
    pub(super) fn greet_v1(
        &mut self,
        nick: Option<String>,
        reclaim: Option<String>,
        name: Option<Nick>,
        ask: Ask,
        cx: &mut Ctx,
        events: &mut Vec<Event>,
    ) {
        let token_due = self.grant.is_none()
            && cx
                .site
                .verifier()
                .is_some_and(|v| v.mode() == AuthMode::Required);
        let state = v1::Greeted {
            own: &mut self.nick,
            room: self.room.as_ref(),
            names: v1::NameTaker {
                names: cx.site.names(),
                session: self.id,
                reclaim: reclaim.as_deref(),
            },
            user: self.grant.as_deref().map(|g| &*g.user),
        };
        let kept = match v1::greet(nick, name, token_due, ask, state, events) {
            Ok(v1::Greeting::Joined) => return,
            Ok(v1::Greeting::Awaiting(kept)) => kept,
            Err(code) => {
                cx.counters.bump(Counter::EnvelopeErrors);
                self.out.push(Chunk::Shared(envelope::error(code)));
                None
            }
        };
        if let Phase::Open { hello, .. } = &mut self.phase {
            *hello = Some(Box::new(v1::AwaitingHello {
                until: cx.now + cx.config.handshake_timeout,
                ask,
                nick: kept,
                reclaim: reclaim.map(String::into_boxed_str),
            }));
        }
    }
}
