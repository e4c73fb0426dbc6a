//! The server API (docs/api.md): HTTP + JSON for the application servers behind shardcast —
//! publish into rooms, list rooms and their members, read a room's history, disconnect
//! sessions. It is on only when a key is configured.
//!
//! Where requests come from:
//!
//! * **`/api/` on the main port** (no `--api-listen`): the session that read the request
//!   reads its body and the loop hands it over ([`ApiDoor`], a bounded channel) to the `api`
//!   thread, which carries it out and sends the answer back through the loop's inbox; the
//!   session waits for it in its own phase (with a deadline), so the loop never blocks;
//! * **`--api-listen ADDR`** ([`listen`]): a small blocking HTTP/1.1 server of its own
//!   (thread `api-listen`, one short-lived thread per connection, at most
//!   [`listen::MAX_CONNECTIONS`]), and `/api/` on the main port is 404.
//!
//! Either way the [`Service`] carries the request out by asking the event loops through
//! their inboxes (`crate::control`): the loops own every room and session, and nothing of
//! theirs is shared or locked for the API. The message path does not change: a published
//! message goes through the same fan-out as a member's.

mod json;
pub mod listen;
mod routes;
mod service;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use mio::Waker;

use crate::cluster::ClusterLink;
use crate::config::Config;
use crate::error::ServerError;
use crate::http::request::FullRequest;
use crate::ids::{SessionKey, ShardId};
use crate::mesh::PeerHandle;
use crate::stats::ServerStats;
pub use service::{Service, gather_nodes};

/// Main-port requests that may wait for the `api` thread; past it a request is answered 503.
const QUEUE: usize = 64;

/// A request a session read on the main port, and where its answer goes.
pub struct Job {
    request: Box<FullRequest>,
    shard: ShardId,
    key: SessionKey,
    generation: u64,
}

/// How a loop hands the `api` thread a request (held by every loop).
#[derive(Clone, Debug)]
pub struct ApiDoor {
    tx: Sender<Job>,
}

impl ApiDoor {
    /// Hands over `request`, read by session `key` (of `generation`) of loop `shard`. False
    /// when the thread has too many waiting (or is gone): the caller answers 503.
    pub fn submit(
        &self,
        request: Box<FullRequest>,
        shard: ShardId,
        key: SessionKey,
        generation: u64,
    ) -> bool {
        let job = Job {
            request,
            shard,
            key,
            generation,
        };
        self.tx.try_send(job).is_ok()
    }
}

/// The API's parts, started.
#[derive(Default)]
pub struct Started {
    /// For the loops: where main-port requests go (`None`: not served there).
    pub door: Option<ApiDoor>,
    /// Threads to join.
    pub threads: Vec<JoinHandle<io::Result<()>>>,
    /// Wakes the `--api-listen` thread, to see the draining flag.
    pub waker: Option<Arc<Waker>>,
    /// The address `--api-listen` bound.
    pub local_addr: Option<SocketAddr>,
}

/// Starts the API as `config` says (nothing without a key), over `loops` (one handle per
/// event loop, in order) and, in a cluster, the Redis bridge.
pub fn start(
    config: &Arc<Config>,
    loops: Vec<PeerHandle>,
    cluster: Option<ClusterLink>,
    stats: Arc<ServerStats>,
) -> Result<Started, ServerError> {
    if config.api_key.is_none() {
        return Ok(Started::default());
    }
    let service = Arc::new(Service::new(config.clone(), loops, cluster));
    if let Some(addr) = config.api_listen {
        return listen::start(addr, service, config.clone(), stats);
    }
    let (tx, rx) = crossbeam_channel::bounded(QUEUE);
    let thread = std::thread::Builder::new()
        .name("api".into())
        .spawn(move || serve_main_port(&service, &rx))
        .map_err(ServerError::Api)?;
    Ok(Started {
        door: Some(ApiDoor { tx }),
        threads: vec![thread],
        ..Started::default()
    })
}

/// The `api` thread: carries out the main port's requests one at a time, until every loop
/// (every [`ApiDoor`]) is gone.
fn serve_main_port(service: &Service, jobs: &Receiver<Job>) -> io::Result<()> {
    for job in jobs {
        let response = service.handle(&job.request);
        service.answer(job.shard, job.key, job.generation, response.bytes);
    }
    Ok(())
}
