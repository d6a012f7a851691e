//! Gives the heap's free memory back to the kernel. A script keeps its data in the Lua heap
//! (luafs: its files), on glibc's malloc. When much of it is freed, the freed memory lies in
//! chunks between live ones, below the heap's top: glibc keeps it, and the daemon's RSS stays
//! at its peak. 300 MB of source files unpacked by `tar` into luafs and removed with `rm -rf`
//! (luafs has its collector free them as they go): RSS 321 MB three seconds later without
//! this, 22 MB with it.
//!
//! The mount's main thread, which wakes once a second anyway (`Engine::run_until_stopped`),
//! looks once a second (`mallinfo2`, which walks the free lists under the arena's lock:
//! microseconds, ~0.6 ms after a tree was freed in small chunks) and calls `malloc_trim(0)`
//! when at least `TRIM_STEP` more is free than at the lowest point since the last trim, and the
//! free memory is at least an eighth of what is in use. `malloc_trim` returns the whole pages
//! inside free chunks (MADV_DONTNEED); a later allocation there faults them in again. The step
//! keeps it from running for the ordinary coming and going of a busy heap, and the low-water
//! mark from trimming the same free memory again every second (`mallinfo2` counts trimmed
//! chunks as free still). glibc only. (It had a thread of its own, waking once a second too.)

/// Memory that must have been freed since the last trim (or since the free memory was at its
/// lowest) before trimming again.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_STEP: usize = 64 << 20;

/// How often `Trimmer::tick` looks.
const LOOK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The looks, made by whoever calls `tick` (the mount's main thread, in the daemon after it
/// detached).
pub struct Trimmer {
    last: std::time::Instant,
    /// The least free memory seen since the last trim (0: nothing trimmed yet, so all that is
    /// free counts as freed since).
    #[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
    low: usize,
}

impl Trimmer {
    pub fn new() -> Trimmer {
        Trimmer {
            last: std::time::Instant::now(),
            low: 0,
        }
    }

    /// Look, if `LOOK_EVERY` has passed since the last look, and trim if `should_trim` says so.
    pub fn tick(&mut self) {
        if self.last.elapsed() < LOOK_EVERY {
            return;
        }
        self.last = std::time::Instant::now();
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            // SAFETY: mallinfo2 only reads the allocator's statistics.
            let info = unsafe { libc::mallinfo2() };
            if should_trim(info.fordblks, info.uordblks, &mut self.low) {
                // SAFETY: malloc_trim only returns free pages to the kernel.
                unsafe { libc::malloc_trim(0) };
            }
        }
    }
}

/// Whether `free` bytes (of which `low` was the least seen since the last trim) should be
/// trimmed with `used` in use; updates `low`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn should_trim(free: usize, used: usize, low: &mut usize) -> bool {
    *low = (*low).min(free);
    if free - *low >= TRIM_STEP && free >= used / 8 {
        *low = free;
        return true;
    }
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn trims_once_per_step_of_freed_memory() {
        let mut low = 0;
        let mib = 1 << 20;
        assert!(
            should_trim(70 * mib, 300 * mib, &mut low),
            "freed before the first look"
        );
        assert!(!should_trim(10 * mib, 300 * mib, &mut low), "little free");
        assert!(
            should_trim(80 * mib, 300 * mib, &mut low),
            "70 MiB freed since"
        );
        for _ in 0..3 {
            assert!(
                !should_trim(80 * mib, 300 * mib, &mut low),
                "the same free memory"
            );
        }
        assert!(
            !should_trim(120 * mib, 300 * mib, &mut low),
            "40 MiB more: below a step"
        );
        assert!(
            !should_trim(5 * mib, 300 * mib, &mut low),
            "reused: the new low"
        );
        assert!(
            should_trim(70 * mib, 300 * mib, &mut low),
            "65 MiB freed since the low"
        );
        let mut low = 0;
        assert!(
            !should_trim(100 * mib, 1000 * mib, &mut low),
            "free below an eighth of what is in use"
        );
    }
}
