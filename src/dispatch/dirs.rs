//! Directory listing: the `filler` handed to the script's readdir, and READDIR / READDIRPLUS
//! answered from what it collected. Without offsets the whole listing is taken once per open
//! (at offset 0) and served across as many kernel requests as it needs; with offsets
//! (`filler(name, st, off)`), each kernel request calls readdir again from its offset and
//! `filler` returns false once a kernel buffer's worth is collected.

use foldhash::HashMap;
use foldhash::HashMapExt;
use std::cell::{Cell, RefCell};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;

use fuser::{Errno, FileType, Generation, INodeNo};

use crate::replies::{ReplyDirectory, ReplyDirectoryPlus};
use mlua::{Function, Lua, MultiValue, Table, Value};

use super::Dispatch;
use crate::convert::{self, Stat};
use crate::ops::OpName;

/// One collected entry.
pub(super) struct DirEnt {
    pub name: Vec<u8>,
    pub stat: Option<Stat>,
    /// The stat table the script gave, read only when the entry is sent (a plain READDIR
    /// needs just its mode and ino).
    pub table: Option<Table>,
    /// The script's offset (offset mode) or 0.
    pub offset: u64,
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

/// What a kernel readdir buffer holds (one page), and the size of an entry in it.
const KERNEL_BUFFER: usize = 4096;

fn entry_size(name_len: usize, plus: bool) -> usize {
    let header = if plus { 24 + 128 } else { 24 };
    (header + name_len).next_multiple_of(8)
}

#[derive(Default)]
struct Sink {
    plus: bool,
    entries: Vec<DirEnt>,
    used_offsets: bool,
    bytes: usize,
}

/// The sinks of the readdir calls in progress (several may be suspended at once), by id.
type Sinks = Rc<RefCell<HashMap<u64, Sink>>>;

/// Makes one `filler` per readdir call and collects what it is given.
pub(super) struct Lister {
    sinks: Sinks,
    factory: Function,
    next: Cell<u64>,
}

/// `filler(name [, st [, offset]])`, one per readdir call (`id` names its sink); stat tables
/// are read by `StatReader` in Rust.
const FILLER: &str = r#"
local push, push_table = ...
return function(id)
  return function(name, st, off)
    if st == nil then return push(id, name, off) end
    return push_table(id, name, off, st)
  end
end
"#;

fn add_entry(
    sinks: &Sinks,
    id: u64,
    name: mlua::LuaString,
    off: Value,
    table: Option<Table>,
) -> mlua::Result<bool> {
    let name = name.as_bytes().to_vec();
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) || name.len() > 255 {
        return Err(mlua::Error::runtime(format!(
            "filler: invalid entry name {:?}",
            String::from_utf8_lossy(&name)
        )));
    }
    let offset = match off {
        Value::Nil => 0,
        Value::Integer(i) if i >= 0 => i as u64,
        other => {
            return Err(mlua::Error::runtime(format!(
                "filler: offset must be a non-negative integer, got {}",
                other.type_name()
            )));
        }
    };
    let mut all = sinks.borrow_mut();
    let Some(s) = all.get_mut(&id) else {
        return Err(mlua::Error::runtime(
            "filler called after its readdir returned",
        ));
    };
    if offset > 0 {
        s.used_offsets = true;
        let size = entry_size(name.len(), s.plus);
        if s.bytes + size > KERNEL_BUFFER {
            return Ok(false);
        }
        s.bytes += size;
    }
    s.entries.push(DirEnt {
        name,
        stat: None,
        table,
        offset,
    });
    Ok(true)
}

impl Lister {
    pub(super) fn new(lua: &Lua) -> mlua::Result<Lister> {
        let sinks: Sinks = Rc::new(RefCell::new(HashMap::new()));
        let s = sinks.clone();
        let push = lua.create_function(move |_, args: MultiValue| {
            let mut it = args.into_vec().into_iter();
            let id = match it.next() {
                Some(Value::Integer(i)) => i as u64,
                _ => return Err(mlua::Error::runtime("filler: internal id missing")),
            };
            let name = match it.next() {
                Some(Value::String(s)) => s,
                other => {
                    return Err(mlua::Error::runtime(format!(
                        "filler: bad argument #1 (string expected, got {})",
                        other.as_ref().map_or("no value", |v| v.type_name())
                    )));
                }
            };
            let off = it.next().unwrap_or(Value::Nil);
            add_entry(&s, id, name, off, None)
        })?;
        let s = sinks.clone();
        let push_table = lua.create_function(
            move |_, (id, name, off, st): (u64, mlua::LuaString, Value, Table)| {
                add_entry(&s, id, name, off, Some(st))
            },
        )?;
        let factory: Function = lua
            .load(FILLER)
            .set_name("=flufs.filler")
            .call((push, push_table))?;
        Ok(Lister {
            sinks,
            factory,
            next: Cell::new(1),
        })
    }

    /// A new filler and the id of its sink.
    fn open(&self, plus: bool) -> mlua::Result<(u64, Function)> {
        let id = self.next.get();
        self.next.set(id + 1);
        self.sinks.borrow_mut().insert(
            id,
            Sink {
                plus,
                ..Sink::default()
            },
        );
        Ok((id, self.factory.call(id)?))
    }

    /// What filler `id` collected; the filler stops working.
    fn close(&self, id: u64) -> Sink {
        self.sinks.borrow_mut().remove(&id).unwrap_or_default()
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
        let path = match self.path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        if !self.has(OpName::Readdir) {
            return reply.error(Errno::ENOSYS);
        }
        let stamp = self.changes.get();
        let (id, filler) = match self.dirs.open(reply.plus()) {
            Ok(f) => f,
            Err(_) => return reply.error(Errno::ENOMEM),
        };
        let r = match self.lstr(&path) {
            Ok(p) => {
                self.call_unit(OpName::Readdir, (p, filler, self.fi(fh), offset))
                    .await
            }
            Err(e) => Err(e),
        };
        let Sink {
            entries,
            used_offsets,
            ..
        } = self.dirs.close(id);
        if let Err(e) = r {
            return reply.error(e);
        }
        let entries = self.complete(&path, entries).await;
        if used_offsets {
            // Offset mode: this call's entries answer this request only.
            let mut reply = reply;
            self.fill(ino, &entries, None, &mut reply, false).await;
            return reply.ok();
        }
        let unkept = match self.handles.borrow_mut().get_mut(&fh) {
            Some(h) => {
                h.dir = Some(entries);
                h.dir_stamp = stamp;
                None
            }
            None => Some(entries),
        };
        match unkept {
            None => self.serve_cached(ino, fh, offset, reply).await,
            Some(entries) => {
                let mut reply = reply;
                self.fill(ino, &entries, Some(offset), &mut reply, false)
                    .await;
                reply.ok()
            }
        }
    }

    async fn serve_cached(&self, ino: u64, fh: u64, offset: u64, mut reply: DirReply) {
        let (entries, stamp) = self
            .handles
            .borrow_mut()
            .get_mut(&fh)
            .and_then(|h| Some((h.dir.take()?, h.dir_stamp)))
            .unwrap_or_default();
        // Requests that may have changed attributes since the listing was taken make its
        // attributes suspect.
        let stale = stamp != self.changes.get();
        self.fill(ino, &entries, Some(offset), &mut reply, stale)
            .await;
        if let Some(h) = self.handles.borrow_mut().get_mut(&fh) {
            h.dir = Some(entries);
        }
        reply.ok();
    }

    /// The attributes of an entry from the table its filler call gave.
    fn entry_stat(&self, dir: u64, name: &[u8], t: &Table) -> Option<Stat> {
        match self.stat_reader.decode(&self.lua, t, &self.defaults) {
            Ok(st) => Some(st),
            Err(e) => {
                self.bad_entry(dir, name, e);
                None
            }
        }
    }

    /// The mode and script ino of an entry from the table its filler call gave.
    fn entry_mode_ino(&self, dir: u64, name: &[u8], t: &Table) -> Option<(u32, u64)> {
        match self.stat_reader.mode_ino(&self.lua, t, &self.defaults) {
            Ok(v) => Some(v),
            Err(e) => {
                self.bad_entry(dir, name, e);
                None
            }
        }
    }

    fn bad_entry(&self, dir: u64, name: &[u8], e: impl std::fmt::Display) {
        let mut p = self.path(dir).unwrap_or_default();
        if p.len() > 1 {
            p.push(b'/');
        }
        p.extend_from_slice(name);
        let _ = self.bad_value(OpName::Readdir, &p, format!("filler: {e}"));
    }

    /// Give entries without a stat one from getattr (for their type, and for READDIRPLUS).
    async fn complete(&self, dir: &[u8], mut entries: Vec<DirEnt>) -> Vec<DirEnt> {
        for e in entries.iter_mut() {
            if e.stat.is_some() || e.table.is_some() || e.name == b"." || e.name == b".." {
                continue;
            }
            let mut p = dir.to_vec();
            if p.len() > 1 {
                p.push(b'/');
            }
            p.extend_from_slice(&e.name);
            e.stat = self.stat(&p, None).await.ok();
        }
        entries
    }

    /// Add entries to the reply until it is full. `index_from`: serve a cached listing from
    /// that position (offsets are positions); `None`: entries carry the script's offsets.
    /// `stale`: the listing was taken before requests that may have changed attributes.
    async fn fill(
        &self,
        dir: u64,
        entries: &[DirEnt],
        index_from: Option<u64>,
        reply: &mut DirReply,
        stale: bool,
    ) {
        let skip = index_from.map_or(0, |o| usize::try_from(o).unwrap_or(usize::MAX));
        // Attributes in a listing taken by an earlier request may be stale by now, and the
        // kernel would take them as fresh (a file's size could go backwards): re-read them.
        let dir_path = if stale && skip > 0 && matches!(reply, DirReply::Plus(_)) {
            self.path(dir).ok()
        } else {
            None
        };
        for (i, e) in entries.iter().enumerate().skip(skip) {
            let fresh;
            let e = match &dir_path {
                Some(p) if e.name != b"." && e.name != b".." => {
                    let mut child = p.clone();
                    if child.len() > 1 {
                        child.push(b'/');
                    }
                    child.extend_from_slice(&e.name);
                    fresh = DirEnt {
                        name: e.name.clone(),
                        stat: self.stat(&child, None).await.ok(),
                        table: None,
                        offset: e.offset,
                    };
                    &fresh
                }
                _ => e,
            };
            let off = if index_from.is_some() {
                i as u64 + 1
            } else {
                e.offset
            };
            let name = OsStr::from_bytes(&e.name);
            let dot = e.name == b"." || e.name == b"..";
            let full = match reply {
                DirReply::Plain(r) => {
                    // A name the kernel already holds: its node id and type are known here,
                    // and the script's table need not be read (it may be anywhere in memory).
                    let known = if dot {
                        None
                    } else {
                        self.inodes.borrow().child(dir, &e.name)
                    };
                    let known_kind = known
                        .and_then(|id| self.inodes.borrow().kind(id))
                        .filter(|k| *k != 0);
                    let mode_ino = match (&e.stat, &e.table) {
                        (Some(st), _) => Some((st.mode, st.ino)),
                        (None, _) if known_kind.is_some() => None,
                        (None, Some(t)) => self.entry_mode_ino(dir, &e.name, t),
                        (None, None) => None,
                    };
                    let kind = match (mode_ino, known_kind) {
                        (Some((mode, _)), _) => convert::file_type(mode),
                        (None, Some(k)) => convert::file_type(k),
                        (None, None) if dot => FileType::Directory,
                        (None, None) => FileType::RegularFile,
                    };
                    let ino = if e.name == b".." {
                        self.inodes.borrow().parent(dir)
                    } else if dot {
                        Some(dir)
                    } else {
                        known.or_else(|| {
                            mode_ino.and_then(|(_, ino)| self.inodes.borrow_mut().id_for(ino))
                        })
                    };
                    let ino = ino.unwrap_or(0xffff_ffff);
                    r.add(INodeNo(ino), off, kind, name)
                }
                DirReply::Plus(r) => {
                    let ttl = self.cfg.entry_ttl;
                    let stat = match (&e.stat, &e.table) {
                        (Some(st), _) => Some(*st),
                        (None, Some(t)) => self.entry_stat(dir, &e.name, t),
                        (None, None) => None,
                    };
                    if dot {
                        // The kernel does not look up "." and "..": no reference is counted.
                        let st = stat.unwrap_or_else(|| Stat::placeholder_dir(self.defaults));
                        let ino = if e.name == b".." {
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
                            &e.name,
                            st.ino,
                            st.mode & libc::S_IFMT,
                            st.nlink,
                        );
                        let full = r.add(
                            INodeNo(ino),
                            off,
                            name,
                            &ttl,
                            &st.to_attr(ino),
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
