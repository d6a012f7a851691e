//! Operations through real mounts: every operation reaches the script with Flu's argument order
//! and types (tests/fixtures/ops_recorder.lua logs each call), every value form a script may
//! return is decoded right, error forms give the right errno, missing operations behave like
//! libfuse's path API, Flu-style scripts run unchanged, and a faulty script cannot take the
//! daemon down.
mod common;

use common::{Mount, TempDir, errno, fixture, fuse_available, is_mounted, sh};
use std::collections::HashSet;
use std::ffi::{CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------------
// helpers

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Assert that `r` failed with errno `want`.
#[track_caller]
fn expect_errno<T: std::fmt::Debug>(r: std::io::Result<T>, want: i32, what: &str) {
    match r {
        Ok(v) => panic!("{what}: expected errno {want}, got Ok({v:?})"),
        Err(e) => assert_eq!(errno(&e), want, "{what}: got {e}"),
    }
}

/// Assert that a libc call returning -1 failed with errno `want`.
#[track_caller]
fn expect_libc_errno(ret: i64, want: i32, what: &str) {
    let e = last_errno();
    assert_eq!(
        ret, -1,
        "{what}: expected failure with errno {want}, got {ret}"
    );
    assert_eq!(e, want, "{what}: expected errno {want}, got {e}");
}

/// A libc call result that must succeed.
#[track_caller]
fn ok(ret: i64, what: &str) -> i64 {
    if ret < 0 {
        panic!("{what} failed: {}", std::io::Error::last_os_error());
    }
    ret
}

fn set_umask() {
    unsafe { libc::umask(0o022) };
}

fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ts(sec: u64, nsec: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(sec, nsec)
}

fn statvfs(p: &Path) -> std::io::Result<libc::statvfs> {
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(cstr(p).as_ptr(), &mut s) };
    if r == 0 {
        Ok(s)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn daemon_alive(m: &Mount) -> bool {
    let Some(pid) = m.pid() else { return false };
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // state is the field after the parenthesised command name
        Ok(s) => s
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The daemon's log record (a "flufs: ..." line and its continuation lines) containing
/// `needle`, if any.
fn log_record(log: &str, needle: &str) -> Option<String> {
    let mut records: Vec<String> = Vec::new();
    for line in log.lines() {
        if line.starts_with("flufs: ") || records.is_empty() {
            records.push(line.to_string());
        } else {
            let last = records.last_mut().unwrap();
            last.push('\n');
            last.push_str(line);
        }
    }
    records.into_iter().find(|r| r.contains(needle))
}

fn names_of(dir: &Path) -> std::io::Result<Vec<OsString>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        v.push(e?.file_name());
    }
    Ok(v)
}

/// A mount of ops_recorder.lua with its call log.
struct Rec {
    m: Mount,
    log: PathBuf,
    _logdir: TempDir,
}

impl Rec {
    fn new() -> Rec {
        set_umask();
        let logdir = TempDir::new("ops-log");
        let log = logdir.path.join("calls.log");
        let m = Mount::with_args(&fixture("ops_recorder.lua"), &[], &[log.to_str().unwrap()]);
        Rec {
            m,
            log,
            _logdir: logdir,
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.m.path(rel)
    }

    fn lines(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Number of log lines so far (a mark to search from).
    fn mark(&self) -> usize {
        self.lines().len()
    }

    /// The first line after `mark` starting with `prefix`, waiting up to 5 s for it (some
    /// requests, like release, reach the daemon after the syscall returned).
    #[track_caller]
    fn find(&self, mark: usize, prefix: &str) -> String {
        let mut found = None;
        wait_until(5, || {
            found = self
                .lines()
                .into_iter()
                .skip(mark)
                .find(|l| l.starts_with(prefix));
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no log line starting with {prefix:?} after line {mark}; log:\n{}\ndaemon stderr:\n{}",
                self.lines()[mark.min(self.lines().len())..].join("\n"),
                self.m.log()
            )
        })
    }

    /// The recorder never fails on its own: nothing may have been logged as a script failure.
    #[track_caller]
    fn no_script_failures(&self) {
        let log = self.m.log();
        assert!(
            !log.contains("failed") && !log.contains("bad value"),
            "daemon stderr: {log}"
        );
    }

    /// Assert that the exact line `line` was logged after `mark`.
    #[track_caller]
    fn expect(&self, mark: usize, line: &str) {
        let got = self.find(mark, line);
        assert_eq!(got, line);
    }
}

/// "fi#N" of the first fi argument in a log line.
#[track_caller]
fn fi_id(line: &str) -> String {
    let at = line
        .find("fi#")
        .unwrap_or_else(|| panic!("no fi in {line}"));
    line[at..]
        .chars()
        .take_while(|c| *c != '{')
        .collect::<String>()
}

/// The keys of the `flags=[...]` set of the first fi in a log line.
#[track_caller]
fn flags_of(line: &str) -> Vec<String> {
    let at = line
        .find("flags=[")
        .unwrap_or_else(|| panic!("no flags set in {line}"));
    let rest = &line[at + 7..];
    let end = rest.find(']').unwrap();
    rest[..end].split(',').map(str::to_string).collect()
}

#[track_caller]
fn assert_flags(line: &str, must: &[&str], must_not: &[&str]) {
    let f = flags_of(line);
    for k in must {
        assert!(f.iter().any(|x| x == k), "flag {k} missing in {line}");
    }
    for k in must_not {
        assert!(!f.iter().any(|x| x == k), "flag {k} unexpected in {line}");
    }
}

// ---------------------------------------------------------------------------------------------
// 1. every operation reaches the script with Flu's argument order and types

#[test]
fn recorder_init_first_destroy_after_unmount() {
    if !fuse_available() {
        return;
    }
    let mut r = Rec::new();
    // The script's init runs once the mount exists, before the kernel's INIT is answered (so
    // before any request): the mount can show before its line is written.
    wait_until(5, || !r.lines().is_empty());
    let lines = r.lines();
    assert_eq!(
        lines.first().map(String::as_str),
        Some("init()"),
        "{lines:?}"
    );
    fs::metadata(r.p("/")).unwrap();
    r.expect(0, "getattr(\"/\", {})");
    assert!(!r.lines().iter().any(|l| l.starts_with("destroy")));
    let code = r.m.unmount();
    assert_eq!(code, Some(0), "daemon stderr: {}", r.m.log());
    let lines = r.lines();
    assert_eq!(
        lines.last().map(String::as_str),
        Some("destroy()"),
        "{lines:?}"
    );
    assert_eq!(lines.iter().filter(|l| l.starts_with("init")).count(), 1);
}

#[test]
fn recorder_namespace_operations() {
    if !fuse_available() {
        return;
    }
    let r = Rec::new();

    // mknod: a fifo
    let mk = r.mark();
    ok(
        unsafe { libc::mkfifo(cstr(&r.p("fifo")).as_ptr(), 0o644) } as i64,
        "mkfifo",
    );
    r.expect(mk, "mknod(\"/fifo\", [fifo,rgrp,roth,rusr,wusr], 0)");
    let md = fs::symlink_metadata(r.p("fifo")).unwrap();
    assert!(md.file_type().is_fifo());
    assert_eq!(md.mode() & 0o7777, 0o644);

    // mkdir: the set has no type key
    let mk = r.mark();
    fs::DirBuilder::new().mode(0o750).create(r.p("d")).unwrap();
    r.expect(mk, "mkdir(\"/d\", [rgrp,rusr,wusr,xgrp,xusr])");
    let md = fs::metadata(r.p("d")).unwrap();
    assert!(md.is_dir());
    assert_eq!(md.mode() & 0o7777, 0o750);

    // rmdir of a non-empty directory: the script's ENOTEMPTY reaches the caller
    fs::write(r.p("d/x"), b"x").unwrap();
    let mk = r.mark();
    expect_errno(fs::remove_dir(r.p("d")), libc::ENOTEMPTY, "rmdir non-empty");
    r.expect(mk, "rmdir(\"/d\")");

    // unlink
    let mk = r.mark();
    fs::remove_file(r.p("d/x")).unwrap();
    r.expect(mk, "unlink(\"/d/x\")");
    expect_errno(fs::metadata(r.p("d/x")), libc::ENOENT, "stat unlinked");

    // rmdir
    let mk = r.mark();
    fs::remove_dir(r.p("d")).unwrap();
    r.expect(mk, "rmdir(\"/d\")");
    expect_errno(fs::metadata(r.p("d")), libc::ENOENT, "stat removed dir");

    // symlink (target, linkpath) and readlink (path, size)
    let mk = r.mark();
    std::os::unix::fs::symlink("some/target", r.p("s")).unwrap();
    r.expect(mk, "symlink(\"some/target\", \"/s\")");
    let mk = r.mark();
    assert_eq!(
        fs::read_link(r.p("s")).unwrap(),
        PathBuf::from("some/target")
    );
    let line = r.find(mk, "readlink(\"/s\", ");
    let size = line
        .trim_start_matches("readlink(\"/s\", ")
        .trim_end_matches(')');
    assert!(
        size.parse::<u64>().is_ok_and(|n| n > 0),
        "readlink size must be a positive integer: {line}"
    );
    assert!(
        fs::symlink_metadata(r.p("s"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // rename (old, new, flags): flags is an empty set normally
    fs::write(r.p("a"), b"content of a").unwrap();
    let mk = r.mark();
    fs::rename(r.p("a"), r.p("b")).unwrap();
    r.expect(mk, "rename(\"/a\", \"/b\", {})");
    assert_eq!(fs::read(r.p("b")).unwrap(), b"content of a");
    expect_errno(
        fs::metadata(r.p("a")),
        libc::ENOENT,
        "old name after rename",
    );

    // renameat2 RENAME_NOREPLACE
    let mk = r.mark();
    let ret = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            cstr(&r.p("b")).as_ptr(),
            libc::AT_FDCWD,
            cstr(&r.p("c")).as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    ok(ret, "renameat2(RENAME_NOREPLACE)");
    r.expect(mk, "rename(\"/b\", \"/c\", [noreplace])");
    assert_eq!(fs::read(r.p("c")).unwrap(), b"content of a");

    // renameat2 RENAME_EXCHANGE
    fs::write(r.p("e"), b"content of e").unwrap();
    let mk = r.mark();
    let ret = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            cstr(&r.p("c")).as_ptr(),
            libc::AT_FDCWD,
            cstr(&r.p("e")).as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    ok(ret, "renameat2(RENAME_EXCHANGE)");
    r.expect(mk, "rename(\"/c\", \"/e\", [exchange])");
    assert_eq!(fs::read(r.p("c")).unwrap(), b"content of e");
    assert_eq!(fs::read(r.p("e")).unwrap(), b"content of a");

    // link (oldpath, newpath): both names are one inode
    let mk = r.mark();
    fs::hard_link(r.p("c"), r.p("h")).unwrap();
    r.expect(mk, "link(\"/c\", \"/h\")");
    let (m1, m2) = (
        fs::metadata(r.p("c")).unwrap(),
        fs::metadata(r.p("h")).unwrap(),
    );
    assert_eq!(m1.ino(), m2.ino());
    assert_eq!((m1.nlink(), m2.nlink()), (2, 2));
    assert_eq!(fs::read(r.p("h")).unwrap(), b"content of e");
    r.no_script_failures();
}

#[test]
fn recorder_attribute_operations() {
    if !fuse_available() {
        return;
    }
    let r = Rec::new();
    fs::write(r.p("f"), b"0123456789").unwrap();

    // chmod: the set includes the type key
    let mk = r.mark();
    fs::set_permissions(r.p("f"), fs::Permissions::from_mode(0o640)).unwrap();
    r.expect(mk, "chmod(\"/f\", [reg,rgrp,rusr,wusr])");
    assert_eq!(fs::metadata(r.p("f")).unwrap().mode(), 0o100640);

    // chown with only a uid: gid arrives as nil; and the other way round
    let mk = r.mark();
    ok(
        unsafe { libc::chown(cstr(&r.p("f")).as_ptr(), 4242, u32::MAX) } as i64,
        "chown uid",
    );
    r.expect(mk, "chown(\"/f\", 4242, nil)");
    let mk = r.mark();
    ok(
        unsafe { libc::chown(cstr(&r.p("f")).as_ptr(), u32::MAX, 777) } as i64,
        "chown gid",
    );
    r.expect(mk, "chown(\"/f\", nil, 777)");
    let md = fs::metadata(r.p("f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (4242, 777));

    // truncate by path
    let mk = r.mark();
    ok(
        unsafe { libc::truncate(cstr(&r.p("f")).as_ptr(), 3) } as i64,
        "truncate",
    );
    r.expect(mk, "truncate(\"/f\", 3)");
    assert_eq!(fs::read(r.p("f")).unwrap(), b"012");

    // ftruncate on an open file: the same fi as the open
    let mk = r.mark();
    let file = OpenOptions::new().write(true).open(r.p("f")).unwrap();
    let open = r.find(mk, "open(\"/f\", fi#");
    file.set_len(6).unwrap();
    let ft = r.find(mk, "ftruncate(\"/f\", 6, fi#");
    assert_eq!(fi_id(&ft), fi_id(&open), "{open} / {ft}");
    assert!(
        ft.contains(",fh=table:"),
        "fi.fh set by open comes back: {ft}"
    );
    assert_eq!(file.metadata().unwrap().len(), 6);

    // utimens with specific times, nanoseconds included
    let mk = r.mark();
    file.set_times(
        fs::FileTimes::new()
            .set_accessed(ts(1_600_000_000, 123_456_789))
            .set_modified(ts(1_700_000_000, 987_654_321)),
    )
    .unwrap();
    r.expect(
        mk,
        "utimens(\"/f\", {nsec=123456789,sec=1600000000}, {nsec=987654321,sec=1700000000})",
    );
    let md = fs::metadata(r.p("f")).unwrap();
    assert_eq!((md.atime(), md.atime_nsec()), (1_600_000_000, 123_456_789));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_700_000_000, 987_654_321));
    drop(file);

    // UTIME_OMIT for atime: atime arrives as nil and stays
    let mk = r.mark();
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 5,
        },
    ];
    ok(
        unsafe { libc::utimensat(libc::AT_FDCWD, cstr(&r.p("f")).as_ptr(), times.as_ptr(), 0) }
            as i64,
        "utimensat(OMIT, t)",
    );
    r.expect(mk, "utimens(\"/f\", nil, {nsec=5,sec=1500000000})");
    let md = fs::metadata(r.p("f")).unwrap();
    assert_eq!((md.atime(), md.atime_nsec()), (1_600_000_000, 123_456_789));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_500_000_000, 5));

    // UTIME_NOW for atime, UTIME_OMIT for mtime: atime arrives as the current time
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mk = r.mark();
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    ];
    ok(
        unsafe { libc::utimensat(libc::AT_FDCWD, cstr(&r.p("f")).as_ptr(), times.as_ptr(), 0) }
            as i64,
        "utimensat(NOW, OMIT)",
    );
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let line = r.find(mk, "utimens(\"/f\", {nsec=");
    assert!(line.ends_with("}, nil)"), "{line}");
    let sec: i64 = line
        .split("sec=")
        .nth(2)
        .and_then(|s| s.split('}').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no sec in {line}"));
    assert!(
        (before..=after).contains(&sec),
        "UTIME_NOW gave {sec}, now is {before}..{after}"
    );
    let md = fs::metadata(r.p("f")).unwrap();
    assert_eq!(md.atime(), sec);
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_500_000_000, 5));
    r.no_script_failures();
}

#[test]
fn recorder_file_io_and_open_flags() {
    if !fuse_available() {
        return;
    }
    let r = Rec::new();

    // create (path, modeset, fi), then fgetattr with the same fi
    let mk = r.mark();
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(r.p("new"))
        .unwrap();
    let create = r.find(mk, "create(\"/new\", [reg,rusr,wusr], fi#");
    assert_flags(
        &create,
        &["creat", "excl", "wronly", "O_CREAT", "O_EXCL", "O_WRONLY"],
        &["rdonly", "rdwr", "O_RDONLY"],
    );
    let fid = fi_id(&create);
    let fget = r.find(mk, "fgetattr(\"/new\", {}, fi#");
    assert_eq!(fi_id(&fget), fid);
    assert_eq!(fs::metadata(r.p("new")).unwrap().mode(), 0o100600);

    // write (path, data, offset, fi) with the fh the script stored
    let mk = r.mark();
    f.write_all(b"hello").unwrap();
    let w = r.find(mk, "write(\"/new\", \"hello\", 0, fi#");
    assert_eq!(fi_id(&w), fid);
    assert!(w.contains(",fh=table:"), "{w}");

    // fsync (path, datasync, fi)
    let mk = r.mark();
    f.sync_all().unwrap();
    assert_eq!(fi_id(&r.find(mk, "fsync(\"/new\", false, fi#")), fid);
    let mk = r.mark();
    f.sync_data().unwrap();
    assert_eq!(fi_id(&r.find(mk, "fsync(\"/new\", true, fi#")), fid);

    // close: flush then release, same fi
    let mk = r.mark();
    drop(f);
    assert_eq!(fi_id(&r.find(mk, "flush(\"/new\", fi#")), fid);
    assert_eq!(fi_id(&r.find(mk, "release(\"/new\", fi#")), fid);

    // read-only open and read (path, size, offset, fi)
    let mk = r.mark();
    let mut f = File::open(r.p("new")).unwrap();
    let open = r.find(mk, "open(\"/new\", fi#");
    assert_flags(
        &open,
        &["rdonly", "O_RDONLY"],
        &["wronly", "rdwr", "O_WRONLY", "O_RDWR", "creat", "excl"],
    );
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "hello");
    let rd = r.find(mk, "read(\"/new\", ");
    let rest = rd.trim_start_matches("read(\"/new\", ");
    let mut parts = rest.splitn(3, ", ");
    let size = parts.next().unwrap();
    let offset = parts.next().unwrap();
    assert!(size.parse::<u32>().is_ok_and(|n| n >= 5), "size: {rd}");
    assert_eq!(offset, "0", "{rd}");
    assert_eq!(fi_id(&rd), fi_id(&open));
    assert!(rd.contains(",fh=table:"), "{rd}");
    drop(f);
    r.find(mk, "release(\"/new\", ");

    // O_WRONLY | O_APPEND
    let mk = r.mark();
    let mut f = OpenOptions::new().append(true).open(r.p("new")).unwrap();
    let open = r.find(mk, "open(\"/new\", fi#");
    assert_flags(
        &open,
        &["wronly", "append", "O_WRONLY", "O_APPEND"],
        &["rdonly", "rdwr", "O_RDONLY"],
    );
    f.write_all(b" world").unwrap();
    let w = r.find(mk, "write(\"/new\", \" world\", 5, fi#");
    assert_eq!(fi_id(&w), fi_id(&open));
    drop(f);

    // O_RDWR
    let mk = r.mark();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(r.p("new"))
        .unwrap();
    let open = r.find(mk, "open(\"/new\", fi#");
    assert_flags(&open, &["rdwr", "O_RDWR"], &["rdonly", "wronly", "append"]);
    drop(f);

    // each open gets its own fi table
    let lines = r.lines();
    let ids: HashSet<String> = lines
        .iter()
        .filter(|l| l.starts_with("open(\"/new\"") || l.starts_with("create("))
        .map(|l| fi_id(l))
        .collect();
    assert_eq!(ids.len(), 4, "{lines:?}");
    assert_eq!(fs::read(r.p("new")).unwrap(), b"hello world");
    r.no_script_failures();
}

#[test]
fn recorder_open_file_gets_its_path_after_renames() {
    if !fuse_available() {
        return;
    }
    let r = Rec::new();
    fs::create_dir(r.p("d")).unwrap();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(r.p("d/f"))
        .unwrap();
    let mk = r.mark();
    f.write_all(b"one").unwrap();
    r.find(mk, "write(\"/d/f\", \"one\", 0, fi#");
    // The file renamed while open: its reads and writes name the new path.
    fs::rename(r.p("d/f"), r.p("d/g")).unwrap();
    let mk = r.mark();
    f.write_all(b"two").unwrap();
    r.find(mk, "write(\"/d/g\", \"two\", 3, fi#");
    // Its directory renamed: the path changes without the file being named.
    fs::rename(r.p("d"), r.p("e")).unwrap();
    let mk = r.mark();
    f.write_all(b"three").unwrap();
    r.find(mk, "write(\"/e/g\", \"three\", 6, fi#");
    let mut back = String::new();
    f.seek(std::io::SeekFrom::Start(0)).unwrap();
    f.read_to_string(&mut back).unwrap();
    assert_eq!(back, "onetwothree");
    let mk = r.mark();
    drop(f);
    r.find(mk, "release(\"/e/g\", fi#");
    r.no_script_failures();
}

#[test]
fn recorder_xattr_operations() {
    if !fuse_available() {
        return;
    }
    let r = Rec::new();
    fs::write(r.p("f"), b"x").unwrap();
    let p = cstr(&r.p("f"));
    let name = c"user.k";
    let set = |v: &[u8], flags: i32| unsafe {
        libc::setxattr(p.as_ptr(), name.as_ptr(), v.as_ptr().cast(), v.len(), flags) as i64
    };

    let mk = r.mark();
    ok(set(b"v1", libc::XATTR_CREATE), "setxattr create");
    r.expect(mk, "setxattr(\"/f\", \"user.k\", \"v1\", [create])");
    let mk = r.mark();
    expect_libc_errno(
        set(b"v1", libc::XATTR_CREATE),
        libc::EEXIST,
        "setxattr create again",
    );
    r.expect(mk, "setxattr(\"/f\", \"user.k\", \"v1\", [create])");
    let mk = r.mark();
    ok(set(b"v2", libc::XATTR_REPLACE), "setxattr replace");
    r.expect(mk, "setxattr(\"/f\", \"user.k\", \"v2\", [replace])");
    let mk = r.mark();
    ok(set(b"v3", 0), "setxattr");
    r.expect(mk, "setxattr(\"/f\", \"user.k\", \"v3\", {})");

    let mk = r.mark();
    let mut buf = [0u8; 64];
    let n = ok(
        unsafe {
            libc::getxattr(
                p.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        } as i64,
        "getxattr",
    );
    assert_eq!(&buf[..n as usize], b"v3");
    r.expect(mk, "getxattr(\"/f\", \"user.k\")");

    let mk = r.mark();
    let n = ok(
        unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) } as i64,
        "listxattr",
    );
    assert_eq!(&buf[..n as usize], b"user.k\0");
    r.expect(mk, "listxattr(\"/f\")");

    let mk = r.mark();
    ok(
        unsafe { libc::removexattr(p.as_ptr(), name.as_ptr()) } as i64,
        "removexattr",
    );
    r.expect(mk, "removexattr(\"/f\", \"user.k\")");
    let r2 = unsafe {
        libc::getxattr(
            p.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    } as i64;
    expect_libc_errno(r2, libc::ENODATA, "getxattr after remove");
    r.no_script_failures();
}

#[test]
fn recorder_directories_statfs_access() {
    if !fuse_available() {
        return;
    }
    let r = Rec::new();
    fs::create_dir(r.p("d")).unwrap();
    fs::write(r.p("d/one"), b"1").unwrap();
    fs::write(r.p("d/two"), b"2").unwrap();

    // opendir / readdir (path, filler, fi, offset) / releasedir, one fi
    let mk = r.mark();
    let mut names = names_of(&r.p("d")).unwrap();
    names.sort();
    assert_eq!(names, ["one", "two"]);
    let od = r.find(mk, "opendir(\"/d\", fi#");
    assert_flags(&od, &["directory", "rdonly", "O_DIRECTORY"], &["wronly"]);
    let rd = r.find(mk, "readdir(\"/d\", function, fi#");
    assert!(rd.ends_with(", 0)"), "offset 0 first: {rd}");
    assert_eq!(fi_id(&rd), fi_id(&od));
    let rl = r.find(mk, "releasedir(\"/d\", fi#");
    assert_eq!(fi_id(&rl), fi_id(&od));

    // fsyncdir (path, datasync, fi)
    let mk = r.mark();
    File::open(r.p("d")).unwrap().sync_all().unwrap();
    r.find(mk, "fsyncdir(\"/d\", false, fi#");

    // statfs (path)
    let mk = r.mark();
    let s = statvfs(&r.m.mnt).unwrap();
    r.expect(mk, "statfs(\"/\")");
    assert_eq!(s.f_bsize, 4096);
    assert_eq!(s.f_frsize, 4096);
    assert_eq!(s.f_blocks, 1000);
    assert_eq!(s.f_bfree, 600);
    assert_eq!(s.f_bavail, 500);
    assert_eq!(s.f_files, 100);
    assert_eq!(s.f_ffree, 90);
    assert_eq!(s.f_namemax, 200);

    // access (path, mask)
    fs::write(r.p("noaccess"), b"").unwrap();
    let mk = r.mark();
    let ret = unsafe { libc::access(cstr(&r.p("d/one")).as_ptr(), libc::R_OK | libc::X_OK) };
    assert_eq!(ret, 0, "access: {}", std::io::Error::last_os_error());
    r.expect(mk, "access(\"/d/one\", 5)");
    let mk = r.mark();
    let ret = unsafe { libc::access(cstr(&r.p("noaccess")).as_ptr(), libc::W_OK) };
    expect_libc_errno(ret as i64, libc::EACCES, "access denied by the script");
    r.expect(mk, "access(\"/noaccess\", 2)");
    r.no_script_failures();
}

#[test]
fn recorder_fallocate_lseek_copy_file_range() {
    if !fuse_available() {
        return;
    }
    let r = Rec::new();
    fs::write(r.p("f"), b"0123456789").unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(r.p("f"))
        .unwrap();
    let fd = f.as_raw_fd();

    // fallocate (path, mode, offset, length, fi)
    let mk = r.mark();
    ok(
        unsafe { libc::fallocate(fd, 0, 0, 4096) } as i64,
        "fallocate",
    );
    let line = r.find(mk, "fallocate(\"/f\", 0, 0, 4096, fi#");
    assert!(line.contains(",fh=table:"), "{line}");
    assert_eq!(f.metadata().unwrap().len(), 4096);
    let mk = r.mark();
    ok(
        unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 8192, 100) } as i64,
        "fallocate keep size",
    );
    r.find(mk, "fallocate(\"/f\", 1, 8192, 100, fi#");
    assert_eq!(f.metadata().unwrap().len(), 4096);

    // lseek (path, offset, whence, fi) -> offset
    let mk = r.mark();
    assert_eq!(unsafe { libc::lseek(fd, 3, libc::SEEK_DATA) }, 3);
    r.find(mk, "lseek(\"/f\", 3, \"data\", fi#");
    let mk = r.mark();
    assert_eq!(unsafe { libc::lseek(fd, 3, libc::SEEK_HOLE) }, 4096);
    r.find(mk, "lseek(\"/f\", 3, \"hole\", fi#");
    drop(f);

    // copy_file_range (path_in, fi_in, off_in, path_out, fi_out, off_out, len, flags) -> count
    fs::write(r.p("src"), b"abcdefghij").unwrap();
    fs::write(r.p("dst"), b"").unwrap();
    let mk = r.mark();
    let fin = File::open(r.p("src")).unwrap();
    let in_open = r.find(mk, "open(\"/src\", fi#");
    let fout = OpenOptions::new().write(true).open(r.p("dst")).unwrap();
    let out_open = r.find(mk, "open(\"/dst\", fi#");
    let mut off_in: i64 = 2;
    let mut off_out: i64 = 0;
    let n = unsafe {
        libc::copy_file_range(
            fin.as_raw_fd(),
            &mut off_in,
            fout.as_raw_fd(),
            &mut off_out,
            5,
            0,
        )
    };
    assert_eq!(n, 5, "copy_file_range: {}", std::io::Error::last_os_error());
    assert_eq!((off_in, off_out), (7, 5));
    let line = r.find(mk, "copy_file_range(\"/src\", fi#");
    let want = format!("copy_file_range(\"/src\", {}{{", fi_id(&in_open));
    assert!(line.starts_with(&want), "{line}");
    assert!(
        line.contains(&format!(", 2, \"/dst\", {}{{", fi_id(&out_open))),
        "{line}"
    );
    assert!(line.ends_with(", 0, 5, 0)"), "{line}");
    drop((fin, fout));
    assert_eq!(fs::read(r.p("dst")).unwrap(), b"cdefg");
    r.no_script_failures();
}

fn flock(typ: i32, start: i64, len: i64) -> libc::flock {
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = typ as i16;
    l.l_whence = libc::SEEK_SET as i16;
    l.l_start = start;
    l.l_len = len;
    l
}

#[test]
fn recorder_posix_locks() {
    if !fuse_available() {
        return;
    }
    let r = Rec::new();
    fs::write(r.p("f"), b"0123456789").unwrap();
    let mk = r.mark();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(r.p("f"))
        .unwrap();
    let fid = fi_id(&r.find(mk, "open(\"/f\", fi#"));
    let fd = f.as_raw_fd();
    let pid = std::process::id();

    // setlk (path, fi, cmd, lk)
    let mk = r.mark();
    let l = flock(libc::F_WRLCK, 0, 10);
    ok(
        unsafe { libc::fcntl(fd, libc::F_SETLK, &l) } as i64,
        "F_SETLK",
    );
    let line = r.find(mk, "lock(\"/f\", fi#");
    assert_eq!(fi_id(&line), fid);
    assert!(
        line.ends_with(&format!(
            ", \"setlk\", {{len=10,pid={pid},start=0,type=\"wrlck\"}})"
        )),
        "{line}"
    );

    // the script refuses: its EAGAIN reaches the caller
    let mk = r.mark();
    let l = flock(libc::F_RDLCK, 50, 5);
    let ret = unsafe { libc::fcntl(fd, libc::F_SETLK, &l) };
    expect_libc_errno(ret as i64, libc::EAGAIN, "F_SETLK refused by the script");
    let line = r.find(mk, "lock(\"/f\", fi#");
    assert!(
        line.ends_with(&format!(
            ", \"setlk\", {{len=5,pid={pid},start=50,type=\"rdlck\"}})"
        )),
        "{line}"
    );

    // setlkw
    let mk = r.mark();
    let l = flock(libc::F_WRLCK, 20, 0);
    ok(
        unsafe { libc::fcntl(fd, libc::F_SETLKW, &l) } as i64,
        "F_SETLKW",
    );
    let line = r.find(mk, "lock(\"/f\", fi#");
    assert!(
        line.ends_with(&format!(
            ", \"setlkw\", {{len=0,pid={pid},start=20,type=\"wrlck\"}})"
        )),
        "{line}"
    );

    // getlk: the script's answer reaches the caller (the kernel sends pid 0 with F_GETLK, as
    // it does to libfuse)
    let mk = r.mark();
    let mut l = flock(libc::F_RDLCK, 0, 5);
    ok(
        unsafe { libc::fcntl(fd, libc::F_GETLK, &mut l) } as i64,
        "F_GETLK",
    );
    let line = r.find(mk, "lock(\"/f\", fi#");
    assert_eq!(fi_id(&line), fid);
    assert!(
        line.ends_with(", \"getlk\", {len=5,pid=0,start=0,type=\"rdlck\"})"),
        "{line}"
    );
    assert_eq!(l.l_type, libc::F_WRLCK as i16);
    assert_eq!((l.l_start, l.l_len), (100, 10));
    assert_eq!(l.l_pid, 1);

    // unlock
    let mk = r.mark();
    let l = flock(libc::F_UNLCK, 0, 10);
    ok(
        unsafe { libc::fcntl(fd, libc::F_SETLK, &l) } as i64,
        "F_SETLK unlck",
    );
    let line = r.find(mk, "lock(\"/f\", fi#");
    assert!(line.contains("type=\"unlck\""), "{line}");
    r.no_script_failures();
}

// ---------------------------------------------------------------------------------------------
// 2. value forms

fn values() -> Mount {
    Mount::new(&fixture("ops_values.lua"), &[])
}

#[test]
fn getattr_mode_forms_give_the_right_st_mode() {
    if !fuse_available() {
        return;
    }
    let m = values();
    let mode = |p: &str| {
        fs::symlink_metadata(m.path(p))
            .unwrap_or_else(|e| panic!("lstat {p}: {e}\n{}", m.log()))
            .mode()
    };
    assert_eq!(mode("m_int"), 0o100640, "integer mode");
    assert_eq!(mode("m_set"), 0o104540, "mode set");
    assert_eq!(mode("m_file"), 0o100660, "'file'");
    assert_eq!(mode("m_dir"), 0o040770, "'directory'");
    assert_eq!(mode("m_link"), 0o120660, "'link'");
    assert_eq!(mode("m_sock"), 0o140660, "'socket'");
    assert_eq!(mode("m_fifo"), 0o010660, "'named pipe'");
    assert_eq!(mode("m_chr"), 0o020660, "'char device'");
    assert_eq!(mode("m_blk"), 0o060660, "'block device'");
    let chr = fs::symlink_metadata(m.path("m_chr")).unwrap();
    assert_eq!((libc::major(chr.rdev()), libc::minor(chr.rdev())), (1, 3));
    let blk = fs::symlink_metadata(m.path("m_blk")).unwrap();
    assert_eq!((libc::major(blk.rdev()), libc::minor(blk.rdev())), (8, 1));
    assert_eq!(
        fs::read_link(m.path("m_link")).unwrap(),
        PathBuf::from("/tgt")
    );
}

#[test]
fn getattr_time_forms_keep_nanoseconds() {
    if !fuse_available() {
        return;
    }
    let m = values();
    let t = |p: &str| {
        let md = fs::metadata(m.path(p)).unwrap_or_else(|e| panic!("stat {p}: {e}\n{}", m.log()));
        (
            (md.atime(), md.atime_nsec()),
            (md.mtime(), md.mtime_nsec()),
            (md.ctime(), md.ctime_nsec()),
        )
    };
    assert_eq!(
        t("t_int"),
        ((1000000001, 0), (1000000002, 0), (1000000003, 0))
    );
    assert_eq!(
        t("t_float"),
        (
            (1600000000, 250_000_000),
            (1700000000, 500_000_000),
            (1500000000, 750_000_000)
        )
    );
    assert_eq!(
        t("t_table"),
        (
            (1600000001, 1),
            (1700000001, 123_456_789),
            (1500000001, 999_999_999)
        )
    );
}

#[test]
fn getattr_python_fuse_names_filled_st_and_defaults() {
    if !fuse_available() {
        return;
    }
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let m = values();
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    let py = fs::metadata(m.path("py")).unwrap();
    assert_eq!(py.mode(), 0o100604);
    assert_eq!(py.size(), 42);
    assert_eq!(py.nlink(), 3);
    assert_eq!((py.uid(), py.gid()), (1001, 1002));
    assert_eq!(
        (py.atime(), py.mtime(), py.ctime()),
        (1111111111, 1222222222, 1333333333)
    );

    // getattr that fills the passed st and returns nothing
    let filled = fs::metadata(m.path("filled")).unwrap();
    assert_eq!(filled.mode(), 0o100660);
    assert_eq!(filled.size(), 7);
    assert_eq!(filled.mtime(), 1234567890);
    assert_eq!(fs::read(m.path("filled")).unwrap(), b"filled\n");

    // defaults: nlink 1 (2 for dirs), blocks from size, mounting user, mount time
    let d = fs::metadata(m.path("defaults")).unwrap();
    assert_eq!(d.nlink(), 1);
    assert_eq!(d.blocks(), 2, "ceil(1000/512)");
    assert_eq!(d.uid(), unsafe { libc::getuid() });
    assert_eq!(d.gid(), unsafe { libc::getgid() });
    for (what, t) in [
        ("atime", d.atime()),
        ("mtime", d.mtime()),
        ("ctime", d.ctime()),
    ] {
        assert!(
            (before..=after).contains(&t),
            "{what} {t} should be the mount time ({before}..{after})"
        );
    }
    assert_eq!(fs::metadata(m.path("defaults_dir")).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(m.path("blocks_given")).unwrap().blocks(), 7);
}

#[test]
fn statfs_flu_names_and_f_aliases() {
    if !fuse_available() {
        return;
    }
    let m = values();
    let s = statvfs(&m.mnt).unwrap_or_else(|e| panic!("statvfs: {e}\n{}", m.log()));
    assert_eq!(
        (s.f_bsize, s.f_frsize, s.f_blocks, s.f_bfree, s.f_bavail),
        (4096, 2048, 1000, 600, 500)
    );
    assert_eq!((s.f_files, s.f_ffree, s.f_namemax), (300, 200, 128));
    // `stat -f` sees the same
    let (code, out, err) = sh(&format!(
        "stat -f -c '%S %b %f %a %c %d %l' '{}'",
        m.mnt.display()
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "2048 1000 600 500 300 200 128");

    let s = statvfs(&m.path("alias")).unwrap_or_else(|e| panic!("statvfs alias: {e}\n{}", m.log()));
    assert_eq!(
        (s.f_bsize, s.f_frsize, s.f_blocks, s.f_bfree, s.f_bavail),
        (8192, 1024, 77, 66, 55)
    );
    assert_eq!((s.f_files, s.f_ffree, s.f_namemax), (44, 33, 100));
}

#[test]
fn fi_fh_table_comes_back_in_read_and_release() {
    if !fuse_available() {
        return;
    }
    let m = values();
    let first = fs::read_to_string(m.path("fh")).unwrap();
    assert!(
        first.starts_with("fh=table serial="),
        "{first:?}\n{}",
        m.log()
    );
    let serial = first.trim_end().rsplit('=').next().unwrap().to_string();
    // release saw the same table
    let want = format!("/fh table {serial}\n");
    let mut released = String::new();
    let seen = wait_until(5, || {
        released = fs::read_to_string(m.path("released")).unwrap_or_default();
        released.contains(&want)
    });
    assert!(seen, "release did not get the fh table: {released:?}");
    // a second open gets a new table
    let second = fs::read_to_string(m.path("fh")).unwrap();
    assert_ne!(first, second);
}

#[test]
fn fi_direct_io_and_keep_cache_set_by_open() {
    if !fuse_available() {
        return;
    }
    let m = values();
    // size 0 in getattr: only direct_io lets the read through
    assert_eq!(
        fs::read_to_string(m.path("dio")).unwrap(),
        "direct io content\n"
    );
    assert_eq!(fs::read_to_string(m.path("nodio")).unwrap(), "");

    // keep_cache: the second open still sees the cached first content
    assert_eq!(fs::read_to_string(m.path("kc")).unwrap(), "gen 1\n");
    assert_eq!(fs::read_to_string(m.path("kc")).unwrap(), "gen 1\n");
    assert_eq!(fs::read_to_string(m.path("nokc")).unwrap(), "gen 1\n");
    assert_eq!(fs::read_to_string(m.path("nokc")).unwrap(), "gen 2\n");
}

#[test]
fn readdir_filler_stat_tables_give_entry_types() {
    if !fuse_available() {
        return;
    }
    let m = values();
    let mut kinds: Vec<(String, &str)> = fs::read_dir(m.path("stdir"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            let k = if t.is_dir() {
                "dir"
            } else if t.is_symlink() {
                "link"
            } else if t.is_fifo() {
                "fifo"
            } else if t.is_file() {
                "file"
            } else {
                "other"
            };
            (e.file_name().to_string_lossy().into_owned(), k)
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("lnk".to_string(), "link"),
            ("pipe".to_string(), "fifo"),
            ("plain".to_string(), "file"),
            ("sub".to_string(), "dir"),
        ]
    );
}

#[test]
fn modes_and_open_flags_as_numbers_when_the_script_asks() {
    if !fuse_available() {
        return;
    }
    set_umask();
    let m = Mount::new(&fixture("ops_numbers.lua"), &[]);
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(m.path("a"))
        .unwrap_or_else(|e| panic!("create: {e}\n{}", m.log()));
    drop(f);
    fs::DirBuilder::new()
        .mode(0o750)
        .create(m.path("d"))
        .unwrap();
    fs::set_permissions(m.path("a"), fs::Permissions::from_mode(0o600)).unwrap();
    drop(OpenOptions::new().append(true).open(m.path("a")).unwrap());
    let seen = fs::read_to_string(m.path("seen")).unwrap();
    let lines: Vec<Vec<&str>> = seen.lines().map(|l| l.split(' ').collect()).collect();
    let line = |op: &str| {
        lines
            .iter()
            .find(|l| l[0] == op)
            .unwrap_or_else(|| panic!("no {op} in {seen}"))
            .clone()
    };
    let flags = |l: &[&str]| -> i32 {
        assert_eq!(l[l.len() - 2], "integer", "fi.flags is an integer: {seen}");
        l[l.len() - 1].parse().unwrap()
    };
    let create = line("create");
    assert_eq!(&create[1..3], ["integer", "33184"], "0o100640: {seen}");
    let cf = flags(&create);
    assert_eq!(cf & libc::O_ACCMODE, libc::O_WRONLY, "{seen}");
    assert_ne!(cf & libc::O_CREAT, 0, "{seen}");
    assert_ne!(cf & libc::O_EXCL, 0, "{seen}");
    assert_eq!(&line("mkdir")[1..3], ["integer", "488"], "0o750: {seen}");
    assert_eq!(
        &line("chmod")[1..3],
        ["integer", "33152"],
        "0o100600: {seen}"
    );
    let open = line("open");
    assert_eq!(open[1], "-");
    let of = flags(&open);
    assert_eq!(of & libc::O_ACCMODE, libc::O_WRONLY, "{seen}");
    assert_ne!(of & libc::O_APPEND, 0, "{seen}");
}

#[test]
fn readdir_filler_takes_a_table_of_entries() {
    if !fuse_available() {
        return;
    }
    let m = values();
    // Twice: READDIRPLUS (attributes from the tables) on the first listing, plain READDIR
    // (types from the tables, or from the kernel's entries) on the second.
    for pass in 0..2 {
        let mut kinds: Vec<(String, bool, bool, bool, bool)> = fs::read_dir(m.path("bulk"))
            .unwrap_or_else(|e| panic!("read_dir: {e}\n{}", m.log()))
            .map(|e| {
                let e = e.unwrap();
                let t = e.file_type().unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                (name, t.is_file(), t.is_dir(), t.is_fifo(), t.is_symlink())
            })
            .collect();
        kinds.sort();
        let want = [
            ("after", true, false, false, false),
            ("nostat", false, false, false, true),
            ("pipe", false, false, true, false),
            ("plain", true, false, false, false),
            ("sub", false, true, false, false),
        ]
        .map(|(n, f, d, p, l)| (n.to_string(), f, d, p, l));
        assert_eq!(kinds, want, "pass {pass}");
    }
    assert_eq!(fs::metadata(m.path("bulk/plain")).unwrap().len(), 3);
    assert_eq!(
        fs::symlink_metadata(m.path("bulk/nostat")).unwrap().len(),
        1,
        "an entry given as true gets getattr's attributes"
    );
}

/// ops_readdirplus.lua mounted, with the log of the calls it saw (in a directory of its own,
/// removed after the unmount: `m` is dropped first).
struct ListingMount {
    m: Mount,
    log: PathBuf,
    _dir: TempDir,
}

impl ListingMount {
    /// Mount options `opts`, `fs.readdirplus = mode`, and `fs.reuse_listings` when `reuse`.
    fn new(opts: &str, mode: &str, reuse: bool) -> ListingMount {
        let dir = TempDir::new("listing");
        let log = dir.path.join("calls");
        let m = Mount::with_args(
            &fixture("ops_readdirplus.lua"),
            &["-o", opts],
            &[
                mode,
                log.to_str().unwrap(),
                if reuse { "reuse" } else { "" },
            ],
        );
        ListingMount { m, log, _dir: dir }
    }

    /// The calls logged whose line starts with `what`.
    fn calls(&self, what: &str) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(what))
            .count()
    }
}

/// Mount ops_readdirplus.lua (`fs.readdirplus = mode`, mount options `opts`), list /d, run
/// `between`, then lstat every entry (checking the size its stat table gives). Returns how
/// many getattr calls the script saw on entries of /d, and the mount.
fn statted_after_listing(
    mode: &str,
    opts: &str,
    between: impl FnOnce(&Mount),
) -> (usize, ListingMount) {
    let lm = ListingMount::new(opts, mode, false);
    let m = &lm.m;
    let mut names = names_of(&m.path("d")).unwrap();
    names.sort();
    assert_eq!(names.len(), 1000, "{mode} {opts}");
    between(m);
    for (i, n) in names.iter().enumerate() {
        let md = fs::symlink_metadata(m.path("d").join(n)).unwrap();
        assert_eq!(md.len(), i as u64 + 1, "{mode} {opts}: size of {n:?}");
        assert!(md.is_file());
    }
    (lm.calls("getattr "), lm)
}

/// A request that may change attributes (the fixture's chmod does nothing else).
fn chmod_d(m: &Mount) {
    fs::set_permissions(m.path("d"), fs::Permissions::from_mode(0o755)).unwrap();
}

/// `fs.readdirplus`: "always" lists every chunk with attributes (no getattr per entry
/// afterwards), "never" none (a getattr per entry looked up), "auto" (the default, and what a
/// bad value falls back to, with a warning) lets the kernel decide: the first chunk only here.
#[test]
fn readdirplus_setting_decides_which_listings_carry_attributes() {
    if !fuse_available() {
        return;
    }
    let mut counts = Vec::new();
    for mode in ["always", "never", "auto", "sometimes"] {
        // The chmod: flufs no longer answers lookups from the listing (see the next test),
        // so what the kernel got with it decides.
        let (calls, lm) = statted_after_listing(mode, "entry_timeout=60,attr_timeout=60", chmod_d);
        let m = &lm.m;
        let warned = m
            .log()
            .contains("'readdirplus' is \"sometimes\", not \"auto\"");
        assert_eq!(warned, mode == "sometimes", "{mode}: {}", m.log());
        counts.push(calls);
    }
    let [always, never, auto, bad] = counts[..] else {
        unreachable!()
    };
    assert_eq!(always, 0, "always: every entry came with its attributes");
    assert_eq!(never, 1000, "never: one lookup per entry");
    assert!(
        auto > 0 && auto < 1000,
        "auto: the first chunk only ({auto})"
    );
    assert_eq!(bad, auto, "a bad value is auto");
}

/// A directory listed whole and then statted entry by entry: the LOOKUPs are answered from
/// the stat tables readdir gave, without a getattr call, until a request that may change
/// attributes comes in or the attribute time-out passes; with attr_timeout=0, never.
#[test]
fn lookups_after_a_listing_take_the_attributes_readdir_gave() {
    if !fuse_available() {
        return;
    }
    // (mount options, change between listing and stats, getattr calls expected: none, or
    // one per entry but those of the first chunk, which came as READDIRPLUS)
    type Case = (&'static str, bool, fn(usize) -> bool);
    let cases: [Case; 3] = [
        ("entry_timeout=60,attr_timeout=60", false, |n| n == 0),
        ("entry_timeout=60,attr_timeout=60", true, |n| {
            n > 0 && n < 1000
        }),
        ("entry_timeout=60,attr_timeout=0", false, |n| {
            n > 0 && n <= 1000
        }),
    ];
    for (opts, change, want) in cases {
        let (calls, lm) = statted_after_listing("auto", opts, |m| {
            if change {
                chmod_d(m)
            }
        });
        let m = &lm.m;
        assert!(
            want(calls),
            "{opts}, change {change}: {calls} getattr calls"
        );
        // A name not in the listing still gets getattr's answer.
        assert_eq!(
            fs::symlink_metadata(m.path("d/nothere"))
                .map_err(|e| errno(&e))
                .err(),
            Some(libc::ENOENT)
        );
    }
}

/// `fs.reuse_listings`: a new open of a directory is served the last listing without a
/// readdir call while that listing is good (no request that may change attributes since, and
/// within the attribute time-out); without the setting, or with attr_timeout=0, every listing
/// calls readdir.
#[test]
fn reuse_listings_serves_a_new_open_from_the_last_listing_until_a_change() {
    if !fuse_available() {
        return;
    }
    // (mount options, fs.reuse_listings, readdir calls after each of the four listings; a
    // chmod comes between the second and the third)
    let cases = [
        ("entry_timeout=60,attr_timeout=60", true, [1, 1, 2, 2]),
        ("entry_timeout=60,attr_timeout=60", false, [1, 2, 3, 4]),
        ("entry_timeout=60,attr_timeout=0", true, [1, 2, 3, 4]),
    ];
    for (opts, reuse, want) in cases {
        let lm = ListingMount::new(opts, "auto", reuse);
        let m = &lm.m;
        let mut first: Option<Vec<OsString>> = None;
        let mut got = [0; 4];
        for (i, calls) in got.iter_mut().enumerate() {
            if i == 2 {
                chmod_d(m);
            }
            let mut names = names_of(&m.path("d")).unwrap();
            names.sort();
            assert_eq!(names.len(), 1000, "{opts} reuse {reuse}: listing {i}");
            match &first {
                None => first = Some(names),
                Some(f) => assert!(*f == names, "{opts} reuse {reuse}: listing {i} differs"),
            }
            *calls = lm.calls("readdir ");
        }
        assert_eq!(
            got,
            want,
            "{opts} reuse {reuse}: readdir calls\n{}",
            m.log()
        );
    }
}

/// A script whose stat tables carry no `ino` (node ids are flufs's own, and a forgotten
/// name gets a new one when looked up again), with `fs.reuse_listings`: a listing's d_ino is
/// the name's st_ino when the kernel holds the name, and FUSE's unknown inode number
/// (0xffffffff, as libfuse's path API sends without `use_ino`) when it does not; never a
/// number the name had before the kernel forgot it, also when the listing is served again.
#[test]
fn reused_listings_give_current_inode_numbers_after_the_kernel_forgets() {
    use std::os::unix::fs::DirEntryExt;
    const UNKNOWN: u64 = 0xffff_ffff;
    if !fuse_available() {
        return;
    }
    let lm = ListingMount::new("entry_timeout=60,attr_timeout=60", "never", true);
    let m = &lm.m;
    // `held(name)`: the kernel holds the name when the listing is read.
    let check = |when: &str, held: &dyn Fn(&str) -> bool| {
        let entries: Vec<fs::DirEntry> = fs::read_dir(m.path("d"))
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        assert_eq!(entries.len(), 1000, "{when}");
        for e in entries {
            let name = e.file_name().into_string().unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            if held(&name) {
                assert_eq!(e.ino(), md.ino(), "{when}: d_ino of {name}");
            } else {
                assert_eq!(e.ino(), UNKNOWN, "{when}: d_ino of {name}");
            }
        }
    };
    check("first listing", &|_| false);
    check("listed again", &|_| true);
    // /d stays open (the kernel keeps its node): only the names in it are forgotten.
    let held_dir = File::open(m.path("d")).unwrap();
    if !common::drop_kernel_caches_for("dropping the kernel's caches") {
        return;
    }
    // Some names looked up anew (new node ids) before the listing is served again.
    let again = |name: &str| name[4..].parse::<u32>().unwrap() % 7 == 0;
    for i in (7..=1000).step_by(7) {
        fs::symlink_metadata(m.path(&format!("d/file{i:04}"))).unwrap();
    }
    check("after the kernel forgot", &again);
    drop(held_dir);
    assert_eq!(
        lm.calls("readdir "),
        1,
        "the listings after the first were served again\n{}",
        m.log()
    );
}

#[test]
fn readdir_offset_mode_lists_5000_entries_in_order() {
    if !fuse_available() {
        return;
    }
    let m = values();
    let got: Vec<String> = names_of(&m.path("big"))
        .unwrap_or_else(|e| panic!("read_dir: {e}\n{}", m.log()))
        .into_iter()
        .map(|n| n.into_string().unwrap())
        .collect();
    let want: Vec<String> = (1..=5000).map(|i| format!("e{i:05}")).collect();
    assert_eq!(got.len(), want.len(), "entry count");
    assert!(got == want, "entries out of order or wrong");
    // it took several readdir calls and the filler said "full" at least once
    let stats = fs::read_to_string(m.path("bigstats")).unwrap();
    let nums: Vec<u64> = stats
        .trim()
        .split(' ')
        .map(|kv| kv.split('=').nth(1).unwrap().parse().unwrap())
        .collect();
    let (calls, full) = (nums[0], nums[1]);
    assert!(full >= 1, "filler never returned false: {stats}");
    assert!(calls > full, "{stats}");
    // `ls -f` adds nothing and loses nothing (. and .. come from the script)
    let (code, out, _) = sh(&format!("ls -f '{}' | wc -l", m.path("big").display()));
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "5002");
}

// ---------------------------------------------------------------------------------------------
// 3. error forms

fn errors() -> Mount {
    Mount::new(&fixture("ops_errors.lua"), &[])
}

#[track_caller]
fn still_serving(m: &Mount) {
    assert_eq!(
        fs::read_to_string(m.path("ok")).unwrap_or_else(|e| panic!("/ok: {e}\n{}", m.log())),
        "still fine\n"
    );
}

#[test]
fn errno_forms_reach_the_caller() {
    if !fuse_available() {
        return;
    }
    let m = errors();
    expect_errno(
        fs::metadata(m.path("enoent")),
        libc::ENOENT,
        "error(flu.errno.ENOENT)",
    );
    expect_errno(
        fs::metadata(m.path("eacces_str")),
        libc::EACCES,
        "error(\"EACCES\")",
    );
    expect_errno(
        fs::metadata(m.path("eacces_num")),
        libc::EACCES,
        "error(13)",
    );
    expect_errno(
        fs::metadata(m.path("eexist_assert")),
        libc::EEXIST,
        "assert(false, flu.errno.EEXIST) in getattr",
    );
    expect_errno(
        fs::create_dir(m.path("mk_assert")),
        libc::EEXIST,
        "assert(false, flu.errno.EEXIST) in mkdir",
    );
    expect_errno(
        fs::create_dir(m.path("other")),
        libc::EROFS,
        "error(flu.errno.EROFS)",
    );
    expect_errno(
        File::open(m.path("open_str")),
        libc::EPERM,
        "error(\"EPERM\") in open",
    );
    // beyond Flu: a flu.errno value returned instead of raised, also after a yield
    expect_errno(
        fs::metadata(m.path("ret_eacces")),
        libc::EACCES,
        "return flu.errno.EACCES",
    );
    expect_errno(
        fs::metadata(m.path("ret_slept")),
        libc::EROFS,
        "return flu.errno.EROFS after flu.sleep",
    );
    // none of these is a script failure: nothing logged as one
    let log = m.log();
    assert!(!log.contains("stack traceback"), "{log}");
    still_serving(&m);
}

#[test]
fn runtime_error_gives_eio_with_traceback_and_mount_keeps_serving() {
    if !fuse_available() {
        return;
    }
    let m = errors();
    still_serving(&m);

    expect_errno(fs::read(m.path("read_rt")), libc::EIO, "read: nil index");
    let log = m.log();
    let rec = log_record(&log, "attempt to index a nil value (local 'cache')")
        .unwrap_or_else(|| panic!("Lua message missing: {log}"));
    assert!(rec.contains("stack traceback"), "traceback missing: {rec}");
    assert!(
        rec.contains("ops_errors.lua:"),
        "script position missing: {rec}"
    );
    still_serving(&m);

    expect_errno(
        fs::metadata(m.path("getattr_rt")),
        libc::EIO,
        "getattr: nil index",
    );
    let log = m.log();
    let rec = log_record(&log, "attempt to index a nil value (local 'config')")
        .unwrap_or_else(|| panic!("getattr's error not logged: {log}"));
    assert!(rec.contains("stack traceback"), "traceback missing: {rec}");
    still_serving(&m);
}

#[test]
fn wrong_return_types_give_eio_and_mount_keeps_serving() {
    if !fuse_available() {
        return;
    }
    let m = errors();

    let before = m.log().len();
    expect_errno(
        fs::read(m.path("read_table")),
        libc::EIO,
        "read returning a table",
    );
    assert!(
        m.log().len() > before,
        "nothing logged for read returning a table"
    );
    still_serving(&m);

    let before = m.log().len();
    let mut f = OpenOptions::new()
        .write(true)
        .open(m.path("write_neg"))
        .unwrap();
    expect_errno(f.write(b"abc"), libc::EIO, "write returning -1");
    drop(f);
    assert!(
        m.log().len() > before,
        "nothing logged for write returning -1"
    );
    still_serving(&m);

    let before = m.log().len();
    let mut f = OpenOptions::new()
        .write(true)
        .open(m.path("write_huge"))
        .unwrap();
    expect_errno(f.write(b"abc"), libc::EIO, "write returning 2^40");
    drop(f);
    assert!(
        m.log().len() > before,
        "nothing logged for write returning 2^40"
    );
    still_serving(&m);

    let before = m.log().len();
    expect_errno(
        fs::metadata(m.path("getattr_string")),
        libc::EIO,
        "getattr returning a string",
    );
    assert!(
        m.log().len() > before,
        "nothing logged for getattr returning a string"
    );
    still_serving(&m);

    // Bad filler calls: the listing fails with EIO and the Lua error is logged in its words.
    for (dir, what, logged) in [
        (
            "baddir",
            "filler called with a boolean",
            "filler: bad argument #1 (string expected, got boolean)",
        ),
        (
            "badbulk",
            "filler given a table with a number key",
            "filler: a table of entries has names as keys, got a number key",
        ),
        (
            "badbulkname",
            "filler given a table with an invalid name",
            "filler: invalid entry name \"a/b\"",
        ),
    ] {
        let before = m.log().len();
        let r = fs::read_dir(m.path(dir)).and_then(|d| d.collect::<Result<Vec<_>, _>>());
        expect_errno(r, libc::EIO, what);
        assert!(
            m.log()[before..].contains(logged),
            "{what}: not logged as {logged:?}: {}",
            &m.log()[before..]
        );
        still_serving(&m);
    }

    // the root listing is unaffected
    let mut names = names_of(&m.mnt).unwrap();
    names.sort();
    assert!(names.contains(&OsString::from("ok")), "{names:?}");
}

// ---------------------------------------------------------------------------------------------
// 4. missing operations behave like libfuse's path API

/// Observed on Linux 6.x, and the same as with libfuse's high-level API: mkdir, unlink, rename,
/// symlink, chmod, write and create (with no mknod either) give the caller ENOSYS as is; the
/// kernel turns ENOSYS from getxattr into EOPNOTSUPP; fsync/flush/open/opendir succeed.
#[test]
fn missing_operations_default_like_libfuse() {
    if !fuse_available() {
        return;
    }
    set_umask();
    let m = Mount::new(&fixture("ops_minimal.lua"), &[]);
    // no open/release/opendir/releasedir/flush: they succeed
    assert_eq!(fs::read_to_string(m.path("hello")).unwrap(), "hello\n");
    assert_eq!(names_of(&m.mnt).unwrap(), ["hello"]);
    // fsync without an fsync operation succeeds too
    File::open(m.path("hello")).unwrap().sync_all().unwrap();
    // no statfs: libfuse's defaults
    let s = statvfs(&m.mnt).unwrap();
    assert_eq!((s.f_bsize, s.f_namemax), (512, 255));
    assert_eq!((s.f_blocks, s.f_bfree, s.f_files), (0, 0, 0));
    // everything else: ENOSYS, passed through by the kernel as is
    expect_errno(fs::create_dir(m.path("d")), libc::ENOSYS, "mkdir");
    expect_errno(fs::remove_file(m.path("hello")), libc::ENOSYS, "unlink");
    expect_errno(
        fs::rename(m.path("hello"), m.path("other")),
        libc::ENOSYS,
        "rename",
    );
    expect_errno(
        std::os::unix::fs::symlink("x", m.path("s")),
        libc::ENOSYS,
        "symlink",
    );
    expect_errno(
        fs::set_permissions(m.path("hello"), fs::Permissions::from_mode(0o600)),
        libc::ENOSYS,
        "chmod",
    );
    let mut f = OpenOptions::new()
        .write(true)
        .open(m.path("hello"))
        .unwrap();
    expect_errno(f.write(b"x"), libc::ENOSYS, "write");
    drop(f);
    // xattrs: the kernel turns ENOSYS into EOPNOTSUPP (as with libfuse)
    let mut buf = [0u8; 16];
    let r = unsafe {
        libc::getxattr(
            cstr(&m.path("hello")).as_ptr(),
            c"user.x".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    expect_libc_errno(r as i64, libc::EOPNOTSUPP, "getxattr");
    // create with no create and no mknod
    expect_errno(File::create(m.path("new")), libc::ENOSYS, "create");
    // no lock operation: POSIX locks are not negotiated, the kernel handles them locally
    let f = File::open(m.path("hello")).unwrap();
    let l = flock(libc::F_RDLCK, 0, 10);
    ok(
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &l) } as i64,
        "local F_SETLK",
    );
    let mut l = flock(libc::F_WRLCK, 0, 10);
    ok(
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut l) } as i64,
        "local F_GETLK",
    );
    assert_eq!(l.l_type, libc::F_UNLCK as i16, "own lock never conflicts");
    drop(f);
    // still fine afterwards
    assert_eq!(fs::read_to_string(m.path("hello")).unwrap(), "hello\n");
}

#[test]
fn create_falls_back_to_mknod_then_open() {
    if !fuse_available() {
        return;
    }
    set_umask();
    let logdir = TempDir::new("ops-mknod");
    let log = logdir.path.join("log");
    let m = Mount::with_args(
        &fixture("ops_mknod_only.lua"),
        &[],
        &[log.to_str().unwrap()],
    );
    let (code, _, err) = sh(&format!("echo hi > '{}'", m.path("new").display()));
    assert_eq!(code, 0, "{err}\n{}", m.log());
    assert_eq!(fs::read_to_string(m.path("new")).unwrap(), "hi\n");
    let text = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mknod = lines
        .iter()
        .position(|l| *l == "mknod /new reg,rgrp,roth,rusr,wusr 0")
        .unwrap_or_else(|| panic!("no mknod in {lines:?}"));
    let open = lines
        .iter()
        .position(|l| l.starts_with("open /new "))
        .unwrap_or_else(|| panic!("no open in {lines:?}"));
    assert!(mknod < open, "{lines:?}");
    assert!(lines[open].contains("wronly"), "{}", lines[open]);
    assert!(lines.contains(&"write /new 3 0"), "{lines:?}");
}

// ---------------------------------------------------------------------------------------------
// 5. Flu-style scripts run unchanged

fn mounts_entry(mnt: &Path) -> Option<(String, String, String)> {
    let want = mnt.to_string_lossy().to_string();
    fs::read_to_string("/proc/mounts")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(1) == Some(&want.as_str())).then(|| {
                (
                    f[0].to_string(),
                    f[2].to_string(),
                    f.get(3).unwrap_or(&"").to_string(),
                )
            })
        })
}

#[test]
fn flu_hellofs_lists_and_reads() {
    if !fuse_available() {
        return;
    }
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let m = Mount::new(&fixture("flu_hellofs.lua"), &[]);
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(names_of(&m.mnt).unwrap(), ["hello"]);
    let (code, out, _) = sh(&format!("ls -a '{}'", m.mnt.display()));
    assert_eq!(code, 0);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        [".", "..", "hello"]
    );
    assert_eq!(
        fs::read_to_string(m.path("hello")).unwrap(),
        "Hello World!\n"
    );
    let md = fs::metadata(m.path("hello")).unwrap();
    assert_eq!(md.mode(), 0o100660);
    assert_eq!(md.len(), 13);
    assert_eq!(md.nlink(), 1);
    // os.time() numbers given as access/modification/change. os.time() is time(2), which
    // reads the kernel's coarse clock: it may lag the clock `before` read by a tick, so a
    // mount made just after a second began can report the second before.
    for t in [md.atime(), md.mtime(), md.ctime()] {
        assert!(
            (before - 1..=after).contains(&t),
            "{t} not in {before}..{after}"
        );
    }
    assert_eq!(fs::metadata(&m.mnt).unwrap().mode(), 0o040770);
    expect_errno(fs::metadata(m.path("nope")), libc::ENOENT, "missing file");
    // open checks fi.flags.O_WRONLY / O_RDWR
    expect_errno(
        OpenOptions::new().write(true).open(m.path("hello")),
        libc::EACCES,
        "open for writing",
    );
    expect_errno(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.path("hello")),
        libc::EACCES,
        "open read-write",
    );
    // flu.main's argv[1] is the fsname
    let (fsname, _, _) = mounts_entry(&m.mnt).unwrap();
    assert_eq!(fsname, "hellofs");
}

#[test]
fn flu_main_argv_options_are_honoured() {
    if !fuse_available() {
        return;
    }
    // "-o ro" inside the script's args table
    let m = Mount::with_args(&fixture("flu_hellofs.lua"), &[], &["-o", "ro"]);
    let (_, _, opts) = mounts_entry(&m.mnt).unwrap();
    assert!(opts.split(',').any(|o| o == "ro"), "{opts}");
    expect_errno(
        OpenOptions::new().write(true).open(m.path("hello")),
        libc::EROFS,
        "write on a ro mount",
    );
    assert_eq!(
        fs::read_to_string(m.path("hello")).unwrap(),
        "Hello World!\n"
    );
    drop(m);

    // fsname from the script's argv
    let m = Mount::with_args(
        &fixture("flu_hellofs.lua"),
        &[],
        &["-o", "fsname=fromscript"],
    );
    assert_eq!(mounts_entry(&m.mnt).unwrap().0, "fromscript");
    drop(m);

    // the command line wins
    let m = Mount::with_args(
        &fixture("flu_hellofs.lua"),
        &["-o", "fsname=x"],
        &["-o", "fsname=fromscript"],
    );
    assert_eq!(mounts_entry(&m.mnt).unwrap().0, "x");
    assert_eq!(
        fs::read_to_string(m.path("hello")).unwrap(),
        "Hello World!\n"
    );
}

#[test]
fn flu_luafs_works_like_a_filesystem() {
    if !fuse_available() {
        return;
    }
    set_umask();
    let m = Mount::new(&fixture("flu_luafs.lua"), &[]);
    let mnt = m.mnt.display().to_string();
    let (code, out, err) = sh(&format!(
        "cd '{mnt}' && echo Hello World! > hello && cat hello && mkdir subdir && \
         echo foo > subdir/bar && cat subdir/bar && ls subdir && ls"
    ));
    assert_eq!(code, 0, "{err}\n{}", m.log());
    assert_eq!(out, "Hello World!\nfoo\nbar\nhello\nsubdir\n");
    assert!(fs::metadata(m.path("subdir")).unwrap().is_dir());
    assert_eq!(fs::metadata(m.path("hello")).unwrap().mode(), 0o100660);
    assert_eq!(fs::metadata(m.path("subdir")).unwrap().mode(), 0o040770);
    assert_eq!(fs::metadata(m.path("subdir")).unwrap().nlink(), 2);

    // overwrite (truncate), append, write in the middle
    fs::write(m.path("hello"), b"0123456789").unwrap();
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path("hello"))
        .unwrap();
    f.write_all(b"AB").unwrap();
    drop(f);
    let f = OpenOptions::new()
        .write(true)
        .open(m.path("hello"))
        .unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"xy", 3).unwrap();
    drop(f);
    assert_eq!(fs::read(m.path("hello")).unwrap(), b"012xy56789AB");

    // touch sets the times through utimens
    let (code, _, err) = sh(&format!("touch -d @1500000000 '{mnt}/hello'"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::metadata(m.path("hello")).unwrap().mtime(), 1500000000);

    // xattrs
    let hp = cstr(&m.path("hello"));
    ok(
        unsafe {
            libc::setxattr(
                hp.as_ptr(),
                c"user.color".as_ptr(),
                b"blue".as_ptr().cast(),
                4,
                0,
            )
        } as i64,
        "setxattr",
    );
    let mut buf = [0u8; 16];
    let n = ok(
        unsafe {
            libc::getxattr(
                hp.as_ptr(),
                c"user.color".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        } as i64,
        "getxattr",
    );
    assert_eq!(&buf[..n as usize], b"blue");
    let r = unsafe {
        libc::getxattr(
            hp.as_ptr(),
            c"user.other".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    expect_libc_errno(r as i64, libc::ENODATA, "missing xattr");

    // errors raised through the redefined assert
    expect_errno(
        fs::create_dir(m.path("subdir")),
        libc::EEXIST,
        "mkdir existing",
    );
    expect_errno(
        fs::remove_dir(m.path("subdir")),
        libc::ENOTEMPTY,
        "rmdir non-empty",
    );
    expect_errno(fs::read(m.path("missing")), libc::ENOENT, "missing file");
    fs::remove_file(m.path("subdir/bar")).unwrap();
    fs::remove_dir(m.path("subdir")).unwrap();
    fs::remove_file(m.path("hello")).unwrap();
    assert!(names_of(&m.mnt).unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// 6. 100,000 entries from one readdir call

#[test]
fn readdir_100k_entries_without_offsets() {
    if !fuse_available() {
        return;
    }
    let m = Mount::new(&fixture("ops_bigdir.lua"), &[]);
    let t = Instant::now();
    let names = names_of(&m.mnt).unwrap_or_else(|e| panic!("read_dir: {e}\n{}", m.log()));
    assert_eq!(names.len(), 100_000, "after {:?}", t.elapsed());
    let set: HashSet<&OsString> = names.iter().collect();
    assert_eq!(set.len(), 100_000, "duplicates in the listing");
    for i in 1..=100_000 {
        let n = OsString::from(format!("f{i:06}"));
        assert!(set.contains(&n), "{n:?} missing");
    }
    let (code, out, err) = sh(&format!("ls -f '{}' | wc -l", m.mnt.display()));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "100002");
}

// ---------------------------------------------------------------------------------------------
// 7. a faulty script cannot take the daemon down

#[test]
fn faulty_script_errors_every_request_but_daemon_survives() {
    if !fuse_available() {
        return;
    }
    set_umask();
    let mut m = Mount::new(&fixture("ops_faulty.lua"), &[]);
    let p = |rel: &str| m.path(rel);

    assert!(fs::metadata(&m.mnt).unwrap().is_dir());
    assert_eq!(fs::read_to_string(p("ok")).unwrap(), "ok\n");

    // getattr misbehaving in every way
    for name in [
        "rt",
        "nil",
        "huge",
        "neg",
        "deep",
        "badmode",
        "badtime",
        "errtable",
        "errnil",
        "errtostring",
        "zero",
        "bigerrno",
        "number",
    ] {
        expect_errno(
            fs::metadata(p(name)),
            libc::EIO,
            &format!("getattr /{name}"),
        );
    }
    assert!(daemon_alive(&m), "daemon died after getattr errors");

    // readdir
    let mut root = names_of(&m.mnt).unwrap();
    root.sort();
    assert_eq!(root, ["baddir", "d", "f", "lnk", "ok", "utf8"]);
    let mut utf8: Vec<Vec<u8>> = names_of(&p("utf8"))
        .unwrap()
        .into_iter()
        .map(OsString::into_vec)
        .collect();
    utf8.sort();
    assert_eq!(
        utf8,
        [b"caf\xe9".to_vec(), b"ok".to_vec(), b"\xff\xfe".to_vec()]
    );
    let r = fs::read_dir(p("baddir")).and_then(|d| d.collect::<Result<Vec<_>, _>>());
    expect_errno(r, libc::EIO, "readdir with a bad filler name");
    expect_errno(fs::read_dir(p("d")), libc::EIO, "opendir raising true");

    // file operations on /f
    let f = File::open(p("f")).unwrap();
    let mut buf = [0u8; 16];
    expect_errno((&f).read(&mut buf), libc::EIO, "read returning a number");
    let fd = f.as_raw_fd();
    std::mem::forget(f);
    let ret = unsafe { libc::close(fd) };
    expect_libc_errno(ret as i64, libc::EIO, "close: flush raising a string");

    let f = OpenOptions::new().write(true).open(p("f")).unwrap();
    expect_errno((&f).write(b"abc"), libc::EIO, "write returning a string");
    expect_errno(f.sync_all(), libc::EIO, "fsync recursing");
    let fd = f.as_raw_fd();
    expect_libc_errno(
        unsafe { libc::lseek(fd, 0, libc::SEEK_DATA) },
        libc::EIO,
        "lseek returning -1",
    );
    expect_libc_errno(
        unsafe { libc::fallocate(fd, 0, 0, 10) } as i64,
        libc::EIO,
        "fallocate raising 2.5",
    );
    let mut l = flock(libc::F_RDLCK, 0, 1);
    expect_libc_errno(
        unsafe { libc::fcntl(fd, libc::F_GETLK, &mut l) } as i64,
        libc::EIO,
        "getlk returning a bad lock",
    );
    let l = flock(libc::F_WRLCK, 0, 1);
    expect_libc_errno(
        unsafe { libc::fcntl(fd, libc::F_SETLK, &l) } as i64,
        libc::EIO,
        "setlk raising a nasty value",
    );
    let fin = File::open(p("ok")).unwrap();
    let mut off_in: i64 = 0;
    let mut off_out: i64 = 0;
    let n = unsafe { libc::copy_file_range(fin.as_raw_fd(), &mut off_in, fd, &mut off_out, 3, 0) };
    expect_libc_errno(n as i64, libc::EIO, "copy_file_range returning 2^62");
    drop(fin);
    expect_errno(f.set_len(1), libc::EIO, "ftruncate raising -3");
    drop(f);
    expect_errno(
        OpenOptions::new().read(true).write(true).open(p("f")),
        libc::EIO,
        "open calling nil",
    );

    // attribute changes
    expect_libc_errno(
        unsafe { libc::truncate(cstr(&p("f")).as_ptr(), 1) } as i64,
        libc::EIO,
        "truncate raising 0",
    );
    expect_errno(
        fs::set_permissions(p("f"), fs::Permissions::from_mode(0o600)),
        libc::EIO,
        "chmod raising -3",
    );
    expect_libc_errno(
        unsafe { libc::chown(cstr(&p("f")).as_ptr(), 1, 1) } as i64,
        libc::EIO,
        "chown raising 1e100",
    );
    expect_libc_errno(
        unsafe { libc::utimensat(libc::AT_FDCWD, cstr(&p("f")).as_ptr(), std::ptr::null(), 0) }
            as i64,
        libc::EIO,
        "utimens raising a value whose __tostring raises",
    );

    // namespace changes
    expect_errno(fs::create_dir(p("newdir")), libc::EIO, "mkdir recursing");
    expect_libc_errno(
        unsafe { libc::mkfifo(cstr(&p("newfifo")).as_ptr(), 0o644) } as i64,
        libc::EIO,
        "mknod raising nil",
    );
    expect_errno(
        File::create(p("newfile")),
        libc::EIO,
        "create raising a table",
    );
    expect_errno(
        fs::remove_file(p("f")),
        libc::EBUSY,
        "unlink yielding, then raising EBUSY",
    );
    expect_errno(
        fs::remove_dir(p("d")),
        libc::EIO,
        "rmdir raising a long string",
    );
    expect_errno(
        fs::rename(p("f"), p("g")),
        libc::EIO,
        "rename calling a missing method",
    );
    expect_errno(
        std::os::unix::fs::symlink("t", p("newlink")),
        libc::EIO,
        "symlink raising a table",
    );
    expect_errno(
        fs::hard_link(p("f"), p("newhard")),
        libc::EIO,
        "link raising 2.5",
    );
    expect_errno(
        fs::read_link(p("lnk")),
        libc::EIO,
        "readlink returning a table",
    );

    // filesystem-wide and xattrs
    expect_errno(statvfs(&m.mnt), libc::EIO, "statfs returning a string");
    let fp = cstr(&p("f"));
    let r = unsafe { libc::setxattr(fp.as_ptr(), c"user.a".as_ptr(), c"v".as_ptr().cast(), 1, 0) };
    expect_libc_errno(r as i64, libc::EIO, "setxattr raising false");
    let r = unsafe {
        libc::getxattr(
            fp.as_ptr(),
            c"user.a".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    expect_libc_errno(r as i64, libc::EIO, "getxattr returning a number");
    let r = unsafe { libc::listxattr(fp.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    expect_libc_errno(r as i64, libc::EIO, "listxattr returning numbers");
    let r = unsafe { libc::removexattr(fp.as_ptr(), c"user.a".as_ptr()) };
    expect_libc_errno(
        r as i64,
        libc::EIO,
        "removexattr raising a non-errno string",
    );
    let r = unsafe { libc::access(fp.as_ptr(), libc::R_OK) };
    expect_libc_errno(r as i64, libc::EIO, "access raising a coroutine");

    // still alive, still mounted, still serving
    assert!(daemon_alive(&m), "daemon died\n{}", m.log());
    assert!(is_mounted(&m.mnt));
    assert!(fs::metadata(&m.mnt).unwrap().is_dir());
    assert_eq!(fs::read_to_string(p("ok")).unwrap(), "ok\n");
    let log = m.log();
    assert!(log.contains("stack overflow"), "{log}");
    assert!(log.contains("attempt to index a nil value"), "{log}");
    assert!(log.contains("attempt to call a nil value"), "{log}");

    // destroy raising does not crash the daemon's exit
    let code = m.unmount();
    assert!(
        code.is_some(),
        "daemon killed or crashed at exit\n{}",
        m.log()
    );
    assert!(!is_mounted(&m.mnt));
}

/// read may return (data, offset, length): the reader gets that range of the data; a range
/// outside it is EIO for that read only; an offset that is not an integer leaves Flu's plain
/// string. read may also return an array of strings: the reader gets them one after another,
/// cut to the size asked for; an element that is not a string is EIO, logged with its index.
#[test]
fn read_may_return_a_range_of_a_string_or_pieces() {
    if !fuse_available() {
        return;
    }
    use std::os::unix::fs::FileExt;
    let m = Mount::new(&fixture("ops_read_range.lua"), &["-o", "direct_io"]);
    // Reads at fixed offsets (a host ignoring the range would answer every offset with the
    // whole string, and reading to the end would never end).
    let f = fs::File::open(m.path("abc")).unwrap();
    let mut buf = [0u8; 64];
    let n = f.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..n], b"abcdefghijklmnopqrstuvwxyz");
    let n = f.read_at(&mut buf[..5], 10).unwrap();
    assert_eq!(&buf[..n], b"klmno");
    assert_eq!(f.read_at(&mut buf, 26).unwrap(), 0);
    let err = fs::read(m.path("bad")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(
        fs::read_to_string(m.path("float")).unwrap(),
        "abcdefghijklmnopqrstuvwxyz"
    );
    assert!(
        m.log().contains("outside a string of 26"),
        "the bad range is logged: {}",
        m.log()
    );
    // An array of strings: its pieces one after another, no more than was asked for (the
    // fixture adds ten digits past the end of its letters, which direct_io lets through).
    let f = fs::File::open(m.path("pieces")).unwrap();
    let all = "abcdefghijklmnopqrstuvwxyz0123456789";
    for (at, len) in [
        (0usize, 26usize),
        (0, 64),
        (4, 5),
        (10, 1),
        (25, 8),
        (7, 19),
    ] {
        let n = f.read_at(&mut buf[..len], at as u64).unwrap();
        let end = (at + len).min(all.len());
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            &all[at..end],
            "pieces from {at}, {len} asked"
        );
    }
    assert_eq!(f.read_at(&mut buf, 26).unwrap(), 0, "nothing past the end");
    let err = fs::read(m.path("badpiece")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        m.log().contains("piece 2 of the array is 5, not a string"),
        "the bad piece is logged: {}",
        m.log()
    );
}

/// create, mknod, mkdir, symlink and link may return the new entry's stat table: the kernel
/// gets that one (size 777 here) and getattr (which would say size 1) is not called for it.
/// So may chmod, chown, truncate and utimens, the last call of a SETATTR: without a table
/// from it, getattr answers.
#[test]
fn entries_made_with_a_returned_stat_need_no_getattr() {
    if !fuse_available() {
        return;
    }
    let m = Mount::new(&fixture("ops_returns_stat.lua"), &[]);
    let calls = || -> u64 {
        let s = fs::read_to_string(m.path("getattr_calls")).unwrap();
        s.parse().unwrap()
    };
    let before = calls();
    let f = fs::File::create(m.path("f")).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 777, "create's table");
    drop(f);
    fs::create_dir(m.path("d")).unwrap();
    assert_eq!(
        fs::metadata(m.path("d")).unwrap().len(),
        777,
        "mkdir's table"
    );
    std::os::unix::fs::symlink("f", m.path("s")).unwrap();
    assert_eq!(
        fs::symlink_metadata(m.path("s")).unwrap().len(),
        777,
        "symlink's table"
    );
    let fifo = cstr(&m.path("p"));
    ok(
        unsafe { libc::mknod(fifo.as_ptr(), libc::S_IFIFO | 0o644, 0) } as i64,
        "mknod",
    );
    assert_eq!(
        fs::symlink_metadata(m.path("p")).unwrap().len(),
        777,
        "mknod's table"
    );
    fs::hard_link(m.path("p"), m.path("p2")).unwrap();
    let st = fs::symlink_metadata(m.path("p2")).unwrap();
    assert_eq!((st.len(), st.mtime()), (777, 777), "link's table");
    // Only the lookups of the new names (each answered "no such file") reached getattr.
    assert_eq!(calls() - before, 5);

    // A SETATTR whose call returned the changed entry's table is answered with it (the sizes
    // say whose table the kernel got; getattr's says 1).
    let f = m.path("f");
    let before = calls();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().len(), 801, "chmod's table");
    assert_eq!(
        calls() - before,
        0,
        "no getattr after a chmod that returned its table"
    );
    // (Before a chown the kernel refreshes the attributes itself, with a getattr, unless the
    // script handles killpriv.)
    std::os::unix::fs::chown(&f, Some(1), Some(1)).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().len(), 802, "chown's table");
    let file = fs::OpenOptions::new().write(true).open(&f).unwrap();
    let before = calls();
    file.set_len(5).unwrap();
    assert_eq!(file.metadata().unwrap().len(), 803, "truncate's table");
    file.set_modified(UNIX_EPOCH + Duration::from_secs(5))
        .unwrap();
    assert_eq!(file.metadata().unwrap().len(), 804, "utimens's table");
    drop(file);
    assert_eq!(
        calls() - before,
        0,
        "no getattr after changes that returned their table"
    );
    // One that returned nothing: getattr's table.
    let plain = m.path("plain");
    drop(fs::File::create(&plain).unwrap());
    let before = calls();
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fs::metadata(&plain).unwrap().len(), 1, "getattr's table");
    assert_eq!(
        calls() - before,
        1,
        "getattr after a chmod that returned nothing"
    );
}

/// opendir's `fi.keep_cache` keeps the kernel's cached listing across opens (readdir is not
/// called again); without it every listing calls readdir.
#[test]
fn fi_keep_cache_set_by_opendir_keeps_the_listing() {
    if !fuse_available() {
        return;
    }
    let m = values();
    let list = |d: &str| names_of(&m.path(d)).unwrap();
    assert_eq!(list("kcdir"), vec![OsString::from("gen1")]);
    assert_eq!(list("kcdir"), vec![OsString::from("gen1")]);
    assert_eq!(list("nokcdir"), vec![OsString::from("gen1")]);
    assert_eq!(list("nokcdir"), vec![OsString::from("gen2")]);
}

// ---------------------------------------------------------------------------------------------
// fs.no_xattrs_until_set, fs.reuse_listings' lookups: fixtures that count the calls they get

/// `fixture` mounted with its setting on or off (its first script argument).
fn mount_with_setting(fixture_name: &str, on: bool) -> Mount {
    Mount::with_args(
        &fixture(fixture_name),
        &[],
        &[if on { "on" } else { "off" }],
    )
}

/// The count the fixture's /calls file holds (8 digits).
fn read_calls(m: &Mount) -> u64 {
    read_count(m, "calls")
}

/// The count the fixture's file `name` holds (8 digits).
fn read_count(m: &Mount, name: &str) -> u64 {
    let s = fs::read_to_string(m.path(name))
        .unwrap_or_else(|e| panic!("read /{name}: {e}\n{}", m.log()));
    s.parse().unwrap_or_else(|_| panic!("/{name} holds {s:?}"))
}

/// `lgetxattr(path, name)`: the value, or the errno.
fn lgetxattr(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    common::getxattr(p, name, 256).map_err(|e| errno(&e))
}

fn lsetxattr(p: &Path, name: &str, value: &[u8]) {
    common::setxattr(p, name, value, 0, false)
        .unwrap_or_else(|e| panic!("lsetxattr {} {name}: {e}", p.display()));
}

/// With `fs.no_xattrs_until_set`, a getxattr of a user., security. or trusted. name on a node
/// made through the mount (create, mknod, mkdir, symlink) is answered ENODATA without calling
/// the script, also the kernel's security.capability probe before a new file's first write,
/// until an attribute is set or removed on that node through the mount (under any of its
/// names, after renames); nodes the script made itself, or handed out again from a create,
/// and other namespaces still reach the script. Without the option every getxattr does.
#[test]
fn no_xattrs_until_set_answers_new_nodes_without_the_script() {
    if !fuse_available() {
        return;
    }
    for on in [true, false] {
        let m = mount_with_setting("ops_bare_xattrs.lua", on);
        let calls = || read_calls(&m);
        // Whether `f` reached the script's getxattr `n` times when on, and at least once off.
        let check = |what: &str, n: u64, f: &mut dyn FnMut()| {
            let before = calls();
            f();
            let made = calls() - before;
            if on {
                assert_eq!(made, n, "{what}: getxattr calls that reached the script");
            } else {
                assert!(
                    made >= 1,
                    "{what}: every getxattr reaches the script when off"
                );
            }
        };
        let f = m.path("f");
        check(
            "a new file written, then asked for attributes",
            0,
            &mut || {
                let mut file =
                    File::create(&f).unwrap_or_else(|e| panic!("create: {e}\n{}", m.log()));
                file.write_all(&[7u8; 4096]).unwrap();
                drop(file);
                assert_eq!(lgetxattr(&f, "user.a"), Err(libc::ENODATA));
                assert_eq!(lgetxattr(&f, "security.capability"), Err(libc::ENODATA));
                assert_eq!(lgetxattr(&f, "trusted.t"), Err(libc::ENODATA));
            },
        );
        check("an unknown namespace", 1, &mut || {
            assert_eq!(lgetxattr(&f, "other.a"), Err(libc::EOPNOTSUPP));
        });
        fs::create_dir(m.path("d")).unwrap();
        let fifo = cstr(&m.path("d/p"));
        ok(
            unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) } as i64,
            "mkfifo",
        );
        std::os::unix::fs::symlink("f", m.path("d/s")).unwrap();
        check("a new directory, FIFO and symlink", 0, &mut || {
            for p in ["d", "d/p", "d/s"] {
                assert_eq!(
                    lgetxattr(&m.path(p), "security.x"),
                    Err(libc::ENODATA),
                    "{p}"
                );
            }
        });
        check("a file given an attribute", 2, &mut || {
            lsetxattr(&f, "user.a", b"1");
            assert_eq!(lgetxattr(&f, "user.a"), Ok(b"1".to_vec()));
            assert_eq!(lgetxattr(&f, "user.b"), Err(libc::ENODATA));
        });
        let (g, h) = (m.path("g"), m.path("d/h"));
        File::create(&g).unwrap();
        fs::hard_link(&g, &h).unwrap();
        check(
            "a hard link given an attribute, read by its first name",
            1,
            &mut || {
                lsetxattr(&h, "user.x", b"2");
                assert_eq!(lgetxattr(&g, "user.x"), Ok(b"2".to_vec()));
            },
        );
        File::create(m.path("r")).unwrap();
        fs::rename(m.path("r"), m.path("d/r2")).unwrap();
        check("a renamed new file", 0, &mut || {
            assert_eq!(lgetxattr(&m.path("d/r2"), "user.y"), Err(libc::ENODATA));
        });
        check("a renamed file given an attribute", 1, &mut || {
            lsetxattr(&m.path("d/r2"), "user.y", b"3");
            assert_eq!(lgetxattr(&m.path("d/r2"), "user.y"), Ok(b"3".to_vec()));
        });
        let q = m.path("q");
        File::create(&q).unwrap();
        check("a file an attribute was removed from", 1, &mut || {
            expect_errno(
                common::removexattr(&q, "user.none"),
                libc::ENODATA,
                "removexattr of a missing name",
            );
            assert_eq!(lgetxattr(&q, "user.none"), Err(libc::ENODATA));
        });
        // The kernel forgets the nodes and looks them up again: the marks are kept (a node
        // with a script ino gets its id back), also for `ls -l`'s security.selinux.
        if common::drop_kernel_caches_for("xattr marks after the kernel forgot the nodes") {
            let looked = read_count(&m, "lookups");
            check("new nodes looked up again", 0, &mut || {
                for p in ["d", "d/p", "d/s"] {
                    assert_eq!(
                        lgetxattr(&m.path(p), "security.selinux"),
                        Err(libc::ENODATA),
                        "{p}"
                    );
                }
            });
            assert!(
                read_count(&m, "lookups") >= looked + 3,
                "the kernel forgot d, d/p and d/s and looked them up again"
            );
            check("a file given an attribute, looked up again", 1, &mut || {
                assert_eq!(lgetxattr(&f, "user.a"), Ok(b"1".to_vec()));
            });
        }
        check("the script's own file", 1, &mut || {
            assert_eq!(lgetxattr(&m.path("pre"), "user.pre"), Ok(b"p".to_vec()));
        });
        check("an existing node a create handed out", 1, &mut || {
            File::create(m.path("again")).unwrap();
            assert_eq!(lgetxattr(&m.path("again"), "user.pre"), Ok(b"p".to_vec()));
        });
        assert!(
            log_record(&m.log(), "failed").is_none(),
            "no script failures: {}",
            m.log()
        );
    }
}

/// With `fs.unsupported_xattrs`, a getxattr, setxattr or removexattr of a listed name is
/// answered EOPNOTSUPP without calling the script, on every node, and the node may still take
/// other names. `ls -l` asks every file for `security.selinux` and, told EOPNOTSUPP, no
/// further file: listing 50 files then reaches the script's getxattr at most twice (the
/// directory's and the first file's POSIX ACL probe, which the script refuses). Without the
/// setting each file's `security.selinux` reaches it.
#[test]
fn unsupported_xattrs_are_refused_without_the_script() {
    if !fuse_available() {
        return;
    }
    for on in [true, false] {
        let m = mount_with_setting("ops_unsupported_xattrs.lua", on);
        let f = m.path("d/f1");
        let before = read_calls(&m);
        let got = lgetxattr(&f, "security.selinux");
        let set = common::setxattr(&f, "security.selinux", b"x", 0, false).map_err(|e| errno(&e));
        let removed = common::removexattr(&f, "security.selinux").map_err(|e| errno(&e));
        let made = read_calls(&m) - before;
        if on {
            assert_eq!(got, Err(libc::EOPNOTSUPP), "getxattr");
            assert_eq!(set, Err(libc::EOPNOTSUPP), "setxattr");
            assert_eq!(removed, Err(libc::EOPNOTSUPP), "removexattr");
            assert_eq!(made, 0, "calls that reached the script");
        } else {
            assert_eq!((got, set, removed), (Err(libc::ENODATA), Ok(()), Ok(())));
            assert_eq!(made, 3, "calls that reached the script");
        }
        // A name not listed still reaches the script, also one the listed name begins.
        lsetxattr(&f, "security.selinux2", b"s");
        lsetxattr(&f, "user.a", b"1");
        assert_eq!(lgetxattr(&f, "security.selinux2"), Ok(b"s".to_vec()));
        assert_eq!(lgetxattr(&f, "user.a"), Ok(b"1".to_vec()));

        let before = read_calls(&m);
        let (code, out, err) = sh(&format!("ls -l {}", m.path("d").display()));
        assert_eq!(code, 0, "ls -l: {err}");
        assert_eq!(
            out.lines().filter(|l| l.starts_with('-')).count(),
            50,
            "{out}"
        );
        let made = read_calls(&m) - before;
        if on {
            assert!(made <= 2, "ls -l of 50 files reached getxattr {made} times");
        } else {
            assert!(
                made >= 50,
                "ls -l of 50 files reached getxattr {made} times"
            );
        }
    }
}

/// With `fs.reuse_listings`, a lookup of a name missing from a directory made through the
/// mount is answered ENOENT by flufs without calling the script: a name never made, one
/// unlinked, one renamed away, in a new directory and in one made inside it. A directory the
/// script made itself still asks the script, and so does a new directory once an operation in
/// it failed in the script (flufs no longer knows its names). Without the setting every such
/// lookup asks the script (a getattr call).
#[test]
fn lookups_of_missing_names_in_new_directories_skip_the_script() {
    if !fuse_available() {
        return;
    }
    for on in [true, false] {
        let m = mount_with_setting("ops_fresh_dirs.lua", on);
        let log = || m.log();
        // The getattr calls of `path` that reached the script so far.
        let calls = |path: &str| -> u64 {
            fs::write(m.path("calls"), path)
                .unwrap_or_else(|e| panic!("write /calls: {e}\n{}", log()));
            read_calls(&m)
        };
        let missing = |rel: &str| {
            assert_eq!(
                fs::symlink_metadata(m.path(rel))
                    .map_err(|e| errno(&e))
                    .err(),
                Some(libc::ENOENT),
                "on {on}: {rel}"
            );
        };
        // The getattr calls of `path` so far: `when_on` with the setting, `when_off` without.
        let expect = |path: &str, when_on: u64, when_off: u64| {
            let want = if on { when_on } else { when_off };
            assert_eq!(
                calls(path),
                want,
                "on {on}: getattr calls of {path}\n{}",
                log()
            );
        };

        fs::create_dir(m.path("n")).unwrap();
        missing("n/a");
        missing("n/a");
        expect("/n/a", 0, 2);

        // Each create is preceded by the kernel's lookup of the new name.
        File::create(m.path("n/b")).unwrap();
        assert!(fs::symlink_metadata(m.path("n/b")).unwrap().is_file());
        fs::remove_file(m.path("n/b")).unwrap();
        missing("n/b");
        expect("/n/b", 0, 2);

        File::create(m.path("n/c")).unwrap();
        fs::rename(m.path("n/c"), m.path("n/d")).unwrap();
        missing("n/c");
        expect("/n/c", 0, 2);
        assert!(fs::symlink_metadata(m.path("n/d")).unwrap().is_file());

        fs::create_dir(m.path("n/sub")).unwrap();
        missing("n/sub/q");
        expect("/n/sub/q", 0, 1);

        missing("made/x");
        expect("/made/x", 1, 1);

        // A failed create in /n: its names are the script's to tell again.
        let failed = File::create(m.path("n/fail1")).map_err(|e| errno(&e));
        assert_eq!(failed.err(), Some(libc::EIO), "on {on}: create n/fail1");
        missing("n/e");
        expect("/n/e", 1, 1);
        missing("n/a");
        expect("/n/a", 1, 3);
        // /n/sub is still followed.
        missing("n/sub/q");
        expect("/n/sub/q", 0, 2);
    }
}
