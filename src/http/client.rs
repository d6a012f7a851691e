//! The HTTP side of the `http` Lua module, free of Lua: a `Request` of plain values in, a
//! `Response` or an `HttpError` out. Everything here is `Send` so `perform` can run on a
//! worker thread while the calling Lua coroutine is suspended (issue 6). It does not touch the
//! `--op-timeout` watchdog: the caller runs it on a worker thread (`super`).
//!
//! Requests go through the one process-wide reqwest client that `gett` uses (connection reuse,
//! rustls, a 10 s connect limit, up to 10 redirects followed, proxies from the environment).
//! Messages never contain the URL (it may carry keys in its query string).

use std::io::Read;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, USER_AGENT};
use reqwest::{Method, Url};

/// Time limit of one request (connect, send, receive the whole body) unless the script sets
/// another.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer body accepted (it becomes one Lua string).
pub const MAX_BODY: u64 = 256 << 20;
/// Sent unless the request has its own User-Agent.
const AGENT: &str = concat!("flufs/", env!("CARGO_PKG_VERSION"));

/// One request: plain values, no Lua.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// One answer, whatever its status.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header lines in the order received; names are lower-case.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// Why no (complete) answer came: decides the errno a filesystem reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The time limit passed: ETIMEDOUT.
    TimedOut,
    /// Nothing listens on that port: ECONNREFUSED.
    Refused,
    /// No route to the host, or its name does not resolve: EHOSTUNREACH.
    HostUnreachable,
    /// No route to the network: ENETUNREACH.
    NetUnreachable,
    /// An answer larger than `MAX_BODY`: EFBIG.
    TooLarge,
    /// Anything else (reset or dropped connection, TLS, a malformed answer): EIO.
    Other,
}

impl Failure {
    pub fn errno(self) -> i32 {
        match self {
            Failure::TimedOut => libc::ETIMEDOUT,
            Failure::Refused => libc::ECONNREFUSED,
            Failure::HostUnreachable => libc::EHOSTUNREACH,
            Failure::NetUnreachable => libc::ENETUNREACH,
            Failure::TooLarge => libc::EFBIG,
            Failure::Other => libc::EIO,
        }
    }
}

/// A failed request. `status` is set when the answer's head arrived but its body did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: Option<u16>,
    pub message: String,
    pub kind: Failure,
}

impl HttpError {
    fn new(status: Option<u16>, message: impl Into<String>, kind: Failure) -> HttpError {
        HttpError {
            status,
            message: message.into(),
            kind,
        }
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "http: {s}: {}", self.message),
            None => write!(f, "http: {}", self.message),
        }
    }
}

/// The failure an I/O error stands for, if it is one of the specific ones.
fn io_failure(e: &std::io::Error) -> Option<Failure> {
    use std::io::ErrorKind as K;
    let by_errno = match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Some(Failure::Refused),
        Some(libc::EHOSTUNREACH) => Some(Failure::HostUnreachable),
        Some(libc::ENETUNREACH) => Some(Failure::NetUnreachable),
        Some(libc::ETIMEDOUT) => Some(Failure::TimedOut),
        _ => None,
    };
    by_errno.or(match e.kind() {
        K::ConnectionRefused => Some(Failure::Refused),
        K::HostUnreachable => Some(Failure::HostUnreachable),
        K::NetworkUnreachable => Some(Failure::NetUnreachable),
        K::TimedOut => Some(Failure::TimedOut),
        _ => e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<reqwest::Error>())
            .map(classify),
    })
}

/// The failure a reqwest error stands for: the first specific I/O error in its source chain,
/// else its own time-out flag; a name that does not resolve counts as an unreachable host.
pub fn classify(e: &reqwest::Error) -> Failure {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut dns = false;
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && let Some(f) = io_failure(io)
            && f != Failure::Other
        {
            return f;
        }
        dns |= s.to_string().starts_with("dns error");
        src = s.source();
    }
    if e.is_timeout() {
        Failure::TimedOut
    } else if dns {
        Failure::HostUnreachable
    } else {
        Failure::Other
    }
}

/// A transport error (no answer): its kind, and its message without the URL.
fn transport_error(e: reqwest::Error) -> HttpError {
    let kind = classify(&e);
    // gett's message builder: the cause chain, deduplicated, stripped of the URL.
    let message = crate::gett::client::transport_error(e).message;
    let message = if kind == Failure::TimedOut {
        "operation timed out".to_string()
    } else {
        message
    };
    HttpError::new(None, message, kind)
}

fn body_error(status: u16, e: &std::io::Error) -> HttpError {
    match io_failure(e) {
        Some(Failure::TimedOut) => HttpError::new(
            Some(status),
            "operation timed out (reading the answer)",
            Failure::TimedOut,
        ),
        Some(kind) => HttpError::new(Some(status), format!("error reading the answer: {e}"), kind),
        None => HttpError::new(
            Some(status),
            format!("error reading the answer: {e}"),
            Failure::Other,
        ),
    }
}

/// Send one request and read the whole answer (any status). Blocks the calling thread for at
/// most `req.timeout`; runs on any thread.
pub fn perform(req: Request) -> Result<Response, HttpError> {
    let client = crate::gett::client::client()
        .map_err(|e| HttpError::new(None, e.message, Failure::Other))?;
    let mut rb = client.request(req.method, req.url).timeout(req.timeout);
    if !req.headers.contains_key(USER_AGENT) {
        rb = rb.header(USER_AGENT, HeaderValue::from_static(AGENT));
    }
    rb = rb.headers(req.headers);
    if let Some(body) = req.body {
        rb = rb.body(body);
    }
    let resp = rb.send().map_err(transport_error)?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    let mut body = Vec::new();
    resp.take(MAX_BODY + 1)
        .read_to_end(&mut body)
        .map_err(|e| body_error(status, &e))?;
    if body.len() as u64 > MAX_BODY {
        return Err(HttpError::new(
            Some(status),
            format!("the answer is larger than {} MiB", MAX_BODY >> 20),
            Failure::TooLarge,
        ));
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_can_move_to_worker_threads() {
        fn send<T: Send + 'static>() {}
        send::<Request>();
        send::<Response>();
        send::<HttpError>();
    }

    #[test]
    fn io_errors_map_to_errnos() {
        let f = |code| io_failure(&std::io::Error::from_raw_os_error(code));
        assert_eq!(f(libc::ECONNREFUSED), Some(Failure::Refused));
        assert_eq!(f(libc::EHOSTUNREACH), Some(Failure::HostUnreachable));
        assert_eq!(f(libc::ENETUNREACH), Some(Failure::NetUnreachable));
        assert_eq!(f(libc::ETIMEDOUT), Some(Failure::TimedOut));
        assert_eq!(f(libc::ECONNRESET), None);
        assert_eq!(
            io_failure(&std::io::Error::from(std::io::ErrorKind::TimedOut)),
            Some(Failure::TimedOut)
        );
        for k in [
            Failure::TimedOut,
            Failure::Refused,
            Failure::HostUnreachable,
            Failure::NetUnreachable,
            Failure::TooLarge,
            Failure::Other,
        ] {
            assert!(
                crate::errno::name_of(k.errno()).is_some(),
                "{k:?} has an errno name"
            );
        }
    }

    #[test]
    fn display_has_status_and_message() {
        let e = HttpError::new(None, "connection refused", Failure::Refused);
        assert_eq!(e.to_string(), "http: connection refused");
        let e = HttpError::new(Some(200), "operation timed out", Failure::TimedOut);
        assert_eq!(e.to_string(), "http: 200: operation timed out");
    }

    #[test]
    fn refused_connections_are_econnrefused() {
        // A port nobody listens on: bind one, then close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let req = Request {
            method: Method::GET,
            url: Url::parse(&format!("http://127.0.0.1:{port}/x?key=secret")).unwrap(),
            headers: HeaderMap::new(),
            body: None,
            timeout: Duration::from_secs(5),
        };
        let e = perform(req).unwrap_err();
        assert_eq!(e.kind, Failure::Refused, "{e}");
        assert_eq!(e.status, None);
        assert!(!e.message.contains("secret"), "{e}");
    }
}
