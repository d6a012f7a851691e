//! The built-in `gett` module against the local Ge.tt-compatible server (tests/gett_server.py):
//! every call, every error path, token refresh (before expiry, after a 401, refused), server
//! errors, time-outs, the API's quirks, and no secrets in messages.
//!
//! Each test starts its own server and runs a Lua chunk through the real flufs binary with
//! tests/fixtures/gett_module_runner.lua, which runs the chunk while the script loads and exits
//! before mounting (so these tests need no /dev/fuse); one test uses the module from a mounted
//! filesystem. python3 is required; in CI (CI=true) its absence fails the tests.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use common::{Mount, TempDir, fixture, flufs_bin, fuse_available, repo};

fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

fn server_script() -> PathBuf {
    repo().join("tests/gett_server.py")
}

/// True when python3 runs. In CI its absence is a failure, never a skip.
fn python3_available() -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if in_ci() {
            panic!("python3 is missing but CI=true: the gett tests must run in CI");
        }
        eprintln!("skipping: python3 not available (set CI=true to make this an error)");
    }
    ok
}

/// A running test server; killed (and reaped) on drop. Its stdin is a pipe: if this process
/// dies without dropping the guard, the server sees EOF and exits (--exit-on-stdin-eof).
struct Server {
    child: Child,
    _stdin: ChildStdin,
    _stdout: BufReader<ChildStdout>,
    url: String,
    dir: TempDir,
}

impl Server {
    /// Start a server with these extra options, or None (skip) when python3 is missing.
    fn start(opts: &[&str]) -> Option<Server> {
        if !python3_available() {
            return None;
        }
        let dir = TempDir::new("gett-server");
        let log = std::fs::File::create(dir.path.join("server.log")).expect("server log");
        let mut child = Command::new("python3")
            .arg(server_script())
            .args(["--port", "0", "--exit-on-stdin-eof"])
            .args(opts)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start python3 tests/gett_server.py");
        let stdin = child.stdin.take().expect("server stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("server stdout"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let mut server = Server {
            child,
            _stdin: stdin,
            _stdout: stdout,
            url: String::new(),
            dir,
        };
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| {
                panic!(
                    "the test server did not start (first line {line:?}): {}",
                    server.log()
                )
            });
        server.url = format!("http://127.0.0.1:{port}");
        Some(server)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path.join("server.log")).unwrap_or_default()
    }

    /// GET an admin endpoint, as JSON.
    fn admin(&self, path: &str) -> serde_json::Value {
        let body = reqwest::blocking::get(format!("{}{path}", self.url))
            .and_then(|r| r.bytes())
            .unwrap_or_else(|e| panic!("admin GET {path}: {e}"));
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("admin GET {path}: {e}"))
    }

    /// POST to an admin endpoint.
    fn admin_post(&self, path: &str, json: &str) {
        reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.url))
            .body(json.to_string())
            .send()
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("admin POST {path}: {e}"));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The outcome of one chunk run.
struct Run {
    code: Option<i32>,
    report: String,
    stderr: String,
}

impl Run {
    fn assert_passed(&self) {
        let done = self.report.lines().last() == Some("DONE 0");
        assert!(
            self.code == Some(0) && done,
            "the Lua checks failed (exit {:?}):\n{}\n--- flufs stderr:\n{}",
            self.code,
            self.report,
            self.stderr
        );
    }

    /// The NOTE lines of the report.
    fn notes(&self) -> Vec<&str> {
        self.report
            .lines()
            .filter_map(|l| l.strip_prefix("NOTE "))
            .collect()
    }
}

/// Run a Lua chunk with the runner fixture against `server`.
fn run_chunk(server: &Server, chunk: &str) -> Run {
    let dir = TempDir::new("gett-run");
    let chunk_path = dir.path.join("chunk.lua");
    let report_path = dir.path.join("report.txt");
    let stderr_path = dir.path.join("stderr.log");
    let mnt = dir.path.join("mnt");
    std::fs::create_dir_all(&mnt).expect("mountpoint");
    std::fs::write(&chunk_path, chunk).expect("write chunk");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr log");
    let mut child = Command::new(flufs_bin())
        .arg("-f")
        .arg(fixture("gett_module_runner.lua"))
        .arg(&mnt)
        .arg("--")
        .arg(&chunk_path)
        .arg(&report_path)
        .env("GETT_API", &server.url)
        .env("GETT_SERVER_SCRIPT", server_script())
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn flufs");
    let code = common::wait_or_kill(&mut child, Duration::from_secs(120));
    let mut stderr = String::new();
    if let Ok(mut f) = std::fs::File::open(&stderr_path) {
        let _ = f.read_to_string(&mut stderr);
    }
    Run {
        code,
        report: std::fs::read_to_string(&report_path).unwrap_or_default(),
        stderr,
    }
}

/// Helpers shared by the chunks (prepended to each).
const PRELUDE: &str = r#"
local function find_share(list, pred)
  for _, sh in ipairs(list) do if pred(sh) then return sh end end
end
local function titled(t) return function(sh) return sh.title == t end end
"#;

fn chunk(body: &str) -> String {
    format!("{PRELUDE}\n{body}")
}

#[test]
fn every_call_round_trips() {
    let Some(server) = Server::start(&["--seed"]) else {
        return;
    };
    let run = run_chunk(
        &server,
        &chunk(
            r#"
local s = assert(T.login())
T.ok(tostring(s):find("gett session", 1, true), "tostring(session)")

-- user(): the user object, unknown fields kept
local me = assert(s:user())
T.eq(me.email, "test@example.org", "user.email")
T.eq(me.userid, "u1", "user.userid")
T.eq(me.fullname, "Test User", "user.fullname")
T.eq(me.storage.limit, 2000000000, "storage.limit")
T.eq(math.type(me.storage.used), "integer", "storage.used is an integer")
T.eq(me.storage.used, 13150, "storage.used of the seed")
T.eq(me.storage.extra, 0, "storage.extra kept")

-- shares(): newest first, each with its files
local shares = assert(s:shares())
T.eq(#shares, 6, "six seeded shares")
T.eq(shares[1].title, "Empty", "newest share first")
T.eq(shares[#shares].title, "Holiday photos", "oldest share last")
local untitled = find_share(shares, function(sh) return sh.title == nil end)
T.ok(untitled, "the untitled share has no title field")
T.eq(#untitled.files, 2, "untitled share files")
local pending, readme = untitled.files[1], untitled.files[2]
T.eq(pending.filename, "pending.bin", "files newest first")
T.eq(pending.size, nil, "no size before upload")
T.eq(pending.readystate, "remote", "remote before upload")
T.eq(readme.size, 25, "size after upload")
T.eq(readme.readystate, "uploaded", "uploaded")
T.eq(type(readme.fileid), "string", "fileid is a string")
T.eq(untitled.live, false, "unknown share field kept (live)")
T.eq(untitled.getturl, "http://ge.tt/" .. untitled.sharename, "getturl")
T.eq(readme.getturl, "http://ge.tt/" .. untitled.sharename .. "/v/" .. readme.fileid, "file getturl")

-- share(name), file(share, id): public reads
local one = assert(s:share(untitled.sharename))
T.eq(one.sharename, untitled.sharename, "share(name)")
T.eq(#one.files, 2, "share(name).files")
local rf = assert(s:file(untitled.sharename, readme.fileid))
T.eq(rf.filename, "readme.txt", "file(share, id)")
T.eq(rf.sharename, untitled.sharename, "file.sharename")
T.eq(s:download(untitled.sharename, readme.fileid), "This share has no title.\n", "download seed")

-- create_share / update_share
local a = assert(s:create_share("Alpha"))
T.eq(a.title, "Alpha", "create_share(title)")
T.eq(#a.files, 0, "new share has no files")
T.eq(math.type(a.created), "integer", "created is an integer")
local b = assert(s:create_share())
T.eq(b.title, nil, "create_share() is untitled")
T.eq(assert(s:update_share(b.sharename, "Beta")).title, "Beta", "update_share(title)")
T.eq(s:share(b.sharename).title, "Beta", "title stored")
local cleared = assert(s:update_share(b.sharename, nil))
T.eq(cleared.title, nil, "update_share(name, nil) removes the title")
T.eq(s:share(b.sharename).title, nil, "title removed")
T.eq(s:shares()[1].sharename, b.sharename, "new share listed first")

-- create_file / upload / file / download
local f = assert(s:create_file(a.sharename, "hello.txt"))
T.eq(f.filename, "hello.txt", "create_file filename")
T.eq(f.readystate, "remote", "created file is remote")
T.eq(f.size, nil, "created file has no size")
T.eq(f.sharename, a.sharename, "created file sharename")
T.eq(type(f.upload) == "table" and type(f.upload.puturl), "string", "create_file gives upload.puturl")
T.admin("/_admin/log/clear", "{}")
T.eq(s:upload(a.sharename, f.fileid, "Hello, Ge.tt!\n"), true, "upload")
local log = T.admin("/_admin/log")
T.ok(not log:find("/upload\"", 1, true), "the first upload uses the URL from create_file")
local g = assert(s:file(a.sharename, f.fileid))
T.eq(g.size, 14, "size after upload")
T.eq(g.readystate, "uploaded", "uploaded after upload")
T.eq(g.upload, nil, "file() has no upload object")
T.eq(s:download(a.sharename, f.fileid), "Hello, Ge.tt!\n", "download whole")
T.eq(s:download(a.sharename, f.fileid, 7, 5), "Ge.tt", "download offset+length")
T.eq(s:download(a.sharename, f.fileid, 7), "Ge.tt!\n", "download from offset")
T.eq(s:download(a.sharename, f.fileid, 0, 100), "Hello, Ge.tt!\n", "length past the end")
T.eq(s:download(a.sharename, f.fileid, 14), "", "offset at the end")
T.eq(s:download(a.sharename, f.fileid, 100, 10), "", "offset past the end")
T.eq(s:download(a.sharename, f.fileid, 3, 0), "", "zero length")
T.eq(s:download(a.sharename, tonumber(f.fileid), 0, 5), "Hello", "integer fileid")
log = T.admin("/_admin/log")
T.ok(log:find('"range": "bytes=7-11"', 1, true), "partial download sent a Range")

-- overwrite: a fresh upload URL
T.admin("/_admin/log/clear", "{}")
T.eq(s:upload(a.sharename, f.fileid, "v2"), true, "overwrite")
log = T.admin("/_admin/log")
T.ok(log:find('/1/files/' .. a.sharename .. '/' .. f.fileid .. '/upload"', 1, true),
  "overwrite asks for a fresh upload URL")
T.eq(s:download(a.sharename, f.fileid), "v2", "overwritten bytes")
T.eq(s:file(a.sharename, f.fileid).size, 2, "overwritten size")

-- binary data, an empty file, duplicate names
local bytes = {}
for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
local bin = table.concat(bytes):rep(300)
local f2 = assert(s:create_file(a.sharename, "bin"))
T.eq(s:upload(a.sharename, f2.fileid, bin), true, "upload binary")
T.ok(s:download(a.sharename, f2.fileid) == bin, "binary round trip")
T.ok(s:download(a.sharename, f2.fileid, 70000, 1000) == bin:sub(70001, 71000), "binary range")
local f3 = assert(s:create_file(a.sharename, "empty"))
T.eq(s:upload(a.sharename, f3.fileid, ""), true, "upload empty")
T.eq(s:file(a.sharename, f3.fileid).size, 0, "empty size")
T.eq(s:download(a.sharename, f3.fileid), "", "download empty")
local dup = assert(s:create_file(a.sharename, "hello.txt"))
T.ok(dup.fileid ~= f.fileid, "a duplicate filename gets its own id")
T.eq(s:share(a.sharename).files[1].fileid, dup.fileid, "newest file first")
T.eq(s:user().storage.used, 13150 + 2 + #bin, "storage.used counts uploads")

-- destroy_file / destroy_share
T.eq(s:destroy_file(a.sharename, f.fileid), true, "destroy_file")
local gone, err = s:file(a.sharename, f.fileid)
T.eq(gone, nil, "destroyed file is gone")
T.errno(err, "ENOENT", "destroyed file")
T.eq(s:user().storage.used, 13150 + #bin, "storage.used after destroy")
T.eq(s:destroy_share(a.sharename), true, "destroy_share")
local removed = assert(s:share(a.sharename))
T.eq(removed.readystate, "removed", "destroyed share reads removed")
T.eq(#removed.files, 0, "destroyed share has no files")
T.eq(s:destroy_share(a.sharename), true, "destroying twice succeeds")
T.ok(not find_share(s:shares(), function(sh) return sh.sharename == a.sharename end),
  "destroyed share not listed")

-- log in again with the refresh token
local r = s:refreshtoken()
T.eq(type(r), "string", "refreshtoken()")
local s2 = assert(gett.login{refreshtoken = r})
T.eq(s2:user().email, "test@example.org", "refresh-token login")
T.eq(#s2:shares(), 7, "refresh-token session lists shares")
"#,
        ),
    );
    run.assert_passed();
    let stats = server.admin("/_admin/stats");
    assert_eq!(stats["password_logins"], 1, "{stats}");
    assert_eq!(stats["refresh_logins"], 1, "{stats}");
}

#[test]
fn errors_map_to_errno_and_misuse_raises() {
    let Some(server) = Server::start(&["--seed"]) else {
        return;
    };
    let run = run_chunk(
        &server,
        &chunk(
            r#"
local s = assert(T.login())
local shares = s:shares()
local docs = find_share(shares, titled("Documents"))
local untitled = find_share(shares, function(sh) return sh.title == nil end)
local pending = untitled.files[1]

-- bad logins
local n, e = T.login{password = "wrong"}
T.eq(n, nil, "wrong password: nil")
T.errno(e, "EACCES", "wrong password")
T.eq(e.status, 403, "wrong password status")
T.eq(e.message, "wrong email or password", "wrong password message")
n, e = T.login{email = "nobody@example.org"}
T.errno(e, "EACCES", "unknown user")
T.eq(e.message, "User not found", "unknown user message")
n, e = T.login{apikey = "otherkey"}
T.errno(e, "EACCES", "wrong apikey")
n, e = gett.login{refreshtoken = "r.bogus"}
T.errno(e, "EACCES", "unknown refresh token")
T.eq(e.status, 401, "unknown refresh token status")

-- not found
local x
x, e = s:share("nosuch1")
T.eq(x, nil, "share(): nil")
T.errno(e, "ENOENT", "unknown share")
T.eq(e.status, 404, "unknown share status")
T.eq(e.message, "share not found", "unknown share message")
T.eq(tostring(e), "gett: 404: share not found", "tostring(err)")
x, e = s:file(docs.sharename, "999")
T.errno(e, "ENOENT", "unknown file")
T.eq(e.message, "file not found", "unknown file message")
x, e = s:file("nosuch1", "0")
T.errno(e, "ENOENT", "file of an unknown share")
x, e = s:create_file("nosuch1", "x")
T.errno(e, "ENOENT", "create_file in an unknown share")
x, e = s:update_share("nosuch1", "x")
T.errno(e, "ENOENT", "update of an unknown share")
x, e = s:destroy_share("nosuch1")
T.errno(e, "ENOENT", "destroy of an unknown share")
x, e = s:destroy_file(docs.sharename, "999")
T.errno(e, "ENOENT", "destroy of an unknown file")
x, e = s:download(docs.sharename, "999")
T.errno(e, "ENOENT", "download of an unknown file")
T.eq(e.status, 404, "download 404")
x, e = s:upload(docs.sharename, "999", "data")
T.errno(e, "ENOENT", "upload to an unknown file")

-- a file that was never uploaded
x, e = s:download(untitled.sharename, pending.fileid)
T.eq(x, nil, "download of a remote file fails")
T.errno(e, "EIO", "download of a remote file")
T.eq(e.status, 409, "remote file status")

-- server errors
T.admin("/_admin/fault", '{"path_prefix": "/1/users/me", "status": 500, "error": "database on fire", "count": 1}')
x, e = s:user()
T.errno(e, "EIO", "500")
T.eq(e.status, 500, "500 status")
T.eq(e.message, "database on fire", "500 message")
T.ok(s:user(), "the next call works")
T.admin("/_admin/fault", '{"path_prefix": "/1/shares", "status": 503, "count": 1}')
x, e = s:shares()
T.errno(e, "EIO", "503")
T.admin("/_admin/fault", '{"path_prefix": "/1/blobs", "status": 502, "count": 1}')
x, e = s:download(docs.sharename, docs.files[1].fileid)
T.errno(e, "EIO", "502 after the blob redirect")
T.admin("/_admin/fault", '{"path_prefix": "/1/users/me", "drop": true, "count": 1}')
x, e = s:user()
T.errno(e, "EIO", "connection dropped")
T.eq(e.status, nil, "transport error has no status")
T.note("dropped: " .. e.message)
T.ok(s:user(), "works after a dropped connection")

-- over quota
T.admin("/_admin/quota", '{"limit": 13200}')
local big = assert(s:create_file(docs.sharename, "big"))
x, e = s:upload(docs.sharename, big.fileid, ("x"):rep(100))
T.eq(x, nil, "over quota: nil")
T.errno(e, "ENOSPC", "over quota")
T.eq(e.status, 413, "over quota status")
T.eq(e.message, "storage limit exceeded", "over quota message")
T.eq(s:file(docs.sharename, big.fileid).readystate, "remote", "a rejected upload leaves the file remote")
T.eq(s:upload(docs.sharename, big.fileid, ("x"):rep(50)), true, "an upload that fits")

-- names that are not UTF-8
x, e = s:create_file(docs.sharename, "bad\255name")
T.errno(e, "EINVAL", "non-UTF-8 filename")
x, e = s:create_share("bad\255")
T.errno(e, "EINVAL", "non-UTF-8 title")

-- nobody listening
x, e = gett.login{refreshtoken = "r.x", api = "http://127.0.0.1:1", timeout = 5}
T.eq(x, nil, "connection refused: nil")
T.errno(e, "EIO", "connection refused")
T.eq(e.status, nil, "connection refused has no status")
T.note("refused: " .. e.message)

-- misuse raises
local function raises(what, pattern, f, ...)
  local ok, msg = pcall(f, ...)
  T.ok(not ok and tostring(msg):find(pattern, 1, true), what .. " raises (" .. tostring(msg) .. ")")
end
raises("share(42)", "bad argument #1 to 'share' (string expected, got number)", s.share, s, 42)
raises("share()", "bad argument #1 to 'share'", s.share, s)
raises("file(s, {})", "bad argument #2 to 'file'", s.file, s, "abc", {})
raises("upload without data", "bad argument #3 to 'upload'", s.upload, s, "abc", "0")
raises("upload(number)", "bad argument #3 to 'upload'", s.upload, s, "abc", "0", 5)
raises("download(-1)", "bad argument #3 to 'download'", s.download, s, "abc", "0", -1)
raises("download(1.5)", "bad argument #3 to 'download'", s.download, s, "abc", "0", 1.5)
raises("download(len -1)", "bad argument #4 to 'download'", s.download, s, "abc", "0", 0, -1)
raises("create_share({})", "bad argument #1 to 'create_share'", s.create_share, s, {})
raises("create_file(no name)", "bad argument #2 to 'create_file'", s.create_file, s, "abc")
raises("update_share(name, 1)", "bad argument #2 to 'update_share'", s.update_share, s, "abc", true)
raises("s.user() without self", "", s.user)
raises("login('x')", "bad argument #1 to 'login'", gett.login, "x")
raises("login{}", "apikey, email and password (or refreshtoken) are required", gett.login, {})
raises("login bad api", "bad API URL", gett.login, {refreshtoken = "r", api = "ftp://x"})
raises("login bad timeout", "'timeout' must be a positive number", gett.login, {refreshtoken = "r", timeout = -1})
raises("login number password", "'password' must be a string", gett.login, {apikey = "k", email = "e", password = 5})
"#,
        ),
    );
    run.assert_passed();
}

#[test]
fn expired_token_is_refreshed_once_and_the_call_retried() {
    let Some(server) = Server::start(&["--seed"]) else {
        return;
    };
    let run = run_chunk(
        &server,
        r#"
local s = assert(T.login())
T.admin("/_admin/expire", '{"access": true}')
T.admin("/_admin/log/clear", "{}")
local me, e = s:user()
T.ok(me, "call after the token was revoked succeeds (" .. tostring(e) .. ")")
T.ok(s:shares(), "later calls use the new token")
local f = s:create_share("after refresh")
T.ok(f, "a POST with the new token")
"#,
    );
    run.assert_passed();
    let stats = server.admin("/_admin/stats");
    assert_eq!(stats["refresh_logins"], 1, "{stats}");
    assert_eq!(stats["auth_failures"], 1, "{stats}");
    let log = server.admin("/_admin/log");
    let seq: Vec<(String, i64)> = log
        .as_array()
        .expect("log array")
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap_or("").to_string(),
                r["status"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let want = [
        ("/1/users/me", 401),
        ("/1/users/login", 200),
        ("/1/users/me", 200),
        ("/1/shares", 200),
        ("/1/shares/create", 200),
    ];
    let got: Vec<(&str, i64)> = seq.iter().map(|(p, s)| (p.as_str(), *s)).collect();
    assert_eq!(got, want);
}

#[test]
fn refused_refresh_is_reported_and_never_retried() {
    let Some(server) = Server::start(&["--seed"]) else {
        return;
    };
    let run = run_chunk(
        &server,
        &chunk(
            r#"
local s = assert(T.login())
local docs = find_share(s:shares(), titled("Documents"))
T.admin("/_admin/expire", '{"access": true, "refresh": true}')
local me, e = s:user()
T.eq(me, nil, "refused refresh: nil")
T.errno(e, "EACCES", "refused refresh")
T.eq(e.status, 401, "refused refresh status")
T.ok(e.message:find("refresh was refused", 1, true), "message says the refresh was refused: " .. e.message)
T.admin("/_admin/log/clear", "{}")
me, e = s:user()
T.errno(e, "EACCES", "later calls fail at once")
local x
x, e = s:create_share("x")
T.errno(e, "EACCES", "POST fails at once too")
T.eq(T.admin("/_admin/log"), "[]", "nothing was sent after the refused refresh")
T.ok(s:share(docs.sharename), "public calls still work")
local s2 = assert(T.login())
T.ok(s2:user(), "a new login works")
"#,
        ),
    );
    run.assert_passed();
    let stats = server.admin("/_admin/stats");
    assert_eq!(stats["refresh_failures"], 1, "{stats}");
    assert_eq!(stats["refresh_logins"], 0, "{stats}");
}

#[test]
fn token_is_refreshed_before_it_expires() {
    let Some(server) = Server::start(&["--token-lifetime", "2"]) else {
        return;
    };
    let run = run_chunk(
        &server,
        r#"
local s = assert(T.login())
T.ok(s:user(), "fresh token")
T.sleep(1.7)                -- within the last quarter of the 2 s lifetime
T.ok(s:user(), "near expiry")
local stats = T.admin("/_admin/stats")
T.ok(stats:find('"refresh_logins": 1,', 1, true), "refreshed before expiry: " .. stats)
T.sleep(2.5)                -- long expired
T.ok(s:user(), "after expiry")
stats = T.admin("/_admin/stats")
T.ok(stats:find('"refresh_logins": 2,', 1, true), "refreshed again: " .. stats)
T.ok(stats:find('"auth_failures": 0,', 1, true), "no request was refused: " .. stats)
"#,
    );
    run.assert_passed();
}

#[test]
fn time_outs_give_etimedout_within_the_timeout() {
    let Some(server) = Server::start(&["--seed"]) else {
        return;
    };
    let run = run_chunk(
        &server,
        &chunk(
            r#"
local s = assert(T.login{timeout = 1})
local docs = find_share(s:shares(), titled("Documents"))
local file = docs.files[#docs.files]   -- the oldest: report.txt

T.admin("/_admin/fault", '{"path_prefix": "/1/users/me", "delay": 4, "count": 1}')
local t0 = T.now()
local me, e = s:user()
local dt = T.now() - t0
T.eq(me, nil, "slow answer: nil")
T.errno(e, "ETIMEDOUT", "slow API call")
T.eq(e.status, nil, "time-out has no status")
T.ok(dt >= 0.9 and dt < 2.5, "gave up after about 1 s (" .. dt .. ")")

T.admin("/_admin/fault", '{"path_prefix": "/1/blobs", "delay": 4, "count": 1}')
t0 = T.now()
local data
data, e = s:download(docs.sharename, file.fileid)
dt = T.now() - t0
T.errno(e, "ETIMEDOUT", "slow download")
T.ok(dt < 2.5, "download gave up in time (" .. dt .. ")")

local f = assert(s:create_file(docs.sharename, "slow.txt"))
T.admin("/_admin/fault", '{"path_prefix": "/1/upload", "delay": 4, "count": 1}')
t0 = T.now()
local ok
ok, e = s:upload(docs.sharename, f.fileid, "data")
dt = T.now() - t0
T.errno(e, "ETIMEDOUT", "slow upload")
T.ok(dt < 2.5, "upload gave up in time (" .. dt .. ")")

T.admin("/_admin/fault", '{"path_prefix": "/1/users/login", "delay": 4, "count": 1}')
t0 = T.now()
local s2
s2, e = T.login{timeout = 0.5}
dt = T.now() - t0
T.errno(e, "ETIMEDOUT", "slow login")
T.ok(dt < 2, "login gave up in time (" .. dt .. ")")

T.ok(s:user(), "the session works after time-outs")
T.eq(s:download(docs.sharename, file.fileid, 0, 9), "Quarterly", "downloads work after time-outs")
"#,
        ),
    );
    run.assert_passed();
}

#[test]
fn no_secrets_in_messages() {
    let password = "pw-Sw0rdf1sh-7";
    let user = format!("testkey:test@example.org:{password}");
    let Some(server) = Server::start(&["--seed", "--user", &user]) else {
        return;
    };
    let run = run_chunk(
        &server,
        &chunk(&format!(
            r#"
local PW = "{password}"
local s = assert(T.login{{password = PW}})
local docs = find_share(s:shares(), titled("Documents"))
local function note(what, e) T.note(what .. ": " .. tostring(e) .. " / " .. tostring(e and e.message)) end
local _, e = T.login{{password = PW .. "x"}}
note("wrong password", e)
_, e = T.login{{email = PW}}
note("password as email", e)
-- a server that echoes the request URL (with the access token) in its error text
T.admin("/_admin/fault", '{{"path_prefix": "/1/shares", "status": 500, "error": "cannot serve", "echo": true, "count": 2}}')
_, e = s:shares()
note("echoing server", e)
T.ok(e and e.message:find("[hidden]", 1, true), "the echoed token is blanked: " .. tostring(e and e.message))
_, e = s:create_share("t")
note("echoing server POST", e)
T.admin("/_admin/fault", '{{"path_prefix": "/1/users/me", "drop": true, "count": 1}}')
_, e = s:user()
note("dropped", e)
T.admin("/_admin/fault", '{{"path_prefix": "/1/upload", "drop": true, "count": 1}}')
local f = assert(s:create_file(docs.sharename, "x"))
_, e = s:upload(docs.sharename, f.fileid, "data")
note("upload dropped", e)
T.admin("/_admin/fault", '{{"path_prefix": "/1/users/me", "delay": 3, "count": 1}}')
local s2 = assert(T.login{{password = PW, timeout = 0.5}})
_, e = s2:user()
note("timeout", e)
T.admin("/_admin/expire", '{{"access": true, "refresh": true}}')
_, e = s:user()
note("refused refresh", e)
_, e = gett.login{{refreshtoken = s:refreshtoken()}}
note("refresh login", e)
_, e = gett.login{{refreshtoken = "r.not-a-token", api = "http://127.0.0.1:1"}}
note("connection refused", e)
-- what a script would log
io.stderr:write("script error: ", tostring(e), "\n")
"#
        )),
    );
    run.assert_passed();
    assert!(run.notes().len() >= 9, "{}", run.report);
    let tokens = server.admin("/_admin/tokens");
    let mut secrets: Vec<String> = tokens
        .as_array()
        .expect("tokens")
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    assert!(secrets.len() >= 4, "{tokens}");
    secrets.push(password.to_string());
    for s in &secrets {
        assert!(
            !run.report.contains(s.as_str()) && !run.stderr.contains(s.as_str()),
            "secret {s:?} leaked:\n{}\n--- stderr:\n{}",
            run.report,
            run.stderr
        );
    }
}

#[test]
fn quirky_server_json_without_content_type_direct_blobs_no_ranges() {
    let Some(server) = Server::start(&[
        "--seed",
        "--no-json-content-type",
        "--blob-direct",
        "--no-ranges",
    ]) else {
        return;
    };
    let run = run_chunk(
        &server,
        &chunk(
            r#"
local s = assert(T.login())
T.eq(s:user().email, "test@example.org", "JSON without a content type")
local photos = find_share(s:shares(), titled("Holiday photos"))
local beach
for _, f in ipairs(photos.files) do if f.filename == "beach.jpg" then beach = f end end
T.eq(beach.size, 10240, "beach.jpg size")
local all = assert(s:download(photos.sharename, beach.fileid))
T.eq(#all, 10240, "whole blob without redirect")
local part = assert(s:download(photos.sharename, beach.fileid, 300, 10))
T.eq(#part, 10, "a range from a server that ignores ranges")
T.eq(part:byte(1), 300 % 256, "the right bytes (first)")
T.eq(part:byte(10), 309 % 256, "the right bytes (last)")
T.eq(s:download(photos.sharename, beach.fileid, 10230), all:sub(10231), "tail")
T.eq(s:download(photos.sharename, beach.fileid, 20000, 5), "", "past the end")
local x, e = s:share("nosuch1")
T.errno(e, "ENOENT", "errors without a content type")
"#,
        ),
    );
    run.assert_passed();
}

#[test]
fn rejected_uploads_are_reported() {
    let Some(server) = Server::start(&["--seed", "--fail-uploads"]) else {
        return;
    };
    let run = run_chunk(
        &server,
        &chunk(
            r#"
local s = assert(T.login())
local docs = find_share(s:shares(), titled("Documents"))
local f = assert(s:create_file(docs.sharename, "doomed.txt"))
local ok, e = s:upload(docs.sharename, f.fileid, "data")
T.eq(ok, nil, "failed upload: nil")
T.errno(e, "EIO", "failed upload")
T.eq(e.status, 500, "failed upload status")
T.eq(e.message, "upload failed", "failed upload message")
T.eq(s:file(docs.sharename, f.fileid).readystate, "remote", "still remote")
-- the retry (an overwrite of a never-uploaded file) asks for a fresh URL and fails the same way
ok, e = s:upload(docs.sharename, f.fileid, "data")
T.errno(e, "EIO", "retried upload")
"#,
        ),
    );
    run.assert_passed();
}

#[test]
fn module_works_inside_a_mounted_filesystem() {
    if !fuse_available() {
        return;
    }
    let Some(server) = Server::start(&["--seed"]) else {
        return;
    };
    // Mount::with_args inherits the environment; the fixture takes the API URL as an argument.
    let m = Mount::with_args(&fixture("gett_module_fs.lua"), &[], &[&server.url]);
    assert_eq!(
        std::fs::read_to_string(m.path("readme.txt")).expect("read readme.txt"),
        "This share has no title.\n"
    );
    assert_eq!(
        std::fs::read_to_string(m.path("email")).expect("read email"),
        "test@example.org"
    );
    let e = std::fs::metadata(m.path("missing")).expect_err("missing file");
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    let e = std::fs::read(m.path("pending.bin")).expect_err("remote file");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    server.admin_post(
        "/_admin/fault",
        r#"{"path_prefix": "/1/users/me", "status": 500, "count": 1}"#,
    );
    let e = std::fs::read(m.path("email")).expect_err("server error");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert_eq!(
        std::fs::read_to_string(m.path("email")).expect("read email again"),
        "test@example.org"
    );
}

/// One raw answer from the test server.
struct Raw {
    status: u16,
    ctype: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Raw {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn raw(rb: reqwest::blocking::RequestBuilder) -> Raw {
    let r = rb.send().expect("request to the test server");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let ctype = r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = r.bytes().expect("answer body").to_vec();
    Raw {
        status,
        ctype,
        headers,
        body,
    }
}

/// The server itself, checked against gett-api.md with a plain HTTP client (no redirects
/// followed), so the module's tests rest on a faithful server.
#[test]
fn server_follows_the_spec_and_its_quirks() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let c = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let u = |p: &str| format!("{}{p}", server.url);

    // Login: JSON body without a Content-Type.
    let login = raw(c
        .post(u("/1/users/login"))
        .body(r#"{"apikey":"testkey","email":"test@example.org","password":"secret"}"#));
    assert_eq!(login.status, 200);
    assert_eq!(login.ctype.as_deref(), Some("application/json"));
    let v = login.json();
    let at = v["accesstoken"].as_str().expect("accesstoken").to_string();
    assert!(at.starts_with("a."));
    assert!(
        v["refreshtoken"]
            .as_str()
            .expect("refreshtoken")
            .starts_with("r.")
    );
    assert_eq!(v["expires"], 86400);
    assert_eq!(v["user"]["storage"]["used"], 0);
    let q = format!("accesstoken={at}");

    // Bad logins and tokens.
    let bad = |body: &str| raw(c.post(u("/1/users/login")).body(body.to_string()));
    let r = bad(r#"{"apikey":"testkey","email":"test@example.org","password":"x"}"#);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("wrong email or password"))
    );
    let r = bad(r#"{"apikey":"testkey","email":"no@example.org","password":"x"}"#);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (404, Some("User not found"))
    );
    let r = bad(r#"{"email":"test@example.org"}"#);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("missing parameters"))
    );
    let r = bad(r#"{"refreshtoken":"r.nope"}"#);
    assert_eq!(r.status, 401);
    for bad_q in ["", "accesstoken=a.nope"] {
        let r = raw(c.get(u(&format!("/1/users/me?{bad_q}"))));
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (401, Some("access denied"))
        );
    }
    let refresh = bad(&format!(
        r#"{{"refreshtoken":"{}"}}"#,
        v["refreshtoken"].as_str().unwrap_or("")
    ));
    assert_eq!(refresh.status, 200);
    assert!(
        refresh.json()["user"]["email"].is_string(),
        "refresh login has the user"
    );

    // Optional bodies: none, "", null, {} all create an untitled share.
    let mut names = Vec::new();
    for body in [None, Some(""), Some("null"), Some("{}")] {
        let mut rb = c.post(u(&format!("/1/shares/create?{q}&t=1234")));
        if let Some(b) = body {
            rb = rb.body(b);
        }
        let r = raw(rb);
        assert_eq!(r.status, 200, "{body:?}");
        let s = r.json();
        assert!(s.get("title").is_none(), "untitled share has no title: {s}");
        assert_eq!(s["files"], serde_json::json!([]));
        let name = s["sharename"].as_str().expect("sharename").to_string();
        assert!(
            name.len() == 7 && name.chars().all(|ch| ch.is_ascii_alphanumeric()),
            "{name}"
        );
        assert_eq!(s["getturl"], format!("http://ge.tt/{name}"));
        names.push(name);
    }
    let share = names[0].clone();
    let listed = raw(c.get(u(&format!("/1/shares?{q}")))).json();
    assert_eq!(
        listed[0]["sharename"].as_str(),
        names.last().map(String::as_str),
        "newest first"
    );
    let r = raw(c.get(u(&format!("/1/shares?{q}&skip=1&limit=2"))));
    assert_eq!(r.json().as_array().map(Vec::len), Some(2));

    // Titles: set, then delete with null.
    let r = raw(c
        .post(u(&format!("/1/shares/{share}/update?{q}")))
        .body(r#"{"title":"T"}"#));
    assert_eq!(r.json()["title"], "T");
    let r = raw(c
        .post(u(&format!("/1/shares/{share}/update?{q}")))
        .body(r#"{"title":null}"#));
    assert!(r.json().get("title").is_none());

    // Files: created remote, without size; upload by chunked PUT; overwrite by POST multipart.
    let r = raw(c
        .post(u(&format!("/1/files/{share}/create?{q}")))
        .body(r#"{"filename":"a.bin"}"#));
    let f = r.json();
    assert_eq!(f["fileid"], "0");
    assert_eq!(f["readystate"], "remote");
    assert!(f.get("size").is_none());
    assert_eq!(f["getturl"], format!("http://ge.tt/{share}/v/0"));
    let put = f["upload"]["puturl"].as_str().expect("puturl").to_string();
    let post = f["upload"]["posturl"]
        .as_str()
        .expect("posturl")
        .to_string();
    assert!(post.contains('?'), "posturl has a query string");
    let r = raw(c.get(u(&format!("/1/files/{share}/0/blob"))));
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (409, Some("file not uploaded"))
    );
    let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let body = reqwest::blocking::Body::new(std::io::Cursor::new(data.clone()));
    let r = raw(c.put(&put).body(body));
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"computer says yes"[..])
    );
    let f = raw(c.get(u(&format!("/1/files/{share}/0?{q}")))).json();
    assert_eq!(
        (f["size"].as_u64(), f["readystate"].as_str()),
        (Some(1000), Some("uploaded"))
    );
    assert!(f.get("upload").is_none());

    // Blob: a redirect, then bytes with ranges.
    let r = raw(c.get(u(&format!("/1/files/{share}/0/blob?download"))));
    assert_eq!(r.status, 302);
    let loc = r.header("location").expect("Location").to_string();
    let r = raw(c.get(&loc));
    assert_eq!((r.status, r.body.clone()), (200, data.clone()));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(
        r.header("content-disposition")
            .is_some_and(|d| d.starts_with("attachment"))
    );
    let r = raw(c.get(&loc).header("Range", "bytes=10-19"));
    assert_eq!((r.status, r.body.as_slice()), (206, &data[10..20]));
    assert_eq!(r.header("content-range"), Some("bytes 10-19/1000"));
    let r = raw(c.get(&loc).header("Range", "bytes=-5"));
    assert_eq!((r.status, r.body.as_slice()), (206, &data[995..]));
    let r = raw(c.get(&loc).header("Range", "bytes=990-"));
    assert_eq!(r.body.as_slice(), &data[990..]);
    let r = raw(c.get(&loc).header("Range", "bytes=1000-"));
    assert_eq!(
        (r.status, r.header("content-range")),
        (416, Some("bytes */1000"))
    );

    let boundary = "xYzZy";
    let mut mp = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"Filedata\"; filename=\"a.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    mp.extend_from_slice(b"posted");
    mp.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let r = raw(c
        .post(&post)
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(mp));
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"computer says yes"[..])
    );
    assert_eq!(raw(c.get(&loc)).body, b"posted");
    let fresh = raw(c.get(u(&format!("/1/files/{share}/0/upload?{q}")))).json();
    let fresh_put = fresh["puturl"].as_str().expect("fresh puturl");
    assert_ne!(fresh_put, put, "fresh URL");
    assert_eq!(raw(c.put(fresh_put).body("new")).status, 200);
    assert_eq!(
        raw(c.put(&put).body("old url")).status,
        200,
        "earlier URLs keep working"
    );
    assert_eq!(raw(c.get(&loc)).body, b"old url");
    let me = raw(c.get(u(&format!("/1/users/me?{q}")))).json();
    assert_eq!(
        (me["storage"]["used"].as_u64(), me["files"].as_u64()),
        (Some(7), Some(1))
    );

    // Not found.
    let r = raw(c.get(u("/1/shares/nosuch1")));
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (404, Some("share not found"))
    );
    let r = raw(c.get(u(&format!("/1/files/{share}/9"))));
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (404, Some("file not found"))
    );
    let r = raw(c.get(u(&format!("/1/files/{share}/9/blob"))));
    assert_eq!(r.status, 404);

    // Destroy: files then shares; twice is fine; the share stays readable as removed.
    let r = raw(c.post(u(&format!("/1/files/{share}/0/destroy?{q}"))));
    assert_eq!((r.status, r.json()["success"].as_bool()), (200, Some(true)));
    assert_eq!(raw(c.get(u(&format!("/1/files/{share}/0")))).status, 404);
    assert_eq!(
        raw(c.put(&put).body("x")).status,
        404,
        "upload URLs die with the file"
    );
    for _ in 0..2 {
        let r = raw(c
            .post(u(&format!("/1/shares/{share}/destroy?{q}")))
            .body("null"));
        assert_eq!((r.status, r.json()["success"].as_bool()), (200, Some(true)));
    }
    let r = raw(c.get(u(&format!("/1/shares/{share}")))).json();
    assert_eq!(
        (r["readystate"].as_str(), r["files"].clone()),
        (Some("removed"), serde_json::json!([]))
    );
    let listed = raw(c.get(u(&format!("/1/shares?{q}")))).json();
    assert!(
        listed
            .as_array()
            .is_some_and(|a| a.iter().all(|s| s["sharename"] != share.as_str()))
    );
    assert_eq!(
        raw(c.post(u(&format!("/1/shares/nosuch1/destroy?{q}")))).status,
        404
    );

    // Faults: status, delay, count, reset.
    server.admin_post(
        "/_admin/fault",
        r#"{"path_prefix": "/1/users/me", "status": 503, "count": 1}"#,
    );
    assert_eq!(raw(c.get(u(&format!("/1/users/me?{q}")))).status, 503);
    assert_eq!(
        raw(c.get(u(&format!("/1/users/me?{q}")))).status,
        200,
        "count 1"
    );
    server.admin_post(
        "/_admin/fault",
        r#"{"path_prefix": "/1/users/me", "status": 500}"#,
    );
    assert_eq!(raw(c.get(u(&format!("/1/users/me?{q}")))).status, 500);
    server.admin_post("/_admin/reset", "{}");
    assert_eq!(
        raw(c.get(u(&format!("/1/users/me?{q}")))).status,
        200,
        "reset"
    );
}
