//! The Ge.tt REST API v1 client, free of Lua: plain Rust arguments in, `serde_json::Value`,
//! bytes or `GettError` out. Everything here is `Send + Sync` so requests can later run on
//! worker threads (issue 6); `super` only converts between these values and Lua.
//!
//! - One process-wide reqwest blocking `Client` (connection reuse, rustls, redirects followed).
//! - The access token goes in the query string; it is refreshed with the refresh token shortly
//!   before it expires and once after a 401/403. A refused refresh makes the session unusable
//!   (every later call fails at once with `Refused`); a refresh that fails for another reason
//!   (time-out, 5xx) is reported by that call and tried again by the next one — never in a loop.
//! - Messages never contain URLs (reqwest errors are stripped of them: upload URLs carry keys,
//!   API URLs the access token) and known secrets are blanked out of every message.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use std::sync::Arc;

use reqwest::blocking::{Body, Client};
use reqwest::{Method, Url};
use serde_json::{Value, json};

/// Largest JSON answer accepted (a share listing is a few KiB per share).
const MAX_JSON: u64 = 64 << 20;
/// Time-out for establishing a connection (the per-request time-out still bounds it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time-out of one request (connect, send, receive the whole body).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Uploads get this much extra time per MiB they send.
const SECS_PER_MIB: f64 = 4.0;
/// Refresh this long before the access token expires (at most; a quarter of short lifetimes).
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Upload URLs remembered from create_file (for the first upload), at most.
const MAX_CACHED_UPLOADS: usize = 4096;

/// What kind of failure: decides the errno a filesystem reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Unknown share or file (404): ENOENT.
    NotFound,
    /// Bad credentials, expired session, someone else's share (401/403): EACCES.
    Refused,
    /// Storage limit exceeded (413/507): ENOSPC.
    NoSpace,
    /// The request timed out: ETIMEDOUT.
    TimedOut,
    /// A value the API cannot carry (a name that is not UTF-8): EINVAL.
    Invalid,
    /// Anything else (5xx, 409, connection refused, a malformed answer): EIO.
    Other,
}

impl ErrorKind {
    pub fn errno(self) -> i32 {
        match self {
            ErrorKind::NotFound => libc::ENOENT,
            ErrorKind::Refused => libc::EACCES,
            ErrorKind::NoSpace => libc::ENOSPC,
            ErrorKind::TimedOut => libc::ETIMEDOUT,
            ErrorKind::Invalid => libc::EINVAL,
            ErrorKind::Other => libc::EIO,
        }
    }
}

/// A failed call: the HTTP status (None for transport errors), the server's `error` text or
/// the transport error, and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GettError {
    pub status: Option<u16>,
    pub message: String,
    pub kind: ErrorKind,
}

impl GettError {
    pub fn new(status: Option<u16>, message: impl Into<String>, kind: ErrorKind) -> GettError {
        GettError {
            status,
            message: message.into(),
            kind,
        }
    }

    fn other(message: impl Into<String>) -> GettError {
        GettError::new(None, message, ErrorKind::Other)
    }

    /// Same error, message prefixed with what was being done.
    fn context(mut self, what: &str) -> GettError {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl std::fmt::Display for GettError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "gett: {s}: {}", self.message),
            None => write!(f, "gett: {}", self.message),
        }
    }
}

pub type Result<T> = std::result::Result<T, GettError>;

/// The kind of an HTTP error answer. The real service's status codes are mostly unknown
/// (gett-api.md §10), so the well-known messages count as much as the status.
pub fn kind_for(status: u16, message: &str) -> ErrorKind {
    let m = message.to_ascii_lowercase();
    if matches!(status, 413 | 507) || m.contains("storage limit") || m.contains("quota") {
        ErrorKind::NoSpace
    } else if matches!(status, 404 | 410)
        || m.contains("share not found")
        || m.contains("file not found")
    {
        ErrorKind::NotFound
    } else if matches!(status, 401 | 403) {
        ErrorKind::Refused
    } else if matches!(status, 408 | 504) {
        ErrorKind::TimedOut
    } else {
        ErrorKind::Other
    }
}

/// The error text of an answer body: `{"error": "..."}`, else its first line (bounded).
pub fn error_text(status: u16, body: &[u8]) -> String {
    if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(body)
        && let Some(Value::String(s)) = o.get("error")
    {
        return s.clone();
    }
    let text = String::from_utf8_lossy(body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    match line {
        // An HTML error page says nothing more than its status.
        Some(l) if !l.starts_with('<') => l.chars().take(200).collect(),
        _ => reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error")
            .to_string(),
    }
}

/// The error for a non-2xx answer.
pub fn http_error(status: u16, body: &[u8]) -> GettError {
    let message = error_text(status, body);
    let kind = kind_for(status, &message);
    GettError::new(Some(status), message, kind)
}

fn is_timeout_io(e: &std::io::Error) -> bool {
    if e.kind() == std::io::ErrorKind::TimedOut {
        return true;
    }
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<reqwest::Error>())
        .is_some_and(reqwest::Error::is_timeout)
}

/// A transport error (no answer): its message chain without the URL.
pub fn transport_error(e: reqwest::Error) -> GettError {
    let mut timed_out = e.is_timeout();
    let e = e.without_url();
    let mut parts = vec![e.to_string()];
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            timed_out |= is_timeout_io(io);
        }
        let text = s.to_string();
        // hyper-util's "client error (Connect)" wrappers say nothing the next cause does not.
        if !text.starts_with("client error (") && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = s.source();
    }
    let kind = if timed_out {
        ErrorKind::TimedOut
    } else {
        ErrorKind::Other
    };
    let message = if timed_out {
        "operation timed out".to_string()
    } else {
        parts.join(": ")
    };
    GettError::new(None, message, kind)
}

fn body_error(e: std::io::Error) -> GettError {
    if is_timeout_io(&e) {
        GettError::new(None, "operation timed out", ErrorKind::TimedOut)
    } else {
        GettError::other(format!("error reading the answer: {e}"))
    }
}

/// Secrets shorter than this are not blanked out: they would blank ordinary words of a message
/// (a wrong password "wrong" in "wrong email or password"). Tokens are much longer.
const MIN_SECRET: usize = 8;

/// Blank out every secret that occurs in `msg`.
pub fn redact(msg: &str, secrets: &[&str]) -> String {
    let mut out = msg.to_string();
    for s in secrets {
        if s.len() >= MIN_SECRET {
            out = out.replace(s, "[hidden]");
        }
    }
    out
}

/// The process-wide HTTP client (connection reuse across sessions).
pub fn client() -> Result<Client> {
    static CLIENT: OnceLock<std::result::Result<Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            Client::builder()
                .user_agent(concat!("flufs-gett/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(CONNECT_TIMEOUT)
                .build()
                .map_err(|e| transport_error(e).message)
        })
        .clone()
        .map_err(|m| GettError::other(format!("cannot create the HTTP client: {m}")))
}

/// `base` + `/1/` + the segments (each percent-encoded).
pub fn api_url(base: &Url, segments: &[&str]) -> Result<Url> {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    {
        let mut segs = url
            .path_segments_mut()
            .map_err(|()| GettError::other("the API URL cannot have a path"))?;
        segs.pop_if_empty();
        segs.push("1");
        segs.extend(segments);
    }
    Ok(url)
}

/// Parse and check an API base URL (http or https). A trailing `/1` (the version, as some
/// clients wrote `https://open.ge.tt/1`) is dropped: requests add it.
pub fn parse_base(s: &str) -> std::result::Result<Url, String> {
    let mut url = Url::parse(s).map_err(|e| format!("bad API URL {s:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "bad API URL {s:?}: http:// or https:// with a host expected"
        ));
    }
    let path = url.path().trim_end_matches('/');
    if let Some(rest) = path.strip_suffix("/1") {
        let rest = format!("{rest}/");
        url.set_path(&rest);
    }
    Ok(url)
}

/// One HTTP answer, whatever its status.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One HTTP request: plain values, no Lua (can run on any thread).
pub fn request(
    client: &Client,
    method: Method,
    url: Url,
    body: Option<(Body, &str)>,
    timeout: Duration,
) -> Result<Answer> {
    let mut rb = client.request(method, url).timeout(timeout);
    if let Some((data, ctype)) = body {
        if !ctype.is_empty() {
            rb = rb.header(reqwest::header::CONTENT_TYPE, ctype);
        }
        rb = rb.body(data);
    }
    let resp = rb.send().map_err(transport_error)?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    resp.take(MAX_JSON)
        .read_to_end(&mut body)
        .map_err(body_error)?;
    Ok(Answer { status, body })
}

/// A byte range: `offset` and an optional length (None = to the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub offset: u64,
    pub length: Option<u64>,
}

impl Range {
    /// The `Range` header value, or None for the whole file.
    pub fn header(&self) -> Option<String> {
        match self.length {
            None if self.offset == 0 => None,
            None => Some(format!("bytes={}-", self.offset)),
            Some(n) => Some(format!(
                "bytes={}-{}",
                self.offset,
                self.offset.saturating_add(n).saturating_sub(1)
            )),
        }
    }
}

/// The start offset of a `Content-Range: bytes a-b/n` value.
pub fn content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (a, _) = rest.split_once('-')?;
    a.trim().parse().ok()
}

/// GET a blob (following redirects) with an optional byte range. A server that ignores the
/// range (200) is read and sliced here; a range past the end (416) gives no bytes.
pub fn download(client: &Client, url: Url, range: Range, timeout: Duration) -> Result<Vec<u8>> {
    let mut rb = client.get(url).timeout(timeout);
    if let Some(h) = range.header() {
        rb = rb.header(reqwest::header::RANGE, h);
    }
    let resp = rb.send().map_err(transport_error)?;
    let status = resp.status().as_u16();
    if status == 416 {
        return Ok(Vec::new());
    }
    if !(200..300).contains(&status) {
        let mut body = Vec::new();
        let _ = resp.take(64 << 10).read_to_end(&mut body);
        return Err(http_error(status, &body));
    }
    let skip = if status == 206 {
        let start = resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(content_range_start)
            .unwrap_or(range.offset);
        if start > range.offset {
            return Err(GettError::other("the server sent the wrong byte range"));
        }
        range.offset - start
    } else {
        range.offset
    };
    let mut reader = resp;
    if skip > 0 {
        let skipped = std::io::copy(&mut (&mut reader).take(skip), &mut std::io::sink())
            .map_err(body_error)?;
        if skipped < skip {
            return Ok(Vec::new());
        }
    }
    let mut out = Vec::new();
    match range.length {
        Some(n) => (&mut reader).take(n).read_to_end(&mut out),
        None => reader.read_to_end(&mut out),
    }
    .map_err(body_error)?;
    Ok(out)
}

/// How to log in.
pub enum Credentials {
    Password {
        apikey: String,
        email: String,
        password: String,
    },
    Refresh(String),
}

struct Tokens {
    access: String,
    refresh: Option<String>,
    /// When to refresh (some margin before the token expires), and when it expires.
    refresh_at: Option<Instant>,
    expires_at: Option<Instant>,
    /// Set once a refresh was refused: the session is over.
    refused: Option<GettError>,
}

impl Tokens {
    fn from_login(v: &Value) -> Result<Tokens> {
        let access = v
            .get("accesstoken")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| GettError::other("login answer without an accesstoken"))?
            .to_string();
        let refresh = v
            .get("refreshtoken")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let mut t = Tokens {
            access,
            refresh,
            refresh_at: None,
            expires_at: None,
            refused: None,
        };
        t.set_lifetime(v.get("expires").and_then(Value::as_f64));
        Ok(t)
    }

    fn set_lifetime(&mut self, expires: Option<f64>) {
        let Some(secs) = expires.filter(|s| s.is_finite() && *s > 0.0) else {
            self.refresh_at = None;
            self.expires_at = None;
            return;
        };
        let life = Duration::from_secs_f64(secs.min(1e9));
        let margin = (life / 4).min(MAX_REFRESH_MARGIN);
        let now = Instant::now();
        self.expires_at = Some(now + life);
        self.refresh_at = Some(now + life - margin);
    }

    fn update(&mut self, v: &Value) -> Result<()> {
        let fresh = Tokens::from_login(v)?;
        self.access = fresh.access;
        if fresh.refresh.is_some() {
            self.refresh = fresh.refresh;
        }
        self.refresh_at = fresh.refresh_at;
        self.expires_at = fresh.expires_at;
        Ok(())
    }
}

/// A logged-in session.
pub struct Session {
    client: Client,
    base: Url,
    timeout: Duration,
    tokens: Mutex<Tokens>,
    /// The password, kept only to blank it out of messages (never sent again).
    password: Option<String>,
    /// Upload URLs from create_file, used by the first upload of that file.
    uploads: Mutex<HashMap<(String, String), String>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("api", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn decode_json(a: &Answer) -> Result<Value> {
    if !(200..300).contains(&a.status) {
        return Err(http_error(a.status, &a.body));
    }
    let v: Value = serde_json::from_slice(&a.body).map_err(|e| {
        GettError::new(
            Some(a.status),
            format!("bad JSON answer: {e}"),
            ErrorKind::Other,
        )
    })?;
    // gett-cli's rule: an `error` key is an error whatever the status.
    if let Some(Value::String(msg)) = v.get("error") {
        let kind = kind_for(a.status, msg);
        return Err(GettError::new(Some(a.status), msg.clone(), kind));
    }
    Ok(v)
}

fn login_refused(e: GettError) -> GettError {
    match e.status {
        Some(400..=404) => GettError {
            kind: ErrorKind::Refused,
            ..e
        },
        _ => e,
    }
}

impl Session {
    /// Log in; returns the session and the login answer (tokens removed).
    pub fn login(base: Url, timeout: Duration, creds: Credentials) -> Result<(Session, Value)> {
        let client = client()?;
        let (body, password, secret) = match &creds {
            Credentials::Password {
                apikey,
                email,
                password,
            } => (
                json!({"apikey": apikey, "email": email, "password": password}),
                Some(password.clone()),
                password.clone(),
            ),
            Credentials::Refresh(r) => (json!({"refreshtoken": r}), None, r.clone()),
        };
        let url = api_url(&base, &["users", "login"])?;
        let hide = |e: GettError| GettError {
            message: redact(&e.message, &[&secret]),
            ..e
        };
        let answer = request(
            &client,
            Method::POST,
            url,
            Some((body.to_string().into(), "application/json")),
            timeout,
        )
        .map_err(hide)?;
        let mut v = decode_json(&answer).map_err(login_refused).map_err(hide)?;
        let tokens = Tokens::from_login(&v).map_err(hide)?;
        if let Value::Object(o) = &mut v {
            o.remove("accesstoken");
            o.remove("refreshtoken");
        }
        let session = Session {
            client,
            base,
            timeout,
            tokens: Mutex::new(tokens),
            password,
            uploads: Mutex::new(HashMap::new()),
        };
        Ok((session, v))
    }

    /// The API URL without any user:password part (for messages).
    pub fn api_display(&self) -> String {
        let mut u = self.base.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        u.to_string()
    }

    /// The current refresh token (to log in again later without the password).
    pub fn refresh_token(&self) -> Option<String> {
        lock(&self.tokens).refresh.clone()
    }

    fn hide(&self, mut e: GettError) -> GettError {
        let t = lock(&self.tokens);
        let mut secrets: Vec<&str> = vec![&t.access];
        if let Some(r) = &t.refresh {
            secrets.push(r);
        }
        if let Some(p) = &self.password {
            secrets.push(p);
        }
        e.message = redact(&e.message, &secrets);
        e
    }

    /// Log in again with the refresh token (the tokens lock is held: one refresh at a time).
    fn refresh_locked(&self, t: &mut Tokens) -> Result<()> {
        let Some(refresh) = t.refresh.clone() else {
            let e = GettError::new(
                None,
                "the access token expired and there is no refresh token; log in again",
                ErrorKind::Refused,
            );
            t.refused = Some(e.clone());
            return Err(e);
        };
        let url = api_url(&self.base, &["users", "login"])?;
        let body = json!({ "refreshtoken": refresh }).to_string().into_bytes();
        let r = request(
            &self.client,
            Method::POST,
            url,
            Some((body.into(), "application/json")),
            self.timeout,
        )
        .and_then(|a| decode_json(&a));
        match r {
            Ok(v) => t.update(&v),
            Err(e) => {
                let refused = matches!(e.status, Some(400..=404)) || e.kind == ErrorKind::Refused;
                let e = GettError {
                    kind: if refused { ErrorKind::Refused } else { e.kind },
                    ..e
                }
                .context(if refused {
                    "the session expired and the token refresh was refused (log in again)"
                } else {
                    "token refresh failed"
                });
                if refused {
                    t.refused = Some(e.clone());
                }
                Err(e)
            }
        }
    }

    /// The access token to use now, refreshed first when it is about to expire.
    fn token(&self) -> Result<String> {
        let mut t = lock(&self.tokens);
        if let Some(e) = &t.refused {
            return Err(e.clone());
        }
        let now = Instant::now();
        if t.refresh_at.is_some_and(|at| now >= at)
            && let Err(e) = self.refresh_locked(&mut t)
        {
            // A transient failure while the old token is still valid: keep using it.
            let still_valid = t.expires_at.is_some_and(|at| Instant::now() < at);
            if t.refused.is_some() || !still_valid {
                return Err(e);
            }
        }
        Ok(t.access.clone())
    }

    /// After the server refused `used`: a fresh token (refreshing unless another call already
    /// did).
    fn token_after_refusal(&self, used: &str) -> Result<String> {
        let mut t = lock(&self.tokens);
        if let Some(e) = &t.refused {
            return Err(e.clone());
        }
        if t.access == used {
            self.refresh_locked(&mut t)?;
        }
        Ok(t.access.clone())
    }

    fn url(&self, segments: &[&str], token: Option<&str>) -> Result<Url> {
        let mut url = api_url(&self.base, segments)?;
        if let Some(tok) = token {
            url.query_pairs_mut().append_pair("accesstoken", tok);
        }
        Ok(url)
    }

    /// One API call. With `auth`, the token is added, and a 401/403 answer triggers one
    /// refresh and one retry.
    fn call_raw(
        &self,
        method: Method,
        segments: &[&str],
        auth: bool,
        body: Option<Value>,
    ) -> Result<Answer> {
        let body = body.map(|b| b.to_string().into_bytes());
        let send = |token: Option<&str>| -> Result<Answer> {
            request(
                &self.client,
                method.clone(),
                self.url(segments, token)?,
                body.clone().map(|b| (b.into(), "application/json")),
                self.timeout,
            )
        };
        let r = (|| {
            if !auth {
                return send(None);
            }
            let token = self.token()?;
            let a = send(Some(&token))?;
            if matches!(a.status, 401 | 403) {
                let token = self.token_after_refusal(&token)?;
                return send(Some(&token));
            }
            Ok(a)
        })();
        r.map_err(|e| self.hide(e))
    }

    /// An API call answering JSON.
    fn call(
        &self,
        method: Method,
        segments: &[&str],
        auth: bool,
        body: Option<Value>,
    ) -> Result<Value> {
        let a = self.call_raw(method, segments, auth, body)?;
        decode_json(&a).map_err(|e| self.hide(e))
    }

    /// A POST whose answer only counts by its status ("clients should trust only the 2xx
    /// status"), unless it is JSON carrying an `error`.
    fn call_ignoring_body(&self, segments: &[&str]) -> Result<()> {
        let a = self.call_raw(Method::POST, segments, true, None)?;
        if !(200..300).contains(&a.status) {
            return Err(self.hide(http_error(a.status, &a.body)));
        }
        match serde_json::from_slice::<Value>(&a.body) {
            Ok(v) if v.get("error").is_some_and(Value::is_string) => Err(self.hide(
                decode_json(&a)
                    .err()
                    .unwrap_or_else(|| http_error(a.status, &a.body)),
            )),
            _ => Ok(()),
        }
    }

    fn expect_object(v: Value, what: &str) -> Result<Value> {
        if v.is_object() {
            Ok(v)
        } else {
            Err(GettError::other(format!(
                "unexpected answer (a {what} object expected)"
            )))
        }
    }

    /// GET /1/users/me
    pub fn user(&self) -> Result<Value> {
        Self::expect_object(
            self.call(Method::GET, &["users", "me"], true, None)?,
            "user",
        )
    }

    /// GET /1/shares
    pub fn shares(&self) -> Result<Value> {
        let v = self.call(Method::GET, &["shares"], true, None)?;
        if v.is_array() {
            Ok(v)
        } else {
            Err(GettError::other(
                "unexpected answer (an array of shares expected)",
            ))
        }
    }

    /// GET /1/shares/{s} (public)
    pub fn share(&self, name: &str) -> Result<Value> {
        Self::expect_object(
            self.call(Method::GET, &["shares", name], false, None)?,
            "share",
        )
    }

    /// POST /1/shares/create
    pub fn create_share(&self, title: Option<&str>) -> Result<Value> {
        let body = match title {
            Some(t) => json!({ "title": t }),
            None => json!({}),
        };
        Self::expect_object(
            self.call(Method::POST, &["shares", "create"], true, Some(body))?,
            "share",
        )
    }

    /// POST /1/shares/{s}/update (None removes the title)
    pub fn update_share(&self, name: &str, title: Option<&str>) -> Result<Value> {
        let body = json!({ "title": title });
        Self::expect_object(
            self.call(Method::POST, &["shares", name, "update"], true, Some(body))?,
            "share",
        )
    }

    /// POST /1/shares/{s}/destroy (only the 2xx status counts)
    pub fn destroy_share(&self, name: &str) -> Result<()> {
        self.call_ignoring_body(&["shares", name, "destroy"])?;
        lock(&self.uploads).retain(|(s, _), _| s != name);
        Ok(())
    }

    /// GET /1/files/{s}/{f} (public)
    pub fn file(&self, share: &str, fileid: &str) -> Result<Value> {
        Self::expect_object(
            self.call(Method::GET, &["files", share, fileid], false, None)?,
            "file",
        )
    }

    /// POST /1/files/{s}/create; remembers the upload URL for the first upload.
    pub fn create_file(&self, share: &str, filename: &str) -> Result<Value> {
        let body = json!({ "filename": filename });
        let v = Self::expect_object(
            self.call(Method::POST, &["files", share, "create"], true, Some(body))?,
            "file",
        )?;
        let put = v.pointer("/upload/puturl").and_then(Value::as_str);
        let id = v.get("fileid").and_then(|i| match i {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        if let (Some(put), Some(id)) = (put, id) {
            let mut ups = lock(&self.uploads);
            if ups.len() >= MAX_CACHED_UPLOADS {
                ups.clear();
            }
            ups.insert((share.to_string(), id), put.to_string());
        }
        Ok(v)
    }

    /// PUT the bytes to an upload URL (absolute, or relative to the API URL).
    fn put(&self, url: &str, data: &Arc<[u8]>) -> Result<()> {
        let url = self
            .base
            .join(url)
            .map_err(|e| GettError::other(format!("bad upload URL in the answer: {e}")))?;
        let extra = Duration::from_secs_f64(data.len() as f64 / (1 << 20) as f64 * SECS_PER_MIB);
        let a = request(
            &self.client,
            Method::PUT,
            url,
            // A sized reader over the shared bytes: Content-Length, and no copy per attempt.
            Some((
                Body::sized(std::io::Cursor::new(data.clone()), data.len() as u64),
                "application/octet-stream",
            )),
            self.timeout + extra,
        )?;
        if (200..300).contains(&a.status) {
            Ok(())
        } else {
            Err(http_error(a.status, &a.body))
        }
    }

    /// Upload a file's bytes: to the URL from create_file the first time, else to a fresh URL
    /// from GET /1/files/{s}/{f}/upload (also when the remembered one is gone).
    pub fn upload(&self, share: &str, fileid: &str, data: Arc<[u8]>) -> Result<()> {
        let cached = lock(&self.uploads).remove(&(share.to_string(), fileid.to_string()));
        if let Some(url) = cached {
            match self.put(&url, &data) {
                Ok(()) => return Ok(()),
                Err(e) if matches!(e.status, Some(404 | 410)) => {}
                Err(e) => return Err(self.hide(e)),
            }
        }
        let up = self.call(Method::GET, &["files", share, fileid, "upload"], true, None)?;
        let url = up
            .get("puturl")
            .and_then(Value::as_str)
            .ok_or_else(|| GettError::other("upload answer without a puturl"))?;
        self.put(url, &data).map_err(|e| self.hide(e))
    }

    /// GET /1/files/{s}/{f}/blob (public; the redirect is followed).
    pub fn download(&self, share: &str, fileid: &str, range: Range) -> Result<Vec<u8>> {
        if range.length == Some(0) {
            return Ok(Vec::new());
        }
        let url = self.url(&["files", share, fileid, "blob"], None)?;
        let extra = range.length.map_or(Duration::ZERO, |n| {
            Duration::from_secs_f64(n as f64 / (1 << 20) as f64 * SECS_PER_MIB)
        });
        download(&self.client, url, range, self.timeout + extra).map_err(|e| self.hide(e))
    }

    /// POST /1/files/{s}/{f}/destroy (only the 2xx status counts)
    pub fn destroy_file(&self, share: &str, fileid: &str) -> Result<()> {
        self.call_ignoring_body(&["files", share, fileid, "destroy"])?;
        lock(&self.uploads).remove(&(share.to_string(), fileid.to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_status_and_known_messages() {
        assert_eq!(kind_for(404, "whatever"), ErrorKind::NotFound);
        assert_eq!(kind_for(400, "share not found"), ErrorKind::NotFound);
        assert_eq!(kind_for(401, "access denied"), ErrorKind::Refused);
        assert_eq!(kind_for(403, "storage limit exceeded"), ErrorKind::NoSpace);
        assert_eq!(kind_for(413, ""), ErrorKind::NoSpace);
        assert_eq!(kind_for(504, ""), ErrorKind::TimedOut);
        assert_eq!(kind_for(500, "boom"), ErrorKind::Other);
        assert_eq!(kind_for(409, "file not uploaded"), ErrorKind::Other);
    }

    #[test]
    fn error_text_prefers_the_json_error_field() {
        assert_eq!(
            error_text(404, br#"{"error":"file not found"}"#),
            "file not found"
        );
        assert_eq!(
            error_text(500, b"\n  oops: it broke\nmore"),
            "oops: it broke"
        );
        assert_eq!(error_text(404, b"<html><h1>404</h1></html>"), "Not Found");
        assert_eq!(error_text(502, b""), "Bad Gateway");
    }

    #[test]
    fn redaction_blanks_every_secret() {
        assert_eq!(
            redact(
                "token a.xyz0123 and pw hunter2-long and a.xyz0123, not wrong",
                &["a.xyz0123", "hunter2-long", "", "wrong"]
            ),
            "token [hidden] and pw [hidden] and [hidden], not wrong"
        );
    }

    #[test]
    fn api_urls_keep_a_base_path_and_encode_segments() {
        let b = parse_base("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            api_url(&b, &["files", "ab/c", "0"]).unwrap().as_str(),
            "http://127.0.0.1:8080/1/files/ab%2Fc/0"
        );
        let b = parse_base("https://example.org/gett/").unwrap();
        assert_eq!(
            api_url(&b, &["users", "me"]).unwrap().as_str(),
            "https://example.org/gett/1/users/me"
        );
        for with_version in ["https://open.ge.tt/1", "https://open.ge.tt/1/"] {
            let b = parse_base(with_version).unwrap();
            assert_eq!(
                api_url(&b, &["users", "me"]).unwrap().as_str(),
                "https://open.ge.tt/1/users/me"
            );
        }
        assert!(parse_base("ftp://x").is_err());
        assert!(parse_base("nonsense").is_err());
    }

    #[test]
    fn range_headers() {
        let r = |offset, length| Range { offset, length }.header();
        assert_eq!(r(0, None), None);
        assert_eq!(r(5, None).as_deref(), Some("bytes=5-"));
        assert_eq!(r(0, Some(10)).as_deref(), Some("bytes=0-9"));
        assert_eq!(r(100, Some(1)).as_deref(), Some("bytes=100-100"));
        assert_eq!(content_range_start("bytes 100-199/1000"), Some(100));
        assert_eq!(content_range_start("bytes */1000"), None);
    }

    #[test]
    fn token_margin_is_a_quarter_of_short_lifetimes() {
        let v = json!({"accesstoken": "a.x", "refreshtoken": "r.y", "expires": 4});
        let t = Tokens::from_login(&v).unwrap();
        let (r, e) = (t.refresh_at.unwrap(), t.expires_at.unwrap());
        assert_eq!(e - r, Duration::from_secs(1));
        let v = json!({"accesstoken": "a.x", "expires": 86400});
        let t = Tokens::from_login(&v).unwrap();
        assert_eq!(
            t.expires_at.unwrap() - t.refresh_at.unwrap(),
            MAX_REFRESH_MARGIN
        );
        assert!(t.refresh.is_none());
        assert!(Tokens::from_login(&json!({"expires": 3})).is_err());
    }

    #[test]
    fn sessions_can_move_to_worker_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Session>();
        send_sync::<GettError>();
    }

    #[test]
    fn display_has_status_and_message() {
        let e = GettError::new(Some(404), "share not found", ErrorKind::NotFound);
        assert_eq!(e.to_string(), "gett: 404: share not found");
        let e = GettError::new(None, "operation timed out", ErrorKind::TimedOut);
        assert_eq!(e.to_string(), "gett: operation timed out");
    }
}
