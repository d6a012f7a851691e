//! A script's `__gc` finalizers, kept from hanging the daemon. Lua runs a finalizer with debug
//! hooks off on the thread that happens to be collecting (a request's coroutine, or the main
//! thread collecting while the mount is idle), so `--op-timeout`'s hook never reaches one that
//! does not return, and the daemon would stay in it for good. flufs replaces `setmetatable`:
//! a metatable given to it with a `__gc` function gets, in its place, a guard that runs that
//! function in a coroutine of its own, with a count hook that stops it once it has run longer
//! than `--op-timeout` (hooks are per coroutine, and a new one has them on). A finalizer that
//! is stopped or raises an error is logged with its traceback (Lua itself would only warn,
//! with warnings off by default); the collection goes on.
//!
//! What it does not cover: `debug.setmetatable`, and a `__gc` put into a metatable after
//! `setmetatable` was called with it (Lua marks an object for finalization only when its
//! metatable has a `__gc` field at `setmetatable`; a placeholder set then and replaced later
//! runs unguarded). `getmetatable(t).__gc` is the guard, not the script's function.

use std::time::Duration;

use mlua::{Lua, Value};

const GUARD: &str = r#"
local limit, log = ...
if not (debug and debug.sethook and os and os.clock) then return end
local setmetatable, rawget, rawset, type, tostring = setmetatable, rawget, rawset, type, tostring
local create, resume = coroutine.create, coroutine.resume
local sethook, traceback, clock, format = debug.sethook, debug.traceback, os.clock, string.format
local guards = setmetatable({}, { __mode = "k" }) -- guard -> true
local guard_of = setmetatable({}, { __mode = "k" }) -- finalizer -> its guard
local STOP = {}

local function guard(f)
  local g = guard_of[f]
  if g then return g end
  g = function(o)
    local co = create(f)
    local deadline = clock() + limit
    sethook(co, function()
      if clock() > deadline then error(STOP) end
    end, "", 10000)
    local ok, err = resume(co, o)
    if ok then return end
    if err == STOP then
      log(format("a __gc finalizer was stopped: it ran longer than --op-timeout (%gs)\n%s",
        limit, traceback(co)))
    else
      log("a __gc finalizer failed: " .. traceback(co, tostring(err)))
    end
  end
  guards[g] = true
  guard_of[f] = g
  return g
end

_G.setmetatable = function(t, mt)
  if type(mt) == "table" then
    local f = rawget(mt, "__gc")
    if type(f) == "function" and not guards[f] then rawset(mt, "__gc", guard(f)) end
  end
  return setmetatable(t, mt)
end
"#;

/// Guard the finalizers of tables the script makes from now on, with `limit` (`--op-timeout`)
/// as each one's budget; with no limit, finalizers run as Lua runs them.
pub fn guard(lua: &Lua, limit: Option<Duration>) -> mlua::Result<()> {
    let Some(limit) = limit else { return Ok(()) };
    let log = lua.create_function(|_, msg: mlua::LuaString| {
        crate::log::error(&msg.to_string_lossy());
        Ok(())
    })?;
    lua.load(GUARD)
        .set_name("=flufs.finalizers")
        .call::<Value>((limit.as_secs_f64(), log))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lua_with_guard(secs: f64) -> Lua {
        // As scripts get it: with the debug library.
        let lua = unsafe { Lua::unsafe_new_with(mlua::StdLib::ALL, mlua::LuaOptions::default()) };
        guard(&lua, Some(Duration::from_secs_f64(secs))).unwrap();
        lua
    }

    #[test]
    fn a_runaway_finalizer_is_stopped_and_collection_goes_on() {
        let lua = lua_with_guard(0.05);
        let ran: bool = lua
            .load(
                r#"
                local after = false
                setmetatable({}, { __gc = function() while true do end end })
                setmetatable({}, { __gc = function() after = true end })
                collectgarbage()
                collectgarbage()
                return after
                "#,
            )
            .eval()
            .unwrap();
        assert!(ran, "the other finalizer ran too");
    }

    #[test]
    fn finalizers_get_their_object_and_one_guard_per_function() {
        let lua = lua_with_guard(1.0);
        let (seen, same): (String, bool) = lua
            .load(
                r#"
                local seen = {}
                local function fin(o) seen[#seen + 1] = o.name end
                local mt1, mt2 = { __gc = fin }, { __gc = fin }
                setmetatable({ name = "a" }, mt1)
                setmetatable({ name = "b" }, mt2)
                setmetatable({ name = "c" }, mt1) -- already guarded: not wrapped twice
                collectgarbage()
                table.sort(seen)
                return table.concat(seen, ","), mt1.__gc == mt2.__gc and mt1.__gc ~= fin
                "#,
            )
            .eval()
            .unwrap();
        assert_eq!(seen, "a,b,c");
        assert!(same);
    }

    #[test]
    fn no_limit_leaves_setmetatable_alone() {
        let lua = unsafe { Lua::unsafe_new_with(mlua::StdLib::ALL, mlua::LuaOptions::default()) };
        guard(&lua, None).unwrap();
        let same: bool = lua
            .load("local f = function() end; local mt = { __gc = f }; setmetatable({}, mt); return mt.__gc == f")
            .eval()
            .unwrap();
        assert!(same);
    }
}
