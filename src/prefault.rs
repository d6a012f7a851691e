//! The process's global allocator (flufs's, and memfs's in `benches/`): the system allocator
//! (glibc's malloc), with the pages of a large new block faulted in at once, by one
//! `madvise(MADV_POPULATE_WRITE)`, before it is returned.
//!
//! Why: flufs's large blocks are written whole as soon as they are made. They are Lua strings
//! (a WRITE's data, copied into the string the script gets), the arrays of large Lua tables
//! (which Lua fills when it makes them) and buffers sized to what they will hold (a listing's).
//! glibc gives a block of 128 KiB or more fresh pages from mmap(2) (smaller ones often come from
//! the heap's new top, fresh too), and the copy then takes one page fault per 4 KiB page (a
//! 1 MiB write: 256 faults, each a trap into the kernel and back). One madvise faults them all
//! in one call. On the development machine, 256 MiB copied into fresh 1 MiB blocks (a C loop)
//! took 108 -> 76 ms, and in `scripts/bench` sequential 1 MiB writes into luafs went from ~1150
//! to ~1360 MiB/s, their daemon CPU 146 -> 110 ms per 256 MiB; nothing else moved.
//!
//! Only a block whose first whole page is not resident yet is faulted in (`mincore`): one that
//! reuses heap memory, as when a file is written over and its old strings have been freed, has
//! its pages already, and the advice would only walk them. `dd` writing the same 64 MiB luafs
//! file again and again in 64 KiB blocks: ~1.2 GB/s from the second rewrite on without this
//! module, ~1.0 GB/s with the advice given to every large block, ~1.2 GB/s with this check
//! (the first write: ~1.1, ~1.3 and ~1.3 GB/s).
//!
//! `alloc` alone does it: `alloc_zeroed` (a zeroed buffer, such as fuser's request buffer, whose
//! fresh pages are zero already and may never all be touched) and `realloc` (a growing vector,
//! whose new capacity may stay unused) are passed through. A block allocated larger than it is
//! then filled has its unused pages made resident early (memory, not correctness); the large
//! blocks of flufs's requests are filled. Errors are ignored: on a kernel without the advice (before 5.14), with pages larger than
//! 4 KiB (the range is then not page-aligned and refused) or without memory to spare, the pages
//! are faulted in on first touch as before.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks of this size or more are faulted in when made. Smaller ones are left alone: for them
/// the residency check alone (a system call) would be a noticeable part of the copy (not
/// measured below 64 KiB). 256 MiB written with `dd` into luafs: 128 KiB blocks ~1.2 -> ~1.45 GB/s,
/// 64 KiB blocks ~1.15 -> ~1.35 GB/s (with the limit at 256 KiB, neither moved).
const MIN_PREFAULT: usize = 64 * 1024;

const PAGE: usize = 4096;

/// `System`, with large new blocks faulted in (see the module doc).
pub struct Prefaulting;

// SAFETY: every method hands the call to `System` with the same arguments and returns what it
// returned; `populate` only advises the kernel about pages inside the block just allocated.
unsafe impl GlobalAlloc for Prefaulting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System.alloc`'s.
        let p = unsafe { System.alloc(layout) };
        if layout.size() >= MIN_PREFAULT && !p.is_null() {
            populate(p, layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(p, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe { System.realloc(p, layout, new_size) }
    }
}

/// The whole pages inside `[p, p + len)`, as the range madvise is given.
fn whole_pages(p: usize, len: usize) -> Option<(usize, usize)> {
    let start = p.checked_add(PAGE - 1)? & !(PAGE - 1);
    let end = p.checked_add(len)? & !(PAGE - 1);
    (end > start).then_some((start, end - start))
}

/// Fault in (writable) the whole pages of the block at `p`, unless the first of them is
/// resident already (reused memory): the partial pages at its ends are shared with the
/// allocator's headers and are touched anyway.
fn populate(p: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    if let Some((start, n)) = whole_pages(p as usize, len) {
        // SAFETY: the range lies inside a block this process just allocated and owns; mincore
        // only reads the residency of its first page, and the advice only faults its pages in
        // (it does not change their contents or the mapping).
        unsafe {
            let mut first = 0u8;
            if libc::mincore(start as *mut libc::c_void, PAGE, &mut first) == 0 && first & 1 == 1 {
                return;
            }
            libc::madvise(start as *mut libc::c_void, n, libc::MADV_POPULATE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (p, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_pages_leave_out_the_partial_ends() {
        assert_eq!(whole_pages(4096, 8192), Some((4096, 8192)));
        assert_eq!(
            whole_pages(4096 + 16, 1 << 20),
            Some((8192, (1 << 20) - 4096))
        );
        assert_eq!(whole_pages(100, 4000), None);
        assert_eq!(whole_pages(4000, 200), None);
        assert_eq!(whole_pages(usize::MAX - 10, 5), None);
    }

    #[test]
    fn a_large_block_is_resident_and_writable_when_made() {
        // A kernel before 5.14 refuses the advice (EINVAL): nothing is faulted in ahead there.
        // SAFETY: an anonymous private page, unmapped again below.
        unsafe {
            let page = libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(page, libc::MAP_FAILED);
            let r = libc::madvise(page, PAGE, libc::MADV_POPULATE_WRITE);
            let e = std::io::Error::last_os_error();
            libc::munmap(page, PAGE);
            if r != 0 {
                // Only an advice the kernel does not know is a reason to check nothing.
                assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "madvise: {e}");
                eprintln!("this kernel has no MADV_POPULATE_WRITE: nothing to check");
                return;
            }
        }
        // Fresh pages whatever the tests before did: above glibc's largest mmap threshold
        // (32 MiB), after the heap's free pages are given back.
        // SAFETY: malloc_trim only returns free memory to the kernel.
        unsafe {
            libc::malloc_trim(0);
        }
        let layout = Layout::from_size_align(40 << 20, 16).expect("layout");
        // SAFETY: a non-zero size; freed below with the same layout.
        let p = unsafe { Prefaulting.alloc(layout) };
        assert!(!p.is_null());
        let (start, n) = whole_pages(p as usize, layout.size()).expect("whole pages");
        let mut vec = vec![0u8; n / PAGE];
        // SAFETY: the range is inside the block; mincore writes one byte per page into vec.
        let r = unsafe { libc::mincore(start as *mut libc::c_void, n, vec.as_mut_ptr()) };
        assert_eq!(r, 0);
        assert!(
            vec.iter().all(|&b| b & 1 == 1),
            "{} of {} pages not resident",
            vec.iter().filter(|&&b| b & 1 == 0).count(),
            vec.len()
        );
        // SAFETY: the block is ours and this long.
        unsafe {
            std::ptr::write_bytes(p, 0x5a, layout.size());
            assert_eq!(*p.add(layout.size() - 1), 0x5a);
            Prefaulting.dealloc(p, layout);
        }
    }
}
