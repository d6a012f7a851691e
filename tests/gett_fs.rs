//! Real-mount tests of lua/gett.lua against the local Ge.tt-compatible server
//! (tests/gett_server.py): listing, reading (whole, partial, ranged, cached), writing (cp,
//! overwrite, append, editor-style saves), rename, rm, mkdir, rmdir, df, failed uploads, and
//! concurrency against a delayed server (parallel downloads overlap; listings are served while
//! an upload is in progress).
//!
//! Every test starts its own server (killed on drop) and mounts gett.lua with the credentials
//! in the daemon's environment only. Without python3 the tests are skipped, except in CI.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Mount, TempDir};
use serde_json::Value;

const APIKEY: &str = "testkey";
const EMAIL: &str = "test@example.org";
const PASSWORD: &str = "secret";

/// The test server; killed (and reaped) on drop.
struct Server {
    child: Child,
    port: u16,
    rescue: TempDir,
}

impl Server {
    /// Start `tests/gett_server.py` with `args`; None (skip) when python3 is missing outside CI.
    fn start(args: &[&str]) -> Option<Server> {
        let have_python = Command::new("python3")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !have_python {
            if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
                panic!("python3 is missing but CI=true: the gett tests must run in CI");
            }
            eprintln!("skipping: python3 not available (set CI=true to make this an error)");
            return None;
        }
        let mut child = Command::new("python3")
            .arg(common::repo().join("tests/gett_server.py"))
            .arg("--exit-on-stdin-eof")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tests/gett_server.py");
        let stdout = child.stdout.take().expect("server stdout");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let port = match (read, line.trim().strip_prefix("PORT ")) {
            (Ok(_), Some(p)) => p.parse().expect("port number"),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the test server did not start (first line {line:?})");
            }
        };
        Some(Server {
            child,
            port,
            rescue: TempDir::new("gett-rescue"),
        })
    }

    fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Mount lua/gett.lua on this server with GETT_REFRESH=`refresh` (seconds).
    fn mount(&self, refresh: &str) -> Mount {
        self.try_mount(refresh, &[], &[], PASSWORD)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_mount(
        &self,
        refresh: &str,
        opts: &[&str],
        args: &[&str],
        password: &str,
    ) -> Result<Mount, String> {
        let api = self.api();
        let rescue = self.rescue.path.to_string_lossy().into_owned();
        let envs = [
            ("GETT_API", api.as_str()),
            ("GETT_APIKEY", APIKEY),
            ("GETT_EMAIL", EMAIL),
            ("GETT_PASSWORD", password),
            ("GETT_REFRESH", refresh),
            ("GETT_CACHE_MB", "64"),
            ("GETT_TIMEOUT", "20"),
            ("GETT_RESCUE_DIR", rescue.as_str()),
        ];
        Mount::try_with_env(&common::shipped("gett.lua"), opts, args, &envs)
    }

    /// One HTTP request to the server: (status, body).
    fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to server");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).expect("read the answer");
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad HTTP answer: {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    fn json(&self, method: &str, path: &str, body: &str) -> Value {
        let (status, text) = self.http(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {text}"
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
    }

    /// An access token of the test user (logging in through the REST API).
    fn token(&self) -> String {
        let body = format!(r#"{{"apikey":"{APIKEY}","email":"{EMAIL}","password":"{PASSWORD}"}}"#);
        let v = self.json("POST", "/1/users/login", &body);
        v["accesstoken"].as_str().expect("accesstoken").to_string()
    }

    /// The shares as the REST API lists them.
    fn shares(&self) -> Vec<Value> {
        let t = self.token();
        match self.json("GET", &format!("/1/shares?accesstoken={t}"), "") {
            Value::Array(a) => a,
            other => panic!("shares: {other}"),
        }
    }

    /// Requests the server has seen since the last `clear_log` (method, path, range).
    fn log(&self) -> Vec<(String, String, Option<String>)> {
        match self.json("GET", "/_admin/log", "") {
            Value::Array(a) => a
                .iter()
                .map(|e| {
                    (
                        e["method"].as_str().unwrap_or("").to_string(),
                        e["path"].as_str().unwrap_or("").to_string(),
                        e["range"].as_str().map(str::to_string),
                    )
                })
                .collect(),
            other => panic!("log: {other}"),
        }
    }

    fn clear_log(&self) {
        self.json("POST", "/_admin/log/clear", "");
    }

    /// The server's counters (`/_admin/stats`): downloads, uploads, max_in_flight, ...
    fn stats(&self) -> Value {
        self.json("GET", "/_admin/stats", "")
    }

    /// Hold the requests whose path starts with `prefix` (and of `method`, if given) for
    /// `seconds` before serving them.
    fn delay(&self, prefix: &str, method: Option<&str>, seconds: f64) {
        let mut f = serde_json::json!({"path_prefix": prefix, "delay": seconds});
        if let Some(m) = method {
            f["method"] = m.into();
        }
        self.json("POST", "/_admin/fault", &f.to_string());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the server and mount; None when the test must be skipped.
fn setup(server_args: &[&str], refresh: &str) -> Option<(Server, Mount)> {
    if !common::fuse_available() {
        return None;
    }
    let srv = Server::start(server_args)?;
    let m = srv.mount(refresh);
    Some((srv, m))
}

/// Single-quote for sh.
fn q(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', "'\\''"))
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn read_at(p: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = std::fs::File::open(p).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// The error number of an io::Result.
fn err_of<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    common::errno(&r.expect_err("expected an error"))
}

/// Run `cmd` with sh and assert it succeeds.
fn ok(cmd: &str) {
    let (code, out, err) = common::sh(cmd);
    assert_eq!(code, 0, "{cmd}: {out}{err}");
}

/// A file with `data` in a test temp dir.
fn local_file(tmp: &TempDir, name: &str, data: &[u8]) -> PathBuf {
    let p = tmp.path.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Deterministic non-repeating test data.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

/// The seed's directories whose names are sharenames: (untitled share, the two "Twins").
fn sharename_dirs(root: &Path) -> (PathBuf, Vec<PathBuf>) {
    let titled = set(&["Holiday photos", "Documents", "Empty"]);
    let mut untitled = None;
    let mut twins = Vec::new();
    for n in names(root).difference(&titled) {
        let d = root.join(n);
        let inside = names(&d);
        if inside.contains("readme.txt") {
            untitled = Some(d);
        } else {
            twins.push(d);
        }
    }
    (untitled.expect("the untitled share"), twins)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn mtime(p: &Path) -> i64 {
    std::fs::metadata(p)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn lists_shares_by_title_or_sharename_and_files_by_name() {
    let Some((_srv, m)) = setup(&["--seed"], "5") else {
        return;
    };
    let root = &m.mnt;
    let top = names(root);
    assert_eq!(top.len(), 6, "{top:?}");
    assert!(top.contains("Holiday photos") && top.contains("Documents") && top.contains("Empty"));
    assert!(
        !top.contains("Twins"),
        "a title two shares have cannot name one: {top:?}"
    );
    let (untitled, twins) = sharename_dirs(root);
    for d in twins.iter().chain([&untitled]) {
        let n = d.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            n.len() >= 5 && n.chars().all(|c| c.is_ascii_alphanumeric()),
            "named by its sharename: {n}"
        );
    }
    let twin_files: BTreeSet<String> = twins.iter().flat_map(|d| names(d)).collect();
    assert_eq!(twin_files, set(&["twin1.txt", "twin2.txt"]));
    assert_eq!(names(&untitled), set(&["readme.txt", "pending.bin"]));
    assert_eq!(
        names(&root.join("Holiday photos")),
        set(&["beach.jpg", "notes.txt"])
    );
    assert!(names(&root.join("Empty")).is_empty());

    // two files named todo.txt: the newer keeps the name, the other gets "todo (FILEID).txt"
    let docs = root.join("Documents");
    let entries = names(&docs);
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert!(entries.contains("report.txt") && entries.contains("todo.txt"));
    let other = entries
        .iter()
        .find(|n| n.starts_with("todo (") && n.ends_with(").txt"))
        .unwrap_or_else(|| panic!("the older todo.txt under a distinct name: {entries:?}"));
    assert_eq!(read(&docs.join("todo.txt")), b"second version, same name\n");
    assert_eq!(read(&docs.join(other)), b"first version\n");

    // sizes and times from the API
    let beach = root.join("Holiday photos/beach.jpg");
    let md = std::fs::metadata(&beach).unwrap();
    assert!(md.is_file());
    assert_eq!(md.len(), 10240);
    assert!(std::fs::metadata(&docs).unwrap().is_dir());
    for p in [&beach, &docs] {
        let t = mtime(p);
        assert!((now() - t).abs() < 600, "time from 'created': {t}");
    }
    assert_eq!(
        std::fs::metadata(root.join("Documents/report.txt"))
            .unwrap()
            .len(),
        2800
    );
}

#[test]
fn reads_whole_partial_and_ranged_with_a_cache() {
    let Some((srv, m)) = setup(&["--seed"], "5") else {
        return;
    };
    let photos = m.path("Holiday photos");
    assert_eq!(read(&photos.join("notes.txt")), b"Sun, sand and sea.\n");
    let beach: Vec<u8> = (0..40).flat_map(|_| 0u8..=255).collect();
    assert_eq!(read(&photos.join("beach.jpg")), beach);
    let report = b"Quarterly report: all good.\n".repeat(100);
    assert_eq!(
        read_at(&m.path("Documents/report.txt"), 1000, 56),
        &report[1000..1056]
    );
    assert_eq!(
        read_at(&photos.join("beach.jpg"), 10000, 240),
        &beach[10000..]
    );

    // a large file is read in byte ranges, and a re-read costs no request
    let tmp = TempDir::new("gett-src");
    let big = pattern(6 * 1024 * 1024 + 123, 7);
    let src = local_file(&tmp, "big.bin", &big);
    let dst = m.path("Empty/big.bin");
    ok(&format!("cp {} {}", q(&src), q(&dst)));
    srv.clear_log();
    let off = 5_000_000;
    assert_eq!(
        read_at(&dst, off, 1000),
        &big[off as usize..off as usize + 1000]
    );
    let log = srv.log();
    let blob_gets: Vec<_> = log
        .iter()
        .filter(|(meth, path, _)| meth == "GET" && path.contains("blob"))
        .collect();
    assert!(!blob_gets.is_empty(), "no download: {log:?}");
    assert!(
        blob_gets.iter().all(|(_, _, range)| range.is_some()),
        "a partial read of a large file must use ranges: {log:?}"
    );
    srv.clear_log();
    assert_eq!(
        read_at(&dst, off, 1000),
        &big[off as usize..off as usize + 1000]
    );
    assert_eq!(read(&photos.join("notes.txt")), b"Sun, sand and sea.\n");
    let again: Vec<_> = srv
        .log()
        .into_iter()
        .filter(|(_, path, _)| path.contains("blob"))
        .collect();
    assert!(
        again.is_empty(),
        "re-reads must come from the cache: {again:?}"
    );
    assert_eq!(read(&dst), big);
}

#[test]
fn a_file_not_uploaded_yet_is_listed_but_reads_as_eio() {
    let Some((_srv, m)) = setup(&["--seed"], "5") else {
        return;
    };
    let (untitled, _) = sharename_dirs(&m.mnt);
    let pending = untitled.join("pending.bin");
    let md = std::fs::metadata(&pending).unwrap();
    assert!(md.is_file());
    assert_eq!(md.len(), 0);
    assert_eq!(err_of(std::fs::read(&pending)), libc::EIO);
    // its neighbour reads fine
    assert_eq!(
        read(&untitled.join("readme.txt")),
        b"This share has no title.\n"
    );
}

#[test]
fn cp_in_overwrite_append_and_touch_are_uploaded() {
    let Some((srv, m)) = setup(&["--seed"], "5") else {
        return;
    };
    let tmp = TempDir::new("gett-src");
    let data = pattern(100_000, 1);
    let src = local_file(&tmp, "data.bin", &data);
    let dst = m.path("Empty/data.bin");
    ok(&format!("cp {} {}", q(&src), q(&dst)));
    assert_eq!(read(&dst), data);
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), 100_000);

    // overwrite: shorter, through a shell redirection and through cp
    ok(&format!("echo replaced > {}", q(&dst)));
    assert_eq!(read(&dst), b"replaced\n");
    ok(&format!("echo more >> {}", q(&dst)));
    assert_eq!(read(&dst), b"replaced\nmore\n");
    let data2 = pattern(5000, 2);
    let src2 = local_file(&tmp, "data2.bin", &data2);
    ok(&format!("cp {} {}", q(&src2), q(&dst)));
    assert_eq!(read(&dst), data2);
    ok(&format!("touch {}", q(&m.path("Empty/empty.txt"))));
    assert_eq!(read(&m.path("Empty/empty.txt")), b"");
    assert_eq!(names(&m.path("Empty")), set(&["data.bin", "empty.txt"]));

    // what the server has: one file per name, the last content
    let m2 = srv.mount("5");
    assert_eq!(names(&m2.path("Empty")), set(&["data.bin", "empty.txt"]));
    assert_eq!(read(&m2.path("Empty/data.bin")), data2);
    assert_eq!(read(&m2.path("Empty/empty.txt")), b"");
}

#[test]
fn editor_style_saves_through_a_temporary_file_and_rename() {
    let Some((srv, m)) = setup(&["--seed"], "5") else {
        return;
    };
    let notes = m.path("Holiday photos/notes.txt");
    let notes_id = || {
        srv.shares()
            .iter()
            .filter(|s| s["title"] == "Holiday photos")
            .flat_map(|s| s["files"].as_array().cloned().unwrap_or_default())
            .filter(|f| f["filename"] == "notes.txt")
            .map(|f| f["fileid"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    let before = notes_id();
    assert_eq!(before.len(), 1);
    ok(&format!("sed -i 's/sea/surf/' {}", q(&notes)));
    assert_eq!(read(&notes), b"Sun, sand and surf.\n");
    assert_eq!(
        names(&m.path("Holiday photos")),
        set(&["beach.jpg", "notes.txt"]),
        "no temporary file left behind"
    );
    // the same through write + fsync + close + rename over the target
    let tmp = m.path("Holiday photos/.notes.txt.swp");
    {
        let mut f = std::fs::File::create(&tmp).unwrap();
        f.write_all(b"rewritten\n").unwrap();
        f.sync_all().unwrap();
    }
    std::fs::rename(&tmp, &notes).unwrap();
    assert_eq!(read(&notes), b"rewritten\n");
    assert_eq!(notes_id(), before, "saving keeps the file (and its link)");
    let m2 = srv.mount("5");
    assert_eq!(
        names(&m2.path("Holiday photos")),
        set(&["beach.jpg", "notes.txt"])
    );
    assert_eq!(read(&m2.path("Holiday photos/notes.txt")), b"rewritten\n");
}

#[test]
fn renames_files_within_and_across_shares() {
    let Some((srv, m)) = setup(&["--seed"], "5") else {
        return;
    };
    let report = b"Quarterly report: all good.\n".repeat(100);
    std::fs::rename(
        m.path("Documents/report.txt"),
        m.path("Documents/summary.txt"),
    )
    .unwrap();
    assert!(!m.path("Documents/report.txt").exists());
    assert_eq!(read(&m.path("Documents/summary.txt")), report);

    std::fs::rename(
        m.path("Documents/summary.txt"),
        m.path("Holiday photos/summary.txt"),
    )
    .unwrap();
    assert!(!m.path("Documents/summary.txt").exists());
    assert_eq!(read(&m.path("Holiday photos/summary.txt")), report);

    // over an existing file: it is replaced
    std::fs::rename(
        m.path("Holiday photos/summary.txt"),
        m.path("Holiday photos/notes.txt"),
    )
    .unwrap();
    assert_eq!(read(&m.path("Holiday photos/notes.txt")), report);
    assert_eq!(
        names(&m.path("Holiday photos")),
        set(&["beach.jpg", "notes.txt"])
    );
    // mv (the command) to another share
    ok(&format!(
        "mv {} {}",
        q(&m.path("Holiday photos/beach.jpg")),
        q(&m.path("Empty/"))
    ));
    assert_eq!(read(&m.path("Empty/beach.jpg")).len(), 10240);
    // files cannot live at the root; shares cannot nest
    assert_eq!(
        err_of(std::fs::rename(
            m.path("Empty/beach.jpg"),
            m.path("beach.jpg")
        )),
        libc::EPERM
    );

    let m2 = srv.mount("5");
    assert_eq!(names(&m2.path("Holiday photos")), set(&["notes.txt"]));
    assert_eq!(read(&m2.path("Holiday photos/notes.txt")), report);
    assert_eq!(names(&m2.path("Documents")).len(), 2);
    assert_eq!(names(&m2.path("Empty")), set(&["beach.jpg"]));
}

#[test]
fn renaming_a_share_directory_changes_its_title() {
    let Some((srv, m)) = setup(&["--seed"], "5") else {
        return;
    };
    std::fs::rename(m.path("Documents"), m.path("Papers")).unwrap();
    let top = names(&m.mnt);
    assert!(
        top.contains("Papers") && !top.contains("Documents"),
        "{top:?}"
    );
    assert!(names(&m.path("Papers")).contains("report.txt"));
    let papers = srv
        .shares()
        .into_iter()
        .find(|s| s["title"] == "Papers")
        .expect("the share is titled Papers");
    let sharename = papers["sharename"].as_str().unwrap().to_string();

    // renaming it to its own sharename removes the title
    std::fs::rename(m.path("Papers"), m.path(&sharename)).unwrap();
    assert!(names(&m.mnt).contains(&sharename));
    let s = srv
        .shares()
        .into_iter()
        .find(|s| s["sharename"] == sharename.as_str())
        .unwrap();
    assert!(s.get("title").is_none(), "title removed: {s}");
    std::fs::rename(m.path(&sharename), m.path("Papers")).unwrap();

    // onto a title two other shares have: it would not show under that name
    assert_eq!(
        err_of(std::fs::rename(m.path("Papers"), m.path("Twins"))),
        libc::EEXIST
    );
    // onto a non-empty share directory; into a share
    assert_eq!(
        err_of(std::fs::rename(m.path("Empty"), m.path("Papers"))),
        libc::ENOTEMPTY
    );
    assert_eq!(
        err_of(std::fs::rename(m.path("Empty"), m.path("Papers/Empty"))),
        libc::EPERM
    );

    let m2 = srv.mount("5");
    let top = names(&m2.mnt);
    assert!(
        top.contains("Papers") && !top.contains("Documents"),
        "{top:?}"
    );
    assert_eq!(
        read(&m2.path("Papers/report.txt")),
        b"Quarterly report: all good.\n".repeat(100)
    );
}

#[test]
fn rm_mkdir_and_rmdir() {
    let Some((srv, m)) = setup(&["--seed"], "5") else {
        return;
    };
    std::fs::remove_file(m.path("Documents/report.txt")).unwrap();
    assert!(!m.path("Documents/report.txt").exists());
    assert_eq!(
        err_of(std::fs::remove_file(m.path("Documents/report.txt"))),
        libc::ENOENT
    );

    std::fs::create_dir(m.path("New share")).unwrap();
    assert!(m.path("New share").is_dir());
    assert!(names(&m.path("New share")).is_empty());
    assert!(srv.shares().iter().any(|s| s["title"] == "New share"));
    assert_eq!(
        err_of(std::fs::create_dir(m.path("Documents"))),
        libc::EEXIST
    );
    assert_eq!(
        err_of(std::fs::create_dir(m.path("Twins"))),
        libc::EEXIST,
        "a title other shares have"
    );
    assert_eq!(
        err_of(std::fs::create_dir(m.path("Documents/sub"))),
        libc::EPERM
    );
    assert_eq!(
        err_of(std::fs::write(m.path("at-root.txt"), b"x")),
        libc::EPERM
    );

    std::fs::remove_dir(m.path("New share")).unwrap();
    assert!(!m.path("New share").exists());
    std::fs::remove_dir(m.path("Empty")).unwrap();
    assert_eq!(
        err_of(std::fs::remove_dir(m.path("Documents"))),
        libc::ENOTEMPTY
    );
    assert_eq!(
        err_of(std::fs::remove_dir(m.path("Documents/todo.txt"))),
        libc::ENOTDIR
    );
    std::fs::remove_file(m.path("Holiday photos/beach.jpg")).unwrap();
    std::fs::remove_file(m.path("Holiday photos/notes.txt")).unwrap();
    std::fs::remove_dir(m.path("Holiday photos")).unwrap();

    let m2 = srv.mount("5");
    let top = names(&m2.mnt);
    for gone in ["New share", "Empty", "Holiday photos"] {
        assert!(!top.contains(gone), "{gone}: {top:?}");
    }
    assert_eq!(names(&m2.path("Documents")).len(), 2);
}

#[test]
fn df_shows_the_account_storage() {
    let quota: u64 = 4096 * 100_000;
    let q_arg = quota.to_string();
    let Some((_srv, m)) = setup(&["--quota", &q_arg], "5") else {
        return;
    };
    let vfs = |p: &Path| {
        let c = std::ffi::CString::new(p.to_string_lossy().as_bytes()).unwrap();
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st
    };
    let st = vfs(&m.mnt);
    assert_eq!(st.f_blocks * st.f_frsize, quota);
    assert_eq!(st.f_bfree, st.f_blocks);
    assert_eq!(st.f_bavail, st.f_blocks);
    std::fs::create_dir(m.path("Box")).unwrap();
    let tmp = TempDir::new("gett-src");
    let src = local_file(&tmp, "f", &pattern(40960, 3));
    ok(&format!("cp {} {}", q(&src), q(&m.path("Box/f"))));
    let st = vfs(&m.mnt);
    assert_eq!(st.f_blocks - st.f_bfree, 10, "40960 bytes used");
    let (code, out, _) = common::sh(&format!("df -B4096 {}", q(&m.mnt)));
    assert_eq!(code, 0);
    assert!(out.contains("100000"), "{out}");
}

#[test]
fn a_rejected_upload_fails_close_and_keeps_the_data() {
    let Some((srv, m)) = setup(&["--quota", "100000"], "5") else {
        return;
    };
    std::fs::create_dir(m.path("Box")).unwrap();
    let tmp = TempDir::new("gett-src");
    let data = pattern(150_000, 4);
    let src = local_file(&tmp, "big.bin", &data);
    let dst = m.path("Box/big.bin");
    let (code, _, err) = common::sh(&format!("cp {} {}", q(&src), q(&dst)));
    assert_ne!(code, 0, "cp must fail when the server refuses the upload");
    assert!(err.contains("No space left on device"), "{err}");
    // nothing is lost: the file is listed with its data, and can be read back
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), 150_000);
    assert_eq!(read(&dst), data);
    // retried by sync(1) (fsync): still refused, then accepted once there is room
    let (code, _, _) = common::sh(&format!("sync {}", q(&dst)));
    assert_ne!(code, 0);
    srv.json("POST", "/_admin/quota", r#"{"limit": 1000000}"#);
    ok(&format!("sync {}", q(&dst)));
    let m2 = srv.mount("5");
    assert_eq!(read(&m2.path("Box/big.bin")), data);
    drop(m2);

    // a server error (500) is EIO; what is still unsaved at unmount is written to the rescue dir
    srv.json(
        "POST",
        "/_admin/fault",
        r#"{"path_prefix": "/1/upload", "method": "PUT", "status": 500, "error": "upload failed"}"#,
    );
    let small = local_file(&tmp, "small.txt", b"keep me\n");
    let (code, _, err) = common::sh(&format!("cp {} {}", q(&small), q(&m.path("Box/small.txt"))));
    assert_ne!(code, 0);
    assert!(err.contains("Input/output error"), "{err}");
    assert_eq!(read(&m.path("Box/small.txt")), b"keep me\n");
    let mut m = m;
    m.unmount();
    let rescued = find_file(&srv.rescue.path, "small.txt")
        .unwrap_or_else(|| panic!("small.txt saved under {}", srv.rescue.path.display()));
    assert_eq!(read(&rescued), b"keep me\n");
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()? {
        let p = e.ok()?.path();
        if p.is_dir() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}

#[test]
fn listings_refresh_after_the_configured_time() {
    if !common::fuse_available() {
        return;
    }
    let Some(srv) = Server::start(&["--seed"]) else {
        return;
    };
    // refresh=3600 as a script argument: a share created elsewhere does not show for that long
    let slow = srv
        .try_mount("1", &[], &["refresh=3600"], PASSWORD)
        .unwrap_or_else(|e| panic!("{e}"));
    let fast = srv.mount("1");
    assert!(!names(&slow.mnt).contains("External"));
    assert!(!names(&fast.mnt).contains("External"));
    let t = srv.token();
    srv.json(
        "POST",
        &format!("/1/shares/create?accesstoken={t}"),
        r#"{"title": "External"}"#,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !names(&fast.mnt).contains("External") {
        assert!(Instant::now() < deadline, "the new share never showed up");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!names(&slow.mnt).contains("External"));
}

#[test]
fn credentials_come_from_the_environment_only() {
    if !common::fuse_available() {
        return;
    }
    let Some(srv) = Server::start(&[]) else {
        return;
    };
    let e = srv
        .try_mount("5", &[], &[], "Hunter2-not-it")
        .err()
        .expect("a wrong password fails the mount");
    assert!(e.contains("login failed"), "{e}");
    assert!(
        !e.contains("Hunter2"),
        "the password must not be echoed: {e}"
    );
    let e = srv
        .try_mount("5", &[], &["password=secret"], PASSWORD)
        .err()
        .expect("a password argument is refused");
    assert!(e.contains("never taken from the command line"), "{e}");
}

#[test]
fn only_the_mounting_user_may_change_the_account() {
    if !common::fuse_available() || unsafe { libc::getuid() } != 0 {
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return;
    }
    let Some(srv) = Server::start(&["--seed"]) else {
        return;
    };
    let m = srv
        .try_mount("5", &["-o", "allow_other"], &[], PASSWORD)
        .unwrap_or_else(|e| panic!("{e}"));
    // the mount's parent directories must be searchable by the other user
    ok(&format!("chmod 755 {}", q(&m.dir.path)));
    let as_nobody = |cmd: &str| {
        common::sh(&format!(
            "setpriv --reuid=65534 --regid=65534 --clear-groups {cmd}"
        ))
    };
    let (code, out, err) = as_nobody(&format!("cat {}", q(&m.path("Holiday photos/notes.txt"))));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "Sun, sand and sea.\n");
    let (code, _, err) = as_nobody(&format!("mkdir {}", q(&m.path("Mine"))));
    assert_ne!(code, 0);
    assert!(err.contains("Permission denied"), "{err}");
    let (code, _, err) = as_nobody(&format!("sh -c 'echo x > {}'", m.path("Empty/x").display()));
    assert_ne!(code, 0);
    assert!(err.contains("Permission denied"), "{err}");
    assert!(names(&m.path("Empty")).is_empty());
}

#[test]
fn parallel_reads_of_different_files_take_about_one_server_delay() {
    let Some((srv, m)) = setup(&["--seed"], "5") else {
        return;
    };
    const N: usize = 6;
    const DELAY: f64 = 1.5;
    let tmp = TempDir::new("gett-src");
    let files: Vec<(String, Vec<u8>)> = (0..N)
        .map(|i| {
            (
                format!("f{i}.bin"),
                pattern(50_000 + i * 1000, 100 + i as u64),
            )
        })
        .collect();
    for (name, data) in &files {
        let src = local_file(&tmp, name, data);
        ok(&format!(
            "cp {} {}",
            q(&src),
            q(&m.path(&format!("Empty/{name}")))
        ));
    }
    drop(m);
    // a new mount has nothing cached: every read downloads, and every download waits DELAY
    srv.delay("/1/blobs/", None, DELAY);
    let m = srv.mount("5");
    assert_eq!(names(&m.path("Empty")).len(), N);
    let downloads_before = srv.stats()["downloads"].as_u64().unwrap();
    let start = Instant::now();
    let readers: Vec<_> = files
        .iter()
        .map(|(name, _)| {
            let p = m.path(&format!("Empty/{name}"));
            std::thread::spawn(move || std::fs::read(p))
        })
        .collect();
    for (r, (name, data)) in readers.into_iter().zip(&files) {
        let got = r
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("read {name}: {e}"));
        assert!(got == *data, "{name}: wrong data ({} bytes)", got.len());
    }
    let took = start.elapsed();
    let stats = srv.stats();
    eprintln!("{N} parallel reads, each download delayed {DELAY} s: {took:?}; server: {stats}");
    assert_eq!(
        stats["downloads"].as_u64().unwrap() - downloads_before,
        N as u64,
        "one download per file"
    );
    assert!(took >= Duration::from_secs_f64(DELAY), "{took:?}");
    assert!(
        took < Duration::from_secs_f64(2.0 * DELAY),
        "the downloads did not overlap: {took:?} for {N} files of {DELAY} s each"
    );
    assert!(
        stats["max_in_flight"].as_u64().unwrap() >= N as u64,
        "the server never saw the {N} downloads at once: {stats}"
    );
}

#[test]
fn listings_are_served_while_a_slow_upload_is_in_progress() {
    // refresh=0: every listing asks the server, so each one below is a request of its own
    // running while the upload waits
    let Some((srv, m)) = setup(&["--seed"], "0") else {
        return;
    };
    const DELAY: f64 = 3.0;
    let tmp = TempDir::new("gett-src");
    let data = pattern(4 * 1024 * 1024 + 17, 9);
    let src = local_file(&tmp, "big.bin", &data);
    srv.delay("/1/upload/", Some("PUT"), DELAY);
    let dst = m.path("Empty/big.bin");
    let cp = {
        let cmd = format!("cp {} {}", q(&src), q(&dst));
        std::thread::spawn(move || {
            let t = Instant::now();
            (common::sh(&cmd), t.elapsed())
        })
    };
    // the server marks the file `uploading` from the moment the PUT arrives until it is stored
    let uploading = || {
        srv.shares().iter().any(|s| {
            s["files"].as_array().is_some_and(|fs| {
                fs.iter()
                    .any(|f| f["filename"] == "big.bin" && f["readystate"] == "uploading")
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !uploading() {
        assert!(
            Instant::now() < deadline && !cp.is_finished(),
            "the upload never started; log: {}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    srv.clear_log();
    let limit = Duration::from_millis(500);
    let mut seen = Vec::new();
    for dir in ["", "Documents", "Empty"] {
        let p = m.path(dir);
        let t = Instant::now();
        let listed = names(&p);
        let took = t.elapsed();
        seen.push((dir, took));
        assert!(took < limit, "ls of /{dir} took {took:?} during the upload");
        if dir.is_empty() {
            assert!(
                listed.contains("Documents") && listed.contains("Empty"),
                "{listed:?}"
            );
        }
        if dir == "Documents" {
            assert!(listed.contains("report.txt"), "{listed:?}");
        }
    }
    let t = Instant::now();
    assert_eq!(
        read(&m.path("Holiday photos/notes.txt")),
        b"Sun, sand and sea.\n"
    );
    seen.push(("read notes.txt", t.elapsed()));
    assert!(
        t.elapsed() < limit,
        "a read took {:?} during the upload",
        t.elapsed()
    );
    assert!(
        !cp.is_finished(),
        "the upload ended before the listings were measured"
    );
    let listings = srv
        .log()
        .iter()
        .filter(|(meth, path, _)| meth == "GET" && path == "/1/shares")
        .count();
    assert!(
        listings >= 3,
        "each ls asked the server (refresh=0): {listings}"
    );

    let ((code, out, err), took) = cp.join().unwrap();
    eprintln!("during a {DELAY} s upload: {seen:?}; cp took {took:?}");
    assert_eq!(code, 0, "cp: {out}{err}");
    assert!(took >= Duration::from_secs_f64(DELAY), "{took:?}");
    let m2 = srv.mount("5");
    assert!(
        read(&m2.path("Empty/big.bin")) == data,
        "uploaded data differs"
    );
}
