//! Lua values ↔ kernel types, in one place: stat tables, times, mode sets and strings, open
//! flag sets, statfs tables and lock tables. Every way a script may spell a value is decoded
//! here; a value that cannot be decoded becomes a `BadValue` with a message for the log.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mlua::{IntoLua, Lua, Table, Value};

use crate::luaraw::{Cloner, RawTables};
use crate::mode;

/// A value returned by a script that does not have the expected shape.
#[derive(Debug, Clone, PartialEq)]
pub struct BadValue(pub String);

impl std::fmt::Display for BadValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub type Conv<T> = Result<T, BadValue>;

fn bad<T>(msg: impl Into<String>) -> Conv<T> {
    Err(BadValue(msg.into()))
}

fn type_name(v: &Value) -> &'static str {
    v.type_name()
}

/// A point in time as seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}

impl Timespec {
    pub fn now() -> Timespec {
        Timespec::from_system(SystemTime::now())
    }

    pub fn from_system(t: SystemTime) -> Timespec {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timespec {
                sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nsec: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let mut sec = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                let mut nsec = d.subsec_nanos();
                if nsec > 0 {
                    sec -= 1;
                    nsec = 1_000_000_000 - nsec;
                }
                Timespec { sec, nsec }
            }
        }
    }

    /// A time from a SETATTR request as fuser 0.18 decodes it (`TimeOrNow::SpecificTime`).
    ///
    /// The kernel sends seconds and nanoseconds with `0 <= nsec < 1e9`, so -1.75 s is
    /// `(-2, 250_000_000)`. fuser 0.18 (src/time.rs, `system_time_from_time`) builds the
    /// `SystemTime` of a negative `sec` as `UNIX_EPOCH - Duration::new(-sec, nsec)`, i.e. it
    /// subtracts the nanoseconds instead of adding them: -2.25 s, and
    /// [`Timespec::from_system`] would then give `(-3, 750_000_000)`. Undo that: before the
    /// epoch the distance to it is exactly `(-sec, nsec)`. Times at or after the epoch are
    /// decoded correctly by fuser and are taken as they are.
    ///
    /// Tied to fuser's behaviour: recheck on a fuser upgrade (the POSIX suite's "times before
    /// 1970" check in tests/posix/mod.rs fails if this goes wrong).
    pub fn from_fuser_setattr(t: SystemTime) -> Timespec {
        match UNIX_EPOCH.duration_since(t) {
            Ok(d) if !d.is_zero() => Timespec {
                sec: 0i64.checked_sub_unsigned(d.as_secs()).unwrap_or(i64::MIN),
                nsec: d.subsec_nanos(),
            },
            _ => Timespec::from_system(t),
        }
    }

    pub fn to_system(self) -> SystemTime {
        if self.sec >= 0 {
            UNIX_EPOCH + Duration::new(self.sec.unsigned_abs(), self.nsec)
        } else {
            UNIX_EPOCH - Duration::from_secs(self.sec.unsigned_abs())
                + Duration::from_nanos(u64::from(self.nsec))
        }
    }

    pub fn into_lua_table(self, lua: &Lua) -> mlua::Result<Table> {
        let t = lua.create_table_with_capacity(0, 2)?;
        t.raw_set("sec", self.sec)?;
        t.raw_set("nsec", self.nsec)?;
        Ok(t)
    }
}

/// Read a number field as an integer (floats with no fraction accepted).
fn as_int(v: &Value, what: &str) -> Conv<i64> {
    match v {
        Value::Integer(i) => Ok(*i),
        Value::Number(n) if n.fract() == 0.0 && n.is_finite() && n.abs() < 9.2e18 => Ok(*n as i64),
        Value::String(s) => match s.to_str().ok().and_then(|s| s.trim().parse::<i64>().ok()) {
            Some(i) => Ok(i),
            None => bad(format!("{what}: expected an integer, got string")),
        },
        _ => bad(format!("{what}: expected an integer, got {}", type_name(v))),
    }
}

fn as_u64(v: &Value, what: &str) -> Conv<u64> {
    let i = as_int(v, what)?;
    u64::try_from(i).or_else(|_| bad(format!("{what}: negative value {i}")))
}

fn as_u32(v: &Value, what: &str) -> Conv<u32> {
    let i = as_int(v, what)?;
    u32::try_from(i).or_else(|_| bad(format!("{what}: {i} is out of range")))
}

/// A time: a number of seconds (fractions kept as nanoseconds) or `{sec=, nsec=}`.
pub fn time_from_lua(v: &Value, what: &str) -> Conv<Timespec> {
    match v {
        Value::Integer(i) => Ok(Timespec { sec: *i, nsec: 0 }),
        Value::Number(n) if n.is_finite() && n.abs() < 9.2e18 => {
            let sec = n.floor();
            let nsec = ((n - sec) * 1e9).round().min(999_999_999.0) as u32;
            Ok(Timespec {
                sec: sec as i64,
                nsec,
            })
        }
        Value::Table(t) => {
            let sec = match t.get::<Value>("sec") {
                Ok(Value::Nil) => 0,
                Ok(v) => as_int(&v, what)?,
                Err(e) => return bad(format!("{what}: {e}")),
            };
            let nsec = match t.get::<Value>("nsec") {
                Ok(Value::Nil) => 0,
                Ok(v) => as_int(&v, what)?,
                Err(e) => return bad(format!("{what}: {e}")),
            };
            if !(0..1_000_000_000).contains(&nsec) {
                return bad(format!("{what}: nsec {nsec} out of range"));
            }
            Ok(Timespec {
                sec,
                nsec: nsec as u32,
            })
        }
        _ => bad(format!(
            "{what}: expected a number or {{sec=, nsec=}}, got {}",
            type_name(v)
        )),
    }
}

/// A mode: an integer, a set of Flu flag names, or a predefined string.
pub fn mode_from_lua(v: &Value) -> Conv<u32> {
    match v {
        Value::Integer(_) | Value::Number(_) => {
            let m = as_int(v, "mode")?;
            u32::try_from(m)
                .ok()
                .filter(|m| *m <= 0o177777)
                .map_or_else(|| bad(format!("mode: {m} is not a valid mode")), Ok)
        }
        Value::String(s) => {
            let s = s.to_string_lossy();
            mode::from_preset(&s)
                .map_or_else(|| bad(format!("mode: unknown mode string {s:?}")), Ok)
        }
        Value::Table(t) => {
            let mut m = 0;
            let mut err = None;
            let r = t.for_each(|k: Value, val: Value| {
                if matches!(val, Value::Nil | Value::Boolean(false)) {
                    return Ok(());
                }
                if let Value::String(k) = &k {
                    let k = k.to_string_lossy();
                    match mode::flag_bits(&k) {
                        Some(b) => m |= b,
                        None => err = Some(format!("mode: unknown flag {k:?}")),
                    }
                }
                Ok(())
            });
            if let Err(e) = r {
                return bad(format!("mode: {e}"));
            }
            match err {
                Some(e) => bad(e),
                None => Ok(m),
            }
        }
        _ => bad(format!(
            "mode: expected a set, a string or an integer, got {}",
            type_name(v)
        )),
    }
}

/// Lua strings for the names in mode and open-flag sets and for `fi`'s fields, made once. A
/// set built per request would otherwise intern every name again (a hash and a string-table
/// lookup each, cold between requests: interning was the top entry of the create profile).
/// They sit in one Lua array (positions below), from which the sets and `fi` tables of every
/// request are built through the C API: a name costs a `lua_rawgeti` and a `lua_rawset`
/// instead of an mlua `raw_set` (stack guard, checks, value pushes through the ref thread).
pub struct Names {
    /// Position 1 on: `mode::TYPES`, `mode::PERMS`, the open-flag names (`mode::OPEN_FLAGS`,
    /// then `OPEN_EXTRA`), the same with their `O_*` upper-case spelling, then `FI_FIELDS`.
    array: Table,
    /// Raw reads of `fi`'s boolean fields (`FI_FIELDS` after `flags`), when this Lua passes
    /// `luaraw`'s checks.
    fi_raw: Option<RawTables>,
    /// A new `fi` with `flags` 0 and the booleans false, with room for the script's `fh`,
    /// which each `fi` is copied from (`luaraw::Cloner`), when this Lua passes its checks.
    fi_template: Option<(Cloner, Table)>,
}

/// Open-flag names besides `mode::OPEN_FLAGS`: the access modes and `nonblock`'s alias.
const OPEN_EXTRA: [&str; 4] = ["rdonly", "wronly", "rdwr", "ndelay"];
const OPEN_NAMES: usize = mode::OPEN_FLAGS.len() + OPEN_EXTRA.len();
/// Where each group starts in `Names::array`.
const MODE_AT: usize = 1;
const OPEN_AT: usize = MODE_AT + mode::TYPES.len() + mode::PERMS.len();
const UPPER_AT: usize = OPEN_AT + OPEN_NAMES;
const FI_AT: usize = UPPER_AT + OPEN_NAMES;

/// `fi` fields flufs sets or reads.
pub const FI_FIELDS: [&str; 5] = [
    "flags",
    "direct_io",
    "keep_cache",
    "nonseekable",
    "cache_readdir",
];

/// The open-flag names of `flags` as positions among the open-flag names (access mode first;
/// `ndelay` with `nonblock`), as `mode::open_flag_names` lists them.
fn open_flag_slots(flags: i32) -> impl Iterator<Item = usize> {
    let access = match flags & libc::O_ACCMODE {
        libc::O_WRONLY => 1,
        libc::O_RDWR => 2,
        _ => 0,
    };
    let n = mode::OPEN_FLAGS.len();
    std::iter::once(n + access).chain(
        mode::OPEN_FLAGS
            .iter()
            .enumerate()
            .filter(move |&(_, &(_, bit))| bit != 0 && flags & bit == bit)
            .flat_map(move |(i, &(name, _))| {
                std::iter::once(i).chain((name == "nonblock").then_some(n + 3))
            }),
    )
}

impl Names {
    /// The names, the raw reads of `fi` and the `fi` template: what the dispatcher needs.
    pub fn new(lua: &Lua) -> mlua::Result<Names> {
        let array = Names::array(lua)?;
        let fi_raw = RawTables::new(
            lua,
            &lua.create_sequence_from(FI_FIELDS[1..].iter().copied())?,
        );
        let fi_template = match Cloner::new(lua) {
            Some(c) => {
                let t = Names::build_in(&array, lua, 5, None, |state, names, fi, _| {
                    // SAFETY: as in `fi`.
                    unsafe { Names::set_fi_fields(state, names, fi, 0, true, false, false, true) }
                })?;
                Some((c, t))
            }
            None => None,
        };
        Ok(Names {
            array,
            fi_raw,
            fi_template,
        })
    }

    /// The names alone, for `mode_set` (`flu.modeset`): no `fi` is made or read through these,
    /// so neither its raw reads (and their start-up checks) nor its template are made.
    pub fn for_mode_sets(lua: &Lua) -> mlua::Result<Names> {
        Ok(Names {
            array: Names::array(lua)?,
            fi_raw: None,
            fi_template: None,
        })
    }

    /// The names, in the order the doc of the `array` field gives.
    fn array(lua: &Lua) -> mlua::Result<Table> {
        let open = mode::OPEN_FLAGS
            .iter()
            .map(|&(n, _)| n)
            .chain(OPEN_EXTRA)
            .collect::<Vec<_>>();
        let mut all: Vec<String> = mode::TYPES
            .iter()
            .chain(mode::PERMS)
            .map(|&(n, _)| n.to_string())
            .collect();
        all.extend(open.iter().map(|n| n.to_string()));
        all.extend(open.iter().map(|n| format!("O_{}", n.to_ascii_uppercase())));
        all.extend(FI_FIELDS.iter().map(|n| n.to_string()));
        lua.create_sequence_from(all)
    }

    /// The boolean fields of `fi` after `flags` in `FI_FIELDS` (`direct_io`, `keep_cache`,
    /// `nonseekable`, `cache_readdir`), each true when truthy, read through `luaraw` (~4 times
    /// cheaper than the C API, read after every create and open), or in one pass through the
    /// C API with the key strings made once (an mlua `raw_get` per field cost ~7 times more).
    pub fn fi_flags(&self, lua: &Lua, fi: &Table) -> [bool; FI_FIELDS.len() - 1] {
        use mlua::ffi;
        let mut on = [false; FI_FIELDS.len() - 1];
        // SAFETY: stack space is checked first; everything pushed is popped again; raw gets
        // do not raise errors.
        unsafe {
            lua.exec_raw_lua(|raw| {
                let state = raw.state();
                if ffi::lua_checkstack(state, 4) == 0 {
                    return;
                }
                let top = ffi::lua_gettop(state);
                if let Some(fields) = &self.fi_raw {
                    // Through Lua's own lookups: one hash probe per field.
                    if fi.push_into_stack(raw).is_ok() {
                        let t = ffi::lua_topointer(state, -1) as *mut std::ffi::c_void;
                        for (i, slot) in on.iter_mut().enumerate() {
                            *slot = fields.truthy(t, i);
                        }
                    }
                    ffi::lua_settop(state, top);
                    return;
                }
                if (&self.array).push_into_stack(raw).is_ok() && fi.push_into_stack(raw).is_ok() {
                    for (i, slot) in on.iter_mut().enumerate() {
                        ffi::lua_rawgeti(state, top + 1, (FI_AT + 1 + i) as ffi::lua_Integer);
                        ffi::lua_rawget(state, top + 2);
                        *slot = ffi::lua_toboolean(state, -1) != 0;
                        ffi::lua_settop(state, top + 2);
                    }
                }
                ffi::lua_settop(state, top);
            })
        }
        on
    }

    /// Build a table through the C API: `fill` gets the state, the stack index of the names
    /// array and of the new table, and whether that table is a copy of `from` (else it is
    /// empty, made with room for `fields` keys), and sets its fields.
    fn build(
        &self,
        lua: &Lua,
        fields: i32,
        from: Option<&(Cloner, Table)>,
        fill: impl FnOnce(*mut mlua::ffi::lua_State, i32, i32, bool),
    ) -> mlua::Result<Table> {
        Names::build_in(&self.array, lua, fields, from, fill)
    }

    /// `build` with the names array given.
    fn build_in(
        array: &Table,
        lua: &Lua,
        fields: i32,
        from: Option<&(Cloner, Table)>,
        fill: impl FnOnce(*mut mlua::ffi::lua_State, i32, i32, bool),
    ) -> mlua::Result<Table> {
        use mlua::ffi;
        // SAFETY: stack space is checked first; everything pushed is popped again. As in mlua
        // with no memory limit set (the limit holds only while script code runs), table
        // growth (and a copy's allocation) is not run in a protected call.
        unsafe {
            lua.exec_raw_lua(|raw| {
                let state = raw.state();
                if ffi::lua_checkstack(state, 7) == 0 {
                    return Err(mlua::Error::StackError);
                }
                let top = ffi::lua_gettop(state);
                array.push_into_stack(raw)?;
                let mut copied = false;
                if let Some((cloner, template)) = from {
                    template.push_into_stack(raw)?;
                    copied = cloner.push_clone(state, top + 2);
                    if copied {
                        ffi::lua_copy(state, top + 3, top + 2);
                    }
                    ffi::lua_settop(state, top + 1 + i32::from(copied));
                }
                if !copied {
                    ffi::lua_createtable(state, 0, fields);
                }
                fill(state, top + 1, top + 2, copied);
                let t = <Table as mlua::FromLua>::from_stack(top + 2, raw);
                ffi::lua_settop(state, top);
                t
            })
        }
    }

    /// `t[names[pos]] = true` for the table at `t` (names array at `names`).
    ///
    /// # Safety
    /// `state` has room for two more values; `names` and `t` are stack indices of the names
    /// array and a table.
    unsafe fn set_true(state: *mut mlua::ffi::lua_State, names: i32, t: i32, pos: usize) {
        use mlua::ffi;
        unsafe {
            ffi::lua_rawgeti(state, names, pos as ffi::lua_Integer);
            ffi::lua_pushboolean(state, 1);
            ffi::lua_rawset(state, t);
        }
    }

    /// A mode as a Lua set (`{reg=true, rusr=true, ...}`).
    pub fn mode_set(&self, lua: &Lua, m: u32) -> mlua::Result<Table> {
        self.build(lua, 8, None, |state, names, t, _| {
            let fmt = m & libc::S_IFMT;
            let types = mode::TYPES.iter().map(|&(_, v)| v == fmt);
            let perms = mode::PERMS.iter().map(|&(_, v)| m & v != 0);
            for (i, _) in types.chain(perms).enumerate().filter(|&(_, on)| on) {
                // SAFETY: `build` left room; `names` and `t` are its indices.
                unsafe { Names::set_true(state, names, t, MODE_AT + i) };
            }
        })
    }

    /// Fill the table at `t` with the open-flag set of `flags`: lower-case Flu names plus
    /// `O_*` upper-case aliases.
    ///
    /// # Safety
    /// As for `set_true`.
    unsafe fn fill_open_flags(state: *mut mlua::ffi::lua_State, names: i32, t: i32, flags: i32) {
        for slot in open_flag_slots(flags) {
            unsafe {
                Names::set_true(state, names, t, OPEN_AT + slot);
                Names::set_true(state, names, t, UPPER_AT + slot);
            }
        }
    }

    /// A new `fi`: `flags` as an open-flag set (or, with `flags_as_number`, as it is),
    /// `direct_io` and `keep_cache` as given, `nonseekable` false.
    pub fn fi(
        &self,
        lua: &Lua,
        flags: i32,
        flags_as_number: bool,
        direct_io: bool,
        keep_cache: bool,
    ) -> mlua::Result<Table> {
        // A copy of the template has its keys in place (setting them inserts nothing): only
        // the fields that differ from it are set.
        self.build(
            lua,
            5,
            self.fi_template.as_ref(),
            |state, names, fi, copied| {
                // SAFETY: as in `set_fi_fields`.
                unsafe {
                    Names::set_fi_fields(
                        state,
                        names,
                        fi,
                        flags,
                        flags_as_number,
                        direct_io,
                        keep_cache,
                        !copied,
                    )
                }
            },
        )
    }

    /// Set `fi`'s `flags` (a number, or an open-flag set made at the top of the stack), and
    /// its booleans `direct_io`, `keep_cache` and `nonseekable`: all of them with `all`, only
    /// the true ones otherwise (a copy of the template has them false).
    ///
    /// # Safety
    /// `state` has room for four more values; `names` and `fi` are stack indices of the names
    /// array and a table, below the top. Leaves the stack as it was.
    #[allow(clippy::too_many_arguments)]
    unsafe fn set_fi_fields(
        state: *mut mlua::ffi::lua_State,
        names: i32,
        fi: i32,
        flags: i32,
        flags_as_number: bool,
        direct_io: bool,
        keep_cache: bool,
        all: bool,
    ) {
        use mlua::ffi;
        unsafe {
            let top = ffi::lua_gettop(state);
            ffi::lua_rawgeti(state, names, FI_AT as ffi::lua_Integer);
            if flags_as_number {
                ffi::lua_pushinteger(state, ffi::lua_Integer::from(flags));
            } else {
                ffi::lua_createtable(state, 0, 8);
                Names::fill_open_flags(state, names, top + 2, flags);
            }
            ffi::lua_rawset(state, fi);
            for (field, on) in [(1, direct_io), (2, keep_cache), (3, false)] {
                if all || on {
                    ffi::lua_rawgeti(state, names, (FI_AT + field) as ffi::lua_Integer);
                    ffi::lua_pushboolean(state, on as i32);
                    ffi::lua_rawset(state, fi);
                }
            }
        }
    }
}

/// Bytes passed to a script as a Lua string (a path, a name, write data): pushed straight onto
/// the stack when the call is made, with no mlua string handle (a slot in mlua's reference
/// thread, made and freed again) in between.
#[derive(Clone, Copy)]
pub struct Bytes<'a>(pub &'a [u8]);

impl IntoLua for Bytes<'_> {
    fn into_lua(self, lua: &Lua) -> mlua::Result<Value> {
        lua.create_string(self.0).map(Value::String)
    }

    unsafe fn push_into_stack(self, lua: &mlua::state::RawLua) -> mlua::Result<()> {
        // SAFETY: the caller checked stack space (IntoLua's contract). As mlua does with no
        // memory limit set (the limit holds only while script code runs), the string is made
        // outside a protected call.
        unsafe {
            mlua::ffi::lua_pushlstring(lua.state(), self.0.as_ptr().cast(), self.0.len());
        }
        Ok(())
    }
}

/// Attributes as the host keeps them (kernel-facing, before the node id is assigned).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub mode: u32,
    pub ino: u64,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub size: u64,
    pub blocks: u64,
    pub blksize: u32,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
}

/// Values used for stat fields a script leaves out.
#[derive(Debug, Clone, Copy)]
pub struct StatDefaults {
    pub uid: u32,
    pub gid: u32,
    pub time: Timespec,
}

#[derive(Clone, Copy)]
enum Field {
    Mode,
    Ino,
    Nlink,
    Uid,
    Gid,
    Rdev,
    Size,
    Blocks,
    Blksize,
    Atime,
    Mtime,
    Ctime,
    /// Nanoseconds beside an integer time (`access_nsec`...): index 0 atime, 1 mtime, 2 ctime.
    Nsec(usize),
    Ignored,
}

fn field_of(key: &[u8]) -> Option<Field> {
    let key = key.strip_prefix(b"st_").unwrap_or(key);
    Some(match key {
        b"mode" => Field::Mode,
        b"ino" => Field::Ino,
        b"nlink" => Field::Nlink,
        b"uid" => Field::Uid,
        b"gid" => Field::Gid,
        b"rdev" => Field::Rdev,
        b"size" => Field::Size,
        b"blocks" => Field::Blocks,
        b"blksize" => Field::Blksize,
        b"access" | b"atime" => Field::Atime,
        b"modification" | b"mtime" => Field::Mtime,
        b"change" | b"ctime" => Field::Ctime,
        b"access_nsec" => Field::Nsec(0),
        b"modification_nsec" => Field::Nsec(1),
        b"change_nsec" => Field::Nsec(2),
        b"dev" | b"birthtime" | b"crtime" | b"flags" | b"gen" | b"permissions" => Field::Ignored,
        _ => return None,
    })
}

impl Stat {
    /// Decode a stat table (Flu names, `st_*` names, LuaFileSystem names).
    pub fn from_lua(t: &Table, d: &StatDefaults) -> Conv<Stat> {
        let mut nlink_set = false;
        let mut st = Stat {
            mode: 0,
            ino: 0,
            nlink: 0,
            uid: d.uid,
            gid: d.gid,
            rdev: 0,
            size: 0,
            blocks: u64::MAX,
            blksize: 4096,
            atime: d.time,
            mtime: d.time,
            ctime: d.time,
        };
        let mut have_mode = false;
        let mut failure: Option<BadValue> = None;
        // Which times were integers, and the nanoseconds given beside them.
        let mut whole = [false; 3];
        let mut nsecs: [Option<i64>; 3] = [None; 3];
        let mut apply = |key: &[u8], v: &Value| -> Conv<()> {
            let Some(f) = field_of(key) else {
                return Ok(());
            };
            if matches!(v, Value::Nil) {
                return Ok(());
            }
            match f {
                Field::Mode => {
                    st.mode = mode_from_lua(v)?;
                    have_mode = true;
                }
                Field::Ino => st.ino = as_u64(v, "ino")?,
                Field::Nlink => {
                    st.nlink = as_u32(v, "nlink")?;
                    nlink_set = true;
                }
                Field::Uid => st.uid = as_u32(v, "uid")?,
                Field::Gid => st.gid = as_u32(v, "gid")?,
                Field::Rdev => st.rdev = as_u32(v, "rdev")?,
                Field::Size => st.size = as_u64(v, "size")?,
                Field::Blocks => st.blocks = as_u64(v, "blocks")?,
                Field::Blksize => st.blksize = as_u32(v, "blksize")?,
                Field::Atime => {
                    st.atime = time_from_lua(v, "access")?;
                    whole[0] = matches!(v, Value::Integer(_));
                }
                Field::Mtime => {
                    st.mtime = time_from_lua(v, "modification")?;
                    whole[1] = matches!(v, Value::Integer(_));
                }
                Field::Ctime => {
                    st.ctime = time_from_lua(v, "change")?;
                    whole[2] = matches!(v, Value::Integer(_));
                }
                Field::Nsec(i) => nsecs[i] = Some(as_int(v, NSEC_KEYS[i])?),
                Field::Ignored => {}
            }
            Ok(())
        };
        if t.has_metatable() {
            for &key in STAT_KEYS[..12].iter().chain(&NSEC_KEYS) {
                let v: Value = t.get(key).map_err(|e| BadValue(e.to_string()))?;
                apply(key.as_bytes(), &v)?;
            }
        } else {
            let r = t.for_each(|k: Value, v: Value| {
                if failure.is_none()
                    && let Value::String(k) = &k
                    && let Err(e) = apply(&k.as_bytes(), &v)
                {
                    failure = Some(e);
                }
                Ok(())
            });
            if let Err(e) = r {
                return bad(e.to_string());
            }
            if let Some(e) = failure {
                return Err(e);
            }
        }
        if !have_mode {
            return bad("stat table has no mode");
        }
        for (i, t) in [&mut st.atime, &mut st.mtime, &mut st.ctime]
            .into_iter()
            .enumerate()
        {
            if let (true, Some(n)) = (whole[i], nsecs[i]) {
                if !(0..1_000_000_000).contains(&n) {
                    return bad(format!("{}: {n} is out of range", NSEC_KEYS[i]));
                }
                t.nsec = n as u32;
            }
        }
        st.finish_defaults(nlink_set);
        Ok(st)
    }

    /// Fill `nlink` (1, or 2 for a directory) when absent and `blocks` (from the size).
    fn finish_defaults(&mut self, nlink_set: bool) {
        if !nlink_set {
            self.nlink = if self.mode & libc::S_IFMT == libc::S_IFDIR {
                2
            } else {
                1
            };
        }
        if self.blocks == u64::MAX {
            self.blocks = self.size.div_ceil(512);
        }
    }

    /// Build a stat from its 15 fields, absent ones `None`: mode, ino, nlink, uid, gid, rdev,
    /// size, blocks, blksize, then sec and nsec of access, modification and change.
    ///
    /// Every getattr, lookup and made entry comes through here. Each error message is made
    /// by a cold function, out of line, so that the checks of a good table run in compact
    /// code (callgrind, per created file: 184 -> 140 instructions and 26 -> 12
    /// instruction-cache misses in this function).
    pub fn from_ints(v: &[Option<i64>; 15], d: &StatDefaults) -> Conv<Stat> {
        #[cold]
        #[inline(never)]
        fn out_of_range(name: &str, n: i64) -> BadValue {
            BadValue(format!("{name}: {n} is out of range"))
        }
        #[cold]
        #[inline(never)]
        fn negative(name: &str, n: i64) -> BadValue {
            BadValue(format!("{name}: negative value {n}"))
        }
        #[cold]
        #[inline(never)]
        fn bad_mode(mode: i64) -> BadValue {
            BadValue(format!("mode: {mode} is not a valid mode"))
        }
        #[cold]
        #[inline(never)]
        fn bad_nsec(name: &str) -> BadValue {
            BadValue(format!("{name}: nsec out of range"))
        }
        #[inline(always)]
        fn u32_or(v: Option<i64>, name: &str, default: u32) -> Conv<u32> {
            match v {
                None => Ok(default),
                Some(n) => u32::try_from(n).map_err(|_| out_of_range(name, n)),
            }
        }
        #[inline(always)]
        fn u64_or(v: Option<i64>, name: &str, default: u64) -> Conv<u64> {
            match v {
                None => Ok(default),
                Some(n) => u64::try_from(n).map_err(|_| negative(name, n)),
            }
        }
        #[inline(always)]
        fn time(
            sec: Option<i64>,
            nsec: Option<i64>,
            name: &str,
            default: Timespec,
        ) -> Conv<Timespec> {
            match (sec, nsec) {
                (Some(sec), Some(nsec)) if (0..1_000_000_000).contains(&nsec) => Ok(Timespec {
                    sec,
                    nsec: nsec as u32,
                }),
                (Some(_), _) => Err(bad_nsec(name)),
                (None, _) => Ok(default),
            }
        }
        let mode = v[0].unwrap_or(-1);
        let mode = match u32::try_from(mode) {
            Ok(m) if m <= 0o177777 => m,
            _ => return Err(bad_mode(mode)),
        };
        let mut st = Stat {
            mode,
            ino: u64_or(v[1], "ino", 0)?,
            nlink: u32_or(v[2], "nlink", 0)?,
            uid: u32_or(v[3], "uid", d.uid)?,
            gid: u32_or(v[4], "gid", d.gid)?,
            rdev: u32_or(v[5], "rdev", 0)?,
            size: u64_or(v[6], "size", 0)?,
            blocks: u64_or(v[7], "blocks", u64::MAX)?,
            blksize: u32_or(v[8], "blksize", 4096)?,
            atime: time(v[9], v[10], "access", d.time)?,
            mtime: time(v[11], v[12], "modification", d.time)?,
            ctime: time(v[13], v[14], "change", d.time)?,
        };
        st.finish_defaults(v[2].is_some());
        Ok(st)
    }

    /// Attributes for an entry that has none of its own (negative entries, "." and "..").
    pub fn placeholder(d: StatDefaults) -> Stat {
        Stat {
            mode: libc::S_IFREG,
            ino: 0,
            nlink: 1,
            uid: d.uid,
            gid: d.gid,
            rdev: 0,
            size: 0,
            blocks: 0,
            blksize: 4096,
            atime: d.time,
            mtime: d.time,
            ctime: d.time,
        }
    }

    pub fn placeholder_dir(d: StatDefaults) -> Stat {
        Stat {
            mode: libc::S_IFDIR | 0o755,
            nlink: 2,
            ..Stat::placeholder(d)
        }
    }

    /// Encode as a Flu stat table (mode as an integer; times as `{sec=, nsec=}`).
    #[cfg(test)]
    pub fn into_lua_table(self, lua: &Lua) -> mlua::Result<Table> {
        let t = lua.create_table_with_capacity(0, 12)?;
        t.raw_set("mode", self.mode)?;
        t.raw_set("ino", self.ino)?;
        t.raw_set("nlink", self.nlink)?;
        t.raw_set("uid", self.uid)?;
        t.raw_set("gid", self.gid)?;
        t.raw_set("rdev", self.rdev)?;
        t.raw_set("size", self.size)?;
        t.raw_set("blocks", self.blocks)?;
        t.raw_set("blksize", self.blksize)?;
        t.raw_set("access", self.atime.into_lua_table(lua)?)?;
        t.raw_set("modification", self.mtime.into_lua_table(lua)?)?;
        t.raw_set("change", self.ctime.into_lua_table(lua)?)?;
        Ok(t)
    }

    /// The kernel-facing attributes with node id `ino`.
    pub fn to_attr(self, ino: u64) -> fuser::FileAttr {
        let ctime = self.ctime.to_system();
        fuser::FileAttr {
            ino: fuser::INodeNo(ino),
            size: self.size,
            blocks: self.blocks,
            atime: self.atime.to_system(),
            mtime: self.mtime.to_system(),
            ctime,
            crtime: ctime,
            kind: file_type(self.mode),
            perm: (self.mode & 0o7777) as u16,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: self.rdev,
            blksize: self.blksize,
            flags: 0,
        }
    }
}

/// What `StatReader::prefetch_item` asks the CPU to fetch.
#[derive(Clone, Copy)]
pub enum Prefetch {
    Head,
    Fields,
}

/// Where `read_plain` finds the table.
enum Src<'a> {
    Table(&'a Table),
    Item(&'a StatList, i64),
}

/// A Lua array of stat tables (a readdir listing's), with its table pointer taken once: a
/// listing reads thousands of items, and taking the pointer through mlua costs ~70
/// instructions each time.
pub struct StatList {
    table: Table,
    at: *mut std::ffi::c_void,
}

impl StatList {
    pub fn new(table: Table) -> StatList {
        let at = RawTables::ptr(&table);
        StatList { table, at }
    }
}

/// Decodes stat tables. The common form (integer mode and fields, integer or `{sec=,nsec=}`
/// times, Flu names, no metatables) is read through Lua's own table lookups (`luaraw`), keyed
/// by strings made once (no Lua call, no intermediate values); anything else goes through
/// `Stat::from_lua`, as every table does on a Lua that fails `luaraw`'s layout checks.
pub struct StatReader {
    /// `STAT_KEYS` for the raw reads; `None` when this Lua does not pass the layout checks.
    raw: Option<RawTables>,
}

/// Nanoseconds beside a time given as whole seconds (beyond Flu: a node can keep its times
/// without a table for each).
const NSEC_KEYS: [&str; 3] = ["access_nsec", "modification_nsec", "change_nsec"];

/// The fields of a stat table: 9 integers, 3 times, the keys of a time table, the
/// nanoseconds beside whole-second times (`NSEC_KEYS`), then the other names `field_of`
/// takes for them (`aliases`): a table in the common form has none of those.
const STAT_KEYS: [&str; 38] = [
    "mode",
    "ino",
    "nlink",
    "uid",
    "gid",
    "rdev",
    "size",
    "blocks",
    "blksize",
    "access",
    "modification",
    "change",
    "sec",
    "nsec",
    NSEC_KEYS[0],
    NSEC_KEYS[1],
    NSEC_KEYS[2],
    // 17: the integer fields' st_ names.
    "st_mode",
    "st_ino",
    "st_nlink",
    "st_uid",
    "st_gid",
    "st_rdev",
    "st_size",
    "st_blocks",
    "st_blksize",
    // 26: the times' other names.
    "atime",
    "st_access",
    "st_atime",
    "mtime",
    "st_modification",
    "st_mtime",
    "ctime",
    "st_change",
    "st_ctime",
    // 35: the nanoseconds' st_ names.
    "st_access_nsec",
    "st_modification_nsec",
    "st_change_nsec",
];

/// Where the other names of field `k` of `STAT_KEYS` are in it. A field that is absent under
/// its Flu name may be there under another (`{mode = 33188, mtime = 5}`): the fast reads
/// then leave the table to `Stat::from_lua`.
fn aliases(k: usize) -> std::ops::Range<usize> {
    match k {
        0..9 => 17 + k..18 + k,
        9..12 => 26 + 3 * (k - 9)..29 + 3 * (k - 9),
        14..17 => 35 + (k - 14)..36 + (k - 14),
        _ => 0..0,
    }
}

impl StatReader {
    pub fn new(lua: &Lua) -> mlua::Result<StatReader> {
        let keys = lua.create_sequence_from(STAT_KEYS)?;
        Ok(StatReader {
            raw: RawTables::new(lua, &keys),
        })
    }

    pub fn decode(&self, t: &Table, d: &StatDefaults) -> Conv<Stat> {
        match self.read_plain(Src::Table(t), 9) {
            Some(v) => Stat::from_ints(&v, d),
            None => Stat::from_lua(t, d),
        }
    }

    /// The fields of a call's stat table in the common form, read into `out` where the call
    /// left its results (`true`, the table, ...) on the stack of coroutine `co`; false for
    /// anything else (the results are then taken as values and decoded as usual).
    ///
    /// # Safety
    /// `co` is a coroutine that just returned `nres` results, and nothing runs or allocates
    /// in `co`'s Lua state during the call.
    pub unsafe fn peek(
        &self,
        co: *mut mlua::ffi::lua_State,
        nres: std::ffi::c_int,
        out: &mut [Option<i64>; 15],
    ) -> bool {
        use mlua::ffi;
        let Some(raw) = self.raw.as_ref() else {
            return false;
        };
        unsafe {
            if nres < 2
                || ffi::lua_type(co, 1) != ffi::LUA_TBOOLEAN
                || ffi::lua_toboolean(co, 1) == 0
                || ffi::lua_type(co, 2) != ffi::LUA_TTABLE
            {
                return false;
            }
            read_raw_table(
                raw,
                ffi::lua_topointer(co, 2) as *mut std::ffi::c_void,
                9,
                out,
            )
        }
    }

    /// `decode` of `tables[i]` (a readdir listing keeps its stat tables in one Lua array).
    pub fn decode_item(&self, tables: &StatList, i: i64, d: &StatDefaults) -> Conv<Stat> {
        match self.read_plain(Src::Item(tables, i), 9) {
            Some(v) => Stat::from_ints(&v, d),
            None => Stat::from_lua(&Self::item(&tables.table, i)?, d),
        }
    }

    /// Start fetching from memory what `mode_ino_item(tables, i)` reads (changes no result):
    /// the stat table's head, or the slots of its mode and ino, for which the head is read
    /// (asked for by an earlier call). A listing's stat tables are spread over memory, and a
    /// cache miss each costs more than reading them.
    pub fn prefetch_item(&self, tables: &StatList, i: i64, what: Prefetch) {
        use crate::luaraw::Field;
        let Some(raw) = self.raw.as_ref() else {
            return;
        };
        // SAFETY: `tables` is alive (its `at` is its table's) and holds the entry's table;
        // nothing runs in between.
        unsafe {
            if let Field::Table(t) = raw.geti(tables.at, i) {
                match what {
                    Prefetch::Head => RawTables::prefetch_head(t),
                    Prefetch::Fields => raw.prefetch_slots(t, &[0, 1]),
                }
            }
        }
    }

    /// The script's ino of `tables[i]` when the table is in the common form, by raw reads
    /// only (`None` otherwise, and for a Lua that fails `luaraw`'s checks): for a listing to
    /// ask for the inode table's slot ahead.
    pub fn raw_ino_item(&self, tables: &StatList, i: i64) -> Option<u64> {
        raw_mode_ino(self.raw.as_ref()?, tables, i).map(|(_, ino)| ino)
    }

    /// Only the mode and the script's ino of `tables[i]` (what a plain READDIR entry needs):
    /// two reads in the common form.
    pub fn mode_ino_item(&self, tables: &StatList, i: i64, d: &StatDefaults) -> Conv<(u32, u64)> {
        if let Some(raw) = self.raw.as_ref()
            && let Some(mode_ino) = raw_mode_ino(raw, tables, i)
        {
            return Ok(mode_ino);
        }
        self.decode_item(tables, i, d).map(|st| (st.mode, st.ino))
    }

    fn item(tables: &Table, i: i64) -> Conv<Table> {
        tables
            .raw_get::<Table>(i)
            .or_else(|_| bad("expected a stat table"))
    }

    /// The first `ints` integer fields and, when all 9 are asked for, the times of a table
    /// in the common form (15 fields, absent ones `None`); `None` for any other form, and
    /// for every table on a Lua that fails `luaraw`'s layout checks.
    fn read_plain(&self, src: Src, ints: usize) -> Option<[Option<i64>; 15]> {
        read_raw(self.raw.as_ref()?, src, ints)
    }
}

/// `StatReader::read_plain` through Lua's own table lookups (no stack traffic, one hash probe
/// per field).
fn read_raw(raw: &RawTables, src: Src, ints: usize) -> Option<[Option<i64>; 15]> {
    use crate::luaraw::Field;
    // SAFETY: the tables are alive (held by `src`, or by the table holding them) and nothing
    // runs or allocates while their pointers are used.
    unsafe {
        let t = match src {
            Src::Table(t) => RawTables::ptr(t),
            Src::Item(tables, i) => match raw.geti(tables.at, i) {
                Field::Table(t) => t,
                _ => return None,
            },
        };
        let mut v = [None; 15];
        read_raw_table(raw, t, ints, &mut v).then_some(v)
    }
}

/// The mode and ino (0 when absent) of `tables[i]` in the common form, through `luaraw`: what
/// a plain READDIR entry needs, read without the 15-field array of `read_raw`.
fn raw_mode_ino(raw: &RawTables, tables: &StatList, i: i64) -> Option<(u32, u64)> {
    use crate::luaraw::Field;
    // SAFETY: `tables` is alive (its `at` is its table's, which Lua does not move) and holds
    // the entry's table; nothing runs in between.
    unsafe {
        let Field::Table(t) = raw.geti(tables.at, i) else {
            return None;
        };
        if raw.has_metatable(t) {
            return None;
        }
        let Field::Int(mode) = raw.get(t, 0) else {
            return None;
        };
        let ino = match raw.get(t, 1) {
            Field::Absent if raw_absent(raw, t, 1) => 0,
            Field::Int(ino) => u64::try_from(ino).ok()?,
            _ => return None,
        };
        let mode = u32::try_from(mode).ok().filter(|m| *m <= 0o177777)?;
        Some((mode, ino))
    }
}

/// Whether field `k`, absent from table `t` under its Flu name, is absent under its other
/// names too.
///
/// # Safety
/// As for `read_raw_table`.
unsafe fn raw_absent(raw: &RawTables, t: *mut std::ffi::c_void, k: usize) -> bool {
    use crate::luaraw::Field;
    aliases(k).all(|a| matches!(unsafe { raw.get(t, a) }, Field::Absent))
}

/// `read_raw` of the table at `t`, into `v` (every slot written); false when the table is
/// not in the common form (`v` then holds nothing of use).
///
/// # Safety
/// `t` is a live table, and nothing runs or allocates while this reads it.
unsafe fn read_raw_table(
    raw: &RawTables,
    t: *mut std::ffi::c_void,
    ints: usize,
    v: &mut [Option<i64>; 15],
) -> bool {
    use crate::luaraw::Field;
    unsafe {
        if raw.has_metatable(t) {
            return false;
        }
        let int = |t, k| match raw.get(t, k) {
            Field::Absent => Ok(None),
            Field::Int(v) => Ok(Some(v)),
            _ => Err(()),
        };
        // A field of the stat table itself, absent only when none of its names is there.
        let field = |k| match raw.get(t, k) {
            Field::Absent if raw_absent(raw, t, k) => Ok(None),
            Field::Int(v) => Ok(Some(v)),
            _ => Err(()),
        };
        *v = [None; 15];
        for (k, slot) in v.iter_mut().enumerate().take(ints.min(9)) {
            match field(k) {
                Ok(x) => *slot = x,
                Err(()) => return false,
            }
        }
        if v[0].is_none() {
            return false;
        }
        let times = if ints >= 9 { 3 } else { 0 };
        for i in 0..times {
            let (sec, nsec) = match raw.get(t, 9 + i) {
                Field::Absent if raw_absent(raw, t, 9 + i) => (None, None),
                Field::Int(s) => match field(14 + i) {
                    Ok(n) => (Some(s), Some(n.unwrap_or(0))),
                    Err(()) => return false,
                },
                Field::Table(time) if !raw.has_metatable(time) => {
                    match (int(time, 12), int(time, 13)) {
                        (Ok(Some(s)), Ok(n)) => (Some(s), Some(n.unwrap_or(0))),
                        _ => return false,
                    }
                }
                _ => return false,
            };
            v[9 + 2 * i] = sec;
            v[10 + 2 * i] = nsec;
        }
        true
    }
}

/// The type name Lua's own messages use (`type(v)`).
pub fn lua_type(v: &Value) -> &'static str {
    match v {
        Value::Integer(_) | Value::Number(_) => "number",
        Value::LightUserData(_) => "userdata",
        v => v.type_name(),
    }
}

/// Raise a Lua error `prefix .. type name of t .. suffix` from a C function (Lua's own words
/// for a bad argument: "bad argument #1 to 'f' (table expected, got number)"). Nothing of Rust
/// may be alive in the caller's frame: the error does not return.
///
/// # Safety
/// `state` is the running state of a C function called by Lua.
pub unsafe fn raise_with_type(
    state: *mut mlua::ffi::lua_State,
    prefix: &std::ffi::CStr,
    t: std::ffi::c_int,
    suffix: &std::ffi::CStr,
) -> ! {
    use mlua::ffi;
    unsafe {
        ffi::lua_pushstring(state, prefix.as_ptr());
        ffi::lua_pushstring(state, ffi::lua_typename(state, t));
        ffi::lua_pushstring(state, suffix.as_ptr());
        ffi::lua_concat(state, 3);
        ffi::lua_error(state)
    }
}

/// A C closure of `f` over the `n` upvalues `push` puts on the stack, as an mlua function:
/// stack space is checked first, and the stack is left as it was (also when `push` fails).
///
/// # Safety
/// `f` may rely only on what `push` gives it (and what that keeps alive); `push` pushes
/// exactly `n` values when it succeeds.
pub unsafe fn c_closure(
    lua: &Lua,
    f: mlua::ffi::lua_CFunction,
    n: std::ffi::c_int,
    push: impl FnOnce(&mlua::state::RawLua) -> mlua::Result<()>,
) -> mlua::Result<mlua::Function> {
    use mlua::ffi;
    unsafe {
        lua.exec_raw_lua(|raw| {
            let state = raw.state();
            if ffi::lua_checkstack(state, n + 2) == 0 {
                return Err(mlua::Error::StackError);
            }
            let top = ffi::lua_gettop(state);
            if let Err(e) = push(raw) {
                ffi::lua_settop(state, top);
                return Err(e);
            }
            ffi::lua_pushcclosure(state, f, n);
            let c = <mlua::Function as mlua::FromLua>::from_stack(-1, raw);
            ffi::lua_settop(state, top);
            c
        })
    }
}

/// A module function's argument error in Lua's own words:
/// "bad argument #2 to 'get' (table or nil expected, got string)".
pub fn bad_arg(func: &str, pos: usize, want: &str, got: &Value) -> mlua::Error {
    mlua::Error::runtime(format!(
        "bad argument #{pos} to '{func}' ({want} expected, got {})",
        lua_type(got)
    ))
}

/// The fuser file type of a mode (a mode without type bits counts as a regular file).
pub fn file_type(mode: u32) -> fuser::FileType {
    use fuser::FileType::*;
    match mode & libc::S_IFMT {
        libc::S_IFDIR => Directory,
        libc::S_IFLNK => Symlink,
        libc::S_IFIFO => NamedPipe,
        libc::S_IFCHR => CharDevice,
        libc::S_IFBLK => BlockDevice,
        libc::S_IFSOCK => Socket,
        _ => RegularFile,
    }
}

/// Filesystem statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statfs {
    pub bsize: u32,
    pub frsize: u32,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub namemax: u32,
}

impl Default for Statfs {
    /// What libfuse answers when a filesystem has no statfs.
    fn default() -> Self {
        Statfs {
            bsize: 512,
            frsize: 512,
            blocks: 0,
            bfree: 0,
            bavail: 0,
            files: 0,
            ffree: 0,
            namemax: 255,
        }
    }
}

impl Statfs {
    pub fn from_lua(t: &Table) -> Conv<Statfs> {
        let mut s = Statfs::default();
        let mut frsize_set = false;
        for (names, slot) in [
            (["bsize", "f_bsize"], 0),
            (["frsize", "f_frsize"], 1),
            (["blocks", "f_blocks"], 2),
            (["bfree", "f_bfree"], 3),
            (["bavail", "f_bavail"], 4),
            (["files", "f_files"], 5),
            (["ffree", "f_ffree"], 6),
            (["namemax", "f_namemax"], 7),
        ] {
            let mut v = Value::Nil;
            for n in names {
                v = t.get(n).map_err(|e| BadValue(e.to_string()))?;
                if !v.is_nil() {
                    break;
                }
            }
            if v.is_nil() {
                continue;
            }
            match slot {
                0 => s.bsize = as_u32(&v, "bsize")?,
                1 => {
                    s.frsize = as_u32(&v, "frsize")?;
                    frsize_set = true;
                }
                2 => s.blocks = as_u64(&v, "blocks")?,
                3 => s.bfree = as_u64(&v, "bfree")?,
                4 => s.bavail = as_u64(&v, "bavail")?,
                5 => s.files = as_u64(&v, "files")?,
                6 => s.ffree = as_u64(&v, "ffree")?,
                _ => s.namemax = as_u32(&v, "namemax")?,
            }
        }
        if !frsize_set {
            s.frsize = s.bsize;
        }
        Ok(s)
    }
}

/// A POSIX record lock as scripts see it: `{type=, start=, len=, pid=}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lock {
    pub typ: i32,
    pub start: u64,
    /// Inclusive end offset as the kernel sends it (`u64::MAX`/`OFFSET_MAX` = to end of file).
    pub end: u64,
    pub pid: u32,
}

const OFFSET_MAX: u64 = i64::MAX as u64;

fn lock_type_name(t: i32) -> &'static str {
    match t {
        libc::F_RDLCK => "rdlck",
        libc::F_WRLCK => "wrlck",
        _ => "unlck",
    }
}

impl Lock {
    pub fn into_lua_table(self, lua: &Lua) -> mlua::Result<Table> {
        let t = lua.create_table_with_capacity(0, 4)?;
        t.raw_set("type", lock_type_name(self.typ))?;
        t.raw_set("start", self.start)?;
        let len = if self.end >= OFFSET_MAX {
            0
        } else {
            self.end.saturating_sub(self.start) + 1
        };
        t.raw_set("len", len)?;
        t.raw_set("pid", self.pid)?;
        Ok(t)
    }

    pub fn from_lua(t: &Table) -> Conv<Lock> {
        let typ = match t
            .get::<Value>("type")
            .map_err(|e| BadValue(e.to_string()))?
        {
            Value::String(s) => match &*s.to_string_lossy() {
                "rdlck" | "F_RDLCK" => libc::F_RDLCK,
                "wrlck" | "F_WRLCK" => libc::F_WRLCK,
                "unlck" | "F_UNLCK" => libc::F_UNLCK,
                other => return bad(format!("lock type {other:?} unknown")),
            },
            v @ (Value::Integer(_) | Value::Number(_)) => as_int(&v, "type")? as i32,
            Value::Nil => libc::F_UNLCK,
            v => return bad(format!("lock type: got {}", type_name(&v))),
        };
        let get = |k: &str| -> Conv<u64> {
            match t.get::<Value>(k).map_err(|e| BadValue(e.to_string()))? {
                Value::Nil => Ok(0),
                v => as_u64(&v, k),
            }
        };
        let start = get("start")?;
        let len = get("len")?;
        let pid = u32::try_from(get("pid")?).unwrap_or(0);
        let end = if len == 0 {
            OFFSET_MAX
        } else {
            start.saturating_add(len - 1)
        };
        Ok(Lock {
            typ,
            start,
            end,
            pid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lua() -> Lua {
        Lua::new()
    }

    #[test]
    fn stat_from_ints_names_the_field_out_of_range() {
        let d = defaults();
        let mut v = [None; 15];
        v[0] = Some(0o100644);
        let Ok(ok) = Stat::from_ints(&v, &d) else {
            panic!("a mode alone is a stat");
        };
        assert_eq!((ok.nlink, ok.blksize, ok.uid), (1, 4096, d.uid));
        let err = |i: usize, n: i64| {
            let mut w = v;
            w[i] = Some(n);
            Stat::from_ints(&w, &d).err().map(|e| e.0)
        };
        assert_eq!(err(3, -1).as_deref(), Some("uid: -1 is out of range"));
        assert_eq!(err(6, -5).as_deref(), Some("size: negative value -5"));
        assert_eq!(
            err(0, 1 << 20).as_deref(),
            Some("mode: 1048576 is not a valid mode")
        );
        let mut w = v;
        (w[11], w[12]) = (Some(5), Some(1_000_000_000));
        assert_eq!(
            Stat::from_ints(&w, &d).err().map(|e| e.0).as_deref(),
            Some("modification: nsec out of range")
        );
    }

    fn defaults() -> StatDefaults {
        StatDefaults {
            uid: 7,
            gid: 8,
            time: Timespec { sec: 100, nsec: 5 },
        }
    }

    fn stat_of(lua: &Lua, src: &str) -> Conv<Stat> {
        let t: Table = lua.load(src).eval().expect("table");
        Stat::from_lua(&t, &defaults())
    }

    #[test]
    fn mode_forms() {
        let lua = lua();
        let v: Value = lua
            .load("{reg=true, rusr=true, wusr=1, xoth=false}")
            .eval()
            .unwrap();
        assert_eq!(mode_from_lua(&v), Ok(libc::S_IFREG | 0o600));
        let v: Value = lua.load("'directory'").eval().unwrap();
        assert_eq!(mode_from_lua(&v), Ok(libc::S_IFDIR | 0o770));
        let v: Value = lua.load("33188").eval().unwrap();
        assert_eq!(mode_from_lua(&v), Ok(0o100644));
        let v: Value = lua.load("33188.0").eval().unwrap();
        assert_eq!(mode_from_lua(&v), Ok(0o100644));
        for src in ["{regular=true}", "'fiel'", "-1", "1.5", "true", "2^40"] {
            let v: Value = lua.load(src).eval().unwrap();
            assert!(mode_from_lua(&v).is_err(), "{src} should be rejected");
        }
    }

    #[test]
    fn mode_set_round_trip() {
        let lua = lua();
        let t = Names::new(&lua)
            .unwrap()
            .mode_set(&lua, libc::S_IFDIR | 0o2755)
            .unwrap();
        assert!(t.get::<bool>("dir").unwrap());
        assert!(t.get::<bool>("sgid").unwrap());
        assert_eq!(t.get::<Option<bool>>("woth").unwrap(), None);
        assert_eq!(mode_from_lua(&Value::Table(t)), Ok(libc::S_IFDIR | 0o2755));
    }

    #[test]
    fn time_forms() {
        let lua = lua();
        let v: Value = lua.load("1.25").eval().unwrap();
        assert_eq!(
            time_from_lua(&v, "t"),
            Ok(Timespec {
                sec: 1,
                nsec: 250_000_000
            })
        );
        let v: Value = lua.load("-1.5").eval().unwrap();
        assert_eq!(
            time_from_lua(&v, "t"),
            Ok(Timespec {
                sec: -2,
                nsec: 500_000_000
            })
        );
        let v: Value = lua.load("{sec=3, nsec=999999999}").eval().unwrap();
        assert_eq!(
            time_from_lua(&v, "t"),
            Ok(Timespec {
                sec: 3,
                nsec: 999_999_999
            })
        );
        let v: Value = lua.load("{sec=3, nsec=1000000000}").eval().unwrap();
        assert!(time_from_lua(&v, "t").is_err());
        let v: Value = lua.load("'yesterday'").eval().unwrap();
        assert!(time_from_lua(&v, "t").is_err());
    }

    #[test]
    fn timespec_system_round_trip() {
        for ts in [
            Timespec { sec: 0, nsec: 0 },
            Timespec {
                sec: 1_700_000_000,
                nsec: 123,
            },
            Timespec { sec: -5, nsec: 250 },
        ] {
            assert_eq!(Timespec::from_system(ts.to_system()), ts);
        }
    }

    /// fuser 0.18's `system_time_from_time` (private): what a SETATTR time becomes.
    fn fuser_setattr_time(sec: i64, nsec: u32) -> SystemTime {
        if sec >= 0 {
            UNIX_EPOCH + Duration::new(sec as u64, nsec)
        } else {
            UNIX_EPOCH - Duration::new(sec.unsigned_abs(), nsec)
        }
    }

    #[test]
    fn setattr_times_before_the_epoch() {
        for (sec, nsec) in [
            (-2, 250_000_000),            // 1969-12-31 23:59:58.25
            (-1, 999_999_999),            // 1 ns before the epoch
            (-86_400, 500),               // one day before, plus 500 ns
            (-1, 0),                      // whole seconds were always right
            (-1_000_000_000_000, 1),      // far in the past
            (0, 0),                       // the epoch
            (0, 1),                       // just after
            (1_700_000_000, 123_456_789), // the usual case
        ] {
            let want = Timespec { sec, nsec };
            assert_eq!(
                Timespec::from_fuser_setattr(fuser_setattr_time(sec, nsec)),
                want,
                "({sec}, {nsec})"
            );
        }
        // The bug worked around: the plain conversion is off by one second.
        assert_eq!(
            Timespec::from_system(fuser_setattr_time(-2, 250_000_000)),
            Timespec {
                sec: -3,
                nsec: 750_000_000
            }
        );
        // The ends of the range.
        for (sec, nsec) in [(i64::MIN, 0), (i64::MIN + 1, 999_999_999)] {
            assert_eq!(
                Timespec::from_fuser_setattr(UNIX_EPOCH - Duration::new(sec.unsigned_abs(), nsec)),
                Timespec { sec, nsec },
            );
        }
    }

    /// Whenever the fast reads through Lua's own table lookups (`luaraw`) take a table, they
    /// see what the general decoder (`Stat::from_lua`, used for every other table and on a
    /// Lua that fails the layout checks) sees, in every form of table.
    #[test]
    fn raw_stat_reads_agree_with_the_general_decoder() {
        let lua = lua();
        let d = defaults();
        let raw = StatReader::new(&lua).unwrap();
        assert!(raw.raw.is_some(), "this Lua passes the layout checks");
        let forms = [
            "{mode = 33188}",
            "{mode = 33188, ino = 9, nlink = 3, uid = 1, gid = 2, rdev = 5, size = 4096, \
              blocks = 8, blksize = 512, access = 10, modification = {sec = 11, nsec = 12}, \
              change = {sec = 13}}",
            "{mode = 16877, size = -1, access = {nsec = 1}}",
            "{mode = 33188, size = 1.5}",
            "{mode = '0644'}",
            "{size = 3}",
            "{mode = 33188, access = setmetatable({sec = 1}, {})}",
            "setmetatable({mode = 33188}, {})",
            "{mode = 33188, access = 'now'}",
            "{mode = 33188, [1] = 2, extra = {}}",
            "{mode = 33188, access = 5, access_nsec = 6, modification = 7, change_nsec = 8, \
              change = {sec = 9, nsec = 10}}",
            "{mode = 33188, access = 5, access_nsec = 2.5}",
            "{mode = 33188, access = 5, access_nsec = 2000000000}",
            "{mode = 33188, mtime = 5}",
            "{mode = 33188, st_ino = 5}",
            "{mode = 33188, access = 5, st_access_nsec = 5}",
        ];
        let mut taken = 0;
        for src in forms {
            let t: Table = lua.load(format!("return {src}")).eval().unwrap();
            let general = Stat::from_lua(&t, &d).ok();
            if let Some(v) = raw.read_plain(Src::Table(&t), 9) {
                taken += 1;
                assert_eq!(Stat::from_ints(&v, &d).ok(), general, "{src}");
            }
            // A plain READDIR entry reads only mode and ino.
            if let (Some(v), Some(g)) = (raw.read_plain(Src::Table(&t), 2), &general) {
                let ino = v[1].unwrap_or(0);
                assert_eq!((v[0], ino), (Some(g.mode.into()), g.ino as i64), "{src}");
            }
            let list = StatList::new(lua.create_sequence_from([t]).unwrap());
            assert_eq!(
                raw.decode_item(&list, 1, &d).ok(),
                general,
                "{src} in a list"
            );
            assert_eq!(raw.read_plain(Src::Item(&list, 2), 9), None);
        }
        assert!(taken >= 5, "the fast reads took only {taken} of the forms");
    }

    #[test]
    fn nanoseconds_beside_whole_second_times() {
        let lua = lua();
        let d = defaults();
        let reader = StatReader::new(&lua).unwrap();
        let src = "return {mode = 33188, access = 5, access_nsec = 6, modification = 7, \
                   modification_nsec = 8, change = {sec = 9, nsec = 10}, change_nsec = 11}";
        let t: Table = lua.load(src).eval().unwrap();
        // The fast read and the general decode agree.
        for st in [
            reader.decode(&t, &d).unwrap(),
            Stat::from_lua(&t, &d).unwrap(),
        ] {
            assert_eq!((st.atime.sec, st.atime.nsec), (5, 6));
            assert_eq!((st.mtime.sec, st.mtime.nsec), (7, 8));
            // A time table keeps its own nanoseconds.
            assert_eq!((st.ctime.sec, st.ctime.nsec), (9, 10));
        }
        for mixed in [
            "return {mode = 33188, mtime = 5}",
            "return {mode = 33188, st_size = 5}",
        ] {
            let t: Table = lua.load(mixed).eval().unwrap();
            assert_eq!(
                reader.decode(&t, &d).unwrap(),
                Stat::from_lua(&t, &d).unwrap(),
                "{mixed}"
            );
        }
        // Out of range, or not an integer: the table is refused, whichever way it is read.
        for bad in [
            "return {mode = 33188, access = 5, access_nsec = 1000000000}",
            "return {mode = 33188, access = 5, access_nsec = -1}",
            "return {mode = 33188, access = 5, access_nsec = 'x'}",
        ] {
            let t: Table = lua.load(bad).eval().unwrap();
            assert!(reader.decode(&t, &d).is_err(), "{bad}");
        }
    }

    #[test]
    fn stat_flu_names_and_defaults() {
        let lua = lua();
        let st = stat_of(&lua, "{mode='file', size=1000}").unwrap();
        assert_eq!(st.mode, libc::S_IFREG | 0o660);
        assert_eq!(st.nlink, 1);
        assert_eq!(st.blocks, 2);
        assert_eq!((st.uid, st.gid), (7, 8));
        assert_eq!(st.mtime, Timespec { sec: 100, nsec: 5 });
        let st = stat_of(&lua, "{mode={dir=true, rusr=true}}").unwrap();
        assert_eq!(st.nlink, 2);
        let st = stat_of(
            &lua,
            "{mode=33188, nlink=3, uid=1, gid=2, size=5, blocks=9, access=1.5, \
             modification={sec=2, nsec=3}, change=4, ino=77, rdev=0}",
        )
        .unwrap();
        assert_eq!(
            (st.nlink, st.uid, st.gid, st.size, st.blocks, st.ino),
            (3, 1, 2, 5, 9, 77)
        );
        assert_eq!(
            st.atime,
            Timespec {
                sec: 1,
                nsec: 500_000_000
            }
        );
        assert_eq!(st.mtime, Timespec { sec: 2, nsec: 3 });
        assert_eq!(st.ctime, Timespec { sec: 4, nsec: 0 });
    }

    #[test]
    fn stat_python_fuse_names() {
        let lua = lua();
        let st = stat_of(
            &lua,
            "{st_mode=16877, st_nlink=5, st_size=4096, st_mtime=9}",
        )
        .unwrap();
        assert_eq!(st.mode, 0o40755);
        assert_eq!(st.nlink, 5);
        assert_eq!(st.mtime.sec, 9);
    }

    #[test]
    fn stat_with_metatable_uses_index() {
        let lua = lua();
        let st = stat_of(&lua, "setmetatable({}, {__index={mode='file', size=3}})").unwrap();
        assert_eq!(st.size, 3);
    }

    #[test]
    fn stat_rejects_bad_values() {
        let lua = lua();
        for src in [
            "{}",
            "{mode='file', size=-1}",
            "{mode='file', size='big'}",
            "{mode='file', nlink=2^40}",
            "{mode='file', modification='now'}",
            "{mode={bogus=true}}",
        ] {
            assert!(stat_of(&lua, src).is_err(), "{src} should be rejected");
        }
    }

    #[test]
    fn stat_back_to_lua() {
        let lua = lua();
        let st = stat_of(&lua, "{mode='file', size=10, modification=7.5}").unwrap();
        let t = st.into_lua_table(&lua).unwrap();
        let again = Stat::from_lua(&t, &defaults()).unwrap();
        assert_eq!(again, st);
    }

    #[test]
    fn statfs_names_and_aliases() {
        let lua = lua();
        let t: Table = lua
            .load("{bsize=4096, blocks=100, f_bfree=50, bavail=40, files=10, ffree=5, namemax=200}")
            .eval()
            .unwrap();
        let s = Statfs::from_lua(&t).unwrap();
        assert_eq!(
            (s.bsize, s.frsize, s.blocks, s.bfree, s.bavail),
            (4096, 4096, 100, 50, 40)
        );
        assert_eq!((s.files, s.ffree, s.namemax), (10, 5, 200));
        let t: Table = lua.load("{flag={rdonly=true}, fsid=3}").eval().unwrap();
        assert_eq!(Statfs::from_lua(&t), Ok(Statfs::default()));
        let t: Table = lua.load("{blocks=-3}").eval().unwrap();
        assert!(Statfs::from_lua(&t).is_err());
    }

    #[test]
    fn open_flag_sets() {
        let lua = lua();
        let names = Names::new(&lua).unwrap();
        let flags_of = |f| {
            names
                .fi(&lua, f, false, false, false)
                .unwrap()
                .get::<Table>("flags")
                .unwrap()
        };
        let t = flags_of(libc::O_WRONLY | libc::O_APPEND);
        assert!(t.get::<bool>("wronly").unwrap());
        assert!(t.get::<bool>("O_WRONLY").unwrap());
        assert!(t.get::<bool>("append").unwrap());
        assert!(t.get::<bool>("O_APPEND").unwrap());
        assert!(t.get::<Option<bool>>("rdonly").unwrap().is_none());
        let t = flags_of(libc::O_RDONLY);
        assert!(t.get::<bool>("rdonly").unwrap());
        let t = flags_of(libc::O_RDWR | libc::O_NONBLOCK | libc::O_SYNC);
        for k in [
            "rdwr", "nonblock", "ndelay", "sync", "dsync", "O_NDELAY", "O_DSYNC",
        ] {
            assert!(t.get::<bool>(k).unwrap(), "{k}");
        }
    }

    /// A new `fi` holds the open-flag set (exactly the names `mode::open_flag_names` gives,
    /// each also as `O_*`), and direct_io, keep_cache and nonseekable as asked.
    /// Both ways of making one: a copy of the template, and built key by key (a Lua that
    /// fails `Cloner`'s checks).
    #[test]
    fn fi_tables_hold_every_open_flag_name() {
        let lua = lua();
        let names = Names::new(&lua).unwrap();
        assert!(
            names.fi_template.is_some(),
            "this Lua passes luaraw's checks"
        );
        fi_tables_hold_every_open_flag_name_in(&lua, &names);
        let names = Names {
            fi_template: None,
            ..names
        };
        fi_tables_hold_every_open_flag_name_in(&lua, &names);
    }

    fn fi_tables_hold_every_open_flag_name_in(lua: &Lua, names: &Names) {
        let mut combos = vec![0, libc::O_WRONLY, libc::O_RDWR, libc::O_ACCMODE];
        combos.extend(mode::OPEN_FLAGS.iter().map(|&(_, b)| b | libc::O_RDWR));
        combos.push(
            mode::OPEN_FLAGS
                .iter()
                .fold(libc::O_WRONLY, |a, &(_, b)| a | b),
        );
        for flags in combos {
            let fi = names.fi(lua, flags, false, flags % 2 == 1, true).unwrap();
            assert_eq!(fi.get::<bool>("direct_io").unwrap(), flags % 2 == 1);
            assert!(fi.get::<bool>("keep_cache").unwrap());
            assert!(!fi.get::<bool>("nonseekable").unwrap());
            let mut got: Vec<String> = fi
                .get::<Table>("flags")
                .unwrap()
                .pairs::<String, bool>()
                .map(|kv| kv.unwrap().0)
                .collect();
            got.sort();
            let mut want: Vec<String> = mode::open_flag_names(flags)
                .into_iter()
                .flat_map(|n| [n.to_string(), format!("O_{}", n.to_ascii_uppercase())])
                .collect();
            want.sort();
            want.dedup();
            assert_eq!(got, want, "{flags:#o}");
        }
    }

    /// Both ways of reading (`luaraw`, and the C API when a Lua fails its checks).
    #[test]
    fn fi_flags_reads_what_a_script_set_by_truthiness() {
        let lua = lua();
        let names = Names::new(&lua).unwrap();
        assert!(names.fi_raw.is_some(), "this Lua passes luaraw's checks");
        fi_flags_by_truthiness(&lua, &names);
        let names = Names {
            fi_raw: None,
            ..names
        };
        fi_flags_by_truthiness(&lua, &names);
    }

    fn fi_flags_by_truthiness(lua: &Lua, names: &Names) {
        let fi = names.fi(lua, libc::O_RDONLY, false, true, false).unwrap();
        assert_eq!(names.fi_flags(lua, &fi), [true, false, false, false]);
        // As a script sets them: any true value counts, nil and false do not.
        fi.set("direct_io", false).unwrap();
        fi.set("keep_cache", 1).unwrap();
        fi.set("nonseekable", "yes").unwrap();
        fi.set("cache_readdir", true).unwrap();
        assert_eq!(names.fi_flags(lua, &fi), [false, true, true, true]);
        fi.set("keep_cache", mlua::Value::Nil).unwrap();
        assert_eq!(names.fi_flags(lua, &fi), [false, false, true, true]);
        // With flags as a number, `flags` is the open(2) flags themselves.
        let fi = names
            .fi(lua, libc::O_WRONLY | libc::O_TRUNC, true, false, true)
            .unwrap();
        assert_eq!(
            fi.get::<i64>("flags").unwrap(),
            i64::from(libc::O_WRONLY | libc::O_TRUNC)
        );
        assert_eq!(names.fi_flags(lua, &fi), [false, true, false, false]);
        // Raw reads: a metatable's __index is not consulted.
        let mt = lua.create_table().unwrap();
        mt.set(
            "__index",
            lua.create_table_from([("direct_io", true)]).unwrap(),
        )
        .unwrap();
        fi.set_metatable(Some(mt)).unwrap();
        assert_eq!(names.fi_flags(lua, &fi), [false, true, false, false]);
    }

    /// Mode sets hold the type's name and one name per permission bit, nothing else.
    #[test]
    fn mode_sets_name_every_bit() {
        let lua = lua();
        let names = Names::new(&lua).unwrap();
        let keys = |t: Table| {
            let mut v: Vec<String> = t.pairs::<String, bool>().map(|kv| kv.unwrap().0).collect();
            v.sort();
            v
        };
        for (m, want) in [
            (0o100644, "reg rgrp roth rusr wusr"),
            (
                0o40755 | 0o2000,
                "dir rgrp roth rusr sgid wusr xgrp xoth xusr",
            ),
            (0o120777, "lnk rgrp roth rusr wgrp woth wusr xgrp xoth xusr"),
            (0o10000 | 0o4000 | 0o1000, "fifo suid svtx"),
        ] {
            assert_eq!(
                keys(names.mode_set(&lua, m).unwrap()).join(" "),
                want,
                "{m:o}"
            );
        }
    }

    #[test]
    fn lock_round_trip() {
        let lua = lua();
        let l = Lock {
            typ: libc::F_WRLCK,
            start: 10,
            end: 19,
            pid: 42,
        };
        let t = l.into_lua_table(&lua).unwrap();
        assert_eq!(t.get::<i64>("len").unwrap(), 10);
        assert_eq!(Lock::from_lua(&t), Ok(l));
        let whole = Lock {
            typ: libc::F_RDLCK,
            start: 0,
            end: OFFSET_MAX,
            pid: 1,
        };
        let t = whole.into_lua_table(&lua).unwrap();
        assert_eq!(t.get::<i64>("len").unwrap(), 0);
        assert_eq!(Lock::from_lua(&t), Ok(whole));
    }
}
