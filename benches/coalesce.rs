//! Outbound-queue coalescing: 64 queued 64-byte frames leaving through one `writev` (what a
//! session does at the end of a loop turn) beside one `write` per frame, into a real socket
//! (a Unix socket pair drained by another thread), so the syscall cost is included.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;

use criterion::{Criterion, criterion_group, criterion_main};
use shardcast::frame::{OP_TEXT, encode_shared};
use shardcast::session::outbound::{Chunk, Flushed, OutQueue};

fn coalesce(c: &mut Criterion) {
    let (mut writer, mut reader) = UnixStream::pair().expect("a socket pair");
    let drain = thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    let frame = encode_shared(OP_TEXT, &[b'x'; 64]);
    let mut group = c.benchmark_group("flush_64_frames");
    group.bench_function("one_writev", |b| {
        b.iter(|| {
            let mut q = OutQueue::default();
            for _ in 0..64 {
                q.push(Chunk::Shared(frame.clone()));
            }
            // Blocking socket: the loop ends when everything is written.
            while q
                .write_to(&mut writer, &mut 0)
                .expect("the drain thread reads")
                != Flushed::All
            {}
        })
    });
    group.bench_function("write_per_frame", |b| {
        b.iter(|| {
            for _ in 0..64 {
                writer.write_all(&frame).expect("the drain thread reads");
            }
        })
    });
    group.finish();
    drop(writer);
    drain.join().expect("the drain thread ends");
}

criterion_group!(benches, coalesce);
criterion_main!(benches);
