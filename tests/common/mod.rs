//! Shared test harness: mounts a Lua script with the real `flufs` binary on a unique temporary
//! directory and guarantees the mount is gone when the guard drops, even if the test panics.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn flufs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flufs"))
}

/// The repository root (where `lua/` and `tests/fixtures/` live).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

pub fn shipped(name: &str) -> PathBuf {
    repo().join("lua").join(name)
}

/// True when FUSE can be used. In CI a missing /dev/fuse is a hard failure, never a skip.
pub fn fuse_available() -> bool {
    let ok = Path::new("/dev/fuse").exists();
    if !ok {
        if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
            panic!("/dev/fuse is missing but CI=true: FUSE tests must run in CI");
        }
        eprintln!("skipping: /dev/fuse not available (set CI=true to make this an error)");
    }
    ok
}

/// A unique temporary directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "flufs-test-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub fn is_mounted(mnt: &Path) -> bool {
    let want = mnt.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| {
            s.lines()
                .any(|l| l.split(' ').nth(4).map(unescape_mountinfo).as_deref() == Some(&want))
        })
        .unwrap_or(false)
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// A live mount of a Lua script. Unmounts and reaps the daemon on drop.
pub struct Mount {
    pub dir: TempDir,
    pub mnt: PathBuf,
    child: Option<Child>,
    stderr_path: PathBuf,
}

impl Mount {
    /// Mount `script` in the foreground (`-f`) with extra flufs options (before the script).
    pub fn new(script: &Path, opts: &[&str]) -> Mount {
        Self::with_args(script, opts, &[])
    }

    pub fn with_args(script: &Path, opts: &[&str], script_args: &[&str]) -> Mount {
        Self::try_with_args(script, opts, script_args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `with_args` but returns the daemon's stderr as the error when it fails to mount.
    pub fn try_with_args(
        script: &Path,
        opts: &[&str],
        script_args: &[&str],
    ) -> Result<Mount, String> {
        Self::try_with_env(script, opts, script_args, &[])
    }

    /// Like `with_args`, with extra environment variables set for the daemon only.
    pub fn with_env(
        script: &Path,
        opts: &[&str],
        script_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Mount {
        Self::try_with_env(script, opts, script_args, envs).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `try_with_args`, with extra environment variables set for the daemon only.
    pub fn try_with_env(
        script: &Path,
        opts: &[&str],
        script_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Mount, String> {
        let dir = TempDir::new("mnt");
        let mnt = dir.path.join("mnt");
        std::fs::create_dir_all(&mnt).expect("create mountpoint");
        let stderr_path = dir.path.join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr log");
        let mut cmd = Command::new(flufs_bin());
        cmd.arg("-f").args(opts).arg(script).arg(&mnt);
        if !script_args.is_empty() {
            cmd.arg("--").args(script_args);
        }
        cmd.envs(envs.iter().copied());
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn flufs");
        let mut m = Mount {
            dir,
            mnt,
            child: Some(child),
            stderr_path,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if is_mounted(&m.mnt) {
                return Ok(m);
            }
            if let Some(c) = m.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                m.child = None;
                return Err(format!(
                    "flufs exited ({status}) before mounting: {}",
                    m.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("timed out waiting for mount: {}", m.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Path inside the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel.trim_start_matches('/'))
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Unmount now and wait for the daemon; returns its exit status code. A daemon stuck in a
    /// request (a failing test) can hang the unmount: `fusermount3` looks at the mountpoint,
    /// and a process forked while one of the test's threads waits on the mount hung before its
    /// exec, seen here. So a thread kills the daemon if all this has not finished in 15 s,
    /// which fails its requests, and the rest then goes through.
    pub fn unmount(&mut self) -> Option<i32> {
        let finished = Arc::new(AtomicBool::new(false));
        if let Some(pid) = self.pid() {
            let finished = finished.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(15);
                while Instant::now() < deadline {
                    if finished.load(Ordering::Acquire) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                // Not reaped yet (`finished` is set after `reap`), so the pid is still ours.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            });
        }
        let code = self.unmount_now();
        finished.store(true, Ordering::Release);
        code
    }

    fn unmount_now(&mut self) -> Option<i32> {
        if is_mounted(&self.mnt) {
            let ok = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
        self.reap()
    }

    /// Wait (bounded) for the daemon to exit; kill it if it does not.
    pub fn reap(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.code(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    /// PID of the daemon.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

/// Run a shell command (sh -c) and return (status code, stdout, stderr).
pub fn sh(cmd: &str) -> (i32, String, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run sh");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The errno of an io::Error (panics if it has none).
pub fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error()
        .unwrap_or_else(|| panic!("error without errno: {e}"))
}

/// A small deterministic PRNG (xorshift64*) for the random-operation tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// The link count of `path` (a symlink itself, not followed) by statx with `flags`: the
/// kernel's cached one (`AT_STATX_DONT_SYNC`) or one asked of the filesystem
/// (`AT_STATX_FORCE_SYNC`); `None` when statx fails.
pub fn statx_nlink(path: &Path, flags: i32) -> Option<u32> {
    let c = cpath(path);
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | flags,
            libc::STATX_NLINK,
            &mut sx,
        )
    };
    (r == 0).then_some(sx.stx_nlink)
}

/// `p` as a C string, for libc calls.
pub fn cpath(p: &Path) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// A libc call's 0 or -1 (errno set) as a result.
pub fn cvt(r: libc::c_int) -> std::io::Result<()> {
    if r == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// renameat2(2) of `a` to `b` with `flags` (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`).
pub fn rename2(a: &Path, b: &Path, flags: u32) -> std::io::Result<()> {
    // SAFETY: both paths are NUL-terminated strings that live across the call.
    cvt(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cpath(a).as_ptr(),
            libc::AT_FDCWD,
            cpath(b).as_ptr(),
            flags,
        )
    })
}

/// setxattr (`follow`) or lsetxattr of `name` on `p`.
pub fn setxattr(
    p: &Path,
    name: &str,
    value: &[u8],
    flags: i32,
    follow: bool,
) -> std::io::Result<()> {
    let n = std::ffi::CString::new(name).unwrap();
    let f = if follow {
        libc::setxattr
    } else {
        libc::lsetxattr
    };
    cvt(unsafe {
        f(
            cpath(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr() as *const _,
            value.len(),
            flags,
        )
    })
}

/// lgetxattr with a buffer of `size` bytes (0 = size query, returned as a vec of that length).
pub fn getxattr(p: &Path, name: &str, size: usize) -> std::io::Result<Vec<u8>> {
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; size];
    let r = unsafe {
        libc::lgetxattr(
            cpath(p).as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr() as *mut _,
            size,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if size == 0 {
        return Ok(vec![0u8; r as usize]);
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// llistxattr: the names, sorted.
pub fn listxattr(p: &Path) -> std::io::Result<Vec<String>> {
    let mut buf = vec![0u8; 65536];
    let r = unsafe { libc::llistxattr(cpath(p).as_ptr(), buf.as_mut_ptr() as *mut _, buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut v: Vec<String> = buf[..r as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    v.sort();
    Ok(v)
}

/// lremovexattr.
pub fn removexattr(p: &Path, name: &str) -> std::io::Result<()> {
    let n = std::ffi::CString::new(name).unwrap();
    cvt(unsafe { libc::lremovexattr(cpath(p).as_ptr(), n.as_ptr()) })
}

/// errno of the last failed libc call.
pub fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

/// A reference directory (on a kernel filesystem, tmpfs when /dev/shm exists, mode 0755) that
/// the random-operation tests mirror a mount against; removed on drop.
pub struct RefDir(pub PathBuf);

impl RefDir {
    pub fn new(tag: &str) -> RefDir {
        use std::os::unix::fs::PermissionsExt;
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let p = base.join(format!("flufs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        RefDir(p)
    }
}

impl Drop for RefDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Wait up to `limit` for `child` to exit and return its exit code; past the limit (or on a
/// wait error) kill it and return None.
pub fn wait_or_kill(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.code(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Whether the root-only part `what` can run. Without root it is skipped, except with
/// `CI=true`: `.ci/run` runs as root, so a skip there would hide a part that never ran.
pub fn root_for(what: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("not root but CI=true: {what} must run in CI (.ci/run runs as root)");
    }
    eprintln!("not root: skipping {what}");
    false
}

/// Makes the kernel forget every unused dentry and inode (root only), so the next access to
/// any path in the mount is a fresh LOOKUP.
pub fn drop_kernel_caches() -> bool {
    if !is_root() {
        return false;
    }
    unsafe { libc::sync() };
    let ok = std::fs::write("/proc/sys/vm/drop_caches", "2").is_ok();
    // FORGET messages reach the daemon asynchronously.
    std::thread::sleep(Duration::from_millis(200));
    ok
}

/// For a test part that needs the kernel to forget its dentries and inodes: drops them and
/// returns true as root; false (skip the part) without root, as `root_for` decides. Panics when
/// root cannot drop them.
pub fn drop_kernel_caches_for(what: &str) -> bool {
    if !root_for(what) {
        return false;
    }
    assert!(
        drop_kernel_caches(),
        "{what}: cannot write /proc/sys/vm/drop_caches"
    );
    true
}

/// The names in `dir`, sorted (panics naming the directory when it cannot be read).
pub fn sorted_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
