//! Directory listing: the `filler` handed to the script's readdir, and READDIR / READDIRPLUS
//! answered from what it collected. Without offsets the whole listing is taken once per open
//! (at offset 0) and served across as many kernel requests as it needs; with offsets
//! (`filler(name, st, off)`), each kernel request calls readdir again from its offset and
//! `filler` returns false once a kernel buffer's worth is collected.
//!
//! A directory's last listing is kept, also after its close, for as long as the kernel would
//! keep attributes (`Kept`): a LOOKUP of a listed name then gets the stat table readdir gave
//! it, as READDIRPLUS would have, instead of a getattr call.

use foldhash::HashMap;
use foldhash::HashMapExt;
use std::cell::{Cell, RefCell};
use std::collections::hash_map::Entry;
use std::ffi::{OsStr, c_int, c_void};
use std::hash::BuildHasher;
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;
use std::time::Instant;

use fuser::{Errno, FileType, Generation, INodeNo};

use crate::replies::{ReplyDirectory, ReplyDirectoryPlus};
use mlua::{Function, IntoLua, Lua, Table, ffi};

use super::Dispatch;
use crate::convert::Bytes;
use crate::convert::{self, Prefetch, Stat, StatList};
use crate::inodes::join;
use crate::luaraw::{Key, Walker};
use crate::ops::OpName;

/// One collected entry.
pub(super) struct DirEnt {
    /// Where its name is in the listing's `names` (a name has at most 255 bytes).
    name_at: u32,
    name_len: u8,
    /// Whether the script gave a stat table (kept in the listing's `tables` at this entry's
    /// position, read only when the entry is sent: a plain READDIR needs just its mode and ino).
    has_table: bool,
    /// The script's offset (offset mode) or 0.
    offset: u64,
}

impl DirEnt {
    /// This entry's name in `names`, the names of its listing one after another.
    fn name<'a>(&self, names: &'a [u8]) -> &'a [u8] {
        let at = self.name_at as usize;
        &names[at..at + self.name_len as usize]
    }
}

/// What one readdir call collected: the entries, their names one after another (one
/// allocation per listing, not one per name), the stat tables the script gave (`tables[i]`
/// belongs to `entries[i - 1]`), and the attributes getattr gave entries without a table.
pub(super) struct Listing {
    entries: Vec<DirEnt>,
    names: Vec<u8>,
    tables: StatList,
    /// By entry position; empty when every entry came with a table.
    stats: Vec<Option<Stat>>,
    /// When readdir was called for it, and `Dispatch::changes` then: a listing taken when
    /// it had another value may hold stale attributes.
    taken: Instant,
    stamp: u64,
    /// The node id and type each entry was sent with in a plain READDIR ((0, _): not yet),
    /// good while the inode table's `unnamings(dir)` is `nodes_at`: a listing served again
    /// (a new open of an unchanged directory, `fs.reuse_listings`) looks no name up and reads
    /// no stat table.
    nodes: RefCell<Vec<(u64, FileType)>>,
    nodes_at: Cell<(u64, u64)>,
}

impl Listing {
    fn name(&self, e: &DirEnt) -> &[u8] {
        e.name(&self.names)
    }

    fn stat(&self, i: usize) -> Option<&Stat> {
        self.stats.get(i).and_then(Option::as_ref)
    }
}

/// The reply a listing goes into.
pub(super) enum DirReply {
    Plain(ReplyDirectory),
    Plus(ReplyDirectoryPlus),
}

impl DirReply {
    fn error(self, e: Errno) {
        match self {
            DirReply::Plain(r) => r.error(e),
            DirReply::Plus(r) => r.error(e),
        }
    }

    fn ok(self) {
        match self {
            DirReply::Plain(r) => r.ok(),
            DirReply::Plus(r) => r.ok(),
        }
    }

    fn plus(&self) -> bool {
        matches!(self, DirReply::Plus(_))
    }
}

/// How many entries ahead a plain READDIR asks for the heads of stat tables, for their
/// fields, and for where the inode table maps their ino (see `prefetch_ahead`): a first
/// listing is bound by cache misses (its stat tables are spread over memory), not by
/// instructions.
const PREFETCH_HEADS: usize = 16;
const PREFETCH_FIELDS: usize = 8;
const PREFETCH_NODE: usize = 4;

/// What a kernel readdir buffer holds (one page), and the size of an entry in it.
const KERNEL_BUFFER: usize = 4096;

fn entry_size(name_len: usize, plus: bool) -> usize {
    let header = if plus { 24 + 128 } else { 24 };
    (header + name_len).next_multiple_of(8)
}

#[derive(Default)]
struct Sink {
    /// The directory listed.
    dir: u64,
    plus: bool,
    entries: Vec<DirEnt>,
    names: Vec<u8>,
    used_offsets: bool,
    bytes: usize,
}

impl Sink {
    /// Record an entry; its position (from 1), or `None` when the names reach 4 GiB (the
    /// listing is cut there, as with a full buffer).
    fn push(&mut self, name: &[u8], has_table: bool, offset: u64) -> Option<usize> {
        let name_at = u32::try_from(self.names.len()).ok()?;
        self.names.extend_from_slice(name);
        self.entries.push(DirEnt {
            name_at,
            name_len: name.len() as u8,
            has_table,
            offset,
        });
        Some(self.entries.len())
    }
}

/// The sinks of the readdir calls in progress (several may be suspended at once), by id.
type Sinks = RefCell<HashMap<u64, Sink>>;

/// What every filler of a mount reaches through its first upvalue.
struct Shared {
    sinks: Sinks,
    /// How `filler(t)` walks `t` when this Lua passes `luaraw`'s checks; the C API otherwise.
    walker: Option<Walker>,
}

/// Makes one `filler` per readdir call and collects what it is given.
pub(super) struct Lister {
    /// Leaked once per mount: every filler holds a pointer to it, and a script may keep a
    /// filler (and call it, getting an error) for as long as the Lua state lives.
    shared: &'static Shared,
    next: Cell<u64>,
    /// How many entries the last listing of a directory had, and how many bytes of names: the
    /// table a listing's stat tables go into, and its entries and names, are made that size
    /// and do not grow (rehash, copy) entry by entry.
    sizes: RefCell<HashMap<u64, (u32, u32)>>,
    /// The last listing of each directory listed lately (see `Kept`).
    kept: RefCell<HashMap<u64, Kept>>,
}

/// Directories whose listing size `Lister` remembers (forgotten all at once beyond).
const SIZES_KEPT: usize = 4096;

/// Directories whose last listing `Lister` keeps (see `Kept`).
const LISTINGS_KEPT: usize = 64;

/// The last listing of a directory (shared with the open directory it was taken for, kept
/// after its close) while the kernel would trust attributes sent with it (attr_timeout and
/// entry_timeout from when it was taken), and while no request that may change attributes
/// has come in since (`Dispatch::changes`). A LOOKUP of a name in it is answered from the
/// entry's stat table (as READDIRPLUS would have sent it) without calling getattr: a
/// directory listed and then statted (`os.listdir` and `os.lstat`, `du`, `ls -l` chunk by
/// chunk) costs one script call, not one per entry.
struct Kept {
    listing: Rc<Listing>,
    until: Instant,
    /// Position of each name by its hash, made at the first lookup (`u32::MAX`: two names
    /// share the hash; they are looked up the usual way).
    index: Option<HashMap<u64, u32>>,
}

impl Kept {
    fn position(&mut self, name: &[u8]) -> Option<usize> {
        let hasher = foldhash::fast::FixedState::with_seed(0x5eed);
        let listing = &self.listing;
        let index = self.index.get_or_insert_with(|| {
            let mut index = HashMap::with_capacity(listing.entries.len());
            for (i, e) in listing.entries.iter().enumerate() {
                let h = hasher.hash_one(listing.name(e));
                index
                    .entry(h)
                    .and_modify(|at| *at = u32::MAX)
                    .or_insert(i as u32);
            }
            index
        });
        let i = *index.get(&hasher.hash_one(name))? as usize;
        let e = listing.entries.get(i)?;
        (listing.name(e) == name).then_some(i)
    }
}

/// Why `filler` refuses an entry.
enum Refusal {
    NotString(c_int),
    /// `filler(t)`: a key of `t` that is not a string.
    KeyNotString(c_int),
    StackFull,
    /// The invalid name is at this (absolute) stack index.
    BadName(c_int),
    BadOffset(c_int),
    NotTable(c_int),
    Closed,
}

/// `filler(name [, st [, offset]])`: a C closure per readdir call (upvalues: the sinks, the id
/// of this call's sink, and the table its stat tables go into), so that an entry costs one
/// call. Returns true, or false once a kernel buffer is full in offset mode. Raises a Lua
/// error for bad arguments (nothing of Rust is alive then).
///
/// Beyond Flu, `filler(t)` adds every entry of table `t` at once (name -> stat table, or any
/// other value for an entry without attributes), in `next` order: a script that keeps its
/// entries in a table lists them with no Lua loop and no call per entry.
unsafe extern "C-unwind" fn filler(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        let shared = ffi::lua_touserdata(state, ffi::lua_upvalueindex(1)) as *const Shared;
        if shared.is_null() {
            return 0;
        }
        let (shared, sinks) = (&*shared, &(*shared).sinks);
        let id = ffi::lua_tointegerx(state, ffi::lua_upvalueindex(2), std::ptr::null_mut());
        if ffi::lua_type(state, 1) == ffi::LUA_TTABLE {
            if let Err(r) = record_table(state, shared, id as u64) {
                refuse(state, r);
            }
            ffi::lua_pushboolean(state, 1);
            return 1;
        }
        match record(state, sinks, id as u64) {
            Ok(Some(i)) => {
                if ffi::lua_type(state, 2) == ffi::LUA_TTABLE {
                    ffi::lua_pushvalue(state, 2);
                    ffi::lua_rawseti(state, ffi::lua_upvalueindex(3), i as ffi::lua_Integer);
                }
                ffi::lua_pushboolean(state, 1);
            }
            Ok(None) => ffi::lua_pushboolean(state, 0),
            Err(r) => refuse(state, r),
        }
        1
    }
}

/// Record the entry `filler(name, st, off)` was given (its position from 1); `Ok(None)` when
/// the kernel buffer is full.
unsafe fn record(
    state: *mut ffi::lua_State,
    sinks: &Sinks,
    id: u64,
) -> Result<Option<usize>, Refusal> {
    unsafe {
        let t = ffi::lua_type(state, 1);
        if t != ffi::LUA_TSTRING {
            return Err(Refusal::NotString(t));
        }
        let name = checked_name(state, 1)?;
        let offset = match ffi::lua_type(state, 3) {
            ffi::LUA_TNIL | ffi::LUA_TNONE => 0,
            t => {
                let mut isint = 0;
                let o = ffi::lua_tointegerx(state, 3, &mut isint);
                if t != ffi::LUA_TNUMBER || isint == 0 || o < 0 {
                    return Err(Refusal::BadOffset(t));
                }
                o as u64
            }
        };
        let has_table = match ffi::lua_type(state, 2) {
            ffi::LUA_TNIL | ffi::LUA_TNONE => false,
            ffi::LUA_TTABLE => true,
            t => return Err(Refusal::NotTable(t)),
        };
        add(sinks, id, name, has_table, offset)
    }
}

/// The name at stack index `at` (a string), if it is a valid entry name.
///
/// # Safety
/// `at` is a valid index of a string in `state`; the name is used while it is there.
unsafe fn checked_name<'a>(state: *mut ffi::lua_State, at: c_int) -> Result<&'a [u8], Refusal> {
    unsafe {
        let mut len = 0usize;
        let p = ffi::lua_tolstring(state, at, &mut len) as *const u8;
        let name = std::slice::from_raw_parts(p, len);
        if !valid_name(name) {
            return Err(Refusal::BadName(ffi::lua_absindex(state, at)));
        }
        Ok(name)
    }
}

/// Whether `name` can be an entry's name: 1 to 255 bytes, no '/' and no NUL (one pass over
/// the short name, not two memchr calls).
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.len() <= super::NAME_MAX && !name.iter().any(|&b| b == b'/' || b == 0)
}

/// `filler(t)`: record every entry of the table at index 1 (its stat tables stored as one
/// entry's are). The stack is left holding the table alone.
///
/// # Safety
/// As for `filler`, whose arguments `state` holds.
unsafe fn record_table(
    state: *mut ffi::lua_State,
    shared: &Shared,
    id: u64,
) -> Result<(), Refusal> {
    let sinks = &shared.sinks;
    unsafe {
        ffi::lua_settop(state, 1);
        if let Some(w) = shared.walker
            && record_table_raw(state, sinks, id, w)?
        {
            return Ok(());
        }
        if ffi::lua_checkstack(state, 3) == 0 {
            return Err(Refusal::StackFull);
        }
        ffi::lua_pushnil(state);
        while ffi::lua_next(state, 1) != 0 {
            let t = ffi::lua_type(state, -2);
            if t != ffi::LUA_TSTRING {
                return Err(Refusal::KeyNotString(t));
            }
            let name = checked_name(state, -2)?;
            let has_table = ffi::lua_type(state, -1) == ffi::LUA_TTABLE;
            match add(sinks, id, name, has_table, 0)? {
                Some(i) if has_table => {
                    ffi::lua_rawseti(state, ffi::lua_upvalueindex(3), i as ffi::lua_Integer)
                }
                Some(_) => ffi::lua_settop(state, -2),
                None => break,
            }
        }
        ffi::lua_settop(state, 1);
        Ok(())
    }
}

/// `record_table` by a raw walk of the table (`luaraw::Walker`), its stat tables written
/// straight into the array they go into: no `lua_next` (which looks the previous key up
/// again at every step), no C API call per entry. `Ok(false)`, with nothing recorded, when a
/// name is invalid: the C API way then records the table again and raises the error, naming
/// it.
///
/// # Safety
/// As for `record_table`.
unsafe fn record_table_raw(
    state: *mut ffi::lua_State,
    sinks: &Sinks,
    id: u64,
    w: Walker,
) -> Result<bool, Refusal> {
    unsafe {
        if ffi::lua_type(state, ffi::lua_upvalueindex(3)) != ffi::LUA_TTABLE {
            return Err(Refusal::Closed); // replaced through the debug library
        }
        let t = ffi::lua_topointer(state, 1) as *mut c_void;
        let tables = ffi::lua_topointer(state, ffi::lua_upvalueindex(3)) as *mut c_void;
        let n = w.count_named(t).map_err(Refusal::KeyNotString)?;
        let Some(start) = sinks.borrow().get(&id).map(|s| s.entries.len()) else {
            return Err(Refusal::Closed);
        };
        // May raise Lua's memory error: nothing is borrowed yet.
        w.reserve(state, tables, start + n);
        let mut all = sinks.borrow_mut();
        let Some(s) = all.get_mut(&id) else {
            return Err(Refusal::Closed);
        };
        let names_before = s.names.len();
        s.entries.reserve(n);
        let mut fill = w.fill(state, tables);
        let mut valid = true;
        w.each(t, |k, v| {
            let Key::Name(name) = k else {
                return true; // not met: `count_named` checked every key
            };
            if !valid_name(name) {
                valid = false;
                return false;
            }
            let has_table = v.is_table() && fill.set(s.entries.len() + 1, v);
            s.push(name, has_table, 0).is_some()
        });
        if !valid {
            // Taken back: the C API way records the table again and raises the error.
            s.entries.truncate(start);
            s.names.truncate(names_before);
        }
        Ok(valid)
    }
}

/// Add an entry to sink `id`; its position (from 1), or `Ok(None)` when the kernel buffer is
/// full (offset mode) or the listing is cut.
fn add(
    sinks: &Sinks,
    id: u64,
    name: &[u8],
    has_table: bool,
    offset: u64,
) -> Result<Option<usize>, Refusal> {
    let mut all = sinks.borrow_mut();
    let Some(s) = all.get_mut(&id) else {
        return Err(Refusal::Closed);
    };
    if offset > 0 {
        s.used_offsets = true;
        let size = entry_size(name.len(), s.plus);
        if s.bytes + size > KERNEL_BUFFER {
            return Ok(None);
        }
        s.bytes += size;
    }
    Ok(s.push(name, has_table, offset))
}

/// Raise the Lua error for a refused entry (does not return).
unsafe fn refuse(state: *mut ffi::lua_State, r: Refusal) -> ! {
    use convert::raise_with_type as raise;
    unsafe {
        match r {
            Refusal::NotString(t) => raise(
                state,
                c"filler: bad argument #1 (string expected, got ",
                t,
                c")",
            ),
            Refusal::KeyNotString(t) => raise(
                state,
                c"filler: a table of entries has names as keys, got a ",
                t,
                c" key",
            ),
            Refusal::NotTable(t) => raise(
                state,
                c"filler: bad argument #2 (table expected, got ",
                t,
                c")",
            ),
            Refusal::BadOffset(t) => raise(
                state,
                c"filler: offset must be a non-negative integer, got ",
                t,
                c"",
            ),
            Refusal::BadName(at) => {
                ffi::lua_pushstring(state, c"filler: invalid entry name \"".as_ptr());
                ffi::lua_pushvalue(state, at);
                ffi::lua_pushstring(state, c"\"".as_ptr());
                ffi::lua_concat(state, 3);
            }
            Refusal::StackFull => {
                ffi::lua_pushstring(state, c"filler: stack overflow".as_ptr());
            }
            Refusal::Closed => {
                ffi::lua_pushstring(state, c"filler called after its readdir returned".as_ptr());
            }
        }
        ffi::lua_error(state)
    }
}

impl Lister {
    pub(super) fn new(walker: Option<Walker>) -> Lister {
        Lister {
            shared: Box::leak(Box::new(Shared {
                sinks: RefCell::new(HashMap::new()),
                walker,
            })),
            next: Cell::new(1),
            sizes: RefCell::new(HashMap::new()),
            kept: RefCell::new(HashMap::new()),
        }
    }

    /// A new filler for a listing of `dir`, the id of its sink, and the table its stat
    /// tables go into.
    fn open(&self, lua: &Lua, dir: u64, plus: bool) -> mlua::Result<(u64, Function, Table)> {
        let id = self.next.get();
        self.next.set(id + 1);
        let (size, name_bytes) = self.sizes.borrow().get(&dir).copied().unwrap_or((0, 0));
        let tables = lua.create_table_with_capacity(size as usize, 0)?;
        // SAFETY: `filler` reads only its arguments, its upvalues and the leaked `shared`
        // (alive for the rest of the process).
        let filler = unsafe {
            convert::c_closure(lua, filler, 3, |raw| {
                let state = raw.state();
                ffi::lua_pushlightuserdata(state, self.shared as *const Shared as *mut _);
                ffi::lua_pushinteger(state, id as ffi::lua_Integer);
                (&tables).push_into_stack(raw)
            })?
        };
        self.shared.sinks.borrow_mut().insert(
            id,
            Sink {
                dir,
                plus,
                entries: Vec::with_capacity(size as usize),
                names: Vec::with_capacity(name_bytes as usize),
                ..Sink::default()
            },
        );
        Ok((id, filler, tables))
    }

    /// What filler `id` collected; the filler stops working.
    fn close(&self, id: u64) -> Sink {
        let sink = self
            .shared
            .sinks
            .borrow_mut()
            .remove(&id)
            .unwrap_or_default();
        let mut sizes = self.sizes.borrow_mut();
        if sizes.len() >= SIZES_KEPT {
            sizes.clear();
        }
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        sizes.insert(
            sink.dir,
            (count(sink.entries.len()), count(sink.names.len())),
        );
        sink
    }
}

impl Dispatch {
    /// READDIR / READDIRPLUS on open directory `fh`.
    pub(super) async fn readdir(&self, ino: u64, fh: u64, offset: u64, reply: DirReply) {
        let cached = offset > 0
            && self
                .handles
                .borrow_mut()
                .get(&fh)
                .is_some_and(|h| h.dir.is_some());
        if cached {
            return self.serve_cached(ino, fh, offset, reply).await;
        }
        if self.ops.reuse_listings
            && let Some(listing) = self.kept_listing(ino)
        {
            return self.serve_listing(ino, fh, offset, listing, reply).await;
        }
        let path = match self.path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        if !self.has(OpName::Readdir) {
            return reply.error(Errno::ENOSYS);
        }
        let stamp = self.changes.get();
        let taken = Instant::now();
        let (id, filler, tables) = match self.dirs.open(&self.lua, ino, reply.plus()) {
            Ok(f) => f,
            Err(_) => return reply.error(Errno::ENOMEM),
        };
        let r = self
            .call_unit(OpName::Readdir, (Bytes(&path), filler, self.fi(fh), offset))
            .await;
        let Sink {
            entries,
            names,
            used_offsets,
            ..
        } = self.dirs.close(id);
        if let Err(e) = r {
            return reply.error(e);
        }
        let mut listing = Listing {
            entries,
            names,
            tables: StatList::new(tables),
            stats: Vec::new(),
            taken,
            stamp,
            nodes: RefCell::new(Vec::new()),
            nodes_at: Cell::new((0, 0)),
        };
        self.complete(&path, &mut listing).await;
        if used_offsets {
            // Offset mode: this call's entries answer this request only.
            let mut reply = reply;
            self.fill(ino, &listing, None, &mut reply, false).await;
            return reply.ok();
        }
        let listing = Rc::new(listing);
        self.keep_listing(ino, listing.clone());
        self.serve_listing(ino, fh, offset, listing, reply).await
    }

    /// Answer from a listing just taken (or a kept one reused), and leave it with open
    /// directory `fh` for the requests after this one.
    async fn serve_listing(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        listing: Rc<Listing>,
        reply: DirReply,
    ) {
        if let Some(h) = self.handles.borrow_mut().get_mut(&fh) {
            h.dir = Some(listing.clone());
        }
        self.answer_from(ino, &listing, offset, reply).await
    }

    /// Answer from the listing open directory `fh` holds (none: the end of the listing).
    async fn serve_cached(&self, ino: u64, fh: u64, offset: u64, reply: DirReply) {
        let taken = self
            .handles
            .borrow_mut()
            .get_mut(&fh)
            .and_then(|h| h.dir.clone());
        match taken {
            Some(listing) => self.answer_from(ino, &listing, offset, reply).await,
            None => reply.ok(),
        }
    }

    /// Answer with `listing`'s entries from `offset` on.
    async fn answer_from(&self, ino: u64, listing: &Listing, offset: u64, mut reply: DirReply) {
        // Requests that may have changed attributes since the listing was taken make its
        // attributes suspect.
        let stale = listing.stamp != self.changes.get();
        self.fill(ino, listing, Some(offset), &mut reply, stale)
            .await;
        reply.ok();
    }

    /// Keep the listing of directory `dir`, just taken (see `Kept`).
    fn keep_listing(&self, dir: u64, listing: Rc<Listing>) {
        let ttl = self.cfg.attr_ttl.min(self.cfg.entry_ttl);
        if ttl.is_zero() || listing.stamp != self.changes.get() {
            return;
        }
        let until = listing.taken + ttl;
        let mut kept = self.dirs.kept.borrow_mut();
        if !kept.is_empty() {
            // Those past their time or stale go (they hold their stat tables).
            let (now, stamp) = (listing.taken, listing.stamp);
            kept.retain(|_, k| k.until > now && k.listing.stamp == stamp);
            if kept.len() >= LISTINGS_KEPT {
                kept.clear();
            }
        }
        kept.insert(
            dir,
            Kept {
                listing,
                until,
                index: None,
            },
        );
    }

    /// The kept listing of `dir`, while it is good (see `Kept`).
    fn kept_listing(&self, dir: u64) -> Option<Rc<Listing>> {
        let mut all = self.dirs.kept.borrow_mut();
        let kept = self.good_kept(&mut all, dir)?;
        Some(kept.listing.clone())
    }

    /// `dir`'s entry in `all` while it is good; one past its time or stale is dropped.
    fn good_kept<'a>(&self, all: &'a mut HashMap<u64, Kept>, dir: u64) -> Option<&'a mut Kept> {
        if all.is_empty() {
            return None;
        }
        match all.entry(dir) {
            Entry::Occupied(k)
                if k.get().listing.stamp == self.changes.get()
                    && Instant::now() < k.get().until =>
            {
                Some(k.into_mut())
            }
            Entry::Occupied(k) => {
                k.remove();
                None
            }
            Entry::Vacant(_) => None,
        }
    }

    /// The attributes the kept listing of `dir` gives `name`, while they are good (see
    /// `Kept`).
    pub(super) fn listed_stat(&self, dir: u64, name: &[u8]) -> Option<Stat> {
        let mut all = self.dirs.kept.borrow_mut();
        let kept = self.good_kept(&mut all, dir)?;
        let i = kept.position(name)?;
        let listing = &kept.listing;
        let e = &listing.entries[i];
        if let Some(st) = listing.stat(i) {
            return Some(*st);
        }
        if !e.has_table {
            return None;
        }
        // A table that does not decode is left to getattr (and to its error).
        self.stat_reader
            .decode_item(&listing.tables, i as i64 + 1, &self.defaults)
            .ok()
    }

    /// The attributes of entry `i` (from 1) from the table its filler call gave.
    fn entry_stat(&self, dir: u64, name: &[u8], tables: &StatList, i: usize) -> Option<Stat> {
        let r = self
            .stat_reader
            .decode_item(tables, i as i64, &self.defaults);
        self.entry_value(dir, name, r)
    }

    /// The mode and script ino of entry `i` (from 1) from the table its filler call gave.
    fn entry_mode_ino(
        &self,
        dir: u64,
        name: &[u8],
        tables: &StatList,
        i: usize,
    ) -> Option<(u32, u64)> {
        let r = self
            .stat_reader
            .mode_ino_item(tables, i as i64, &self.defaults);
        self.entry_value(dir, name, r)
    }

    /// What was read from an entry's stat table; a bad table is logged and the entry gets
    /// no value.
    fn entry_value<T>(&self, dir: u64, name: &[u8], r: convert::Conv<T>) -> Option<T> {
        r.map_err(|e| {
            let p = join(&self.path(dir).unwrap_or_default(), name);
            self.bad_value(OpName::Readdir, &p, format!("filler: {e}"))
        })
        .ok()
    }

    /// The node id (d_ino) and type of entry `i` (from 0) of `listing` of `dir` in a plain
    /// READDIR, `stat` its attributes if known: from the listing's copy when it was sent
    /// before (`fill` drops the copy once a name or script ino may have got another node).
    fn plain_entry(
        &self,
        dir: u64,
        listing: &Listing,
        i: usize,
        stat: Option<&Stat>,
        has_table: bool,
    ) -> (u64, FileType) {
        let e = &listing.entries[i];
        let bytes = listing.name(e);
        if bytes == b"." {
            return (dir, FileType::Directory);
        }
        if bytes == b".." {
            let parent = self.inodes.borrow().parent(dir);
            return (parent.unwrap_or(0xffff_ffff), FileType::Directory);
        }
        if let Some(&(id, kind)) = listing.nodes.borrow().get(i)
            && id != 0
        {
            return (id, kind);
        }
        // A name the kernel already holds: its node id and type are known here, and the
        // script's table need not be read (it may be anywhere in memory).
        let known = self.inodes.borrow().child_kind(dir, bytes);
        let known_kind = known.map(|(_, k)| k).filter(|k| *k != 0);
        let mode_ino = match (stat, has_table) {
            (Some(st), _) => Some((st.mode, st.ino)),
            (None, _) if known_kind.is_some() => None,
            (None, true) => self.entry_mode_ino(dir, bytes, &listing.tables, i + 1),
            (None, false) => None,
        };
        let kind = match (mode_ino, known_kind) {
            (Some((mode, _)), _) => convert::file_type(mode),
            (None, Some(k)) => convert::file_type(k),
            (None, None) => FileType::RegularFile,
        };
        let ino = known
            .map(|(id, _)| id)
            .or_else(|| mode_ino.and_then(|(_, ino)| self.inodes.borrow_mut().id_for(ino)));
        let Some(ino) = ino else {
            return (0xffff_ffff, kind);
        };
        let mut nodes = listing.nodes.borrow_mut();
        if nodes.len() < listing.entries.len() {
            nodes.resize(listing.entries.len(), (0, FileType::RegularFile));
        }
        nodes[i] = (ino, kind);
        (ino, kind)
    }

    /// Give entries without a stat table attributes from getattr (for their type, and for
    /// READDIRPLUS).
    async fn complete(&self, dir: &[u8], listing: &mut Listing) {
        for i in 0..listing.entries.len() {
            let e = &listing.entries[i];
            let name = listing.name(e);
            if e.has_table || name == b"." || name == b".." {
                continue;
            }
            let st = self.stat(&join(dir, name), None).await.ok();
            if listing.stats.is_empty() {
                listing.stats.resize(listing.entries.len(), None);
            }
            listing.stats[i] = st;
        }
    }

    /// Ask the CPU to fetch what the plain entries after entry `i` of `listing` will read
    /// (`plain_entry`: the stat tables of entries not sent before, and where the inode table
    /// maps their ino), in steps a few entries apart: a table's head, then the fields it
    /// leads to, then the slot the ino leads to. Changes no result.
    fn prefetch_ahead(&self, listing: &Listing, i: usize) {
        let tables = &listing.tables;
        let unsent = |i: usize| {
            listing.entries.get(i).is_some_and(|e| e.has_table)
                && listing.nodes.borrow().get(i).is_none_or(|n| n.0 == 0)
        };
        let steps = [
            (PREFETCH_HEADS, Prefetch::Head),
            (PREFETCH_FIELDS, Prefetch::Fields),
        ];
        for (ahead, what) in steps {
            if unsent(i + ahead) {
                let item = (i + ahead + 1) as i64;
                self.stat_reader.prefetch_item(tables, item, what);
            }
        }
        if unsent(i + PREFETCH_NODE)
            && let Some(ino) = self
                .stat_reader
                .raw_ino_item(tables, (i + PREFETCH_NODE + 1) as i64)
        {
            self.inodes.borrow().prefetch_script_ino(ino);
        }
    }

    /// Add entries to the reply until it is full. `index_from`: serve a cached listing from
    /// that position (offsets are positions); `None`: entries carry the script's offsets.
    /// `stale`: the listing was taken before requests that may have changed attributes.
    async fn fill(
        &self,
        dir: u64,
        listing: &Listing,
        index_from: Option<u64>,
        reply: &mut DirReply,
        stale: bool,
    ) {
        let entries = &listing.entries;
        let tables = &listing.tables;
        let skip = index_from.map_or(0, |o| usize::try_from(o).unwrap_or(usize::MAX));
        // Attributes in a listing taken by an earlier request may be stale by now, and the
        // kernel would take them as fresh (a file's size could go backwards): re-read them.
        let dir_path = if stale && skip > 0 && matches!(reply, DirReply::Plus(_)) {
            self.path(dir).ok()
        } else {
            None
        };
        let plain = matches!(reply, DirReply::Plain(_));
        if plain {
            // The node ids the listing remembers (`Listing::nodes`) are good while this holds
            // (nothing in the loop below changes it).
            let now = self.inodes.borrow().unnamings(dir);
            if listing.nodes_at.get() != now {
                listing.nodes.borrow_mut().clear();
                listing.nodes_at.set(now);
            }
        }
        for (i, e) in entries.iter().enumerate().skip(skip) {
            if plain {
                self.prefetch_ahead(listing, i);
            }
            let bytes = listing.name(e);
            let dot = bytes == b"." || bytes == b"..";
            let fresh;
            let (stat, has_table) = match &dir_path {
                Some(p) if !dot => {
                    fresh = self.stat(&join(p, bytes), None).await.ok();
                    (fresh.as_ref(), false)
                }
                _ => (listing.stat(i), e.has_table),
            };
            let off = if index_from.is_some() {
                i as u64 + 1
            } else {
                e.offset
            };
            let name = OsStr::from_bytes(bytes);
            let full = match reply {
                DirReply::Plain(r) => {
                    let (ino, kind) = self.plain_entry(dir, listing, i, stat, has_table);
                    r.add(INodeNo(ino), off, kind, name)
                }
                DirReply::Plus(r) => {
                    let ttl = self.cfg.entry_ttl;
                    let stat = match (stat, has_table) {
                        (Some(st), _) => Some(*st),
                        (None, true) => self.entry_stat(dir, bytes, tables, i + 1),
                        (None, false) => None,
                    };
                    if dot {
                        // The kernel does not look up "." and "..": no reference is counted.
                        let st = stat.unwrap_or_else(|| Stat::placeholder_dir(self.defaults));
                        let ino = if bytes == b".." {
                            self.inodes.borrow().parent(dir).unwrap_or(dir)
                        } else {
                            dir
                        };
                        r.add(
                            INodeNo(ino),
                            off,
                            name,
                            &ttl,
                            &st.to_attr(ino),
                            Generation(0),
                        )
                    } else if let Some(st) = &stat {
                        let ino = self.inodes.borrow_mut().resolve(
                            dir,
                            bytes,
                            st.ino,
                            st.mode & libc::S_IFMT,
                            st.nlink,
                        );
                        let full = r.add(
                            INodeNo(ino),
                            off,
                            name,
                            &ttl,
                            &self.looked_up(ino, st),
                            Generation(0),
                        );
                        if full {
                            self.inodes.borrow_mut().forget(ino, 0);
                        } else {
                            self.inodes.borrow_mut().count_lookup(ino);
                        }
                        full
                    } else {
                        // No attributes (getattr failed): leave the entry out of READDIRPLUS.
                        false
                    }
                }
            };
            if full {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `filler(t)` records for `t`, by each way of walking it: names in order, whether
    /// each has a table, and each recorded table's `id` field.
    fn recorded(lua: &Lua, walker: Option<Walker>, t: &str) -> Vec<(String, Option<i64>)> {
        let lister = Lister::new(walker);
        let (id, filler, tables) = lister.open(lua, 1, false).unwrap();
        let t: Table = lua.load(t).eval().unwrap();
        filler.call::<()>(t).unwrap();
        let sink = lister.close(id);
        sink.entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let name = String::from_utf8_lossy(e.name(&sink.names)).into_owned();
                let table = e.has_table.then(|| {
                    let t: Table = tables.raw_get(i as i64 + 1).unwrap();
                    t.raw_get::<i64>("id").unwrap()
                });
                (name, table)
            })
            .collect()
    }

    #[test]
    fn a_table_of_entries_is_recorded_the_same_by_a_raw_walk_and_by_next() {
        let lua = Lua::new();
        let walker = Walker::new(&lua);
        assert!(walker.is_some(), "this Lua passes luaraw's checks");
        let long = "l".repeat(200);
        let t = format!(
            "local t = {{ a = {{id = 1}}, b = true, c = {{id = 3}}, ['{long}'] = {{id = 4}} }} \
             for i = 1, 100 do t['n' .. i] = {{id = 100 + i}} end \
             t.c = nil \
             return t"
        );
        let raw = recorded(&lua, walker, &t);
        let next = recorded(&lua, None, &t);
        assert_eq!(raw, next);
        assert_eq!(raw.len(), 103);
        assert!(raw.contains(&("b".to_string(), None)));
        assert!(raw.contains(&(long, Some(4))));
        assert!(!raw.iter().any(|(n, _)| n == "c"));
    }

    #[test]
    fn bad_keys_are_refused_by_a_raw_walk_as_by_next() {
        let lua = Lua::new();
        for t in [
            "return {ok = true, [7] = true}",
            "return {ok = true, ['a/b'] = true}",
        ] {
            let errors: Vec<String> = [Walker::new(&lua), None]
                .into_iter()
                .map(|w| {
                    let lister = Lister::new(w);
                    let (_, filler, _) = lister.open(&lua, 1, false).unwrap();
                    let t: Table = lua.load(t).eval().unwrap();
                    let e = filler.call::<()>(t).unwrap_err().to_string();
                    e.lines().next().unwrap_or_default().to_string()
                })
                .collect();
            assert_eq!(errors[0], errors[1]);
            assert!(errors[0].contains("filler: "), "{}", errors[0]);
        }
    }
}
