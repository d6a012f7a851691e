//! The local object-store test server (tests/objectstore_server.py) for the http module and
//! httpfs tests: started per test, killed and reaped on drop. Its stdin is a pipe, so if the
//! test process dies without dropping the guard the server sees EOF and exits.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};

pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

pub fn server_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/objectstore_server.py")
}

/// True when python3 runs. In CI its absence is a failure, never a skip.
pub fn python3_available() -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if in_ci() {
            panic!("python3 is missing but CI=true: the http tests must run in CI");
        }
        eprintln!("skipping: python3 not available (set CI=true to make this an error)");
    }
    ok
}

/// Environment variables that would send test requests to a proxy.
pub const PROXY_VARS: [&str; 6] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

pub struct Server {
    child: Child,
    _stdin: ChildStdin,
    pub port: u16,
    pub url: String,
}

impl Server {
    /// Start the server with these extra arguments, or None (skip) when python3 is missing
    /// outside CI.
    pub fn start(args: &[&str]) -> Option<Server> {
        if !python3_available() {
            return None;
        }
        let mut child = Command::new("python3")
            .arg(server_script())
            .args(["--port", "0", "--exit-on-stdin-eof"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 tests/objectstore_server.py");
        let stdin = child.stdin.take().expect("server stdin");
        let stdout = child.stdout.take().expect("server stdout");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let port = match (read, line.trim().strip_prefix("PORT ")) {
            (Ok(_), Some(p)) => p.parse::<u16>().ok(),
            _ => None,
        };
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the test server did not start (first line {line:?})");
        };
        Some(Server {
            child,
            _stdin: stdin,
            port,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    fn client() -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .no_proxy()
            .build()
            .expect("test HTTP client")
    }

    /// One request straight to the server (not through flufs): (status, body).
    pub fn call(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let r = Self::client()
            .request(m, format!("{}{path}", self.url))
            .body(body.to_vec())
            .send()
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status().as_u16();
        let body = r.bytes().map(|b| b.to_vec()).unwrap_or_default();
        (status, body)
    }

    /// An object's bytes, or None when it does not exist.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        match self.call("GET", &format!("/objects/{}", escape(key)), b"") {
            (200, b) => Some(b),
            (404, _) => None,
            (s, b) => panic!("GET {key}: {s} {}", String::from_utf8_lossy(&b)),
        }
    }

    pub fn put(&self, key: &str, data: &[u8]) {
        let (s, b) = self.call("PUT", &format!("/objects/{}", escape(key)), data);
        assert!(
            s == 200 || s == 201,
            "PUT {key}: {s} {}",
            String::from_utf8_lossy(&b)
        );
    }

    /// The keys in the store, sorted.
    pub fn keys(&self) -> Vec<String> {
        let (s, b) = self.call("GET", "/objects", b"");
        assert_eq!(s, 200);
        let v: serde_json::Value = serde_json::from_slice(&b).expect("listing JSON");
        v.as_array()
            .expect("listing array")
            .iter()
            .map(|o| o["key"].as_str().expect("key").to_string())
            .collect()
    }

    /// POST JSON to an admin endpoint (or GET it when `json` is None); the decoded answer.
    pub fn admin(&self, path: &str, json: Option<&str>) -> serde_json::Value {
        let (method, body) = match json {
            Some(j) => ("POST", j.as_bytes()),
            None => ("GET", &b""[..]),
        };
        let (s, b) = self.call(method, path, body);
        assert_eq!(s, 200, "{path}: {}", String::from_utf8_lossy(&b));
        serde_json::from_slice(&b).expect("admin JSON")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encode a key for a URL path segment (as `http.escape` does).
pub fn escape(s: &str) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A port nothing listens on (bound, then closed).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
