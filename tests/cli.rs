//! The `flufs` command line, run as a real process: background and foreground mounting, failure
//! messages, signals, script arguments and the mount options a user can see.
mod common;

use common::{Mount, TempDir, fixture, flufs_bin, is_mounted, shipped};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// helpers

/// Result of running `flufs` to completion (bounded by a timeout).
struct Outcome {
    /// Exit code; None when killed by a signal or when it had to be killed after the timeout.
    code: Option<i32>,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            if self.timed_out {
                " (TIMED OUT, killed)"
            } else {
                ""
            },
            self.stdout,
            self.stderr
        )
    }
}

/// Run flufs with `args`, stdout/stderr going to files (so a daemon that keeps them open cannot
/// hang the test), and wait at most `secs` seconds for the launched process to exit.
fn run_flufs(args: &[&std::ffi::OsStr], secs: u64) -> Outcome {
    let tmp = TempDir::new("cli-out");
    let out_path = tmp.path.join("stdout");
    let err_path = tmp.path.join("stderr");
    let mut child = Command::new(flufs_bin())
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn flufs");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (code, timed_out) = loop {
        match child.try_wait().expect("try_wait") {
            Some(st) => break (st.code(), false),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break (None, true);
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    Outcome {
        code,
        timed_out,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

/// PIDs of processes whose command line contains `needle` (the unique mount path).
fn pids_with(needle: &Path) -> Vec<i32> {
    let out = Command::new("pgrep")
        .arg("-f")
        .arg(needle)
        .output()
        .expect("run pgrep (package procps)");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .filter(|&p: &i32| p != std::process::id() as i32)
        .collect()
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

/// Number of mounts stacked on `mnt`.
fn mount_count(mnt: &Path) -> usize {
    let want = mnt.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(want.as_str()))
        .count()
}

/// The /proc/self/mounts line for `mnt` split into (fsname, mountpoint, fstype, options).
fn proc_mounts_entry(mnt: &Path) -> Option<(String, String, String, String)> {
    let want = mnt.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() >= 4 && f[1] == want)
                .then(|| (f[0].into(), f[1].into(), f[2].into(), f[3].into()))
        })
        .next_back()
}

/// Guard for a mount made by a background (daemonizing) flufs we launched ourselves: on drop it
/// lazily unmounts and kills any process that still carries the unique mount path.
struct BgGuard {
    dir: TempDir,
    mnt: PathBuf,
}

impl BgGuard {
    fn new() -> BgGuard {
        let dir = TempDir::new("cli-bg");
        let mnt = dir.path.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        BgGuard { dir, mnt }
    }
}

impl Drop for BgGuard {
    fn drop(&mut self) {
        for _ in 0..5 {
            if !is_mounted(&self.mnt) {
                break;
            }
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status();
            if is_mounted(&self.mnt) {
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
        let _ = wait_until(5, || pids_with(&self.mnt).is_empty());
        for pid in pids_with(&self.mnt) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Checks the common shape of every start-up failure: non-zero exit (1 in background mode, as the
/// contract promises), exactly one line on stderr, no panic text, nothing mounted, and the line
/// contains each of `needles`.
fn assert_clean_failure(what: &str, background: bool, out: &Outcome, mnt: &Path, needles: &[&str]) {
    let mode = if background {
        "background"
    } else {
        "foreground (-f)"
    };
    assert!(
        !out.timed_out,
        "{what} [{mode}]: flufs did not exit: {out:?}"
    );
    match out.code {
        Some(0) => panic!("{what} [{mode}]: expected failure, flufs exited 0: {out:?}"),
        None => panic!("{what} [{mode}]: flufs died from a signal: {out:?}"),
        Some(c) if background => assert_eq!(c, 1, "{what} [{mode}]: parent must exit 1: {out:?}"),
        Some(_) => {}
    }
    for bad in ["panicked", "RUST_BACKTRACE", "stack traceback"] {
        assert!(
            !out.stderr.contains(bad) && !out.stdout.contains(bad),
            "{what} [{mode}]: output contains {bad:?}: {out:?}"
        );
    }
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{what} [{mode}]: want exactly one stderr line: {out:?}"
    );
    for n in needles {
        assert!(
            lines[0].contains(n),
            "{what} [{mode}]: stderr line should mention {n:?}: {out:?}"
        );
    }
    assert!(
        !is_mounted(mnt),
        "{what} [{mode}]: something got mounted on {}",
        mnt.display()
    );
}

fn write_script(dir: &TempDir, name: &str, body: &str) -> PathBuf {
    let p = dir.path.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

// ---------------------------------------------------------------------------------------------
// background mode

#[test]
fn background_mount_is_live_when_launcher_exits_and_fusermount_u_stops_daemon() {
    if !common::fuse_available() {
        return;
    }
    let g = BgGuard::new();
    let out = run_flufs(&[os(&shipped("hellofs.lua")), os(&g.mnt)], 30);
    // Checked immediately: the launcher may only return once the mount exists.
    let live_at_exit = is_mounted(&g.mnt);
    assert_eq!(out.code, Some(0), "background launch failed: {out:?}");
    assert!(
        live_at_exit,
        "launcher exited 0 but {} was not mounted yet",
        g.mnt.display()
    );

    let hello = std::fs::read_to_string(g.mnt.join("hello")).expect("read MNT/hello");
    assert_eq!(hello, "Hello World!\n");

    let pids = pids_with(&g.mnt);
    assert!(
        !pids.is_empty(),
        "no daemon process carrying {} found",
        g.mnt.display()
    );

    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&g.mnt)
        .status()
        .unwrap();
    assert!(st.success(), "fusermount3 -u failed");
    assert!(
        wait_until(10, || pids_with(&g.mnt).is_empty()),
        "daemon (pids {pids:?}) still running 10 s after fusermount3 -u"
    );
    assert!(
        !is_mounted(&g.mnt),
        "mount still present after fusermount3 -u"
    );
}

#[test]
fn background_launch_does_not_hold_callers_stdout_and_stderr_open() {
    // `out=$(flufs hellofs.lua MNT)` must return: the daemon must not keep the caller's pipes.
    if !common::fuse_available() {
        return;
    }
    let g = BgGuard::new();
    let child = Command::new(flufs_bin())
        .arg(shipped("hellofs.lua"))
        .arg(&g.mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flufs");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let res = rx.recv_timeout(Duration::from_secs(20));
    let out = match res {
        Ok(r) => r.expect("wait flufs"),
        Err(_) => panic!(
            "flufs launched in background still holds stdout/stderr pipes after 20 s \
             (mounted: {})",
            is_mounted(&g.mnt)
        ),
    };
    assert!(out.status.success(), "background launch failed: {out:?}");
    assert!(is_mounted(&g.mnt));
    assert_eq!(
        std::fs::read_to_string(g.mnt.join("hello")).unwrap(),
        "Hello World!\n"
    );
}

// ---------------------------------------------------------------------------------------------
// start-up failures

/// Runs the same failing command line in foreground (-f) and background mode.
fn check_failure_both_modes(
    what: &str,
    script: &Path,
    mnt: &Path,
    opts: &[&str],
    needles: &[&str],
) {
    for background in [false, true] {
        let mut args: Vec<&std::ffi::OsStr> = Vec::new();
        if !background {
            args.push(os("-f"));
        }
        for o in opts {
            args.push(os(*o));
        }
        args.push(script.as_os_str());
        args.push(mnt.as_os_str());
        let out = run_flufs(&args, 20);
        assert_clean_failure(what, background, &out, mnt, needles);
    }
}

#[test]
fn missing_script_file_fails_with_one_line_naming_it() {
    if !common::fuse_available() {
        return;
    }
    let g = BgGuard::new();
    let script = g.dir.path.join("no-such-script.lua");
    check_failure_both_modes(
        "missing script",
        &script,
        &g.mnt,
        &[],
        &["no-such-script.lua"],
    );
}

#[test]
fn missing_mountpoint_fails_with_one_line_naming_it() {
    if !common::fuse_available() {
        return;
    }
    let g = BgGuard::new();
    let mnt = g.dir.path.join("no-such-dir");
    check_failure_both_modes(
        "missing mountpoint",
        &shipped("hellofs.lua"),
        &mnt,
        &[],
        &["no-such-dir"],
    );
}

#[test]
fn mountpoint_that_is_a_regular_file_fails_with_one_line_naming_it() {
    if !common::fuse_available() {
        return;
    }
    let g = BgGuard::new();
    let file = g.dir.path.join("plain-file");
    std::fs::write(&file, "x").unwrap();
    check_failure_both_modes(
        "mountpoint is a regular file",
        &shipped("hellofs.lua"),
        &file,
        &[],
        &["plain-file"],
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

#[test]
fn script_with_syntax_error_fails_with_file_and_line() {
    if !common::fuse_available() {
        return;
    }
    let g = BgGuard::new();
    let script = write_script(
        &g.dir,
        "bad_syntax.lua",
        "-- line 1\nlocal ok = 1\nlocal x = = 2\nreturn {}\n",
    );
    for background in [false, true] {
        let mut args = vec![];
        if !background {
            args.push(os("-f"));
        }
        args.push(script.as_os_str());
        args.push(g.mnt.as_os_str());
        let out = run_flufs(&args, 20);
        assert_clean_failure(
            "syntax error",
            background,
            &out,
            &g.mnt,
            &["bad_syntax.lua"],
        );
        assert!(
            out.stderr.contains("bad_syntax.lua:3:") || out.stderr.contains("line 3"),
            "syntax error message must name line 3: {out:?}"
        );
    }
}

#[test]
fn script_returning_a_number_instead_of_a_table_fails_clearly() {
    if !common::fuse_available() {
        return;
    }
    let g = BgGuard::new();
    let script = write_script(&g.dir, "returns_number.lua", "return 42\n");
    for background in [false, true] {
        let mut args = vec![];
        if !background {
            args.push(os("-f"));
        }
        args.push(script.as_os_str());
        args.push(g.mnt.as_os_str());
        let out = run_flufs(&args, 20);
        assert_clean_failure("script returns a number", background, &out, &g.mnt, &[]);
        assert!(
            out.stderr.contains("table") || out.stderr.contains("number"),
            "message should say a table was expected / a number was returned: {out:?}"
        );
    }
}

#[test]
fn script_raising_an_error_at_load_time_fails_with_its_message_first() {
    // A runtime error while loading may be followed by a Lua traceback (useful to the script's
    // author), but the first line must carry the error with file and line, and no Rust panic.
    if !common::fuse_available() {
        return;
    }
    let g = BgGuard::new();
    let script = write_script(
        &g.dir,
        "raises.lua",
        "local x = 1\nerror('no config found here')\n",
    );
    for background in [false, true] {
        let mut args = vec![];
        if !background {
            args.push(os("-f"));
        }
        args.push(script.as_os_str());
        args.push(g.mnt.as_os_str());
        let out = run_flufs(&args, 20);
        let mode = if background {
            "background"
        } else {
            "foreground"
        };
        assert!(!out.timed_out, "[{mode}] flufs did not exit: {out:?}");
        assert!(
            matches!(out.code, Some(c) if c != 0),
            "[{mode}] expected failure: {out:?}"
        );
        if background {
            assert_eq!(out.code, Some(1), "[{mode}] parent must exit 1: {out:?}");
        }
        assert!(
            !out.stderr.contains("panicked") && !out.stderr.contains("RUST_BACKTRACE"),
            "{out:?}"
        );
        let first = out
            .stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        assert!(
            first.contains("raises.lua:2:") && first.contains("no config found here"),
            "[{mode}] first stderr line should be the error with file:line: {out:?}"
        );
        assert!(!is_mounted(&g.mnt));
    }
}

/// An error raised at load time with a value that is not a string (a `flu.errno` value, a
/// table) is shown as `tostring` shows it, not as a Rust debug dump.
#[test]
fn script_raising_a_non_string_error_at_load_time_names_it() {
    if !common::fuse_available() {
        return;
    }
    let g = BgGuard::new();
    for (name, src, want) in [
        (
            "errno.lua",
            "error(flu.errno.EEXIST)\n",
            "script failed: File exists",
        ),
        ("table.lua", "error({})\n", "script failed: table: 0x"),
    ] {
        let script = write_script(&g.dir, name, src);
        let out = run_flufs(&[os("-f"), script.as_os_str(), g.mnt.as_os_str()], 20);
        assert!(matches!(out.code, Some(c) if c != 0), "{name}: {out:?}");
        let first = out.stderr.lines().next().unwrap_or("");
        assert!(
            first.contains(want),
            "{name}: first line {first:?}, want {want:?}"
        );
        assert!(!out.stderr.contains("UserData"), "{name}: {out:?}");
        assert!(!is_mounted(&g.mnt));
    }
}

#[test]
fn unknown_mount_option_fails_with_one_line_naming_it() {
    if !common::fuse_available() {
        return;
    }
    let g = BgGuard::new();
    check_failure_both_modes(
        "unknown -o option",
        &shipped("hellofs.lua"),
        &g.mnt,
        &["-o", "ro,frobnicate=3"],
        &["frobnicate"],
    );
}

#[test]
fn malformed_option_values_fail_with_one_line_naming_the_option() {
    if !common::fuse_available() {
        return;
    }
    let g = BgGuard::new();
    for (opt, name) in [
        ("attr_timeout=banana", "attr_timeout"),
        ("max_read=", "max_read"),
        ("fsname", "fsname"),
        ("entry_timeout=-1", "entry_timeout"),
    ] {
        check_failure_both_modes(
            &format!("-o {opt}"),
            &shipped("hellofs.lua"),
            &g.mnt,
            &["-o", opt],
            &[name],
        );
    }
}

#[test]
fn missing_positional_arguments_are_named_in_a_one_line_usage_error() {
    if !common::fuse_available() {
        return;
    }
    let hello = shipped("hellofs.lua");
    for (args, missing) in [
        (vec![], "SCRIPT"),
        (vec![hello.as_os_str()], "MOUNTPOINT"),
        (vec![os("-f"), hello.as_os_str()], "MOUNTPOINT"),
    ] {
        let out = run_flufs(&args, 20);
        assert!(
            matches!(out.code, Some(c) if c != 0),
            "{args:?}: expected failure: {out:?}"
        );
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "{args:?}: want one stderr line: {out:?}");
        assert!(!out.stderr.contains("panicked"), "{out:?}");
        // The usage synopsis names every argument, so look only at the text before it.
        let lower = lines[0].to_ascii_lowercase();
        let before_usage = &lines[0][..lower.find("usage").unwrap_or(lines[0].len())];
        assert!(
            before_usage.contains(missing),
            "{args:?}: the message (before the usage synopsis) should name the missing \
             {missing}: {out:?}"
        );
    }
}

#[test]
fn later_ro_or_rw_option_overrides_an_earlier_one() {
    // Like mount(8) and libfuse: options are applied in order, the last one wins.
    if !common::fuse_available() {
        return;
    }
    for (opts, want) in [("ro,rw", "rw"), ("rw,ro", "ro")] {
        let m = Mount::new(&shipped("hellofs.lua"), &["-o", opts]);
        let (_, _, _, mopts) = proc_mounts_entry(&m.mnt).expect("entry in /proc/mounts");
        assert_eq!(
            mopts.split(',').next(),
            Some(want),
            "-o {opts}: mount options {mopts}"
        );
    }
}

#[test]
fn second_mount_on_a_live_mountpoint_fails_and_first_keeps_working() {
    if !common::fuse_available() {
        return;
    }
    let m = Mount::new(&shipped("hellofs.lua"), &[]);
    let hello = shipped("hellofs.lua");
    for background in [false, true] {
        let mut args = vec![];
        if !background {
            args.push(os("-f"));
        }
        args.push(hello.as_os_str());
        args.push(m.mnt.as_os_str());
        let out = run_flufs(&args, 20);
        let mode = if background {
            "background"
        } else {
            "foreground"
        };
        let stacked = mount_count(&m.mnt);
        if stacked > 1 {
            // Clean up the extra mount before failing so the first one can be unmounted.
            let _ = Command::new("umount").arg("-l").arg(&m.mnt).status();
        }
        assert!(
            !out.timed_out,
            "[{mode}] second flufs did not exit: {out:?}"
        );
        assert_eq!(
            stacked, 1,
            "[{mode}] second mount was stacked on top of the first: {out:?}"
        );
        assert!(
            matches!(out.code, Some(c) if c != 0),
            "[{mode}] second mount should fail: {out:?}"
        );
        if background {
            assert_eq!(out.code, Some(1), "[{mode}] parent must exit 1: {out:?}");
        }
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "[{mode}] want one stderr line: {out:?}");
        assert!(!out.stderr.contains("panicked"), "{out:?}");
        assert_eq!(
            std::fs::read_to_string(m.path("hello")).expect("first mount still serves /hello"),
            "Hello World!\n"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// signals

fn signal_stops_foreground_daemon(sig: i32) {
    let tmp = TempDir::new("cli-sig");
    let marker = tmp.path.join("destroy-ran");
    let mut m = Mount::with_args(
        &fixture("cli_destroy.lua"),
        &[],
        &[marker.to_str().unwrap()],
    );
    assert!(
        m.path("alive").exists(),
        "fixture not serving /alive: {}",
        m.log()
    );
    let pid = m.pid().unwrap() as i32;
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    let gone = wait_until(10, || !is_mounted(&m.mnt));
    let code = m.reap();
    assert!(
        gone,
        "mount still present 10 s after signal {sig}; log: {}",
        m.log()
    );
    assert_eq!(
        code,
        Some(0),
        "daemon exit code after signal {sig}; log: {}",
        m.log()
    );
    let content = std::fs::read_to_string(&marker)
        .unwrap_or_else(|e| panic!("destroy() did not write the marker ({e}); log: {}", m.log()));
    assert_eq!(content, format!("destroyed {}\n", m.mnt.display()));
}

#[test]
fn sigterm_unmounts_runs_destroy_and_exits_zero() {
    if !common::fuse_available() {
        return;
    }
    signal_stops_foreground_daemon(libc::SIGTERM);
}

#[test]
fn sigint_unmounts_runs_destroy_and_exits_zero() {
    if !common::fuse_available() {
        return;
    }
    signal_stops_foreground_daemon(libc::SIGINT);
}

#[test]
fn sigterm_to_a_background_daemon_unmounts_and_runs_destroy() {
    if !common::fuse_available() {
        return;
    }
    let g = BgGuard::new();
    let marker = g.dir.path.join("destroy-ran");
    let out = run_flufs(
        &[
            os(&fixture("cli_destroy.lua")),
            os(&g.mnt),
            os("--"),
            os(&marker),
        ],
        30,
    );
    assert_eq!(out.code, Some(0), "background launch failed: {out:?}");
    assert!(is_mounted(&g.mnt));
    let pids = pids_with(&g.mnt);
    assert_eq!(pids.len(), 1, "expected one daemon process, got {pids:?}");
    assert_eq!(unsafe { libc::kill(pids[0], libc::SIGTERM) }, 0);
    assert!(
        wait_until(10, || pids_with(&g.mnt).is_empty()),
        "daemon still running 10 s after SIGTERM"
    );
    assert!(
        !is_mounted(&g.mnt),
        "mount left behind after SIGTERM to the daemon"
    );
    assert!(marker.exists(), "destroy() did not run on SIGTERM");
}

#[test]
fn debug_flag_alone_stays_in_the_foreground() {
    if !common::fuse_available() {
        return;
    }
    let g = BgGuard::new();
    let log = g.dir.path.join("stderr.log");
    let mut child = Command::new(flufs_bin())
        .arg("-d")
        .arg(shipped("hellofs.lua"))
        .arg(&g.mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn flufs");
    let mounted = wait_until(20, || is_mounted(&g.mnt));
    let early_exit = child.try_wait().unwrap();
    if !mounted || early_exit.is_some() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "-d without -f: mounted={mounted}, launcher exit={early_exit:?}; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    assert_eq!(
        std::fs::read_to_string(g.mnt.join("hello")).unwrap(),
        "Hello World!\n"
    );
    assert!(
        wait_until(5, || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("/hello")),
        "no trace on the launching process's stderr"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "-d process exited while mounted"
    );
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&g.mnt)
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("-d process did not exit after unmount");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
}

#[test]
fn fusermount_u_of_foreground_daemon_runs_destroy_and_exits_zero() {
    if !common::fuse_available() {
        return;
    }
    let tmp = TempDir::new("cli-umount");
    let marker = tmp.path.join("destroy-ran");
    let mut m = Mount::with_args(
        &fixture("cli_destroy.lua"),
        &[],
        &[marker.to_str().unwrap()],
    );
    let code = m.unmount();
    assert_eq!(
        code,
        Some(0),
        "exit code after fusermount3 -u; log: {}",
        m.log()
    );
    assert!(
        marker.exists(),
        "destroy() did not run on unmount; log: {}",
        m.log()
    );
}

// ---------------------------------------------------------------------------------------------
// script arguments

#[test]
fn script_sees_mountpoint_then_script_args_in_dots_and_arg() {
    if !common::fuse_available() {
        return;
    }
    let script = fixture("cli_args.lua");
    let m = Mount::with_args(&script, &[], &["one", "two words", "-x", ""]);
    let got = std::fs::read_to_string(m.path("args")).expect("read /args");
    let mnt = m.mnt.display();
    let want = format!(
        "n=5\n...[1]={mnt}\n...[2]=one\n...[3]=two words\n...[4]=-x\n...[5]=\n\
         arg[0]={}\n#arg=5\narg[1]={mnt}\narg[2]=one\narg[3]=two words\narg[4]=-x\narg[5]=\n",
        script.display()
    );
    assert_eq!(got, want);
}

#[test]
fn script_without_script_args_sees_only_the_mountpoint() {
    if !common::fuse_available() {
        return;
    }
    let script = fixture("cli_args.lua");
    let m = Mount::new(&script, &[]);
    let got = std::fs::read_to_string(m.path("args")).expect("read /args");
    let mnt = m.mnt.display();
    let want = format!(
        "n=1\n...[1]={mnt}\narg[0]={}\n#arg=1\narg[1]={mnt}\n",
        script.display()
    );
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------------------------
// options

#[test]
fn default_fsname_is_script_stem_and_type_is_fuse_flufs() {
    if !common::fuse_available() {
        return;
    }
    let m = Mount::new(&shipped("hellofs.lua"), &[]);
    let (fsname, _, fstype, _) = proc_mounts_entry(&m.mnt).expect("entry in /proc/mounts");
    assert_eq!(fsname, "hellofs");
    assert_eq!(fstype, "fuse.flufs");
}

#[test]
fn fsname_and_subtype_options_show_in_proc_mounts() {
    if !common::fuse_available() {
        return;
    }
    let m = Mount::new(&shipped("hellofs.lua"), &["-o", "fsname=foo,subtype=bar"]);
    let (fsname, _, fstype, _) = proc_mounts_entry(&m.mnt).expect("entry in /proc/mounts");
    assert_eq!(fsname, "foo");
    assert_eq!(fstype, "fuse.bar");
    assert_eq!(
        std::fs::read_to_string(m.path("hello")).unwrap(),
        "Hello World!\n"
    );
}

#[test]
fn ro_option_makes_writes_fail_with_erofs_but_reads_work() {
    if !common::fuse_available() {
        return;
    }
    let m = Mount::new(&shipped("luafs.lua"), &["-o", "ro"]);
    let (_, _, _, opts) = proc_mounts_entry(&m.mnt).expect("entry in /proc/mounts");
    assert!(
        opts.split(',').any(|o| o == "ro"),
        "mount options lack ro: {opts}"
    );
    let e = std::fs::write(m.path("new-file"), "x").unwrap_err();
    assert_eq!(common::errno(&e), libc::EROFS, "create: {e}");
    let e = std::fs::create_dir(m.path("new-dir")).unwrap_err();
    assert_eq!(common::errno(&e), libc::EROFS, "mkdir: {e}");
    let entries = std::fs::read_dir(&m.mnt)
        .expect("readdir of ro mount")
        .count();
    assert_eq!(entries, 0);
}

#[test]
fn debug_flag_traces_each_request_with_operation_and_path() {
    if !common::fuse_available() {
        return;
    }
    let m = Mount::new(&shipped("hellofs.lua"), &["-d"]);
    assert_eq!(
        std::fs::read_to_string(m.path("hello")).unwrap(),
        "Hello World!\n"
    );
    let names: Vec<_> = std::fs::read_dir(&m.mnt).unwrap().collect();
    assert!(!names.is_empty());
    // Give the daemon a moment to flush its trace.
    let has = |op: &str, path: &str| {
        m.log().lines().any(|l| {
            let ll = l.to_ascii_lowercase();
            ll.contains(op) && l.contains(path)
        })
    };
    let ok = wait_until(5, || {
        (has("getattr", "/hello") || has("lookup", "/hello"))
            && has("open", "/hello")
            && has("read", "/hello")
            && has("readdir", "/")
    });
    assert!(
        ok,
        "-d trace lacks lines naming getattr/lookup, open, read of /hello and readdir of /:\n{}",
        m.log()
    );
}

#[test]
fn without_debug_flag_requests_are_not_traced() {
    if !common::fuse_available() {
        return;
    }
    let m = Mount::new(&shipped("hellofs.lua"), &[]);
    assert_eq!(
        std::fs::read_to_string(m.path("hello")).unwrap(),
        "Hello World!\n"
    );
    std::thread::sleep(Duration::from_millis(200));
    let log = m.log();
    assert!(
        !log.lines().any(|l| l.contains("/hello")),
        "requests traced without -d:\n{log}"
    );
}

#[test]
fn every_documented_mount_option_is_accepted() {
    if !common::fuse_available() {
        return;
    }
    let cases: &[&[&str]] = &[
        &["-s"],
        &["-o", "ro"],
        &["-o", "allow_other"],
        &["-o", "allow_root"],
        &["-o", "default_permissions"],
        &["-o", "auto_unmount"],
        &["-o", "allow_other,auto_unmount"],
        &["-o", "use_ino"],
        &["-o", "attr_timeout=0.5,entry_timeout=0,negative_timeout=2"],
        &["-o", "direct_io"],
        &["-o", "kernel_cache"],
        &["-o", "max_read=65536"],
        &["-o", "max_write=65536"],
        &["-o", "writeback_cache"],
        &["-o", "noatime,noexec,nosuid,nodev"],
        &["-o", "ro", "-o", "fsname=x"],
    ];
    let mut failures = Vec::new();
    for opts in cases {
        match Mount::try_with_args(&shipped("hellofs.lua"), opts, &[]) {
            Ok(m) => match std::fs::read_to_string(m.path("hello")) {
                Ok(s) if s == "Hello World!\n" => {}
                other => failures.push(format!("{opts:?}: /hello read {other:?}")),
            },
            Err(e) => failures.push(format!("{opts:?}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "options rejected or broken:\n{}",
        failures.join("\n")
    );
}
