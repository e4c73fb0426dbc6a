//! The receive and publish hot paths allocate nothing per message.
//!
//! A counting global allocator (per thread, so concurrent tests do not disturb each other)
//! counts allocations while tens of thousands of frames are consumed and messages encoded.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use shardcast_load::frame::{ClientOpcode, MaskSource};
use shardcast_load::inbound::{Inbound, Recipient};
use shardcast_load::outbox::Outbox;
use shardcast_load::token::{MAX_TOKEN_LEN, Token};
use shardcast_load::tracker::SeqTracker;

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: delegates to the system allocator; the counter is a const-initialised thread local
// without a destructor, so touching it never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Unmasked server text frames carrying tokens of 4 publishers, in order, padded to 64 B.
fn server_frames(messages: u64) -> Vec<u8> {
    let mut wire = Vec::new();
    for seq in 0..messages {
        for publisher in 0..4 {
            let mut token = [0u8; MAX_TOKEN_LEN];
            let len = Token {
                publisher,
                seq,
                sent_ns: 1_000 + seq,
            }
            .encode(&mut token);
            wire.extend_from_slice(&[0x81, 64]);
            wire.extend_from_slice(&token[..len]);
            wire.resize(wire.len() + 64 - len, b'x');
        }
    }
    wire
}

#[test]
fn consuming_frames_does_not_allocate() {
    let start = allocations();
    let wire = server_frames(10_000);
    assert!(allocations() > start, "the counter counts");
    let mut inbound = Inbound::new(1 << 20, None);
    inbound.set_window(0, u64::MAX);
    let mut recipient = Recipient {
        first_publisher: 0,
        trackers: vec![SeqTracker::default(); 4].into(),
        ..Recipient::default()
    };
    let mut outbox = Outbox::new(MaskSource::new(3));

    let before = allocations();
    let (used, _) = inbound.consume(&wire, &mut recipient, &mut outbox, 2_000_000);
    let during = allocations() - before;

    assert_eq!(used, wire.len());
    assert_eq!(inbound.stats.delivered, 40_000);
    assert_eq!(inbound.latency.len(), 40_000);
    assert_eq!(during, 0, "allocations while consuming 40,000 frames");
}

#[test]
fn encoding_messages_does_not_allocate_once_the_outbox_has_grown() {
    let mut outbox = Outbox::new(MaskSource::new(5));
    let mut token = [0u8; MAX_TOKEN_LEN];
    let mut round = |outbox: &mut Outbox| {
        for seq in 0..1_000 {
            let len = Token {
                publisher: 1,
                seq,
                sent_ns: seq,
            }
            .encode(&mut token);
            outbox.push(ClientOpcode::Text, &token[..len], 64 - len);
        }
        outbox
            .flush(&mut std::io::sink())
            .expect("a sink takes everything");
    };
    round(&mut outbox);
    let before = allocations();
    round(&mut outbox);
    assert_eq!(allocations() - before, 0);
}
