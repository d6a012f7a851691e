//! The executor: the requests in flight, each a future over the one dispatcher, run by
//! whichever thread holds the dispatcher's lock. A kernel thread that reads a request takes the
//! lock and runs it at once (no hand-over to another thread, no second wake-up); most requests
//! finish there. One that waits (a `gett`/`http` call, `flu.sleep`) is kept as a pending task;
//! when what it waits for is done, its waker queues it, and the next holder of the lock (the
//! kernel thread done with its own request, or the mount's main thread, which waits for
//! exactly this) resumes it. Only one thread ever runs Lua at a time: scripts need no locks.

use foldhash::HashMap;
use foldhash::HashMapExt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Wake, Waker};
use std::time::Duration;

use super::Dispatch;
use crate::kernel::{Ctx, Request, Sink, Write};
use crate::log;
use crate::replies;

type Job = Pin<Box<dyn Future<Output = ()>>>;

struct Task {
    fut: Job,
    ctx: Ctx,
    waker: Waker,
}

/// Everything that touches Lua: the dispatcher and the suspended requests.
pub struct Owned {
    dispatch: Rc<Dispatch>,
    tasks: HashMap<u64, Task>,
    next: u64,
}

// SAFETY: `Owned` holds the Lua state and values of it (through `Rc`s and mlua handles that are
// not thread-safe). It is only ever reached through `Engine::owned`'s mutex, so one thread at a
// time uses it, with the mutex ordering every use after the previous one; nothing of it is
// shared with anything outside (wakers carry only a task id). `Engine::close` hands it back to
// the thread that made it, which drops it there.
unsafe impl Send for Owned {}

/// The task id of the future `Engine::block_on` runs.
const BLOCK_ON: u64 = u64::MAX;

/// Tasks whose wait is over, and the stop flag, with which the main thread sleeps.
#[derive(Default)]
struct Ready {
    ids: Mutex<Vec<u64>>,
    any: AtomicBool,
    /// The future of `Engine::block_on` was woken (kept apart from `ids`: a kernel thread that
    /// resumes ready tasks must not take its wake-up).
    block_on: AtomicBool,
    stop: AtomicBool,
    cv: Condvar,
}

impl Ready {
    fn ids(&self) -> MutexGuard<'_, Vec<u64>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, id: u64) {
        let mut g = self.ids();
        if id == BLOCK_ON {
            self.block_on.store(true, Ordering::Release);
        } else {
            g.push(id);
            self.any.store(true, Ordering::Release);
        }
        self.cv.notify_all();
    }

    fn take(&self) -> Vec<u64> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut g = self.ids();
        self.any.store(false, Ordering::Release);
        std::mem::take(&mut *g)
    }

    /// Sleep until a task is ready or the engine stops, or for `limit` at most; true when the
    /// time ran out with nothing ready.
    fn wait_for(&self, limit: Duration) -> bool {
        let g = self.ids();
        let (g, r) = self
            .cv
            .wait_timeout_while(g, limit, |g| {
                g.is_empty() && !self.stop.load(Ordering::Acquire)
            })
            .unwrap_or_else(|e| e.into_inner());
        r.timed_out() && g.is_empty()
    }

    /// Sleep until a task is ready, the engine stops or the future of `block_on` is woken.
    /// (`run_until_stopped` sleeps in `wait_for`.)
    fn wait_for_block_on(&self) {
        let mut g = self.ids();
        while g.is_empty()
            && !self.stop.load(Ordering::Acquire)
            && !self.block_on.load(Ordering::Acquire)
        {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

struct TaskWaker {
    id: u64,
    ready: Arc<Ready>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.ready.push(self.id);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.push(self.id);
    }
}

fn waker(id: u64, ready: &Arc<Ready>) -> Waker {
    Waker::from(Arc::new(TaskWaker {
        id,
        ready: ready.clone(),
    }))
}

/// The waker of a request's first poll, which most requests finish in: it lives on the
/// stack, and only a future that keeps it (to be woken later) makes a task waker, by
/// cloning it. Saves an allocation and two atomic counts per request.
struct FirstPoll<'a> {
    id: u64,
    ready: &'a Arc<Ready>,
}

impl FirstPoll<'_> {
    /// A waker valid while `self` is (it is only lent to `poll`: what is kept is a clone).
    fn waker(&self) -> Waker {
        // SAFETY: the vtable's functions read `FirstPoll` through the pointer only while the
        // waker is in use, which ends with the `poll` it was lent to (`self` outlives it);
        // clones are independent task wakers.
        unsafe { Waker::from_raw(RawWaker::new(self as *const Self as *const (), &FIRST_POLL)) }
    }
}

static FIRST_POLL: RawWakerVTable = RawWakerVTable::new(
    // clone: a task waker of its own.
    |p| {
        let first = unsafe { &*(p as *const FirstPoll) };
        let w = std::mem::ManuallyDrop::new(waker(first.id, first.ready));
        RawWaker::new(w.data(), w.vtable())
    },
    first_poll_wake,
    first_poll_wake,
    // drop: nothing is owned.
    |_| {},
);

/// wake and wake_by_ref of the first poll's waker: queue the task.
fn first_poll_wake(p: *const ()) {
    // SAFETY: see `FirstPoll::waker`.
    let first = unsafe { &*(p as *const FirstPoll) };
    first.ready.push(first.id);
}

/// Poll `fut` once; a panic in flufs's own code fails this request only.
fn poll_guarded(fut: &mut Job, waker: &Waker) -> bool {
    let mut cx = Context::from_waker(waker);
    match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))) {
        Ok(Poll::Ready(())) => true,
        Ok(Poll::Pending) => false,
        Err(_) => {
            log::error("internal error while serving a request (the request gets EIO)");
            true
        }
    }
}

impl Owned {
    fn start(&mut self, req: Request, ready: &Arc<Ready>) {
        let ctx = req.ctx;
        let fut = Box::pin(self.dispatch.clone().handle(req));
        self.start_job(ctx, fut, ready);
    }

    fn start_write(&mut self, ctx: Ctx, w: Write<'_>, ready: &Arc<Ready>) {
        let data = self.dispatch.write_data(w.data);
        let d = self.dispatch.clone();
        let fut = Box::pin(d.handle_write(w.ino, w.fh, w.offset, data, w.reply));
        self.start_job(ctx, fut, ready);
    }

    /// Poll a new request's future once, now; keep it if it waits.
    fn start_job(&mut self, ctx: Ctx, mut fut: Job, ready: &Arc<Ready>) {
        let id = self.next;
        self.next += 1;
        self.dispatch.ctx().set(ctx);
        let first = FirstPoll { id, ready };
        if !poll_guarded(&mut fut, &first.waker()) {
            let waker = waker(id, ready);
            self.tasks.insert(id, Task { fut, ctx, waker });
        }
    }

    /// Resume every task whose wait is over.
    fn drain(&mut self, ready: &Ready) {
        loop {
            let ids = ready.take();
            if ids.is_empty() {
                return;
            }
            for id in ids {
                let Some(t) = self.tasks.get_mut(&id) else {
                    continue;
                };
                self.dispatch.ctx().set(t.ctx);
                let waker = t.waker.clone();
                if poll_guarded(&mut t.fut, &waker) {
                    self.tasks.remove(&id);
                }
            }
        }
    }
}

/// The dispatcher, shared by the kernel threads and the mount's main thread.
pub struct Engine {
    owned: Mutex<Option<Owned>>,
    ready: Arc<Ready>,
}

/// Collecting garbage while the mount is idle. Lua's collector works only when something is
/// allocated, so the cycle under way when a burst of requests ends stays where it is, with the
/// garbage the burst made (old file data written over, say), until requests come again. The
/// main thread, waiting for suspended requests anyway, looks once a second: after a whole
/// second without a request, when requests came before it and the Lua heap grew by a quarter
/// since the last cycle finished here, it finishes a cycle, in slices of `SLICE` under the
/// lock, `TICK_BUSY` apart, at most `BUDGET` per idle spell; a request in between stops it.
/// A 256 MiB luafs file written over three times: RSS 344 -> 262 MB three seconds after the
/// last write.
#[derive(Default)]
struct IdleGc {
    /// The next request's task id (`Owned::next`, one per request started) when it last
    /// looked.
    seen: u64,
    /// Requests came since the last collection here.
    dirty: bool,
    /// The Lua heap when a cycle last finished here.
    live: usize,
    /// A cycle is being finished, and this much time went to it.
    collecting: Option<Duration>,
}

const TICK: Duration = Duration::from_secs(1);
const TICK_BUSY: Duration = Duration::from_millis(20);
const SLICE: Duration = Duration::from_millis(2);
const BUDGET: Duration = Duration::from_millis(500);

impl Engine {
    pub fn new(dispatch: Dispatch) -> Arc<Engine> {
        Arc::new(Engine {
            owned: Mutex::new(Some(Owned {
                dispatch: Rc::new(dispatch),
                tasks: HashMap::new(),
                next: 1,
            })),
            ready: Arc::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Owned>> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `make`'s future (the script's init or destroy) to completion on this thread,
    /// serving other requests while it waits. `None` once the engine is closed.
    pub fn block_on<T>(
        &self,
        make: impl FnOnce(Rc<Dispatch>) -> Pin<Box<dyn Future<Output = T>>>,
    ) -> Option<T> {
        let waker = waker(BLOCK_ON, &self.ready);
        let mut cx = Context::from_waker(&waker);
        let mut fut = {
            let g = self.lock();
            make(g.as_ref()?.dispatch.clone())
        };
        loop {
            {
                // Replies go out after the lock is released (see `replies`).
                let _out = replies::hold();
                let mut g = self.lock();
                let Some(o) = g.as_mut() else {
                    // Closed: the future's Lua values go with the lock held.
                    drop(fut);
                    return None;
                };
                o.dispatch.ctx().set(Ctx::default());
                self.ready.block_on.store(false, Ordering::Release);
                if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                    drop(fut);
                    return Some(v);
                }
                o.drain(&self.ready);
            }
            self.ready.wait_for_block_on();
        }
    }

    /// Serve ready tasks on this thread until `stop` is called; collect garbage when idle.
    /// `tick` is called after every wake-up, at least once a second (the mount gives its
    /// heap trimming, `crate::trim`).
    pub fn run_until_stopped(&self, mut tick: impl FnMut()) {
        let mut idle = IdleGc {
            seen: self.lock().as_ref().map_or(0, |o| o.next),
            ..IdleGc::default()
        };
        loop {
            let limit = if idle.collecting.is_some() {
                TICK_BUSY
            } else {
                TICK
            };
            let timed_out = self.ready.wait_for(limit);
            if self.ready.stop.load(Ordering::Acquire) {
                return;
            }
            tick();
            if timed_out {
                self.collect_idle(&mut idle);
                continue;
            }
            let _out = replies::hold();
            if let Some(o) = self.lock().as_mut() {
                o.drain(&self.ready);
            }
        }
    }

    /// One look of `IdleGc`'s.
    fn collect_idle(&self, idle: &mut IdleGc) {
        let g = self.lock();
        let Some(o) = g.as_ref() else {
            return;
        };
        if o.next != idle.seen {
            // Requests since the last look: not idle (and any collection here stops).
            idle.seen = o.next;
            idle.dirty = true;
            idle.collecting = None;
            return;
        }
        if !idle.dirty {
            return;
        }
        let d = &o.dispatch;
        let spent = match idle.collecting {
            Some(spent) => spent,
            None if d.lua_heap() < idle.live + idle.live / 4 + (1 << 20) => {
                idle.dirty = false;
                return;
            }
            None => Duration::ZERO,
        };
        let start = std::time::Instant::now();
        let finished = d.collect_for(SLICE);
        let spent = spent + start.elapsed();
        if finished || spent >= BUDGET {
            idle.live = d.lua_heap();
            idle.collecting = None;
            idle.dirty = false;
        } else {
            idle.collecting = Some(spent);
        }
    }

    /// End `run_until_stopped` (from any thread).
    pub fn stop(&self) {
        self.ready.stop.store(true, Ordering::Release);
        let _g = self.ready.ids();
        self.ready.cv.notify_all();
    }

    /// Take the dispatcher and its pending requests out; requests from now on get EIO.
    /// The caller drops what it gets on the thread that made the dispatcher.
    pub fn close(&self) -> Option<Owned> {
        self.lock().take()
    }
}

impl Sink for Engine {
    /// Straight into the inode table under the lock: no request future, no waker (after
    /// `drop_caches` the kernel forgets thousands of nodes in a row, one call each, since
    /// fuser 0.18 does not let a filesystem take its batches whole).
    fn forget(&self, ino: u64, nlookup: u64) {
        if let Some(o) = self.lock().as_mut() {
            o.dispatch.forget(ino, nlookup);
        }
    }

    fn submit(&self, req: Request) {
        self.run_new(|o, ready| o.start(req, ready));
    }

    fn write(&self, ctx: Ctx, w: Write<'_>) {
        self.run_new(|o, ready| o.start_write(ctx, w, ready));
    }
}

impl Engine {
    /// Start a new request under the lock (`start`), then resume whatever became ready.
    /// Closed: `start` is dropped, and with it the request's reply, which fuser answers EIO.
    /// (The kernel side decides whether replies wait for the lock's release:
    /// `Kernel::hold_replies`.)
    fn run_new(&self, start: impl FnOnce(&mut Owned, &Arc<Ready>)) {
        let mut g = self.lock();
        let Some(o) = g.as_mut() else { return };
        start(o, &self.ready);
        o.drain(&self.ready);
    }
}
