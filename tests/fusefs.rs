//! lua/fusefs.lua (Ruby FuseFS's high-level API) mounted for real: the shipped examples, and a
//! recording directory object (tests/fixtures/fusefs_recobj.lua) whose log shows which methods
//! were asked, in which order, for what the user did.
mod common;

use common::{Mount, TempDir, errno, fixture, sh, shipped, sorted_names as names};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::IntoRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn expect_errno<T: std::fmt::Debug>(r: std::io::Result<T>, want: i32, what: &str) {
    match r {
        Ok(v) => panic!("{what}: expected errno {want}, got Ok({v:?})"),
        Err(e) => assert_eq!(errno(&e), want, "{what}: got {e}"),
    }
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .mode()
}

/// Run `cmd` with sh as uid/gid 65534 (needs root and a mount with allow_other).
fn sh_as_nobody(cmd: &str) -> (i32, String, String) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            cmd,
        ])
        .output()
        .expect("run setpriv");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mount_line(mnt: &Path) -> Option<String> {
    let want = mnt.to_string_lossy().to_string();
    fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(want.as_str()))
        .map(str::to_string)
}

// ---------------------------------------------------------------------------------------------
// the recording object

/// A mount of fusefs_recorder.lua (or another fixture taking LOGFILE first) with its call log.
struct Rec {
    m: Mount,
    log: PathBuf,
    _tmp: TempDir,
}

impl Rec {
    fn new(extra: &[&str]) -> Rec {
        Self::of("fusefs_recorder.lua", &[], extra)
    }

    fn of(script: &str, opts: &[&str], extra: &[&str]) -> Rec {
        let tmp = TempDir::new("fusefs-log");
        let log = tmp.path.join("calls.log");
        File::create(&log).unwrap();
        let mut args = vec![log.to_str().unwrap()];
        args.extend_from_slice(extra);
        let m = Mount::with_args(&fixture(script), opts, &args);
        Rec { m, log, _tmp: tmp }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.m.path(rel)
    }

    /// The method calls logged so far, one per line (`method "path" args...`).
    fn calls(&self) -> Vec<String> {
        let bytes = fs::read(&self.log).unwrap();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn clear(&self) {
        File::create(&self.log).unwrap();
    }

    /// A request the daemon serves after the releases of files closed so far.
    fn settle(&self) {
        names(&self.m.mnt);
    }

    fn count(&self, line: &str) -> usize {
        self.calls().iter().filter(|c| c.as_str() == line).count()
    }

    /// Wait (up to 5 s) until `line` was logged `n` times: release reaches the daemon after
    /// close(2) has returned.
    fn wait_count(&self, line: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.count(line) < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(self.count(line), n, "{line} in {:?}", self.calls());
    }

    fn count_prefix(&self, prefix: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }

    /// `seq` appears in the log as consecutive calls.
    fn assert_seq(&self, seq: &[&str]) {
        let calls = self.calls();
        let found = calls
            .windows(seq.len())
            .any(|w| w.iter().zip(seq).all(|(a, b)| a == b));
        assert!(
            found,
            "expected consecutive calls\n  {}\nin the log:\n  {}",
            seq.join("\n  "),
            calls.join("\n  ")
        );
    }

    /// No logged call starts with `prefix` (a method name, optionally with its arguments).
    fn assert_no_call(&self, prefix: &str) {
        let calls = self.calls();
        assert!(
            !calls.iter().any(|c| c.starts_with(prefix)),
            "no call should start with {prefix:?}, got:\n  {}",
            calls.join("\n  ")
        );
    }

    /// No logged call mentions `needle` anywhere.
    fn assert_none(&self, needle: &str) {
        let calls = self.calls();
        let hits: Vec<&String> = calls.iter().filter(|c| c.contains(needle)).collect();
        assert!(
            hits.is_empty(),
            "no call should mention {needle:?}, got:\n  {}",
            calls.join("\n  ")
        );
    }
}

fn q(path: &str) -> String {
    format!("\"{path}\"")
}

// ---------------------------------------------------------------------------------------------
// shipped examples

#[test]
fn hello_example_serves_one_read_only_file() {
    if !common::fuse_available() {
        return;
    }
    let mut m = Mount::new(&shipped("fusefs_hello.lua"), &[]);
    assert_eq!(names(&m.mnt), vec!["hello.txt"]);
    assert_eq!(
        fs::read_to_string(m.path("hello.txt")).unwrap(),
        "Hello, World!\n"
    );
    // No size method: 0 bytes as in FuseFS, yet the whole text is read (direct_io).
    let md = fs::metadata(m.path("hello.txt")).unwrap();
    assert!(md.is_file());
    assert_eq!(md.len(), 0);
    assert_eq!(md.mode() & 0o7777, 0o444);
    let root = fs::metadata(&m.mnt).unwrap();
    assert!(root.is_dir());
    assert_eq!(root.mode() & 0o7777, 0o555);
    // No write methods: a read-only filesystem.
    expect_errno(
        fs::write(m.path("new.txt"), "x"),
        libc::EROFS,
        "create new.txt",
    );
    expect_errno(
        OpenOptions::new().write(true).open(m.path("hello.txt")),
        libc::EROFS,
        "open hello.txt for writing",
    );
    expect_errno(fs::create_dir(m.path("d")), libc::EROFS, "mkdir d");
    expect_errno(
        fs::remove_file(m.path("hello.txt")),
        libc::EROFS,
        "rm hello.txt",
    );
    expect_errno(
        fs::metadata(m.path("nothing")),
        libc::ENOENT,
        "stat nothing",
    );
    // mount_under + run: fsname is the script's name.
    let line = mount_line(&m.mnt).expect("mounted");
    assert!(line.starts_with("fusefs_hello "), "{line}");
    assert_eq!(
        m.unmount(),
        Some(0),
        "run() returns after unmount: {}",
        m.log()
    );
}

/// Unmounts a path on drop (for mounts made without the harness).
struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        if common::is_mounted(&self.0) {
            let ok = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.0)
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.0).status();
            }
        }
    }
}

#[test]
fn hello_example_runs_as_an_executable_through_its_shebang() {
    if !common::fuse_available() {
        return;
    }
    let script = shipped("fusefs_hello.lua");
    assert!(
        fs::read_to_string(&script)
            .unwrap()
            .starts_with("#!/usr/bin/env flufs\n")
    );
    assert_ne!(mode(&script) & 0o111, 0, "fusefs_hello.lua is executable");
    let tmp = TempDir::new("fusefs-shebang");
    let mnt = tmp.path.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let bin_dir = common::flufs_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let _guard = Unmount(mnt.clone());
    // Without -f flufs detaches once the mount is live and the launcher exits 0.
    let status = Command::new(&script)
        .arg(&mnt)
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run fusefs_hello.lua");
    assert!(status.success(), "launcher exit: {status}");
    assert_eq!(
        fs::read_to_string(mnt.join("hello.txt")).unwrap(),
        "Hello, World!\n"
    );
}

#[test]
fn metadir_example_is_writable_with_read_only_views_mounted_in_it() {
    if !common::fuse_available() {
        return;
    }
    let m = Mount::new(&shipped("fusefs_metadir.lua"), &[]);
    assert_eq!(names(&m.mnt), vec!["counter", "dict", "env", "hello"]);
    assert_eq!(names(&m.path("hello")), vec!["everybody", "world"]);
    assert_eq!(
        fs::read_to_string(m.path("hello/world")).unwrap(),
        "Hello, World!\n"
    );
    assert_eq!(
        fs::read_to_string(m.path("hello/everybody")).unwrap(),
        "Hello, Everybody!\n"
    );
    assert_eq!(fs::metadata(m.path("hello/world")).unwrap().len(), 14);
    // A file computed at every open.
    assert_eq!(fs::read_to_string(m.path("counter")).unwrap(), "1\n");
    assert_eq!(fs::read_to_string(m.path("counter")).unwrap(), "2\n");
    // The environment view: the daemon inherited ours.
    let path_var = std::env::var("PATH").unwrap();
    assert!(names(&m.path("env")).contains(&"PATH".to_string()));
    assert_eq!(
        fs::read_to_string(m.path("env/PATH")).unwrap(),
        format!("{path_var}\n")
    );
    assert_eq!(mode(&m.path("env/PATH")) & 0o777, 0o444);
    // The dictionary view.
    assert!(names(&m.path("dict")).contains(&"fuse".to_string()));
    assert!(
        fs::read_to_string(m.path("dict/fuse"))
            .unwrap()
            .starts_with("fuse: a filesystem in userspace")
    );
    expect_errno(
        fs::metadata(m.path("dict/nonword")),
        libc::ENOENT,
        "stat dict/nonword",
    );
    // The views refuse changes: their objects have no write methods, the MetaDir says no.
    expect_errno(
        fs::write(m.path("env/NEW"), "x"),
        libc::EACCES,
        "create env/NEW",
    );
    expect_errno(
        OpenOptions::new().write(true).open(m.path("env/PATH")),
        libc::EACCES,
        "open env/PATH for writing",
    );
    expect_errno(
        fs::remove_file(m.path("env/PATH")),
        libc::EACCES,
        "rm env/PATH",
    );
    expect_errno(
        fs::create_dir(m.path("dict/x")),
        libc::EACCES,
        "mkdir dict/x",
    );
    // The MetaDir itself is writable.
    fs::create_dir(m.path("notes")).unwrap();
    assert!(fs::metadata(m.path("notes")).unwrap().is_dir());
    fs::write(m.path("notes/todo"), "buy milk\n").unwrap();
    assert_eq!(
        fs::read_to_string(m.path("notes/todo")).unwrap(),
        "buy milk\n"
    );
    assert_eq!(names(&m.path("notes")), vec!["todo"]);
    expect_errno(
        fs::remove_dir(m.path("notes")),
        libc::ENOTEMPTY,
        "rmdir notes (not empty)",
    );
    fs::write(m.path("hello/world"), "Bye, World!\n").unwrap();
    assert_eq!(
        fs::read_to_string(m.path("hello/world")).unwrap(),
        "Bye, World!\n"
    );
    fs::rename(m.path("notes/todo"), m.path("notes/done")).unwrap();
    assert_eq!(names(&m.path("notes")), vec!["done"]);
    assert_eq!(
        fs::read_to_string(m.path("notes/done")).unwrap(),
        "buy milk\n"
    );
    fs::remove_file(m.path("notes/done")).unwrap();
    fs::remove_dir(m.path("notes")).unwrap();
    assert!(!names(&m.mnt).contains(&"notes".to_string()));
    // A directory cannot be renamed in place (EXDEV), so mv copies it.
    expect_errno(
        fs::rename(m.path("hello"), m.path("greetings")),
        libc::EXDEV,
        "rename hello/",
    );
    let (code, _, err) = sh(&format!(
        "mv {} {}",
        m.path("hello").display(),
        m.path("greetings").display()
    ));
    assert_eq!(code, 0, "mv hello greetings: {err}");
    assert_eq!(names(&m.path("greetings")), vec!["everybody", "world"]);
    assert_eq!(
        fs::read_to_string(m.path("greetings/world")).unwrap(),
        "Bye, World!\n"
    );
    assert!(!names(&m.mnt).contains(&"hello".to_string()));
}

#[test]
fn metadir_refuses_changes_from_users_other_than_the_one_who_mounted() {
    if !common::fuse_available() || !common::root_for("running as nobody") {
        return;
    }
    let m = Mount::new(&shipped("fusefs_metadir.lua"), &["-o", "allow_other"]);
    let (code, out, err) = sh_as_nobody(&format!("cat {}", m.path("hello/world").display()));
    assert_eq!((code, out.as_str()), (0, "Hello, World!\n"), "{err}");
    let (code, _, err) = sh_as_nobody(&format!("echo x > {}", m.path("intruder").display()));
    assert_ne!(code, 0, "nobody may not create files");
    assert!(err.contains("Permission denied"), "{err}");
    let (code, _, err) = sh_as_nobody(&format!("mkdir {}", m.path("intruder.d").display()));
    assert_ne!(code, 0);
    assert!(err.contains("Permission denied"), "{err}");
    let (code, _, err) = sh_as_nobody(&format!("rm -f {}", m.path("hello/world").display()));
    assert_ne!(code, 0);
    assert!(err.contains("Permission denied"), "{err}");
    assert_eq!(names(&m.mnt), vec!["counter", "dict", "env", "hello"]);
    // The owner (root here) still can.
    fs::write(m.path("mine"), "ok").unwrap();
    assert_eq!(fs::read_to_string(m.path("mine")).unwrap(), "ok");
}

// ---------------------------------------------------------------------------------------------
// flufs style, FuseFS style, FuseDir

#[test]
fn object_without_methods_is_an_empty_read_only_directory() {
    if !common::fuse_available() {
        return;
    }
    let m = Mount::new(&fixture("fusefs_empty.lua"), &[]);
    assert!(names(&m.mnt).is_empty());
    assert_eq!(mode(&m.mnt), libc::S_IFDIR | 0o555);
    expect_errno(fs::metadata(m.path("x")), libc::ENOENT, "stat x");
    expect_errno(fs::write(m.path("x"), "x"), libc::EROFS, "create x");
    expect_errno(fs::create_dir(m.path("d")), libc::EROFS, "mkdir d");
    expect_errno(
        std::os::unix::fs::symlink("t", m.path("l")),
        libc::EPERM,
        "symlink",
    );
}

#[test]
fn fusefs_style_script_mounts_with_its_options_and_fusedir_splits_paths() {
    if !common::fuse_available() {
        return;
    }
    let mut m = Mount::new(&fixture("fusefs_fusedir.lua"), &[]);
    let line = mount_line(&m.mnt).expect("mounted");
    assert!(line.starts_with("fusefs_paths "), "fsname option: {line}");
    assert!(line.contains("allow_other"), "allow_other option: {line}");
    assert_eq!(names(&m.mnt), vec!["colon", "dot"]);
    assert_eq!(names(&m.path("dot/d1/d2")), vec!["d1", "f1"]);
    // The mounted objects see paths from their own root.
    assert_eq!(
        fs::read_to_string(m.path("dot/d1/d2/f3")).unwrap(),
        "tag=dot base=d1 rest=/d2/f3 scan=d1,d2,f3\n"
    );
    assert_eq!(
        fs::read_to_string(m.path("dot/f1")).unwrap(),
        "tag=dot base=f1 rest=nil scan=f1\n"
    );
    // Class:new(...) passes the same arguments to initialize as Class.new(...).
    assert_eq!(
        fs::read_to_string(m.path("colon/d9/f2")).unwrap(),
        "tag=colon base=d9 rest=/f2 scan=d9,f2\n"
    );
    assert_eq!(m.unmount(), Some(0), "{}", m.log());
}

#[test]
fn fusefs_run_with_an_unknown_option_fails_naming_it() {
    if !common::fuse_available() {
        return;
    }
    match Mount::try_with_args(&fixture("fusefs_badopt.lua"), &[], &[]) {
        Ok(m) => panic!("mounted with a bad option: {}", m.log()),
        Err(e) => {
            assert!(e.contains("no_such_option"), "{e}");
            assert!(e.contains("fusefs.run"), "{e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// check order, method by method

#[test]
fn getattr_asks_is_directory_then_is_file_can_write_is_executable_size() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    let md = fs::metadata(r.path("run.sh")).unwrap();
    let p = q("/run.sh");
    r.assert_seq(&[
        &format!("is_directory {p}"),
        &format!("is_file {p}"),
        &format!("can_write {p}"),
        &format!("is_executable {p}"),
        &format!("size {p}"),
    ]);
    // writable 0666 | executable 0111
    assert_eq!(md.mode(), libc::S_IFREG | 0o777);
    assert_eq!(md.len(), 19);
    assert_eq!(md.nlink(), 1);
    let (code, out, err) = sh(&format!("{}", r.path("run.sh").display()));
    assert_eq!((code, out.as_str()), (0, "ran\n"), "{err}");
    assert_eq!(mode(&r.path("ro.txt")), libc::S_IFREG | 0o444);
    assert_eq!(mode(&r.path("hello.txt")), libc::S_IFREG | 0o666);
    // A directory: is_directory answers, is_file is never asked.
    r.clear();
    let md = fs::metadata(r.path("sub")).unwrap();
    assert!(md.is_dir());
    assert_eq!(
        md.mode() & 0o7777,
        0o755,
        "writable object: 0755 directories"
    );
    assert_eq!(r.count(&format!("is_directory {}", q("/sub"))), 1);
    r.assert_no_call("is_file");
    // Neither: ENOENT after both questions.
    r.clear();
    expect_errno(fs::metadata(r.path("nope")), libc::ENOENT, "stat nope");
    r.assert_seq(&[
        &format!("is_directory {}", q("/nope")),
        &format!("is_file {}", q("/nope")),
    ]);
    r.assert_no_call("can_write");
}

#[test]
fn without_size_method_files_show_zero_bytes_and_read_whole() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&["nosize"]);
    assert_eq!(fs::metadata(r.path("hello.txt")).unwrap().len(), 0);
    assert_eq!(fs::read_to_string(r.path("hello.txt")).unwrap(), "Hello\n");
    r.assert_no_call("size");
}

#[test]
fn readdir_asks_is_directory_before_contents_and_never_for_the_root() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    assert_eq!(names(&r.path("sub")), vec!["inner.txt"]);
    r.assert_seq(&[
        &format!("is_directory {}", q("/sub")),
        &format!("contents {}", q("/sub")),
    ]);
    r.clear();
    let root = names(&r.m.mnt);
    assert_eq!(
        root,
        vec![
            "boom",
            "button",
            "eperm",
            "hello.txt",
            "locked",
            "raw",
            "ro.txt",
            "run.sh",
            "sub",
            "whoami"
        ]
    );
    assert_eq!(r.count(&format!("contents {}", q("/"))), 1);
    assert_eq!(r.count(&format!("is_directory {}", q("/"))), 0);
    // A file is not listable: is_directory says no and contents is not asked.
    r.clear();
    expect_errno(
        fs::read_dir(r.path("hello.txt")).map(|_| ()),
        libc::ENOTDIR,
        "read_dir on a file",
    );
    r.assert_no_call("contents");
}

#[test]
fn reading_asks_is_file_before_read_file_once_per_open() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    let mut f = File::open(r.path("hello.txt")).unwrap();
    let p = q("/hello.txt");
    r.assert_seq(&[
        &format!("raw_open {p} \"r\""),
        &format!("is_file {p}"),
        &format!("read_file {p}"),
    ]);
    let mut s = String::new();
    let mut buf = [0u8; 2];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        s.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
    assert_eq!(s, "Hello\n");
    drop(f);
    assert_eq!(
        r.count(&format!("read_file {p}")),
        1,
        "one snapshot per open"
    );
    r.assert_no_call("write_to");
}

#[test]
fn errors_raised_by_methods_reach_the_caller() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    expect_errno(
        fs::read(r.path("eperm")),
        libc::EPERM,
        "read_file raising EPERM",
    );
    expect_errno(
        fs::read(r.path("boom")),
        libc::EIO,
        "read_file raising a runtime error",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !r.m.log().contains("kaboom") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(r.m.log().contains("kaboom"), "log: {}", r.m.log());
    // write_to raising ENOSPC: close() reports it.
    let f = File::create(r.path("full.txt")).unwrap();
    f.write_at(b"data", 0).unwrap();
    let fd = f.into_raw_fd();
    let rc = unsafe { libc::close(fd) };
    let e = std::io::Error::last_os_error();
    assert_eq!(rc, -1, "close should fail");
    assert_eq!(errno(&e), libc::ENOSPC, "{e}");
}

#[test]
fn new_file_is_checked_then_buffered_and_written_whole_on_close() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    let mut f = File::create(r.path("new.txt")).unwrap();
    let p = q("/new.txt");
    r.assert_seq(&[
        &format!("is_file {p}"),
        &format!("can_write {p}"),
        &format!("raw_open {p} \"w\""),
    ]);
    f.write_all(b"one ").unwrap();
    f.write_all(b"two ").unwrap();
    f.write_all(b"three\n").unwrap();
    // A child started meanwhile closes its inherited copy of the descriptor at exec: that
    // close is not the opener's and hands nothing over.
    let st = Command::new("true").status().unwrap();
    assert!(st.success());
    // While open, the file exists with the size written so far, and nothing was handed over.
    assert_eq!(fs::metadata(r.path("new.txt")).unwrap().len(), 14);
    assert!(names(&r.m.mnt).contains(&"new.txt".to_string()));
    assert_eq!(r.count_prefix("write_to"), 0, "{:?}", r.calls());
    drop(f);
    assert_eq!(r.count(&format!("write_to {p} \"one two three\\n\"")), 1);
    assert_eq!(r.count_prefix("write_to"), 1, "{:?}", r.calls());
    assert_eq!(
        fs::read_to_string(r.path("new.txt")).unwrap(),
        "one two three\n"
    );
    // Many small sequential writes.
    let data: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut f = File::create(r.path("big.txt")).unwrap();
    for chunk in data.chunks(1000) {
        f.write_all(chunk).unwrap();
    }
    drop(f);
    assert_eq!(fs::read(r.path("big.txt")).unwrap(), data);
    assert_eq!(fs::metadata(r.path("big.txt")).unwrap().len(), 200_000);
}

#[test]
fn can_write_false_refuses_writes_before_anything_is_written() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    expect_errno(
        OpenOptions::new().write(true).open(r.path("ro.txt")),
        libc::EACCES,
        "open ro.txt for writing",
    );
    expect_errno(
        OpenOptions::new().append(true).open(r.path("ro.txt")),
        libc::EACCES,
        "open ro.txt for append",
    );
    expect_errno(
        fs::write(r.path("locked/new.txt"), "x"),
        libc::EACCES,
        "create in locked/",
    );
    let p = q("/locked/new.txt");
    r.assert_seq(&[&format!("is_file {p}"), &format!("can_write {p}")]);
    r.assert_no_call("raw_open \"/locked/new.txt\"");
    r.assert_no_call("write_to");
    r.assert_no_call("read_file");
    assert_eq!(fs::read_to_string(r.path("ro.txt")).unwrap(), "read only\n");
}

#[test]
fn overwriting_with_o_trunc_hands_over_the_new_contents_only() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    fs::write(r.path("hello.txt"), "replaced\n").unwrap();
    let p = q("/hello.txt");
    r.assert_seq(&[&format!("raw_open {p} \"w\""), &format!("can_write {p}")]);
    assert_eq!(r.count(&format!("write_to {p} \"replaced\\n\"")), 1);
    assert_eq!(r.count_prefix("write_to"), 1, "{:?}", r.calls());
    r.assert_no_call("read_file");
    r.assert_no_call("touch");
    assert_eq!(
        fs::read_to_string(r.path("hello.txt")).unwrap(),
        "replaced\n"
    );
    // Emptying a file (`: > f`): write_to with "".
    r.clear();
    let (code, _, err) = sh(&format!(": > {}", r.path("hello.txt").display()));
    assert_eq!(code, 0, "{err}");
    // only truncated: handed over at the last close (release, after close returns)
    r.wait_count(&format!("write_to {p} \"\""), 1);
    assert_eq!(fs::metadata(r.path("hello.txt")).unwrap().len(), 0);
    // A shell redirection closes a duplicate of the file before writing to it: still one
    // write_to, with the new contents.
    r.clear();
    let (code, _, err) = sh(&format!("echo shell > {}", r.path("hello.txt").display()));
    assert_eq!(code, 0, "{err}");
    r.settle();
    assert_eq!(r.count_prefix("write_to"), 1, "{:?}", r.calls());
    assert_eq!(r.count(&format!("write_to {p} \"shell\\n\"")), 1);
}

#[test]
fn patching_in_place_reads_the_file_then_writes_it_whole() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    let p = q("/hello.txt");
    // Read-write: can_write, is_file, read_file at open.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(r.path("hello.txt"))
        .unwrap();
    r.assert_seq(&[
        &format!("raw_open {p} \"rw\""),
        &format!("can_write {p}"),
        &format!("is_file {p}"),
        &format!("read_file {p}"),
    ]);
    f.write_at(b"J", 0).unwrap();
    let mut buf = [0u8; 6];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"Jello\n");
    drop(f);
    assert_eq!(r.count(&format!("write_to {p} \"Jello\\n\"")), 1);
    // Write-only without O_TRUNC keeps the rest of the file.
    let f = OpenOptions::new()
        .write(true)
        .open(r.path("hello.txt"))
        .unwrap();
    f.write_at(b"ELL", 1).unwrap();
    drop(f);
    assert_eq!(fs::read_to_string(r.path("hello.txt")).unwrap(), "JELLo\n");
    // Opened for writing but not written to: nothing is handed over.
    r.clear();
    drop(
        OpenOptions::new()
            .write(true)
            .open(r.path("hello.txt"))
            .unwrap(),
    );
    r.settle();
    r.assert_no_call("write_to");
    r.assert_no_call("read_file");
}

#[test]
fn appending_hands_over_old_contents_plus_the_new_bytes() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    let mut f = OpenOptions::new()
        .append(true)
        .open(r.path("hello.txt"))
        .unwrap();
    let p = q("/hello.txt");
    r.assert_seq(&[
        &format!("raw_open {p} \"wa\""),
        &format!("can_write {p}"),
        &format!("is_file {p}"),
        &format!("read_file {p}"),
    ]);
    f.write_all(b"more\n").unwrap();
    drop(f);
    assert_eq!(r.count(&format!("write_to {p} \"Hello\\nmore\\n\"")), 1);
    let (code, _, err) = sh(&format!("echo again >> {}", r.path("hello.txt").display()));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        fs::read_to_string(r.path("hello.txt")).unwrap(),
        "Hello\nmore\nagain\n"
    );
}

#[test]
fn touch_calls_the_touch_method_and_writes_nothing() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    let (code, _, err) = sh(&format!("touch {}", r.path("button").display()));
    assert_eq!(code, 0, "{err}");
    assert_eq!(r.count(&format!("touch {}", q("/button"))), 1);
    r.settle();
    r.assert_no_call("write_to");
    // A file the user may not write: touch still reaches the object.
    let (code, _, err) = sh(&format!("touch {}", r.path("ro.txt").display()));
    assert_eq!(code, 0, "{err}");
    assert_eq!(r.count(&format!("touch {}", q("/ro.txt"))), 1);
    // Truncating is not touching.
    r.clear();
    fs::write(r.path("hello.txt"), "x").unwrap();
    r.settle();
    r.assert_no_call("touch");
}

#[test]
fn created_file_left_empty_is_not_handed_over_with_handle_editor() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    let (code, _, err) = sh(&format!("touch {}", r.path("fresh").display()));
    assert_eq!(code, 0, "{err}");
    r.assert_seq(&[
        &format!("is_file {}", q("/fresh")),
        &format!("can_write {}", q("/fresh")),
    ]);
    // (the listing is served after the file's release)
    assert!(!names(&r.m.mnt).contains(&"fresh".to_string()));
    r.assert_no_call("write_to");
}

#[test]
fn created_file_left_empty_is_handed_over_without_handle_editor() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&["noeditor"]);
    let (code, _, err) = sh(&format!("touch {}", r.path("fresh").display()));
    assert_eq!(code, 0, "{err}");
    r.wait_count(&format!("write_to {} \"\"", q("/fresh")), 1);
    assert!(names(&r.m.mnt).contains(&"fresh".to_string()));
}

#[test]
fn truncate_reads_cuts_and_writes_back() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    let (code, _, err) = sh(&format!("truncate -s 2 {}", r.path("hello.txt").display()));
    assert_eq!(code, 0, "{err}");
    let p = q("/hello.txt");
    r.wait_count(&format!("write_to {p} \"He\""), 1);
    assert_eq!(fs::read_to_string(r.path("hello.txt")).unwrap(), "He");
    // Growing pads with zeros.
    let (code, _, err) = sh(&format!("truncate -s 4 {}", r.path("hello.txt").display()));
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read(r.path("hello.txt")).unwrap(), b"He\0\0");
    expect_errno(
        OpenOptions::new()
            .write(true)
            .open(r.path("ro.txt"))
            .and_then(|f| f.set_len(0)),
        libc::EACCES,
        "truncate ro.txt",
    );
}

#[test]
fn unlink_asks_is_file_then_can_delete_then_deletes() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    fs::remove_file(r.path("hello.txt")).unwrap();
    let p = q("/hello.txt");
    r.assert_seq(&[
        &format!("is_file {p}"),
        &format!("can_delete {p}"),
        &format!("delete {p}"),
    ]);
    assert!(!names(&r.m.mnt).contains(&"hello.txt".to_string()));
    expect_errno(fs::remove_file(r.path("ro.txt")), libc::EACCES, "rm ro.txt");
    r.assert_seq(&[
        &format!("is_file {}", q("/ro.txt")),
        &format!("can_delete {}", q("/ro.txt")),
    ]);
    r.assert_no_call("delete \"/ro.txt\"");
    assert!(names(&r.m.mnt).contains(&"ro.txt".to_string()));
}

#[test]
fn mkdir_asks_can_mkdir_only_after_is_directory_and_is_file_say_no() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    fs::create_dir(r.path("newdir")).unwrap();
    let p = q("/newdir");
    r.assert_seq(&[
        &format!("is_directory {p}"),
        &format!("is_file {p}"),
        &format!("can_mkdir {p}"),
        &format!("mkdir {p}"),
    ]);
    assert!(fs::metadata(r.path("newdir")).unwrap().is_dir());
    expect_errno(
        fs::create_dir(r.path("locked/x")),
        libc::EACCES,
        "mkdir locked/x",
    );
    r.assert_seq(&[
        &format!("is_file {}", q("/locked/x")),
        &format!("can_mkdir {}", q("/locked/x")),
    ]);
    r.assert_no_call("mkdir \"/locked/x\"");
    // Existing names never reach can_mkdir.
    r.clear();
    expect_errno(fs::create_dir(r.path("sub")), libc::EEXIST, "mkdir sub");
    expect_errno(
        fs::create_dir(r.path("hello.txt")),
        libc::EEXIST,
        "mkdir hello.txt",
    );
    r.assert_no_call("can_mkdir");
}

#[test]
fn rmdir_asks_is_directory_then_can_rmdir_then_removes() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    fs::create_dir(r.path("gone")).unwrap();
    r.clear();
    fs::remove_dir(r.path("gone")).unwrap();
    let p = q("/gone");
    r.assert_seq(&[
        &format!("is_directory {p}"),
        &format!("can_rmdir {p}"),
        &format!("rmdir {p}"),
    ]);
    assert!(!names(&r.m.mnt).contains(&"gone".to_string()));
    expect_errno(
        fs::remove_dir(r.path("locked")),
        libc::EACCES,
        "rmdir locked",
    );
    r.assert_no_call("rmdir \"/locked\"");
    // The object's rmdir raising ENOTEMPTY.
    expect_errno(fs::remove_dir(r.path("sub")), libc::ENOTEMPTY, "rmdir sub");
    expect_errno(
        fs::remove_dir(r.path("hello.txt")),
        libc::ENOTDIR,
        "rmdir a file",
    );
}

#[test]
fn rename_moves_contents_with_fusefs_checks() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    fs::rename(r.path("hello.txt"), r.path("greeting.txt")).unwrap();
    let (a, b) = (q("/hello.txt"), q("/greeting.txt"));
    r.assert_seq(&[
        &format!("is_file {a}"),
        &format!("can_delete {a}"),
        &format!("can_write {b}"),
        &format!("read_file {a}"),
        &format!("delete {a}"),
        &format!("write_to {b} \"Hello\\n\""),
    ]);
    assert_eq!(
        fs::read_to_string(r.path("greeting.txt")).unwrap(),
        "Hello\n"
    );
    expect_errno(fs::metadata(r.path("hello.txt")), libc::ENOENT, "old name");
    expect_errno(
        fs::rename(r.path("ro.txt"), r.path("mine.txt")),
        libc::EACCES,
        "rename ro.txt",
    );
    expect_errno(
        fs::rename(r.path("greeting.txt"), r.path("locked/g.txt")),
        libc::EACCES,
        "rename into locked/",
    );
    assert_eq!(
        fs::read_to_string(r.path("greeting.txt")).unwrap(),
        "Hello\n"
    );
    expect_errno(
        fs::rename(r.path("sub"), r.path("sub2")),
        libc::EXDEV,
        "rename a directory",
    );
}

#[test]
fn raw_files_are_read_and_written_through_raw_methods() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    let p = q("/raw/data");
    assert_eq!(
        fs::read_to_string(r.path("raw/data")).unwrap(),
        "0123456789"
    );
    r.assert_seq(&[&format!("raw_open {p} \"r\"")]);
    assert!(
        r.count_prefix(&format!("raw_read {p} 0 ")) >= 1,
        "{:?}",
        r.calls()
    );
    r.wait_count(&format!("raw_close {p}"), 1);
    // Offsets and sizes go straight to raw_write, no buffering.
    let f = OpenOptions::new()
        .write(true)
        .open(r.path("raw/data"))
        .unwrap();
    r.assert_seq(&[&format!("raw_open {p} \"w\"")]);
    f.write_at(b"AB", 3).unwrap();
    assert_eq!(r.count(&format!("raw_write {p} 3 2 \"AB\"")), 1);
    drop(f);
    r.wait_count(&format!("raw_close {p}"), 2);
    assert_eq!(
        fs::read_to_string(r.path("raw/data")).unwrap(),
        "012AB56789"
    );
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(r.path("raw/data"))
        .unwrap();
    r.assert_seq(&[&format!("raw_open {p} \"rw\"")]);
    let mut buf = [0u8; 3];
    f.read_exact_at(&mut buf, 2).unwrap();
    assert_eq!(&buf, b"2AB");
    assert!(
        r.count_prefix(&format!("raw_read {p} 2 ")) >= 1,
        "{:?}",
        r.calls()
    );
    drop(f);
    let mut f = OpenOptions::new()
        .append(true)
        .open(r.path("raw/data"))
        .unwrap();
    r.assert_seq(&[&format!("raw_open {p} \"wa\"")]);
    f.write_all(b"!").unwrap();
    drop(f);
    assert_eq!(
        fs::read_to_string(r.path("raw/data")).unwrap(),
        "012AB56789!"
    );
    // A new raw file.
    fs::write(r.path("raw/made"), "fresh").unwrap();
    r.assert_seq(&[
        &format!("is_file {}", q("/raw/made")),
        &format!("can_write {}", q("/raw/made")),
        &format!("raw_open {} \"w\"", q("/raw/made")),
    ]);
    assert_eq!(
        r.count(&format!("raw_write {} 0 5 \"fresh\"", q("/raw/made"))),
        1
    );
    assert_eq!(fs::read_to_string(r.path("raw/made")).unwrap(), "fresh");
    r.assert_no_call("read_file \"/raw");
    r.assert_no_call("write_to \"/raw");
}

#[test]
fn reader_uid_and_gid_are_those_of_the_calling_process() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::of("fusefs_recorder.lua", &["-o", "allow_other"], &[]);
    let uid = unsafe { libc::getuid() };
    let gid = unsafe { libc::getgid() };
    assert_eq!(
        fs::read_to_string(r.path("whoami")).unwrap(),
        format!("{uid} {gid}\n")
    );
    if common::root_for("reading as nobody") {
        let (code, out, err) = sh_as_nobody(&format!("cat {}", r.path("whoami").display()));
        assert_eq!((code, out.as_str()), (0, "65534 65534\n"), "{err}");
    }
}

#[test]
fn mounted_object_sees_paths_from_its_own_root() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::of("fusefs_metamount.lua", &[], &[]);
    assert_eq!(names(&r.m.mnt), vec!["outer"]);
    assert_eq!(names(&r.path("outer")), vec!["note", "rec"]);
    assert_eq!(
        fs::read_to_string(r.path("outer/note")).unwrap(),
        "a MetaDir file\n"
    );
    r.assert_none("outer");
    assert_eq!(
        fs::read_to_string(r.path("outer/rec/sub/inner.txt")).unwrap(),
        "inner\n"
    );
    r.assert_seq(&[
        &format!("is_file {}", q("/sub/inner.txt")),
        &format!("read_file {}", q("/sub/inner.txt")),
    ]);
    assert!(names(&r.path("outer/rec")).contains(&"hello.txt".to_string()));
    assert_eq!(r.count(&format!("contents {}", q("/"))), 1);
    fs::write(r.path("outer/rec/new.txt"), "n").unwrap();
    assert_eq!(r.count(&format!("write_to {} \"n\"", q("/new.txt"))), 1);
    fs::create_dir(r.path("outer/rec/nd")).unwrap();
    r.assert_seq(&[
        &format!("can_mkdir {}", q("/nd")),
        &format!("mkdir {}", q("/nd")),
    ]);
    assert_eq!(
        fs::read_to_string(r.path("outer/rec/raw/data")).unwrap(),
        "0123456789"
    );
    r.assert_seq(&[&format!("raw_open {} \"r\"", q("/raw/data"))]);
    fs::remove_file(r.path("outer/rec/new.txt")).unwrap();
    r.assert_seq(&[
        &format!("is_file {}", q("/new.txt")),
        &format!("can_delete {}", q("/new.txt")),
        &format!("delete {}", q("/new.txt")),
    ]);
    r.assert_none("outer");
    expect_errno(
        fs::remove_dir(r.path("outer/rec")),
        libc::ENOTEMPTY,
        "rmdir a mounted object with contents",
    );
}

// ---------------------------------------------------------------------------------------------
// editor files

#[test]
fn editor_swap_and_backup_files_live_in_memory_away_from_the_object() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    for name in [".hello.txt.swp", "hello.txt~", "#hello.txt#", ".notes.swpx"] {
        let p = r.path(name);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&p)
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        f.write_all(b"swap data").unwrap();
        drop(f);
        assert_eq!(fs::read(&p).unwrap(), b"swap data", "{name}");
        assert_eq!(fs::metadata(&p).unwrap().len(), 9, "{name}");
        assert!(names(&r.m.mnt).contains(&name.to_string()), "{name} listed");
        expect_errno(
            OpenOptions::new().write(true).create_new(true).open(&p),
            libc::EEXIST,
            name,
        );
        fs::remove_file(&p).unwrap();
        expect_errno(fs::metadata(&p), libc::ENOENT, name);
    }
    // Emacs lock files are symlinks.
    std::os::unix::fs::symlink("user@host.1234", r.path(".#hello.txt")).unwrap();
    assert_eq!(
        fs::read_link(r.path(".#hello.txt")).unwrap(),
        PathBuf::from("user@host.1234")
    );
    fs::remove_file(r.path(".#hello.txt")).unwrap();
    // vim's writability probe while a swap file is open in that directory.
    let swap = File::create(r.path(".hello.txt.swp")).unwrap();
    let f = File::create(r.path("4913")).unwrap();
    drop(f);
    fs::remove_file(r.path("4913")).unwrap();
    drop(swap);
    fs::remove_file(r.path(".hello.txt.swp")).unwrap();
    r.assert_none("swp");
    r.assert_none("~");
    r.assert_none("#");
    r.assert_none("4913");
    // Backup by rename (vim's default): the object sees the file deleted, then rewritten.
    fs::rename(r.path("hello.txt"), r.path("hello.txt~")).unwrap();
    assert_eq!(fs::read_to_string(r.path("hello.txt~")).unwrap(), "Hello\n");
    fs::write(r.path("hello.txt"), "Edited\n").unwrap();
    fs::remove_file(r.path("hello.txt~")).unwrap();
    assert_eq!(fs::read_to_string(r.path("hello.txt")).unwrap(), "Edited\n");
    r.assert_none("~");
    assert_eq!(r.count(&format!("delete {}", q("/hello.txt"))), 1);
    assert_eq!(
        r.count(&format!("write_to {} \"Edited\\n\"", q("/hello.txt"))),
        1
    );
    // Without a swap file around, a numeric name is an ordinary file.
    fs::write(r.path("4913"), "n").unwrap();
    assert_eq!(r.count(&format!("can_write {}", q("/4913"))), 1);
}

#[test]
fn without_handle_editor_swap_files_go_to_the_object() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&["noeditor"]);
    fs::write(r.path(".x.swp"), "swap").unwrap();
    r.assert_seq(&[
        &format!("is_file {}", q("/.x.swp")),
        &format!("can_write {}", q("/.x.swp")),
    ]);
    assert_eq!(r.count(&format!("write_to {} \"swap\"", q("/.x.swp"))), 1);
}

#[test]
fn vim_edits_a_file_without_the_object_seeing_its_swap_files() {
    if !common::fuse_available() {
        return;
    }
    let (code, _, _) = sh("command -v vim >/dev/null");
    if code != 0 && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("vim is missing but CI=true: .ci/run installs it");
    }
    if code != 0 {
        eprintln!("skipping: vim not installed");
        return;
    }
    let r = Rec::new(&[]);
    let out = Command::new("vim")
        .args([
            "-u",
            "NONE",
            "-i",
            "NONE",
            "-N",
            "-T",
            "dumb",
            "-c",
            "set backup",
            "-c",
            "%s/Hello/Howdy/",
            "-c",
            "wq",
            "hello.txt",
        ])
        .current_dir(&r.m.mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run vim");
    assert!(out.success(), "vim: {out}");
    assert_eq!(fs::read_to_string(r.path("hello.txt")).unwrap(), "Howdy\n");
    assert_eq!(
        r.count(&format!("write_to {} \"Howdy\\n\"", q("/hello.txt"))),
        1
    );
    r.assert_none("swp");
    r.assert_none("~");
    r.assert_none("4913");
    let left: Vec<String> = names(&r.m.mnt)
        .into_iter()
        .filter(|n| n.contains("swp") || n.ends_with('~'))
        .collect();
    assert!(left.is_empty(), "editor files left: {left:?}");
}

#[test]
fn paths_with_odd_bytes_reach_the_object_intact() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    let name = "sp ace-é.txt";
    fs::write(r.path(name), "odd").unwrap();
    assert_eq!(fs::read_to_string(r.path(name)).unwrap(), "odd");
    assert!(names(&r.m.mnt).contains(&name.to_string()));
    let c = CString::new(r.path(name).as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::access(c.as_ptr(), libc::F_OK) }, 0);
}

#[test]
fn files_unlinked_or_renamed_while_open_are_handed_over_under_their_current_name() {
    if !common::fuse_available() {
        return;
    }
    let r = Rec::new(&[]);
    // A new file renamed before it is closed: written whole under the new name.
    let mut f = File::create(r.path("part")).unwrap();
    f.write_all(b"data").unwrap();
    fs::rename(r.path("part"), r.path("final")).unwrap();
    f.write_all(b" more").unwrap();
    drop(f);
    r.settle();
    assert_eq!(
        r.count(&format!("write_to {} \"data more\"", q("/final"))),
        1
    );
    r.assert_no_call("write_to \"/part\"");
    assert_eq!(fs::read_to_string(r.path("final")).unwrap(), "data more");
    let listed = names(&r.m.mnt);
    assert!(listed.contains(&"final".to_string()), "{listed:?}");
    assert!(!listed.contains(&"part".to_string()), "{listed:?}");
    // A new file removed before it is closed never reaches the object.
    let mut f = File::create(r.path("scratch")).unwrap();
    f.write_all(b"tmp").unwrap();
    fs::remove_file(r.path("scratch")).unwrap();
    f.write_all(b"more").unwrap();
    drop(f);
    r.settle();
    r.assert_no_call("write_to \"/scratch\"");
    r.assert_no_call("delete \"/scratch\"");
    assert!(!names(&r.m.mnt).contains(&"scratch".to_string()));
    // An existing file removed while open for writing stays removed.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(r.path("hello.txt"))
        .unwrap();
    f.write_all(b"late").unwrap();
    fs::remove_file(r.path("hello.txt")).unwrap();
    drop(f);
    r.settle();
    assert_eq!(r.count(&format!("delete {}", q("/hello.txt"))), 1);
    r.assert_no_call("write_to \"/hello.txt\"");
    assert!(!names(&r.m.mnt).contains(&"hello.txt".to_string()));
}
