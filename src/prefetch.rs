//! The CPU's prefetch hint: start fetching a cache line that will be read soon. Listings read
//! data spread over memory (a script's tables, the inode table), one cache miss after another;
//! asked for a few entries ahead, the misses overlap instead.

/// Ask the CPU to fetch the cache line at `p` (nothing elsewhere than x86-64). A hint only:
/// `p` need not be valid, and no result changes.
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch does not fault, whatever the address.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
