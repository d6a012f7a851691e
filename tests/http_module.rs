//! The built-in `http` and `json` modules against the local test server
//! (tests/objectstore_server.py): every call and shorthand, request and answer headers, status
//! codes, bodies (binary, large, empty), redirects, time-outs, refused and dropped connections,
//! misuse, JSON over HTTP; and, on a real mount, that network waits do not count towards
//! `--op-timeout` and that the module's errno reaches the caller.
//!
//! Each test starts its own server and runs a Lua chunk through the real flufs binary with
//! tests/fixtures/http_module_runner.lua, which runs the chunk while the script loads and exits
//! before mounting (no /dev/fuse needed). python3 is required; with CI=true its absence fails.

mod common;
mod objectstore;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Mount, TempDir, fixture, flufs_bin, fuse_available};
use objectstore::{PROXY_VARS, Server, closed_port};

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
}

/// Run a Lua chunk with the runner fixture against `server`.
fn run_chunk(server: &Server, chunk: &str) -> Run {
    let dir = TempDir::new("http-run");
    let chunk_path = dir.path.join("chunk.lua");
    let report_path = dir.path.join("report.txt");
    let stderr_path = dir.path.join("stderr.log");
    let mnt = dir.path.join("mnt");
    std::fs::create_dir_all(&mnt).expect("mountpoint");
    std::fs::write(&chunk_path, chunk).expect("write chunk");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr log");
    let mut cmd = Command::new(flufs_bin());
    cmd.arg("-f")
        .arg(fixture("http_module_runner.lua"))
        .arg(&mnt)
        .arg("--")
        .arg(&chunk_path)
        .arg(&report_path)
        .env("HTTP_TEST_URL", &server.url);
    for v in PROXY_VARS {
        cmd.env_remove(v);
    }
    let mut child = cmd
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
        report: std::fs::read(&report_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default(),
        stderr,
    }
}

#[test]
fn every_call_and_shorthand() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    run_chunk(
        &server,
        r#"
-- http.request with every field; /echo describes what arrived
local status, body, headers = http.request{
  method = "PATCH", url = URL .. "/echo?a=1&b=x%20y", body = "the body",
  headers = {["X-Custom"] = "v1", ["x-number"] = 42, ["X-Multi"] = {"one", "two"},
             ["Content-Type"] = "text/plain"},
  timeout = 10,
}
T.eq(status, 200, "request: status")
T.eq(math.type(status), "integer", "status is an integer")
T.eq(headers["content-type"], "application/json", "answer headers are lower-case")
T.eq(headers["Content-Type"], nil, "no mixed-case names")
T.eq(headers["content-length"], tostring(#body), "content-length")
local echo = assert(json.decode(body))
T.eq(echo.method, "PATCH", "method sent")
T.eq(echo.query, "a=1&b=x%20y", "query string sent as is")
T.eq(echo.body, "the body", "body sent")
T.eq(echo.length, 8, "body length")
T.eq(echo.headers["x-custom"], "v1", "custom header")
T.eq(echo.headers["x-number"], "42", "number header value")
T.eq(echo.headers["x-multi"], "one, two", "an array of values: one line each")
T.eq(echo.headers["content-type"], "text/plain", "content-type sent")
T.ok(echo.headers["user-agent"]:match("^flufs/%d"), "default User-Agent flufs/VERSION")

-- lower-case methods are upper-cased; the default method is GET; a plain URL is a GET
T.eq(json.decode(select(2, http.request{method = "post", url = URL .. "/echo"})).method,
  "POST", "method upper-cased")
T.eq(json.decode(select(2, http.request{url = URL .. "/echo"})).method, "GET", "default GET")
T.eq(json.decode(select(2, http.request(URL .. "/echo"))).method, "GET", "request(url)")
local _, b = http.request{url = URL .. "/echo", headers = {["User-Agent"] = "mine/1"}}
T.eq(json.decode(b).headers["user-agent"], "mine/1", "User-Agent can be replaced")
T.eq(json.decode(select(2, http.request{method = "PROPFIND", url = URL .. "/echo"})).method,
  "PROPFIND", "extension methods")

-- shorthands
status, body = http.get(URL .. "/echo", {["X-A"] = "a"})
echo = json.decode(body)
T.eq(status .. " " .. echo.method .. " " .. echo.headers["x-a"], "200 GET a", "get(url, headers)")
T.eq(echo.length, 0, "get sends no body")
echo = json.decode(select(2, http.post(URL .. "/echo", "p", {["X-A"] = "b"})))
T.eq(echo.method .. " " .. echo.body .. " " .. echo.headers["x-a"], "POST p b", "post(url, body, headers)")
echo = json.decode(select(2, http.put(URL .. "/echo", "")))
T.eq(echo.method .. " " .. echo.length, "PUT 0", "put(url, empty body)")
T.eq(echo.headers["content-length"], "0", "an empty body is sent with length 0")
echo = json.decode(select(2, http.delete(URL .. "/echo")))
T.eq(echo.method, "DELETE", "delete(url)")

-- HEAD: headers, no body
status, body, headers = http.request{method = "HEAD", url = URL .. "/bytes?n=100"}
T.eq(status, 200, "HEAD status")
T.eq(body, "", "HEAD has no body")
T.eq(headers["content-length"], "100", "HEAD content-length")

-- the object store: PUT / GET / DELETE, binary data, statuses
local bytes = {}
for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
local bin = table.concat(bytes):rep(1000)
local key = URL .. "/objects/" .. http.escape("dir/bin ä.dat")
status, body = http.put(key, bin)
T.eq(status, 201, "PUT new: 201")
T.eq(json.decode(body).key, "dir/bin ä.dat", "escaped key arrives whole")
T.eq(json.decode(body).size, #bin, "PUT size")
T.eq((http.put(key, bin)), 200, "PUT again: 200")
status, body, headers = http.get(key)
T.eq(status, 200, "GET object")
T.ok(body == bin, "binary body round trip (" .. #body .. " bytes)")
T.eq(headers["content-type"], "application/octet-stream", "object content-type")
T.ok(tonumber(headers["x-mtime"]), "x-mtime header")
local list = json.decode(select(2, http.get(URL .. "/objects")))
T.eq(#list, 1, "listing")
T.eq(list[1].key, "dir/bin ä.dat", "listing key")
T.eq(math.type(list[1].size), "integer", "listing size integer")
T.eq(math.type(list[1].mtime), "float", "listing mtime float")
T.eq((http.delete(key)), 204, "DELETE: 204")
status, body = http.delete(key)
T.eq(status, 404, "DELETE missing: 404 is an answer, not an error")
T.eq(json.decode(body).error, "no such object", "404 body")
T.eq((http.get(key)), 404, "GET missing: 404")

-- status codes are returned as they are
for _, code in ipairs{200, 201, 202, 204, 400, 401, 403, 404, 409, 418, 500, 503} do
  local s, bd, h = http.get(URL .. "/status/" .. code)
  T.eq(s, code, "status " .. code)
  T.eq(bd, (code == 204) and "" or ("status " .. code .. "\n"), "body of " .. code)
  T.eq(h["x-status"], tostring(code), "header of " .. code)
end

-- answer headers: several lines with one name are joined
_, _, headers = http.get(URL .. "/headers?Set-Cookie=a%3D1&Set-Cookie=b%3D2&X-Odd=%C3%A9")
T.eq(headers["set-cookie"], "a=1, b=2", "repeated answer headers joined with ', '")
-- (the server sends str headers as Latin-1: é is the one byte 0xE9)
T.eq(headers["x-odd"], "\xe9", "non-ASCII header bytes as received")

-- redirects are followed
status, body = http.get(URL .. "/redirect?to=/echo%3Fr%3D1")
T.eq(status, 200, "302 followed")
T.eq(json.decode(body).query, "r=1", "redirect target reached")
echo = json.decode(select(2, http.post(URL .. "/redirect?code=307&to=/echo", "kept")))
T.eq(echo.method .. " " .. echo.body, "POST kept", "307 keeps the method and body")
echo = json.decode(select(2, http.post(URL .. "/redirect?code=303&to=/echo", "dropped")))
T.eq(echo.method, "GET", "303 turns into a GET")

-- a large answer
status, body = http.get(URL .. "/bytes?n=" .. 5 * 1024 * 1024)
T.eq(#body, 5 * 1024 * 1024, "5 MiB answer")
T.eq(body:byte(1000 + 1), 1000 % 256, "answer bytes")

-- json + http together: a JSON body, nulls, an empty array
echo = json.decode(select(2, http.post(URL .. "/echo",
  json.encode{name = "x", list = json.array(), none = json.null},
  {["Content-Type"] = "application/json"})))
T.eq(echo.body, '{"list":[],"name":"x","none":null}', "json.encode as a body")

-- escape / unescape
T.eq(http.escape("a b/c?d=é"), "a%20b%2Fc%3Fd%3D%C3%A9", "escape")
T.eq(http.unescape("a%20b%2Fc"), "a b/c", "unescape")
"#,
    )
    .assert_passed();
}

#[test]
fn failures_time_outs_and_misuse() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let closed = format!("http://127.0.0.1:{}/x?token=secret123", closed_port());
    let chunk = r#"
-- a time-out: nil, err with ETIMEDOUT, well before the server answers
local t0 = T.now()
local status, err = http.request{url = URL .. "/echo?delay=3", timeout = 0.5}
local took = T.now() - t0
T.eq(status, nil, "time-out: nil")
T.errno(err, "ETIMEDOUT", "time-out")
T.eq(err.status, nil, "time-out before the answer: no status")
T.eq(err.message, "operation timed out", "time-out message")
T.eq(tostring(err), "http: operation timed out", "tostring(err)")
T.ok(took >= 0.4 and took < 2.5, "time-out after about 0.5 s (" .. took .. ")")

-- the X-Delay header works too, and http.timeout is the default time limit
http.timeout = 0.5
t0 = T.now()
status, err = http.get(URL .. "/echo", {["X-Delay"] = "3"})
T.errno(err, "ETIMEDOUT", "http.timeout applies to shorthands")
T.ok(T.now() - t0 < 2.5, "http.timeout = 0.5")
http.timeout = 60
T.eq((http.get(URL .. "/echo?delay=0.6")), 200, "a slow answer within the time limit")

-- a body that stops coming: the status arrived, the body did not
status, err = http.request{url = URL .. "/trickle?n=10&interval=1", timeout = 1.5}
T.errno(err, "ETIMEDOUT", "time-out while reading the body")
T.eq(err.status, 200, "err.status when the head arrived")
T.eq(tostring(err), "http: 200: " .. err.message, "tostring with status")

-- nothing listens: ECONNREFUSED, and the URL (with its token) is not in the message
status, err = http.get(CLOSED)
T.eq(status, nil, "refused: nil")
T.errno(err, "ECONNREFUSED", "connection refused")
T.eq(err.status, nil, "refused: no status")
T.ok(not err.message:find("secret123", 1, true), "no URL in the message: " .. err.message)
T.ok(err.errno == flu.errno.ECONNREFUSED, "err.errno is the flu.errno value")

-- the server closes the connection without answering: EIO
status, err = http.get(URL .. "/drop")
T.errno(err, "EIO", "dropped connection")

-- a name that does not resolve: EHOSTUNREACH (a resolver that hangs: ETIMEDOUT)
status, err = http.request{url = "http://flufs-test.invalid/", timeout = 10}
T.ok(err and (err.errno == flu.errno.EHOSTUNREACH or err.errno == flu.errno.ETIMEDOUT),
  "unresolvable name: " .. tostring(err and err.errno and err.errno.name) .. " " .. tostring(err))

-- the server keeps working after all that
T.eq((http.get(URL .. "/echo")), 200, "still serving")

-- misuse raises
local function raises(f, want, what)
  local ok, e = pcall(f)
  T.ok(not ok and tostring(e):find(want, 1, true), what .. ": " .. tostring(e))
end
raises(function() http.request() end, "bad argument #1 to 'request'", "no argument")
raises(function() http.request{url = URL, bogus = 1} end, "unknown field \"bogus\"", "unknown field")
raises(function() http.get("/relative") end, "bad URL", "relative URL")
raises(function() http.get("file:///etc/passwd") end, "http:// or https://", "file URL")
raises(function() http.get(URL, {["X-A"] = "a\nb"}) end, "line break", "header injection")
raises(function() http.post(URL) end, "bad argument #2 to 'post'", "post without a body")
raises(function() http.request{url = URL, timeout = -1} end, "'timeout' must be a positive", "bad timeout")
"#
    .replace("CLOSED", &format!("{closed:?}"));
    run_chunk(&server, &chunk).assert_passed();
}

#[test]
fn network_waits_do_not_count_towards_op_timeout() {
    if !fuse_available() {
        return;
    }
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let closed = format!("http://127.0.0.1:{}/", closed_port());
    let mut envs: Vec<(&str, &str)> = Vec::new();
    // Make sure no proxy gets the requests (Mount passes the environment through).
    for v in PROXY_VARS {
        if std::env::var_os(v).is_some() {
            envs.push((v, ""));
        }
    }
    let m = Mount::with_env(
        &fixture("http_module_fs.lua"),
        &["--op-timeout", "1"],
        &[&server.url, &closed],
        &envs,
    );
    let t0 = Instant::now();
    let text = std::fs::read_to_string(m.path("slow"))
        .unwrap_or_else(|e| panic!("read /slow: {e}\n{}", m.log()));
    assert_eq!(text, "slow 200\n");
    assert!(t0.elapsed() >= Duration::from_secs(2), "{:?}", t0.elapsed());
    let e = std::fs::read(m.path("refused")).expect_err("read /refused must fail");
    assert_eq!(
        common::errno(&e),
        libc::ECONNREFUSED,
        "{e}\n--- log:\n{}",
        m.log()
    );
}
