//! Link counts the kernel is about to lower on its own. When an UNLINK (or a RENAME over an
//! existing name) succeeds, the task that asked lowers the inode's cached `i_nlink` by one once
//! it wakes (fs/fuse/dir.c, `fuse_entry_unlinked`). A GETATTR, LOOKUP or READDIRPLUS that
//! another task sent before that, and that the filesystem answers after the unlink, can store
//! the already lower count first; the drop then takes it one too low: 0 for a file with a name
//! left, and `link(2)` refuses such a source with ENOENT without asking the filesystem, until
//! something refreshes the count. Every FUSE filesystem that answers requests concurrently has
//! this race (libfuse's passthrough_ll as much as flufs: `scripts/nlink-race`).
//!
//! The way out used here: a request the kernel sent before the drop gets the count as it was
//! before the unlink. Stored before the drop, the drop brings it right; arriving after it, the
//! kernel discards it (its attribute version is older than the drop's). The kernel numbers
//! requests in the order it sends them (`unique`), and the drop comes after the unlink's reply
//! is written, so every request numbered at most as high as one some thread had read when the
//! unlink was answered was sent before the drop. Requests sent later get the count as it is;
//! for them the race remains, in a much narrower window (read after the unlink was answered,
//! answered and stored before the unlinking task ran). Only replies the kernel checks against
//! the attribute version (getattr, lookup, readdirplus) are adjusted. Knows nothing about Lua.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Slots for the request each kernel thread read last (more threads share slots).
const SLOTS: usize = 16;

/// Drops remembered at most; the oldest go first (a request older than that many unlinks is
/// answered with the count as it is).
const KEPT: usize = 256;

#[repr(align(64))]
struct Slot(AtomicU64);

static SEEN: [Slot; SLOTS] = [const { Slot(AtomicU64::new(0)) }; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MY_SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
}

/// A kernel thread read request `unique` (called before it is handed to the dispatcher).
pub fn seen(unique: u64) {
    MY_SLOT.with(|&s| SEEN[s].0.store(unique, Ordering::Relaxed));
}

/// The highest request number read by any thread so far (a lower value when two threads
/// share a slot: fewer requests counted as sent before a drop, never more).
fn read_so_far() -> u64 {
    SEEN.iter()
        .map(|s| s.0.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0)
}

/// The drops the kernel may not have made yet: (bound, node) in the order they were noted.
/// A request numbered at most `bound` was sent before that drop.
#[derive(Debug, Default)]
pub struct Drops {
    pending: VecDeque<(u64, u64)>,
}

impl Drops {
    pub fn new() -> Drops {
        Drops::default()
    }

    /// An unlink (request `unique`) of a name of non-directory node `ino` succeeded and is
    /// about to be answered: the kernel will lower the node's cached count.
    pub fn unlinked(&mut self, ino: u64, unique: u64) {
        self.note(ino, read_so_far().max(unique));
    }

    fn note(&mut self, ino: u64, bound: u64) {
        if self.pending.len() >= KEPT {
            self.pending.pop_front();
        }
        self.pending.push_back((bound, ino));
    }

    /// How many links to add to node `ino`'s count in an attribute reply to request `unique`:
    /// the drops noted since the kernel sent it.
    pub fn carry(&self, ino: u64, unique: u64) -> u32 {
        // Bounds grow in the order they are noted: the newest first, until one is older.
        let n = self
            .pending
            .iter()
            .rev()
            .take_while(|(bound, _)| *bound >= unique)
            .filter(|(_, i)| *i == ino)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_sent_before_a_drop_carry_it() {
        let mut d = Drops::new();
        assert_eq!(d.carry(5, 1), 0, "nothing noted");
        d.note(5, 100);
        assert_eq!(d.carry(5, 90), 1, "sent before the unlink was answered");
        assert_eq!(d.carry(5, 100), 1, "the last request read then");
        assert_eq!(d.carry(5, 101), 0, "read after it: as it is");
        assert_eq!(d.carry(6, 90), 0, "another node");
        d.note(7, 120);
        d.note(5, 130);
        assert_eq!(d.carry(5, 90), 2, "sent before both drops");
        assert_eq!(d.carry(5, 110), 1, "between them");
        assert_eq!(d.carry(7, 110), 1);
        assert_eq!(d.carry(5, 131), 0);
    }

    #[test]
    fn only_the_newest_drops_are_kept() {
        let mut d = Drops::new();
        for i in 0..(KEPT as u64 + 10) {
            d.note(1, 1000 + i);
        }
        assert_eq!(d.pending.len(), KEPT);
        assert_eq!(d.carry(1, 0), KEPT as u32);
        assert_eq!(d.carry(1, 1000 + KEPT as u64 + 9), 1);
    }

    #[test]
    fn the_bound_is_the_highest_request_read() {
        let before = read_so_far();
        seen(before + 50);
        assert!(read_so_far() >= before + 50);
        let mut d = Drops::new();
        d.unlinked(3, 7);
        assert!(
            d.carry(3, before + 50) == 1,
            "a request read before the unlink's answer"
        );
    }
}
