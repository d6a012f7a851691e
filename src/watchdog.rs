//! `--op-timeout`: interrupts a request whose Lua code runs too long. Each call of a script
//! operation runs in its own coroutine; while the executor resumes one, that coroutine is
//! *armed* here with a deadline. A watchdog thread checks every 100 ms and, once the deadline
//! has passed, installs a Lua count hook on that coroutine (lua_sethook is safe to call
//! asynchronously, as the standalone `lua` does from its SIGINT handler); the hook raises an
//! error inside the runaway code. No hook is installed while calls finish in time, so Lua runs
//! at full speed. Time a request spends suspended (network, timers) is not counted: the clock
//! runs only while its coroutine runs, and each resumption gets the whole timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use mlua::ffi;

/// The message the interrupted request fails with.
pub const MESSAGE: &str = "operation interrupted: it ran longer than --op-timeout";

/// The coroutine being resumed and its deadline. Disarming takes the lock, so once `disarm`
/// returns the watchdog thread no longer touches that coroutine (it may then be freed).
struct Slot {
    state: usize,
    deadline: Option<Instant>,
}

struct Shared {
    slot: Mutex<Slot>,
    fired: AtomicBool,
}

static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();

fn slot(s: &Shared) -> MutexGuard<'_, Slot> {
    s.slot.lock().unwrap_or_else(|e| e.into_inner())
}

unsafe extern "C-unwind" fn timeout_hook(state: *mut ffi::lua_State, _ar: *mut ffi::lua_Debug) {
    unsafe { ffi::lua_sethook(state, None, 0, 0) };
    let Some(s) = SHARED.get() else { return };
    let expired = {
        let g = slot(s);
        g.state == state as usize && g.deadline.is_some_and(|d| Instant::now() > d)
    };
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
    timeout: Duration,
}

impl Watchdog {
    /// Start the watchdog thread with `timeout` per resumption.
    pub fn start(timeout: Duration) -> std::io::Result<Watchdog> {
        let shared = SHARED
            .get_or_init(|| {
                Arc::new(Shared {
                    slot: Mutex::new(Slot {
                        state: 0,
                        deadline: None,
                    }),
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
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    let g = slot(&s);
                    if g.state != 0 && g.deadline.is_some_and(|d| Instant::now() > d) {
                        let state = g.state as *mut ffi::lua_State;
                        unsafe {
                            ffi::lua_sethook(state, Some(timeout_hook), ffi::LUA_MASKCOUNT, 1000)
                        };
                    }
                }
            })?;
        Ok(Watchdog { shared, timeout })
    }

    /// Coroutine `state` is about to run.
    pub fn arm(&self, state: *const std::ffi::c_void) {
        self.shared.fired.store(false, Ordering::Relaxed);
        let mut g = slot(&self.shared);
        g.state = state as usize;
        g.deadline = Some(Instant::now() + self.timeout);
    }

    /// The coroutine stopped running (finished or suspended); returns whether it was
    /// interrupted.
    pub fn disarm(&self) -> bool {
        let mut g = slot(&self.shared);
        g.state = 0;
        g.deadline = None;
        drop(g);
        self.shared.fired.load(Ordering::Acquire)
    }
}
