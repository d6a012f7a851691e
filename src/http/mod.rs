//! The `http` Lua module: HTTP requests from scripts (issue 6). The HTTP work lives in `client`
//! (no Lua there); this file checks arguments and converts between Lua values and
//! `client::Request` / `client::Response`.
//!
//! ```lua
//! local http = require "http"
//! local status, body, headers = http.request{method = "PUT", url = URL, body = "data",
//!                                            headers = {["Content-Type"] = "text/plain"},
//!                                            timeout = 5}
//! local status, body, headers = http.get(URL [, headers])
//! local status, body, headers = http.post(URL, body [, headers])   -- also http.put
//! local status, body, headers = http.delete(URL [, headers])
//! local status, err = http.get("http://127.0.0.1:1/")   --> nil, {message=, errno=ECONNREFUSED}
//! http.timeout = 10                  -- default time limit of later requests (seconds; 60)
//! http.escape("a b/c")               --> "a%20b%2Fc"  (http.unescape reverses it)
//! ```
//!
//! Every answer that arrives is returned, whatever its status (404 and 500 included):
//! `status` (integer), `body` (string, bytes as received), `headers` (names lower-case, lines
//! with the same name joined with ", "). Redirects are followed. Only a request that got no
//! (complete) answer returns `nil, err` with `err = {status=, message=, errno=}`: `errno` is
//! `flu.errno.ETIMEDOUT`, `ECONNREFUSED`, `EHOSTUNREACH` (also for a name that does not
//! resolve), `ENETUNREACH`, `EFBIG` (answer over 256 MiB) or `EIO`; `status` is set only when
//! the head arrived but the body did not. `tostring(err)` = "http: [STATUS: ]MESSAGE".
//! Misuse (a missing or malformed URL, an unknown field, a header that cannot be sent, a bad
//! time-out) raises a Lua error.

pub mod client;

use crate::convert::{bad_arg, lua_type};
use std::time::Duration;

use mlua::{IntoLuaMulti, Lua, MultiValue, Table, Value};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};

use client::{HttpError, Request, Response};

const MODULE: &str = "flufs.http";
const ERROR_MT: &str = "flufs.http.error";

/// Make `require "http"` return the module.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    let m = lua.create_table()?;
    m.raw_set(
        "request",
        lua.create_async_function(|lua, arg: Value| {
            let req = request(&lua, arg);
            run(lua, req)
        })?,
    )?;
    let shorthands = [
        ("get", Method::GET, false),
        ("post", Method::POST, true),
        ("put", Method::PUT, true),
        ("delete", Method::DELETE, false),
    ];
    for (name, method, with_body) in shorthands {
        m.raw_set(
            name,
            lua.create_async_function(move |lua, args: MultiValue| {
                let req = shorthand(&lua, name, method.clone(), with_body, args);
                run(lua, req)
            })?,
        )?;
    }
    m.raw_set("escape", lua.create_function(escape)?)?;
    m.raw_set("unescape", lua.create_function(unescape)?)?;
    m.raw_set("timeout", client::DEFAULT_TIMEOUT.as_secs())?;
    lua.set_named_registry_value(MODULE, &m)?;

    crate::flu::register_error_metatable(lua, "http", ERROR_MT)?;

    lua.register_module("http", m)
}

// --- arguments ------------------------------------------------------------------------------

fn misuse(func: &str, msg: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(format!("http.{func}: {msg}"))
}

/// An http:// or https:// URL.
fn parse_url(func: &str, v: &Value, what: impl Fn() -> mlua::Error) -> mlua::Result<Url> {
    let Value::String(s) = v else {
        return Err(what());
    };
    let text = s
        .to_str()
        .map_err(|_| misuse(func, "the URL is not valid UTF-8"))?;
    let url = Url::parse(&text).map_err(|e| misuse(func, format!("bad URL {:?}: {e}", &*text)))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(misuse(
            func,
            format!(
                "bad URL {:?}: http:// or https:// with a host expected",
                &*text
            ),
        ));
    }
    Ok(url)
}

/// A time limit in seconds (> 0; fractions allowed).
fn duration(func: &str, field: &str, v: &Value) -> mlua::Result<Duration> {
    let secs = match v {
        Value::Integer(n) if *n > 0 => *n as f64,
        Value::Number(f) if *f > 0.0 && !f.is_nan() => *f,
        v => {
            return Err(misuse(
                func,
                format!(
                    "'{field}' must be a positive number of seconds (got {})",
                    match v {
                        Value::Integer(_) | Value::Number(_) => "a number <= 0".to_string(),
                        v => lua_type(v).to_string(),
                    }
                ),
            ));
        }
    };
    Ok(Duration::from_secs_f64(secs.min(1e9)))
}

/// `http.timeout`, the default time limit.
fn default_timeout(lua: &Lua, func: &str) -> mlua::Result<Duration> {
    let m: Table = lua.named_registry_value(MODULE)?;
    match m.raw_get::<Value>("timeout")? {
        Value::Nil => Ok(client::DEFAULT_TIMEOUT),
        v => duration(func, "http.timeout", &v),
    }
}

/// Request headers: `{name = value}` where value is a string, a number, or an array of
/// strings (one header line each).
fn headers(func: &str, v: &Value) -> mlua::Result<HeaderMap> {
    let mut map = HeaderMap::new();
    let t = match v {
        Value::Nil => return Ok(map),
        Value::Table(t) => t,
        v => {
            return Err(misuse(
                func,
                format!("headers must be a table (got {})", lua_type(v)),
            ));
        }
    };
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair?;
        let Value::String(k) = k else {
            return Err(misuse(
                func,
                format!("header names must be strings (got {})", lua_type(&k)),
            ));
        };
        let name = HeaderName::from_bytes(&k.as_bytes())
            .map_err(|_| misuse(func, format!("bad header name {:?}", k.to_string_lossy())))?;
        if name == reqwest::header::CONTENT_LENGTH || name == reqwest::header::TRANSFER_ENCODING {
            return Err(misuse(
                func,
                format!("the {name} header is set from the body, not by scripts"),
            ));
        }
        let mut add = |v: &Value| -> mlua::Result<()> {
            let bytes = match v {
                Value::String(s) => s.as_bytes().to_vec(),
                Value::Integer(n) => n.to_string().into_bytes(),
                Value::Number(f) => f.to_string().into_bytes(),
                v => {
                    return Err(misuse(
                        func,
                        format!(
                            "header {name}: a string, a number or an array of strings expected (got {})",
                            lua_type(v)
                        ),
                    ));
                }
            };
            let value = HeaderValue::from_bytes(&bytes).map_err(|_| {
                misuse(
                    func,
                    format!("header {name}: the value contains a line break or control character"),
                )
            })?;
            map.append(name.clone(), value);
            Ok(())
        };
        match &v {
            Value::Table(list) => {
                for item in list.sequence_values::<Value>() {
                    add(&item?)?;
                }
            }
            v => add(v)?,
        }
    }
    Ok(map)
}

fn body(func: &str, v: &Value) -> mlua::Result<Option<Vec<u8>>> {
    match v {
        Value::Nil => Ok(None),
        Value::String(s) => Ok(Some(s.as_bytes().to_vec())),
        v => Err(misuse(
            func,
            format!("the body must be a string (got {})", lua_type(v)),
        )),
    }
}

const FIELDS: [&str; 5] = ["method", "url", "headers", "body", "timeout"];

/// `http.request{method=, url=, headers=, body=, timeout=}` (or `http.request(url)`: a GET).
fn request(lua: &Lua, arg: Value) -> mlua::Result<Request> {
    const F: &str = "request";
    let req = match &arg {
        Value::String(_) => Request {
            method: Method::GET,
            url: parse_url(F, &arg, || bad_arg(F, 1, "table or string", &arg))?,
            headers: HeaderMap::new(),
            body: None,
            timeout: default_timeout(lua, F)?,
        },
        Value::Table(t) => {
            for pair in t.pairs::<Value, Value>() {
                let (k, _) = pair?;
                let known = match &k {
                    Value::String(s) => {
                        FIELDS.iter().any(|f| s.as_bytes().as_ref() == f.as_bytes())
                    }
                    _ => false,
                };
                if !known {
                    let name = match &k {
                        Value::String(s) => format!("{:?}", s.to_string_lossy()),
                        k => format!("of type {}", lua_type(k)),
                    };
                    return Err(misuse(
                        F,
                        format!("unknown field {name} (method, url, headers, body, timeout)"),
                    ));
                }
            }
            let method = match t.raw_get::<Value>("method")? {
                Value::Nil => Method::GET,
                Value::String(s) => {
                    let upper = s.as_bytes().to_ascii_uppercase();
                    Method::from_bytes(&upper)
                        .map_err(|_| misuse(F, format!("bad method {:?}", s.to_string_lossy())))?
                }
                v => {
                    return Err(misuse(
                        F,
                        format!("'method' must be a string (got {})", lua_type(&v)),
                    ));
                }
            };
            let url_v = t.raw_get::<Value>("url")?;
            let url = parse_url(F, &url_v, || {
                misuse(
                    F,
                    format!("'url' must be a string (got {})", lua_type(&url_v)),
                )
            })?;
            let timeout = match t.raw_get::<Value>("timeout")? {
                Value::Nil => default_timeout(lua, F)?,
                v => duration(F, "timeout", &v)?,
            };
            Request {
                method,
                url,
                headers: headers(F, &t.raw_get("headers")?)?,
                body: body(F, &t.raw_get("body")?)?,
                timeout,
            }
        }
        v => return Err(bad_arg(F, 1, "table or string", v)),
    };
    Ok(req)
}

/// `http.get(url [, headers])`, `http.post(url, body [, headers])`, ...
fn shorthand(
    lua: &Lua,
    func: &'static str,
    method: Method,
    with_body: bool,
    args: MultiValue,
) -> mlua::Result<Request> {
    let args: Vec<Value> = args.into_iter().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::Nil);
    let url_v = arg(0);
    let url = parse_url(func, &url_v, || bad_arg(func, 1, "string", &url_v))?;
    let (body_v, headers_v, headers_pos) = if with_body {
        (arg(1), arg(2), 3)
    } else {
        (Value::Nil, arg(1), 2)
    };
    if with_body && !matches!(body_v, Value::String(_)) {
        return Err(bad_arg(func, 2, "string", &body_v));
    }
    if !matches!(headers_v, Value::Nil | Value::Table(_)) {
        return Err(bad_arg(func, headers_pos, "table or nil", &headers_v));
    }
    let req = Request {
        method,
        url,
        headers: headers(func, &headers_v)?,
        body: body(func, &body_v)?,
        timeout: default_timeout(lua, func)?,
    };
    Ok(req)
}

// --- results --------------------------------------------------------------------------------

/// Perform the request on a worker thread: only the calling request's coroutine waits, and
/// the wait does not count towards `--op-timeout`.
async fn run(lua: Lua, req: mlua::Result<Request>) -> mlua::Result<MultiValue> {
    let req = req?;
    let result = crate::runtime::blocking("http", move || client::perform(req)).await?;
    match result {
        Ok(resp) => answer(&lua, resp),
        Err(e) => (Value::Nil, error_table(&lua, &e)?).into_lua_multi(&lua),
    }
}

fn answer(lua: &Lua, resp: Response) -> mlua::Result<MultiValue> {
    let headers = lua.create_table()?;
    for (name, value) in &resp.headers {
        let joined = match headers.raw_get::<Option<mlua::LuaString>>(name.as_str())? {
            Some(prev) => {
                let mut v = prev.as_bytes().to_vec();
                v.extend_from_slice(b", ");
                v.extend_from_slice(value);
                v
            }
            None => value.clone(),
        };
        headers.raw_set(name.as_str(), lua.create_string(joined)?)?;
    }
    let body = lua.create_string(&resp.body)?;
    (resp.status, body, headers).into_lua_multi(lua)
}

fn error_table(lua: &Lua, e: &HttpError) -> mlua::Result<Table> {
    crate::flu::error_table(lua, e.status, &e.message, e.kind.errno(), ERROR_MT)
}

// --- escaping -------------------------------------------------------------------------------

/// Percent-encode every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`): a safe path
/// segment or query value.
pub fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undo percent-encoding (`%XX`; anything else, malformed escapes included, is kept).
pub fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn escape(lua: &Lua, v: Value) -> mlua::Result<mlua::LuaString> {
    match &v {
        Value::String(s) => lua.create_string(percent_encode(&s.as_bytes())),
        Value::Integer(n) => lua.create_string(n.to_string()),
        v => Err(bad_arg("escape", 1, "string", v)),
    }
}

fn unescape(lua: &Lua, v: Value) -> mlua::Result<mlua::LuaString> {
    match &v {
        Value::String(s) => lua.create_string(percent_decode(&s.as_bytes())),
        v => Err(bad_arg("unescape", 1, "string", v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lua() -> Lua {
        let lua = Lua::new();
        register(&lua).unwrap();
        lua
    }

    fn err_of(lua: &Lua, code: &str) -> String {
        match lua
            .load(format!("local http = require 'http'\n{code}"))
            .exec()
        {
            Ok(()) => panic!("{code}: no error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(percent_encode(b"a b/c~d.e_f-g"), "a%20b%2Fc~d.e_f-g");
        assert_eq!(percent_encode("é\0%".as_bytes()), "%C3%A9%00%25");
        assert_eq!(percent_decode(b"a%20b%2fc%zz%4"), b"a b/c%zz%4");
        assert_eq!(percent_decode(b"%C3%A9"), "é".as_bytes());
        let lua = lua();
        let ok: bool = lua
            .load(
                r#"local http = require "http"
                   local s = "\0\255 /?&=é"
                   return http.unescape(http.escape(s)) == s and http.escape(12) == "12""#,
            )
            .eval()
            .unwrap();
        assert!(ok);
    }

    #[test]
    fn misuse_raises() {
        let lua = lua();
        let cases = [
            (
                "http.request(42)",
                "bad argument #1 to 'request' (table or string expected, got number)",
            ),
            ("http.request{}", "'url' must be a string (got nil)"),
            (
                "http.request{url = 'ftp://x/'}",
                "http:// or https:// with a host expected",
            ),
            ("http.request{url = 'not a url'}", "bad URL \"not a url\""),
            (
                "http.request{url = 'http://x/', header = {}}",
                "unknown field \"header\"",
            ),
            (
                "http.request{url = 'http://x/', method = 'GE T'}",
                "bad method \"GE T\"",
            ),
            (
                "http.request{url = 'http://x/', method = 1}",
                "'method' must be a string",
            ),
            (
                "http.request{url = 'http://x/', timeout = 0}",
                "'timeout' must be a positive number",
            ),
            (
                "http.request{url = 'http://x/', timeout = 'x'}",
                "(got string)",
            ),
            (
                "http.request{url = 'http://x/', body = {}}",
                "the body must be a string",
            ),
            (
                "http.request{url = 'http://x/', headers = 1}",
                "headers must be a table",
            ),
            (
                "http.request{url = 'http://x/', headers = {['a b'] = 'x'}}",
                "bad header name \"a b\"",
            ),
            (
                "http.request{url = 'http://x/', headers = {a = 'x\\r\\nb: y'}}",
                "line break or control character",
            ),
            (
                "http.request{url = 'http://x/', headers = {a = true}}",
                "header a: a string, a number",
            ),
            (
                "http.request{url = 'http://x/', headers = {['Content-Length'] = '3'}}",
                "set from the body",
            ),
            (
                "http.get()",
                "bad argument #1 to 'get' (string expected, got nil)",
            ),
            (
                "http.get('http://x/', 'h')",
                "bad argument #2 to 'get' (table or nil expected, got string)",
            ),
            (
                "http.post('http://x/')",
                "bad argument #2 to 'post' (string expected, got nil)",
            ),
            (
                "http.put('http://x/', 'b', 5)",
                "bad argument #3 to 'put' (table or nil expected, got number)",
            ),
            (
                "http.timeout = -1 http.delete('http://x/')",
                "'http.timeout' must be a positive number",
            ),
            ("http.escape({})", "bad argument #1 to 'escape'"),
        ];
        for (code, want) in cases {
            let e = err_of(&lua, code);
            assert!(e.contains(want), "{code}: {e}");
        }
    }

    #[test]
    fn answers_become_lua_values() {
        let lua = lua();
        let resp = Response {
            status: 201,
            headers: vec![
                ("set-cookie".into(), b"a=1".to_vec()),
                ("content-type".into(), b"text/plain".to_vec()),
                ("set-cookie".into(), b"b=2".to_vec()),
            ],
            body: b"\0bytes\xff".to_vec(),
        };
        let mv = answer(&lua, resp).unwrap();
        let v: Vec<Value> = mv.into_iter().collect();
        assert_eq!(v[0], Value::Integer(201));
        let Value::String(body) = &v[1] else {
            panic!("{:?}", v[1])
        };
        assert_eq!(&*body.as_bytes(), b"\0bytes\xff");
        let Value::Table(h) = &v[2] else {
            panic!("{:?}", v[2])
        };
        assert_eq!(h.raw_get::<String>("set-cookie").unwrap(), "a=1, b=2");
        assert_eq!(h.raw_get::<String>("content-type").unwrap(), "text/plain");
    }

    #[test]
    fn errors_carry_errno_and_print() {
        let lua = lua();
        let e = HttpError {
            status: None,
            message: "operation timed out".into(),
            kind: client::Failure::TimedOut,
        };
        let t = error_table(&lua, &e).unwrap();
        lua.globals().set("E", t).unwrap();
        let (s, code, status): (String, i32, Option<i64>) = lua
            .load("return tostring(E), E.errno.code, E.status")
            .eval()
            .unwrap();
        assert_eq!(s, "http: operation timed out");
        assert_eq!(code, libc::ETIMEDOUT);
        assert_eq!(status, None);
    }
}
