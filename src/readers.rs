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
//! A spell alone does not say that the pair was placed apart: the scheduler's switch came after
//! ~55-60 ms here, and a spell of 50 ms sent for the second reader in the last few milliseconds
//! of bursts that would have ended together (1000 created files, ~52 ms: half the runs took
//! ~90-115 ms instead, their daemon CPU doubled). So at the end of a spell the thread that sent
//! the request is looked up (`/proc/TID/stat`, the CPU it last ran on): a client on this
//! thread's CPU means they are still together, and the spell is looked at again `RECHECK`
//! later (one read of /proc per `RECHECK` at most, only during spells). Where the requester is
//! unknown (pid 0, not visible) the spell decides alone, as before.
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
/// A spell whose client still ran on the reading thread's CPU is looked at again this much later.
const RECHECK: Duration = Duration::from_millis(10);

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

    /// A kernel thread has handled a request sent by thread `requester` (the request's pid; 0
    /// if none): update the spell, and wait here while this thread is one reader too many.
    pub fn done(&self, requester: u32) {
        if self.threads > 1 {
            self.done_at(self.now(), || apart(requester));
        }
    }

    /// `done` at `now` (ns since `start`); `apart` says whether the request's sender ran on
    /// another CPU (asked only at the end of a spell).
    fn done_at(&self, now: u64, apart: impl FnOnce() -> bool) {
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
            if apart() {
                self.wake_all();
                return;
            }
            // Still together: look again in RECHECK, as if the spell began that much later.
            let again = (SPELL - RECHECK).as_nanos() as u64;
            self.spell
                .store(now.saturating_sub(again), Ordering::Relaxed);
        }
        if all || self.active.load(Ordering::Acquire) <= 1 {
            return;
        }
        self.park();
    }

    /// Every reader is wanted: wake those waiting.
    fn wake_all(&self) {
        self.all.store(true, Ordering::SeqCst);
        if self.active.load(Ordering::SeqCst) < self.threads {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
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

/// Whether thread `requester` last ran on another CPU than the calling thread runs on. True
/// when that cannot be told (no requester, its /proc entry gone or unreadable).
fn apart(requester: u32) -> bool {
    if requester == 0 {
        return true;
    }
    // SAFETY: sched_getcpu takes no arguments and only reads the CPU number.
    let here = unsafe { libc::sched_getcpu() };
    match (u32::try_from(here), last_cpu(requester)) {
        (Ok(here), Some(there)) => here != there,
        _ => true,
    }
}

/// The CPU thread `tid` last ran on: field 39 of `/proc/TID/stat` (the fields after the
/// command name, which may hold spaces and parentheses, counted from its closing one).
fn last_cpu(tid: u32) -> Option<u32> {
    let stat = std::fs::read(format!("/proc/{tid}/stat")).ok()?;
    cpu_field(&stat)
}

fn cpu_field(stat: &[u8]) -> Option<u32> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_ascii_whitespace().nth(39 - 3)?.parse().ok()
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
        r.done(0);
        // A spell of requests (1 ms apart for 200 ms), then one after a quiet spell: with one
        // thread there is never a second reader to want or to send back.
        let mut now = 200 * MS;
        for _ in 0..200 {
            now += MS;
            r.done_at(now, || true);
        }
        assert!(!r.several());
        r.done_at(now + QUIET.as_nanos() as u64, || true);
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
                r.done_at(200 * MS, || true);
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
            r.done_at(now, || true);
        }
        now += MS;
        r.done_at(now, || true);
        assert!(r.several(), "a spell of {SPELL:?} wants every reader");
        let waited = parked.join().expect("parked thread");
        assert!(
            waited < PARK,
            "woken at the spell, not at its timeout ({waited:?})"
        );
        assert_eq!(r.active.load(Ordering::SeqCst), 2);
        // A pause shorter than QUIET keeps both; a quiet spell sends one back.
        now += PAUSE.as_nanos() as u64;
        r.done_at(now, || true);
        assert!(r.several(), "a pause keeps both readers");
        now += QUIET.as_nanos() as u64;
        let t = Instant::now();
        r.done_at(now, || true);
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

    #[test]
    fn a_spell_from_a_client_on_this_cpu_wants_no_second_reader() {
        let r = Readers::new(2);
        // The other reader waits (as after the first request): this one is the last reading.
        r.active.store(1, Ordering::SeqCst);
        let asked = std::cell::Cell::new(0);
        let together = || {
            asked.set(asked.get() + 1);
            false
        };
        // A spell of requests 1 ms apart from a client that ran on the reader's CPU: no second
        // reader, and the client is looked up once at SPELL and then once per RECHECK.
        let mut now = 200 * MS;
        r.done_at(now, together);
        let end = now + SPELL.as_nanos() as u64 + 3 * RECHECK.as_nanos() as u64;
        while now < end {
            now += MS;
            r.done_at(now, together);
        }
        assert!(!r.several(), "together: one reader");
        assert_eq!(asked.get(), 4, "asked at SPELL and after each RECHECK");
        // Once the client runs elsewhere, the next look sends for the second reader.
        for _ in 0..RECHECK.as_nanos() as u64 / MS {
            now += MS;
            r.done_at(now, || true);
        }
        assert!(r.several(), "apart: every reader");
    }

    #[test]
    fn the_cpu_a_thread_last_ran_on_is_read_from_proc() {
        // A command name with spaces and parentheses, as /proc shows it; field 39 is 7.
        let mut line = b"4242 (a (b) c) S".to_vec();
        for field in 4..=52 {
            line.extend_from_slice(format!(" {}", if field == 39 { 7 } else { field }).as_bytes());
        }
        assert_eq!(cpu_field(&line), Some(7));
        assert_eq!(cpu_field(b"4242 (x) S 1 2"), None);
        // This thread, held on the CPU it runs on: /proc says that CPU, and a request it sent
        // would count as together; an unknown sender counts as apart.
        std::thread::spawn(|| {
            // SAFETY: the set is a plain bit mask; the calls read or set this thread's affinity.
            unsafe {
                let cpu = libc::sched_getcpu();
                let cpu = usize::try_from(cpu).expect("sched_getcpu");
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                let size = std::mem::size_of::<libc::cpu_set_t>();
                assert_eq!(libc::sched_setaffinity(0, size, &set), 0);
                let tid = u32::try_from(libc::gettid()).expect("tid");
                assert_eq!(last_cpu(tid), u32::try_from(cpu).ok());
                assert!(!apart(tid), "a sender on this CPU counts as together");
            }
            assert!(apart(0), "no sender: apart, as before the check");
            assert!(apart(u32::MAX), "a sender /proc does not show: apart");
        })
        .join()
        .expect("pinned thread");
    }
}
