//! Raw access to Lua tables through Lua 5.4's own internals, for the hot paths: reads of
//! stat tables through its table lookups (`luaH_getshortstr`, `luaH_getint`; `RawTables`), and
//! the walk of a table of directory entries with its values copied into an array (`Walker`).
//! A field costs one hash probe instead of the half dozen C API calls (push the key,
//! `lua_rawget`, check, convert, pop) that made reading a stat table the largest single cost
//! of a getattr; an entry of a listing costs a few loads instead of `lua_next` (a hash lookup
//! of the previous key per step) and `lua_rawseti`.
//!
//! These are internal functions of the vendored Lua (linked into the binary; `LUAI_FUNC`
//! symbols have internal visibility, which a static link resolves). What this module relies on
//! beyond their signatures is Lua 5.4's object layout: a `TValue` is an 8-byte value followed
//! by its type tag, a `Table` holds its sizes, array, node and metatable pointers at fixed
//! places, a hash `Node` is its value then its key, a `TString` its length then its bytes.
//! `RawTables::new` and `Walker::new` check all of it against the C API on tables they build,
//! and give nothing when any check fails: callers then go the general (slower) way. The GC
//! colour bits (`lgc.h`) and the `marked` byte they are in cannot be checked that way; they
//! are those of the Lua 5.4.9 that Cargo.lock pins (lua-src 551).
//! Reads, walks and fills allocate nothing and run no Lua code, so no collection step can
//! happen while a pointer is held (`Walker::reserve`, which allocates, comes before); a fill
//! takes Lua's write barrier itself (`ArrayFill`).

use std::ffi::c_void;

use mlua::{Lua, Table, ffi};

use crate::prefetch::prefetch;

#[repr(C)]
struct TValue {
    value: u64,
    tt: u8,
}

unsafe extern "C" {
    fn luaH_getshortstr(t: *mut c_void, key: *mut c_void) -> *const TValue;
    fn luaH_getint(t: *mut c_void, key: i64) -> *const TValue;
    fn luaH_realasize(t: *const c_void) -> u32;
    fn luaH_resizearray(state: *mut ffi::lua_State, t: *mut c_void, nasize: u32);
    fn luaC_barrierback_(state: *mut ffi::lua_State, o: *mut c_void);
}

/// `LUA_VNUMINT`: makevariant(LUA_TNUMBER, 0).
const TAG_INT: u8 = 3;
/// `LUA_VFALSE`: makevariant(LUA_TBOOLEAN, 0).
const TAG_FALSE: u8 = 1;
/// `ctb(LUA_VSHRSTR)`: makevariant(LUA_TSTRING, 0) with the collectable bit.
const TAG_SHORT_STRING: u8 = 4 | (1 << 6);
/// `ctb(LUA_VLNGSTR)`: makevariant(LUA_TSTRING, 1) with the collectable bit.
const TAG_LONG_STRING: u8 = 4 | (1 << 4) | (1 << 6);
/// `BIT_ISCOLLECTABLE`.
const COLLECTABLE: u8 = 1 << 6;
/// `ctb(LUA_VTABLE)`: makevariant(LUA_TTABLE, 0) with the collectable bit.
const TAG_TABLE: u8 = 5 | (1 << 6);
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

    /// Ask the CPU to fetch table `t`'s head (both cache lines it may straddle), which `get`
    /// and `prefetch_slots` read first. Changes no result; `t` need not be valid.
    pub fn prefetch_head(t: *const c_void) {
        let t = t as *const u8;
        prefetch(t);
        prefetch(t.wrapping_add(std::mem::size_of::<TableHead>() - 1));
    }

    /// Ask the CPU to fetch what `get(t, k)` reads for each `k` of `ks`: the slot of the
    /// key's main position (where it is, unless it collided). `t`'s head is read here, so it
    /// should have been asked for earlier (`prefetch_head`). Changes no result.
    ///
    /// # Safety
    /// As for `get`.
    pub unsafe fn prefetch_slots(&self, t: *const c_void, ks: &[usize]) {
        unsafe {
            let h = &*(t as *const TableHead);
            let mask = (1usize << h.lsizenode) - 1;
            for &k in ks {
                if let Some(&key) = self.keys.get(k) {
                    let hash = (*(key as *const StringHead)).hash as usize;
                    prefetch(h.node.add(hash & mask) as *const c_void);
                }
            }
        }
    }

    /// Whether `t` has a metatable.
    ///
    /// # Safety
    /// As for `get`.
    pub unsafe fn has_metatable(&self, t: *mut c_void) -> bool {
        unsafe { !(*(t as *const TableHead)).metatable.is_null() }
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

/// The head of a `Table` (`lobject.h`), as far as a walk reads it.
#[repr(C)]
struct TableHead {
    next: *mut c_void,
    tt: u8,
    marked: u8,
    flags: u8,
    lsizenode: u8,
    alimit: u32,
    array: *mut TValue,
    node: *const Node,
    lastfree: *const Node,
    metatable: *const c_void,
}

/// A slot of a table's hash part (`Node`): its value, then its key.
#[repr(C)]
struct Node {
    value: u64,
    tt: u8,
    key_tt: u8,
    next: i32,
    key: u64,
}

/// The head of a `TString`; its bytes follow at `STRING_BYTES_AT`.
#[repr(C)]
struct StringHead {
    next: *mut c_void,
    tt: u8,
    marked: u8,
    extra: u8,
    /// The length of a short string; 0xff for a long one, whose length is `lnglen`.
    shrlen: u8,
    hash: u32,
    lnglen: usize,
}

const STRING_BYTES_AT: usize = std::mem::size_of::<StringHead>();

/// The black bit of an object's `marked` byte (`lgc.h`: BLACKBIT).
const BLACK_BIT: u8 = 1 << 5;

/// The `marked` byte of collectable object `o` (every `GCObject` starts with `next`, `tt`,
/// `marked`).
///
/// # Safety
/// `o` is a live collectable object.
unsafe fn marked(o: *const c_void) -> u8 {
    unsafe { (o as *const u8).add(9).read() }
}

/// How many slots ahead `Walker::each` asks for the keys' strings.
const WALK_AHEAD: usize = 16;

/// A value as a table holds it, copied out of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawValue {
    value: u64,
    tt: u8,
}

impl RawValue {
    pub fn is_table(self) -> bool {
        self.tt == TAG_TABLE
    }
}

/// A key met by a walk.
#[derive(Debug, PartialEq, Eq)]
pub enum Key<'a> {
    /// A string key's bytes (valid while the table keeps the key).
    Name(&'a [u8]),
    /// Any other key, by its Lua type (`LUA_TNUMBER`, ...).
    Other(std::ffi::c_int),
}

/// Walks tables and fills arrays the way `lua_next` and `lua_rawseti` do, without the C API
/// (see `Walker::new`).
#[derive(Clone, Copy, Debug)]
pub struct Walker(());

impl Walker {
    /// A walker, when this Lua passes the layout checks (a walk of tables built here gives
    /// what `lua_next` gives, and filled arrays read back through the C API).
    pub fn new(lua: &Lua) -> Option<Walker> {
        let w = Walker(());
        w.layout_matches(lua).then_some(w)
    }

    /// Call `f` with every entry of table `t` (array part, then hash part: `next`'s order)
    /// until it returns false.
    ///
    /// # Safety
    /// `t` is a live table of this Lua state, and `f` runs no Lua code and changes no table.
    pub unsafe fn each(self, t: *const c_void, mut f: impl FnMut(Key, RawValue) -> bool) {
        // SAFETY: as the caller promises; a string key is a live `TString` of the table.
        unsafe {
            slots(t, true, |key_tt, key, v| {
                let key = match key_tt {
                    TAG_SHORT_STRING | TAG_LONG_STRING => {
                        Key::Name(string_bytes(key as usize as *const c_void))
                    }
                    tt => Key::Other(std::ffi::c_int::from(tt & 0x0f)),
                };
                f(key, v)
            })
        }
    }

    /// How many entries table `t` has, all with string keys; `Err` with the Lua type of
    /// the first other key. Reads the table's own arrays only (not the keys' strings).
    ///
    /// # Safety
    /// `t` is a live table of this Lua state.
    pub unsafe fn count_named(self, t: *const c_void) -> Result<usize, std::ffi::c_int> {
        let mut n = Ok(0);
        // SAFETY: as the caller promises.
        unsafe {
            slots(t, false, |key_tt, _, _| match key_tt {
                TAG_SHORT_STRING | TAG_LONG_STRING => {
                    n = n.map(|n| n + 1);
                    true
                }
                tt => {
                    n = Err(std::ffi::c_int::from(tt & 0x0f));
                    false
                }
            })
        };
        n
    }

    /// Make table `t`'s array part hold at least `n` items (keeping its contents).
    ///
    /// # Safety
    /// `t` is a live table of `state`'s Lua state. Lua raises its memory error by a long jump
    /// out of this call: call it where nothing of Rust's needs dropping.
    pub unsafe fn reserve(self, state: *mut ffi::lua_State, t: *mut c_void, n: usize) {
        unsafe {
            if (luaH_realasize(t) as usize) < n
                && let Ok(n) = u32::try_from(n)
            {
                luaH_resizearray(state, t, n);
            }
        }
    }

    /// Raw writes into table `t`'s array part, `lua_rawseti`'s (see `ArrayFill`).
    ///
    /// # Safety
    /// `t` is a live table of `state`'s Lua state, and no Lua code runs and nothing is
    /// allocated in that state while the fill lives.
    pub unsafe fn fill(self, state: *mut ffi::lua_State, t: *mut c_void) -> ArrayFill {
        ArrayFill {
            state,
            t,
            size: unsafe { luaH_realasize(t) } as usize,
            collectable: false,
        }
    }

    fn layout_matches(self, lua: &Lua) -> bool {
        let check = || -> mlua::Result<bool> {
            let long = "a key of more than forty bytes, which Lua keeps as a long string";
            let t: Table = lua
                .load(format!(
                    "return {{ a = {{}}, bc = true, ['{long}'] = {{}}, [2.5] = 1, [{{}}] = 2, \
                     d = 'x', e = {{}} }}"
                ))
                .eval()?;
            let mut next = Vec::new();
            for pair in t.clone().pairs::<mlua::Value, mlua::Value>() {
                let (k, v) = pair?;
                let key = match &k {
                    mlua::Value::String(s) => Ok(s.as_bytes().to_vec()),
                    other => Err(match other {
                        mlua::Value::Number(_) => ffi::LUA_TNUMBER,
                        mlua::Value::Table(_) => ffi::LUA_TTABLE,
                        _ => -1,
                    }),
                };
                next.push((key, v.as_table().map(RawTables::ptr)));
            }
            let mut walked = Vec::new();
            let p = RawTables::ptr(&t);
            // SAFETY: `t` is alive (held here) and the closure runs no Lua code.
            unsafe {
                self.each(p, |k, v| {
                    let key = match k {
                        Key::Name(b) => Ok(b.to_vec()),
                        Key::Other(t) => Err(t),
                    };
                    let table = v.is_table().then_some(v.value as usize as *mut c_void);
                    walked.push((key, table));
                    true
                });
            }
            let values_match = next == walked;
            let array: Table = lua.load("return {10, 20, x = 1}").eval()?;
            let mut kinds = Vec::new();
            // SAFETY: as above.
            unsafe {
                self.each(RawTables::ptr(&array), |k, _| {
                    kinds.push(matches!(k, Key::Other(ffi::LUA_TNUMBER)));
                    true
                })
            };
            let array_matches = kinds == [true, true, false];
            // Fills: one within the array part, then three after growing it from nothing.
            let items = [
                lua.create_table()?,
                lua.create_table()?,
                lua.create_table()?,
            ];
            let source = lua.create_sequence_from(items.iter().cloned())?;
            let small = lua.create_table_with_capacity(1, 0)?;
            let grown = lua.create_table()?;
            let fills_match = lua.exec_raw_lua(|raw| {
                let state = raw.state();
                let mut values = Vec::new();
                // SAFETY: the tables are alive (held here); nothing runs while filling.
                unsafe {
                    self.each(RawTables::ptr(&source), |_, v| {
                        values.push(v);
                        true
                    });
                    self.reserve(state, RawTables::ptr(&grown), 3);
                    let mut f = self.fill(state, RawTables::ptr(&small));
                    let fits = f.set(1, values[0]) && !f.set(2, values[1]);
                    drop(f);
                    let mut g = self.fill(state, RawTables::ptr(&grown));
                    let all = values.iter().enumerate().all(|(i, v)| g.set(i + 1, *v));
                    fits && all
                }
            });
            let read_back = |t: &Table, i: i64| -> mlua::Result<*const c_void> {
                Ok(t.raw_get::<mlua::Value>(i)?.to_pointer())
            };
            let fills_match = fills_match
                && read_back(&small, 1)? == items[0].to_pointer()
                && small.raw_get::<mlua::Value>(2)?.is_nil()
                && (1..=3)
                    .all(|i| read_back(&grown, i).ok() == Some(items[i as usize - 1].to_pointer()))
                && grown.raw_len() == 3;
            Ok(values_match && array_matches && fills_match)
        };
        check().unwrap_or(false)
    }
}

/// Call `f` with the key's tag, the key's value and the value of every non-empty slot of table
/// `t` (array part, with an integer key's tag, then hash part: `next`'s order) until it
/// returns false. With `fetch_keys`, the strings of keys a few slots ahead are asked for
/// from memory meanwhile (`f` will read them).
///
/// # Safety
/// `t` is a live table, and `f` runs no Lua code and changes no table.
unsafe fn slots(t: *const c_void, fetch_keys: bool, mut f: impl FnMut(u8, u64, RawValue) -> bool) {
    unsafe {
        let h = &*(t as *const TableHead);
        let asize = luaH_realasize(t) as usize;
        for i in 0..asize {
            let v = &*h.array.add(i);
            if v.tt & 0x0f != 0
                && !f(
                    TAG_INT,
                    i as u64 + 1,
                    RawValue {
                        value: v.value,
                        tt: v.tt,
                    },
                )
            {
                return;
            }
        }
        // A table without a hash part points at Lua's one empty dummy node (size 1).
        let size = 1usize << h.lsizenode;
        for i in 0..size {
            // The keys' strings are spread over memory: those a few slots ahead are fetched
            // while this one is read.
            if fetch_keys && i + WALK_AHEAD < size {
                let ahead = &*h.node.add(i + WALK_AHEAD);
                if ahead.key_tt & COLLECTABLE != 0 {
                    // The head (length) and the first bytes, which may be on the next cache
                    // line.
                    let key = ahead.key as usize as *const u8;
                    prefetch(key);
                    prefetch(key.wrapping_add(STRING_BYTES_AT));
                }
            }
            let n = &*h.node.add(i);
            if n.tt & 0x0f == 0 {
                continue; // empty (a dead key has an empty value too)
            }
            let v = RawValue {
                value: n.value,
                tt: n.tt,
            };
            if !f(n.key_tt, n.key, v) {
                return;
            }
        }
    }
}

/// The bytes of string object `ts`.
///
/// # Safety
/// `ts` is a live `TString`; the bytes are used while it lives.
unsafe fn string_bytes<'a>(ts: *const c_void) -> &'a [u8] {
    unsafe {
        let h = &*(ts as *const StringHead);
        let len = if h.shrlen != 0xff {
            h.shrlen as usize
        } else {
            h.lnglen
        };
        std::slice::from_raw_parts((ts as *const u8).add(STRING_BYTES_AT), len)
    }
}

/// Raw writes into a table's array part (from `Walker::fill`). Lua's collector needs to hear
/// of a reference stored into a table it has already traversed (black) to an object it has
/// not marked (white), or it frees that object at the end of its cycle: `lua_rawseti` tells
/// it at each write (`luaC_barrierback`: the table goes back to gray, to be traversed again).
/// A fill tells it once, when it drops, which is the same as long as no collection step runs
/// in between (nothing runs or allocates in Lua while a fill lives). It does not look at the
/// objects' colours: that would read every object written (a cache miss each, in a listing),
/// and telling the collector of a black table that got no white object costs it only one
/// more traversal of that table.
pub struct ArrayFill {
    state: *mut ffi::lua_State,
    t: *mut c_void,
    size: usize,
    /// Whether a collectable object was written.
    collectable: bool,
}

impl ArrayFill {
    /// `t[i] = v` (from 1); false (nothing written) when `i` is beyond the array part.
    ///
    /// # Safety
    /// `v` was read just now from a live table of the same Lua state (a walk's value).
    pub unsafe fn set(&mut self, i: usize, v: RawValue) -> bool {
        if i == 0 || i > self.size {
            return false;
        }
        unsafe {
            let slot = &mut *(*(self.t as *const TableHead)).array.add(i - 1);
            slot.value = v.value;
            slot.tt = v.tt;
            self.collectable |= v.tt & COLLECTABLE != 0;
        }
        true
    }
}

impl Drop for ArrayFill {
    fn drop(&mut self) {
        // SAFETY: `t` is alive (see `Walker::fill`); this is `luaC_barrierback`'s test, but
        // for the colour of the objects written.
        unsafe {
            if self.collectable && marked(self.t) & BLACK_BIT != 0 {
                luaC_barrierback_(self.state, self.t);
            }
        }
    }
}

/// `LUA_TDEADKEY` (`lobject.h`): the key tag of a slot whose value was removed and whose key
/// the collector found unreachable.
const TAG_DEAD_KEY: u8 = 11;

/// Shallow copies of tables that have only a hash part, made by copying the slots: a table
/// built key by key costs Lua a `luaH_newkey` per key (its main position, collisions, ~180
/// instructions), a copy of one built once costs a `memcpy`. A key's slot depends only on its
/// hash and the size of the hash part, so the same slots at the same size are a valid table;
/// the chains between colliding slots are offsets, and the free-slot cursor is kept at the
/// same offset. See `Cloner::new` for what is checked.
#[derive(Clone, Copy, Debug)]
pub struct Cloner(());

/// Whether this Lua passed `Cloner`'s layout checks, once they ran.
static CLONER_CHECKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

impl Cloner {
    /// A cloner, when this Lua passes the layout checks (copies of tables built here read back
    /// the same through the C API, take new keys, and leave the original as it was). The
    /// layout is the vendored Lua's, the same for every state: the checks run once per process.
    pub fn new(lua: &Lua) -> Option<Cloner> {
        let ok = *CLONER_CHECKED.get_or_init(|| Cloner(()).layout_matches(lua));
        ok.then_some(Cloner(()))
    }

    /// The cloner `Cloner::new` gave, for code that has no `Lua` at hand (`flu.clone`'s C
    /// function); `None` also before any check ran.
    pub fn checked() -> Option<Cloner> {
        CLONER_CHECKED
            .get()
            .copied()
            .unwrap_or(false)
            .then_some(Cloner(()))
    }

    /// Push a copy of the table at stack index `idx` (its keys and values) when it has no
    /// array part, no metatable and no dead keys; otherwise push nothing and return false.
    ///
    /// # Safety
    /// `idx` is a valid index of a table in `state`, which has room for one more value; the
    /// copy's allocation may raise a memory error, so `state` is running Lua code (a C
    /// function) or inside a protected call.
    pub unsafe fn push_clone(self, state: *mut ffi::lua_State, idx: std::ffi::c_int) -> bool {
        unsafe {
            let src = ffi::lua_topointer(state, idx) as *const TableHead;
            if !(*src).metatable.is_null() || luaH_realasize(src as *const c_void) != 0 {
                return false;
            }
            let size = if (*src).lastfree.is_null() {
                0 // the shared dummy node: no hash part
            } else {
                1usize << (*src).lsizenode
            };
            let Ok(nrec) = std::ffi::c_int::try_from(size) else {
                return false;
            };
            // A collection step may run here, and clear the keys of removed values (dead
            // keys): those are looked for after it.
            ffi::lua_createtable(state, 0, nrec);
            let dst = ffi::lua_topointer(state, -1) as *mut TableHead;
            let src = &*src;
            let same_size = (*dst).lsizenode == src.lsizenode
                && (*dst).lastfree.is_null() == src.lastfree.is_null();
            if !same_size || (0..size).any(|i| (*src.node.add(i)).key_tt == TAG_DEAD_KEY) {
                ffi::lua_settop(state, -2);
                return false;
            }
            if size > 0 {
                // The copy is new (white): it may point at anything without a barrier.
                std::ptr::copy_nonoverlapping(src.node, (*dst).node as *mut Node, size);
                (*dst).lastfree = (*dst).node.offset(src.lastfree.offset_from(src.node));
            }
            true
        }
    }

    fn layout_matches(self, lua: &Lua) -> bool {
        let check = || -> mlua::Result<bool> {
            let originals: Vec<Table> = vec![
                lua.load("return { a = 1, bc = 'x', d = {}, e = true, f = 2.5, g = false }")
                    .eval()?,
                lua.create_table()?,
                lua.load("return { only = 1 }").eval()?,
            ];
            for t in &originals {
                let before: Vec<(mlua::Value, mlua::Value)> =
                    t.clone().pairs().collect::<mlua::Result<_>>()?;
                let Some(copy) = self.clone_table(lua, t)? else {
                    return Ok(false);
                };
                let same = |c: &Table| -> mlua::Result<bool> {
                    let n = c.clone().pairs::<mlua::Value, mlua::Value>().count();
                    Ok(n == before.len()
                        && before.iter().all(|(k, v)| {
                            c.raw_get::<mlua::Value>(k.clone()).ok().as_ref() == Some(v)
                        }))
                };
                if !same(&copy)? {
                    return Ok(false);
                }
                // New keys go into the copy (through its free slots, then a resize), not into
                // the original; the copy's keys stay where lookups find them.
                for i in 0..20 {
                    copy.raw_set(format!("new{i}"), i)?;
                }
                let found = (0..20).all(|i| copy.raw_get::<i64>(format!("new{i}")).ok() == Some(i));
                let copy_count = copy.clone().pairs::<mlua::Value, mlua::Value>().count();
                if !found || copy_count != before.len() + 20 || !same(t)? {
                    return Ok(false);
                }
                for (k, _) in &before {
                    if copy.raw_get::<mlua::Value>(k.clone())? == mlua::Value::Nil {
                        return Ok(false);
                    }
                }
            }
            // Not copied raw: an array part, a metatable.
            let array: Table = lua.load("return { 1, 2, x = 3 }").eval()?;
            let with_mt: Table = lua.load("return setmetatable({ x = 1 }, {})").eval()?;
            Ok(self.clone_table(lua, &array)?.is_none()
                && self.clone_table(lua, &with_mt)?.is_none())
        };
        check().unwrap_or(false)
    }

    /// `push_clone` of `t`, as a table (for the checks and tests).
    fn clone_table(self, lua: &Lua, t: &Table) -> mlua::Result<Option<Table>> {
        // SAFETY: room is checked; the table is pushed and popped again; with no memory limit
        // set outside script code, the allocation does not fail short of the machine's memory.
        unsafe {
            lua.exec_raw_lua(|raw| {
                let state = raw.state();
                if ffi::lua_checkstack(state, 2) == 0 {
                    return Err(mlua::Error::StackError);
                }
                let top = ffi::lua_gettop(state);
                mlua::IntoLua::push_into_stack(t, raw)?;
                let out = if self.push_clone(state, top + 1) {
                    Some(<Table as mlua::FromLua>::from_stack(-1, raw)?)
                } else {
                    None
                };
                ffi::lua_settop(state, top);
                Ok(out)
            })
        }
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

    /// Run `walk_into(source, anchor)`: `source`'s values into `anchor`'s array part from 1,
    /// as a listing anchors its stat tables.
    fn walk_into(lua: &Lua, w: Walker, source: &Table, anchor: &Table) -> usize {
        lua.exec_raw_lua(|raw| {
            let state = raw.state();
            let mut values = Vec::new();
            unsafe {
                w.each(RawTables::ptr(source), |_, v| {
                    values.push(v);
                    true
                });
                w.reserve(state, RawTables::ptr(anchor), values.len());
                let mut fill = w.fill(state, RawTables::ptr(anchor));
                values
                    .iter()
                    .enumerate()
                    .filter(|(i, v)| fill.set(i + 1, **v))
                    .count()
            }
        })
    }

    #[test]
    fn filled_arrays_keep_their_values_through_collections() {
        // Anchors made early are black by the time new (white) tables go into them while the
        // collector is mid-cycle; the sources are dropped at once, so only the anchors keep
        // the tables. Without the write barrier the collector takes them for garbage at the
        // end of its cycle: their finalizers (which record their ids) run while an anchor
        // still holds them.
        for mode in ["generational", "incremental"] {
            let lua = Lua::new();
            // A heap large enough that an incremental cycle takes many steps.
            lua.load(format!(
                "collectgarbage('{mode}') ballast = {{}} \
                 for i = 1, 50000 do ballast[i] = {{}} end"
            ))
            .exec()
            .unwrap();
            anchored_tables_survive(&lua, mode);
        }
    }

    fn anchored_tables_survive(lua: &Lua, mode: &str) {
        let w = Walker::new(lua).expect("this Lua passes the layout checks");
        let anchors: Vec<Table> = (0..8).map(|_| lua.create_table().unwrap()).collect();
        let make = lua
            .load(
                "dead = {} \
                 local mt = {__gc = function(t) dead[t.id] = true end} \
                 return function(round) \
                   local t = {} \
                   for i = 1, 64 do \
                     t['n' .. i] = setmetatable({id = round * 1000 + i, pad = {}}, mt) \
                   end \
                   return t \
                 end",
            )
            .eval::<mlua::Function>()
            .unwrap();
        let dead: Table = lua.globals().get("dead").unwrap();
        for round in 0..600i64 {
            let anchor = &anchors[round as usize % anchors.len()];
            let source: Table = make.call(round).unwrap();
            assert_eq!(walk_into(lua, w, &source, anchor), 64);
            drop(source);
            for _ in 0..(round % 5) {
                lua.gc_step().unwrap();
            }
            for a in &anchors {
                for i in 1..=a.raw_len() as i64 {
                    let id: i64 = a.raw_get::<Table>(i).unwrap().raw_get("id").unwrap();
                    let gone: bool = dead.raw_get(id).unwrap();
                    assert!(
                        !gone,
                        "{mode}, round {round}: {id} finalized while anchored"
                    );
                }
            }
        }
    }

    #[test]
    fn walks_give_what_next_gives() {
        let lua = Lua::new();
        let w = Walker::new(&lua).expect("this Lua passes the layout checks");
        let t: Table = lua
            .load("local t = {x = 1, [1] = 'a', [true] = 2} t.gone = 3 t.gone = nil return t")
            .eval()
            .unwrap();
        let mut seen = Vec::new();
        unsafe {
            w.each(RawTables::ptr(&t), |k, _| {
                seen.push(match k {
                    Key::Name(b) => String::from_utf8_lossy(b).into_owned(),
                    Key::Other(t) => format!("<{t}>"),
                });
                true
            })
        };
        let mut want = Vec::new();
        for pair in t.pairs::<mlua::Value, mlua::Value>() {
            let (k, _) = pair.unwrap();
            want.push(match k {
                mlua::Value::String(s) => s.to_string_lossy(),
                mlua::Value::Integer(_) => format!("<{}>", ffi::LUA_TNUMBER),
                _ => format!("<{}>", ffi::LUA_TBOOLEAN),
            });
        }
        assert_eq!(seen, want);
        assert_eq!(seen.len(), 3, "{seen:?}");
    }

    #[test]
    fn copies_are_their_originals_and_apart_from_them() {
        let lua = Lua::new();
        let c = Cloner::new(&lua).expect("this Lua passes the layout checks");
        let t: Table = lua
            .load("return { a = 1, b = 'two', c = {}, d = true, e = 0.5 }")
            .eval()
            .unwrap();
        let copy = c.clone_table(&lua, &t).unwrap().expect("a hash-only table");
        for k in ["a", "b", "c", "d", "e"] {
            assert_eq!(
                copy.raw_get::<mlua::Value>(k).unwrap(),
                t.raw_get::<mlua::Value>(k).unwrap(),
                "{k}"
            );
        }
        copy.raw_set("a", 10).unwrap();
        copy.raw_set("z", 26).unwrap();
        assert_eq!(t.raw_get::<i64>("a").unwrap(), 1);
        assert_eq!(t.raw_get::<Option<i64>>("z").unwrap(), None);
        assert_eq!(copy.raw_get::<i64>("a").unwrap(), 10);
        assert_eq!(copy.clone().pairs::<String, mlua::Value>().count(), 6);
        // A removed field is absent from the copy too (with the collector stopped, its key is
        // not dead yet: the copy is made raw); after a collection its key is dead and the
        // table is no longer copied raw.
        lua.gc_stop();
        let removed: Table = lua
            .load("local t = { a = 1, b = 2, c = 3 } t.b = nil return t")
            .eval()
            .unwrap();
        let copy = c
            .clone_table(&lua, &removed)
            .unwrap()
            .expect("no dead key before a collection");
        assert_eq!(copy.raw_get::<Option<i64>>("b").unwrap(), None);
        assert_eq!(copy.raw_get::<i64>("c").unwrap(), 3);
        lua.gc_restart();
        lua.gc_collect().unwrap();
        lua.gc_collect().unwrap();
        assert!(c.clone_table(&lua, &removed).unwrap().is_none());
    }

    #[test]
    fn copies_keep_what_they_point_at_through_collections() {
        // The copy is the only holder of its values once the original goes: the collector
        // must see them through the copied slots.
        for mode in ["generational", "incremental"] {
            let lua = Lua::new();
            let c = Cloner::new(&lua).unwrap();
            lua.load(format!(
                "collectgarbage('{mode}') dead = {{}} \
                 mt = {{__gc = function(t) dead[t.id] = true end}}"
            ))
            .exec()
            .unwrap();
            let make = lua
                .load("return function(i) return { v = setmetatable({ id = i }, mt), n = i } end")
                .eval::<mlua::Function>()
                .unwrap();
            let copies: Vec<Table> = (0..300i64)
                .map(|i| {
                    let t: Table = make.call(i).unwrap();
                    let copy = c.clone_table(&lua, &t).unwrap().unwrap();
                    drop(t);
                    lua.gc_step().unwrap();
                    copy
                })
                .collect();
            lua.gc_collect().unwrap();
            lua.gc_collect().unwrap();
            let dead: Table = lua.globals().get("dead").unwrap();
            for (i, copy) in copies.iter().enumerate() {
                let v: Table = copy.raw_get("v").unwrap();
                assert_eq!(v.raw_get::<i64>("id").unwrap(), i as i64, "{mode}");
                assert!(
                    !dead.raw_get::<bool>(i as i64).unwrap(),
                    "{mode}: {i} collected"
                );
            }
        }
    }
}
