//! The API service: checks a request's key, routes it, and carries it out by asking the
//! event loops ([`Control`]) and gathering their replies within [`API_TIMEOUT`].
//!
//! Which loops it asks: a publish, or a history read, goes to the room's sequencer — the
//! room's home shard (`sharded`, history on), else loop 0 (`shared`: the registry orders
//! every room from any loop; `single`: the only loop; history off: any loop delivers
//! everywhere); a room list, a presence list or a disconnect goes to every loop, each
//! answering for its own members.
//!
//! A [`Service`] may serve several threads at once (the main port's `api` thread and the
//! `--api-listen` one): each request has its own reply channel.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, SendTimeoutError};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::json::{self, BadRequest, Whose};
use super::routes::{self, Endpoint};
use crate::chat::Post;
use crate::cluster::{ClusterLink, Question};
use crate::config::{Config, Model};
use crate::control::{API_TIMEOUT, Control, MemberInfo, Reply, Target};
use crate::history::Ask;
use crate::http::request::FullRequest;
use crate::http::{Response, Status, json_error, respond};
use crate::ids::ShardId;
use crate::mesh::{PeerHandle, ShardMsg};
use crate::room::RoomId;

/// Carries out API requests against the event loops.
pub struct Service {
    config: Arc<Config>,
    loops: Vec<PeerHandle>,
    /// The Redis bridge, in a cluster: presence questions to the other nodes, and
    /// disconnects of their sessions, go there.
    cluster: Option<ClusterLink>,
}

/// Why a request could not be carried out (beyond a bad request).
enum Failure {
    BadRequest(BadRequest),
    /// A loop's inbox stayed full, or it is gone.
    Busy,
    /// A loop did not answer within [`API_TIMEOUT`].
    Timeout,
    /// History is off (`--history-size 0`).
    NoHistory,
    /// Redis orders the messages (`--redis` with history) and cannot now.
    Unordered,
}

impl From<BadRequest> for Failure {
    fn from(e: BadRequest) -> Self {
        Failure::BadRequest(e)
    }
}

impl Failure {
    fn response(self) -> Response {
        match self {
            Failure::BadRequest(e) => json_error(Status::BadRequest, &[], &e.0),
            Failure::Busy => json_error(
                Status::Unavailable,
                &[("Retry-After", "1")],
                "the server is too busy to take the request",
            ),
            Failure::Timeout => json_error(
                Status::GatewayTimeout,
                &[],
                "the server's event loops did not answer in time",
            ),
            Failure::NoHistory => {
                json_error(Status::NotFound, &[], "history is off (--history-size 0)")
            }
            Failure::Unordered => json_error(
                Status::Unavailable,
                &[("Retry-After", "1")],
                "the cluster cannot order messages now (Redis unreachable): not sent",
            ),
        }
    }
}

/// A JSON answer (200); the connection closes after it.
fn ok(value: &Value, head_only: bool) -> Response {
    let mut body = value.to_string();
    body.push('\n');
    respond(
        Status::Ok,
        "application/json",
        &[("Cache-Control", "no-store")],
        body.as_bytes(),
        false,
        head_only,
    )
}

impl Service {
    /// A service for the loops reached through `loops` (one per event loop, in order).
    pub fn new(
        config: Arc<Config>,
        loops: Vec<PeerHandle>,
        cluster: Option<ClusterLink>,
    ) -> Service {
        Service {
            config,
            loops,
            cluster,
        }
    }

    /// The whole answer to `request`.
    pub fn handle(&self, request: &FullRequest) -> Response {
        if !self.authorized(request.authorization.as_deref()) {
            return json_error(
                Status::Unauthorized,
                &[("WWW-Authenticate", "apikey")],
                "missing or wrong key: send Authorization: apikey <key>",
            );
        }
        let endpoint = match routes::route(&request.method, request.path()) {
            Ok(endpoint) => endpoint,
            Err(response) => return response,
        };
        let head_only = request.method == "HEAD";
        match self.carry_out(endpoint, request) {
            Ok(value) => ok(&value, head_only),
            Err(failure) => failure.response(),
        }
    }

    /// `Authorization: apikey <key>`, the key compared in constant time (its length is not
    /// hidden).
    fn authorized(&self, header: Option<&str>) -> bool {
        let Some(key) = &self.config.api_key else {
            return false;
        };
        let Some((scheme, given)) = header.and_then(|h| h.trim().split_once(' ')) else {
            return false;
        };
        scheme.eq_ignore_ascii_case("apikey")
            && bool::from(key.as_bytes().ct_eq(given.trim().as_bytes()))
    }

    fn carry_out(&self, endpoint: Endpoint, request: &FullRequest) -> Result<Value, Failure> {
        let max_message = self.config.max_message;
        match endpoint {
            Endpoint::Publish => {
                let (room, body) = json::publish(&request.body, max_message)?;
                let mut results = self.publish(&[room], Post::from_server(body))?;
                results.pop().flatten().ok_or(Failure::Timeout)
            }
            Endpoint::Broadcast => {
                let (rooms, body) = json::broadcast(&request.body, max_message)?;
                let results = self.publish(&rooms, Post::from_server(body))?;
                let results: Vec<Value> = rooms
                    .iter()
                    .zip(results)
                    .map(|(room, result)| {
                        let mut v = result.unwrap_or_else(
                            || json!({"ok": false, "error": "not delivered in time"}),
                        );
                        v["room"] = json!(room.as_str());
                        v
                    })
                    .collect();
                Ok(json!({ "results": results }))
            }
            Endpoint::Rooms => self.rooms(),
            Endpoint::Presence(room) => self.presence(&room),
            Endpoint::History(room) => {
                let ask = json::history_query(
                    request.query_param("since").as_deref(),
                    request.query_param("limit").as_deref(),
                    self.config.history_size,
                )?;
                self.history(&room, ask)
            }
            Endpoint::Disconnect => {
                let d = json::disconnect(&request.body, self.config.node_id.as_deref())?;
                let target = match d.target {
                    Whose::Here(id) => Target::Session(id),
                    Whose::User(user) => {
                        // Every node may have some: the others are told (not confirmed).
                        if let Some(cluster) = &self.cluster
                            && !cluster.disconnect_user(&user, d.code, &d.text)
                        {
                            return Err(Failure::Busy);
                        }
                        Target::User(Arc::from(user))
                    }
                    Whose::Node { node, session } => {
                        return self.forward_disconnect(&node, &session, d.code, &d.text);
                    }
                };
                let replies = self.ask_all(|reply| Control::Disconnect {
                    target: target.clone(),
                    code: d.code,
                    text: d.text.clone(),
                    reply,
                })?;
                let closed: u64 = replies
                    .into_iter()
                    .map(|r| match r {
                        Reply::Disconnected(n) => n,
                        _ => 0,
                    })
                    .sum();
                let told_others = matches!(target, Target::User(_)) && self.cluster.is_some();
                Ok(if told_others {
                    json!({ "disconnected": closed, "forwarded": "all" })
                } else {
                    json!({ "disconnected": closed })
                })
            }
        }
    }

    /// A disconnect of node `node`'s session goes to that node through Redis; nobody waits
    /// for its answer (docs/api.md, "In a cluster").
    fn forward_disconnect(
        &self,
        node: &str,
        session: &str,
        code: u16,
        text: &str,
    ) -> Result<Value, Failure> {
        let Some(cluster) = &self.cluster else {
            return Ok(json!({ "disconnected": 0 }));
        };
        if cluster.disconnect(node, session, code, text) {
            Ok(json!({ "disconnected": 0, "forwarded": node }))
        } else {
            Err(Failure::Busy)
        }
    }

    /// The loop that orders `room`'s messages and keeps its history (module docs).
    fn sequencer(&self, room: &RoomId) -> ShardId {
        if self.config.model == Model::Sharded && self.config.history_on() {
            room.home(self.loops.len())
        } else {
            ShardId(0)
        }
    }

    /// Sends `post` to each of `rooms` through its sequencer; one answer per room, in order
    /// (`None` for a room whose sequencer did not answer in time).
    fn publish(&self, rooms: &[RoomId], post: Post) -> Result<Vec<Option<Value>>, Failure> {
        // Redis orders the messages: while it cannot, say so at once rather than time out.
        if self.config.history_on()
            && let Some(cluster) = &self.cluster
            && !cluster.can_sequence()
        {
            return Err(Failure::Unordered);
        }
        let deadline = Instant::now() + API_TIMEOUT;
        let (reply, replies) = crossbeam_channel::bounded(rooms.len());
        for (index, room) in rooms.iter().enumerate() {
            let control = Control::Publish {
                room: room.clone(),
                post: post.clone(),
                index,
                reply: reply.clone(),
            };
            self.send(self.sequencer(room), control, deadline)?;
        }
        drop(reply);
        let mut results: Vec<Option<Value>> = vec![None; rooms.len()];
        for got in gather(&replies, rooms.len(), deadline) {
            if let Reply::Published { index, placed } = got
                && let Some(slot) = results.get_mut(index)
            {
                *slot = Some(json::published(placed));
            }
        }
        Ok(results)
    }

    fn rooms(&self) -> Result<Value, Failure> {
        let replies = self.ask_all(|reply| Control::Rooms { reply })?;
        // Per room: members of every loop here, and the most recent count of other nodes'.
        let mut rooms: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for reply in replies {
            let Reply::Rooms(counts) = reply else {
                continue;
            };
            for count in counts {
                let entry = rooms.entry(count.room.as_str().to_owned()).or_default();
                entry.0 += count.here;
                entry.1 = entry.1.max(count.others);
            }
        }
        let rooms: Vec<Value> = rooms
            .into_iter()
            .map(|(room, (here, others))| json!({"room": room, "online": here + others}))
            .collect();
        Ok(json!({ "rooms": rooms }))
    }

    /// The room's members on every loop — and, in a cluster, on every other node: each of
    /// their shards answers through Redis within [`CLUSTER_WAIT`]; `complete` says whether
    /// every node heard from lately answered with all its shards.
    fn presence(&self, room: &RoomId) -> Result<Value, Failure> {
        // Asked first, so that the other nodes work while the loops here do.
        let question = self
            .cluster
            .as_ref()
            .map(|c| (c.ask_presence(room), c.nodes()));
        let replies = self.ask_all(|reply| Control::Presence {
            room: room.clone(),
            limit: None,
            reply,
        })?;
        let mut members: Vec<MemberInfo> = replies
            .into_iter()
            .flat_map(|r| match r {
                Reply::Members { members, .. } => members,
                _ => Vec::new(),
            })
            .collect();
        let complete = question.map(|(question, nodes)| match question {
            Some(question) => gather_nodes(&question, nodes, &mut members),
            None => false,
        });
        members.sort_by(|a, b| a.id.cmp(&b.id));
        let listed: Vec<Value> = members.iter().map(json::member).collect();
        let mut answer = json!({
            "room": room.as_str(),
            "online": listed.len(),
            "members": listed,
        });
        if let Some(complete) = complete {
            answer["complete"] = json!(complete);
        }
        Ok(answer)
    }

    fn history(&self, room: &RoomId, ask: Ask) -> Result<Value, Failure> {
        if !self.config.history_on() {
            return Err(Failure::NoHistory);
        }
        let deadline = Instant::now() + API_TIMEOUT;
        let (reply, replies) = crossbeam_channel::bounded(1);
        let control = Control::History {
            room: room.clone(),
            ask,
            reply,
        };
        self.send(self.sequencer(room), control, deadline)?;
        match gather(&replies, 1, deadline).pop() {
            Some(Reply::History(start)) => Ok(json::history(room, &ask, start)),
            _ => Err(Failure::Timeout),
        }
    }

    /// Sends every loop the request `make` builds, and gathers every answer (or fails).
    fn ask_all(
        &self,
        make: impl Fn(crossbeam_channel::Sender<Reply>) -> Control,
    ) -> Result<Vec<Reply>, Failure> {
        let deadline = Instant::now() + API_TIMEOUT;
        let (reply, replies) = crossbeam_channel::bounded(self.loops.len());
        for shard in 0..self.loops.len() {
            self.send(ShardId(shard), make(reply.clone()), deadline)?;
        }
        drop(reply);
        let got = gather(&replies, self.loops.len(), deadline);
        if got.len() < self.loops.len() {
            return Err(Failure::Timeout);
        }
        Ok(got)
    }

    /// Puts `control` into loop `shard`'s inbox (waiting, at most until `deadline`, while it
    /// is full) and wakes the loop.
    fn send(&self, shard: ShardId, control: Control, deadline: Instant) -> Result<(), Failure> {
        let peer = self.loops.get(shard.0).ok_or(Failure::Busy)?;
        let wait = deadline.saturating_duration_since(Instant::now());
        match peer
            .tx
            .send_timeout(ShardMsg::Control(Box::new(control)), wait)
        {
            Ok(()) => {
                // A failed wake means the loop is gone; the reply will not come.
                let _ = peer.waker.wake();
                Ok(())
            }
            Err(SendTimeoutError::Timeout(_) | SendTimeoutError::Disconnected(_)) => {
                Err(Failure::Busy)
            }
        }
    }

    /// Sends loop `shard` the answer for its session `key` (the main port's requests).
    pub fn answer(
        &self,
        shard: ShardId,
        key: crate::ids::SessionKey,
        generation: u64,
        response: Vec<u8>,
    ) {
        let control = Control::Answer {
            key,
            generation,
            response,
        };
        // Not answered: the session answers 504 itself when its wait ends.
        let _ = self.send(shard, control, Instant::now() + API_TIMEOUT);
    }
}

/// How long a presence question waits for the other nodes' answers.
const CLUSTER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes other nodes' answers to `question` into `members` until each of the `nodes` nodes
/// heard from lately has answered with every shard, or [`CLUSTER_WAIT`] passes; true in the
/// first case. (The `who` of v1 clients gathers other nodes' members with it too.)
pub fn gather_nodes(question: &Question, nodes: u64, members: &mut Vec<MemberInfo>) -> bool {
    let deadline = Instant::now() + CLUSTER_WAIT;
    // Per node: its shard count, and the shards that answered.
    let mut answered: BTreeMap<String, (u16, u16)> = BTreeMap::new();
    loop {
        let done =
            answered.len() as u64 >= nodes && answered.values().all(|&(shards, got)| got >= shards);
        if done {
            return true;
        }
        match question.answers.recv_deadline(deadline) {
            Ok(answer) => {
                let entry = answered.entry(answer.node).or_insert((answer.shards, 0));
                entry.1 += 1;
                members.extend(answer.members);
            }
            Err(_) => return false,
        }
    }
}

/// Up to `n` replies, until `deadline`.
fn gather(replies: &Receiver<Reply>, n: usize, deadline: Instant) -> Vec<Reply> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match replies.recv_deadline(deadline) {
            Ok(reply) => got.push(reply),
            Err(_) => break,
        }
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiKey;

    fn service() -> Service {
        let config = Config {
            api_key: ApiKey::new("right-key"),
            ..Config::default()
        };
        Service::new(Arc::new(config), Vec::new(), None)
    }

    fn status(service: &Service, method: &str, target: &str, auth: Option<&str>) -> u16 {
        let request = FullRequest {
            method: method.into(),
            target: target.into(),
            authorization: auth.map(str::to_owned),
            body: Vec::new(),
        };
        service.handle(&request).status.line().0
    }

    #[test]
    fn the_key_is_checked_before_anything_else() {
        let s = service();
        for auth in [
            None,
            Some("right-key"),
            Some("apikey"),
            Some("apikey wrong-key"),
            Some("apikey right-ke"),
            Some("apikey right-keyy"),
            Some("Bearer right-key"),
        ] {
            assert_eq!(status(&s, "GET", "/api/rooms", auth), 401, "{auth:?}");
            assert_eq!(status(&s, "GET", "/api/nothing", auth), 401, "{auth:?}");
        }
        assert_eq!(
            status(&s, "GET", "/api/rooms", Some("apikey right-key")),
            200
        );
        assert_eq!(
            status(&s, "GET", "/api/rooms", Some("ApiKey  right-key ")),
            200
        );
        assert_eq!(
            status(&s, "GET", "/api/nothing", Some("apikey right-key")),
            404
        );
        assert_eq!(
            status(&s, "PUT", "/api/rooms", Some("apikey right-key")),
            405
        );
        assert_eq!(
            status(&s, "POST", "/api/publish", Some("apikey right-key")),
            400
        );
    }

    #[test]
    fn without_a_key_nothing_is_authorized() {
        let s = Service::new(Arc::new(Config::default()), Vec::new(), None);
        assert_eq!(status(&s, "GET", "/api/rooms", Some("apikey ")), 401);
    }
}
