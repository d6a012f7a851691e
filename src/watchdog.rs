//! `--op-timeout`: interrupts a request whose Lua code runs too long. A watchdog thread checks
//! the running request's deadline every 100 ms; only once it has passed does it install a Lua
//! count hook (lua_sethook is safe to call asynchronously, as the standalone `lua` does from
//! its SIGINT handler), and that hook raises an error inside the runaway code. No hook is
//! installed while requests finish in time, so Lua runs at full speed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mlua::{Lua, ffi};

/// The message the interrupted request fails with.
pub const MESSAGE: &str = "operation interrupted: it ran longer than --op-timeout";

struct Shared {
    start: Instant,
    /// Deadline of the running request in ns since `start` (0 = none running).
    deadline: AtomicU64,
    state: AtomicPtr<ffi::lua_State>,
    fired: AtomicBool,
}

static SHARED: std::sync::OnceLock<Arc<Shared>> = std::sync::OnceLock::new();

fn now_ns(s: &Shared) -> u64 {
    u64::try_from(s.start.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn expired(s: &Shared) -> bool {
    let d = s.deadline.load(Ordering::Acquire);
    d != 0 && now_ns(s) > d
}

unsafe extern "C-unwind" fn timeout_hook(state: *mut ffi::lua_State, _ar: *mut ffi::lua_Debug) {
    unsafe { ffi::lua_sethook(state, None, 0, 0) };
    let Some(s) = SHARED.get() else { return };
    if !expired(s) {
        return;
    }
    s.fired.store(true, Ordering::Release);
    unsafe {
        ffi::lua_pushlstring(state, MESSAGE.as_ptr().cast(), MESSAGE.len());
        ffi::lua_error(state);
    }
}

unsafe extern "C-unwind" fn capture_state(state: *mut ffi::lua_State) -> std::ffi::c_int {
    if let Some(s) = SHARED.get() {
        s.state.store(state, Ordering::Release);
    }
    0
}

/// The per-request side of the watchdog (one per process: the Lua state is one too).
pub struct Watchdog {
    shared: Arc<Shared>,
    timeout: Duration,
}

impl Watchdog {
    /// Start watching `lua` (on the thread that runs it) with `timeout` per request.
    pub fn start(lua: &Lua, timeout: Duration) -> mlua::Result<Watchdog> {
        let shared = SHARED
            .get_or_init(|| {
                Arc::new(Shared {
                    start: Instant::now(),
                    deadline: AtomicU64::new(0),
                    state: AtomicPtr::new(std::ptr::null_mut()),
                    fired: AtomicBool::new(false),
                })
            })
            .clone();
        // Learn the state requests run on: call a C function from it.
        let capture = unsafe { lua.create_c_function(capture_state)? };
        capture.call::<()>(())?;
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
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    let state = s.state.load(Ordering::Acquire);
                    if expired(&s) && !state.is_null() {
                        unsafe {
                            ffi::lua_sethook(state, Some(timeout_hook), ffi::LUA_MASKCOUNT, 1000)
                        };
                    }
                }
            })
            .map_err(mlua::Error::external)?;
        Ok(Watchdog { shared, timeout })
    }

    /// A request starts running Lua code.
    pub fn arm(&self) {
        let d = now_ns(&self.shared)
            .saturating_add(u64::try_from(self.timeout.as_nanos()).unwrap_or(u64::MAX));
        self.shared.fired.store(false, Ordering::Relaxed);
        self.shared.deadline.store(d, Ordering::Release);
    }

    /// The request is done; returns whether it was interrupted.
    pub fn disarm(&self) -> bool {
        self.shared.deadline.store(0, Ordering::Release);
        self.shared.fired.load(Ordering::Acquire)
    }
}

/// While alive, the running request's clock is stopped: for Rust calls that wait on the
/// network or a timer (gett, http, flu.sleep), which are not runaway Lua code.
pub struct Paused {
    saved: u64,
    at: u64,
}

/// Stop the running request's `--op-timeout` clock until the guard drops.
pub fn pause() -> Paused {
    match SHARED.get() {
        Some(s) => Paused {
            saved: s.deadline.swap(0, Ordering::AcqRel),
            at: now_ns(s),
        },
        None => Paused { saved: 0, at: 0 },
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let (Some(s), true) = (SHARED.get(), self.saved != 0) {
            let waited = now_ns(s).saturating_sub(self.at);
            s.deadline
                .store(self.saved.saturating_add(waited), Ordering::Release);
        }
    }
}
