//! The `flu` Lua module, registered by `register`: Flu's API (`main`, `errno`, `get_context`)
//! plus `now`, `mode` and `modeset`.
//!
//! ```lua
//! local flu = require "flu"
//! error(flu.errno.ENOENT)             -- any Linux errno name; tostring gives strerror text
//! local ctx = flu.get_context()       -- {uid=, gid=, pid=, umask=} of the calling process
//! local sec, nsec = flu.now()         -- CLOCK_REALTIME
//! flu.log("upload failed", "error")   -- stderr in the foreground, syslog once detached
//! flu.mode{reg=true, rusr=true}       -- 0x8100: sets and strings to integers
//! flu.modeset(0o40755)                -- {dir=true, rusr=true, ...}
//! flu.sleep(0.5)                      -- suspends only the calling request
//! flu.main({"name", mountpoint, "-o", "ro"}, fs)   -- mount, block until unmounted
//! ```

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use std::ffi::c_int;

use mlua::{
    IntoLua, Lua, MetaMethod, Table, UserData, UserDataFields, UserDataMethods, Value, ffi,
};

use crate::convert::{self, Timespec};
use crate::dispatch::CurrentCtx;
use crate::errno;
use crate::kernel::Ctx;

/// One errno value as scripts see it (`flu.errno.ENOENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrnoValue(pub i32);

impl UserData for ErrnoValue {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("code", |_, this| Ok(this.0));
        fields.add_field_method_get("name", |_, this| Ok(errno::name_of(this.0)));
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            Ok(errno::strerror(this.0))
        });
        methods.add_meta_method(MetaMethod::Eq, |_, this, other: Value| {
            Ok(match other {
                Value::UserData(u) => u
                    .borrow::<ErrnoValue>()
                    .map(|o| o.0 == this.0)
                    .unwrap_or(false),
                _ => false,
            })
        });
    }
}

/// What `flu.main` needs from the host: the command line's mount request.
pub type MainFn = Rc<dyn Fn(&Lua, Vec<String>, Table) -> Result<(), String>>;

/// Host hooks stored in the Lua state.
pub struct Host {
    pub main: MainFn,
    /// Set once `flu.main` has run: its outcome.
    pub main_result: RefCell<Option<Result<(), String>>>,
    pub ctx: CurrentCtx,
}

fn umask_of(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).ok()
}

/// `flu.now()`: seconds and nanoseconds since the epoch. In C: scripts call it on most changes
/// (luafs: two or three times per created file), and an mlua callback costs several times more.
unsafe extern "C-unwind" fn now(state: *mut ffi::lua_State) -> c_int {
    let t = Timespec::now();
    unsafe {
        ffi::lua_pushinteger(state, t.sec as ffi::lua_Integer);
        ffi::lua_pushinteger(state, t.nsec as ffi::lua_Integer);
    }
    2
}

/// How many names a mode set may hold (`mode::TYPES` and `mode::PERMS`).
const MODE_NAMES: usize = crate::mode::TYPES.len() + crate::mode::PERMS.len();

/// `flu.mode(m)`: a mode from a set, a mode string or an integer. A C closure (upvalue 1: the
/// general conversion; 2: the set names' string objects and bits; then the names themselves,
/// which keep those objects alive): luafs converts the set of every created file, and a set of
/// known names is summed here, comparing interned strings by address, in a fraction of what a
/// callback iterating the set through mlua costs. Anything else (and any error) goes to the
/// general conversion.
unsafe extern "C-unwind" fn mode(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        if ffi::lua_gettop(state) == 1 && ffi::lua_type(state, 1) == ffi::LUA_TTABLE {
            let known = ffi::lua_touserdata(state, ffi::lua_upvalueindex(2))
                as *const (*const std::ffi::c_void, u32);
            if !known.is_null() {
                let known = std::slice::from_raw_parts(known, MODE_NAMES);
                let mut m = 0u32;
                let mut all_known = true;
                ffi::lua_pushnil(state);
                while ffi::lua_next(state, 1) != 0 {
                    if ffi::lua_toboolean(state, -1) != 0
                        && ffi::lua_type(state, -2) == ffi::LUA_TSTRING
                    {
                        let key = ffi::lua_topointer(state, -2);
                        match known.iter().find(|(k, _)| *k == key) {
                            Some((_, bits)) => m |= bits,
                            None => {
                                all_known = false;
                                ffi::lua_settop(state, 1);
                                break;
                            }
                        }
                    }
                    ffi::lua_settop(state, -2);
                }
                if all_known {
                    ffi::lua_pushinteger(state, m as ffi::lua_Integer);
                    return 1;
                }
            }
        }
        ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
        ffi::lua_insert(state, 1);
        ffi::lua_call(state, ffi::lua_gettop(state) - 1, 1);
        1
    }
}

/// The `flu.mode` closure (see `mode`). Its table of string addresses is made once and kept
/// for the process's life (the closure may outlive everything else).
fn mode_function(lua: &Lua) -> mlua::Result<mlua::Function> {
    let general = lua.create_function(|_, v: Value| {
        convert::mode_from_lua(&v).map_err(|e| mlua::Error::runtime(e.to_string()))
    })?;
    let flags = crate::mode::TYPES.iter().chain(crate::mode::PERMS);
    let names = flags
        .clone()
        .map(|(n, _)| lua.create_string(n))
        .collect::<mlua::Result<Vec<_>>>()?;
    // SAFETY: the closure reads only its upvalues and the leaked table, whose addresses are
    // of strings its upvalues keep alive (Lua does not move objects); one slot is used to take
    // each string's address before the upvalues are pushed.
    unsafe {
        convert::c_closure(lua, mode, 2 + names.len() as c_int, |raw| {
            let state = raw.state();
            let mut known = Vec::with_capacity(MODE_NAMES);
            for (n, &(_, bits)) in names.iter().zip(flags) {
                n.push_into_stack(raw)?;
                known.push((ffi::lua_topointer(state, -1), bits));
                ffi::lua_pop(state, 1);
            }
            let known: &'static [(*const std::ffi::c_void, u32)] =
                Box::leak(known.into_boxed_slice());
            general.push_into_stack(raw)?;
            ffi::lua_pushlightuserdata(state, known.as_ptr() as *mut std::ffi::c_void);
            for n in &names {
                n.push_into_stack(raw)?;
            }
            Ok(())
        })
    }
}

/// Field names of the context table, as upvalues 2.. of `get_context`.
const CONTEXT_FIELDS: [&str; 4] = ["uid", "gid", "pid", "umask"];

/// `flu.get_context([t])`: the caller of the current request, filled into `t` or a new table.
/// A C closure (upvalue 1: the request context; then the field names, made once): luafs asks
/// for it on every create.
unsafe extern "C-unwind" fn get_context(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        let cell = ffi::lua_touserdata(state, ffi::lua_upvalueindex(1)) as *const Cell<Ctx>;
        if cell.is_null() {
            return 0;
        }
        let c = (*cell).get();
        let umask = c.umask.or_else(|| umask_of(c.pid)).unwrap_or(0o022);
        match ffi::lua_type(state, 1) {
            ffi::LUA_TTABLE => ffi::lua_settop(state, 1),
            ffi::LUA_TNIL | ffi::LUA_TNONE => {
                ffi::lua_settop(state, 0);
                ffi::lua_createtable(state, 0, 4);
            }
            t => convert::raise_with_type(
                state,
                c"bad argument #1 to 'get_context' (table expected, got ",
                t,
                c")",
            ),
        }
        for (i, v) in [c.uid, c.gid, c.pid, umask].into_iter().enumerate() {
            ffi::lua_pushvalue(state, ffi::lua_upvalueindex(2 + i as c_int));
            ffi::lua_pushinteger(state, v as ffi::lua_Integer);
            ffi::lua_rawset(state, 1);
        }
        1
    }
}

/// `flu.clone(t)`: a shallow copy of table `t` (its keys and values, and its metatable).
/// Beyond Flu. When this Lua passed `luaraw::Cloner`'s checks (`register` runs them), a table
/// with only a hash part is copied slot for slot (a table built once as a template and copied
/// costs far less than one built key by key: luafs's new inodes).
unsafe extern "C-unwind" fn clone_table(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        ffi::luaL_checktype(state, 1, ffi::LUA_TTABLE);
        ffi::lua_settop(state, 1);
        if let Some(c) = crate::luaraw::Cloner::checked()
            && c.push_clone(state, 1)
        {
            return 1;
        }
        ffi::lua_createtable(state, ffi::lua_rawlen(state, 1).try_into().unwrap_or(0), 0);
        ffi::lua_pushnil(state);
        while ffi::lua_next(state, 1) != 0 {
            ffi::lua_pushvalue(state, -2);
            ffi::lua_insert(state, -2);
            ffi::lua_rawset(state, 2);
        }
        if ffi::lua_getmetatable(state, 1) != 0 {
            ffi::lua_setmetatable(state, 2);
        }
        1
    }
}

/// `flu.split(path)`: the part of `path` before its last "/" and the part after it
/// (`"/a/b"` gives `"/a", "b"`; `"/b"` gives `"", "b"`), or nil for a path with no "/".
/// Beyond Flu. A script that keeps its tree in tables splits the path of every create,
/// mkdir, unlink or rename into its directory and the name; a Lua pattern does that with a
/// capture and a backtrack per byte of the name (~2,000 instructions), this with one scan.
unsafe extern "C-unwind" fn split_path(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        let mut len = 0usize;
        let p = ffi::luaL_checklstring(state, 1, &mut len);
        // SAFETY: Lua strings are `len` bytes at `p` while the string is on the stack.
        let bytes = std::slice::from_raw_parts(p as *const u8, len);
        match bytes.iter().rposition(|&b| b == b'/') {
            Some(i) => {
                ffi::lua_pushlstring(state, p, i);
                ffi::lua_pushlstring(state, p.add(i + 1), len - i - 1);
                2
            }
            None => {
                ffi::lua_pushnil(state);
                1
            }
        }
    }
}

/// The `get_context` closure over `ctx` (one reference to it is kept for the process's life:
/// the closure may outlive everything else).
fn get_context_function(lua: &Lua, ctx: &CurrentCtx) -> mlua::Result<mlua::Function> {
    let cell: *const Cell<Ctx> = Rc::into_raw(ctx.clone());
    let names = CONTEXT_FIELDS
        .iter()
        .map(|n| lua.create_string(n))
        .collect::<mlua::Result<Vec<_>>>()?;
    // SAFETY: the closure reads only `cell` (never freed) and its upvalues.
    unsafe {
        convert::c_closure(lua, get_context, 1 + names.len() as c_int, |raw| {
            ffi::lua_pushlightuserdata(raw.state(), cell as *mut std::ffi::c_void);
            for n in &names {
                n.push_into_stack(raw)?;
            }
            Ok(())
        })
    }
}

/// Create the `flu` module table, make it `require`-able and a global.
pub fn register(lua: &Lua, host: Rc<Host>) -> mlua::Result<Table> {
    let flu = lua.create_table()?;

    let errnos = lua.create_table()?;
    let mut made: Vec<(i32, mlua::AnyUserData)> = Vec::new();
    for &(name, code) in errno::ERRNOS {
        let ud = match made.iter().find(|(c, _)| *c == code) {
            Some((_, ud)) => ud.clone(),
            None => {
                let ud = lua.create_userdata(ErrnoValue(code))?;
                made.push((code, ud.clone()));
                ud
            }
        };
        errnos.raw_set(name, ud)?;
    }
    flu.raw_set("errno", errnos)?;
    flu.raw_set("FUSE_USE_VERSION", 26)?;

    flu.raw_set("get_context", get_context_function(lua, &host.ctx)?)?;

    flu.raw_set(
        "log",
        lua.create_function(|_, (msg, level): (mlua::LuaString, Option<String>)| {
            let msg = msg.to_string_lossy();
            match level.as_deref() {
                Some("warning") | Some("warn") => crate::log::warn(&msg),
                Some("info") => crate::log::info(&msg),
                _ => crate::log::error(&msg),
            }
            Ok(())
        })?,
    )?;

    flu.raw_set(
        "sleep",
        lua.create_async_function(|_, seconds: f64| async move {
            if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
                return Err(mlua::Error::runtime(
                    "flu.sleep: seconds must be a number from 0 to 1e9",
                ));
            }
            crate::runtime::sleep(std::time::Duration::from_secs_f64(seconds)).await
        })?,
    )?;

    // SAFETY: `now` only pushes two integers (a C function has room for them).
    flu.raw_set("now", unsafe { lua.create_c_function(now) }?)?;

    // The layout checks `clone_table` relies on (once per process).
    let _ = crate::luaraw::Cloner::new(lua);
    // SAFETY: `clone_table` reads only its argument.
    flu.raw_set("clone", unsafe { lua.create_c_function(clone_table) }?)?;
    // SAFETY: `split_path` reads only its argument and pushes at most two values.
    flu.raw_set("split", unsafe { lua.create_c_function(split_path) }?)?;

    flu.raw_set("mode", mode_function(lua)?)?;

    flu.raw_set("modeset", {
        let names = convert::Names::for_mode_sets(lua)?;
        lua.create_function(move |lua, m: u32| names.mode_set(lua, m))?
    })?;

    let h = host.clone();
    flu.raw_set(
        "main",
        lua.create_function(move |lua, (argv, fs): (Table, Value)| {
            let fs = match fs {
                Value::Table(t) => t,
                other => {
                    return Err(mlua::Error::runtime(format!(
                        "flu.main: bad argument #2 (a table of operations expected, got {})",
                        other.type_name()
                    )));
                }
            };
            if h.main_result.borrow().is_some() {
                return Ok((None, Some("flu.main was already called".to_string())));
            }
            let mut args = Vec::new();
            for v in argv.sequence_values::<Value>() {
                let v = v?;
                match lua.coerce_string(v)? {
                    Some(s) => args.push(s.to_string_lossy()),
                    None => return Err(mlua::Error::runtime("flu.main: argv must hold strings")),
                }
            }
            let r = (h.main)(lua, args, fs);
            *h.main_result.borrow_mut() = Some(r.clone());
            Ok(match r {
                Ok(()) => (Some(true), None),
                Err(msg) => (None, Some(msg)),
            })
        })?,
    )?;

    // require "flu" returns this table; it is also a global, as scripts run by Flu expect.
    let loaded: Table = lua.globals().get::<Table>("package")?.get("loaded")?;
    loaded.raw_set("flu", flu.clone())?;
    lua.globals().raw_set("flu", flu.clone())?;
    Ok(flu)
}

/// `flu.errno.NAME` for errno `code` (the very value scripts compare with), or an equal one
/// when the flu module is not loaded.
pub fn errno_value(lua: &Lua, code: i32) -> mlua::Result<Value> {
    let from_flu = || -> mlua::Result<Value> {
        let loaded: Table = lua.named_registry_value("_LOADED")?;
        let flu: Table = loaded.raw_get("flu")?;
        let errno: Table = flu.raw_get("errno")?;
        errno.raw_get(errno::name_of(code).unwrap_or("EIO"))
    };
    match from_flu() {
        Ok(v @ Value::UserData(_)) => Ok(v),
        _ => Ok(Value::UserData(lua.create_userdata(ErrnoValue(code))?)),
    }
}

/// The `err` of a failed module call (gett, http): `{status=, message=, errno=}`, with the
/// module's metatable (registered under `metatable_key`) when it has one.
pub fn error_table(
    lua: &Lua,
    status: Option<u16>,
    message: &str,
    code: i32,
    metatable_key: &str,
) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    if let Some(s) = status {
        t.raw_set("status", s)?;
    }
    t.raw_set("message", message)?;
    t.raw_set("errno", errno_value(lua, code)?)?;
    if let Ok(mt) = lua.named_registry_value::<Table>(metatable_key) {
        t.set_metatable(Some(mt))?;
    }
    Ok(t)
}

/// Register the metatable of a module's error tables under `metatable_key`: `tostring(err)`
/// gives "MODULE: STATUS: MESSAGE" (or "MODULE: MESSAGE" without a status).
pub fn register_error_metatable(
    lua: &Lua,
    module: &'static str,
    metatable_key: &str,
) -> mlua::Result<()> {
    let mt = lua.create_table()?;
    mt.raw_set(
        "__tostring",
        lua.create_function(move |lua, e: Table| {
            let status: Option<i64> = e.raw_get("status")?;
            let message: Option<mlua::LuaString> = e.raw_get("message")?;
            let message = message.map(|m| m.to_string_lossy()).unwrap_or_default();
            let text = match status {
                Some(s) => format!("{module}: {s}: {message}"),
                None => format!("{module}: {message}"),
            };
            lua.create_string(text)
        })?,
    )?;
    lua.set_named_registry_value(metatable_key, mt)
}

/// A fresh shared request context.
pub fn new_ctx() -> CurrentCtx {
    Rc::new(Cell::new(Ctx::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `src` (its `assert`s) with `flu` loaded; it returns true at its end.
    fn lua_asserts(src: &str) {
        let ok: bool = lua_with_flu().load(src).eval().unwrap();
        assert!(ok);
    }

    fn lua_with_flu() -> Lua {
        let lua = Lua::new();
        let host = Rc::new(Host {
            main: Rc::new(|_, args, _| {
                if args.len() > 1 {
                    Ok(())
                } else {
                    Err("no mountpoint".into())
                }
            }),
            main_result: RefCell::new(None),
            ctx: new_ctx(),
        });
        register(&lua, host).unwrap();
        lua
    }

    /// `now` and `get_context` are C functions: same answers and errors as Lua functions.
    #[test]
    fn now_and_get_context() {
        let lua = Lua::new();
        let ctx = new_ctx();
        ctx.set(Ctx {
            uid: 1000,
            gid: 100,
            pid: 4242,
            umask: Some(0o027),
            unique: 0,
        });
        let host = Rc::new(Host {
            main: Rc::new(|_, _, _| Ok(())),
            main_result: RefCell::new(None),
            ctx,
        });
        register(&lua, host).unwrap();
        let before = Timespec::now().sec;
        let (sec, nsec): (i64, i64) = lua.load("return flu.now()").eval().unwrap();
        assert!(sec >= before && sec <= before + 5 && (0..1_000_000_000).contains(&nsec));
        let got: (u32, u32, u32, u32, bool) = lua
            .load(
                r#"
                local t = {keep = true}
                local c = flu.get_context(t)
                local n = flu.get_context()
                assert(n ~= t and n.uid == c.uid)
                return c.uid, c.gid, c.pid, c.umask, c == t and c.keep
            "#,
            )
            .eval()
            .unwrap();
        assert_eq!(got, (1000, 100, 4242, 0o027, true));
        let err = lua
            .load("return flu.get_context(5)")
            .exec()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad argument #1 to 'get_context' (table expected, got number)"),
            "{err}"
        );
    }

    #[test]
    fn split_cuts_at_the_last_slash() {
        lua_asserts(
            r##"
            local split = flu.split
            local function is(p, d, n)
                local a, b = split(p)
                assert(a == d and b == n, ("%q: %q %q"):format(p, tostring(a), tostring(b)))
            end
            is("/a/b/c", "/a/b", "c")
            is("/b", "", "b")
            is("/", "", "")
            is("/a/", "/a", "")
            is("/d\0x/n\0y", "/d\0x", "n\0y")
            is(("/x"):rep(300), ("/x"):rep(299), "x")
            assert(split("name") == nil and select("#", split("name")) == 1)
            assert(not pcall(split, {}))
            return true
            "##,
        );
    }

    #[test]
    fn clone_copies_keys_values_and_metatable() {
        lua_asserts(
            r#"
            local clone = flu.clone
            local t = { a = 1, b = "x", c = {} }
            local c = clone(t)
            assert(c ~= t and c.a == 1 and c.b == "x" and c.c == t.c)
            c.a, c.d = 2, 4
            assert(t.a == 1 and t.d == nil)
            local n = 0
            for _ in pairs(c) do n = n + 1 end
            assert(n == 4)
            local mixed = clone({ 10, 20, x = 30 })
            assert(mixed[1] == 10 and mixed[2] == 20 and mixed.x == 30 and #mixed == 2)
            local mt = { __index = function() return 7 end }
            local m = clone(setmetatable({ y = 1 }, mt))
            assert(getmetatable(m) == mt and m.y == 1 and m.other == 7)
            assert(next(clone({})) == nil)
            local ok, err = pcall(clone, "no table")
            return not ok and err:find("table expected") ~= nil
            "#,
        );
    }

    #[test]
    fn errno_values() {
        lua_asserts(
            r#"
                local flu = require "flu"
                local e = flu.errno
                assert(e.ENOENT == e.ENOENT and e.ENOENT ~= e.EIO)
                assert(e.ENOATTR == e.ENODATA)
                assert(tostring(e.ENOENT) == "No such file or directory")
                assert(e.ENOTEMPTY.code == 39 and e.ELOOP.name == "ELOOP")
                assert(e.ETIMEDOUT and e.EOPNOTSUPP and e.ENAMETOOLONG)
                assert(type(e.EACCES) == "userdata")
                return true
            "#,
        );
    }

    #[test]
    fn modes_and_time() {
        let lua = lua_with_flu();
        let (m, dir, s): (u32, bool, i64) = lua
            .load("return flu.mode{reg=true, rusr=true, wusr=true}, flu.modeset(16877).dir, (flu.now())")
            .eval()
            .unwrap();
        assert_eq!(m, 0o100600);
        assert!(dir);
        assert!(s > 1_600_000_000);
        assert!(lua.load("flu.mode('nonsense')").exec().is_err());
    }

    /// `flu.mode` sums sets of known names itself and leaves everything else to the general
    /// conversion: both give the same modes and errors.
    #[test]
    fn mode_of_sets_strings_and_numbers() {
        lua_asserts(
            r#"
                for _, m in ipairs{0x81a4, 0x41ed, 0xa1ff, 0x2180, 0x6000, 0x1000, 0xc000, 0x8fff, 0} do
                    assert(flu.mode(flu.modeset(m)) == m, m)
                end
                assert(flu.mode{reg = true, rusr = false, wusr = 1, [1] = true, [true] = 1} == 0x8080)
                assert(flu.mode{} == 0)
                assert(flu.mode(0x81a4) == 0x81a4 and flu.mode('file') == 0x81b0)
                local ok, e = pcall(flu.mode, {reg = true, rwx = true})
                assert(not ok and tostring(e):find('unknown flag "rwx"', 1, true), e)
                ok, e = pcall(flu.mode, {["a long key that is no short string at all, not one"] = true})
                assert(not ok and tostring(e):find('unknown flag', 1, true), e)
                assert(flu.mode(setmetatable({dir = true}, {})) == 0x4000)
                assert(flu.mode({reg = true}, 2) == 0x8000)
                return true
            "#,
        );
    }

    #[test]
    fn get_context_fills_given_table() {
        let lua = lua_with_flu();
        let same: bool = lua
            .load(
                "local t = {} ; return flu.get_context(t) == t and t.uid ~= nil and t.umask ~= nil",
            )
            .eval()
            .unwrap();
        assert!(same);
    }

    #[test]
    fn main_reports_its_outcome() {
        let lua = lua_with_flu();
        let (ok, err): (Option<bool>, Option<String>) =
            lua.load("return flu.main({'x'}, {})").eval().unwrap();
        assert_eq!((ok, err.as_deref()), (None, Some("no mountpoint")));
        let (_, err): (Option<bool>, Option<String>) =
            lua.load("return flu.main({'x', '/m'}, {})").eval().unwrap();
        assert_eq!(err.as_deref(), Some("flu.main was already called"));
        assert!(lua.load("flu.main({'x'}, 3)").exec().is_err());
    }
}
