//! Fan-out of one chat message to the 1,000 members of a room on one shard, through real
//! `Session`s over mock sockets that accept everything: what a shard does per message per local
//! member (a refcount bump and a queue push), and then per member per loop turn (one vectored
//! write). The mock makes this our cost alone; the kernel's is in `coalesce`.

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use shardcast::Config;
use shardcast::frame::{OP_TEXT, encode_shared};
use shardcast::http::Site;
use shardcast::http::assets::Assets;
use shardcast::metrics::Counters;
use shardcast::session::{Ctx, Session, Transport};
use shardcast::stats::ServerStats;

/// A socket that has sent an upgrade request and takes every write.
struct MockSocket {
    input: &'static [u8],
    written: usize,
}

impl Read for MockSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.input.len().min(buf.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for MockSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len();
        Ok(buf.len())
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let n = bufs.iter().map(|b| b.len()).sum();
        self.written += n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for MockSocket {
    fn shutdown_write(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const UPGRADE: &[u8] = b"GET /bench HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn fanout(c: &mut Criterion) {
    let config = Config::default();
    let site = Site::new(
        Assets::default(),
        Arc::new(config.clone()),
        Arc::new(ServerStats::new(1)),
    );
    let mut counters = Counters::default();
    let mut scratch = vec![0u8; 4096];
    let mut events = Vec::new();
    let now = Instant::now();
    let mut members: Vec<Session<MockSocket>> = (0..1000)
        .map(|_| {
            let socket = MockSocket {
                input: UPGRADE,
                written: 0,
            };
            let mut session = Session::new(socket, &config, now);
            let mut cx = Ctx {
                config: &config,
                site: &site,
                now,
                counters: &mut counters,
            };
            session.on_readable(&mut scratch, &mut cx, &mut events);
            session.flush(&mut counters);
            session
        })
        .collect();
    let frame = encode_shared(OP_TEXT, &[b'x'; 64]);

    let mut group = c.benchmark_group("fanout_1000_members");
    group.bench_function("queue_only", |b| {
        b.iter(|| {
            let mut cx = Ctx {
                config: &config,
                site: &site,
                now,
                counters: &mut counters,
            };
            for member in &mut members {
                black_box(member.push_broadcast(&frame, &mut cx));
            }
            for member in &mut members {
                member.flush(cx.counters);
            }
        })
    });
    group.bench_function("queue_4_then_flush", |b| {
        // Four messages per loop turn: four pushes, one vectored write per member.
        b.iter(|| {
            let mut cx = Ctx {
                config: &config,
                site: &site,
                now,
                counters: &mut counters,
            };
            for _ in 0..4 {
                for member in &mut members {
                    black_box(member.push_broadcast(&frame, &mut cx));
                }
            }
            for member in &mut members {
                member.flush(cx.counters);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
