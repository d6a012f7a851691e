//! Runaway scripts and process faults: --op-timeout, --lua-memory, kill -9 with auto_unmount,
//! SIGTERM with files open.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Mount, errno, fixture, fuse_available, is_mounted, shipped};

fn read_err(path: &std::path::Path) -> i32 {
    let mut s = String::new();
    let e = std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .expect_err("read should fail");
    errno(&e)
}

#[test]
fn endless_loop_is_interrupted_by_op_timeout_and_mount_keeps_serving() {
    if !fuse_available() {
        return;
    }
    let m = Mount::new(&fixture("faults_runaway.lua"), &["--op-timeout", "0.5"]);
    let start = Instant::now();
    assert_eq!(read_err(&m.path("loop")), libc::ETIMEDOUT);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(std::fs::read_to_string(m.path("ok")).unwrap(), "0123456789");
    assert!(m.log().contains("--op-timeout"), "log: {}", m.log());
}

/// A `__gc` finalizer that never returns is stopped after --op-timeout and logged with where it
/// was, and the mount keeps serving (Lua runs finalizers with debug hooks off, so flufs runs a
/// script's finalizers in a coroutine of their own). The read that collected it gets its data,
/// or ETIMEDOUT when its own --op-timeout ran out first (the finalizer's time is the read's
/// too). A finalizer that raises an error is logged with its traceback.
#[test]
fn runaway_or_failing_finalizer_is_stopped_and_logged_and_mount_keeps_serving() {
    if !fuse_available() {
        return;
    }
    let m = Mount::new(&fixture("faults_runaway.lua"), &["--op-timeout", "0.5"]);
    let gc = m.path("gc");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read_to_string(&gc).map_err(|e| errno(&e)));
    });
    // On a hang the guard's unmount and kill end the blocked read.
    let got = rx
        .recv_timeout(Duration::from_secs(15))
        .unwrap_or_else(|_| {
            panic!(
                "reading /gc hung: the finalizer was not stopped\n{}",
                m.log()
            )
        });
    match got {
        Ok(s) => assert_eq!(s, "collected"),
        Err(e) => assert_eq!(e, libc::ETIMEDOUT, "reading /gc"),
    }
    assert_eq!(std::fs::read_to_string(m.path("ok")).unwrap(), "0123456789");
    let log = m.log();
    assert!(
        log.contains("finalizer")
            && log.contains("--op-timeout")
            && log.contains("faults_runaway.lua:"),
        "log: {log}"
    );
    assert_eq!(
        std::fs::read_to_string(m.path("gcerr")).unwrap(),
        "collected"
    );
    let log = m.log();
    assert!(
        log.contains("boom in a finalizer") && log.contains("traceback"),
        "log: {log}"
    );
    assert_eq!(std::fs::read_to_string(m.path("ok")).unwrap(), "0123456789");
}

#[test]
fn unbounded_allocation_gives_enomem_under_lua_memory() {
    if !fuse_available() {
        return;
    }
    let m = Mount::new(&fixture("faults_runaway.lua"), &["--lua-memory", "64"]);
    assert_eq!(read_err(&m.path("hog")), libc::ENOMEM);
    // The memory is released with the failed request: other files still read.
    assert_eq!(std::fs::read_to_string(m.path("ok")).unwrap(), "0123456789");
    assert_eq!(read_err(&m.path("hog")), libc::ENOMEM);
    assert_eq!(std::fs::read_to_string(m.path("ok")).unwrap(), "0123456789");
}

#[test]
fn infinite_recursion_gives_eio_and_mount_keeps_serving() {
    if !fuse_available() {
        return;
    }
    let m = Mount::new(&fixture("faults_runaway.lua"), &[]);
    assert_eq!(read_err(&m.path("recurse")), libc::EIO);
    assert!(m.log().contains("stack overflow"), "log: {}", m.log());
    assert_eq!(std::fs::read_to_string(m.path("ok")).unwrap(), "0123456789");
}

#[test]
fn kill_9_with_auto_unmount_leaves_no_stale_mount() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::new(&shipped("hellofs.lua"), &["-o", "auto_unmount"]);
    assert_eq!(
        std::fs::read_to_string(m.path("hello")).unwrap(),
        "Hello World!\n"
    );
    let pid = m.pid().expect("daemon pid") as i32;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    m.reap();
    // fusermount3 unmounts once it sees the daemon's end of its socket close.
    let deadline = Instant::now() + Duration::from_secs(30);
    while is_mounted(&m.mnt) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !is_mounted(&m.mnt),
        "mount left behind after kill -9; fusermount3 processes: {:?}; daemon log: {}",
        common::sh("pgrep -fa fusermount3").1,
        m.log()
    );
    // The directory is usable again (not "Transport endpoint is not connected").
    assert!(std::fs::read_dir(&m.mnt).is_ok());
}

#[test]
fn sigterm_with_an_open_file_unmounts_and_exits_zero() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::new(&shipped("luafs.lua"), &[]);
    let mut f = std::fs::File::create(m.path("open-file")).unwrap();
    f.write_all(b"written before the signal").unwrap();
    assert_eq!(
        std::fs::read_to_string(m.path("open-file")).unwrap(),
        "written before the signal"
    );
    let pid = m.pid().expect("daemon pid") as i32;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let code = m.reap();
    assert_eq!(code, Some(0), "daemon exit status; log: {}", m.log());
    assert!(!is_mounted(&m.mnt), "mount left behind after SIGTERM");
    drop(f);
}

#[test]
fn misspelled_operation_is_reported_with_the_closest_real_name() {
    if !fuse_available() {
        return;
    }
    let m = Mount::new(&fixture("faults_typo.lua"), &[]);
    let log = m.log();
    assert!(
        log.contains("'readir'") && log.contains("did you mean 'readdir'"),
        "log: {log}"
    );
    assert!(
        !log.contains("version"),
        "non-functions are not operations: {log}"
    );
    // The filesystem still mounts and serves what it defines.
    assert!(std::fs::metadata(&m.mnt).unwrap().is_dir());
}

#[test]
fn mounting_on_a_stale_mountpoint_fails_with_a_clear_message() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::new(&shipped("hellofs.lua"), &[]);
    let pid = m.pid().expect("daemon pid") as i32;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    m.reap();
    // Without auto_unmount the mount is now dead: "Transport endpoint is not connected".
    let stale = std::fs::metadata(&m.mnt).map_err(|e| errno(&e));
    assert_eq!(stale.err(), Some(libc::ENOTCONN));
    let out = std::process::Command::new(common::flufs_bin())
        .arg("-f")
        .arg(shipped("hellofs.lua"))
        .arg(&m.mnt)
        .output()
        .expect("run flufs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(
        err.contains("stale") && err.contains("fusermount3 -u"),
        "stderr: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // The guard cleans the stale mount up.
}
