//! The `Http` phase: request heads in, answers out — and the upgrade into `Open`.
//!
//! A request head is bounded by `max_request_head` and `max_headers` and must complete within
//! `handshake_timeout`. Plain requests are answered by the [`Site`](crate::http::Site) and may
//! be pipelined (bounded by `max_buffered` of answers); an upgrade is answered `101` and the
//! rest of the input goes straight to the WebSocket phase.

use super::liveness::{Liveness, Timing};
use super::outbound::Chunk;
use super::{ApiCall, Ctx, Event, Phase, Session, Transport};
use crate::auth::Grant;
use crate::chat::Dialect;
use crate::control::API_ANSWER_WITHIN;
use crate::http::request::{self, Parsed};
use crate::http::{Dispatch, Status, error_response, http_counter, json_error};

impl<S: Transport> Session<S> {
    /// Handles `input`; false when the message budget ran out (the rest is stashed).
    pub(super) fn consume(
        &mut self,
        input: &[u8],
        cx: &mut Ctx,
        events: &mut Vec<Event>,
        budget: &mut usize,
    ) -> bool {
        match self.phase {
            Phase::Http { .. } => self.consume_http(input, cx, events, budget),
            Phase::Open { .. } => self.consume_ws(input, cx, events, budget),
            Phase::Discard { .. } => true,
            Phase::Api(_) => self.consume_api_body(input, cx, events),
        }
    }

    /// Takes the body of a server API request; once complete, hands the request to the loop
    /// ([`Event::Api`]) and waits for its answer. Input after the body is ignored: the
    /// connection closes after the answer.
    fn consume_api_body(&mut self, input: &[u8], cx: &mut Ctx, events: &mut Vec<Event>) -> bool {
        let Phase::Api(call) = &mut self.phase else {
            return true;
        };
        if call.waiting {
            return true;
        }
        let take = call
            .need
            .saturating_sub(call.request.body.len())
            .min(input.len());
        call.request.body.extend_from_slice(&input[..take]);
        if call.request.body.len() == call.need {
            call.waiting = true;
            events.push(Event::Api(std::mem::take(&mut call.request)));
            self.deadline = Some(cx.now + API_ANSWER_WITHIN);
        }
        true
    }

    /// The API service's answer to this session's request: sent, then the connection closes.
    pub fn api_answer(&mut self, response: Vec<u8>, cx: &mut Ctx) {
        if matches!(&self.phase, Phase::Api(call) if call.waiting) {
            self.out.push(Chunk::Owned(response));
            self.enter_discard(cx);
        }
    }

    /// The API service did not answer in time (it always does within
    /// [`crate::control::API_TIMEOUT`], unless it is gone): 504.
    pub(super) fn api_timed_out(&mut self, cx: &mut Ctx) {
        let answer = json_error(
            Status::GatewayTimeout,
            &[],
            "the server API did not answer in time",
        );
        self.out.push(Chunk::Owned(answer.bytes));
        self.enter_discard(cx);
    }

    pub(super) fn consume_http(
        &mut self,
        input: &[u8],
        cx: &mut Ctx,
        events: &mut Vec<Event>,
        budget: &mut usize,
    ) -> bool {
        if let Phase::Http { head, .. } = &mut self.phase {
            head.extend_from_slice(input);
        }
        loop {
            let Phase::Http { head, answered } = &mut self.phase else {
                return true;
            };
            if head.is_empty() {
                return true;
            }
            let cfg = cx.config;
            let (request, len) = match request::parse(head, cfg.max_request_head, cfg.max_headers) {
                Parsed::Partial => return true,
                Parsed::Reject(status) => {
                    cx.counters.bump(http_counter(status));
                    self.out
                        .push(Chunk::Owned(error_response(status, &[]).bytes));
                    self.enter_discard(cx);
                    return true;
                }
                Parsed::Complete(request, len) => (request, len),
            };
            let rest = head.split_off(len);
            *answered = true;
            match cx.site.dispatch(&request, cx.counters) {
                Dispatch::Answer(response) => {
                    self.out.push(Chunk::Owned(response.bytes));
                    if !response.keep_alive {
                        self.enter_discard(cx);
                        return true;
                    }
                    // Pipelined requests wait in `rest`; the next one gets a fresh deadline.
                    *head = rest;
                    self.deadline = Some(cx.now + cfg.handshake_timeout);
                    if self.out.queued_bytes() > cfg.max_buffered {
                        // Pipelining far ahead of reading the answers: cut it off.
                        tracing::debug!("pipelined answers passed max-buffered; closing");
                        self.out.discard_unstarted();
                        self.enter_discard(cx);
                        return true;
                    }
                }
                Dispatch::Api { request, body_len } => {
                    self.phase = Phase::Api(Box::new(ApiCall {
                        request,
                        need: body_len,
                        waiting: false,
                    }));
                    // The body must come within the head's deadline.
                    return self.consume_api_body(&rest, cx, events);
                }
                Dispatch::Upgrade {
                    room,
                    dialect,
                    nick,
                    reclaim,
                    ask,
                    response,
                    identity,
                } => {
                    self.out.push(Chunk::Owned(response));
                    // The token's name wins over `?nick=` (v1 only: plain clients have none).
                    let name = identity.as_ref().and_then(|id| id.name.clone());
                    self.grant = identity.map(|id| Box::new(Grant::of(&id, cx.now)));
                    self.phase = Phase::Open {
                        // Made when the client sends something (`ws_reader`).
                        ws: None,
                        liveness: Liveness::new(&Timing::of(cfg), cx.now),
                        closing_until: None,
                        hello: None,
                    };
                    self.room = Some(room.clone());
                    self.dialect = dialect;
                    events.push(Event::Upgraded);
                    match dialect {
                        Dialect::Plain => events.push(Event::Joined(room, ask)),
                        Dialect::V1 => self.greet_v1(nick, reclaim, name, ask, cx, events),
                    }
                    return self.consume_ws(&rest, cx, events, budget);
                }
            }
        }
    }
}
