//! `--op-timeout`: interrupts a request whose Lua code runs too long. Each call of a script
//! operation runs in its own coroutine; while the executor resumes one, that coroutine is
//! *armed* here. A watchdog thread looks every tenth of the timeout (within 100 ms and 1 s: an
//! idle daemon with the default 10 s wakes once a second for it, where it woke ten times a
//! second) and, once the same resumption has been running for longer than the
//! timeout, installs a Lua count hook on that coroutine (lua_sethook is safe to call
//! asynchronously, as the standalone `lua` does from its SIGINT handler); the hook raises an
//! error inside the runaway code. No hook is installed while calls finish in time, so Lua runs
//! at full speed. Time a request spends suspended (network, timers) is not counted: only a
//! running coroutine is armed, and each resumption gets the whole timeout.
//!
//! Arming and disarming are a few atomic operations (no lock, no clock: they happen for every
//! request): each resumption gets a generation number, odd while it runs, and the watchdog
//! thread times the generation it sees. It works on a coroutine only with `busy` set, and
//! `disarm` waits for `busy` to clear once the generation has moved on, so once `disarm`
//! returns the watchdog no longer touches that coroutine (it may then be freed).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mlua::ffi;

/// The message the interrupted request fails with.
pub const MESSAGE: &str = "operation interrupted: it ran longer than --op-timeout";

struct Shared {
    /// The resumption's generation: odd while a coroutine is armed (running), even otherwise.
    generation: AtomicU64,
    /// The armed coroutine's state (valid while `generation` is odd).
    state: AtomicUsize,
    /// The generation the installed hook is for: a hook that fires in a later resumption of
    /// the same coroutine does nothing.
    target: AtomicU64,
    /// The watchdog thread is installing a hook.
    busy: AtomicBool,
    fired: AtomicBool,
}

static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();

unsafe extern "C-unwind" fn timeout_hook(state: *mut ffi::lua_State, _ar: *mut ffi::lua_Debug) {
    unsafe { ffi::lua_sethook(state, None, 0, 0) };
    let Some(s) = SHARED.get() else { return };
    let g = s.generation.load(Ordering::Acquire);
    let expired = !g.is_multiple_of(2)
        && g == s.target.load(Ordering::Acquire)
        && s.state.load(Ordering::Relaxed) == state as usize;
    if !expired {
        return;
    }
    s.fired.store(true, Ordering::Release);
    unsafe {
        ffi::lua_pushlstring(state, MESSAGE.as_ptr().cast(), MESSAGE.len());
        ffi::lua_error(state);
    }
}

/// The per-call side of the watchdog (one per process: the Lua state is one too).
pub struct Watchdog {
    shared: Arc<Shared>,
}

impl Watchdog {
    /// Start the watchdog thread with `timeout` per resumption.
    pub fn start(timeout: Duration) -> std::io::Result<Watchdog> {
        let shared = SHARED
            .get_or_init(|| {
                Arc::new(Shared {
                    generation: AtomicU64::new(0),
                    state: AtomicUsize::new(0),
                    target: AtomicU64::new(0),
                    busy: AtomicBool::new(false),
                    fired: AtomicBool::new(false),
                })
            })
            .clone();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("flufs-watchdog".into())
            .spawn(move || {
                // Signals are for the mount's signal thread, never for this one.
                unsafe {
                    let mut all: libc::sigset_t = std::mem::zeroed();
                    libc::sigfillset(&mut all);
                    libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
                }
                // The running generation last seen, and when it was first seen.
                let mut seen = (0u64, Instant::now());
                let every =
                    (timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
                loop {
                    std::thread::sleep(every);
                    let g = s.generation.load(Ordering::Acquire);
                    if g.is_multiple_of(2) {
                        continue;
                    }
                    if g != seen.0 {
                        seen = (g, Instant::now());
                        continue;
                    }
                    if seen.1.elapsed() <= timeout || s.target.load(Ordering::Relaxed) == g {
                        continue;
                    }
                    s.busy.store(true, Ordering::SeqCst);
                    // Still the same resumption: `disarm` has not returned (it waits for
                    // `busy`), so the coroutine is alive.
                    if s.generation.load(Ordering::SeqCst) == g {
                        s.target.store(g, Ordering::Release);
                        let state = s.state.load(Ordering::Relaxed) as *mut ffi::lua_State;
                        unsafe {
                            ffi::lua_sethook(state, Some(timeout_hook), ffi::LUA_MASKCOUNT, 1000)
                        };
                    }
                    s.busy.store(false, Ordering::SeqCst);
                }
            })?;
        Ok(Watchdog { shared })
    }

    /// Coroutine `state` is about to run.
    pub fn arm(&self, state: *const std::ffi::c_void) {
        let s = &self.shared;
        s.fired.store(false, Ordering::Relaxed);
        s.state.store(state as usize, Ordering::Relaxed);
        // Even to odd; publishes `state`.
        s.generation.fetch_add(1, Ordering::Release);
    }

    /// The coroutine stopped running (finished or suspended); returns whether it was
    /// interrupted.
    pub fn disarm(&self) -> bool {
        let s = &self.shared;
        // Odd to even, then wait for a hook being installed on the coroutine to be in place.
        s.generation.fetch_add(1, Ordering::SeqCst);
        while s.busy.load(Ordering::SeqCst) {
            std::hint::spin_loop();
        }
        s.fired.load(Ordering::Acquire)
    }
}
