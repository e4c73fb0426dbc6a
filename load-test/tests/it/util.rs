//! Shared helpers: the server binary, command-line parsing, and a misbehaving relay.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;

use clap::Parser;
use shardcast_load::cli::{Cli, Command as CliCommand, Scenario};
use shardcast_load::server_process::ServerProcess;
use shardcast_load::token::{Token, TokenScanner};
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

/// The shardcast release binary: $SHARDCAST_BIN, or the workspace's, built once if missing.
pub fn shardcast_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("SHARDCAST_BIN") {
            return PathBuf::from(bin);
        }
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let bin = manifest.join("../target/release/shardcast");
        if !bin.exists() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--release", "-p", "shardcast"])
                .current_dir(manifest.join(".."))
                .status()
                .expect("run cargo build for the shardcast binary");
            assert!(status.success(), "building shardcast failed");
        }
        bin
    })
    .clone()
}

/// Starts shardcast on an ephemeral loopback port.
pub fn start_shardcast(workers: usize) -> ServerProcess {
    start_shardcast_with(workers, &[])
}

/// Starts shardcast on an ephemeral loopback port, with `extra` arguments.
pub fn start_shardcast_with(workers: usize, extra: &[&str]) -> ServerProcess {
    let mut args = [
        "--listen",
        "127.0.0.1:0",
        "--no-pin",
        "--workers",
        &workers.to_string(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    ServerProcess::start(&shardcast_bin(), &args).expect("start shardcast")
}

/// Parses a scenario command line exactly as the binary would.
pub fn scenario(args: &[&str]) -> Scenario {
    let mut argv = vec!["shardcast-load"];
    argv.extend_from_slice(args);
    argv.push("--quiet");
    match Cli::try_parse_from(argv)
        .expect("valid command line")
        .command
    {
        CliCommand::Scenario(s) => s,
        CliCommand::Compare(_) => panic!("expected a scenario"),
    }
}

/// How the test relay misbehaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mischief {
    /// (publisher, seq) never relayed to anyone.
    pub drop: Option<(u32, u64)>,
    /// (publisher, seq) relayed twice to everyone.
    pub duplicate: Option<(u32, u64)>,
    /// (publisher, seq): relayed only after that publisher's next message.
    pub delay: Option<(u32, u64)>,
    pub wrap: Wrap,
}

/// How the relay rewrites each message's text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Wrap {
    #[default]
    Verbatim,
    /// `user-3: <text>`
    Nick,
    /// `{"nick":"user-3","text":"<text>","ts":1}`
    Json,
}

enum HubEvent {
    Join(Box<WebSocket<TcpStream>>),
    Text { sender: usize, text: String },
}

/// A minimal WebSocket broadcast relay (one room, tungstenite on std threads) that delivers
/// every message to every member, sender included, after applying `mischief`.
pub fn start_relay(mischief: Mischief) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
    let addr = listener.local_addr().expect("relay address");
    let (hub_tx, hub_rx) = mpsc::channel::<HubEvent>();
    thread::spawn(move || hub(hub_rx, mischief));
    thread::spawn(move || {
        for (sender, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let hub_tx = hub_tx.clone();
            thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let Ok(mut reader) = tungstenite::accept(stream) else {
                    return;
                };
                let Ok(write_half) = reader.get_ref().try_clone() else {
                    return;
                };
                let writer = WebSocket::from_raw_socket(write_half, Role::Server, None);
                if hub_tx.send(HubEvent::Join(Box::new(writer))).is_err() {
                    return;
                }
                while let Ok(message) = reader.read() {
                    match message {
                        Message::Text(text) => {
                            let text = text.as_str().to_string();
                            if hub_tx.send(HubEvent::Text { sender, text }).is_err() {
                                return;
                            }
                        }
                        Message::Close(_) => return,
                        _ => {}
                    }
                }
            });
        }
    });
    addr
}

fn hub(events: mpsc::Receiver<HubEvent>, mischief: Mischief) {
    let scanner = TokenScanner::default();
    let mut members: Vec<Box<WebSocket<TcpStream>>> = Vec::new();
    let mut delayed: Option<String> = None;
    for event in events {
        let (sender, text) = match event {
            HubEvent::Join(ws) => {
                members.push(ws);
                continue;
            }
            HubEvent::Text { sender, text } => (sender, text),
        };
        let mut token = None;
        scanner.scan(text.as_bytes(), |t: Token| {
            token = Some((t.publisher, t.seq))
        });
        let wrapped = match mischief.wrap {
            Wrap::Verbatim => text,
            Wrap::Nick => format!("user-{sender}: {text}"),
            Wrap::Json => format!(r#"{{"nick":"user-{sender}","text":"{text}","ts":1}}"#),
        };
        if token.is_some() && token == mischief.drop {
            continue;
        }
        if token.is_some() && token == mischief.delay {
            delayed = Some(wrapped);
            continue;
        }
        let copies = if token.is_some() && token == mischief.duplicate {
            2
        } else {
            1
        };
        let mut outgoing = vec![wrapped; copies];
        if let (Some(held), Some((publisher, _)), Some((delayed_publisher, _))) =
            (&delayed, token, mischief.delay)
            && publisher == delayed_publisher
        {
            outgoing.push(held.clone());
            delayed = None;
        }
        members.retain_mut(|ws| {
            outgoing
                .iter()
                .all(|text| ws.send(Message::text(text.clone())).is_ok())
        });
    }
}
