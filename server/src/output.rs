//! The per-connection output queue: whole frames (replies and watch events) waiting to be
//! transmitted, with the stream position of the first untransmitted byte.
//!
//! The queue is part of the persisted connection state. For a ring connection the
//! `stream_position` is the value `rsp_prod` will have once the first untransmitted byte is
//! written; after a crash the ring's real `rsp_prod` may be ahead of it (bytes transmitted
//! after the last commit), and [`OutputQueue::skip_transmitted`] drops exactly those bytes so
//! nothing the guest may already have read is written twice.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

/// What a queued frame is (replies count against the outstanding-request limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrameKind {
    /// The reply to a request.
    Reply,
    /// An unsolicited watch event.
    WatchEvent,
}

/// One queued frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedFrame {
    /// Reply or event.
    pub kind: FrameKind,
    /// Header + payload.
    pub bytes: Vec<u8>,
}

/// Frames waiting for transmission.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputQueue {
    frames: VecDeque<QueuedFrame>,
    /// Bytes of the front frame already transmitted.
    head_sent: usize,
    /// Stream offset (mod 2^32) of the first untransmitted byte.
    stream_position: u32,
    replies: usize,
    events: usize,
    /// Untransmitted bytes (kept so that bounds are checked in O(1)).
    pending: usize,
}

/// Why a reconciliation after restart failed (policy: the connection is marked broken).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconcileError {
    /// The ring claims more bytes were transmitted than the persisted queue held.
    AheadOfQueue {
        /// Bytes the ring is ahead of the persisted position.
        ahead: u32,
        /// Bytes the queue held.
        queued: usize,
    },
}

impl OutputQueue {
    /// An empty queue whose next byte goes to stream offset `stream_position`.
    pub fn starting_at(stream_position: u32) -> OutputQueue {
        OutputQueue {
            stream_position,
            ..OutputQueue::default()
        }
    }

    /// Appends a frame.
    pub fn push(&mut self, kind: FrameKind, bytes: Vec<u8>) {
        assert!(!bytes.is_empty());
        match kind {
            FrameKind::Reply => self.replies += 1,
            FrameKind::WatchEvent => self.events += 1,
        }
        self.pending += bytes.len();
        self.frames.push_back(QueuedFrame { kind, bytes });
    }

    /// Replies queued and not completely transmitted.
    pub fn replies_pending(&self) -> usize {
        self.replies
    }

    /// Watch events queued and not completely transmitted.
    pub fn events_pending(&self) -> usize {
        self.events
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Untransmitted bytes.
    pub fn pending_bytes(&self) -> usize {
        self.pending
    }

    /// Stream offset of the next byte to transmit.
    pub fn stream_position(&self) -> u32 {
        self.stream_position
    }

    /// The longest contiguous run of untransmitted bytes (part of the front frame).
    pub fn front_chunk(&self) -> &[u8] {
        match self.frames.front() {
            Some(frame) => &frame.bytes[self.head_sent..],
            None => &[],
        }
    }

    /// Records that `count` bytes from the front were transmitted.
    pub fn consume(&mut self, mut count: usize) {
        while count > 0 {
            let Some(front) = self.frames.front() else {
                panic!("consumed more output than queued");
            };
            let left = front.bytes.len() - self.head_sent;
            let step = left.min(count);
            self.head_sent += step;
            self.pending -= step;
            count -= step;
            self.stream_position = self.stream_position.wrapping_add(step as u32);
            if self.head_sent == front.bytes.len() {
                let kind = front.kind;
                self.frames.pop_front();
                self.head_sent = 0;
                match kind {
                    FrameKind::Reply => self.replies -= 1,
                    FrameKind::WatchEvent => self.events -= 1,
                }
            }
        }
    }

    /// After a restart: the peer's stream is already at `transmitted_position`; drop the
    /// bytes between the persisted position and it (they were written before the crash).
    pub fn skip_transmitted(&mut self, transmitted_position: u32) -> Result<u32, ReconcileError> {
        let ahead = transmitted_position.wrapping_sub(self.stream_position);
        let queued = self.pending_bytes();
        if ahead as usize > queued {
            return Err(ReconcileError::AheadOfQueue { ahead, queued });
        }
        self.consume(ahead as usize);
        assert_eq!(self.stream_position, transmitted_position);
        Ok(ahead)
    }

    /// Drops everything (connection reset); the stream continues at `stream_position`.
    pub fn reset(&mut self, stream_position: u32) {
        *self = OutputQueue::starting_at(stream_position);
    }

    /// Checks the invariants of a state read back from the log.
    pub fn is_consistent(&self) -> bool {
        let replies = self
            .frames
            .iter()
            .filter(|frame| frame.kind == FrameKind::Reply)
            .count();
        let head_ok = match self.frames.front() {
            Some(front) => self.head_sent < front.bytes.len(),
            None => self.head_sent == 0,
        };
        let pending = self
            .frames
            .iter()
            .map(|frame| frame.bytes.len())
            .sum::<usize>()
            .checked_sub(self.head_sent);
        head_ok
            && pending == Some(self.pending)
            && replies == self.replies
            && self.frames.len() - replies == self.events
            && self.frames.iter().all(|frame| !frame.bytes.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn consume_across_frames_counts_replies() {
        let mut queue = OutputQueue::starting_at(u32::MAX - 2);
        queue.push(FrameKind::Reply, vec![1; 5]);
        queue.push(FrameKind::WatchEvent, vec![2; 3]);
        assert_eq!(queue.replies_pending(), 1);
        queue.consume(6);
        assert_eq!(queue.replies_pending(), 0);
        assert_eq!(queue.front_chunk(), &[2, 2]);
        assert_eq!(queue.stream_position(), 3); // wrapped
        assert!(queue.is_consistent());
    }

    #[test]
    fn skip_transmitted_reconciles_exactly() {
        let mut queue = OutputQueue::starting_at(100);
        queue.push(FrameKind::Reply, vec![1; 20]);
        queue.push(FrameKind::Reply, vec![2; 20]);
        assert_eq!(queue.skip_transmitted(125), Ok(25));
        assert_eq!(queue.front_chunk(), &[2; 15]);
        assert_eq!(
            queue.skip_transmitted(200),
            Err(ReconcileError::AheadOfQueue {
                ahead: 75,
                queued: 15
            })
        );
        assert_eq!(queue.skip_transmitted(125), Ok(0));
    }
}
