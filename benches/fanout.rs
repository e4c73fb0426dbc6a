//! Micro-benchmarks of the broadcast hot path, without sockets.
//!
//! * `encode`: framing one chat message once into a shared `Arc<[u8]>` (done once per message,
//!   whatever the room size).
//! * `fanout_1000`: queueing that frame for 1,000 members (a refcount bump and a queue push
//!   each), which is what a shard does per message per local member.
//! * `flush_coalesced`: one session's queue of 64 pending frames leaving in vectored writes,
//!   as at the end of a loop turn (the sink is a `Vec`, so this measures our side only).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use shardcast::session::frame::{OP_TEXT, encode_shared};
use shardcast::session::outbound::{Chunk, OutQueue};

fn benches(c: &mut Criterion) {
    let payload = [b'x'; 64];
    c.bench_function("encode_64B", |b| {
        b.iter(|| encode_shared(OP_TEXT, black_box(&payload)))
    });

    let frame = encode_shared(OP_TEXT, &payload);
    let mut queues: Vec<OutQueue> = (0..1000).map(|_| OutQueue::default()).collect();
    c.bench_function("fanout_1000_members", |b| {
        b.iter(|| {
            for q in &mut queues {
                q.push(Chunk::Shared(frame.clone()));
            }
            for q in &mut queues {
                q.discard_unstarted();
            }
        })
    });

    let mut sink = Vec::with_capacity(1 << 20);
    c.bench_function("flush_64_frames_coalesced", |b| {
        b.iter(|| {
            let mut q = OutQueue::default();
            for _ in 0..64 {
                q.push(Chunk::Shared(frame.clone()));
            }
            sink.clear();
            q.write_to(&mut sink).expect("a Vec takes everything");
            black_box(sink.len())
        })
    });
}

criterion_group!(fanout, benches);
criterion_main!(fanout);
