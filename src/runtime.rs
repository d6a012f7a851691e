//! The background runtime for what requests wait on: blocking network calls (`gett`, `http`)
//! run on its blocking pool and timers (`flu.sleep`) on its timer, while only the calling
//! request's coroutine waits. It never runs Lua: a finished wait wakes the request, and the
//! dispatcher resumes it (see `dispatch::tasks`).

use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::{Builder, Runtime};

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

fn runtime() -> mlua::Result<&'static Runtime> {
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("flufs-io")
                .enable_time()
                .on_thread_start(|| unsafe {
                    // Signals are for the mount's signal thread only.
                    let mut all: libc::sigset_t = std::mem::zeroed();
                    libc::sigfillset(&mut all);
                    libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
                })
                .build()
                .map_err(|e| format!("cannot start the I/O runtime: {e}"))
        })
        .as_ref()
        .map_err(|e| mlua::Error::runtime(e.clone()))
}

/// Run `f` on a worker thread; the calling coroutine suspends until it is done.
pub async fn blocking<F, R>(what: &str, f: F) -> mlua::Result<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    runtime()?
        .spawn_blocking(f)
        .await
        .map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))
}

/// Suspend the calling coroutine for `d`.
pub async fn sleep(d: Duration) -> mlua::Result<()> {
    runtime()?
        .spawn(async move { tokio::time::sleep(d).await })
        .await
        .map_err(|e| mlua::Error::runtime(format!("flu.sleep: {e}")))
}

/// Run `fut` to completion on this thread, sleeping while it waits: for the script's main
/// chunk, which may call `gett`/`http` before any request exists.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
