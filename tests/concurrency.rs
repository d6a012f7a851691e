//! Requests as coroutines, seen from the user's side (tests/fixtures/concurrency_slow.lua): a
//! request suspended in `flu.sleep` does not hold up the mount, concurrent slow reads overlap,
//! replies complete out of order, `flu.get_context()` stays per request across a suspension,
//! `--op-timeout` counts running time only, SIGTERM ends suspended requests with an error, and
//! a bare `coroutine.yield()` continues the operation.
//!
//! The tests take a lock so that their timings are not measured against each other.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Mount, errno, fixture, fuse_available, is_mounted};

/// Serializes the tests of this file (their assertions are about time).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fixture, with attribute and entry caching off so that every `stat` reaches the daemon.
fn mount(extra: &[&str]) -> Mount {
    let mut opts = vec!["-o", "attr_timeout=0,entry_timeout=0"];
    opts.extend_from_slice(extra);
    Mount::new(&fixture("concurrency_slow.lua"), &opts)
}

/// One read(2) at offset 0 (the fixture's files are direct_io: it reaches the script once).
fn pread0(path: &Path) -> std::io::Result<String> {
    let f = File::open(path)?;
    let mut buf = vec![0u8; 4096];
    let n = f.read_at(&mut buf, 0)?;
    buf.truncate(n);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// What a reader thread saw: the result, when it started and when it finished.
struct Read {
    result: std::io::Result<String>,
    start: Instant,
    end: Instant,
}

impl Read {
    fn took(&self) -> Duration {
        self.end - self.start
    }
}

fn spawn_read(path: PathBuf) -> JoinHandle<Read> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let result = pread0(&path);
        Read {
            result,
            start,
            end: Instant::now(),
        }
    })
}

/// A read of /slow2 (2 s in flu.sleep) started in a thread, returned once it is suspended.
fn suspended_slow_read(m: &Mount) -> JoinHandle<Read> {
    let slow = spawn_read(m.path("slow2"));
    wait_suspended(m, 1);
    slow
}

/// Wait (up to 10 s) until `n` reads are suspended in the fixture's flu.sleep.
fn wait_suspended(m: &Mount, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = pread0(&m.path("waiting")).expect("read /waiting");
        if now.trim() == n.to_string() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {n} suspended reads (last: {now:?}); log: {}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

fn data_of(name: &str) -> String {
    format!("data of {name}\n")
}

#[test]
fn stat_ls_and_other_reads_are_served_while_a_read_is_suspended() {
    if !fuse_available() {
        return;
    }
    let _g = serial();
    let m = mount(&[]);
    let slow = suspended_slow_read(&m);

    let limit = Duration::from_millis(100);
    let (md, t_stat) = timed(|| std::fs::metadata(m.path("fast")));
    assert!(md.expect("stat fast").is_file());
    let (entries, t_ls) = timed(|| {
        std::fs::read_dir(&m.mnt).and_then(|d| {
            d.map(|e| e.map(|e| e.file_name()))
                .collect::<Result<Vec<_>, _>>()
        })
    });
    let entries = entries.expect("ls");
    let (other, t_read) = timed(|| pread0(&m.path("other")));
    assert_eq!(other.expect("read other"), data_of("other"));
    assert!(
        !slow.is_finished(),
        "the slow read ended before the other requests were measured"
    );
    eprintln!("while suspended: stat {t_stat:?}, ls {t_ls:?}, read {t_read:?}");
    assert_eq!(entries.len(), 9 + 32, "{entries:?}");
    assert!(t_stat < limit, "stat took {t_stat:?}");
    assert!(t_ls < limit, "ls took {t_ls:?}");
    assert!(t_read < limit, "reading another file took {t_read:?}");

    let slow = slow.join().unwrap();
    assert_eq!(slow.result.as_deref().expect("slow read"), data_of("slow2"));
    assert!(slow.took() >= Duration::from_secs(2), "{:?}", slow.took());
}

#[test]
fn thirty_two_slow_reads_take_the_time_of_one() {
    thirty_two_slow_reads(&[]);
}

/// A suspended request holds no kernel thread, whatever the number of threads (the default
/// is two, the second reading only in a spell of requests).
#[test]
fn thirty_two_slow_reads_take_the_time_of_one_with_one_kernel_thread() {
    thirty_two_slow_reads(&["-o", "threads=1"]);
}

/// CPU time (ns) of each of the daemon's kernel threads (fuser names them `fuser-N`).
fn kernel_thread_cpu(pid: u32) -> Vec<u64> {
    let mut cpu = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let t = t.expect("task").path();
        let comm = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        if comm.starts_with("fuser-") {
            let ss = std::fs::read_to_string(t.join("schedstat")).expect("schedstat");
            cpu.push(
                ss.split(' ')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("run time"),
            );
        }
    }
    cpu
}

/// The CPUs thread `tid` may run on (0: the calling thread).
fn affinity(tid: i32) -> libc::cpu_set_t {
    // SAFETY: the set is a plain bit mask, written by the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(libc::sched_getaffinity(tid, size, &mut set), 0);
        set
    }
}

fn cpus(list: &[usize]) -> libc::cpu_set_t {
    // SAFETY: as in `affinity`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in list {
            libc::CPU_SET(c, &mut set);
        }
        set
    }
}

fn set_affinity(tid: i32, set: &libc::cpu_set_t) {
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: the call reads the set.
    assert_eq!(unsafe { libc::sched_setaffinity(tid, size, set) }, 0);
}

/// Every thread of process `pid` may run on `set` only.
fn set_affinity_of_threads(pid: u32, set: &libc::cpu_set_t) {
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let tid = t
            .expect("task")
            .file_name()
            .to_string_lossy()
            .parse()
            .expect("tid");
        set_affinity(tid, set);
    }
}

/// The second kernel thread reads only in a spell of requests (src/readers.rs), and only when
/// the client runs on another CPU than the daemon: after 300 ms of stats without a pause both
/// threads have run requests when the two are apart, one when they share a CPU; with `-o
/// threads=1`, or when the daemon may run on one CPU only, there is one. A thread left waiting
/// after a quiet spell (it waits at most 250 ms) does not hold up the end of the mount.
#[test]
fn second_kernel_thread_reads_in_a_spell_and_never_holds_up_unmount() {
    if !fuse_available() {
        return;
    }
    let _g = serial();
    let spell = |m: &Mount, ms: u64| {
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(ms) {
            std::fs::metadata(m.path("fast")).expect("stat"); // caching off: a GETATTR each
        }
    };
    let one = mount(&["-o", "threads=1"]);
    assert_eq!(kernel_thread_cpu(one.pid().expect("pid")).len(), 1);
    drop(one);
    // A daemon that may run on one CPU only (it inherits this thread's affinity) starts one.
    let all = affinity(0);
    let pinned = {
        set_affinity(0, &cpus(&[0]));
        let m = mount(&[]);
        set_affinity(0, &all);
        m
    };
    assert_eq!(
        kernel_thread_cpu(pinned.pid().expect("pid")).len(),
        1,
        "pinned"
    );
    drop(pinned);

    let mut m = mount(&[]);
    let pid = m.pid().expect("pid");
    std::thread::sleep(Duration::from_millis(200));
    let before = kernel_thread_cpu(pid);
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        // This test runs on one CPU, and so does the daemon: one reader, as when pinned.
        assert_eq!(before.len(), 1, "one kernel thread on one CPU");
        eprintln!("one CPU: the second reader's spell and wait are not tested here");
        return;
    }
    assert_eq!(before.len(), 2, "two kernel threads by default");
    // The client (this thread) on one CPU and the daemon on another, as the scheduler places them
    // once a CPU has been busy a while: the second reader joins in a spell.
    let (c0, c1) = {
        // SAFETY: CPU_ISSET reads the set.
        let mut usable =
            (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &all) });
        (
            usable.next().expect("a CPU"),
            usable.next().expect("a second CPU"),
        )
    };
    set_affinity(0, &cpus(&[c0]));
    set_affinity_of_threads(pid, &cpus(&[c1]));
    spell(&m, 300);
    let after = kernel_thread_cpu(pid);
    for (i, (a, b)) in before.iter().zip(&after).enumerate() {
        assert!(
            b - a > 2_000_000,
            "apart: kernel thread {i} ran {} µs of the spell",
            (b - a) / 1000
        );
    }
    // Quiet (one reader again), then a spell with client and daemon on one CPU, as in short
    // bursts: the second reader stays waiting, since it would only part the two. (It waits
    // 250 ms at most, then reads again, and either thread may be the one that waits next: the
    // spell is shorter than that.)
    std::thread::sleep(Duration::from_millis(150));
    set_affinity_of_threads(pid, &cpus(&[c0]));
    let before = kernel_thread_cpu(pid);
    spell(&m, 200);
    let after = kernel_thread_cpu(pid);
    let mut ran: Vec<u64> = before.iter().zip(&after).map(|(a, b)| b - a).collect();
    ran.sort_unstable();
    assert!(
        ran[0] < 1_000_000 && ran[1] > 2_000_000,
        "together: one kernel thread reads the spell (ran {:?} µs)",
        ran.iter().map(|r| r / 1000).collect::<Vec<_>>()
    );
    set_affinity_of_threads(pid, &all);
    set_affinity(0, &all);
    // Quiet, then one request: the thread that ran it waits (at most 250 ms) while the other
    // reads. Unmounting now must not wait for it.
    std::thread::sleep(Duration::from_millis(150));
    std::fs::metadata(m.path("fast")).expect("stat");
    let t = Instant::now();
    assert_eq!(m.unmount(), Some(0), "daemon exit status:\n{}", m.log());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "unmount took {:?}",
        t.elapsed()
    );
}

fn thirty_two_slow_reads(opts: &[&str]) {
    if !fuse_available() {
        return;
    }
    let _g = serial();
    let m = mount(opts);
    let go = Arc::new(Barrier::new(33));
    let readers: Vec<_> = (1..=32)
        .map(|i| {
            let name = format!("s1-{i:02}");
            let f = File::open(m.path(&name)).expect("open");
            let go = go.clone();
            std::thread::spawn(move || {
                go.wait();
                let mut buf = vec![0u8; 4096];
                let r = f.read_at(&mut buf, 0).map(|n| {
                    buf.truncate(n);
                    String::from_utf8_lossy(&buf).into_owned()
                });
                (name, r)
            })
        })
        .collect();
    go.wait();
    let start = Instant::now();
    for r in readers {
        let (name, got) = r.join().unwrap();
        assert_eq!(got.expect(&name), data_of(&name), "what {name} read");
    }
    let total = start.elapsed();
    eprintln!("32 reads sleeping 1 s each ({opts:?}) took {total:?}");
    assert!(total >= Duration::from_secs(1), "{total:?}");
    assert!(total < Duration::from_secs(3), "not concurrent: {total:?}");
}

#[test]
fn a_fast_reply_started_later_completes_before_a_slow_one() {
    if !fuse_available() {
        return;
    }
    let _g = serial();
    let m = mount(&[]);
    let slow = suspended_slow_read(&m);
    let fast = spawn_read(m.path("fast")).join().unwrap();
    let slow = slow.join().unwrap();
    assert_eq!(fast.result.as_deref().expect("fast read"), data_of("fast"));
    assert_eq!(slow.result.as_deref().expect("slow read"), data_of("slow2"));
    assert!(slow.start < fast.start);
    assert!(
        fast.end < slow.end,
        "the fast reply waited for the slow one: fast took {:?}, slow {:?}",
        fast.took(),
        slow.took()
    );
    assert!(
        fast.took() < Duration::from_millis(500),
        "{:?}",
        fast.took()
    );
}

#[test]
fn get_context_is_per_request_across_a_suspension() {
    if !fuse_available() {
        return;
    }
    let _g = serial();
    let m = mount(&[]);
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new("cat")
                .arg(m.path("pid"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn cat")
        })
        .collect();
    // Both are suspended at once: their requests interleave.
    wait_suspended(&m, 2);
    for c in children {
        let pid = c.id();
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "cat: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{pid} {pid}\n"),
            "pid before and after the sleep, for process {pid}"
        );
    }
}

#[test]
fn op_timeout_interrupts_a_runaway_but_not_a_suspended_request() {
    if !fuse_available() {
        return;
    }
    let _g = serial();
    let m = mount(&["--op-timeout", "1"]);
    let slow = suspended_slow_read(&m);
    let (looped, t_loop) = timed(|| pread0(&m.path("loop")));
    assert_eq!(
        errno(&looped.expect_err("the runaway read must fail")),
        libc::ETIMEDOUT
    );
    assert!(t_loop < Duration::from_secs(10), "took {t_loop:?}");
    let slow = slow.join().unwrap();
    assert_eq!(
        slow.result
            .as_deref()
            .expect("the suspended read is not interrupted"),
        data_of("slow2")
    );
    assert!(slow.took() >= Duration::from_secs(2), "{:?}", slow.took());
    eprintln!(
        "runaway stopped after {t_loop:?}; 2 s read took {:?}",
        slow.took()
    );
    // the mount keeps serving, the runaway file included
    assert_eq!(pread0(&m.path("fast")).unwrap(), data_of("fast"));
    assert_eq!(pread0(&m.path("slow2")).unwrap(), data_of("slow2"));
    assert!(m.log().contains("--op-timeout"), "log: {}", m.log());
}

#[test]
fn sigterm_with_suspended_requests_exits_and_the_readers_get_an_error() {
    if !fuse_available() {
        return;
    }
    let _g = serial();
    let mut m = mount(&[]);
    let (tx, rx) = mpsc::channel();
    for _ in 0..3 {
        let tx = tx.clone();
        let p = m.path("long");
        std::thread::spawn(move || {
            let _ = tx.send(pread0(&p));
        });
    }
    drop(tx);
    wait_suspended(&m, 3);
    let pid = m.pid().expect("daemon pid") as i32;
    let t = Instant::now();
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let code = m.reap();
    let t_exit = t.elapsed();
    assert_eq!(code, Some(0), "exit status; log: {}", m.log());
    assert!(t_exit < Duration::from_secs(5), "exit took {t_exit:?}");
    assert!(!is_mounted(&m.mnt), "mount left behind after SIGTERM");
    let mut errnos = Vec::new();
    for i in 0..3 {
        let r = rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("reader {i} still hangs {:?} after SIGTERM", t.elapsed()));
        let e = r.expect_err("a read suspended at exit cannot succeed");
        errnos.push(errno(&e));
    }
    eprintln!(
        "daemon exited {t_exit:?} after SIGTERM; readers got errnos {errnos:?} by {:?}",
        t.elapsed()
    );
    assert!(errnos.iter().all(|&e| e == libc::EIO), "errnos {errnos:?}");
}

#[test]
fn a_bare_coroutine_yield_continues_the_operation() {
    if !fuse_available() {
        return;
    }
    let _g = serial();
    let m = mount(&[]);
    assert_eq!(pread0(&m.path("yield")).unwrap(), data_of("yield"));
    assert_eq!(
        pread0(&m.path("yield_pcall")).unwrap(),
        data_of("yield_pcall")
    );
    // and while another request is suspended
    let slow = suspended_slow_read(&m);
    assert_eq!(pread0(&m.path("yield")).unwrap(), data_of("yield"));
    assert_eq!(
        slow.join().unwrap().result.as_deref().unwrap(),
        data_of("slow2")
    );
}
