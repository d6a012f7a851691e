//! How many kernel threads read requests at a time: one while requests come in bursts, all of
//! them (`-o threads=N`, default 2) once requests have kept coming for a while. Knows nothing
//! of Lua or of fuser: each kernel thread calls `Readers::done` after it has handled (and
//! answered) a request, and a thread that is not wanted then waits there instead of reading
//! the next one. memfs (`benches/`) uses it too.
//!
//! Why: a client and its daemon pass each request back and forth, so while they share a CPU,
//! neither waits for a CPU to wake. Schedulers keep such a pair on one CPU only until that CPU
//! has been busy a while; then they place the two apart, and every request wakes a CPU that
//! went idle in between. On the development VMs (idle vCPUs halt at once) that took a created
//! file from ~70 µs to ~330 µs once the pair had run ~55 ms without a pause (memfs and flufs
//! alike; `scripts/bench`'s "burst and sustained" table). A second reader keeps a thread
//! waiting on each CPU, and the sustained pace nearly halved (~190 µs); but a second reader
//! also parts a pair that would have stayed together, and short bursts lost almost as much
//! (~70 -> ~125 µs per file). So the second reader waits for a spell of requests of `SPELL` (with no pause of
//! `PAUSE` or more) and is sent back after `QUIET` without a request.
//!
//! A thread sent back waits at most `PARK`, then reads again (and waits again after its next
//! request): when the mount ends, the threads must all get back to the device to see it gone.
//! An idle mount has both blocked in their read, with no timer.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Requests have come without a pause this long: all readers.
const SPELL: Duration = Duration::from_millis(50);
/// A pause this long starts a new spell.
const PAUSE: Duration = Duration::from_millis(10);
/// No request for this long: one reader again.
const QUIET: Duration = Duration::from_millis(100);
/// Longest a thread sent back waits before reading again.
const PARK: Duration = Duration::from_millis(250);

pub struct Readers {
    /// Kernel threads reading requests (fuser's `n_threads`).
    threads: usize,
    start: Instant,
    /// When the last request was done, and when the current spell began (ns since `start`).
    last: AtomicU64,
    spell: AtomicU64,
    /// All readers are wanted.
    all: AtomicBool,
    /// Threads not waiting here.
    active: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Readers {
    /// For `threads` kernel threads (as `usable` gave them to fuser).
    pub fn new(threads: usize) -> Readers {
        let threads = threads.max(1);
        Readers {
            threads,
            start: Instant::now(),
            last: AtomicU64::new(0),
            spell: AtomicU64::new(0),
            all: AtomicBool::new(false),
            active: AtomicUsize::new(threads),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Whether all readers are wanted (and so more than one may be reading).
    pub fn several(&self) -> bool {
        self.threads > 1 && self.all.load(Ordering::Relaxed)
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A kernel thread has handled a request: update the spell, and wait here while this
    /// thread is one reader too many.
    pub fn done(&self) {
        if self.threads > 1 {
            self.done_at(self.now());
        }
    }

    /// `done` at `now` (ns since `start`).
    fn done_at(&self, now: u64) {
        let idle = now.saturating_sub(self.last.swap(now, Ordering::Relaxed));
        let mut all = self.all.load(Ordering::Relaxed);
        if idle >= QUIET.as_nanos() as u64 {
            self.spell.store(now, Ordering::Relaxed);
            if all {
                self.all.store(false, Ordering::Relaxed);
                all = false;
            }
        } else if idle >= PAUSE.as_nanos() as u64 {
            self.spell.store(now, Ordering::Relaxed);
        } else if !all
            && now.saturating_sub(self.spell.load(Ordering::Relaxed)) >= SPELL.as_nanos() as u64
        {
            self.all.store(true, Ordering::SeqCst);
            if self.active.load(Ordering::SeqCst) < self.threads {
                let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                self.wake.notify_all();
            }
            return;
        }
        if all || self.active.load(Ordering::Acquire) <= 1 {
            return;
        }
        self.park();
    }

    /// Wait (at most `PARK`) while one reader is wanted, unless this is the last one reading.
    fn park(&self) {
        let g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.active.load(Ordering::SeqCst) <= 1 {
            return;
        }
        self.active.fetch_sub(1, Ordering::SeqCst);
        let (g, _) = self
            .wake
            .wait_timeout_while(g, PARK, |_| !self.all.load(Ordering::SeqCst))
            .unwrap_or_else(|e| e.into_inner());
        self.active.fetch_add(1, Ordering::SeqCst);
        drop(g);
    }
}

/// How many kernel threads to start for `-o threads=N`: N, or one when this process may run
/// on one CPU only (`taskset -c 0`), where a second reader could never wait on another CPU
/// and only adds wake-ups.
pub fn usable(threads: usize) -> usize {
    if one_cpu() { 1 } else { threads.max(1) }
}

/// Whether the calling thread (and so the threads it starts) may run on one CPU only.
fn one_cpu() -> bool {
    // SAFETY: the set is a plain bit mask, written by the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0
            && libc::CPU_COUNT(&set) == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const MS: u64 = 1_000_000;

    #[test]
    fn one_thread_never_waits() {
        let r = Readers::new(1);
        let t = Instant::now();
        r.done();
        // A spell of requests (1 ms apart for 200 ms), then one after a quiet spell: with one
        // thread there is never a second reader to want or to send back.
        let mut now = 200 * MS;
        for _ in 0..200 {
            now += MS;
            r.done_at(now);
        }
        assert!(!r.several());
        r.done_at(now + QUIET.as_nanos() as u64);
        assert!(t.elapsed() < PARK, "a lone reader waited");
    }

    #[test]
    fn second_reader_waits_until_a_spell_and_goes_back_after_quiet() {
        let r = Arc::new(Readers::new(2));
        // A request after a quiet start: one reader wanted, and this thread, one of two
        // reading, waits; a spell of requests (no pause of PAUSE) lasting SPELL sends for it.
        let parked = {
            let r = r.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                r.done_at(200 * MS);
                t.elapsed()
            })
        };
        while r.active.load(Ordering::SeqCst) == 2 {
            std::thread::yield_now();
        }
        assert!(!r.several());
        // The other thread, the last one reading, never waits.
        let mut now = 200 * MS;
        while now < 200 * MS + SPELL.as_nanos() as u64 {
            now += MS;
            r.done_at(now);
        }
        now += MS;
        r.done_at(now);
        assert!(r.several(), "a spell of {SPELL:?} wants every reader");
        let waited = parked.join().expect("parked thread");
        assert!(
            waited < PARK,
            "woken at the spell, not at its timeout ({waited:?})"
        );
        assert_eq!(r.active.load(Ordering::SeqCst), 2);
        // A pause shorter than QUIET keeps both; a quiet spell sends one back.
        now += PAUSE.as_nanos() as u64;
        r.done_at(now);
        assert!(r.several(), "a pause keeps both readers");
        now += QUIET.as_nanos() as u64;
        let t = Instant::now();
        r.done_at(now);
        assert!(!r.several(), "quiet: one reader");
        let waited = t.elapsed();
        assert!(
            waited >= PARK - Duration::from_millis(10),
            "one of two reading waits (for PARK, nobody sends for it): {waited:?}"
        );
        assert_eq!(
            r.active.load(Ordering::SeqCst),
            2,
            "back to reading after PARK"
        );
    }
}
