//! Starting the server: the listener, the mesh of shards, the acceptor; stopping it.

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::acceptor::{ACCEPTOR_WAKER, Acceptor, ShardDoor};
use crate::config::{Config, Model};
use crate::error::ServerError;
use crate::http::Site;
use crate::http::assets::Assets;
use crate::ids::ShardId;
use crate::limits::{ConnectionRate, PerIpLimit};
use crate::mesh::{MeshLinks, PeerHandle};
use crate::models::history_for;
use crate::models::sharded::Mesh;
use crate::models::shared::{Registry, Shared};
use crate::models::single::{Alone, Listener};
use crate::models::{Entry, Reach};
use crate::shard::{LoopCommon, Shard, ShardParts, WAKER};
use crate::stats::ServerStats;

/// Capacity of each shard's channel of new connections.
const HANDOFF_CAPACITY: usize = 1024;

/// Listen backlog: generous, since connection storms are what this server is for.
const LISTEN_BACKLOG: i32 = 4096;

/// A started server.
pub struct Server {
    local_addr: SocketAddr,
    api_addr: Option<SocketAddr>,
    threads: Vec<JoinHandle<std::io::Result<()>>>,
    stop: ShutdownHandle,
    /// A cluster member gives up its node id once its threads are done.
    departure: Option<crate::cluster::Departure>,
}

/// Starts a graceful shutdown from any thread (e.g. a signal handler thread).
#[derive(Clone)]
pub struct ShutdownHandle {
    stats: Arc<ServerStats>,
    wakers: Vec<Arc<Waker>>,
}

impl ShutdownHandle {
    /// Stops accepting, answers new upgrades 503, and sends every session a close (1001); the
    /// threads end once their sessions are gone or the drain timeout passes.
    pub fn shutdown(&self) {
        self.stats.start_draining();
        for waker in &self.wakers {
            // A failed wake means that thread is gone already.
            let _ = waker.wake();
        }
    }
}

impl Server {
    /// Binds, starts every shard and the acceptor, and returns at once.
    pub fn start(mut config: Config) -> Result<Server, ServerError> {
        config.validate()?;
        if config.model == Model::Single && config.workers != 1 {
            tracing::info!(
                "the single model runs one thread; --workers {} ignored",
                config.workers
            );
            config.workers = 1;
        }
        let tls = config
            .tls
            .as_ref()
            .map(crate::tls::load_config)
            .transpose()?;
        // Before binding: a bad key file is a startup error, like a bad certificate.
        let verifier = crate::auth::Verifier::load(&config)?.map(Arc::new);
        if let Some(v) = &verifier {
            tracing::info!(
                "connection tokens: {:?}, {:?} signatures (docs/auth.md)",
                v.mode(),
                v.algorithm()
            );
        }
        let listener = bind(config.listen, config.socket_send_buffer)?;
        let local_addr = listener.local_addr().map_err(|cause| ServerError::Listen {
            addr: config.listen,
            cause,
        })?;
        let config = Arc::new(config);
        let cluster_stats = config
            .redis
            .as_ref()
            .map(|_| Arc::new(crate::cluster::ClusterStats::default()));
        let stats = Arc::new(match &cluster_stats {
            Some(cluster) => ServerStats::with_cluster(config.workers, cluster.clone()),
            None => ServerStats::new(config.workers),
        });
        let site = Site::new(
            Assets::new(config.static_dir.clone()),
            config.clone(),
            stats.clone(),
        )
        .with_verifier(verifier);
        let per_ip = config
            .max_connections_per_ip
            .map(|max| Arc::new(PerIpLimit::new(max)));

        let mut polls = Vec::new();
        let mut peers = Vec::new();
        let mut inboxes = Vec::new();
        let mut doors = Vec::new();
        let mut handoffs = Vec::new();
        let mut wakers = Vec::new();
        for shard in 0..config.workers {
            let shard_error = |source| ServerError::Shard { shard, source };
            let poll = Poll::new().map_err(shard_error)?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(shard_error)?);
            let (tx, rx) = crossbeam_channel::bounded(config.mesh_capacity);
            let (door_tx, door_rx) = crossbeam_channel::bounded(HANDOFF_CAPACITY);
            peers.push(PeerHandle {
                tx,
                waker: waker.clone(),
            });
            doors.push(ShardDoor {
                tx: door_tx,
                waker: waker.clone(),
            });
            wakers.push(waker);
            polls.push(poll);
            inboxes.push(rx);
            handoffs.push(door_rx);
        }
        let acceptor_poll = Poll::new().map_err(ServerError::Acceptor)?;
        let acceptor_waker =
            Waker::new(acceptor_poll.registry(), ACCEPTOR_WAKER).map_err(ServerError::Acceptor)?;
        wakers.push(Arc::new(acceptor_waker));

        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let pin_core = |i: usize| (config.pin && !cores.is_empty()).then(|| cores[i % cores.len()]);
        let (cluster, departure) = match (&config.redis, &config.node_id, cluster_stats) {
            (Some(url), Some(node), Some(cluster_stats)) => {
                let (link, departure) = crate::cluster::start(
                    url,
                    node,
                    config.presence,
                    // History on: Redis numbers every room's messages.
                    config
                        .history_on()
                        .then_some(crate::cluster::sequencer::Sequencing {
                            size: config.history_size,
                            ttl: config.history_ttl,
                        }),
                    peers.clone(),
                    cluster_stats,
                )?;
                // Only once the URL is known good: a refused one must not look joined first.
                tracing::info!(
                    "cluster member {node} through Redis at {}",
                    crate::cluster::redacted(url)
                );
                (Some(link), Some(departure))
            }
            _ => (None, None),
        };
        let api = crate::api::start(&config, peers.clone(), cluster.clone(), stats.clone())?;
        wakers.extend(api.waker.clone());
        let (roster, roster_thread) = crate::roster::start(peers.clone(), cluster.clone())?;
        let common = LoopCommon {
            config: config.clone(),
            site: site.clone(),
            stats: stats.clone(),
            tls: tls.clone(),
            per_ip: per_ip.clone(),
            api: api.door.clone(),
            roster: Some(roster),
        };
        let mut threads = api.threads;
        threads.push(roster_thread);
        let mut listener = Some(listener);
        let registry = (config.model == Model::Shared)
            .then(|| Registry::new(wakers[..config.workers].to_vec(), history_for(&config, 1)));
        let parts = polls.into_iter().zip(inboxes).zip(handoffs).enumerate();
        for (i, ((poll, inbox), connections)) in parts {
            let id = ShardId(i);
            let entry = match config.model {
                Model::Single => listener.take().map_or(Entry::Closed, |l| {
                    let rate = config.max_connection_rate_per_ip.map(ConnectionRate::new);
                    Entry::Listener(Listener::new(mio::net::TcpListener::from_std(l), rate))
                }),
                Model::Sharded | Model::Shared => Entry::Handoff(connections),
            };
            let parts = ShardParts {
                id,
                poll,
                entry,
                inbox,
                reach: (),
                common: common.clone(),
                cluster: cluster.clone(),
            };
            let core = pin_core(i);
            threads.push(match (config.model, &registry) {
                (Model::Shared, Some(registry)) => {
                    spawn_loop(core, parts.with_reach(Shared::new(id, registry.clone())))?
                }
                (Model::Single, _) => {
                    spawn_loop(core, parts.with_reach(Alone::new(history_for(&config, 1))))?
                }
                _ => {
                    let links = MeshLinks::new(id, peers.clone());
                    let history = history_for(&config, config.workers);
                    let mesh = Mesh::new(id, config.workers, links, history);
                    spawn_loop(core, parts.with_reach(mesh))?
                }
            });
        }
        drop(peers);
        drop(common);

        if let Some(listener) = listener {
            let acceptor = Acceptor {
                poll: acceptor_poll,
                listener: mio::net::TcpListener::from_std(listener),
                doors,
                stats: stats.clone(),
                per_ip,
                rate: config.max_connection_rate_per_ip.map(ConnectionRate::new),
            };
            let handle = std::thread::Builder::new()
                .name("acceptor".into())
                .spawn(move || acceptor.run())
                .map_err(ServerError::Acceptor)?;
            threads.push(handle);
        }
        tracing::info!("{}", start_line(&config, local_addr, tls.is_some()));
        Ok(Server {
            local_addr,
            api_addr: api.local_addr,
            threads,
            stop: ShutdownHandle { stats, wakers },
            departure,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address `--api-listen` bound, if given.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// A handle that starts a graceful shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.stop.clone()
    }

    /// Waits for every thread; the first failure is returned.
    pub fn wait(self) -> Result<(), ServerError> {
        let mut first_error = None;
        for handle in self.threads {
            let name = handle.thread().name().unwrap_or("?").to_owned();
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!("{name} stopped: {e}");
                    first_error.get_or_insert(ServerError::Thread { name, source: e });
                }
                Err(_) => {
                    first_error.get_or_insert(ServerError::ThreadPanicked(name));
                }
            }
        }
        if let Some(departure) = self.departure {
            departure.leave();
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Starts an event loop on a thread named after its model's threads (`shard-2`), pinned to
/// `core`.
fn spawn_loop<R: Reach + Send + 'static>(
    core: Option<core_affinity::CoreId>,
    parts: ShardParts<R>,
) -> Result<JoinHandle<std::io::Result<()>>, ServerError> {
    let name = format!("{}-{}", R::THREAD, parts.id.0);
    spawn_pinned(name, core, move || Shard::new(parts).run())
}

/// Starts a named thread, pinned to `core` when given.
fn spawn_pinned(
    name: String,
    core: Option<core_affinity::CoreId>,
    run: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> Result<JoinHandle<std::io::Result<()>>, ServerError> {
    let thread_name = name.clone();
    let error_name = name.clone();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            if let Some(core) = core
                && !core_affinity::set_for_current(core)
            {
                tracing::warn!("{thread_name}: could not pin to core {}", core.id);
            }
            run()
        })
        .map_err(|source| ServerError::Spawn {
            name: error_name,
            source,
        })
}

fn bind(addr: SocketAddr, send_buffer: Option<usize>) -> Result<StdTcpListener, ServerError> {
    let listen_error = |cause| ServerError::Listen { addr, cause };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(listen_error)?;
    socket.set_reuse_address(true).map_err(listen_error)?;
    if let Some(bytes) = send_buffer {
        // Accepted sockets inherit the listener's buffer sizes (tcp(7): they must be set
        // before listen), so one call covers every connection, with no syscall per accept.
        socket.set_send_buffer_size(bytes).map_err(listen_error)?;
        if let Ok(set) = socket.send_buffer_size() {
            tracing::info!("socket send buffer: {set} bytes per connection (asked {bytes})");
        }
    }
    socket.set_nonblocking(true).map_err(listen_error)?;
    socket.bind(&addr.into()).map_err(listen_error)?;
    socket.listen(LISTEN_BACKLOG).map_err(listen_error)?;
    Ok(socket.into())
}

/// The start-up line: what the server listens on and the limits it enforces, in human units.
fn start_line(config: &Config, local_addr: SocketAddr, tls: bool) -> String {
    use crate::human::{bytes, duration, optional};
    let threads = match config.model {
        Model::Sharded => format!("sharded model, {} shards", config.workers),
        Model::Shared => format!("shared model, {} threads", config.workers),
        Model::Single => "single model, 1 thread".to_owned(),
    };
    let mut line = format!(
        "shardcast listening on {local_addr} ({}): {threads}{}; max message {}, max buffered \
         {}, max connections {}",
        if tls { "TLS" } else { "plain" },
        if config.pin && config.model != Model::Single {
            ", pinned"
        } else {
            ""
        },
        bytes(config.max_message),
        bytes(config.max_buffered),
        config.max_connections,
    );
    if let Some(n) = config.max_connections_per_ip {
        line += &format!(", {n} per IP");
    }
    if let Some(r) = config.max_connection_rate_per_ip {
        line += &format!(", {}/s new per IP (burst {})", r.per_second, r.burst);
    }
    if let Some(r) = config.max_publish_rate {
        line += &format!(
            ", {} messages/s per connection (burst {})",
            r.per_second, r.burst
        );
    }
    line += &format!(
        "; handshake {}, ping {}, pong {}, idle {}, close {}, drain {}; history {}; origins {}",
        duration(config.handshake_timeout),
        optional(config.ping_interval),
        duration(config.pong_timeout),
        optional(config.idle_timeout),
        duration(config.close_timeout),
        duration(config.drain_timeout),
        if config.history_on() {
            format!(
                "{} messages for {}",
                config.history_size,
                duration(config.history_ttl)
            )
        } else {
            "off".to_owned()
        },
        if config.allowed_origins.is_empty() {
            "any".to_owned()
        } else {
            config.allowed_origins.join(" ")
        },
    );
    line
}
