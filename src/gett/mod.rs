//! The `gett` Lua module: a client of the Ge.tt REST API (version 1), see issue 3 and
//! `../shared/gett-api.md`. The HTTP side lives in `client` (no Lua there); this file checks
//! arguments and converts between Lua and JSON.
//!
//! ```lua
//! local gett = require "gett"
//! local s, err = gett.login{apikey=K, email=E, password=P [, api=URL] [, timeout=SECONDS]}
//! local s, err = gett.login{refreshtoken=R [, api=URL] [, timeout=SECONDS]}
//! local me = s:user()                     -- me.storage.used, me.storage.limit
//! for _, sh in ipairs(s:shares()) do print(sh.sharename, sh.title) end
//! local f = s:create_file(sh.sharename, "a.txt")
//! assert(s:upload(sh.sharename, f.fileid, "hello"))
//! print(s:download(sh.sharename, f.fileid, 1, 3))   --> "ell"
//! local ok, err = s:file(sh.sharename, "nope")       --> nil, {status=404, message=, errno=}
//! ```
//!
//! Results are plain tables mirroring the JSON (unknown fields kept). JSON null: a member of an
//! object that is null is left out (reads as nil, like an absent field); a null inside an array
//! is `gett.null` (a light userdata), so positions stay. A failure returns `nil, err` with
//! `err = {status=, message=, errno=}` (`tostring(err)` = "gett: STATUS: MESSAGE"); wrong
//! argument types raise a Lua error.

pub(crate) mod client;

use crate::convert::{bad_arg, lua_type};
use std::sync::Arc;
use std::time::Duration;

use mlua::{IntoLuaMulti, Lua, MetaMethod, MultiValue, Table, UserData, UserDataMethods, Value};
use serde_json::Value as Json;

use client::{Credentials, ErrorKind, GettError, Range, Session};

/// The historical public API (the service is gone; `GETT_API` or `api=` point elsewhere).
const DEFAULT_API: &str = "https://api.ge.tt";
const ERROR_MT: &str = "gett.error";

/// Make `require "gett"` return the module.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    let m = lua.create_table()?;
    m.raw_set("login", lua.create_function(login)?)?;
    m.raw_set("null", Value::NULL)?;
    m.raw_set("default_api", DEFAULT_API)?;

    crate::flu::register_error_metatable(lua, "gett", ERROR_MT)?;

    lua.register_module("gett", m)
}

// --- values ---------------------------------------------------------------------------------

/// A JSON value as Lua: objects and arrays become tables (null members of objects are left
/// out, null array elements become `gett.null`).
fn to_lua(lua: &Lua, v: &Json) -> mlua::Result<Value> {
    Ok(match v {
        Json::Null => Value::NULL,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(lua.create_string(s)?),
        Json::Array(a) => {
            let t = lua.create_table_with_capacity(a.len(), 0)?;
            for (i, x) in a.iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, x)?)?;
            }
            Value::Table(t)
        }
        Json::Object(o) => {
            let t = lua.create_table_with_capacity(0, o.len())?;
            for (k, x) in o {
                if !x.is_null() {
                    t.raw_set(k.as_str(), to_lua(lua, x)?)?;
                }
            }
            Value::Table(t)
        }
    })
}

fn error_table(lua: &Lua, e: &GettError) -> mlua::Result<Table> {
    crate::flu::error_table(lua, e.status, &e.message, e.kind.errno(), ERROR_MT)
}

/// `value` or `nil, err`.
fn ret<T: mlua::IntoLuaMulti>(lua: &Lua, r: Result<T, GettError>) -> mlua::Result<MultiValue> {
    match r {
        Ok(v) => v.into_lua_multi(lua),
        Err(e) => (Value::Nil, error_table(lua, &e)?).into_lua_multi(lua),
    }
}

fn ret_json(lua: &Lua, r: Result<Json, GettError>) -> mlua::Result<MultiValue> {
    match r {
        Ok(v) => to_lua(lua, &v)?.into_lua_multi(lua),
        Err(e) => ret::<()>(lua, Err(e)),
    }
}

// --- arguments ------------------------------------------------------------------------------

/// The positional arguments of a method call (after self).
struct Args<'a> {
    func: &'static str,
    values: &'a [Value],
}

impl Args<'_> {
    fn get(&self, i: usize) -> &Value {
        self.values.get(i).unwrap_or(&Value::Nil)
    }

    /// A share name (a string; bytes that are not UTF-8 cannot name a share and are replaced).
    fn name(&self, i: usize) -> mlua::Result<String> {
        match self.get(i) {
            Value::String(s) => Ok(s.to_string_lossy()),
            v => Err(bad_arg(self.func, i + 1, "string", v)),
        }
    }

    /// A file id: opaque string; an integer is accepted and written in decimal.
    fn fileid(&self, i: usize) -> mlua::Result<String> {
        match self.get(i) {
            Value::String(s) => Ok(s.to_string_lossy()),
            Value::Integer(n) => Ok(n.to_string()),
            Value::Number(n) if n.fract() == 0.0 && n.is_finite() => Ok(format!("{n:.0}")),
            v => Err(bad_arg(self.func, i + 1, "string", v)),
        }
    }

    /// A text sent as JSON (title, filename): Ok(Err) when it is not UTF-8.
    fn text(&self, i: usize, optional: bool) -> mlua::Result<Option<Result<String, GettError>>> {
        match self.get(i) {
            Value::Nil if optional => Ok(None),
            Value::String(s) => Ok(Some(match s.to_str() {
                Ok(t) => Ok(t.to_string()),
                Err(_) => Err(GettError::new(
                    None,
                    format!("{}: the name is not valid UTF-8", self.func),
                    ErrorKind::Invalid,
                )),
            })),
            v => Err(bad_arg(
                self.func,
                i + 1,
                if optional { "string or nil" } else { "string" },
                v,
            )),
        }
    }

    /// A non-negative integer (or nil when optional).
    fn count(&self, i: usize) -> mlua::Result<Option<u64>> {
        let v = self.get(i);
        let n = match v {
            Value::Nil => return Ok(None),
            Value::Integer(n) => *n,
            Value::Number(f) if f.fract() == 0.0 && f.is_finite() => *f as i64,
            _ => return Err(bad_arg(self.func, i + 1, "integer", v)),
        };
        u64::try_from(n)
            .map(Some)
            .map_err(|_| bad_arg(self.func, i + 1, "non-negative integer", v))
    }
}

// --- login ----------------------------------------------------------------------------------

fn opt_string(t: &Table, key: &str) -> mlua::Result<Option<String>> {
    match t.raw_get::<Value>(key)? {
        Value::Nil => Ok(None),
        Value::String(s) => Ok(Some(s.to_string_lossy())),
        v => Err(mlua::Error::runtime(format!(
            "gett.login: '{key}' must be a string (got {})",
            lua_type(&v)
        ))),
    }
}

fn login(lua: &Lua, opts: Value) -> mlua::Result<MultiValue> {
    let Value::Table(opts) = opts else {
        return Err(bad_arg("login", 1, "table", &opts));
    };
    let api = match opt_string(&opts, "api")? {
        Some(a) => a,
        None => std::env::var("GETT_API")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_API.to_string()),
    };
    let base =
        client::parse_base(&api).map_err(|e| mlua::Error::runtime(format!("gett.login: {e}")))?;
    let timeout = match opts.raw_get::<Value>("timeout")? {
        Value::Nil => client::DEFAULT_TIMEOUT,
        Value::Integer(n) if n > 0 => Duration::from_secs(n.unsigned_abs()),
        Value::Number(f) if f > 0.0 && f.is_finite() => Duration::from_secs_f64(f.min(1e9)),
        v => {
            return Err(mlua::Error::runtime(format!(
                "gett.login: 'timeout' must be a positive number of seconds (got {})",
                lua_type(&v)
            )));
        }
    };
    let creds = match opt_string(&opts, "refreshtoken")? {
        Some(r) => Credentials::Refresh(r),
        None => match (
            opt_string(&opts, "apikey")?,
            opt_string(&opts, "email")?,
            opt_string(&opts, "password")?,
        ) {
            (Some(apikey), Some(email), Some(password)) => Credentials::Password {
                apikey,
                email,
                password,
            },
            _ => {
                return Err(mlua::Error::runtime(
                    "gett.login: apikey, email and password (or refreshtoken) are required",
                ));
            }
        },
    };
    match Session::login(base, timeout, creds) {
        Ok((s, _answer)) => LuaSession(Arc::new(s)).into_lua_multi(lua),
        Err(e) => ret::<()>(lua, Err(e)),
    }
}

// --- the session ----------------------------------------------------------------------------

/// A logged-in session as Lua sees it (`s:user()`, ...).
struct LuaSession(Arc<Session>);

/// What a session call produces, before it becomes Lua values.
enum Out {
    Json(Json),
    Done,
    Bytes(Vec<u8>),
}

/// The HTTP part of a call: plain Rust, run on the blocking pool.
type Job = Box<dyn FnOnce(&Session) -> Result<Out, GettError> + Send>;

/// Register a method: `prepare` checks the positional arguments after self (on the Lua thread)
/// and returns the HTTP work, which runs on a worker thread while only the calling request's
/// coroutine waits.
fn method<M, F>(methods: &mut M, name: &'static str, prepare: F)
where
    M: UserDataMethods<LuaSession>,
    F: Fn(&Args) -> mlua::Result<Job> + 'static,
{
    methods.add_async_method(name, move |lua, this, args: MultiValue| {
        let session = this.0.clone();
        let values: Vec<Value> = args.into_iter().collect();
        let job = prepare(&Args {
            func: name,
            values: &values,
        });
        async move {
            let job = job?;
            let r = crate::runtime::blocking(name, move || job(&session)).await?;
            match r {
                Ok(Out::Json(v)) => ret_json(&lua, Ok(v)),
                Ok(Out::Done) => ret(&lua, Ok(true)),
                Ok(Out::Bytes(b)) => lua.create_string(b)?.into_lua_multi(&lua),
                Err(e) => ret::<()>(&lua, Err(e)),
            }
        }
    });
}

fn json(f: impl FnOnce(&Session) -> Result<Json, GettError> + Send + 'static) -> mlua::Result<Job> {
    Ok(Box::new(move |s| f(s).map(Out::Json)))
}

fn done(f: impl FnOnce(&Session) -> Result<(), GettError> + Send + 'static) -> mlua::Result<Job> {
    Ok(Box::new(move |s| f(s).map(|()| Out::Done)))
}

impl UserData for LuaSession {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            Ok(format!("gett session ({})", this.0.api_display()))
        });
        method(methods, "user", |_| json(|s| s.user()));
        method(methods, "shares", |_| json(|s| s.shares()));
        method(methods, "share", |a| {
            let name = a.name(0)?;
            json(move |s| s.share(&name))
        });
        method(methods, "create_share", |a| match a.text(0, true)? {
            None => json(|s| s.create_share(None)),
            Some(Ok(t)) => json(move |s| s.create_share(Some(&t))),
            Some(Err(e)) => json(move |_| Err(e)),
        });
        method(methods, "update_share", |a| {
            let name = a.name(0)?;
            match a.text(1, true)? {
                None => json(move |s| s.update_share(&name, None)),
                Some(Ok(t)) => json(move |s| s.update_share(&name, Some(&t))),
                Some(Err(e)) => json(move |_| Err(e)),
            }
        });
        method(methods, "destroy_share", |a| {
            let name = a.name(0)?;
            done(move |s| s.destroy_share(&name))
        });
        method(methods, "file", |a| {
            let (share, id) = (a.name(0)?, a.fileid(1)?);
            json(move |s| s.file(&share, &id))
        });
        method(methods, "create_file", |a| {
            let share = a.name(0)?;
            match a.text(1, false)? {
                Some(Ok(name)) => json(move |s| s.create_file(&share, &name)),
                Some(Err(e)) => json(move |_| Err(e)),
                None => Err(bad_arg("create_file", 2, "string", a.get(1))),
            }
        });
        method(methods, "upload", |a| {
            let (share, id) = (a.name(0)?, a.fileid(1)?);
            let data = match a.get(2) {
                Value::String(d) => Arc::<[u8]>::from(&*d.as_bytes()),
                v => return Err(bad_arg("upload", 3, "string", v)),
            };
            done(move |s| s.upload(&share, &id, data))
        });
        method(methods, "download", |a| {
            let (share, id) = (a.name(0)?, a.fileid(1)?);
            let offset = a.count(2)?.unwrap_or(0);
            let length = a.count(3)?;
            Ok(Box::new(move |s: &Session| {
                s.download(&share, &id, Range { offset, length })
                    .map(Out::Bytes)
            }))
        });
        method(methods, "destroy_file", |a| {
            let (share, id) = (a.name(0)?, a.fileid(1)?);
            done(move |s| s.destroy_file(&share, &id))
        });
        methods.add_method("refreshtoken", |lua, s, ()| {
            s.0.refresh_token().into_lua_multi(lua)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_nulls_leave_objects_and_stay_in_arrays() {
        let lua = Lua::new();
        let v = serde_json::json!({
            "a": null, "b": [1, null, 2.5, "x", true], "big": 18446744073709551615u64
        });
        let t = match to_lua(&lua, &v).unwrap() {
            Value::Table(t) => t,
            other => panic!("{other:?}"),
        };
        assert!(t.raw_get::<Value>("a").unwrap().is_nil());
        assert!(!t.contains_key("a").unwrap());
        let b: Table = t.raw_get("b").unwrap();
        assert_eq!(b.raw_len(), 5);
        assert_eq!(b.raw_get::<Value>(1).unwrap(), Value::Integer(1));
        assert_eq!(b.raw_get::<Value>(2).unwrap(), Value::NULL);
        assert_eq!(b.raw_get::<Value>(3).unwrap(), Value::Number(2.5));
        assert_eq!(b.raw_get::<String>(4).unwrap(), "x");
        assert!(matches!(
            t.raw_get::<Value>("big").unwrap(),
            Value::Number(_)
        ));
    }

    #[test]
    fn module_registers_and_errors_print() {
        let lua = Lua::new();
        register(&lua).unwrap();
        let (is_null, has_login): (bool, bool) = lua
            .load(r#"local g = require "gett"; return g.null == nil and false or rawequal(g.null, g.null), type(g.login) == "function""#)
            .eval()
            .unwrap();
        assert!(is_null && has_login);
        let e = GettError::new(Some(404), "share not found", ErrorKind::NotFound);
        let t = error_table(&lua, &e).unwrap();
        let s: String = lua
            .load("local e = ...; return tostring(e) .. '|' .. e.errno.name .. '|' .. e.status")
            .call(t)
            .unwrap();
        assert_eq!(s, "gett: 404: share not found|ENOENT|404");
        let t = error_table(
            &lua,
            &GettError::new(None, "timed out", ErrorKind::TimedOut),
        )
        .unwrap();
        let s: String = lua
            .load("local e = ...; return tostring(e) .. '|' .. e.errno.code .. '|' .. tostring(e.status)")
            .call(t)
            .unwrap();
        assert_eq!(s, format!("gett: timed out|{}|nil", libc::ETIMEDOUT));
    }

    #[test]
    fn misuse_raises_with_lua_type_names() {
        let lua = Lua::new();
        register(&lua).unwrap();
        let err = lua
            .load(r#"return require("gett").login(42)"#)
            .exec()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad argument #1 to 'login' (table expected, got number)"),
            "{err}"
        );
        let err = lua
            .load(r#"return require("gett").login{apikey = "k"}"#)
            .exec()
            .unwrap_err()
            .to_string();
        assert!(err.contains("are required"), "{err}");
    }
}
