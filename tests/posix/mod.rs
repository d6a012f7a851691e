//! A POSIX conformance suite that runs against any directory: a tmpfs (tests/posix_tmpfs.rs,
//! which checks the suite itself) or a luafs mount (tests/posix_luafs.rs). The expected results
//! are what Linux tmpfs does; where POSIX allows two answers both are accepted.
//!
//! Each case works in its own subdirectory `ROOT/<case>` (mode 0777) and records every
//! mismatch as a [`Failure`] instead of stopping at the first one; a failed set-up step ends
//! the case. Steps that need a second user run in a thread whose credentials alone are
//! switched to `SuiteOpts::other` (raw setresuid/setresgid/setgroups change only the calling
//! thread), so on FUSE the mount needs `-o allow_other,default_permissions`.
//!
//! `run_all(root, opts)` runs every case in `CASES`; `posix_tests!(setup)` makes one `#[test]`
//! per case, each on a fresh target from `setup`.
#![allow(dead_code)]

use std::ffi::{CString, OsStr};
use std::fmt;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libc::{
    EACCES, EBADF, EBUSY, EEXIST, EINVAL, EISDIR, ELOOP, ENAMETOOLONG, ENODATA, ENOENT, ENOTDIR,
    ENOTEMPTY, ENXIO, EPERM, ERANGE, O_APPEND, O_CREAT, O_DIRECTORY, O_EXCL, O_NOFOLLOW,
    O_NONBLOCK, O_PATH, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO,
    S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK,
};

// ---------------------------------------------------------------------------------------------
// options and results

/// What the target and the test process can do.
#[derive(Debug, Clone)]
pub struct SuiteOpts {
    /// The suite runs as root: chown, device nodes, root's permission rules.
    pub root: bool,
    /// uid and gid of a second, unprivileged user for the permission checks (`None` skips them).
    pub other: Option<(u32, u32)>,
    /// Check atime updates (relatime rules: reads update an atime older than mtime/ctime).
    pub atime: bool,
}

impl SuiteOpts {
    /// Root with nobody (65534) as the second user; without root, no second user.
    pub fn detect() -> SuiteOpts {
        let root = unsafe { libc::geteuid() } == 0;
        SuiteOpts {
            root,
            other: root.then_some((65534, 65534)),
            atime: true,
        }
    }
}

/// One mismatch: the case and what differed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub case: String,
    pub what: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.case, self.what)
    }
}

/// All failures, one per line, for an assertion message.
pub fn report(fails: &[Failure]) -> String {
    let mut s = format!("{} POSIX conformance failure(s):\n", fails.len());
    for f in fails {
        s.push_str(&format!("  {f}\n"));
    }
    s
}

/// A set-up step failed; the case stops (the failure is already recorded).
#[derive(Debug)]
pub struct Abort;
pub type Res = Result<(), Abort>;
pub type Case = fn(&Ck) -> Res;

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("open_flags", open_flags),
    ("permissions", permissions),
    ("ownership_of_new_files", ownership_of_new_files),
    ("chmod_rules", chmod_rules),
    ("chown_rules", chown_rules),
    ("setid_cleared_on_write", setid_cleared_on_write),
    ("sticky_directories", sticky_directories),
    ("link_counts", link_counts),
    ("rename_rules", rename_rules),
    ("rmdir_unlink_mkdir", rmdir_unlink_mkdir),
    ("unlinked_open_files", unlinked_open_files),
    ("fifo_and_mknod", fifo_and_mknod),
    ("symlinks", symlinks),
    ("truncate_rules", truncate_rules),
    ("utimensat_rules", utimensat_rules),
    ("time_updates", time_updates),
    ("atime_updates", atime_updates),
    ("name_and_path_limits", name_and_path_limits),
    ("xattrs", xattrs),
    ("readdir_entries", readdir_entries),
    ("io_edges", io_edges),
];

/// Run every case under `root` (one subdirectory each).
pub fn run_all(root: &Path, opts: &SuiteOpts) -> Vec<Failure> {
    run_all_counted(root, opts).1
}

/// Like `run_all`, also returning how many checks ran.
pub fn run_all_counted(root: &Path, opts: &SuiteOpts) -> (usize, Vec<Failure>) {
    let mut n = 0;
    let mut fails = Vec::new();
    for (name, _) in CASES {
        let (k, f) = run_case_counted(name, root, opts);
        n += k;
        fails.extend(f);
    }
    (n, fails)
}

/// Run every case under `root`, print how many checks ran, and fail with the report if any
/// check failed.
#[track_caller]
pub fn assert_all_pass(root: &Path, opts: &SuiteOpts) {
    let (checks, fails) = run_all_counted(root, opts);
    eprintln!("{checks} checks, {} failed", fails.len());
    assert!(fails.is_empty(), "{}", report(&fails));
}

/// Run one case under `root/<name>`.
pub fn run_case(name: &str, root: &Path, opts: &SuiteOpts) -> Vec<Failure> {
    run_case_counted(name, root, opts).1
}

/// Like `run_case`, also returning how many checks ran.
pub fn run_case_counted(name: &str, root: &Path, opts: &SuiteOpts) -> (usize, Vec<Failure>) {
    let (case_name, case) = *CASES
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no POSIX case named {name}"));
    unsafe { libc::umask(0o022) };
    let dir = root.join(case_name);
    let ck = Ck {
        case: case_name,
        dir: dir.clone(),
        opts,
        fails: Mutex::new(Vec::new()),
        checks: AtomicUsize::new(0),
    };
    let setup = fs::create_dir(&dir)
        .and_then(|_| fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)));
    if let Err(e) = setup {
        ck.fail(format!(
            "cannot create the case directory {}: {e}",
            dir.display()
        ));
    } else {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&ck)));
        if let Err(p) = r {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            ck.fail(format!("panicked: {msg}"));
        }
    }
    let n = ck.checks.load(Ordering::Relaxed);
    (n, ck.fails.into_inner().unwrap())
}

// ---------------------------------------------------------------------------------------------
// the checker

pub struct Ck<'a> {
    pub case: &'static str,
    pub dir: PathBuf,
    pub opts: &'a SuiteOpts,
    fails: Mutex<Vec<Failure>>,
    checks: AtomicUsize,
}

fn ename(e: i32) -> String {
    let n = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ETIMEDOUT => "ETIMEDOUT",
        _ => return format!("errno {e}"),
    };
    n.to_string()
}

fn io_ename(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => ename(n),
        None => format!("{e}"),
    }
}

impl Ck<'_> {
    /// Path of `rel` inside the case directory.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Path of a raw byte name inside the case directory.
    pub fn pb(&self, rel: &[u8]) -> PathBuf {
        self.dir.join(OsStr::from_bytes(rel))
    }

    fn count(&self) {
        self.checks.fetch_add(1, Ordering::Relaxed);
    }

    pub fn fail(&self, what: impl Into<String>) {
        self.fails.lock().unwrap().push(Failure {
            case: self.case.to_string(),
            what: what.into(),
        });
    }

    /// `r` must succeed; a failure is recorded and the value is None.
    pub fn ok<T>(&self, what: &str, r: io::Result<T>) -> Option<T> {
        self.count();
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail(format!("{what}: expected success, got {}", io_ename(&e)));
                None
            }
        }
    }

    /// A set-up step: a failure is recorded and ends the case.
    pub fn must<T>(&self, what: &str, r: io::Result<T>) -> Result<T, Abort> {
        r.map_err(|e| {
            self.fail(format!(
                "set-up step failed ({what}): {} ({e})",
                io_ename(&e)
            ));
            Abort
        })
    }

    /// `r` must fail with one of `want`.
    pub fn errno<T: fmt::Debug>(&self, what: &str, r: io::Result<T>, want: &[i32]) {
        self.count();
        let names: Vec<String> = want.iter().map(|&e| ename(e)).collect();
        match r {
            Ok(v) => self.fail(format!(
                "{what}: expected {}, got success ({v:?})",
                names.join(" or ")
            )),
            Err(e) => {
                if !e.raw_os_error().is_some_and(|n| want.contains(&n)) {
                    self.fail(format!(
                        "{what}: expected {}, got {}",
                        names.join(" or "),
                        io_ename(&e)
                    ))
                }
            }
        }
    }

    pub fn eq<T: PartialEq + fmt::Debug>(&self, what: &str, got: T, want: T) {
        self.count();
        if got != want {
            self.fail(format!("{what}: got {got:?}, expected {want:?}"));
        }
    }

    /// Like `eq` for modes, shown in octal.
    pub fn mode_eq(&self, what: &str, got: u32, want: u32) {
        self.count();
        if got != want {
            self.fail(format!("{what}: mode {got:o}, expected {want:o}"));
        }
    }

    /// The type and permission bits of `rel` (lstat) must be `want` (shown in octal).
    pub fn mode_is(&self, what: &str, rel: &str, want: u32) {
        match fs::symlink_metadata(self.p(rel)) {
            Ok(md) => self.mode_eq(what, md.mode(), want),
            Err(e) => self.fail(format!("{what}: lstat {rel}: {}", io_ename(&e))),
        }
    }

    pub fn yes(&self, what: &str, cond: bool) {
        self.count();
        if !cond {
            self.fail(what.to_string());
        }
    }

    pub fn lstat(&self, rel: &str) -> Result<Metadata, Abort> {
        self.must(&format!("lstat {rel}"), fs::symlink_metadata(self.p(rel)))
    }

    pub fn stat(&self, rel: &str) -> Result<Metadata, Abort> {
        self.must(&format!("stat {rel}"), fs::metadata(self.p(rel)))
    }

    pub fn put(&self, rel: &str, data: &[u8]) -> Res {
        self.must(&format!("write {rel}"), fs::write(self.p(rel), data))
    }

    pub fn mkdir(&self, rel: &str, mode: u32) -> Res {
        self.must(&format!("mkdir {rel}"), fs::create_dir(self.p(rel)))?;
        self.chmod(rel, mode)
    }

    pub fn chmod(&self, rel: &str, mode: u32) -> Res {
        self.must(
            &format!("chmod {rel} {mode:o}"),
            fs::set_permissions(self.p(rel), fs::Permissions::from_mode(mode)),
        )
    }

    pub fn chown(&self, rel: &str, uid: Option<u32>, gid: Option<u32>) -> Res {
        self.must(
            &format!("chown {rel}"),
            std::os::unix::fs::lchown(self.p(rel), uid, gid),
        )
    }

    pub fn read(&self, rel: &str) -> Option<Vec<u8>> {
        self.ok(&format!("read {rel}"), fs::read(self.p(rel)))
    }

    /// The permission and type bits of `rel` (lstat), or None (recorded).
    pub fn mode_of(&self, rel: &str) -> Option<u32> {
        self.ok(&format!("lstat {rel}"), fs::symlink_metadata(self.p(rel)))
            .map(|m| m.mode())
    }

    /// The second user, if any.
    pub fn other(&self) -> Option<(u32, u32)> {
        self.opts.other
    }

    /// Run `f` as the second user (None when there is none).
    pub fn as_other<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Option<R> {
        let (uid, gid) = self.opts.other?;
        Some(run_as(uid, gid, f))
    }
}

/// Run `f` in a new thread whose credentials (and only those of that thread) are uid/gid with
/// no supplementary groups.
pub fn run_as<R: Send>(uid: u32, gid: u32, f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        s.spawn(move || {
            // Raw system calls: glibc's setresuid() would switch every thread of the process.
            unsafe {
                let r = libc::syscall(libc::SYS_setgroups, 0 as libc::c_long, 0 as libc::c_long);
                assert_eq!(r, 0, "setgroups: {}", io::Error::last_os_error());
                let g = gid as libc::c_long;
                let r = libc::syscall(libc::SYS_setresgid, g, g, g);
                assert_eq!(r, 0, "setresgid: {}", io::Error::last_os_error());
                let u = uid as libc::c_long;
                let r = libc::syscall(libc::SYS_setresuid, u, u, u);
                assert_eq!(r, 0, "setresuid: {}", io::Error::last_os_error());
            }
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

// ---------------------------------------------------------------------------------------------
// system calls std does not offer

pub mod sys {
    use super::*;

    pub fn c(p: &Path) -> CString {
        CString::new(p.as_os_str().as_bytes()).unwrap()
    }

    pub fn cb(b: &[u8]) -> CString {
        CString::new(b).unwrap()
    }

    pub fn open(p: &Path, flags: i32, mode: u32) -> io::Result<File> {
        let fd = unsafe { libc::open(c(p).as_ptr(), flags | libc::O_CLOEXEC, mode) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    pub fn openat(dir: &File, rel: &[u8], flags: i32, mode: u32) -> io::Result<File> {
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                cb(rel).as_ptr(),
                flags | libc::O_CLOEXEC,
                mode,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    pub fn mkdirat(dir: &File, rel: &[u8], mode: u32) -> io::Result<()> {
        cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), cb(rel).as_ptr(), mode) })
    }

    pub fn unlinkat(dir: &File, rel: &[u8], flags: i32) -> io::Result<()> {
        cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), cb(rel).as_ptr(), flags) })
    }

    pub fn fstatat(dir: &File, rel: &[u8], flags: i32) -> io::Result<libc::stat> {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        cvt(unsafe { libc::fstatat(dir.as_raw_fd(), cb(rel).as_ptr(), &mut st, flags) })?;
        Ok(st)
    }

    pub fn mkdir(p: &Path, mode: u32) -> io::Result<()> {
        cvt(unsafe { libc::mkdir(c(p).as_ptr(), mode) })
    }

    pub fn mknod(p: &Path, mode: u32, dev: libc::dev_t) -> io::Result<()> {
        cvt(unsafe { libc::mknod(c(p).as_ptr(), mode, dev) })
    }

    pub fn mkfifo(p: &Path, mode: u32) -> io::Result<()> {
        cvt(unsafe { libc::mkfifo(c(p).as_ptr(), mode) })
    }

    pub fn truncate(p: &Path, len: i64) -> io::Result<()> {
        cvt(unsafe { libc::truncate(c(p).as_ptr(), len) })
    }

    pub fn ftruncate(f: &File, len: i64) -> io::Result<()> {
        cvt(unsafe { libc::ftruncate(f.as_raw_fd(), len) })
    }

    pub fn rename(a: &Path, b: &Path) -> io::Result<()> {
        cvt(unsafe { libc::rename(c(a).as_ptr(), c(b).as_ptr()) })
    }

    pub fn rmdir(p: &Path) -> io::Result<()> {
        cvt(unsafe { libc::rmdir(c(p).as_ptr()) })
    }

    pub fn unlink(p: &Path) -> io::Result<()> {
        cvt(unsafe { libc::unlink(c(p).as_ptr()) })
    }

    pub fn link(a: &Path, b: &Path) -> io::Result<()> {
        cvt(unsafe { libc::link(c(a).as_ptr(), c(b).as_ptr()) })
    }

    pub fn symlink(target: &[u8], p: &Path) -> io::Result<()> {
        cvt(unsafe { libc::symlink(cb(target).as_ptr(), c(p).as_ptr()) })
    }

    pub fn readlink(p: &Path) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 8192];
        let n = unsafe { libc::readlink(c(p).as_ptr(), buf.as_mut_ptr() as *mut _, buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        Ok(buf)
    }

    pub fn access(p: &Path, mode: i32) -> io::Result<()> {
        cvt(unsafe { libc::access(c(p).as_ptr(), mode) })
    }

    pub fn chmod(p: &Path, mode: u32) -> io::Result<()> {
        cvt(unsafe { libc::chmod(c(p).as_ptr(), mode) })
    }

    /// chown(2) with -1 for "unchanged" (u32::MAX).
    pub fn chown(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
        cvt(unsafe { libc::chown(c(p).as_ptr(), uid, gid) })
    }

    pub fn ts(sec: i64, nsec: i64) -> libc::timespec {
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        }
    }

    pub const NOW: libc::timespec = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_NOW,
    };
    pub const OMIT: libc::timespec = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_OMIT,
    };

    /// utimensat(AT_FDCWD, p, times, flags); `None` = both now.
    pub fn utimensat(p: &Path, times: Option<[libc::timespec; 2]>, flags: i32) -> io::Result<()> {
        let ptr = times.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
        cvt(unsafe { libc::utimensat(libc::AT_FDCWD, c(p).as_ptr(), ptr, flags) })
    }

    pub fn futimens(f: &File, times: [libc::timespec; 2]) -> io::Result<()> {
        cvt(unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) })
    }

    // cvt, rename2 and the extended-attribute calls are shared with the other suites.
    pub use crate::common::{cvt, getxattr, listxattr, removexattr, rename2, setxattr};

    /// Every entry of a directory as (name, d_ino, d_type), "." and ".." included.
    pub fn readdir(p: &Path) -> io::Result<Vec<(Vec<u8>, u64, u8)>> {
        let d = unsafe { libc::opendir(c(p).as_ptr()) };
        if d.is_null() {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        loop {
            unsafe { *libc::__errno_location() = 0 };
            let e = unsafe { libc::readdir64(d) };
            if e.is_null() {
                let err = unsafe { *libc::__errno_location() };
                unsafe { libc::closedir(d) };
                if err != 0 {
                    return Err(io::Error::from_raw_os_error(err));
                }
                break;
            }
            let e = unsafe { &*e };
            let name = unsafe { std::ffi::CStr::from_ptr(e.d_name.as_ptr()) };
            out.push((name.to_bytes().to_vec(), e.d_ino, e.d_type));
        }
        out.sort();
        Ok(out)
    }

    pub fn statvfs(p: &Path) -> io::Result<libc::statvfs> {
        let mut v: libc::statvfs = unsafe { std::mem::zeroed() };
        cvt(unsafe { libc::statvfs(c(p).as_ptr(), &mut v) })?;
        Ok(v)
    }

    pub fn read_at(f: &File, len: usize, off: u64) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let n = f.read_at(&mut buf, off)?;
        buf.truncate(n);
        Ok(buf)
    }
}

use sys::{NOW, OMIT};

// ---------------------------------------------------------------------------------------------
// times

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ts(pub i64, pub i64);

#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub a: Ts,
    pub m: Ts,
    pub c: Ts,
}

pub fn times(md: &Metadata) -> Times {
    Times {
        a: Ts(md.atime(), md.atime_nsec()),
        m: Ts(md.mtime(), md.mtime_nsec()),
        c: Ts(md.ctime(), md.ctime_nsec()),
    }
}

fn wall_now() -> Ts {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    Ts(d.as_secs() as i64, d.subsec_nanos() as i64)
}

/// Long enough for coarse (jiffy) timestamps to move.
fn tick() {
    std::thread::sleep(Duration::from_millis(30));
}

/// Old atime and mtime (far older than a day: relatime then updates atime on access).
const OLD: Ts = Ts(1_000_000_000, 111);

fn set_old(ck: &Ck, rel: &str) -> Res {
    ck.must(
        &format!("utimensat {rel} to old times"),
        sys::utimensat(
            &ck.p(rel),
            Some([sys::ts(OLD.0, OLD.1), sys::ts(OLD.0, OLD.1)]),
            libc::AT_SYMLINK_NOFOLLOW,
        ),
    )
}

fn within(t: Ts, lo: Ts, hi: Ts) -> bool {
    // One second of slack on both sides: file systems may use a coarse clock.
    t.0 >= lo.0 - 1 && t.0 <= hi.0 + 1
}

// ---------------------------------------------------------------------------------------------
// cases

fn open_flags(ck: &Ck) -> Res {
    let f = ck.p("f");
    let fd = ck.must(
        "open(O_CREAT|O_EXCL) of a new name",
        sys::open(&f, O_CREAT | O_EXCL | O_WRONLY, 0o640),
    )?;
    drop(fd);
    let md = ck.lstat("f")?;
    ck.mode_eq("new file: mode & ~umask(022)", md.mode(), S_IFREG | 0o640);
    ck.eq("new file size", md.len(), 0);
    ck.errno(
        "open(O_CREAT|O_EXCL) of an existing file",
        sys::open(&f, O_CREAT | O_EXCL | O_WRONLY, 0o600),
        &[EEXIST],
    );
    // O_CREAT without O_TRUNC keeps data and ignores the mode argument.
    ck.put("f", b"0123456789")?;
    if let Some(mut h) = ck.ok(
        "open(O_CREAT) of an existing file",
        sys::open(&f, O_CREAT | O_WRONLY, 0o777),
    ) {
        ck.ok("write", h.write_all(b"ab"));
    }
    ck.eq(
        "O_CREAT keeps the data",
        ck.read("f"),
        Some(b"ab23456789".to_vec()),
    );
    ck.mode_is(
        "O_CREAT of an existing file keeps its mode",
        "f",
        S_IFREG | 0o640,
    );
    // O_TRUNC
    if let Some(mut h) = ck.ok("open(O_TRUNC)", sys::open(&f, O_WRONLY | O_TRUNC, 0)) {
        ck.eq(
            "size right after O_TRUNC",
            h.metadata().ok().map(|m| m.len()),
            Some(0),
        );
        ck.ok("write after O_TRUNC", h.write_all(b"xy"));
    }
    ck.eq(
        "content after O_TRUNC + write",
        ck.read("f"),
        Some(b"xy".to_vec()),
    );
    // O_APPEND: every write goes to the end, whatever the offset (pwrite too, on Linux).
    ck.put("a", b"0123")?;
    if let Some(mut h) = ck.ok(
        "open(O_APPEND)",
        sys::open(&ck.p("a"), O_WRONLY | O_APPEND, 0),
    ) {
        ck.ok("append write", h.write_all(b"abc"));
        ck.ok("lseek 0", h.seek(SeekFrom::Start(0)));
        ck.ok("append after lseek 0", h.write_all(b"X"));
        ck.eq("offset after an append", h.stream_position().ok(), Some(8));
        ck.ok("pwrite at 0 with O_APPEND", h.write_at(b"Y", 0));
        // Another descriptor extends the file; the next append goes after that.
        if let Some(other) = ck.ok("second open", sys::open(&ck.p("a"), O_WRONLY, 0)) {
            ck.ok("pwrite past the end", other.write_all_at(b"ZZ", 20));
        }
        ck.ok("append after another writer", h.write_all(b"!"));
    }
    let mut want = b"0123abcXY".to_vec();
    want.resize(20, 0);
    want.extend_from_slice(b"ZZ!");
    ck.eq("O_APPEND content", ck.read("a"), Some(want));
    // O_RDWR|O_APPEND reads from the current offset, writes at the end.
    if let Some(mut h) = ck.ok(
        "open(O_RDWR|O_APPEND)",
        sys::open(&ck.p("a"), O_RDWR | O_APPEND, 0),
    ) {
        let mut b = [0u8; 4];
        ck.ok("read from offset 0", h.read_exact(&mut b));
        ck.eq("read with O_APPEND", &b, b"0123");
    }
    // A file created with mode 0 is still opened with the access asked for.
    if let Some(mut h) = ck.ok(
        "open(O_CREAT|O_RDWR) with mode 0",
        sys::open(&ck.p("m0"), O_CREAT | O_EXCL | O_RDWR, 0),
    ) {
        ck.ok(
            "write to a mode-0 file through its creating descriptor",
            h.write_all(b"x"),
        );
    }
    ck.mode_is("mode of a file created with mode 0", "m0", S_IFREG);
    // O_CREAT|O_EXCL on a dangling symlink: EEXIST, and the target is not created.
    ck.must("symlink", sys::symlink(b"nowhere", &ck.p("dl")))?;
    ck.errno(
        "open(O_CREAT|O_EXCL) on a dangling symlink",
        sys::open(&ck.p("dl"), O_CREAT | O_EXCL | O_WRONLY, 0o644),
        &[EEXIST],
    );
    ck.yes(
        "O_CREAT|O_EXCL through a dangling symlink created its target",
        fs::symlink_metadata(ck.p("nowhere")).is_err(),
    );
    // directories
    ck.mkdir("d", 0o755)?;
    let d = ck.p("d");
    ck.errno(
        "open(O_CREAT|O_EXCL) of a directory",
        sys::open(&d, O_CREAT | O_EXCL | O_WRONLY, 0o644),
        &[EEXIST],
    );
    ck.errno(
        "open(O_WRONLY) of a directory",
        sys::open(&d, O_WRONLY, 0),
        &[EISDIR],
    );
    ck.errno(
        "open(O_RDWR) of a directory",
        sys::open(&d, O_RDWR, 0),
        &[EISDIR],
    );
    ck.errno(
        "open(O_CREAT|O_WRONLY) of a directory",
        sys::open(&d, O_CREAT | O_WRONLY, 0o644),
        &[EISDIR],
    );
    ck.ok("open(O_RDONLY) of a directory", sys::open(&d, O_RDONLY, 0));
    ck.ok(
        "open(O_DIRECTORY) of a directory",
        sys::open(&d, O_RDONLY | O_DIRECTORY, 0),
    );
    ck.errno(
        "open(O_DIRECTORY) of a file",
        sys::open(&f, O_RDONLY | O_DIRECTORY, 0),
        &[ENOTDIR],
    );
    // missing names and bad paths
    ck.errno(
        "open of a missing file",
        sys::open(&ck.p("missing"), O_RDONLY, 0),
        &[ENOENT],
    );
    ck.errno(
        "open(O_CREAT) under a missing directory",
        sys::open(&ck.p("missing/x"), O_CREAT | O_WRONLY, 0o644),
        &[ENOENT],
    );
    ck.errno(
        "open of file/x",
        sys::open(&ck.p("f/x"), O_RDONLY, 0),
        &[ENOTDIR],
    );
    ck.errno(
        "open(O_CREAT) of file/x",
        sys::open(&ck.p("f/x"), O_CREAT | O_WRONLY, 0o644),
        &[ENOTDIR],
    );
    ck.errno(
        "open of \"file/\"",
        sys::open(&ck.p("f/"), O_RDONLY, 0),
        &[ENOTDIR],
    );
    ck.errno(
        "open(O_CREAT) of \"new/\"",
        sys::open(&ck.p("new/"), O_CREAT | O_WRONLY, 0o644),
        &[EISDIR],
    );
    ck.yes(
        "open(O_CREAT) of \"new/\" created something",
        fs::symlink_metadata(ck.p("new")).is_err(),
    );
    // access modes
    if let Some(mut h) = ck.ok("open(O_WRONLY)", sys::open(&f, O_WRONLY, 0)) {
        let mut b = [0u8; 1];
        ck.errno("read on an O_WRONLY descriptor", h.read(&mut b), &[EBADF]);
    }
    if let Some(mut h) = ck.ok("open(O_RDONLY)", sys::open(&f, O_RDONLY, 0)) {
        ck.errno("write on an O_RDONLY descriptor", h.write(b"z"), &[EBADF]);
    }
    Ok(())
}

fn permissions(ck: &Ck) -> Res {
    let Some((ouid, ogid)) = ck.other() else {
        return Ok(());
    };
    ck.put("secret", b"secret")?;
    ck.chmod("secret", 0o600)?;
    ck.put("ro", b"read only")?;
    ck.chmod("ro", 0o644)?;
    ck.put("rw", b"rw")?;
    ck.chmod("rw", 0o666)?;
    ck.mkdir("d755", 0o755)?;
    ck.put("d755/x", b"x")?;
    ck.mkdir("d700", 0o700)?;
    ck.put("d700/f", b"f")?;
    ck.mkdir("d711", 0o711)?;
    ck.put("d711/known", b"known")?;
    ck.chmod("d711/known", 0o644)?;
    ck.put("mine0066", b"m")?;
    ck.chown("mine0066", Some(ouid), Some(ogid))?;
    ck.chmod("mine0066", 0o066)?;
    ck.put("grp", b"g")?;
    ck.chown("grp", None, Some(ogid))?;
    ck.chmod("grp", 0o640)?;
    ck.as_other(|| {
        ck.errno(
            "other user reads a 0600 file",
            File::open(ck.p("secret")),
            &[EACCES],
        );
        ck.errno(
            "other user opens a 0644 file for writing",
            OpenOptions::new().write(true).open(ck.p("ro")),
            &[EACCES],
        );
        ck.ok("other user reads a 0644 file", fs::read(ck.p("ro")));
        ck.ok(
            "other user writes a 0666 file",
            OpenOptions::new()
                .write(true)
                .open(ck.p("rw"))
                .and_then(|mut f| f.write_all(b"W")),
        );
        ck.errno(
            "other user creates a file in a 0755 directory",
            File::create(ck.p("d755/new")),
            &[EACCES],
        );
        ck.errno(
            "other user makes a directory in a 0755 directory",
            fs::create_dir(ck.p("d755/newdir")),
            &[EACCES],
        );
        ck.errno(
            "other user unlinks in a 0755 directory",
            fs::remove_file(ck.p("d755/x")),
            &[EACCES],
        );
        ck.errno(
            "other user renames in a 0755 directory",
            fs::rename(ck.p("d755/x"), ck.p("d755/y")),
            &[EACCES],
        );
        ck.errno(
            "other user renames out of a 0755 directory",
            fs::rename(ck.p("d755/x"), ck.p("moved")),
            &[EACCES],
        );
        ck.errno(
            "other user stats through a 0700 directory",
            fs::metadata(ck.p("d700/f")),
            &[EACCES],
        );
        ck.errno(
            "other user lists a 0711 directory",
            fs::read_dir(ck.p("d711")),
            &[EACCES],
        );
        ck.ok(
            "other user stats a known name in a 0711 directory",
            fs::metadata(ck.p("d711/known")),
        );
        ck.ok(
            "other user reads a known file in a 0711 directory",
            fs::read(ck.p("d711/known")),
        );
        ck.errno(
            "owner reads a 0066 file it owns (owner class only)",
            File::open(ck.p("mine0066")),
            &[EACCES],
        );
        ck.ok("group member reads a 0640 file", fs::read(ck.p("grp")));
        ck.errno(
            "group member writes a 0640 file",
            OpenOptions::new().write(true).open(ck.p("grp")),
            &[EACCES],
        );
        ck.errno(
            "access(R_OK) of a 0600 file",
            sys::access(&ck.p("secret"), libc::R_OK),
            &[EACCES],
        );
        ck.ok(
            "access(R_OK) of a 0644 file",
            sys::access(&ck.p("ro"), libc::R_OK),
        );
        ck.errno(
            "access(W_OK) of a 0644 file",
            sys::access(&ck.p("ro"), libc::W_OK),
            &[EACCES],
        );
        ck.ok(
            "access(R_OK|W_OK) of a 0666 file",
            sys::access(&ck.p("rw"), libc::R_OK | libc::W_OK),
        );
        ck.errno(
            "access(X_OK) of a 0666 file",
            sys::access(&ck.p("rw"), libc::X_OK),
            &[EACCES],
        );
        ck.errno(
            "other user chmods root's file",
            sys::chmod(&ck.p("ro"), 0o666),
            &[EPERM],
        );
        ck.errno(
            "other user chowns root's file",
            sys::chown(&ck.p("ro"), ouid, u32::MAX),
            &[EPERM],
        );
        ck.errno(
            "other user truncates a 0644 file",
            sys::truncate(&ck.p("ro"), 0),
            &[EACCES],
        );
        ck.errno(
            "other user sets an xattr on a 0644 file",
            sys::setxattr(&ck.p("ro"), "user.x", b"1", 0, true),
            &[EACCES, EPERM],
        );
    });
    ck.eq(
        "0666 file written by the other user",
        ck.read("rw"),
        Some(b"Ww".to_vec()),
    );
    ck.yes(
        "d755/x survived",
        fs::symlink_metadata(ck.p("d755/x")).is_ok(),
    );
    if ck.opts.root {
        ck.put("zero", b"z")?;
        ck.chmod("zero", 0o000)?;
        ck.ok(
            "root opens a 0000 file read-write",
            OpenOptions::new().read(true).write(true).open(ck.p("zero")),
        );
        ck.errno(
            "root access(X_OK) of a 0644 file",
            sys::access(&ck.p("ro"), libc::X_OK),
            &[EACCES],
        );
        ck.chmod("ro", 0o744)?;
        ck.ok(
            "root access(X_OK) of a 0744 file",
            sys::access(&ck.p("ro"), libc::X_OK),
        );
        ck.mkdir("d000", 0o000)?;
        ck.ok(
            "root creates a file in a 0000 directory",
            File::create(ck.p("d000/f")),
        );
        ck.ok(
            "root access(X_OK) of a 0000 directory",
            sys::access(&ck.p("d000"), libc::X_OK),
        );
    }
    Ok(())
}

fn ownership_of_new_files(ck: &Ck) -> Res {
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    ck.put("mine", b"")?;
    let md = ck.lstat("mine")?;
    ck.eq(
        "new file's owner is the creator",
        (md.uid(), md.gid()),
        (euid, egid),
    );
    ck.mkdir("mydir", 0o755)?;
    let md = ck.lstat("mydir")?;
    ck.eq(
        "new directory's owner is the creator",
        (md.uid(), md.gid()),
        (euid, egid),
    );
    ck.must("symlink", sys::symlink(b"mine", &ck.p("mylink")))?;
    let md = ck.lstat("mylink")?;
    ck.eq(
        "new symlink's owner is the creator",
        (md.uid(), md.gid()),
        (euid, egid),
    );
    if !ck.opts.root {
        return Ok(());
    }
    // A setgid directory passes its group on, and its setgid bit to subdirectories.
    ck.mkdir("sg", 0o777)?;
    ck.chown("sg", None, Some(4321))?;
    ck.chmod("sg", 0o2777)?;
    ck.put("sg/rootfile", b"")?;
    let md = ck.lstat("sg/rootfile")?;
    ck.eq("file in a setgid dir: group", md.gid(), 4321);
    ck.mode_eq("file in a setgid dir: mode", md.mode(), S_IFREG | 0o644);
    ck.must("mkdir sg/rootdir", sys::mkdir(&ck.p("sg/rootdir"), 0o755))?;
    let md = ck.lstat("sg/rootdir")?;
    ck.eq("directory in a setgid dir: group", md.gid(), 4321);
    ck.mode_eq(
        "directory in a setgid dir: mode",
        md.mode(),
        S_IFDIR | 0o2755,
    );
    ck.must(
        "create sg/rootsgid 02755",
        sys::open(&ck.p("sg/rootsgid"), O_CREAT | O_EXCL | O_WRONLY, 0o2755),
    )?;
    ck.mode_is(
        "root keeps setgid on a file it creates in a setgid dir",
        "sg/rootsgid",
        S_IFREG | 0o2755,
    );
    ck.must("mkfifo sg/fifo", sys::mkfifo(&ck.p("sg/fifo"), 0o644))?;
    ck.eq(
        "fifo in a setgid dir: group",
        ck.lstat("sg/fifo")?.gid(),
        4321,
    );
    ck.must("symlink sg/link", sys::symlink(b"x", &ck.p("sg/link")))?;
    ck.eq(
        "symlink in a setgid dir: group",
        ck.lstat("sg/link")?.gid(),
        4321,
    );
    // Renaming or linking does not change ownership.
    ck.must(
        "rename into the setgid dir",
        fs::rename(ck.p("mine"), ck.p("sg/moved")),
    )?;
    ck.eq(
        "a file moved into a setgid dir keeps its group",
        ck.lstat("sg/moved")?.gid(),
        egid,
    );
    let Some((ouid, ogid)) = ck.other() else {
        return Ok(());
    };
    ck.as_other(|| {
        ck.ok("other user creates a file", fs::write(ck.p("of"), b""));
        ck.ok("other user makes a directory", fs::create_dir(ck.p("od")));
        ck.ok(
            "other user makes a symlink",
            sys::symlink(b"of", &ck.p("ol")),
        );
        ck.ok("other user makes a fifo", sys::mkfifo(&ck.p("op"), 0o644));
        ck.ok(
            "other user creates in the setgid dir",
            fs::write(ck.p("sg/of"), b""),
        );
        ck.ok(
            "other user makes a dir in the setgid dir",
            sys::mkdir(&ck.p("sg/od"), 0o755),
        );
        ck.ok(
            "other user creates 02755 in the setgid dir",
            sys::open(&ck.p("sg/osgid"), O_CREAT | O_EXCL | O_WRONLY, 0o2755),
        );
    });
    for n in ["of", "od", "ol", "op"] {
        if let Ok(md) = fs::symlink_metadata(ck.p(n)) {
            ck.eq(
                &format!("owner of {n} made by the other user"),
                (md.uid(), md.gid()),
                (ouid, ogid),
            );
        } else {
            ck.fail(format!("{n} made by the other user is missing"));
        }
    }
    if let Ok(md) = fs::symlink_metadata(ck.p("sg/of")) {
        ck.eq(
            "other user's file in the setgid dir: owner",
            (md.uid(), md.gid()),
            (ouid, 4321),
        );
        ck.mode_eq(
            "other user's file in the setgid dir: mode",
            md.mode(),
            S_IFREG | 0o644,
        );
    }
    if let Ok(md) = fs::symlink_metadata(ck.p("sg/od")) {
        ck.eq(
            "other user's dir in the setgid dir: owner",
            (md.uid(), md.gid()),
            (ouid, 4321),
        );
        ck.mode_eq(
            "other user's dir in the setgid dir: mode",
            md.mode(),
            S_IFDIR | 0o2755,
        );
    }
    ck.mode_is(
        "setgid is stripped from a file created by a non-member in a setgid dir",
        "sg/osgid",
        S_IFREG | 0o755,
    );
    Ok(())
}

fn chmod_rules(ck: &Ck) -> Res {
    ck.put("f", b"data")?;
    for mode in [0o000, 0o7777, 0o4755, 0o2755, 0o1644, 0o640] {
        ck.must("chmod", sys::chmod(&ck.p("f"), mode))?;
        ck.mode_is(&format!("chmod {mode:o} is kept"), "f", S_IFREG | mode);
    }
    ck.eq(
        "chmod does not change data",
        ck.read("f"),
        Some(b"data".to_vec()),
    );
    ck.mkdir("d", 0o755)?;
    ck.must("chmod dir", sys::chmod(&ck.p("d"), 0o3777))?;
    ck.mode_is("directory chmod 3777", "d", S_IFDIR | 0o3777);
    // chmod of a symlink changes its target.
    ck.must("symlink", sys::symlink(b"f", &ck.p("l")))?;
    ck.must("chmod through a symlink", sys::chmod(&ck.p("l"), 0o604))?;
    ck.mode_is(
        "chmod through a symlink changes the target",
        "f",
        S_IFREG | 0o604,
    );
    ck.mode_is("the symlink stays 0777", "l", S_IFLNK | 0o777);
    // fchmod
    let h = ck.must("open", File::open(ck.p("f")))?;
    ck.ok(
        "fchmod",
        h.set_permissions(fs::Permissions::from_mode(0o711)),
    );
    ck.mode_is("fchmod", "f", S_IFREG | 0o711);
    ck.errno(
        "chmod of a missing name",
        sys::chmod(&ck.p("missing"), 0o644),
        &[ENOENT],
    );
    ck.errno(
        "chmod of file/x",
        sys::chmod(&ck.p("f/x"), 0o644),
        &[ENOTDIR],
    );
    let Some((ouid, ogid)) = ck.other() else {
        return Ok(());
    };
    // The owner may chmod; setgid is silently dropped when the owner is not in the file's group.
    ck.put("own", b"")?;
    ck.chown("own", Some(ouid), Some(ogid))?;
    ck.put("owng", b"")?;
    ck.chown("owng", Some(ouid), Some(4321))?;
    ck.put("rootf", b"")?;
    ck.as_other(|| {
        ck.ok("owner chmods its file", sys::chmod(&ck.p("own"), 0o2751));
        ck.ok(
            "owner chmods its file of a foreign group",
            sys::chmod(&ck.p("owng"), 0o2755),
        );
        ck.errno(
            "non-owner chmod",
            sys::chmod(&ck.p("rootf"), 0o777),
            &[EPERM],
        );
    });
    ck.mode_is("owner in the group keeps setgid", "own", S_IFREG | 0o2751);
    ck.mode_is(
        "setgid dropped when the owner is not in the file's group",
        "owng",
        S_IFREG | 0o755,
    );
    Ok(())
}

fn chown_rules(ck: &Ck) -> Res {
    if !ck.opts.root {
        return Ok(());
    }
    ck.put("f", b"")?;
    ck.must("chown", sys::chown(&ck.p("f"), 1000, 2000))?;
    let md = ck.lstat("f")?;
    ck.eq("chown 1000:2000", (md.uid(), md.gid()), (1000, 2000));
    ck.must("chown -1:3000", sys::chown(&ck.p("f"), u32::MAX, 3000))?;
    let md = ck.lstat("f")?;
    ck.eq(
        "chown -1:3000 keeps the owner",
        (md.uid(), md.gid()),
        (1000, 3000),
    );
    ck.must("chown 1001:-1", sys::chown(&ck.p("f"), 1001, u32::MAX))?;
    let md = ck.lstat("f")?;
    ck.eq(
        "chown 1001:-1 keeps the group",
        (md.uid(), md.gid()),
        (1001, 3000),
    );
    // chown of a non-directory clears setuid, and setgid when group-execute is set.
    for (name, before, after) in [
        ("suid", 0o4755, 0o755),
        ("sgidx", 0o2755, 0o755),
        ("both", 0o6755, 0o755),
        ("sgid_nox", 0o2745, 0o2745),
    ] {
        ck.put(name, b"")?;
        ck.chmod(name, before)?;
        ck.must("chown", sys::chown(&ck.p(name), 1000, u32::MAX))?;
        ck.mode_is(
            &format!("mode {before:o} after chown by root"),
            name,
            S_IFREG | after,
        );
    }
    ck.put("gonly", b"")?;
    ck.chmod("gonly", 0o6755)?;
    ck.must("chown group only", sys::chown(&ck.p("gonly"), u32::MAX, 55))?;
    ck.mode_is(
        "mode 6755 after a group-only chown by root",
        "gonly",
        S_IFREG | 0o755,
    );
    ck.mkdir("d", 0o755)?;
    ck.chmod("d", 0o6755)?;
    ck.must("chown dir", sys::chown(&ck.p("d"), 1000, 1000))?;
    ck.mode_is(
        "directory keeps setuid/setgid on chown",
        "d",
        S_IFDIR | 0o6755,
    );
    // lchown changes the link, chown the target.
    ck.put("t", b"")?;
    ck.must("symlink", sys::symlink(b"t", &ck.p("l")))?;
    ck.must(
        "lchown",
        std::os::unix::fs::lchown(ck.p("l"), Some(77), Some(78)),
    )?;
    ck.eq(
        "lchown changes the link",
        ck.lstat("l").map(|m| (m.uid(), m.gid())).ok(),
        Some((77, 78)),
    );
    ck.eq(
        "lchown leaves the target",
        ck.lstat("t").map(|m| (m.uid(), m.gid())).ok(),
        Some((0, 0)),
    );
    ck.must("chown through a link", sys::chown(&ck.p("l"), 88, 89))?;
    ck.eq(
        "chown follows the link",
        ck.lstat("t").map(|m| (m.uid(), m.gid())).ok(),
        Some((88, 89)),
    );
    ck.eq(
        "chown through it leaves the link",
        ck.lstat("l").map(|m| (m.uid(), m.gid())).ok(),
        Some((77, 78)),
    );
    // fchown
    let h = ck.must("open", File::open(ck.p("t")))?;
    ck.ok("fchown", std::os::unix::fs::fchown(&h, Some(5), Some(6)));
    ck.eq(
        "fchown",
        ck.lstat("t").map(|m| (m.uid(), m.gid())).ok(),
        Some((5, 6)),
    );
    ck.errno(
        "chown of a missing name",
        sys::chown(&ck.p("missing"), 1, 1),
        &[ENOENT],
    );
    let Some((ouid, ogid)) = ck.other() else {
        return Ok(());
    };
    for n in ["o1", "o2", "o3", "o4"] {
        ck.put(n, b"")?;
        ck.chown(n, Some(ouid), Some(ogid))?;
    }
    ck.chmod("o4", 0o6755)?;
    ck.as_other(|| {
        ck.errno(
            "non-root gives its file away",
            sys::chown(&ck.p("o1"), 0, u32::MAX),
            &[EPERM],
        );
        ck.errno(
            "non-root chgrp to a group it is not in",
            sys::chown(&ck.p("o2"), u32::MAX, 4321),
            &[EPERM],
        );
        ck.ok(
            "non-root chown to itself",
            sys::chown(&ck.p("o3"), ouid, ogid),
        );
        ck.errno(
            "non-root chown of root's file",
            sys::chown(&ck.p("f"), u32::MAX, ogid),
            &[EPERM],
        );
        ck.ok(
            "non-root chgrp of its setuid file to its own group",
            sys::chown(&ck.p("o4"), u32::MAX, ogid),
        );
    });
    ck.mode_is(
        "non-root chgrp clears setuid and setgid",
        "o4",
        S_IFREG | 0o755,
    );
    Ok(())
}

fn setid_cleared_on_write(ck: &Ck) -> Res {
    let Some((ouid, ogid)) = ck.other() else {
        return Ok(());
    };
    let cases: &[(&str, u32, u32)] = &[
        ("w_suid", 0o4777, 0o777),
        ("w_sgidx", 0o2777, 0o777),
        ("w_both", 0o6777, 0o777),
        ("w_sgid_nox", 0o2767, 0o767),
        ("w_sgid_nox_grp", 0o2767, 0o2767),
        ("t_suid", 0o4777, 0o777),
        ("o_suid", 0o4777, 0o777),
    ];
    for (n, mode, _) in cases {
        ck.put(n, b"0123456789")?;
        if *n == "w_sgid_nox_grp" {
            // The writer is in the file's group: setgid without group-execute stays.
            ck.chown(n, None, Some(ogid))?;
        }
        ck.chmod(n, *mode)?;
    }
    ck.put("own_suid", b"0123")?;
    ck.chown("own_suid", Some(ouid), Some(ogid))?;
    ck.chmod("own_suid", 0o4755)?;
    ck.put("root_suid", b"0123")?;
    ck.chmod("root_suid", 0o4777)?;
    ck.as_other(|| {
        for (n, _, _) in cases.iter().filter(|c| c.0.starts_with("w_")) {
            ck.ok(
                &format!("other user writes {n}"),
                OpenOptions::new()
                    .write(true)
                    .open(ck.p(n))
                    .and_then(|mut f| f.write_all(b"x")),
            );
        }
        ck.ok(
            "other user truncates t_suid",
            sys::truncate(&ck.p("t_suid"), 2),
        );
        ck.ok(
            "other user opens o_suid with O_TRUNC",
            sys::open(&ck.p("o_suid"), O_WRONLY | O_TRUNC, 0),
        );
        ck.ok(
            "owner (non-root) writes its setuid file",
            OpenOptions::new()
                .write(true)
                .open(ck.p("own_suid"))
                .and_then(|mut f| f.write_all(b"x")),
        );
    });
    for (n, mode, after) in cases {
        ck.mode_is(
            &format!("{n} ({mode:o}) after a write/truncate by a non-root user"),
            n,
            S_IFREG | after,
        );
    }
    ck.mode_is(
        "owner's setuid file after its own write",
        "own_suid",
        S_IFREG | 0o755,
    );
    if ck.opts.root {
        let r = OpenOptions::new()
            .write(true)
            .open(ck.p("root_suid"))
            .and_then(|mut f| f.write_all(b"x"));
        ck.ok("root writes a setuid file", r);
        ck.mode_is(
            "root's write keeps setuid (CAP_FSETID)",
            "root_suid",
            S_IFREG | 0o4777,
        );
    }
    Ok(())
}

fn sticky_directories(ck: &Ck) -> Res {
    let Some((ouid, ogid)) = ck.other() else {
        return Ok(());
    };
    ck.mkdir("st", 0o1777)?;
    ck.mode_is("sticky directory mode", "st", S_IFDIR | 0o1777);
    for n in ["st/rootfile", "st/rootfile2", "st/target"] {
        ck.put(n, b"root")?;
        ck.chmod(n, 0o666)?;
    }
    ck.mkdir("st/rootdir", 0o777)?;
    // A sticky directory owned by the other user: the owner may remove anything in it.
    ck.mkdir("ost", 0o1777)?;
    ck.chown("ost", Some(ouid), Some(ogid))?;
    ck.put("ost/rootfile", b"root")?;
    // Without the sticky bit, anyone with write permission may remove.
    ck.mkdir("pub", 0o777)?;
    ck.put("pub/rootfile", b"root")?;
    ck.as_other(|| {
        ck.errno(
            "unlink of another user's file in a sticky dir",
            fs::remove_file(ck.p("st/rootfile")),
            &[EPERM],
        );
        ck.errno(
            "rename of another user's file in a sticky dir",
            fs::rename(ck.p("st/rootfile"), ck.p("st/mine")),
            &[EPERM],
        );
        ck.errno(
            "rmdir of another user's dir in a sticky dir",
            fs::remove_dir(ck.p("st/rootdir")),
            &[EPERM],
        );
        ck.ok(
            "writing another user's 0666 file in a sticky dir",
            OpenOptions::new()
                .write(true)
                .open(ck.p("st/rootfile2"))
                .and_then(|mut f| f.write_all(b"R")),
        );
        ck.ok(
            "creating a file in a sticky dir",
            fs::write(ck.p("st/own"), b"own"),
        );
        ck.errno(
            "renaming one's file over another user's file in a sticky dir",
            fs::rename(ck.p("st/own"), ck.p("st/target")),
            &[EPERM],
        );
        ck.ok(
            "renaming one's own file in a sticky dir",
            fs::rename(ck.p("st/own"), ck.p("st/own2")),
        );
        ck.ok(
            "unlinking one's own file in a sticky dir",
            fs::remove_file(ck.p("st/own2")),
        );
        ck.ok(
            "the sticky dir's owner unlinks another user's file",
            fs::remove_file(ck.p("ost/rootfile")),
        );
        ck.ok(
            "unlink of another user's file in a non-sticky dir",
            fs::remove_file(ck.p("pub/rootfile")),
        );
    });
    for n in ["st/rootfile", "st/rootdir", "st/target"] {
        ck.yes(
            &format!("{n} must survive"),
            fs::symlink_metadata(ck.p(n)).is_ok(),
        );
    }
    ck.eq(
        "target unchanged",
        ck.read("st/target"),
        Some(b"root".to_vec()),
    );
    if ck.opts.root {
        ck.ok(
            "root unlinks anything in a sticky dir",
            fs::remove_file(ck.p("st/rootfile")),
        );
    }
    Ok(())
}

fn link_counts(ck: &Ck) -> Res {
    ck.put("f", b"data")?;
    ck.eq("new file nlink", ck.lstat("f")?.nlink(), 1);
    let ino = ck.lstat("f")?.ino();
    ck.mkdir("d", 0o755)?;
    ck.must("link", sys::link(&ck.p("f"), &ck.p("l1")))?;
    ck.must("link into a subdir", sys::link(&ck.p("f"), &ck.p("d/l2")))?;
    for n in ["f", "l1", "d/l2"] {
        let md = ck.lstat(n)?;
        ck.eq(&format!("{n}: nlink with 3 names"), md.nlink(), 3);
        ck.eq(&format!("{n}: same inode"), md.ino(), ino);
    }
    ck.must("write through one link", fs::write(ck.p("l1"), b"changed"))?;
    ck.eq(
        "data shared by hard links",
        ck.read("d/l2"),
        Some(b"changed".to_vec()),
    );
    ck.must("unlink", sys::unlink(&ck.p("f")))?;
    ck.eq("nlink after one unlink", ck.lstat("l1")?.nlink(), 2);
    let h = ck.must("open", File::open(ck.p("l1")))?;
    ck.must("unlink", sys::unlink(&ck.p("l1")))?;
    ck.must("unlink", sys::unlink(&ck.p("d/l2")))?;
    ck.eq(
        "fstat nlink after the last name went",
        h.metadata().ok().map(|m| m.nlink()),
        Some(0),
    );
    drop(h);
    // errors
    ck.put("g", b"")?;
    ck.errno(
        "link to a directory",
        sys::link(&ck.p("d"), &ck.p("dl")),
        &[EPERM],
    );
    ck.errno(
        "link onto an existing name",
        sys::link(&ck.p("g"), &ck.p("d")),
        &[EEXIST],
    );
    ck.errno(
        "link onto an existing file",
        sys::link(&ck.p("g"), &ck.p("g")),
        &[EEXIST],
    );
    ck.errno(
        "link of a missing file",
        sys::link(&ck.p("missing"), &ck.p("x")),
        &[ENOENT],
    );
    ck.errno(
        "link into a missing directory",
        sys::link(&ck.p("g"), &ck.p("missing/x")),
        &[ENOENT],
    );
    ck.errno(
        "link into a file",
        sys::link(&ck.p("g"), &ck.p("g/x")),
        &[ENOTDIR],
    );
    // link(2) does not follow a symlink: it links the symlink itself.
    ck.must("symlink", sys::symlink(b"g", &ck.p("sl")))?;
    ck.must("link of a symlink", sys::link(&ck.p("sl"), &ck.p("sl2")))?;
    let md = ck.lstat("sl2")?;
    ck.yes(
        "a hard link of a symlink is a symlink",
        md.file_type().is_symlink(),
    );
    ck.eq("symlink nlink after link", md.nlink(), 2);
    ck.eq("the target's nlink is unchanged", ck.lstat("g")?.nlink(), 1);
    ck.must("mkfifo", sys::mkfifo(&ck.p("p"), 0o644))?;
    ck.must("link of a fifo", sys::link(&ck.p("p"), &ck.p("p2")))?;
    ck.eq("fifo nlink", ck.lstat("p")?.nlink(), 2);
    // directories: 2 + subdirectories
    ck.mkdir("top", 0o755)?;
    ck.eq("empty dir nlink", ck.lstat("top")?.nlink(), 2);
    for s in ["a", "b", "c"] {
        ck.mkdir(&format!("top/{s}"), 0o755)?;
    }
    ck.put("top/file", b"")?;
    ck.must("symlink", sys::symlink(b"a", &ck.p("top/slink")))?;
    ck.eq(
        "dir nlink with 3 subdirs, a file and a symlink",
        ck.lstat("top")?.nlink(),
        5,
    );
    ck.must("rmdir", sys::rmdir(&ck.p("top/c")))?;
    ck.eq("dir nlink after rmdir", ck.lstat("top")?.nlink(), 4);
    ck.mkdir("other", 0o755)?;
    ck.must(
        "rename a subdir out",
        sys::rename(&ck.p("top/b"), &ck.p("other/b")),
    )?;
    ck.eq(
        "old parent after moving a subdir out",
        ck.lstat("top")?.nlink(),
        3,
    );
    ck.eq(
        "new parent after moving a subdir in",
        ck.lstat("other")?.nlink(),
        3,
    );
    ck.mkdir("other/empty", 0o755)?;
    ck.must(
        "rename a subdir over an empty dir elsewhere",
        sys::rename(&ck.p("top/a"), &ck.p("other/empty")),
    )?;
    ck.eq("old parent after rename over", ck.lstat("top")?.nlink(), 2);
    ck.eq(
        "new parent after rename over (replaced one)",
        ck.lstat("other")?.nlink(),
        4,
    );
    ck.must(
        "rename a file out",
        sys::rename(&ck.p("top/file"), &ck.p("other/file")),
    )?;
    ck.eq(
        "moving a file does not change dir nlink",
        ck.lstat("other")?.nlink(),
        4,
    );
    let case_nlink = ck
        .must("stat case dir", fs::symlink_metadata(&ck.dir))?
        .nlink();
    ck.eq("case dir nlink (d, top, other)", case_nlink, 5);
    // rename of a hard link onto another link of the same file: nothing happens
    ck.put("h1", b"")?;
    ck.must("link", sys::link(&ck.p("h1"), &ck.p("h2")))?;
    ck.must(
        "rename onto a link of the same file",
        sys::rename(&ck.p("h1"), &ck.p("h2")),
    )?;
    ck.yes(
        "rename between links of one file keeps both names",
        fs::symlink_metadata(ck.p("h1")).is_ok(),
    );
    ck.eq("nlink unchanged", ck.lstat("h2")?.nlink(), 2);
    Ok(())
}

fn rename_rules(ck: &Ck) -> Res {
    ck.put("a", b"A")?;
    let ino = ck.lstat("a")?.ino();
    ck.must("rename to a new name", sys::rename(&ck.p("a"), &ck.p("b")))?;
    ck.yes("old name gone", fs::symlink_metadata(ck.p("a")).is_err());
    ck.eq("renamed file keeps its inode", ck.lstat("b")?.ino(), ino);
    ck.eq(
        "renamed file keeps its data",
        ck.read("b"),
        Some(b"A".to_vec()),
    );
    // over a file: the replaced file loses a link; an open descriptor still reads it
    ck.put("victim", b"VICTIM")?;
    ck.must("link", sys::link(&ck.p("victim"), &ck.p("victim2")))?;
    let hv = ck.must("open", File::open(ck.p("victim")))?;
    ck.must(
        "rename over a file",
        sys::rename(&ck.p("b"), &ck.p("victim")),
    )?;
    ck.eq(
        "rename over a file: new content",
        ck.read("victim"),
        Some(b"A".to_vec()),
    );
    ck.eq("rename over a file: inode", ck.lstat("victim")?.ino(), ino);
    ck.eq(
        "the replaced file's other link",
        ck.lstat("victim2")?.nlink(),
        1,
    );
    ck.eq(
        "replaced file still readable through its descriptor",
        sys::read_at(&hv, 100, 0).ok(),
        Some(b"VICTIM".to_vec()),
    );
    // to itself
    ck.must(
        "rename to itself",
        sys::rename(&ck.p("victim"), &ck.p("victim")),
    )?;
    ck.eq(
        "rename to itself keeps the file",
        ck.read("victim"),
        Some(b"A".to_vec()),
    );
    // directories
    ck.mkdir("d", 0o755)?;
    ck.put("d/inner", b"in")?;
    ck.mkdir("empty", 0o755)?;
    ck.must(
        "rename a dir over an empty dir",
        sys::rename(&ck.p("d"), &ck.p("empty")),
    )?;
    ck.eq(
        "contents moved with the dir",
        ck.read("empty/inner"),
        Some(b"in".to_vec()),
    );
    ck.yes(
        "old dir name gone",
        fs::symlink_metadata(ck.p("d")).is_err(),
    );
    ck.mkdir("full", 0o755)?;
    ck.put("full/x", b"")?;
    ck.mkdir("src", 0o755)?;
    ck.errno(
        "rename a dir over a non-empty dir",
        sys::rename(&ck.p("src"), &ck.p("full")),
        &[ENOTEMPTY, EEXIST],
    );
    ck.mkdir("src/sub", 0o755)?;
    ck.mkdir("src/sub/deeper", 0o755)?;
    ck.errno(
        "rename a dir into itself",
        sys::rename(&ck.p("src"), &ck.p("src/src")),
        &[EINVAL],
    );
    ck.errno(
        "rename a dir into its subdirectory",
        sys::rename(&ck.p("src"), &ck.p("src/sub/x")),
        &[EINVAL],
    );
    ck.errno(
        "rename a dir over its own subdirectory",
        sys::rename(&ck.p("src"), &ck.p("src/sub/deeper")),
        &[EINVAL, ENOTEMPTY],
    );
    ck.errno(
        "rename a dir over its parent",
        sys::rename(&ck.p("src/sub"), &ck.p("src")),
        &[ENOTEMPTY, EEXIST, EINVAL],
    );
    ck.put("file", b"F")?;
    ck.errno(
        "rename a file over a dir",
        sys::rename(&ck.p("file"), &ck.p("empty")),
        &[EISDIR],
    );
    ck.errno(
        "rename a file over an empty dir",
        sys::rename(&ck.p("file"), &ck.p("src/sub/deeper")),
        &[EISDIR],
    );
    ck.errno(
        "rename a dir over a file",
        sys::rename(&ck.p("src"), &ck.p("file")),
        &[ENOTDIR],
    );
    ck.errno(
        "rename a missing name",
        sys::rename(&ck.p("missing"), &ck.p("x")),
        &[ENOENT],
    );
    ck.errno(
        "rename into a missing dir",
        sys::rename(&ck.p("file"), &ck.p("missing/x")),
        &[ENOENT],
    );
    ck.errno(
        "rename into a file",
        sys::rename(&ck.p("file"), &ck.p("victim/x")),
        &[ENOTDIR],
    );
    ck.errno(
        "rename \"file/\"",
        sys::rename(&ck.p("file/"), &ck.p("x")),
        &[ENOTDIR],
    );
    ck.errno(
        "rename a file to \"x/\"",
        sys::rename(&ck.p("file"), &ck.p("x/")),
        &[ENOTDIR],
    );
    ck.errno(
        "rename \"dir/.\"",
        sys::rename(&ck.p("src/."), &ck.p("x")),
        &[EBUSY, EINVAL],
    );
    ck.errno(
        "rename onto \"dir/..\"",
        sys::rename(&ck.p("file"), &ck.p("src/..")),
        &[EBUSY, EINVAL, EISDIR, ENOTEMPTY, EEXIST],
    );
    ck.must(
        "rename \"dir/\" to \"new/\"",
        sys::rename(&ck.p("src/"), &ck.p("src2/")),
    )?;
    // across directories: files and whole subtrees; ".." follows
    ck.mkdir("x", 0o755)?;
    ck.mkdir("y", 0o755)?;
    ck.put("x/f", b"xf")?;
    ck.must(
        "rename a file across dirs",
        sys::rename(&ck.p("x/f"), &ck.p("y/g")),
    )?;
    ck.eq(
        "file moved across dirs",
        ck.read("y/g"),
        Some(b"xf".to_vec()),
    );
    ck.must(
        "rename a tree across dirs",
        sys::rename(&ck.p("src2"), &ck.p("y/tree")),
    )?;
    ck.yes(
        "subtree moved",
        fs::symlink_metadata(ck.p("y/tree/sub/deeper"))
            .map(|m| m.is_dir())
            .unwrap_or(false),
    );
    ck.eq(
        "\"..\" of a moved dir is its new parent",
        ck.stat("y/tree/..")?.ino(),
        ck.stat("y")?.ino(),
    );
    // a symlink is renamed, not its target
    ck.must("symlink", sys::symlink(b"y/g", &ck.p("sl")))?;
    ck.must("rename a symlink", sys::rename(&ck.p("sl"), &ck.p("x/sl")))?;
    ck.eq(
        "renamed symlink keeps its target text",
        sys::readlink(&ck.p("x/sl")).ok(),
        Some(b"y/g".to_vec()),
    );
    ck.yes(
        "symlink target untouched",
        fs::symlink_metadata(ck.p("y/g")).is_ok(),
    );
    // renameat2 flags
    ck.put("n1", b"1")?;
    ck.put("n2", b"2")?;
    ck.errno(
        "RENAME_NOREPLACE onto an existing name",
        sys::rename2(&ck.p("n1"), &ck.p("n2"), libc::RENAME_NOREPLACE),
        &[EEXIST],
    );
    ck.must(
        "RENAME_NOREPLACE to a new name",
        sys::rename2(&ck.p("n1"), &ck.p("n3"), libc::RENAME_NOREPLACE),
    )?;
    ck.must(
        "RENAME_EXCHANGE of a file and a dir",
        sys::rename2(&ck.p("n3"), &ck.p("x"), libc::RENAME_EXCHANGE),
    )?;
    ck.yes(
        "after exchange n3 is the dir",
        fs::symlink_metadata(ck.p("n3"))
            .map(|m| m.is_dir())
            .unwrap_or(false),
    );
    ck.eq(
        "after exchange x is the file",
        ck.read("x"),
        Some(b"1".to_vec()),
    );
    ck.errno(
        "RENAME_EXCHANGE with a missing name",
        sys::rename2(&ck.p("n2"), &ck.p("missing"), libc::RENAME_EXCHANGE),
        &[ENOENT],
    );
    Ok(())
}

fn rmdir_unlink_mkdir(ck: &Ck) -> Res {
    ck.mkdir("d", 0o755)?;
    ck.put("d/f", b"")?;
    ck.errno(
        "rmdir of a dir with a file",
        sys::rmdir(&ck.p("d")),
        &[ENOTEMPTY, EEXIST],
    );
    ck.mkdir("e", 0o755)?;
    ck.mkdir("e/sub", 0o755)?;
    ck.errno(
        "rmdir of a dir with a subdir",
        sys::rmdir(&ck.p("e")),
        &[ENOTEMPTY, EEXIST],
    );
    ck.errno("rmdir of a file", sys::rmdir(&ck.p("d/f")), &[ENOTDIR]);
    ck.must("symlink", sys::symlink(b"e", &ck.p("sl")))?;
    ck.errno(
        "rmdir of a symlink to a dir",
        sys::rmdir(&ck.p("sl")),
        &[ENOTDIR],
    );
    ck.errno(
        "rmdir of a missing name",
        sys::rmdir(&ck.p("missing")),
        &[ENOENT],
    );
    ck.errno("rmdir of file/x", sys::rmdir(&ck.p("d/f/x")), &[ENOTDIR]);
    ck.errno("rmdir \"dir/.\"", sys::rmdir(&ck.p("e/sub/.")), &[EINVAL]);
    ck.errno(
        "rmdir \"dir/..\"",
        sys::rmdir(&ck.p("e/sub/..")),
        &[ENOTEMPTY, EEXIST],
    );
    ck.must("rmdir with a trailing slash", sys::rmdir(&ck.p("e/sub/")))?;
    // An open directory that is removed: empty, nlink 0, nothing can be created in it.
    ck.mkdir("gone", 0o755)?;
    let h = ck.must(
        "open dir",
        sys::open(&ck.p("gone"), O_RDONLY | O_DIRECTORY, 0),
    )?;
    ck.must("rmdir of an open dir", sys::rmdir(&ck.p("gone")))?;
    ck.eq(
        "fstat nlink of a removed dir",
        h.metadata().ok().map(|m| m.nlink()),
        Some(0),
    );
    ck.errno(
        "create in a removed dir",
        sys::openat(&h, b"x", O_CREAT | O_WRONLY, 0o644),
        &[ENOENT],
    );
    ck.errno(
        "mkdir in a removed dir",
        sys::mkdirat(&h, b"x", 0o755),
        &[ENOENT],
    );
    drop(h);
    // unlink
    ck.errno("unlink of a dir", sys::unlink(&ck.p("e")), &[EISDIR, EPERM]);
    ck.errno(
        "unlink of a missing name",
        sys::unlink(&ck.p("missing")),
        &[ENOENT],
    );
    ck.errno("unlink of file/x", sys::unlink(&ck.p("d/f/x")), &[ENOTDIR]);
    ck.errno(
        "unlink of \"file/\"",
        sys::unlink(&ck.p("d/f/")),
        &[ENOTDIR],
    );
    ck.must("unlink of a symlink to a dir", sys::unlink(&ck.p("sl")))?;
    ck.yes(
        "unlink of a symlink leaves the dir",
        fs::symlink_metadata(ck.p("e")).is_ok(),
    );
    // mkdir
    ck.errno("mkdir over a dir", sys::mkdir(&ck.p("d"), 0o755), &[EEXIST]);
    ck.errno(
        "mkdir over a file",
        sys::mkdir(&ck.p("d/f"), 0o755),
        &[EEXIST],
    );
    ck.must("symlink", sys::symlink(b"nowhere", &ck.p("dangling")))?;
    ck.errno(
        "mkdir over a dangling symlink",
        sys::mkdir(&ck.p("dangling"), 0o755),
        &[EEXIST],
    );
    ck.errno(
        "mkdir under a missing dir",
        sys::mkdir(&ck.p("missing/x"), 0o755),
        &[ENOENT],
    );
    ck.errno(
        "mkdir under a file",
        sys::mkdir(&ck.p("d/f/x"), 0o755),
        &[ENOTDIR],
    );
    ck.must(
        "mkdir with a trailing slash",
        sys::mkdir(&ck.p("slash/"), 0o755),
    )?;
    ck.must("mkdir 7777", sys::mkdir(&ck.p("m7777"), 0o7777))?;
    ck.mode_is(
        "mkdir 7777 with umask 022 keeps sticky, drops setuid/setgid",
        "m7777",
        S_IFDIR | 0o1755,
    );
    ck.must("mkdir 0", sys::mkdir(&ck.p("m0"), 0))?;
    ck.mode_is("mkdir 0", "m0", S_IFDIR);
    ck.must("rmdir", sys::rmdir(&ck.p("m0")))?;
    ck.must("unlink", sys::unlink(&ck.p("d/f")))?;
    ck.must("rmdir of the emptied dir", sys::rmdir(&ck.p("d")))?;
    ck.yes(
        "removed dir is gone",
        fs::symlink_metadata(ck.p("d")).is_err(),
    );
    Ok(())
}

fn unlinked_open_files(ck: &Ck) -> Res {
    ck.put("f", b"0123456789")?;
    let h = ck.must(
        "open rw",
        OpenOptions::new().read(true).write(true).open(ck.p("f")),
    )?;
    let h2 = ck.must("open ro", File::open(ck.p("f")))?;
    let ino = h.metadata().map(|m| m.ino()).ok();
    ck.must("unlink", sys::unlink(&ck.p("f")))?;
    ck.yes("name is gone", fs::symlink_metadata(ck.p("f")).is_err());
    ck.eq(
        "read through the descriptor",
        sys::read_at(&h, 100, 0).ok(),
        Some(b"0123456789".to_vec()),
    );
    ck.ok("write through the descriptor", h.write_all_at(b"AB", 10));
    ck.eq(
        "read back",
        sys::read_at(&h2, 100, 0).ok(),
        Some(b"0123456789AB".to_vec()),
    );
    let md = h.metadata().ok();
    ck.eq(
        "fstat: inode, size, nlink",
        md.map(|m| (Some(m.ino()), m.len(), m.nlink())),
        Some((ino, 12, 0)),
    );
    ck.ok("ftruncate", h.set_len(4));
    ck.eq(
        "size after ftruncate",
        h2.metadata().ok().map(|m| m.len()),
        Some(4),
    );
    ck.ok(
        "fchmod of an unlinked file",
        h.set_permissions(fs::Permissions::from_mode(0o600)),
    );
    ck.eq(
        "fchmod of an unlinked file",
        h2.metadata().ok().map(|m| m.mode()),
        Some(S_IFREG | 0o600),
    );
    // A new file with the old name is a different file.
    ck.put("f", b"new")?;
    ck.eq(
        "new file under the old name",
        ck.read("f"),
        Some(b"new".to_vec()),
    );
    ck.eq(
        "old descriptor still has the old data",
        sys::read_at(&h, 100, 0).ok(),
        Some(b"0123".to_vec()),
    );
    ck.yes(
        "new file has another inode",
        ck.lstat("f")?.ino() != ino.unwrap_or(0),
    );
    drop(h);
    ck.eq(
        "the other descriptor still reads after the first closes",
        sys::read_at(&h2, 100, 0).ok(),
        Some(b"0123".to_vec()),
    );
    drop(h2);
    // unlink through one of two hard links while open
    ck.put("g", b"g")?;
    ck.must("link", sys::link(&ck.p("g"), &ck.p("g2")))?;
    let h = ck.must(
        "open",
        OpenOptions::new().read(true).write(true).open(ck.p("g")),
    )?;
    ck.must("unlink", sys::unlink(&ck.p("g")))?;
    ck.ok("write", h.write_all_at(b"G", 1));
    ck.eq(
        "other link sees the write",
        ck.read("g2"),
        Some(b"gG".to_vec()),
    );
    ck.eq("fstat nlink", h.metadata().ok().map(|m| m.nlink()), Some(1));
    // A large unlinked file keeps its data.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    ck.put("big", &big)?;
    let h = ck.must("open", File::open(ck.p("big")))?;
    ck.must("unlink", sys::unlink(&ck.p("big")))?;
    let mut got = Vec::new();
    ck.ok("read all", (&h).read_to_end(&mut got));
    ck.yes("large unlinked file reads back", got == big);
    Ok(())
}

fn fifo_and_mknod(ck: &Ck) -> Res {
    ck.must("mkfifo", sys::mkfifo(&ck.p("p"), 0o666))?;
    let md = ck.lstat("p")?;
    ck.yes("mkfifo makes a fifo", md.file_type().is_fifo());
    ck.mode_eq("fifo mode & ~umask", md.mode(), S_IFIFO | 0o644);
    ck.eq("fifo size", md.len(), 0);
    ck.errno(
        "mkfifo over an existing name",
        sys::mkfifo(&ck.p("p"), 0o644),
        &[EEXIST],
    );
    ck.errno(
        "mkfifo under a missing dir",
        sys::mkfifo(&ck.p("missing/p"), 0o644),
        &[ENOENT],
    );
    ck.errno(
        "open a fifo O_WRONLY|O_NONBLOCK without a reader",
        sys::open(&ck.p("p"), O_WRONLY | O_NONBLOCK, 0),
        &[ENXIO],
    );
    if let Some(r) = ck.ok(
        "open a fifo O_RDONLY|O_NONBLOCK",
        sys::open(&ck.p("p"), O_RDONLY | O_NONBLOCK, 0),
    ) {
        if let Some(mut w) = ck.ok(
            "open the fifo for writing",
            sys::open(&ck.p("p"), O_WRONLY | O_NONBLOCK, 0),
        ) {
            ck.ok("write to the fifo", w.write_all(b"through the pipe"));
        }
        let mut buf = [0u8; 64];
        let n = (&r).read(&mut buf).unwrap_or(0);
        ck.eq("read from the fifo", &buf[..n], b"through the pipe");
    }
    ck.errno(
        "truncate of a fifo",
        sys::truncate(&ck.p("p"), 0),
        &[EINVAL],
    );
    // mknod
    ck.must("mknod S_IFIFO", sys::mknod(&ck.p("p2"), S_IFIFO | 0o600, 0))?;
    ck.mode_is("mknod S_IFIFO", "p2", S_IFIFO | 0o600);
    ck.must("mknod S_IFREG", sys::mknod(&ck.p("r"), S_IFREG | 0o640, 0))?;
    ck.mode_is("mknod S_IFREG", "r", S_IFREG | 0o640);
    ck.eq("mknod S_IFREG is empty", ck.read("r"), Some(Vec::new()));
    ck.must("mknod with no type", sys::mknod(&ck.p("r0"), 0o644, 0))?;
    ck.mode_is(
        "mknod with no type makes a regular file",
        "r0",
        S_IFREG | 0o644,
    );
    ck.errno(
        "mknod S_IFDIR",
        sys::mknod(&ck.p("dir"), S_IFDIR | 0o755, 0),
        &[EPERM, EINVAL],
    );
    ck.errno(
        "mknod with a bad type",
        sys::mknod(&ck.p("bad"), 0o170000 | 0o644, 0),
        &[EINVAL],
    );
    ck.errno(
        "mknod over an existing name",
        sys::mknod(&ck.p("r"), S_IFREG | 0o644, 0),
        &[EEXIST],
    );
    if ck.opts.root {
        let dev = libc::makedev(1, 3);
        ck.must(
            "mknod S_IFCHR",
            sys::mknod(&ck.p("chr"), S_IFCHR | 0o666, dev),
        )?;
        let md = ck.lstat("chr")?;
        ck.yes("char device type", md.file_type().is_char_device());
        ck.mode_eq("char device mode", md.mode(), S_IFCHR | 0o644);
        ck.eq("char device rdev", md.rdev(), dev);
        let dev = libc::makedev(259, 65537);
        ck.must(
            "mknod S_IFBLK",
            sys::mknod(&ck.p("blk"), S_IFBLK | 0o600, dev),
        )?;
        let md = ck.lstat("blk")?;
        ck.yes("block device type", md.file_type().is_block_device());
        ck.eq("block device rdev (large minor)", md.rdev(), dev);
        ck.must(
            "mknod S_IFSOCK",
            sys::mknod(&ck.p("sock"), S_IFSOCK | 0o644, 0),
        )?;
        ck.yes("socket type", ck.lstat("sock")?.file_type().is_socket());
    }
    ck.as_other(|| {
        ck.errno(
            "mknod S_IFCHR by a non-root user",
            sys::mknod(&ck.p("ochr"), S_IFCHR | 0o644, libc::makedev(1, 3)),
            &[EPERM],
        );
        ck.ok(
            "mkfifo by a non-root user",
            sys::mkfifo(&ck.p("ofifo"), 0o644),
        );
        ck.ok(
            "mknod S_IFSOCK by a non-root user",
            sys::mknod(&ck.p("osock"), S_IFSOCK | 0o644, 0),
        );
    });
    Ok(())
}

fn symlinks(ck: &Ck) -> Res {
    ck.put("t", b"target data")?;
    ck.must("symlink", sys::symlink(b"t", &ck.p("l")))?;
    let md = ck.lstat("l")?;
    ck.mode_eq("symlink mode", md.mode(), S_IFLNK | 0o777);
    ck.eq("symlink size is the target's length", md.len(), 1);
    ck.eq(
        "readlink",
        sys::readlink(&ck.p("l")).ok(),
        Some(b"t".to_vec()),
    );
    ck.eq("stat follows", ck.stat("l")?.ino(), ck.lstat("t")?.ino());
    ck.eq(
        "read through a symlink",
        ck.read("l"),
        Some(b"target data".to_vec()),
    );
    let odd: &[u8] = b"../x/\xff\xfe odd//path/.";
    ck.must(
        "symlink with an odd target",
        sys::symlink(odd, &ck.p("odd")),
    )?;
    ck.eq(
        "readlink returns the exact bytes",
        sys::readlink(&ck.p("odd")).ok(),
        Some(odd.to_vec()),
    );
    ck.eq("odd symlink size", ck.lstat("odd")?.len(), odd.len() as u64);
    // dangling
    ck.must("symlink", sys::symlink(b"nothing", &ck.p("dang")))?;
    ck.yes(
        "lstat of a dangling symlink",
        fs::symlink_metadata(ck.p("dang")).is_ok(),
    );
    ck.errno(
        "stat of a dangling symlink",
        fs::metadata(ck.p("dang")),
        &[ENOENT],
    );
    ck.errno(
        "open of a dangling symlink",
        File::open(ck.p("dang")),
        &[ENOENT],
    );
    ck.must(
        "open(O_CREAT) through a dangling symlink",
        sys::open(&ck.p("dang"), O_CREAT | O_WRONLY, 0o600),
    )?;
    ck.mode_is(
        "O_CREAT through a dangling symlink creates its target",
        "nothing",
        S_IFREG | 0o600,
    );
    // loops
    ck.must("symlink", sys::symlink(b"loop2", &ck.p("loop1")))?;
    ck.must("symlink", sys::symlink(b"loop1", &ck.p("loop2")))?;
    ck.must("symlink", sys::symlink(b"self", &ck.p("self")))?;
    ck.errno(
        "stat of a symlink loop",
        fs::metadata(ck.p("loop1")),
        &[ELOOP],
    );
    ck.errno(
        "open of a symlink loop",
        File::open(ck.p("loop1")),
        &[ELOOP],
    );
    ck.errno(
        "open(O_CREAT) of a symlink loop",
        sys::open(&ck.p("loop1"), O_CREAT | O_WRONLY, 0o644),
        &[ELOOP],
    );
    ck.errno("stat of a self loop", fs::metadata(ck.p("self")), &[ELOOP]);
    ck.errno(
        "path through a loop",
        fs::metadata(ck.p("self/x")),
        &[ELOOP],
    );
    // chains: 8 links resolve, 50 exceed the kernel's limit of 40
    let mut prev = "t".to_string();
    for i in 0..50 {
        let n = format!("c{i}");
        ck.must("symlink chain", sys::symlink(prev.as_bytes(), &ck.p(&n)))?;
        prev = n;
    }
    ck.eq(
        "a chain of 8 symlinks resolves",
        ck.read("c7"),
        Some(b"target data".to_vec()),
    );
    ck.errno(
        "a chain of 50 symlinks",
        fs::metadata(ck.p("c49")),
        &[ELOOP],
    );
    // O_NOFOLLOW
    ck.errno(
        "open(O_NOFOLLOW) of a symlink",
        sys::open(&ck.p("l"), O_RDONLY | O_NOFOLLOW, 0),
        &[ELOOP],
    );
    ck.errno(
        "open(O_NOFOLLOW|O_CREAT) of a symlink",
        sys::open(&ck.p("l"), O_WRONLY | O_CREAT | O_NOFOLLOW, 0o644),
        &[ELOOP],
    );
    ck.ok(
        "open(O_PATH|O_NOFOLLOW) of a symlink",
        sys::open(&ck.p("l"), O_PATH | O_NOFOLLOW, 0),
    );
    ck.ok(
        "open(O_NOFOLLOW) of a regular file",
        sys::open(&ck.p("t"), O_RDONLY | O_NOFOLLOW, 0),
    );
    // symlinks to directories
    ck.mkdir("d", 0o755)?;
    ck.put("d/inner", b"inner")?;
    ck.must("symlink to a dir", sys::symlink(b"d", &ck.p("dl")))?;
    ck.eq(
        "path through a symlink to a dir",
        ck.read("dl/inner"),
        Some(b"inner".to_vec()),
    );
    ck.yes(
        "\"link/\" resolves to the dir",
        fs::symlink_metadata(ck.p("dl/"))
            .map(|m| m.is_dir())
            .unwrap_or(false),
    );
    ck.must(
        "absolute symlink",
        sys::symlink(ck.p("d").as_os_str().as_bytes(), &ck.p("abs")),
    )?;
    ck.eq(
        "absolute symlink",
        ck.read("abs/inner"),
        Some(b"inner".to_vec()),
    );
    // errors
    ck.errno("readlink of a file", sys::readlink(&ck.p("t")), &[EINVAL]);
    ck.errno("readlink of a dir", sys::readlink(&ck.p("d")), &[EINVAL]);
    ck.errno(
        "readlink of a missing name",
        sys::readlink(&ck.p("missing")),
        &[ENOENT],
    );
    ck.errno(
        "symlink over an existing file",
        sys::symlink(b"x", &ck.p("t")),
        &[EEXIST],
    );
    ck.errno(
        "symlink over an existing symlink",
        sys::symlink(b"x", &ck.p("l")),
        &[EEXIST],
    );
    ck.errno(
        "symlink with an empty target",
        sys::symlink(b"", &ck.p("empty")),
        &[ENOENT],
    );
    ck.errno(
        "symlink under a missing dir",
        sys::symlink(b"x", &ck.p("missing/l")),
        &[ENOENT],
    );
    // Removing a symlink leaves its target.
    ck.must("unlink symlink", sys::unlink(&ck.p("l")))?;
    ck.yes("target survives", fs::symlink_metadata(ck.p("t")).is_ok());
    Ok(())
}

fn truncate_rules(ck: &Ck) -> Res {
    ck.put("f", b"0123456789")?;
    ck.must("truncate to 4", sys::truncate(&ck.p("f"), 4))?;
    ck.eq("shrunk", ck.read("f"), Some(b"0123".to_vec()));
    ck.must("truncate to 8", sys::truncate(&ck.p("f"), 8))?;
    ck.eq(
        "grown with zeros (old bytes must not come back)",
        ck.read("f"),
        Some(b"0123\0\0\0\0".to_vec()),
    );
    ck.must("truncate to 0", sys::truncate(&ck.p("f"), 0))?;
    ck.eq("truncate to 0", ck.read("f"), Some(Vec::new()));
    let h = ck.must(
        "open rw",
        OpenOptions::new().read(true).write(true).open(ck.p("f")),
    )?;
    ck.ok("write", h.write_all_at(b"abcdef", 0));
    ck.ok("ftruncate to 3", sys::ftruncate(&h, 3));
    ck.eq(
        "ftruncate shrinks",
        sys::read_at(&h, 100, 0).ok(),
        Some(b"abc".to_vec()),
    );
    ck.ok("ftruncate to 5", sys::ftruncate(&h, 5));
    ck.eq(
        "ftruncate grows with zeros",
        sys::read_at(&h, 100, 0).ok(),
        Some(b"abc\0\0".to_vec()),
    );
    ck.errno(
        "ftruncate to a negative length",
        sys::ftruncate(&h, -1),
        &[EINVAL],
    );
    drop(h);
    let ro = ck.must("open ro", File::open(ck.p("f")))?;
    ck.errno(
        "ftruncate of a read-only descriptor",
        sys::ftruncate(&ro, 0),
        &[EINVAL, EBADF],
    );
    ck.errno(
        "truncate to a negative length",
        sys::truncate(&ck.p("f"), -1),
        &[EINVAL],
    );
    ck.mkdir("d", 0o755)?;
    ck.errno("truncate of a dir", sys::truncate(&ck.p("d"), 0), &[EISDIR]);
    ck.errno(
        "truncate of a missing name",
        sys::truncate(&ck.p("missing"), 0),
        &[ENOENT],
    );
    ck.errno(
        "truncate of file/x",
        sys::truncate(&ck.p("f/x"), 0),
        &[ENOTDIR],
    );
    ck.must("symlink", sys::symlink(b"f", &ck.p("l")))?;
    ck.must("truncate through a symlink", sys::truncate(&ck.p("l"), 2))?;
    ck.eq("truncate follows symlinks", ck.lstat("f")?.len(), 2);
    // A sparse 1 TiB file.
    const TIB: i64 = 1 << 40;
    ck.put("sparse", b"head")?;
    ck.must("truncate to 1 TiB", sys::truncate(&ck.p("sparse"), TIB))?;
    let md = ck.lstat("sparse")?;
    ck.eq("size of a 1 TiB sparse file", md.len(), TIB as u64);
    ck.yes("a 1 TiB sparse file uses little space", md.blocks() < 1024);
    let h = ck.must(
        "open rw",
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(ck.p("sparse")),
    )?;
    ck.eq(
        "a hole at the end of a 1 TiB file reads as zeros",
        sys::read_at(&h, 8, TIB as u64 - 8).ok(),
        Some(vec![0u8; 8]),
    );
    ck.ok("write at 1 TiB", h.write_all_at(b"tail", TIB as u64));
    ck.eq(
        "read back at 1 TiB",
        sys::read_at(&h, 100, TIB as u64 - 2).ok(),
        Some(b"\0\0tail".to_vec()),
    );
    ck.eq(
        "head still there",
        sys::read_at(&h, 4, 0).ok(),
        Some(b"head".to_vec()),
    );
    ck.ok("ftruncate back to 4", sys::ftruncate(&h, 4));
    ck.eq(
        "size after shrinking the sparse file",
        h.metadata().ok().map(|m| m.len()),
        Some(4),
    );
    Ok(())
}

fn utimensat_rules(ck: &Ck) -> Res {
    ck.put("f", b"")?;
    let f = ck.p("f");
    // nanoseconds kept, each time set on its own
    ck.must(
        "utimensat",
        sys::utimensat(
            &f,
            Some([
                sys::ts(1_234_567_890, 123_456_789),
                sys::ts(1_500_000_000, 987_654_321),
            ]),
            0,
        ),
    )?;
    let t = times(&ck.lstat("f")?);
    ck.eq(
        "atime with nanoseconds",
        t.a,
        Ts(1_234_567_890, 123_456_789),
    );
    ck.eq(
        "mtime with nanoseconds",
        t.m,
        Ts(1_500_000_000, 987_654_321),
    );
    let c0 = t.c;
    tick();
    // UTIME_OMIT leaves one, and changes ctime
    ck.must(
        "utimensat OMIT atime",
        sys::utimensat(&f, Some([OMIT, sys::ts(1_600_000_000, 1)]), 0),
    )?;
    let t = times(&ck.lstat("f")?);
    ck.eq(
        "UTIME_OMIT keeps atime",
        t.a,
        Ts(1_234_567_890, 123_456_789),
    );
    ck.eq("mtime set", t.m, Ts(1_600_000_000, 1));
    ck.yes("utimensat changes ctime", t.c > c0);
    ck.must(
        "utimensat OMIT mtime",
        sys::utimensat(&f, Some([sys::ts(1_700_000_000, 999_999_999), OMIT]), 0),
    )?;
    let t = times(&ck.lstat("f")?);
    ck.eq("atime set", t.a, Ts(1_700_000_000, 999_999_999));
    ck.eq("UTIME_OMIT keeps mtime", t.m, Ts(1_600_000_000, 1));
    let c1 = t.c;
    tick();
    ck.must(
        "utimensat OMIT both",
        sys::utimensat(&f, Some([OMIT, OMIT]), 0),
    )?;
    let t = times(&ck.lstat("f")?);
    ck.eq(
        "OMIT both: nothing changes",
        (t.a, t.m, t.c),
        (Ts(1_700_000_000, 999_999_999), Ts(1_600_000_000, 1), c1),
    );
    // UTIME_NOW and NULL
    let lo = wall_now();
    ck.must(
        "utimensat NOW both",
        sys::utimensat(&f, Some([NOW, NOW]), 0),
    )?;
    let hi = wall_now();
    let t = times(&ck.lstat("f")?);
    ck.yes(
        &format!("UTIME_NOW atime {:?} near {lo:?}", t.a),
        within(t.a, lo, hi),
    );
    ck.yes(
        &format!("UTIME_NOW mtime {:?} near {lo:?}", t.m),
        within(t.m, lo, hi),
    );
    ck.must(
        "utimensat NOW mtime only",
        sys::utimensat(&f, Some([sys::ts(5, 5), OMIT]), 0),
    )?;
    ck.must(
        "utimensat NOW mtime only",
        sys::utimensat(&f, Some([OMIT, NOW]), 0),
    )?;
    let t = times(&ck.lstat("f")?);
    ck.eq("UTIME_NOW for mtime leaves atime", t.a, Ts(5, 5));
    ck.yes("UTIME_NOW for mtime", within(t.m, lo, wall_now()));
    ck.must("utimensat(NULL)", sys::utimensat(&f, None, 0))?;
    let t = times(&ck.lstat("f")?);
    ck.yes(
        "utimensat(NULL) sets atime to now",
        within(t.a, lo, wall_now()),
    );
    // times outside 1970..2038
    ck.must(
        "utimensat before 1970",
        sys::utimensat(
            &f,
            Some([sys::ts(-86_400, 500), sys::ts(-1, 999_999_999)]),
            0,
        ),
    )?;
    let t = times(&ck.lstat("f")?);
    ck.eq(
        "times before 1970",
        (t.a, t.m),
        (Ts(-86_400, 500), Ts(-1, 999_999_999)),
    );
    ck.must(
        "utimensat after 2038",
        sys::utimensat(
            &f,
            Some([sys::ts(1 << 33, 7), sys::ts(4_102_444_800, 0)]),
            0,
        ),
    )?;
    let t = times(&ck.lstat("f")?);
    ck.eq(
        "times after 2038",
        (t.a, t.m),
        (Ts(1 << 33, 7), Ts(4_102_444_800, 0)),
    );
    // errors
    ck.errno(
        "utimensat with tv_nsec = 1e9",
        sys::utimensat(&f, Some([sys::ts(0, 1_000_000_000), OMIT]), 0),
        &[EINVAL],
    );
    ck.errno(
        "utimensat with a negative tv_nsec",
        sys::utimensat(&f, Some([OMIT, sys::ts(0, -5)]), 0),
        &[EINVAL],
    );
    ck.errno(
        "utimensat of a missing name",
        sys::utimensat(&ck.p("missing"), None, 0),
        &[ENOENT],
    );
    // futimens
    let h = ck.must("open", File::open(&f))?;
    ck.ok(
        "futimens",
        sys::futimens(&h, [sys::ts(111, 222), sys::ts(333, 444)]),
    );
    let t = times(&ck.lstat("f")?);
    ck.eq("futimens", (t.a, t.m), (Ts(111, 222), Ts(333, 444)));
    // AT_SYMLINK_NOFOLLOW sets the link's own times
    ck.must("symlink", sys::symlink(b"f", &ck.p("l")))?;
    ck.must(
        "utimensat NOFOLLOW",
        sys::utimensat(
            &ck.p("l"),
            Some([sys::ts(10, 1), sys::ts(20, 2)]),
            libc::AT_SYMLINK_NOFOLLOW,
        ),
    )?;
    let tl = times(&ck.lstat("l")?);
    ck.eq("symlink's own times", (tl.a, tl.m), (Ts(10, 1), Ts(20, 2)));
    let t = times(&ck.lstat("f")?);
    ck.eq(
        "target untouched by NOFOLLOW",
        (t.a, t.m),
        (Ts(111, 222), Ts(333, 444)),
    );
    ck.must(
        "utimensat through the link",
        sys::utimensat(&ck.p("l"), Some([sys::ts(30, 3), sys::ts(40, 4)]), 0),
    )?;
    let t = times(&ck.lstat("f")?);
    ck.eq(
        "utimensat follows a symlink",
        (t.a, t.m),
        (Ts(30, 3), Ts(40, 4)),
    );
    // directories
    ck.mkdir("d", 0o755)?;
    ck.must(
        "utimensat dir",
        sys::utimensat(&ck.p("d"), Some([sys::ts(50, 5), sys::ts(60, 6)]), 0),
    )?;
    let t = times(&ck.lstat("d")?);
    ck.eq("directory times", (t.a, t.m), (Ts(50, 5), Ts(60, 6)));
    // permissions: with write access anyone may set "now"; only the owner may set other times
    let Some((ouid, ogid)) = ck.other() else {
        return Ok(());
    };
    ck.put("w666", b"")?;
    ck.chmod("w666", 0o666)?;
    ck.put("r644", b"")?;
    ck.chmod("r644", 0o644)?;
    ck.put("mine", b"")?;
    ck.chown("mine", Some(ouid), Some(ogid))?;
    ck.chmod("mine", 0o444)?;
    ck.as_other(|| {
        ck.ok(
            "non-owner with write access sets both to now",
            sys::utimensat(&ck.p("w666"), Some([NOW, NOW]), 0),
        );
        ck.ok(
            "non-owner with write access: utimensat(NULL)",
            sys::utimensat(&ck.p("w666"), None, 0),
        );
        ck.errno(
            "non-owner sets explicit times",
            sys::utimensat(&ck.p("w666"), Some([sys::ts(1, 1), sys::ts(2, 2)]), 0),
            &[EPERM],
        );
        ck.errno(
            "non-owner sets mtime to now and omits atime",
            sys::utimensat(&ck.p("w666"), Some([OMIT, NOW]), 0),
            &[EPERM],
        );
        ck.errno(
            "non-owner without write access sets now",
            sys::utimensat(&ck.p("r644"), None, 0),
            &[EACCES],
        );
        ck.ok(
            "owner without write access sets explicit times",
            sys::utimensat(&ck.p("mine"), Some([sys::ts(7, 7), sys::ts(8, 8)]), 0),
        );
        ck.ok(
            "owner without write access sets now",
            sys::utimensat(&ck.p("mine"), None, 0),
        );
    });
    Ok(())
}

/// Which of atime, mtime, ctime an operation must change ('+') or keep ('=').
struct Expect {
    what: &'static str,
    path: &'static str,
    spec: &'static str,
}

fn check_times(ck: &Ck, before: &[(String, Times)], expects: &[Expect]) {
    for e in expects {
        let Some((_, b)) = before.iter().find(|(p, _)| p == e.path) else {
            ck.fail(format!("{}: no 'before' times for {}", e.what, e.path));
            continue;
        };
        let Ok(md) = fs::symlink_metadata(ck.p(e.path)) else {
            ck.fail(format!("{}: {} is missing", e.what, e.path));
            continue;
        };
        let a = times(&md);
        let spec = e.spec.as_bytes();
        for (i, (name, bt, at)) in [
            ("atime", b.a, a.a),
            ("mtime", b.m, a.m),
            ("ctime", b.c, a.c),
        ]
        .into_iter()
        .enumerate()
        {
            match spec[i] {
                b'+' if at <= bt => ck.fail(format!(
                    "{}: {name} of {} must change (before {bt:?}, after {at:?})",
                    e.what, e.path
                )),
                b'=' if at != bt => ck.fail(format!(
                    "{}: {name} of {} must not change (before {bt:?}, after {at:?})",
                    e.what, e.path
                )),
                _ => {}
            }
        }
    }
}

fn time_updates(ck: &Ck) -> Res {
    // Set-up: one object (and parent dir) per operation.
    for d in [
        "dc", "dm", "du", "dr", "rn1", "rn2", "ro", "lkdir", "sy", "mf", "dx", "dex",
    ] {
        ck.mkdir(d, 0o777)?;
    }
    ck.mkdir("dr/sub", 0o755)?;
    ck.mkdir("dx/sub", 0o755)?;
    for f in [
        "w", "a", "cm", "co", "lk", "tr", "ftr", "ot", "ote", "ts", "xa", "xr", "ut", "du/f",
        "rn1/f", "ro/a", "ro/b", "mmw", "dex/f",
    ] {
        ck.put(f, b"0123456789")?;
    }
    ck.put("ote", b"")?;
    ck.must("link", sys::link(&ck.p("du/f"), &ck.p("du_keep")))?;
    ck.must("link", sys::link(&ck.p("ro/b"), &ck.p("ro_blink")))?;
    ck.must(
        "setxattr",
        sys::setxattr(&ck.p("xr"), "user.x", b"1", 0, true),
    )?;
    let all = [
        "w", "a", "cm", "co", "lk", "tr", "ftr", "ot", "ote", "ts", "xa", "xr", "ut", "du",
        "du_keep", "dc", "dm", "dr", "rn1", "rn2", "rn1/f", "ro", "ro/a", "ro_blink", "lkdir",
        "sy", "mf", "dx", "dx/sub", "dex", "dex/f",
    ];
    for p in all {
        set_old(ck, p)?;
    }
    tick();
    let mut before = Vec::new();
    for p in all {
        before.push((p.to_string(), times(&ck.lstat(p)?)));
    }
    // rn1/f is looked up again under its new name.
    let rnf = before.iter().find(|(p, _)| p == "rn1/f").unwrap().1;
    before.push(("rn2/g".to_string(), rnf));
    let start = wall_now();
    // The operations.
    ck.ok(
        "write",
        OpenOptions::new()
            .write(true)
            .open(ck.p("w"))
            .and_then(|mut f| f.write_all(b"x")),
    );
    ck.ok(
        "append",
        OpenOptions::new()
            .append(true)
            .open(ck.p("a"))
            .and_then(|mut f| f.write_all(b"x")),
    );
    ck.ok("chmod", sys::chmod(&ck.p("cm"), 0o600));
    if ck.opts.root {
        ck.ok("chown", sys::chown(&ck.p("co"), 12, 34));
    }
    ck.ok("link", sys::link(&ck.p("lk"), &ck.p("lkdir/lk2")));
    ck.ok("truncate", sys::truncate(&ck.p("tr"), 3));
    ck.ok(
        "ftruncate",
        OpenOptions::new()
            .write(true)
            .open(ck.p("ftr"))
            .and_then(|f| f.set_len(20)),
    );
    ck.ok(
        "open O_TRUNC",
        sys::open(&ck.p("ot"), O_WRONLY | O_TRUNC, 0),
    );
    ck.ok(
        "open O_TRUNC of an empty file",
        sys::open(&ck.p("ote"), O_WRONLY | O_TRUNC, 0),
    );
    ck.ok("truncate to the same size", sys::truncate(&ck.p("ts"), 10));
    ck.ok(
        "setxattr",
        sys::setxattr(&ck.p("xa"), "user.t", b"v", 0, true),
    );
    ck.ok("removexattr", sys::removexattr(&ck.p("xr"), "user.x"));
    ck.ok(
        "utimensat",
        sys::utimensat(&ck.p("ut"), Some([sys::ts(OLD.0, OLD.1), OMIT]), 0),
    );
    ck.ok("unlink", sys::unlink(&ck.p("du/f")));
    ck.ok("create", fs::write(ck.p("dc/new"), b""));
    ck.ok("mkdir", fs::create_dir(ck.p("dm/sub")));
    ck.ok("rmdir", fs::remove_dir(ck.p("dr/sub")));
    ck.ok(
        "rename across dirs",
        sys::rename(&ck.p("rn1/f"), &ck.p("rn2/g")),
    );
    ck.ok(
        "rename over a file",
        sys::rename(&ck.p("ro/a"), &ck.p("ro/b")),
    );
    ck.ok("symlink", sys::symlink(b"x", &ck.p("sy/l")));
    ck.ok("mkfifo", sys::mkfifo(&ck.p("mf/p"), 0o644));
    ck.ok(
        "open for reading without reading",
        File::open(ck.p("dex/f")),
    );
    ck.ok("stat in a directory", fs::metadata(ck.p("dx/sub")));
    let end = wall_now();
    let mut expects = vec![
        Expect {
            what: "write",
            path: "w",
            spec: "=++",
        },
        Expect {
            what: "O_APPEND write",
            path: "a",
            spec: "=++",
        },
        Expect {
            what: "chmod",
            path: "cm",
            spec: "==+",
        },
        Expect {
            what: "link",
            path: "lk",
            spec: "==+",
        },
        Expect {
            what: "link",
            path: "lkdir",
            spec: "=++",
        },
        Expect {
            what: "truncate (size change)",
            path: "tr",
            spec: "=++",
        },
        Expect {
            what: "ftruncate (size change)",
            path: "ftr",
            spec: "=++",
        },
        Expect {
            what: "open(O_TRUNC)",
            path: "ot",
            spec: "=++",
        },
        Expect {
            what: "open(O_TRUNC) of an empty file",
            path: "ote",
            spec: "=++",
        },
        Expect {
            what: "truncate(2) to the same size (Linux updates)",
            path: "ts",
            spec: "=++",
        },
        Expect {
            what: "setxattr",
            path: "xa",
            spec: "==+",
        },
        Expect {
            what: "removexattr",
            path: "xr",
            spec: "==+",
        },
        Expect {
            what: "utimensat(atime, OMIT)",
            path: "ut",
            spec: "==+",
        },
        Expect {
            what: "unlink",
            path: "du",
            spec: "=++",
        },
        Expect {
            what: "unlink of one link",
            path: "du_keep",
            spec: "==+",
        },
        Expect {
            what: "create",
            path: "dc",
            spec: "=++",
        },
        Expect {
            what: "mkdir",
            path: "dm",
            spec: "=++",
        },
        Expect {
            what: "rmdir",
            path: "dr",
            spec: "=++",
        },
        Expect {
            what: "rename (source dir)",
            path: "rn1",
            spec: "=++",
        },
        Expect {
            what: "rename (target dir)",
            path: "rn2",
            spec: "=++",
        },
        Expect {
            what: "rename (the renamed file)",
            path: "rn2/g",
            spec: "==+",
        },
        Expect {
            what: "rename over a file (dir)",
            path: "ro",
            spec: "=++",
        },
        Expect {
            what: "rename over a file (replaced file's other link)",
            path: "ro_blink",
            spec: "==+",
        },
        Expect {
            what: "symlink",
            path: "sy",
            spec: "=++",
        },
        Expect {
            what: "mkfifo",
            path: "mf",
            spec: "=++",
        },
        Expect {
            what: "open without reading",
            path: "dex/f",
            spec: "===",
        },
        Expect {
            what: "lookup in a directory",
            path: "dx",
            spec: "===",
        },
        Expect {
            what: "stat",
            path: "dx/sub",
            spec: "===",
        },
    ];
    if ck.opts.root {
        expects.push(Expect {
            what: "chown",
            path: "co",
            spec: "==+",
        });
    }
    check_times(ck, &before, &expects);
    // New entries get the current time for all three.
    for n in ["dc/new", "dm/sub", "sy/l", "mf/p", "lkdir/lk2"] {
        if let Ok(md) = fs::symlink_metadata(ck.p(n)) {
            let t = times(&md);
            if n == "lkdir/lk2" {
                ck.yes(
                    "a hard link has the file's ctime, now",
                    within(t.c, start, end),
                );
                continue;
            }
            for (w, v) in [("atime", t.a), ("mtime", t.m), ("ctime", t.c)] {
                ck.yes(
                    &format!("{w} of new {n} is now ({v:?}, start {start:?})"),
                    within(v, start, end),
                );
            }
        }
    }
    Ok(())
}

fn atime_updates(ck: &Ck) -> Res {
    if !ck.opts.atime {
        return Ok(());
    }
    ck.put("r", b"data")?;
    ck.put("r0", b"data")?;
    ck.mkdir("d", 0o755)?;
    ck.put("d/x", b"")?;
    ck.must("symlink", sys::symlink(b"r", &ck.p("l")))?;
    ck.put("recent", b"data")?;
    for p in ["r", "r0", "d", "l"] {
        set_old(ck, p)?;
    }
    tick();
    // "recent": atime newer than mtime and ctime, and less than a day old: relatime keeps it.
    let now = wall_now();
    ck.must(
        "utimensat",
        sys::utimensat(
            &ck.p("recent"),
            Some([sys::ts(now.0 + 10, 0), sys::ts(now.0 - 100, 0)]),
            0,
        ),
    )?;
    let all = ["r", "r0", "d", "l", "recent"];
    let mut before = Vec::new();
    for p in all {
        before.push((p.to_string(), times(&ck.lstat(p)?)));
    }
    ck.ok("read", fs::read(ck.p("r")));
    ck.ok(
        "read of 0 bytes at EOF",
        File::open(ck.p("r0")).and_then(|f| sys::read_at(&f, 10, 100)),
    );
    ck.ok("readdir", fs::read_dir(ck.p("d")).map(|d| d.count()));
    ck.ok("readlink", sys::readlink(&ck.p("l")));
    ck.ok(
        "read of a file with a recent atime",
        fs::read(ck.p("recent")),
    );
    check_times(
        ck,
        &before,
        &[
            Expect {
                what: "read",
                path: "r",
                spec: "+==",
            },
            Expect {
                what: "readdir",
                path: "d",
                spec: "+==",
            },
            Expect {
                what: "readlink",
                path: "l",
                spec: "+==",
            },
            Expect {
                what: "read with a recent atime (relatime)",
                path: "recent",
                spec: "===",
            },
        ],
    );
    Ok(())
}

fn name_and_path_limits(ck: &Ck) -> Res {
    let n255 = "n".repeat(255);
    let n256 = "n".repeat(256);
    ck.put(&n255, b"255")?;
    ck.eq("255-byte name", ck.read(&n255), Some(b"255".to_vec()));
    let d255 = "d".repeat(255);
    ck.mkdir(&d255, 0o755)?;
    ck.put(&format!("{d255}/{n255}"), b"deep")?;
    let l255 = "l".repeat(255);
    ck.must(
        "symlink with a 255-byte name",
        sys::symlink(n255.as_bytes(), &ck.p(&l255)),
    )?;
    let h255 = "h".repeat(255);
    ck.must(
        "link with a 255-byte name",
        sys::link(&ck.p(&n255), &ck.p(&h255)),
    )?;
    let r255 = "r".repeat(255);
    ck.must(
        "rename to a 255-byte name",
        sys::rename(&ck.p(&h255), &ck.p(&r255)),
    )?;
    ck.yes(
        "255-byte names listed",
        fs::read_dir(&ck.dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().len() == 255)
                    .count()
            })
            .unwrap_or(0)
            == 4,
    );
    let too = ck.p(&n256);
    ck.errno(
        "create with a 256-byte name",
        sys::open(&too, O_CREAT | O_WRONLY, 0o644),
        &[ENAMETOOLONG],
    );
    ck.errno(
        "open of a 256-byte name",
        sys::open(&too, O_RDONLY, 0),
        &[ENAMETOOLONG],
    );
    ck.errno(
        "mkdir with a 256-byte name",
        sys::mkdir(&too, 0o755),
        &[ENAMETOOLONG],
    );
    ck.errno(
        "stat of a 256-byte name",
        fs::symlink_metadata(&too),
        &[ENAMETOOLONG],
    );
    ck.errno(
        "unlink of a 256-byte name",
        sys::unlink(&too),
        &[ENAMETOOLONG],
    );
    ck.errno(
        "rmdir of a 256-byte name",
        sys::rmdir(&too),
        &[ENAMETOOLONG],
    );
    ck.errno(
        "symlink with a 256-byte name",
        sys::symlink(b"x", &too),
        &[ENAMETOOLONG],
    );
    ck.errno(
        "link to a 256-byte name",
        sys::link(&ck.p(&n255), &too),
        &[ENAMETOOLONG],
    );
    ck.errno(
        "rename to a 256-byte name",
        sys::rename(&ck.p(&n255), &too),
        &[ENAMETOOLONG],
    );
    ck.errno(
        "rename from a 256-byte name",
        sys::rename(&too, &ck.p("x")),
        &[ENAMETOOLONG],
    );
    ck.errno(
        "mkfifo with a 256-byte name",
        sys::mkfifo(&too, 0o644),
        &[ENAMETOOLONG],
    );
    ck.errno(
        "a 256-byte name inside a path",
        fs::metadata(ck.p(&format!("{n256}/x"))),
        &[ENAMETOOLONG],
    );
    ck.yes(
        "nothing with a 256-byte name appeared",
        fs::read_dir(&ck.dir)
            .map(|d| d.filter_map(|e| e.ok()).all(|e| e.file_name().len() <= 255))
            .unwrap_or(false),
    );
    // PATH_MAX (4096 bytes with the NUL)
    let long = ck.p(&"a/".repeat(2100));
    ck.errno(
        "stat of a path longer than PATH_MAX",
        fs::metadata(&long),
        &[ENAMETOOLONG],
    );
    ck.errno(
        "create with a path longer than PATH_MAX",
        sys::open(&long.join("f"), O_CREAT | O_WRONLY, 0o644),
        &[ENAMETOOLONG],
    );
    ck.errno(
        "mkdir with a path longer than PATH_MAX",
        sys::mkdir(&long, 0o755),
        &[ENAMETOOLONG],
    );
    // Symlink targets up to PATH_MAX - 1 bytes.
    let t4095 = vec![b'x'; 4095];
    ck.must(
        "symlink with a 4095-byte target",
        sys::symlink(&t4095, &ck.p("long4095")),
    )?;
    ck.eq(
        "readlink of a 4095-byte target",
        sys::readlink(&ck.p("long4095")).ok().map(|v| v.len()),
        Some(4095),
    );
    ck.eq(
        "lstat size of a 4095-byte symlink",
        ck.lstat("long4095")?.len(),
        4095,
    );
    ck.errno(
        "symlink with a 4096-byte target",
        sys::symlink(&[b'x'; 4096], &ck.p("long4096")),
        &[ENAMETOOLONG],
    );
    // A tree whose full path is longer than PATH_MAX still works through *at() calls.
    let top = ck.must(
        "open case dir",
        sys::open(&ck.dir, O_RDONLY | O_DIRECTORY, 0),
    )?;
    let comp = vec![b'p'; 250];
    let mut dirs = vec![top];
    for _ in 0..20 {
        let cur = dirs.last().unwrap();
        ck.must("mkdirat", sys::mkdirat(cur, &comp, 0o755))?;
        let next = ck.must("openat", sys::openat(cur, &comp, O_RDONLY | O_DIRECTORY, 0))?;
        dirs.push(next);
    }
    let bottom = dirs.last().unwrap();
    let mut h = ck.must(
        "create deep file",
        sys::openat(bottom, b"leaf", O_CREAT | O_RDWR, 0o644),
    )?;
    ck.ok("write deep file", h.write_all(b"deep leaf"));
    ck.eq(
        "read deep file",
        sys::read_at(&h, 100, 0).ok(),
        Some(b"deep leaf".to_vec()),
    );
    ck.eq(
        "fstatat deep file",
        sys::fstatat(bottom, b"leaf", 0).ok().map(|s| s.st_size),
        Some(9),
    );
    let mut rel = Vec::new();
    for _ in 0..20 {
        rel.extend_from_slice(&comp);
        rel.push(b'/');
    }
    let full = ck.dir.join(OsStr::from_bytes(&rel)).join("leaf");
    ck.errno(
        "stat of the deep file by its full path",
        fs::metadata(&full),
        &[ENAMETOOLONG],
    );
    ck.ok("unlinkat deep file", sys::unlinkat(bottom, b"leaf", 0));
    for i in (0..20).rev() {
        ck.ok(
            "rmdir deep",
            sys::unlinkat(&dirs[i], &comp, libc::AT_REMOVEDIR),
        );
    }
    // Names with any byte but '/' and NUL.
    let odd: &[u8] = b"\x01\xff\xfe \n\t\\*?\"'\xc3\x28";
    ck.must("create an odd name", fs::write(ck.pb(odd), b"odd"))?;
    ck.eq(
        "read an odd name",
        fs::read(ck.pb(odd)).ok(),
        Some(b"odd".to_vec()),
    );
    let listed = sys::readdir(&ck.dir)
        .map(|v| v.iter().any(|(n, _, _)| n == odd))
        .unwrap_or(false);
    ck.yes("odd name listed byte for byte", listed);
    if let Ok(v) = sys::statvfs(&ck.dir) {
        ck.yes(
            &format!("statvfs f_namemax {} >= 255", v.f_namemax),
            v.f_namemax >= 255,
        );
    }
    Ok(())
}

fn xattrs(ck: &Ck) -> Res {
    ck.put("f", b"")?;
    let f = ck.p("f");
    ck.errno(
        "getxattr of a missing attribute",
        sys::getxattr(&f, "user.a", 64),
        &[ENODATA],
    );
    ck.must("setxattr", sys::setxattr(&f, "user.a", b"value-a", 0, true))?;
    ck.must(
        "setxattr empty value",
        sys::setxattr(&f, "user.empty", b"", 0, true),
    )?;
    let bin: Vec<u8> = (0..=255u8).collect();
    ck.must(
        "setxattr binary",
        sys::setxattr(&f, "user.bin", &bin, 0, true),
    )?;
    ck.eq(
        "getxattr",
        sys::getxattr(&f, "user.a", 64).ok(),
        Some(b"value-a".to_vec()),
    );
    ck.eq(
        "getxattr empty",
        sys::getxattr(&f, "user.empty", 64).ok(),
        Some(Vec::new()),
    );
    ck.eq(
        "getxattr binary",
        sys::getxattr(&f, "user.bin", 1024).ok(),
        Some(bin),
    );
    ck.eq(
        "getxattr size query",
        sys::getxattr(&f, "user.a", 0).ok().map(|v| v.len()),
        Some(7),
    );
    ck.errno(
        "getxattr with a small buffer",
        sys::getxattr(&f, "user.a", 3),
        &[ERANGE],
    );
    ck.eq(
        "listxattr",
        sys::listxattr(&f).ok().map(|v| {
            v.into_iter()
                .filter(|n| n.starts_with("user."))
                .collect::<Vec<_>>()
        }),
        Some(vec![
            "user.a".to_string(),
            "user.bin".to_string(),
            "user.empty".to_string(),
        ]),
    );
    ck.errno(
        "XATTR_CREATE of an existing attribute",
        sys::setxattr(&f, "user.a", b"x", libc::XATTR_CREATE, true),
        &[EEXIST],
    );
    ck.errno(
        "XATTR_REPLACE of a missing attribute",
        sys::setxattr(&f, "user.none", b"x", libc::XATTR_REPLACE, true),
        &[ENODATA],
    );
    ck.must(
        "XATTR_REPLACE",
        sys::setxattr(&f, "user.a", b"new", libc::XATTR_REPLACE, true),
    )?;
    ck.eq(
        "replaced value",
        sys::getxattr(&f, "user.a", 64).ok(),
        Some(b"new".to_vec()),
    );
    ck.must("removexattr", sys::removexattr(&f, "user.a"))?;
    ck.errno(
        "removexattr of a missing attribute",
        sys::removexattr(&f, "user.a"),
        &[ENODATA],
    );
    ck.errno(
        "getxattr after removal",
        sys::getxattr(&f, "user.a", 64),
        &[ENODATA],
    );
    ck.errno(
        "setxattr in an unknown namespace",
        sys::setxattr(&f, "bogus.a", b"x", 0, true),
        &[libc::EOPNOTSUPP],
    );
    ck.errno(
        "getxattr of a missing file",
        sys::getxattr(&ck.p("missing"), "user.a", 64),
        &[ENOENT],
    );
    // user.* is only for regular files and directories
    ck.mkdir("d", 0o755)?;
    ck.ok(
        "setxattr on a dir",
        sys::setxattr(&ck.p("d"), "user.d", b"1", 0, true),
    );
    ck.must("symlink", sys::symlink(b"f", &ck.p("l")))?;
    ck.errno(
        "lsetxattr user.* on a symlink",
        sys::setxattr(&ck.p("l"), "user.l", b"1", 0, false),
        &[EPERM],
    );
    ck.ok(
        "setxattr through a symlink",
        sys::setxattr(&ck.p("l"), "user.t", b"1", 0, true),
    );
    ck.eq(
        "setxattr through a symlink sets the target's",
        sys::getxattr(&f, "user.t", 64).ok(),
        Some(b"1".to_vec()),
    );
    ck.must("mkfifo", sys::mkfifo(&ck.p("p"), 0o644))?;
    ck.errno(
        "setxattr user.* on a fifo",
        sys::setxattr(&ck.p("p"), "user.p", b"1", 0, false),
        &[EPERM],
    );
    if ck.opts.root {
        ck.ok(
            "trusted.* as root",
            sys::setxattr(&f, "trusted.t", b"1", 0, true),
        );
    }
    // xattrs belong to the inode: hard links share them; rename keeps them
    ck.must("link", sys::link(&f, &ck.p("f2")))?;
    ck.eq(
        "xattr through a hard link",
        sys::getxattr(&ck.p("f2"), "user.t", 64).ok(),
        Some(b"1".to_vec()),
    );
    ck.must("rename", sys::rename(&f, &ck.p("f3")))?;
    ck.eq(
        "xattr after rename",
        sys::getxattr(&ck.p("f3"), "user.t", 64).ok(),
        Some(b"1".to_vec()),
    );
    ck.as_other(|| {
        ck.errno(
            "other user sets user.* on root's 0644 file",
            sys::setxattr(&ck.p("f3"), "user.o", b"1", 0, true),
            &[EACCES, EPERM],
        );
        ck.ok(
            "other user reads user.* of a 0644 file",
            sys::getxattr(&ck.p("f3"), "user.t", 64),
        );
        ck.errno(
            "other user sets trusted.*",
            sys::setxattr(&ck.p("d"), "trusted.o", b"1", 0, true),
            &[EPERM, EACCES],
        );
    });
    Ok(())
}

fn readdir_entries(ck: &Ck) -> Res {
    ck.mkdir("d", 0o755)?;
    ck.put("d/file", b"")?;
    ck.mkdir("d/sub", 0o755)?;
    ck.must("symlink", sys::symlink(b"file", &ck.p("d/link")))?;
    ck.must("mkfifo", sys::mkfifo(&ck.p("d/fifo"), 0o644))?;
    let ents = ck.must("readdir", sys::readdir(&ck.p("d")))?;
    let names: Vec<&[u8]> = ents.iter().map(|(n, _, _)| n.as_slice()).collect();
    ck.eq(
        "names",
        names,
        vec![&b"."[..], b"..", b"fifo", b"file", b"link", b"sub"],
    );
    for (n, ino, typ) in &ents {
        let name = String::from_utf8_lossy(n).into_owned();
        let rel = format!("d/{name}");
        let md = ck.lstat(&rel)?;
        ck.eq(&format!("d_ino of {name}"), *ino, md.ino());
        let want = match md.mode() & S_IFMT {
            S_IFDIR => libc::DT_DIR,
            S_IFREG => libc::DT_REG,
            S_IFLNK => libc::DT_LNK,
            S_IFIFO => libc::DT_FIFO,
            _ => 0,
        };
        ck.eq(&format!("d_type of {name}"), *typ, want);
    }
    ck.eq(
        "\"..\" is the parent",
        ck.stat("d/..")?.ino(),
        ck.must("stat", fs::metadata(&ck.dir))?.ino(),
    );
    ck.eq(
        "\".\" is the dir",
        ck.stat("d/.")?.ino(),
        ck.stat("d")?.ino(),
    );
    // entries removed and added between two listings
    ck.must("unlink", sys::unlink(&ck.p("d/file")))?;
    ck.put("d/new", b"")?;
    let names: Vec<Vec<u8>> = ck
        .must("readdir", sys::readdir(&ck.p("d")))?
        .into_iter()
        .map(|e| e.0)
        .collect();
    ck.eq(
        "listing after changes",
        names,
        vec![
            b".".to_vec(),
            b"..".to_vec(),
            b"fifo".to_vec(),
            b"link".to_vec(),
            b"new".to_vec(),
            b"sub".to_vec(),
        ],
    );
    ck.errno(
        "readdir of a file",
        sys::readdir(&ck.p("d/new")),
        &[ENOTDIR],
    );
    ck.errno(
        "readdir of a missing dir",
        sys::readdir(&ck.p("missing")),
        &[ENOENT],
    );
    // 1000 entries, each listed once
    ck.mkdir("many", 0o755)?;
    for i in 0..1000 {
        ck.put(&format!("many/entry-{i:04}"), b"")?;
    }
    let names = ck.must("readdir", sys::readdir(&ck.p("many")))?;
    ck.eq("1000 entries + . and ..", names.len(), 1002);
    Ok(())
}

fn io_edges(ck: &Ck) -> Res {
    ck.put("f", b"0123456789")?;
    let h = ck.must(
        "open",
        OpenOptions::new().read(true).write(true).open(ck.p("f")),
    )?;
    ck.eq(
        "pread past EOF",
        sys::read_at(&h, 10, 100).ok(),
        Some(Vec::new()),
    );
    ck.eq(
        "pread across EOF",
        sys::read_at(&h, 10, 8).ok(),
        Some(b"89".to_vec()),
    );
    ck.ok("pwrite leaving a hole", h.write_all_at(b"end", 100_000));
    ck.eq(
        "size after a write past EOF",
        h.metadata().ok().map(|m| m.len()),
        Some(100_003),
    );
    ck.eq(
        "the hole reads as zeros",
        sys::read_at(&h, 10, 50_000).ok(),
        Some(vec![0u8; 10]),
    );
    let mut hh = &h;
    ck.eq(
        "lseek SEEK_END",
        hh.seek(SeekFrom::End(0)).ok(),
        Some(100_003),
    );
    ck.eq(
        "lseek past the end",
        hh.seek(SeekFrom::End(10)).ok(),
        Some(100_013),
    );
    let mut b = [0u8; 4];
    ck.eq("read past the end", hh.read(&mut b).ok(), Some(0));
    ck.errno(
        "lseek to a negative offset",
        hh.seek(SeekFrom::Start(0))
            .and_then(|_| hh.seek(SeekFrom::Current(-1))),
        &[EINVAL],
    );
    ck.ok("fsync", h.sync_all());
    ck.ok("fdatasync", h.sync_data());
    // directories are not read or written as files
    ck.mkdir("d", 0o755)?;
    let d = ck.must("open dir", File::open(ck.p("d")))?;
    let mut buf = [0u8; 8];
    ck.errno("read(2) on a directory", (&d).read(&mut buf), &[EISDIR]);
    ck.ok("fsync of a directory", d.sync_all());
    // st_size and st_blocks of a regular file
    let data = vec![7u8; 12345];
    ck.put("sized", &data)?;
    let md = ck.lstat("sized")?;
    ck.eq("st_size", md.len(), 12345);
    ck.yes(
        &format!("st_blocks {} covers the data", md.blocks()),
        md.blocks() * 512 >= 12345,
    );
    ck.yes("st_blksize is set", md.blksize() > 0);
    Ok(())
}

/// One `#[test]` per case on a fresh target: `posix_tests!(setup)` where `setup()` returns
/// `(guard, root, opts)`; the guard is dropped (unmounted) after the case.
macro_rules! posix_tests {
    ($setup:path) => {
        $crate::posix::posix_tests!(@cases $setup;
            open_flags, permissions, ownership_of_new_files, chmod_rules, chown_rules,
            setid_cleared_on_write, sticky_directories, link_counts, rename_rules,
            rmdir_unlink_mkdir, unlinked_open_files, fifo_and_mknod, symlinks, truncate_rules,
            utimensat_rules, time_updates, atime_updates, name_and_path_limits, xattrs,
            readdir_entries, io_edges);
    };
    (@cases $setup:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                if !$crate::common::fuse_available() {
                    return;
                }
                let (guard, root, opts) = $setup();
                let (checks, fails) =
                    $crate::posix::run_case_counted(stringify!($case), &root, &opts);
                drop(guard);
                eprintln!("{}: {checks} checks, {} failed", stringify!($case), fails.len());
                assert!(fails.is_empty(), "{}", $crate::posix::report(&fails));
            }
        )*

        #[test]
        fn every_case_has_a_test() {
            let tested = [$(stringify!($case)),*];
            let all: Vec<&str> = $crate::posix::CASES.iter().map(|c| c.0).collect();
            assert_eq!(tested.to_vec(), all);
        }
    };
}
pub(crate) use posix_tests;
