//! flufs: mount a FUSE filesystem written in Lua.
//!
//! One malloc arena for the process (`one_malloc_arena`) and the global allocator that faults
//! large new blocks in at once (`prefault`), then `cli` (options) → `daemon` (detaching) →
//! `script` (the Lua state, with `finalizers` guarding the script's `__gc`; `flu.main`) →
//! `mount` (session, signals, and `trim`, which gives freed heap memory back to the kernel) →
//! `kernel` (fuser requests into a queue; `readers`: how many kernel threads read) → `dispatch`
//! (the one Lua owner) using `inodes` (inode ↔ path), `convert`/`mode`/`errno` (values) and
//! `ops` (operation names).

mod cli;
mod convert;
mod daemon;
mod dispatch;
mod errno;
mod finalizers;
mod flu;
mod gett;
mod http;
mod inodes;
mod inomap;
mod json;
mod kernel;
mod log;
mod luaraw;
mod mode;
mod mount;
mod nlinks;
mod ops;
mod options;
mod prefault;
mod prefetch;
mod readers;
mod replies;
mod runtime;
mod script;
mod trim;
mod watchdog;

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

/// glibc's malloc, with large new blocks faulted in at once (see `prefault`).
#[global_allocator]
static ALLOCATOR: prefault::Prefaulting = prefault::Prefaulting;

fn fail(msg: &str) -> ! {
    eprintln!("flufs: {msg}");
    std::process::exit(1);
}

/// Every thread allocates from glibc's main arena. Otherwise the kernel threads that run the
/// Lua state get an arena of their own, whose heap glibc grows one mprotect(2) per few pages
/// (a created luafs file: ~1.1 calls); the main arena grows by brk(2) with 128 KiB to spare.
/// Only one thread runs Lua at a time, so the arena's lock is hardly ever contended. 1000
/// creates: daemon CPU -5% (memfs, which does the same, -8%). Before any thread starts.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of glibc's allocator; no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn main() {
    one_malloc_arena();
    let cli = cli::parse();
    let options = cli.mount_options().unwrap_or_else(|e| fail(&e));

    let script = match std::fs::canonicalize(&cli.script) {
        Ok(p) if p.is_file() => p,
        Ok(_) => fail(&format!("script {} is not a file", cli.script.display())),
        Err(e) => fail(&format!(
            "cannot read script {}: {}",
            cli.script.display(),
            errno::strerror(e.raw_os_error().unwrap_or(libc::EIO))
        )),
    };
    let mountpoint = match std::fs::canonicalize(&cli.mountpoint) {
        Ok(p) => p,
        Err(_) => std::path::absolute(&cli.mountpoint).unwrap_or_else(|_| cli.mountpoint.clone()),
    };
    if let Err(msg) = mount::check_mountpoint(Path::new(&mountpoint)) {
        fail(&msg);
    }

    let mut reporter = daemon::Reporter::Foreground;
    if !options.foreground {
        reporter = daemon::detach().unwrap_or_else(|e| fail(&e));
    }
    let reporter = Rc::new(RefCell::new(reporter));
    let job = script::Job {
        script,
        mountpoint,
        script_args: cli.script_args.clone(),
        options,
    };
    if let Err(msg) = script::run(job, reporter.clone()) {
        // Before the mount is live the waiting parent prints the reason; afterwards (or in the
        // foreground) it goes to the log.
        // The full message (a Lua traceback, say) goes to the log, which is still the
        // terminal before the mount is live.
        let delivered = reporter.borrow_mut().fail(&msg);
        if !delivered || msg.contains('\n') {
            log::error(&msg);
        }
        std::process::exit(1);
    }
}
