//! A connection that waits in the middle of a frame holds its partial frame, not the thread's
//! shared read block: reads go into one block shared by a thread's connections, and a partial
//! frame left as a view of it would keep the whole block alive (64 KiB per connection that
//! stalls mid-frame after a large read).

use duplex::{Config, Role, WebSocket};
use std::alloc::{GlobalAlloc, Layout, System};
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use tokio::io::AsyncWriteExt;

/// Counts the bytes allocated and not yet freed, so the test sees what connections keep.
struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const CONNECTIONS: usize = 16;
/// The frame announces 40 KiB; 33 KiB of it arrive, so each read uses more than half the
/// shared block and the next read needs a fresh one while a pinned block stays alive.
const ANNOUNCED: usize = 40 * 1024;
const SENT: usize = 33 * 1024;

fn partial_masked_frame() -> Vec<u8> {
    let mut frame = vec![0x82, 0x80 | 126];
    frame.extend_from_slice(&(ANNOUNCED as u16).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend((0..SENT).map(|i| (i % 251) as u8));
    frame
}

#[tokio::test]
async fn a_stalled_partial_frame_does_not_pin_the_shared_read_block() {
    let frame = partial_masked_frame();
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let (server_end, mut client_end) = tokio::io::duplex(64 * 1024);
        client_end.write_all(&frame).await.expect("pipe has room");
        servers.push(WebSocket::from_raw(
            server_end,
            Role::Server,
            Config::default(),
            &[],
        ));
        // Kept open: the server must wait for the rest of the frame, not see an end.
        clients.push(client_end);
    }
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    for server in &mut servers {
        let waiting = poll_fn(|cx| Poll::Ready(server.poll_next_event(cx).is_pending())).await;
        assert!(waiting, "the frame is incomplete, so no event can be ready");
    }
    let kept = LIVE_BYTES.load(Ordering::Relaxed).saturating_sub(before);
    let per_connection = kept / CONNECTIONS;
    // Its own copy is the partial frame plus one read's worth of room (8 KiB): ~41 KiB. A view
    // pinning the shared block would be 64 KiB.
    assert!(
        per_connection < 48 * 1024,
        "a connection stalled mid-frame keeps {per_connection} bytes ({SENT} received)"
    );
    drop(clients);
}
