//! Raw reads of Lua tables through Lua 5.4's own table lookups (`luaH_getshortstr`,
//! `luaH_getint`), for the hot path that reads stat tables: a field costs one hash probe
//! instead of the half dozen C API calls (push the key, `lua_rawget`, check, convert, pop)
//! that made reading a stat table the largest single cost of a getattr.
//!
//! These are internal functions of the vendored Lua (linked into the binary; `LUAI_FUNC`
//! symbols have internal visibility, which a static link resolves). What this module relies on
//! beyond their signatures is Lua 5.4's value layout: a `TValue` is an 8-byte value followed by
//! its type tag, and a `Table` holds its metatable pointer at byte 40. `RawTables::new` checks
//! all of it against the C API on tables it builds, and gives nothing when any check fails:
//! callers then decode every stat table with `Stat::from_lua`, the general (slower) way.
//! Reads allocate nothing and run no Lua code, so no collection can happen while a pointer
//! is held.

use std::ffi::c_void;

use mlua::{Lua, Table};

#[repr(C)]
struct TValue {
    value: u64,
    tt: u8,
}

unsafe extern "C" {
    fn luaH_getshortstr(t: *mut c_void, key: *mut c_void) -> *const TValue;
    fn luaH_getint(t: *mut c_void, key: i64) -> *const TValue;
}

/// `LUA_VNUMINT`: makevariant(LUA_TNUMBER, 0).
const TAG_INT: u8 = 3;
/// `LUA_VFALSE`: makevariant(LUA_TBOOLEAN, 0).
const TAG_FALSE: u8 = 1;
/// `ctb(LUA_VSHRSTR)`: makevariant(LUA_TSTRING, 0) with the collectable bit.
const TAG_SHORT_STRING: u8 = 4 | (1 << 6);
/// `ctb(LUA_VTABLE)`: makevariant(LUA_TTABLE, 0) with the collectable bit.
const TAG_TABLE: u8 = 5 | (1 << 6);
/// Byte offset of `Table::metatable` (after the GC header, flags, lsizenode, alimit, array,
/// node and lastfree).
const METATABLE_AT: usize = 40;

/// A table's value at a key, as the stat reader needs it.
#[derive(Debug, PartialEq, Eq)]
pub enum Field {
    Absent,
    Int(i64),
    Table(*mut c_void),
    Other,
}

fn field(v: *const TValue) -> Field {
    // SAFETY: Lua's lookups return a pointer into the table, or to its static absent key.
    let v = unsafe { &*v };
    match v.tt {
        tt if tt & 0x0f == 0 => Field::Absent, // nil, empty slot, absent key
        TAG_INT => Field::Int(v.value as i64),
        TAG_TABLE => Field::Table(v.value as usize as *mut c_void),
        _ => Field::Other,
    }
}

/// Short-string keys for raw reads (see `RawTables::new`).
pub struct RawTables {
    /// The array of the key strings, which keeps their `TString`s where they are (Lua does
    /// not move objects) for as long as this lives.
    _anchor: Table,
    keys: Vec<*mut c_void>,
}

impl RawTables {
    /// Keys for raw reads: the strings of the sequence `keys` (key `k` of `get` is
    /// `keys[k + 1]`), each a short string (at most 40 bytes), at least three of them; `None`
    /// otherwise, or when this Lua does not pass the layout checks.
    pub fn new(lua: &Lua, keys: &Table) -> Option<RawTables> {
        let n = keys.raw_len();
        let at = RawTables::ptr(keys);
        // The strings' own objects (`TString`), as the array holds them.
        let ptrs = (1..=n as i64)
            .map(|i| {
                // SAFETY: `keys` is alive and nothing runs in between.
                let v = unsafe { &*luaH_getint(at, i) };
                (v.tt == TAG_SHORT_STRING).then_some(v.value as usize as *mut c_void)
            })
            .collect::<Option<Vec<_>>>()?;
        if ptrs.len() < 3 {
            return None;
        }
        let raw = RawTables {
            _anchor: keys.clone(),
            keys: ptrs,
        };
        raw.layout_matches(lua, keys).then_some(raw)
    }

    /// The table pointer of `t`.
    pub fn ptr(t: &Table) -> *mut c_void {
        t.to_pointer() as *mut c_void
    }

    /// `t[names[k]]`, raw.
    ///
    /// # Safety
    /// `t` is a live table of this Lua state (from `ptr` or a `Field::Table` read just now,
    /// with nothing run or allocated in between).
    pub unsafe fn get(&self, t: *mut c_void, k: usize) -> Field {
        match self.keys.get(k) {
            Some(&key) => field(unsafe { luaH_getshortstr(t, key) }),
            None => Field::Other,
        }
    }

    /// Whether `t[names[k]]`, raw, is true in Lua's sense (neither nil nor false).
    ///
    /// # Safety
    /// As for `get`.
    pub unsafe fn truthy(&self, t: *mut c_void, k: usize) -> bool {
        match self.keys.get(k) {
            // SAFETY: as for `get`.
            Some(&key) => {
                let v = unsafe { &*luaH_getshortstr(t, key) };
                v.tt & 0x0f != 0 && v.tt != TAG_FALSE
            }
            None => false,
        }
    }

    /// `t[i]`, raw.
    ///
    /// # Safety
    /// As for `get`.
    pub unsafe fn geti(&self, t: *mut c_void, i: i64) -> Field {
        field(unsafe { luaH_getint(t, i) })
    }

    /// Whether `t` has a metatable.
    ///
    /// # Safety
    /// As for `get`.
    pub unsafe fn has_metatable(&self, t: *mut c_void) -> bool {
        unsafe {
            !(t as *const u8)
                .add(METATABLE_AT)
                .cast::<*const c_void>()
                .read()
                .is_null()
        }
    }

    /// Check every assumption on tables read both ways (keys 1 to 3 of `keys` set, the
    /// others absent).
    fn layout_matches(&self, lua: &Lua, keys: &Table) -> bool {
        let check = || -> mlua::Result<bool> {
            let key = |i: usize| keys.raw_get::<mlua::LuaString>(i);
            let inner = lua.create_table()?;
            let t = lua.create_table()?;
            let mt = lua.create_table()?;
            let with_mt = lua.create_table()?;
            with_mt.set_metatable(Some(mt))?;
            t.raw_set(key(1)?, -123_456_789_012_i64)?;
            t.raw_set(key(2)?, inner.clone())?;
            t.raw_set(key(3)?, 1.5)?;
            t.raw_set(7, 42)?;
            let flags = lua.create_table()?;
            flags.raw_set(key(1)?, false)?;
            flags.raw_set(key(2)?, true)?;
            flags.raw_set(key(3)?, 0)?;
            let f = RawTables::ptr(&flags);
            let p = RawTables::ptr(&t);
            // SAFETY: tables alive (held here); nothing runs in between.
            let ok = unsafe {
                self.get(p, 0) == Field::Int(-123_456_789_012)
                    && self.get(p, 1) == Field::Table(RawTables::ptr(&inner))
                    && self.get(p, 2) == Field::Other
                    && (self.keys.len() <= 3 || self.get(p, 3) == Field::Absent)
                    && self.geti(p, 7) == Field::Int(42)
                    && self.geti(p, 8) == Field::Absent
                    && !self.truthy(f, 0)
                    && self.truthy(f, 1)
                    && self.truthy(f, 2)
                    && (self.keys.len() <= 3 || !self.truthy(f, 3))
                    && !self.has_metatable(p)
                    && self.has_metatable(RawTables::ptr(&with_mt))
            };
            Ok(ok)
        };
        check().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_reads_agree_with_the_c_api() {
        let lua = Lua::new();
        let keys = lua
            .create_sequence_from(["mode", "access", "size", "sec"])
            .unwrap();
        let raw = RawTables::new(&lua, &keys).expect("this Lua passes the layout checks");
        let t: Table = lua
            .load("return {mode = 33188, access = {sec = 5}, size = 2.5, [3] = 'x', [4] = -7}")
            .eval()
            .unwrap();
        let p = RawTables::ptr(&t);
        unsafe {
            assert_eq!(raw.get(p, 0), Field::Int(33188));
            let Field::Table(a) = raw.get(p, 1) else {
                panic!("access is a table")
            };
            assert_eq!(raw.get(a, 3), Field::Int(5));
            assert_eq!(raw.get(a, 0), Field::Absent);
            assert_eq!(raw.get(p, 2), Field::Other);
            assert_eq!(raw.get(p, 3), Field::Absent);
            assert_eq!(raw.geti(p, 3), Field::Other);
            assert_eq!(raw.geti(p, 4), Field::Int(-7));
            assert!(!raw.has_metatable(p));
        }
        let m: Table = lua.load("return setmetatable({}, {})").eval().unwrap();
        assert!(unsafe { raw.has_metatable(RawTables::ptr(&m)) });
    }

    #[test]
    fn long_keys_are_refused() {
        let lua = Lua::new();
        let keys = lua
            .create_sequence_from([
                "mode",
                "size",
                "a-key-longer-than-forty-bytes-is-a-long-string",
            ])
            .unwrap();
        assert!(RawTables::new(&lua, &keys).is_none());
    }
}
