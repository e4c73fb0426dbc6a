//! The cross-shard channel: one shard hands 1,000 broadcasts (room name + a post with its
//! encoded frame, both refcounted) to another through a bounded crossbeam channel, the way `MeshLinks` does, and
//! the other drains them. Measures the per-message cost of crossing shards.

use std::sync::Arc;
use std::thread;

use criterion::{Criterion, criterion_group, criterion_main};
use crossbeam_channel::bounded;
use shardcast::chat::post::Needs;
use shardcast::chat::{Body, Outgoing, Post};
use shardcast::mesh::ShardMsg;
use shardcast::room::RoomId;

const BATCH: usize = 1000;

fn mesh(c: &mut Criterion) {
    let room = RoomId::parse("bench").expect("a legal room name");
    let post = Outgoing::new(
        Post {
            sender: Arc::from("0.1"),
            nick: None,
            user: None,
            body: Body::Text("x".repeat(64).into()),
            ts: 0,
        },
        Needs {
            plain: true,
            v1: false,
        },
    );
    let (tx, rx) = bounded::<ShardMsg>(16 * 1024);
    let (done_tx, done_rx) = bounded::<usize>(1);
    let receiver = thread::spawn(move || {
        let mut got = 0;
        while let Ok(msg) = rx.recv() {
            if let ShardMsg::Broadcast { post, .. } = msg {
                got += 1;
                drop(post);
                if got == BATCH {
                    if done_tx.send(got).is_err() {
                        return;
                    }
                    got = 0;
                }
            }
        }
    });
    c.bench_function("mesh_1000_broadcasts_across_threads", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                tx.send(ShardMsg::Broadcast {
                    room: room.clone(),
                    post: Arc::clone(&post),
                })
                .expect("the receiver runs");
            }
            done_rx.recv().expect("the receiver reports")
        })
    });
    drop(tx);
    receiver.join().expect("the receiver ends cleanly");
}

criterion_group!(benches, mesh);
criterion_main!(benches);
