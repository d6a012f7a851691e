//! One mount's lifetime: checks the mountpoint, mounts through fuser, runs the kernel session on
//! its own thread and the dispatcher on the calling thread, and unmounts cleanly on
//! SIGINT/SIGTERM/SIGHUP or when someone runs `fusermount3 -u` (running the script's `destroy`
//! either way).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;

use fuser::{Config as FuserConfig, MountOption, Session, SessionACL};
use mlua::{Lua, Table};

use crate::dispatch::{self, CurrentCtx, Dispatch, Engine};
use crate::kernel::{Features, Kernel};
use crate::ops::OpName;
use crate::options::MountOptions;

/// What to mount where.
pub struct Target {
    pub mountpoint: PathBuf,
    pub default_fsname: String,
}

/// The `(major:minor, fstype)` of the last filesystem mounted at `mnt`, from mountinfo (which
/// never waits on a FUSE session that is not serving yet).
fn mountinfo(mnt: &Path) -> Option<(String, String)> {
    let want = mnt.to_string_lossy();
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().rev().find_map(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        let point = fields.get(4)?.replace("\\040", " ").replace("\\134", "\\");
        if point != want {
            return None;
        }
        let sep = fields.iter().position(|f| *f == "-")?;
        Some((fields.get(2)?.to_string(), fields.get(sep + 1)?.to_string()))
    })
}

/// Let the kernel read ahead as far as one request can carry (the default is 128 KiB).
fn raise_readahead(mnt: &Path, bytes: u32) {
    if let Some((dev, _)) = mountinfo(mnt) {
        let kib = (bytes / 1024).max(128);
        let _ = std::fs::write(
            format!("/sys/class/bdi/{dev}/read_ahead_kb"),
            kib.to_string(),
        );
    }
}

/// Refuse mountpoints that cannot work, with a message that says what to do.
pub fn check_mountpoint(mnt: &Path) -> Result<(), String> {
    let shown = mnt.display();
    match std::fs::metadata(mnt) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(format!(
                "{shown} is a stale FUSE mount (Transport endpoint is not connected); \
                 clean it up with 'fusermount3 -u {shown}'"
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "mountpoint {shown} does not exist (create it with 'mkdir -p {shown}')"
            ));
        }
        Err(e) => return Err(format!("cannot use mountpoint {shown}: {e}")),
        Ok(m) if !m.is_dir() => {
            return Err(format!("mountpoint {shown} is not a directory"));
        }
        Ok(_) => {}
    }
    if let Some((_, t)) = mountinfo(mnt)
        && t.starts_with("fuse")
    {
        return Err(format!(
            "{shown} is already mounted ({t}); unmount it first with 'fusermount3 -u {shown}'"
        ));
    }
    Ok(())
}

fn fuser_config(o: &MountOptions, t: &Target) -> FuserConfig {
    let mut opts = vec![
        MountOption::FSName(o.fsname.clone().unwrap_or_else(|| t.default_fsname.clone())),
        MountOption::Subtype(o.subtype.clone().unwrap_or_else(|| "flufs".into())),
    ];
    if o.ro {
        opts.push(MountOption::RO);
    }
    if o.default_permissions {
        opts.push(MountOption::DefaultPermissions);
    }
    if o.auto_unmount {
        opts.push(MountOption::AutoUnmount);
    }
    if let Some(n) = o.max_read {
        opts.push(MountOption::CUSTOM(format!("max_read={n}")));
    }
    for f in &o.kernel_flags {
        opts.push(match f.as_str() {
            "dev" => MountOption::Dev,
            "nodev" => MountOption::NoDev,
            "suid" => MountOption::Suid,
            "nosuid" => MountOption::NoSuid,
            "exec" => MountOption::Exec,
            "noexec" => MountOption::NoExec,
            "atime" => MountOption::Atime,
            "noatime" => MountOption::NoAtime,
            "sync" => MountOption::Sync,
            "async" => MountOption::Async,
            _ => MountOption::DirSync,
        });
    }
    let mut acl = if o.allow_other {
        SessionACL::All
    } else if o.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    // fuser only allows auto_unmount with allow_other/allow_root; for root, allow_root grants
    // nothing more than the default.
    if o.auto_unmount && acl == SessionACL::Owner && unsafe { libc::geteuid() } == 0 {
        acl = SessionACL::RootAndOwner;
    }
    let mut c = FuserConfig::default();
    c.mount_options = opts;
    c.acl = acl;
    c.n_threads = Some(kernel_threads(o));
    c
}

/// Kernel threads reading requests when `-o threads=N` is not given. Two, of which the second
/// reads only while requests keep coming (`crate::readers`).
pub const DEFAULT_THREADS: usize = 2;

/// How many kernel threads read requests: `-o threads=N`, else `DEFAULT_THREADS` (one when the
/// daemon may run on one CPU only, see `readers::usable`).
fn kernel_threads(o: &MountOptions) -> usize {
    crate::readers::usable(o.threads.unwrap_or(DEFAULT_THREADS))
}

fn mount_error(e: &std::io::Error, mnt: &Path, o: &MountOptions) -> String {
    let shown = mnt.display();
    let msg = e.to_string();
    if msg.contains("/dev/fuse")
        || (e.kind() == std::io::ErrorKind::NotFound && !Path::new("/dev/fuse").exists())
    {
        return format!(
            "cannot open /dev/fuse: {e} (load the fuse module: 'modprobe fuse'; install fuse3)"
        );
    }
    if o.auto_unmount && msg.contains("acl") {
        return "auto_unmount needs -o allow_other or -o allow_root for non-root users".into();
    }
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => format!(
            "cannot mount on {shown}: permission denied (run as root, or install fuse3 so that \
             fusermount3 can mount for you)"
        ),
        _ if e.kind() == std::io::ErrorKind::NotFound => format!(
            "cannot mount on {shown}: {e} (is fusermount3 installed? apt-get install fuse3)"
        ),
        _ => format!("cannot mount on {shown}: {e}"),
    }
}

/// Signals that end the mount, plus the private wake-up signal for the signal thread.
fn stop_signals() -> libc::sigset_t {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR2] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Detach the mount even when files are open, and abort the connection so that nothing waits
/// on a daemon that is going away.
fn lazy_unmount(mnt: &Path) {
    let Ok(c) = CString::new(mnt.as_os_str().as_bytes()) else {
        return;
    };
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let _ = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(mnt)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// `-o auto_unmount` for a direct mount: a small watcher process holds the read end of a pipe
/// whose write end only this process has; when this process ends in any way (even kill -9),
/// the watcher reads end-of-file and lazily unmounts `mnt`.
fn unmount_when_gone(mnt: &Path) -> std::io::Result<()> {
    let target = CString::new(mnt.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => unsafe {
            // The watcher: only async-signal-safe calls from here on.
            // Hold nothing of the daemon's (its /dev/fuse, a launcher's report pipe, stdio).
            for fd in 0..4096 {
                if fd != fds[0] {
                    libc::close(fd);
                }
            }
            libc::setsid();
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
            let mut b = 0u8;
            while libc::read(fds[0], (&mut b as *mut u8).cast(), 1) != 0 {
                if *libc::__errno_location() != libc::EINTR {
                    break;
                }
            }
            libc::umount2(target.as_ptr(), libc::MNT_DETACH);
            libc::_exit(0)
        },
        _ => {
            // Keep the write end open for the life of this process (it is close-on-exec).
            unsafe { libc::close(fds[0]) };
            Ok(())
        }
    }
}

/// mount(2) a FUSE filesystem on `mnt` and return the /dev/fuse descriptor serving it.
fn mount_direct(mnt: &Path, o: &MountOptions, t: &Target) -> std::io::Result<OwnedFd> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot open /dev/fuse: {e}")))?;
    let fd = OwnedFd::from(dev);
    let root_mode = std::fs::metadata(mnt)?.permissions().mode() & libc::S_IFMT;
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={}",
        fd.as_raw_fd(),
        root_mode,
        unsafe { libc::getuid() },
        unsafe { libc::getgid() }
    );
    if o.default_permissions {
        data.push_str(",default_permissions");
    }
    if o.allow_other || o.allow_root {
        data.push_str(",allow_other");
    }
    if let Some(n) = o.max_read {
        data.push_str(&format!(",max_read={n}"));
    }
    let mut flags: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;
    if o.ro {
        flags |= libc::MS_RDONLY;
    }
    for f in &o.kernel_flags {
        match f.as_str() {
            "suid" => flags &= !libc::MS_NOSUID,
            "dev" => flags &= !libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "noatime" => flags |= libc::MS_NOATIME,
            "sync" => flags |= libc::MS_SYNCHRONOUS,
            "dirsync" => flags |= libc::MS_DIRSYNC,
            _ => {}
        }
    }
    let cstr = |s: &str| CString::new(s.replace('\0', "")).unwrap_or_default();
    let source = cstr(&o.fsname.clone().unwrap_or_else(|| t.default_fsname.clone()));
    let fstype = cstr(&format!("fuse.{}", o.subtype.as_deref().unwrap_or("flufs")));
    let target = CString::new(mnt.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let data = cstr(&data);
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Mount `fs` and serve it until it is unmounted. `ready` runs once the mount is live.
pub fn serve(
    lua: &Lua,
    fs: &Table,
    o: &MountOptions,
    target: &Target,
    ctx: CurrentCtx,
    ready: &mut dyn FnMut(),
) -> Result<(), String> {
    let mnt = target.mountpoint.clone();
    check_mountpoint(&mnt)?;
    let cfg = dispatch::Config {
        attr_ttl: o.attr_ttl(),
        entry_ttl: o.entry_ttl(),
        negative_ttl: o.negative_ttl(),
        direct_io: o.direct_io,
        kernel_cache: o.kernel_cache,
        debug: o.debug,
        op_timeout: o.op_timeout,
    };
    let dispatch = Dispatch::new(lua.clone(), fs, cfg, ctx)
        .map_err(|e| format!("cannot read the operations table: {e}"))?;
    let features = Features {
        posix_locks: dispatch.has(OpName::Lock),
        readdirplus: dispatch.readdirplus(),
        handle_killpriv: dispatch.handles_killpriv(),
        writeback_cache: o.writeback_cache,
        max_write: o.max_write.unwrap_or(1 << 20),
        max_readahead: o.max_read.unwrap_or(1 << 20).min(1 << 20),
    };
    let engine = Engine::new(dispatch);
    // Whatever happens from here on, the dispatcher (the Lua state) comes back to this thread
    // and later requests get EIO.
    struct CloseOnExit<'a>(&'a Engine);
    impl Drop for CloseOnExit<'_> {
        fn drop(&mut self) {
            drop(self.0.close());
        }
    }
    let _close = CloseOnExit(&engine);

    // Block the stop signals in this thread and in every thread started from here on; one
    // thread takes them with sigwait.
    let set = stop_signals();
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
    let restore = || unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    };

    let config = fuser_config(o, target);
    // The readers' gate counts the threads fuser starts (decided once, in `fuser_config`).
    let kernel = Kernel::new(engine.clone(), features, config.n_threads.unwrap_or(1));
    // As root mount(2) directly, so
    // that the type shows as fuse.SUBTYPE; otherwise let fuser go through fusermount3.
    let direct = unsafe { libc::geteuid() } == 0;
    let session = if direct {
        mount_direct(&mnt, o, target).and_then(|fd| {
            if o.auto_unmount {
                unmount_when_gone(&mnt)?;
            }
            Session::from_fd(kernel, fd, config.acl, config.clone())
                .inspect_err(|_| lazy_unmount(&mnt))
        })
    } else {
        Session::new(kernel, &mnt, &config)
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            restore();
            return Err(mount_error(&e, &mnt, o));
        }
    };
    crate::replies::set_notifier(session.notifier());
    let init = engine
        .block_on(|d| Box::pin(async move { d.init().await }))
        .unwrap_or(Ok(()));
    if let Err(msg) = init {
        drop(session);
        lazy_unmount(&mnt);
        restore();
        return Err(msg);
    }
    raise_readahead(&mnt, features.max_readahead);
    ready();

    let session_engine = engine.clone();
    let session_thread = thread::Builder::new()
        .name("flufs-session".into())
        .spawn(move || {
            let r = session.run();
            session_engine.stop();
            r
        })
        .map_err(|e| format!("cannot start the session thread: {e}"))?;

    let signal_mnt = mnt.clone();
    let signal_engine = engine.clone();
    let signal_thread = thread::Builder::new()
        .name("flufs-signals".into())
        .spawn(move || {
            loop {
                let mut sig = 0;
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                if sig == libc::SIGUSR2 {
                    return false;
                }
                lazy_unmount(&signal_mnt);
                signal_engine.stop();
                return true;
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;

    // Resume requests whose wait is over until the mount ends, then run destroy.
    let mut trimmer = crate::trim::Trimmer::new();
    engine.run_until_stopped(|| trimmer.tick());
    engine.block_on(|d| Box::pin(async move { d.destroy().await }));

    let by_signal = if signal_thread.is_finished() {
        signal_thread.join().unwrap_or(false)
    } else {
        use std::os::unix::thread::JoinHandleExt;
        unsafe { libc::pthread_kill(signal_thread.as_pthread_t(), libc::SIGUSR2) };
        signal_thread.join().unwrap_or(false)
    };
    // After a signal the mount is detached but may still be busy: the session thread can stay
    // blocked on the device, and the connection ends when this process exits.
    if !by_signal {
        let _ = session_thread.join();
    }
    restore();
    Ok(())
}
