//! The `gett` Lua module: a client of the Ge.tt REST API (version 1) on reqwest + serde_json.
//! (Being written; see issue 3.)

use mlua::Lua;

/// Make `require "gett"` return the module.
pub fn register(_lua: &Lua) -> mlua::Result<()> {
    Ok(())
}
