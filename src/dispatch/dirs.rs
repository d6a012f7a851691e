//! Directory listing: the `filler` handed to the script's readdir, and READDIR / READDIRPLUS
//! answered from what it collected. Without offsets the whole listing is taken once per open
//! (at offset 0) and served across as many kernel requests as it needs; with offsets
//! (`filler(name, st, off)`), each kernel request calls readdir again from its offset and
//! `filler` returns false once a kernel buffer's worth is collected.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;

use fuser::{Errno, FileType, Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus};
use mlua::{Function, Lua, MultiValue, Table, Value};

use super::Dispatch;
use crate::convert::{self, Stat, StatDefaults};
use crate::ops::OpName;

/// One collected entry.
pub(super) struct DirEnt {
    pub name: Vec<u8>,
    pub stat: Option<Stat>,
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
    active: bool,
    plus: bool,
    entries: Vec<DirEnt>,
    used_offsets: bool,
    bytes: usize,
}

/// The filler function and what it collects.
pub(super) struct Lister {
    sink: Rc<RefCell<Sink>>,
    filler: Function,
}

/// `filler(name [, st [, offset]])`: stat tables in the common form are taken apart in Lua
/// (see `convert::STAT_FAST`); others go to the general decoder.
const FILLER: &str = r#"
local push, push_table, fast = ...
local function tail(name, off, st, mode, ...)
  if mode == nil then return push_table(name, off, st) end
  return push(name, off, mode, ...)
end
return function(name, st, off)
  if st == nil then return push(name, off) end
  return tail(name, off, st, fast(st))
end
"#;

fn add_entry(
    sink: &Rc<RefCell<Sink>>,
    name: mlua::LuaString,
    off: Value,
    stat: Option<Stat>,
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
    let mut s = sink.borrow_mut();
    if !s.active {
        return Err(mlua::Error::runtime("filler called outside of readdir"));
    }
    if offset > 0 {
        s.used_offsets = true;
        let size = entry_size(name.len(), s.plus);
        if s.bytes + size > KERNEL_BUFFER {
            return Ok(false);
        }
        s.bytes += size;
    }
    s.entries.push(DirEnt { name, stat, offset });
    Ok(true)
}

impl Lister {
    pub(super) fn new(lua: &Lua, fast: Function, defaults: StatDefaults) -> mlua::Result<Lister> {
        let sink = Rc::new(RefCell::new(Sink::default()));
        let s = sink.clone();
        let push = lua.create_function(move |_, args: MultiValue| {
            let mut it = args.into_vec().into_iter();
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
            let rest: Vec<Value> = it.collect();
            let stat = if rest.is_empty() {
                None
            } else {
                let st = Stat::from_fast(&rest, &defaults)
                    .map_err(|e| mlua::Error::runtime(format!("filler: {e}")))?;
                Some(st)
            };
            add_entry(&s, name, off, stat)
        })?;
        let s = sink.clone();
        let fast_for_table = fast.clone();
        let push_table =
            lua.create_function(move |_, (name, off, st): (mlua::LuaString, Value, Table)| {
                let stat = Stat::decode(&fast_for_table, &st, &defaults)
                    .map_err(|e| mlua::Error::runtime(format!("filler: {e}")))?;
                add_entry(&s, name, off, Some(stat))
            })?;
        let filler: Function = lua
            .load(FILLER)
            .set_name("=flufs.filler")
            .call((push, push_table, fast))?;
        Ok(Lister { sink, filler })
    }
}

impl Dispatch {
    /// READDIR / READDIRPLUS on open directory `fh`.
    pub(super) fn readdir(&mut self, ino: u64, fh: u64, offset: u64, reply: DirReply) {
        let cached = offset > 0 && self.handles.get(&fh).is_some_and(|h| h.dir.is_some());
        if cached {
            return self.serve_cached(ino, fh, offset, reply);
        }
        let path = match self.path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        if !self.has(OpName::Readdir) {
            return reply.error(Errno::ENOSYS);
        }
        {
            let mut s = self.dirs.sink.borrow_mut();
            *s = Sink {
                active: true,
                plus: reply.plus(),
                ..Sink::default()
            };
        }
        let r = self.lstr(&path).and_then(|p| {
            self.call_unit(
                OpName::Readdir,
                (p, self.dirs.filler.clone(), self.fi(fh), offset),
            )
        });
        let (entries, used_offsets) = {
            let mut s = self.dirs.sink.borrow_mut();
            s.active = false;
            (std::mem::take(&mut s.entries), s.used_offsets)
        };
        if let Err(e) = r {
            return reply.error(e);
        }
        let entries = self.complete(&path, entries);
        if used_offsets {
            // Offset mode: this call's entries answer this request only.
            let mut reply = reply;
            self.fill(ino, &entries, None, &mut reply);
            return reply.ok();
        }
        match self.handles.get_mut(&fh) {
            Some(h) => {
                h.dir = Some(entries);
                self.serve_cached(ino, fh, offset, reply)
            }
            None => {
                let mut reply = reply;
                self.fill(ino, &entries, Some(offset), &mut reply);
                reply.ok()
            }
        }
    }

    fn serve_cached(&mut self, ino: u64, fh: u64, offset: u64, mut reply: DirReply) {
        let entries = self
            .handles
            .get_mut(&fh)
            .and_then(|h| h.dir.take())
            .unwrap_or_default();
        self.fill(ino, &entries, Some(offset), &mut reply);
        if let Some(h) = self.handles.get_mut(&fh) {
            h.dir = Some(entries);
        }
        reply.ok();
    }

    /// Give entries without a stat one from getattr (for their type, and for READDIRPLUS).
    fn complete(&self, dir: &[u8], mut entries: Vec<DirEnt>) -> Vec<DirEnt> {
        for e in entries.iter_mut() {
            if e.stat.is_some() || e.name == b"." || e.name == b".." {
                continue;
            }
            let mut p = dir.to_vec();
            if p.len() > 1 {
                p.push(b'/');
            }
            p.extend_from_slice(&e.name);
            e.stat = self.stat(&p, None).ok();
        }
        entries
    }

    /// Add entries to the reply until it is full. `index_from`: serve a cached listing from
    /// that position (offsets are positions); `None`: entries carry the script's offsets.
    fn fill(
        &mut self,
        dir: u64,
        entries: &[DirEnt],
        index_from: Option<u64>,
        reply: &mut DirReply,
    ) {
        let skip = index_from.map_or(0, |o| usize::try_from(o).unwrap_or(usize::MAX));
        // Attributes in a listing taken by an earlier request may be stale by now, and the
        // kernel would take them as fresh (a file's size could go backwards): re-read them.
        let dir_path = if skip > 0 && matches!(reply, DirReply::Plus(_)) {
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
                        stat: self.stat(&child, None).ok(),
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
                    let kind = match &e.stat {
                        Some(st) => convert::file_type(st.mode),
                        None if dot => FileType::Directory,
                        None => FileType::RegularFile,
                    };
                    let ino = if e.name == b".." {
                        self.inodes.parent(dir)
                    } else if dot {
                        Some(dir)
                    } else {
                        self.inodes
                            .child(dir, &e.name)
                            .or_else(|| e.stat.and_then(|st| self.inodes.id_for(st.ino)))
                    };
                    let ino = ino.unwrap_or(0xffff_ffff);
                    r.add(INodeNo(ino), off, kind, name)
                }
                DirReply::Plus(r) => {
                    let ttl = self.cfg.entry_ttl;
                    if dot {
                        // The kernel does not look up "." and "..": no reference is counted.
                        let st = e
                            .stat
                            .unwrap_or_else(|| Stat::placeholder_dir(self.defaults));
                        let ino = if e.name == b".." {
                            self.inodes.parent(dir).unwrap_or(dir)
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
                    } else if let Some(st) = &e.stat {
                        let ino = self.inodes.resolve(
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
                            self.inodes.forget(ino, 0);
                        } else {
                            self.inodes.count_lookup(ino);
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
