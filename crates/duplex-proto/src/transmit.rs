//! The outbound queue: encoded frames waiting to be written.
//!
//! Small frames are copied into one contiguous buffer so that many of them leave in one write;
//! large payloads are queued by reference (`Bytes`), so a broadcast shares one allocation
//! across connections and nothing large is copied on a server.

use crate::frame::{encode_header, FrameHeader};
use crate::mask::apply_mask;
use bytes::{Buf, Bytes};
use std::collections::VecDeque;
use std::io::IoSlice;

/// Payloads up to this size are copied next to their header; larger ones are queued by reference.
const INLINE_PAYLOAD_MAX: usize = 4096;

/// Longest frame header: 2 bytes, 8 of extended length, 4 of masking key.
const MAX_HEADER_LEN: usize = 14;

/// An empty queue keeps an append buffer up to this size, so small messages do not allocate
/// each time; a larger one is freed (see [`TransmitQueue::release_if_empty`]).
pub const IDLE_KEEP_CAPACITY: usize = 256;

/// Bytes waiting to be written to the transport, in order. Implements [`Buf`], so a runtime can
/// write it with vectored I/O (`chunks_vectored`) and `advance` by what was written.
#[derive(Debug, Default)]
pub struct TransmitQueue {
    /// Frozen chunks, all before `tail`. Boxed and made at the first large payload (then
    /// kept): every connection holds this field, and many only ever send small frames.
    // The box is the point: 8 bytes in every connection instead of 32.
    #[allow(clippy::box_collection)]
    chunks: Option<Box<VecDeque<Bytes>>>,
    /// Where headers and small payloads are appended; `tail[tail_start..]` waits.
    ///
    /// A plain `Vec` with a cursor: once written out it is cleared in place, so the next
    /// small frame is a copy into memory already there (no reserve or reclaim per message).
    tail: Vec<u8>,
    tail_start: usize,
    len: usize,
}

impl TransmitQueue {
    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues one frame. `header.mask` set means the payload is masked on the way in (client).
    pub(crate) fn push_frame(&mut self, header: FrameHeader, payload: Bytes) {
        let copied = header.mask.is_some() || payload.len() <= INLINE_PAYLOAD_MAX;
        self.make_room(MAX_HEADER_LEN + if copied { payload.len() } else { 0 });
        let before = self.tail.len();
        encode_header(&header, &mut self.tail);
        self.len += self.tail.len() - before + payload.len();
        match header.mask {
            Some(key) => {
                let start = self.tail.len();
                self.tail.extend_from_slice(&payload);
                apply_mask(&mut self.tail[start..], key, 0);
            }
            None if payload.len() <= INLINE_PAYLOAD_MAX => self.tail.extend_from_slice(&payload),
            None => {
                self.freeze_tail();
                self.chunks_mut().push_back(payload);
            }
        }
    }

    /// Ensures `additional` bytes fit after what waits in the append buffer. Space already
    /// written out is reused first (moving what waits to the front), so a queue that never
    /// fully drains does not keep everything it ever held.
    fn make_room(&mut self, additional: usize) {
        if self.tail.capacity() - self.tail.len() >= additional {
            return;
        }
        if self.tail_start > 0 {
            self.tail.drain(..self.tail_start);
            self.tail_start = 0;
        }
        self.tail.reserve(additional);
    }

    /// Moves what waits in the append buffer to the chunk list (no copy), before a chunk
    /// queued by reference.
    fn freeze_tail(&mut self) {
        if self.tail.len() > self.tail_start {
            let mut frozen = Bytes::from(std::mem::take(&mut self.tail));
            frozen.advance(self.tail_start);
            self.chunks_mut().push_back(frozen);
        } else {
            self.tail.clear();
        }
        self.tail_start = 0;
    }

    /// Queues bytes that are already an encoded frame (shared across connections): small ones
    /// are copied next to what is queued, large ones queued by reference.
    pub(crate) fn push_encoded(&mut self, frame: &Bytes) {
        self.len += frame.len();
        if frame.len() <= INLINE_PAYLOAD_MAX {
            self.make_room(frame.len());
            self.tail.extend_from_slice(frame);
        } else {
            self.freeze_tail();
            self.chunks_mut().push_back(frame.clone());
        }
    }

    fn chunks_mut(&mut self) -> &mut VecDeque<Bytes> {
        self.chunks.get_or_insert_with(Box::default)
    }

    /// Takes the next contiguous chunk to write, if any.
    pub fn pop_chunk(&mut self) -> Option<Bytes> {
        let chunk = match self.chunks.as_mut().and_then(|c| c.pop_front()) {
            Some(c) => c,
            None if self.tail.len() > self.tail_start => {
                self.freeze_tail();
                self.chunks.as_mut().and_then(|c| c.pop_front())?
            }
            None => return None,
        };
        self.len -= chunk.len();
        Some(chunk)
    }
}

impl TransmitQueue {
    /// Frees the queue's buffers if nothing waits, but for an append buffer of at most
    /// [`IDLE_KEEP_CAPACITY`] bytes, so an idle connection holds little or nothing.
    pub fn release_if_empty(&mut self) {
        if self.len != 0 {
            return;
        }
        if self.tail.capacity() > IDLE_KEEP_CAPACITY {
            self.tail = Vec::new();
            self.tail_start = 0;
        }
        if let Some(chunks) = &mut self.chunks {
            if chunks.capacity() != 0 {
                **chunks = VecDeque::new();
            }
        }
    }

    /// Bytes of buffer capacity held: the append buffer plus the chunk list (chunks queued by
    /// reference are not counted: they are shared payloads).
    pub fn capacity(&self) -> usize {
        self.tail.capacity()
            + self
                .chunks
                .as_ref()
                .map_or(0, |c| c.capacity() * std::mem::size_of::<Bytes>())
    }
}

impl Buf for TransmitQueue {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        match self.chunks.as_ref().and_then(|c| c.front()) {
            Some(c) => c,
            None => &self.tail[self.tail_start..],
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for chunk in self
            .chunks
            .iter()
            .flat_map(|c| c.iter())
            .map(|c| &c[..])
            .chain(std::iter::once(&self.tail[self.tail_start..]))
        {
            if n == dst.len() {
                break;
            }
            if !chunk.is_empty() {
                dst[n] = IoSlice::new(chunk);
                n += 1;
            }
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(
            cnt <= self.len,
            "advance past the end of the transmit queue"
        );
        self.len -= cnt;
        while cnt > 0 {
            match self.chunks.as_mut().and_then(|c| c.front_mut()) {
                Some(front) if front.len() <= cnt => {
                    cnt -= front.len();
                    self.chunks.as_mut().and_then(|c| c.pop_front());
                }
                Some(front) => {
                    front.advance(cnt);
                    cnt = 0;
                }
                None => {
                    self.tail_start += cnt;
                    if self.tail_start == self.tail.len() {
                        // All written: append from the start again.
                        self.tail.clear();
                        self.tail_start = 0;
                    }
                    cnt = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OpCode;

    fn header(len: usize, mask: Option<[u8; 4]>) -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Binary,
            mask,
            payload_len: len as u64,
        }
    }

    #[test]
    fn large_payload_is_queued_by_reference() {
        let mut q = TransmitQueue::default();
        let payload = Bytes::from(vec![7u8; 10_000]);
        let ptr = payload.as_ptr();
        q.push_frame(header(10_000, None), payload);
        assert_eq!(q.len(), 4 + 10_000);
        let head = q.pop_chunk().unwrap();
        assert_eq!(head.len(), 4);
        let body = q.pop_chunk().unwrap();
        assert_eq!(body.as_ptr(), ptr);
        assert!(q.pop_chunk().is_none());
        assert!(q.is_empty());
    }

    #[test]
    fn small_frames_coalesce_and_advance_across_chunks() {
        let mut q = TransmitQueue::default();
        q.push_frame(header(3, None), Bytes::from_static(b"abc"));
        q.push_frame(header(5000, None), Bytes::from(vec![1u8; 5000]));
        q.push_frame(header(2, None), Bytes::from_static(b"de"));
        let total = q.len();
        assert_eq!(total, 5 + 4 + 5000 + 4);
        let mut all = Vec::new();
        while q.has_remaining() {
            let take = q.chunk().len().min(7);
            all.extend_from_slice(&q.chunk()[..take]);
            q.advance(take);
        }
        assert_eq!(all.len(), total);
        assert_eq!(&all[..5], &[0x82, 3, b'a', b'b', b'c']);
        assert_eq!(&all[all.len() - 2..], b"de");
    }

    #[test]
    fn a_queue_that_never_drains_reuses_written_space() {
        let mut q = TransmitQueue::default();
        let mut written = Vec::new();
        let mut expected = Vec::new();
        for i in 0..10_000u32 {
            let payload = Bytes::from(i.to_be_bytes().repeat(25));
            let mut frame = vec![0x82, 100];
            frame.extend_from_slice(&payload);
            expected.extend_from_slice(&frame);
            q.push_frame(header(100, None), payload);
            // A slow peer: less than one frame goes out per frame queued, so the queue never
            // empties; what was written must not stay allocated.
            let take = q.chunk().len().min(90);
            written.extend_from_slice(&q.chunk()[..take]);
            q.advance(take);
            assert!(
                q.capacity() <= 4 * q.len() + 1024,
                "{} held for {} waiting",
                q.capacity(),
                q.len()
            );
        }
        while q.has_remaining() {
            let take = q.chunk().len();
            written.extend_from_slice(&q.chunk()[..take]);
            q.advance(take);
        }
        assert_eq!(written, expected);
    }

    #[test]
    fn masked_payload_is_masked_in_the_queue() {
        let mut q = TransmitQueue::default();
        q.push_frame(
            header(5, Some([0x37, 0xfa, 0x21, 0x3d])),
            Bytes::from_static(b"Hello"),
        );
        let bytes = q.pop_chunk().unwrap();
        // RFC 6455 §5.7 example.
        assert_eq!(
            &bytes[..],
            &[0x82, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }
}
