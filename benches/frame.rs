//! Encoding one broadcast frame, which happens once per message whatever the room size:
//! shardcast's single-allocation `encode_shared` beside tungstenite's `Frame::format` into a
//! `Vec` plus the copy into an `Arc<[u8]>` it would need to be shared.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use shardcast::frame::{OP_TEXT, encode_shared};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};

fn encode(c: &mut Criterion) {
    for size in [64usize, 4096] {
        let payload = vec![b'x'; size];
        let mut group = c.benchmark_group(format!("encode_{size}B"));
        group.bench_function("shardcast_encode_shared", |b| {
            b.iter(|| encode_shared(OP_TEXT, black_box(&payload)))
        });
        group.bench_function("tungstenite_format_then_arc", |b| {
            b.iter(|| {
                let frame = Frame::message(payload.clone(), OpCode::Data(Data::Text), true);
                let mut out = Vec::with_capacity(size + 10);
                frame.format(&mut out).expect("a Vec takes everything");
                Arc::<[u8]>::from(out)
            })
        });
        group.finish();
    }
}

criterion_group!(frame, encode);
criterion_main!(frame);
