//! The dispatcher: the one owner of the Lua state. It takes `Request`s from the kernel side in
//! order, turns each into a call of the script's operation (path, arguments and `fi` table as
//! Flu defines them), turns the result into the kernel reply, and answers every request exactly
//! once. A Lua error becomes an errno for that request only.
//!
//! `handle` is the one place requests are answered; the work of each operation lives in
//! `attrs` (lookup, getattr, setattr), `names` (entries: mknod ... rename, link, readlink),
//! `files` (open files), `dirs` (open directories, readdir) and `misc` (statfs, xattrs, access).

mod attrs;
mod dirs;
mod files;
mod fresh;
mod misc;
mod names;
mod tasks;

pub use tasks::Engine;

use foldhash::HashMap;
use foldhash::HashMapExt;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use fuser::{Errno, FileHandle, Generation};

use crate::replies::{ReplyEmpty, ReplyEntry};
use mlua::thread::ThreadStatus;
use mlua::{Function, IntoLuaMulti, Lua, MultiValue, Table, Thread, Value};

use crate::convert::{self, Stat, StatDefaults, Timespec};
use crate::errno;
use crate::inodes::Inodes;
use crate::kernel::{Ctx, Op, Request};
use crate::log;
use crate::nlinks::Drops;
use crate::ops::{OpName, Ops};
use crate::watchdog::Watchdog;

/// Dispatcher settings derived from the mount options.
#[derive(Debug, Clone)]
pub struct Config {
    pub attr_ttl: Duration,
    pub entry_ttl: Duration,
    pub negative_ttl: Duration,
    pub direct_io: bool,
    pub kernel_cache: bool,
    pub debug: bool,
    /// Longest a request's Lua code may run (None = unbounded).
    pub op_timeout: Option<Duration>,
}

/// The context of the request whose Lua code is running, shared with `flu.get_context`. The
/// executor (`tasks`) sets it each time it resumes a request, so it is right even when
/// requests interleave.
pub type CurrentCtx = Rc<Cell<Ctx>>;

/// Why a call did not produce a value.
type Fail = Errno;

/// An open file or directory.
struct Handle {
    ino: u64,
    fi: Table,
    /// Directory listing captured at offset 0 (for scripts that do not use offsets).
    dir: Option<Rc<dirs::Listing>>,
    /// The arguments its calls pass, and `Inodes::moves` when their path was made (see
    /// `open_file`).
    args: Option<(u64, Rc<OpenArgs>)>,
}

/// The path (a Lua string) and `fi` that the calls on an open file pass. Shared, not copied,
/// by each call: a copy of either is a new reference in mlua's registry, made and dropped
/// again per request (~200 instructions each).
pub(super) struct OpenArgs {
    path: mlua::LuaString,
    fi: Option<Table>,
}

pub struct Dispatch {
    lua: Lua,
    ops: Ops,
    /// Lua's `xpcall` (as the script found it at load) and the error handler it is given
    /// (see `XPCALL_AND_HANDLER`).
    xpcall: Function,
    handler: Function,
    /// errno names, numbers and `flu.errno` values to their codes: the handler's (it has it as
    /// an upvalue), held here also to keep the values of `errno_values` where they are.
    _codes: Table,
    /// The `flu.errno` values' codes by the address of their userdata's memory
    /// (`lua_touserdata`): an operation returning one is recognised without a Lua table
    /// lookup. Lua does not move objects, and `_codes` keeps these alive, so no other userdata
    /// can have their addresses.
    errno_values: HashMap<usize, i64>,
    dirs: dirs::Lister,
    stat_reader: convert::StatReader,
    names: convert::Names,
    inodes: RefCell<Inodes>,
    handles: RefCell<HashMap<u64, Handle>>,
    next_fh: Cell<u64>,
    cfg: Config,
    defaults: StatDefaults,
    ctx: CurrentCtx,
    watchdog: Option<Watchdog>,
    /// Counts requests that may change attributes, at their start and at their end: a cached
    /// directory listing taken when it had another value may hold stale attributes.
    changes: Cell<u64>,
    /// Directories made through the mount whose names flufs knows (`fs.reuse_listings`).
    fresh: RefCell<fresh::FreshDirs>,
    /// Link counts the kernel is about to lower after an unlink (see `crate::nlinks`).
    drops: RefCell<Drops>,
    /// The fields of the stat table the call that just returned gave (`stat_peek`), read
    /// where it left them: read at once (no other call runs before), never moved around.
    peeked: RefCell<[Option<i64>; 15]>,
    /// Finished coroutines kept for the next calls (creating one per call costs more).
    threads: RefCell<Vec<Thread>>,
    /// `--lua-memory` in bytes (0: none). It bounds what the script allocates: it is set only
    /// while script code runs. Outside, the host's own small allocations (paths, `fi` tables,
    /// mode sets) go unchecked, which spares mlua a protected call for each of them (1000
    /// creates: ~8% less daemon CPU).
    memory_limit: usize,
}

/// What a call came back with: the caller's `peek` read what it wanted straight off the
/// coroutine's stack (into a place of the caller's, so that nothing large is moved through
/// the layers of the call), or (when it read nothing) the results as values.
pub(super) enum Returned {
    Peeked,
    Values(MultiValue),
}

/// What the call's xpcall gave back, as `run_coroutine` hands it on: `Returned`, or the errno
/// of an error the script raised or of a `flu.errno` value it returned, read off the stack
/// (the commonest failure, a missing name or attribute, costs no values).
enum Outcome {
    Peeked,
    Raised(i64),
    /// `true` alone: the call returned nothing (most operations), with no values made.
    Nothing,
    Values(MultiValue),
}

/// A `peek` that reads nothing.
fn no_peek(_: *mut mlua::ffi::lua_State, _: std::ffi::c_int) -> bool {
    false
}

/// What the first resumption of a call's coroutine came to.
enum Resumed {
    /// xpcall returned (its results, or a failure to take them).
    Finished(mlua::Result<Outcome>),
    /// An error escaped xpcall.
    Failed(mlua::Error),
    /// It yielded: `pending` when an async function waits for its future.
    Yielded { pending: bool },
}

/// What `first_resumption` came to: the call's outcome and whether `--op-timeout`
/// interrupted it, or a coroutine that yielded.
enum First {
    Done(mlua::Result<Outcome>, bool),
    Yielded(Yielded),
}

/// A call's coroutine that yielded at its first resumption, to be resumed asynchronously.
struct Yielded {
    thread: Thread,
    /// It waits for an async function's future (else a bare `coroutine.yield()`).
    pending: bool,
    interrupted: bool,
}

/// How many finished coroutines are kept for reuse.
const THREAD_POOL: usize = 64;

/// The longest name a directory entry may have (Linux's NAME_MAX).
const NAME_MAX: usize = 255;

/// Every operation is called as `xpcall(f, handler, ...)`, with `xpcall` itself as the body
/// of the call's coroutine (no Lua function in between: a vararg Lua frame per call cost
/// ~350-600 instructions, 4-6% of a lookup's). The handler turns errors into an errno (from
/// `flu.errno` values, errno names and numbers) or a message with a traceback.
const XPCALL_AND_HANDLER: &str = r#"
local xpcall, traceback, tostring, errno_of, codes = xpcall, debug.traceback, tostring, ...
local function handler(e)
  local code = codes[e]
  if code then return code end
  code = errno_of(e)
  if code then return code end
  local msg = tostring(e)
  if msg:find("stack traceback:", 1, true) then return msg end
  return traceback(msg, 2)
end
return xpcall, handler
"#;

fn lua_errno(v: &Value) -> Option<i32> {
    match v {
        Value::UserData(u) => u.borrow::<crate::flu::ErrnoValue>().ok().map(|e| e.0),
        Value::Integer(i) => errno::from_integer(*i),
        Value::Number(n) if n.fract() == 0.0 => errno::from_integer(*n as i64),
        Value::String(s) => errno::from_message(&s.to_string_lossy()),
        // An error table carrying its errno, as the gett module's `err` does.
        Value::Table(t) => match t.raw_get::<Value>("errno") {
            Ok(v @ (Value::UserData(_) | Value::Integer(_))) => lua_errno(&v),
            _ => None,
        },
        _ => None,
    }
}

/// Whether `op` may change attributes a directory listing carries (sizes, times, links, modes;
/// reads and flushes too: atime, and scripts that upload on flush).
fn may_change_attributes(op: &Op) -> bool {
    !matches!(
        op,
        Op::Lookup { .. }
            | Op::Getattr { .. }
            | Op::Opendir { .. }
            | Op::Readdir { .. }
            | Op::Readdirplus { .. }
            | Op::Releasedir { .. }
            | Op::Statfs { .. }
            | Op::Getxattr { .. }
            | Op::Listxattr { .. }
            | Op::Access { .. }
            | Op::Getlk { .. }
            | Op::Lseek { .. }
            | Op::Bmap { .. }
    )
}

/// The errno values scripts raise most, looked up in Lua without a call into Rust: each
/// `flu.errno.X` value, each errno name and each errno number, to its code; and the
/// `flu.errno` values by the address of their userdata's memory (see `Dispatch::errno_values`).
fn errno_codes(lua: &Lua) -> mlua::Result<(Table, HashMap<usize, i64>)> {
    let codes = lua.create_table()?;
    let mut by_address = HashMap::new();
    let values: Option<Table> = lua
        .named_registry_value::<Table>("_LOADED")
        .and_then(|l| l.raw_get::<Table>("flu"))
        .and_then(|f| f.raw_get::<Table>("errno"))
        .ok();
    for &(name, code) in errno::ERRNOS {
        codes.raw_set(name, code)?;
        codes.raw_set(code, code)?;
        if let Some(v) = values.as_ref().and_then(|t| t.raw_get::<Value>(name).ok())
            && !v.is_nil()
        {
            if let Value::UserData(u) = &v {
                by_address.insert(u.to_pointer() as usize, i64::from(code));
            }
            codes.raw_set(v, code)?;
        }
    }
    Ok((codes, by_address))
}

/// A Lua value for a trace or log line.
fn show(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let b = s.as_bytes();
            if b.len() > 48 {
                format!("<{} bytes>", b.len())
            } else {
                format!("{:?}", String::from_utf8_lossy(&b))
            }
        }
        Value::Table(_) => "{..}".into(),
        Value::Function(_) => "function".into(),
        other => other.type_name().into(),
    }
}

/// A returned value for a log line: numbers by value, everything else by type.
fn type_or_value(v: &Option<Value>) -> String {
    match v {
        None => "nothing".into(),
        Some(v @ (Value::Integer(_) | Value::Number(_))) => show(v),
        Some(v) => v.type_name().into(),
    }
}

fn errno_name(e: Errno) -> String {
    errno::name_of(e.code()).map_or_else(|| e.code().to_string(), str::to_string)
}

fn first(out: MultiValue) -> Option<Value> {
    out.into_iter().next()
}

fn answer(reply: ReplyEmpty, r: Result<(), Fail>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Dispatch {
    pub fn new(lua: Lua, fs: &Table, cfg: Config, ctx: CurrentCtx) -> mlua::Result<Dispatch> {
        let (ops, warnings) = Ops::resolve(fs)?;
        for w in warnings {
            log::warn(&w);
        }
        let errno_of = lua.create_function(|_, v: Value| Ok(lua_errno(&v)))?;
        let (codes, errno_values) = errno_codes(&lua)?;
        let (xpcall, handler): (Function, Function) = lua
            .load(XPCALL_AND_HANDLER)
            .set_name("=flufs")
            .call((errno_of, codes.clone()))?;
        let watchdog = match cfg.op_timeout {
            Some(t) => Some(Watchdog::start(t).map_err(mlua::Error::external)?),
            None => None,
        };
        let defaults = StatDefaults {
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            time: Timespec::now(),
        };
        let stat_reader = convert::StatReader::new(&lua)?;
        let names = convert::Names::new(&lua)?;
        let dirs = dirs::Lister::new(crate::luaraw::Walker::new(&lua));
        // From here on the limit holds only while script code runs (see `run_coroutine`).
        let memory_limit = lua.set_memory_limit(0).unwrap_or(0);
        Ok(Dispatch {
            lua,
            ops,
            xpcall,
            handler,
            _codes: codes,
            errno_values,
            dirs,
            stat_reader,
            names,
            inodes: RefCell::new(Inodes::new()),
            handles: RefCell::new(HashMap::new()),
            next_fh: Cell::new(1),
            cfg,
            defaults,
            ctx,
            watchdog,
            peeked: RefCell::new([None; 15]),
            threads: RefCell::new(Vec::new()),
            changes: Cell::new(0),
            fresh: RefCell::new(fresh::FreshDirs::new()),
            drops: RefCell::new(Drops::new()),
            memory_limit,
        })
    }

    pub fn has(&self, op: OpName) -> bool {
        self.ops.has(op)
    }

    /// Whether the script drops set-user-ID/set-group-ID bits itself (`fs.handle_killpriv`).
    pub fn handles_killpriv(&self) -> bool {
        self.ops.handle_killpriv
    }

    /// When listings should be READDIRPLUS (`fs.readdirplus`).
    pub fn readdirplus(&self) -> crate::kernel::Readdirplus {
        self.ops.readdirplus
    }

    /// Call the script's `init`, if any.
    pub async fn init(&self) -> Result<(), String> {
        if self.has(OpName::Init) {
            self.call(OpName::Init, ())
                .await
                .map_err(|e| format!("the script's init failed: {}", errno::strerror(e.code())))?;
        }
        Ok(())
    }

    /// Call the script's `destroy`, if any.
    pub async fn destroy(&self) {
        if self.has(OpName::Destroy) {
            let _ = self.call(OpName::Destroy, ()).await;
        }
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut inodes = self.inodes.borrow_mut();
        inodes.forget(ino, n);
        // A followed directory's node gone from the table (its id may come back for another
        // node): stop following it.
        if self.fresh.borrow().follows(ino) && !inodes.contains(ino) {
            self.fresh.borrow_mut().drop_dir(ino);
        }
    }

    /// Follow a change of directories' names in `fresh` (only for a script whose directories
    /// change only through the mount).
    fn follow(&self, f: impl FnOnce(&mut fresh::FreshDirs)) {
        if self.ops.reuse_listings {
            f(&mut self.fresh.borrow_mut());
        }
    }

    /// Follow a name made in `dir` (`Ok`), or stop following `dir` (the operation failed).
    fn follow_made<T>(&self, dir: u64, name: &[u8], r: &Result<T, Fail>) {
        self.follow(|f| match r {
            Ok(_) => f.added(dir, name),
            Err(_) => f.drop_dir(dir),
        });
    }

    /// The context shared with `flu.get_context`.
    pub fn ctx(&self) -> &CurrentCtx {
        &self.ctx
    }

    /// Count a request that may change attributes, at its start and again at its end
    /// (`changes`): a listing taken while one ran may hold attributes from before or after it.
    fn count_change(&self) {
        self.changes.set(self.changes.get() + 1);
    }

    /// Serve one request: the only place replies are sent.
    ///
    /// One future per request, boxed by the engine: it holds `self` and the request itself
    /// (no wrapping future holding them again), and operations that are rare or hold much
    /// across their awaits are boxed on their own, so that the common ones' future stays
    /// small enough for the allocator's fast path (glibc's per-thread cache: up to 1 KiB).
    pub async fn handle(self: Rc<Self>, req: Request) {
        let changes = may_change_attributes(&req.op);
        if changes {
            self.count_change();
        }
        let ttl = self.cfg.attr_ttl;
        match req.op {
            Op::Lookup {
                parent,
                name,
                reply,
            } => {
                match self.lookup(parent, name.as_bytes()).await {
                    Ok(Some((ino, st))) => self.reply_entry(reply, &self.looked_up(ino, &st)),
                    Ok(None) => {
                        // A negative entry, cached for negative_timeout.
                        let mut attr = Stat::placeholder(self.defaults).to_attr(0);
                        attr.ino = fuser::INodeNo(0);
                        reply.entry(&self.cfg.negative_ttl, &attr, Generation(0));
                    }
                    Err(e) => reply.error(e),
                }
            }
            Op::Getattr { ino, fh, reply } => match self.getattr(ino, fh).await {
                Ok(st) => reply.attr(&ttl, &self.looked_up(ino, &st)),
                Err(e) => reply.error(e),
            },
            Op::Setattr { ino, set, reply } => match Box::pin(self.setattr(ino, set)).await {
                Ok(st) => reply.attr(&ttl, &st.to_attr(ino)),
                Err(e) => reply.error(e),
            },
            Op::Readlink { ino, reply } => match Box::pin(self.readlink(ino)).await {
                Ok(t) => reply.data(&t),
                Err(e) => reply.error(e),
            },
            Op::Mknod {
                parent,
                name,
                mode,
                rdev,
                reply,
            } => {
                let r = Box::pin(self.mknod(parent, name.as_bytes(), mode, rdev)).await;
                self.follow_made(parent, name.as_bytes(), &r);
                self.entry_result(reply, r);
            }
            Op::Mkdir {
                parent,
                name,
                mode,
                reply,
            } => {
                let r = Box::pin(self.mkdir(parent, name.as_bytes(), mode)).await;
                self.follow_made(parent, name.as_bytes(), &r);
                self.entry_result(reply, r);
            }
            Op::Unlink {
                parent,
                name,
                reply,
            } => {
                let r = Box::pin(self.remove(OpName::Unlink, parent, name.as_bytes())).await;
                self.follow(|f| match &r {
                    Ok(()) => f.removed(parent, name.as_bytes()),
                    Err(_) => f.drop_dir(parent),
                });
                answer(reply, r)
            }
            Op::Rmdir {
                parent,
                name,
                reply,
            } => {
                // The directory's own node, to stop following it once removed.
                let child = self
                    .ops
                    .reuse_listings
                    .then(|| self.inodes.borrow().child(parent, name.as_bytes()))
                    .flatten();
                let r = Box::pin(self.remove(OpName::Rmdir, parent, name.as_bytes())).await;
                self.follow(|f| match &r {
                    Ok(()) => {
                        f.removed(parent, name.as_bytes());
                        if let Some(c) = child {
                            f.drop_dir(c);
                        }
                    }
                    Err(_) => f.drop_dir(parent),
                });
                answer(reply, r)
            }
            Op::Symlink {
                parent,
                name,
                target,
                reply,
            } => {
                let r = Box::pin(self.symlink(parent, name.as_bytes(), target.as_bytes())).await;
                self.follow_made(parent, name.as_bytes(), &r);
                self.entry_result(reply, r);
            }
            Op::Rename {
                parent,
                name,
                newparent,
                newname,
                flags,
                reply,
            } => {
                let r = Box::pin(self.rename(
                    parent,
                    name.as_bytes(),
                    newparent,
                    newname.as_bytes(),
                    flags,
                ))
                .await;
                // An exchange keeps both names where they are.
                self.follow(|f| match &r {
                    Ok(()) if flags & libc::RENAME_EXCHANGE == 0 => {
                        f.removed(parent, name.as_bytes());
                        f.added(newparent, newname.as_bytes());
                    }
                    Ok(()) => {}
                    Err(_) => {
                        f.drop_dir(parent);
                        f.drop_dir(newparent);
                    }
                });
                answer(reply, r)
            }
            Op::Link {
                ino,
                newparent,
                newname,
                reply,
            } => {
                let r = Box::pin(self.link(ino, newparent, newname.as_bytes())).await;
                self.follow_made(newparent, newname.as_bytes(), &r);
                self.entry_result(reply, r);
            }
            Op::Open { ino, flags, reply } => match self.open(ino, flags, false).await {
                Ok((fh, flags)) => reply.opened(FileHandle(fh), flags),
                Err(e) => reply.error(e),
            },
            Op::Read {
                ino,
                fh,
                offset,
                size,
                reply,
            } => self.read(ino, fh, offset, size, reply).await,
            Op::Flush { ino, fh, reply } => answer(reply, self.flush(ino, fh).await),
            Op::Release { ino, fh, reply } => {
                answer(reply, self.release(OpName::Release, ino, fh).await)
            }
            Op::Fsync {
                ino,
                fh,
                datasync,
                reply,
            } => answer(
                reply,
                Box::pin(self.fsync(OpName::Fsync, ino, fh, datasync)).await,
            ),
            Op::Opendir { ino, flags, reply } => match self.open(ino, flags, true).await {
                Ok((fh, flags)) => reply.opened(FileHandle(fh), flags),
                Err(e) => reply.error(e),
            },
            Op::Readdir {
                ino,
                fh,
                offset,
                reply,
            } => Box::pin(self.readdir(ino, fh, offset, dirs::DirReply::Plain(reply))).await,
            Op::Readdirplus {
                ino,
                fh,
                offset,
                reply,
            } => Box::pin(self.readdir(ino, fh, offset, dirs::DirReply::Plus(reply))).await,
            Op::Releasedir { ino, fh, reply } => {
                answer(reply, self.release(OpName::Releasedir, ino, fh).await)
            }
            Op::Fsyncdir {
                ino,
                fh,
                datasync,
                reply,
            } => answer(
                reply,
                Box::pin(self.fsync(OpName::Fsyncdir, ino, fh, datasync)).await,
            ),
            Op::Statfs { ino, reply } => match Box::pin(self.statfs(ino)).await {
                Ok(s) => reply.statfs(
                    s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namemax, s.frsize,
                ),
                Err(e) => reply.error(e),
            },
            Op::Setxattr {
                ino,
                name,
                value,
                flags,
                reply,
            } => answer(
                reply,
                Box::pin(self.setxattr(ino, name.as_bytes(), &value, flags)).await,
            ),
            Op::Getxattr {
                ino,
                name,
                size,
                reply,
            } => misc::xattr_reply(reply, size, self.getxattr(ino, name.as_bytes()).await),
            Op::Listxattr { ino, size, reply } => {
                misc::xattr_reply(reply, size, Box::pin(self.listxattr(ino)).await)
            }
            Op::Removexattr { ino, name, reply } => answer(
                reply,
                Box::pin(self.removexattr(ino, name.as_bytes())).await,
            ),
            Op::Access { ino, mask, reply } => {
                answer(reply, Box::pin(self.access(ino, mask)).await)
            }
            Op::Create {
                parent,
                name,
                mode,
                flags,
                reply,
            } => {
                let r = self.create(parent, name.as_bytes(), mode, flags).await;
                self.follow_made(parent, name.as_bytes(), &r);
                match r {
                    Ok((ino, st, fh, flags)) => reply.created(
                        &self.cfg.entry_ttl,
                        &st.to_attr(ino),
                        Generation(0),
                        FileHandle(fh),
                        flags,
                    ),
                    Err(e) => reply.error(e),
                }
            }
            Op::Getlk {
                ino,
                fh,
                start,
                end,
                typ,
                pid,
                reply,
            } => {
                match Box::pin(self.getlk(
                    ino,
                    fh,
                    convert::Lock {
                        typ,
                        start,
                        end,
                        pid,
                    },
                ))
                .await
                {
                    Ok(l) => reply.locked(l.start, l.end, l.typ, l.pid),
                    Err(e) => reply.error(e),
                }
            }
            Op::Setlk {
                ino,
                fh,
                start,
                end,
                typ,
                pid,
                sleep,
                reply,
            } => {
                let lock = convert::Lock {
                    typ,
                    start,
                    end,
                    pid,
                };
                answer(reply, Box::pin(self.setlk(ino, fh, lock, sleep)).await)
            }
            Op::Bmap {
                ino,
                blocksize,
                idx,
                reply,
            } => match Box::pin(self.bmap(ino, blocksize, idx)).await {
                Ok(b) => reply.bmap(b),
                Err(e) => reply.error(e),
            },
            Op::Fallocate {
                ino,
                fh,
                offset,
                length,
                mode,
                reply,
            } => answer(
                reply,
                Box::pin(self.fallocate(ino, fh, offset, length, mode)).await,
            ),
            Op::Lseek {
                ino,
                fh,
                offset,
                whence,
                reply,
            } => match Box::pin(self.lseek(ino, fh, offset, whence)).await {
                Ok(o) => reply.offset(o),
                Err(e) => reply.error(e),
            },
            Op::CopyFileRange {
                ino_in,
                fh_in,
                off_in,
                ino_out,
                fh_out,
                off_out,
                len,
                flags,
                reply,
            } => {
                let r = Box::pin(self.copy_file_range(
                    (ino_in, fh_in, off_in),
                    (ino_out, fh_out, off_out),
                    len,
                    flags,
                ))
                .await;
                match r {
                    Ok(n) => reply.written(n),
                    Err(e) => reply.error(e),
                }
            }
        }
        if changes {
            self.count_change();
        }
    }

    /// Serve a WRITE whose data is already the Lua string the script gets (made by
    /// `write_data` while fuser's buffer held the bytes). Counts as a change, as `handle`
    /// counts the others.
    pub async fn handle_write(
        self: Rc<Self>,
        ino: u64,
        fh: u64,
        offset: u64,
        data: mlua::Result<mlua::LuaString>,
        reply: crate::replies::ReplyWrite,
    ) {
        self.count_change();
        let r = match data {
            Ok(data) => self.write(ino, fh, offset, &data).await,
            Err(_) => Err(Errno::ENOMEM),
        };
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
        self.count_change();
    }

    /// A WRITE's data as a Lua string: the one copy of it flufs makes.
    pub fn write_data(&self, data: &[u8]) -> mlua::Result<mlua::LuaString> {
        self.lua.create_string(data)
    }

    /// Run `f` with `args` under xpcall in a coroutine of its own, which suspends when the script
    /// waits (network, timers) and lets other requests run meanwhile. Returns the outcome and
    /// whether `--op-timeout` interrupted it.
    ///
    /// The first resumption is made straight through the Lua C API (`resume_raw`): most calls
    /// finish there, and a finished coroutine is reused as it is. One that yields is handed to
    /// mlua's `AsyncThread`, which polls the futures of async functions (`flu.sleep`, `gett`,
    /// `http`) with this request's waker.
    async fn run_coroutine(
        &self,
        f: &Function,
        args: impl IntoLuaMulti,
        peek: impl FnOnce(*mut mlua::ffi::lua_State, std::ffi::c_int) -> bool,
    ) -> (mlua::Result<Outcome>, bool) {
        let (thread, pending, interrupted) = match self.first_resumption(f, args, peek) {
            First::Done(out, interrupted) => return (out, interrupted),
            First::Yielded(y) => (y.thread, y.pending, y.interrupted),
        };
        // Boxed: rare, and it holds much across its awaits (every call's future would carry
        // its size otherwise).
        let (out, interrupted) = Box::pin(self.resume_async(thread, pending, interrupted)).await;
        (out.map(Outcome::Values), interrupted)
    }

    /// The first resumption, in a coroutine from the pool (or a new one). Not async itself:
    /// nothing of it stays in the call's future.
    fn first_resumption(
        &self,
        f: &Function,
        args: impl IntoLuaMulti,
        peek: impl FnOnce(*mut mlua::ffi::lua_State, std::ffi::c_int) -> bool,
    ) -> First {
        let pooled = self.threads.borrow_mut().pop();
        let thread = match pooled {
            Some(t) => t,
            None => match self.lua.create_thread(self.xpcall.clone()) {
                Ok(t) => t,
                Err(e) => return First::Done(Err(e), false),
            },
        };
        let (first, interrupted) = self.resume_raw(&thread, f, args, peek);
        match first {
            Resumed::Finished(out) => {
                let mut pool = self.threads.borrow_mut();
                if pool.len() < THREAD_POOL {
                    pool.push(thread);
                }
                First::Done(out, interrupted)
            }
            Resumed::Failed(e) => First::Done(Err(e), interrupted),
            Resumed::Yielded { pending } => First::Yielded(Yielded {
                thread,
                pending,
                interrupted,
            }),
        }
    }

    /// The resumptions of a call's coroutine after it first yielded (`pending`: waiting for
    /// an async function's future), through mlua's `AsyncThread`.
    async fn resume_async(
        &self,
        thread: Thread,
        pending: bool,
        mut interrupted: bool,
    ) -> (mlua::Result<MultiValue>, bool) {
        let state = thread.to_pointer();
        let mut fut = match thread.clone().into_async::<MultiValue>(()) {
            Ok(f) => std::pin::pin!(f),
            Err(e) => return (Err(e), interrupted),
        };
        // A bare `coroutine.yield()` lets other requests run before this one goes on; an async
        // function's future was polled with no waker yet, so it is polled again at once.
        let mut wait_turn = !pending;
        let outcome = std::future::poll_fn(|cx| {
            if std::mem::take(&mut wait_turn) {
                cx.waker().wake_by_ref();
                return std::task::Poll::Pending;
            }
            let (r, fired) = self.script_runs(state, || fut.as_mut().poll(cx));
            interrupted |= fired;
            r
        })
        .await;
        // Keep the coroutine for another call once it is back to its initial state.
        let mut pool = self.threads.borrow_mut();
        if pool.len() < THREAD_POOL
            && thread.status() == ThreadStatus::Finished
            && thread.reset(self.xpcall.clone()).is_ok()
        {
            pool.push(thread);
        }
        (outcome, interrupted)
    }

    /// Work on the collector's cycle for `slice` at most while no request runs (see
    /// `tasks::IdleGc`); true once a cycle finished. Finalizers (`__gc`) may run in it, as in
    /// any request that allocates, so it runs as script code (under `--lua-memory`), on the
    /// main thread's state. Lua runs finalizers with hooks off, so `--op-timeout` reaches a
    /// script's finalizer through its own guard (`crate::finalizers`), here as in a request.
    pub(super) fn collect_for(&self, slice: Duration) -> bool {
        let main = self.lua.current_thread();
        let start = Instant::now();
        let (finished, _) = self.script_runs(main.to_pointer(), || {
            loop {
                match self.lua.gc_step() {
                    Ok(true) => return true,
                    Ok(false) if start.elapsed() < slice => {}
                    _ => return false,
                }
            }
        });
        finished
    }

    /// The Lua heap's size in bytes.
    pub(super) fn lua_heap(&self) -> usize {
        self.lua.used_memory()
    }

    /// Run `f`, which resumes coroutine `state`, as script code: under `--lua-memory` and
    /// `--op-timeout`. Returns what `f` returned and whether the timeout interrupted it.
    fn script_runs<R>(&self, state: *const std::ffi::c_void, f: impl FnOnce() -> R) -> (R, bool) {
        let limit = self.memory_limit;
        if limit > 0 {
            let _ = self.lua.set_memory_limit(limit);
        }
        if let Some(w) = &self.watchdog {
            w.arm(state);
        }
        let r = f();
        let interrupted = self.watchdog.as_ref().is_some_and(|w| w.disarm());
        if limit > 0 {
            let _ = self.lua.set_memory_limit(0);
        }
        (r, interrupted)
    }

    /// The first resumption of `thread`, calling `f` with `args` under xpcall, made
    /// through the C API (the arguments go straight onto the stack, with no `MultiValue` in
    /// between). Returns what became of it and whether `--op-timeout` interrupted it.
    fn resume_raw(
        &self,
        thread: &Thread,
        f: &Function,
        args: impl IntoLuaMulti,
        peek: impl FnOnce(*mut mlua::ffi::lua_State, std::ffi::c_int) -> bool,
    ) -> (Resumed, bool) {
        use mlua::ffi;
        use mlua::{FromLuaMulti, IntoLua};
        let co = thread.to_pointer() as *mut ffi::lua_State;
        // SAFETY: `co` is the state of `thread`, alive while it is; everything pushed is popped
        // again; nothing here can raise a Lua error outside a protected call (`lua_resume` is
        // one, and stack space is checked before pushing).
        let nargs = unsafe {
            self.lua.exec_raw_lua(|raw| -> mlua::Result<i32> {
                let main = raw.state();
                if ffi::lua_checkstack(main, 3) == 0 {
                    return Err(mlua::Error::StackError);
                }
                let top = ffi::lua_gettop(main);
                let pushed = (|| {
                    // A coroutine that finished is empty: xpcall goes back first. A new (or
                    // reset) one holds it already.
                    if ffi::lua_gettop(co) == 0 {
                        (&self.xpcall).push_into_stack(raw)?;
                        ffi::lua_xmove(main, co, 1);
                    }
                    f.push_into_stack(raw)?;
                    (&self.handler).push_into_stack(raw)?;
                    let n = args.push_into_stack_multi(raw)? + 2;
                    if ffi::lua_checkstack(co, n + 1) == 0 {
                        return Err(mlua::Error::StackError);
                    }
                    ffi::lua_xmove(main, co, n);
                    Ok(n)
                })();
                ffi::lua_settop(main, top);
                pushed
            })
        };
        let nargs = match nargs {
            Ok(n) => n,
            Err(e) => return (Resumed::Failed(e), false),
        };
        let mut nres = 0;
        let (status, interrupted) = self.script_runs(co as *const std::ffi::c_void, || unsafe {
            self.lua
                .exec_raw_lua(|raw| ffi::lua_resume(co, raw.state(), nargs, &mut nres))
        });
        let resumed = unsafe {
            self.lua.exec_raw_lua(|raw| {
                let main = raw.state();
                match status {
                    ffi::LUA_OK => {
                        if peek(co, nres) {
                            ffi::lua_settop(co, 0);
                            return Resumed::Finished(Ok(Outcome::Peeked));
                        }
                        if nres == 1
                            && ffi::lua_type(co, 1) == ffi::LUA_TBOOLEAN
                            && ffi::lua_toboolean(co, 1) != 0
                        {
                            ffi::lua_settop(co, 0);
                            return Resumed::Finished(Ok(Outcome::Nothing));
                        }
                        // The handler's errno code after `false`.
                        if nres == 2
                            && ffi::lua_type(co, 1) == ffi::LUA_TBOOLEAN
                            && ffi::lua_toboolean(co, 1) == 0
                            && ffi::lua_isinteger(co, 2) != 0
                        {
                            let code = ffi::lua_tointegerx(co, 2, std::ptr::null_mut());
                            ffi::lua_settop(co, 0);
                            return Resumed::Finished(Ok(Outcome::Raised(code)));
                        }
                        if let Some(code) = self.returned_errno(co, nres) {
                            ffi::lua_settop(co, 0);
                            return Resumed::Finished(Ok(Outcome::Raised(code)));
                        }
                        if ffi::lua_checkstack(main, nres + 1) == 0 {
                            ffi::lua_settop(co, 0);
                            return Resumed::Failed(mlua::Error::StackError);
                        }
                        let top = ffi::lua_gettop(main);
                        ffi::lua_xmove(co, main, nres);
                        let out = MultiValue::from_stack_multi(nres, raw);
                        ffi::lua_settop(main, top);
                        Resumed::Finished(out.map(Outcome::Values))
                    }
                    ffi::LUA_YIELD => {
                        let pending = nres == 1
                            && ffi::lua_tolightuserdata(co, -1) == mlua::Lua::poll_pending().0;
                        // As mlua leaves a coroutine that yielded: the values are not resumed
                        // with.
                        ffi::lua_settop(co, 0);
                        Resumed::Yielded { pending }
                    }
                    err => {
                        // An error that escaped xpcall (out of memory, or in its
                        // handler): the coroutine is dead and is not kept.
                        let mut len = 0usize;
                        let p = ffi::lua_tolstring(co, -1, &mut len);
                        let msg = if p.is_null() {
                            "error object is not a string".to_string()
                        } else {
                            String::from_utf8_lossy(std::slice::from_raw_parts(p as *const u8, len))
                                .into_owned()
                        };
                        ffi::lua_settop(co, 0);
                        Resumed::Failed(if err == ffi::LUA_ERRMEM {
                            mlua::Error::MemoryError(msg)
                        } else {
                            mlua::Error::runtime(msg)
                        })
                    }
                }
            })
        };
        (resumed, interrupted)
    }

    /// The code of a `flu.errno` value that an operation returned as its only result (beyond
    /// Flu: returning it fails the request as raising it does, without unwinding an error),
    /// read where the call left `true, value` on coroutine `co`'s stack.
    ///
    /// # Safety
    /// `co` just returned `nres` results.
    unsafe fn returned_errno(
        &self,
        co: *mut mlua::ffi::lua_State,
        nres: std::ffi::c_int,
    ) -> Option<i64> {
        use mlua::ffi;
        unsafe {
            if nres != 2
                || ffi::lua_type(co, 2) != ffi::LUA_TUSERDATA
                || ffi::lua_toboolean(co, 1) == 0
            {
                return None;
            }
            let at = ffi::lua_touserdata(co, 2) as usize;
            self.errno_values.get(&at).copied()
        }
    }

    /// Call operation `op` through xpcall and its error handler.
    async fn call(&self, op: OpName, args: impl IntoLuaMulti) -> Result<MultiValue, Fail> {
        match self.call_peek(op, args, no_peek).await? {
            Returned::Values(v) => Ok(v),
            // `no_peek` reads nothing.
            Returned::Peeked => Err(Errno::EIO),
        }
    }

    /// `call`, with `peek` first given the results where the call left them on its coroutine's
    /// stack (`true` and what the operation returned), to read what it can without making
    /// them into values.
    async fn call_peek(
        &self,
        op: OpName,
        args: impl IntoLuaMulti,
        peek: impl FnOnce(*mut mlua::ffi::lua_State, std::ffi::c_int) -> bool,
    ) -> Result<Returned, Fail> {
        let Some(f) = self.ops.get(op) else {
            return Err(Errno::ENOSYS);
        };
        let start = self.cfg.debug.then(Instant::now);
        let (outcome, trace_args) = if start.is_some() {
            // Traced: the arguments are made into values first, to be shown.
            let argv = match args.into_lua_multi(&self.lua) {
                Ok(a) => a,
                Err(e) => {
                    log::error(&format!("{}: cannot pass arguments: {e}", op.name()));
                    return Err(Errno::EIO);
                }
            };
            let shown = argv.iter().map(show).collect::<Vec<_>>().join(", ");
            // Boxed: rare, and it would widen every call's future. Nothing is peeked, so that
            // the trace shows the results.
            (
                Box::pin(self.run_coroutine(f, argv, no_peek)).await,
                Some(shown),
            )
        } else {
            (self.run_coroutine(f, args, peek).await, None)
        };
        let interrupted = outcome.1;
        let outcome = outcome.0;
        let result = match outcome {
            Ok(Outcome::Peeked) => Ok(Returned::Peeked),
            Ok(Outcome::Nothing) => Ok(Returned::Values(MultiValue::new())),
            Ok(Outcome::Raised(code)) => Err(Errno::from_i32(code as i32)),
            Ok(Outcome::Values(mut out)) => match out.pop_front() {
                // A `flu.errno` value returned (a call that yielded; see `returned_errno`).
                Some(Value::Boolean(true)) => match (out.len(), out.front()) {
                    (1, Some(v @ Value::UserData(_))) if let Some(code) = lua_errno(v) => {
                        Err(Errno::from_i32(code))
                    }
                    _ => Ok(Returned::Values(out)),
                },
                _ => match out.pop_front() {
                    Some(Value::Integer(code)) => Err(Errno::from_i32(code as i32)),
                    Some(v) => {
                        let msg = match &v {
                            Value::String(s) => s.to_string_lossy(),
                            Value::Error(e) => e.to_string(),
                            other => show(other),
                        };
                        log::error(&format!("{} failed: {msg}", op.name()));
                        if interrupted {
                            Err(Errno::ETIMEDOUT)
                        } else if msg.contains("not enough memory") {
                            Err(Errno::ENOMEM)
                        } else {
                            Err(Errno::EIO)
                        }
                    }
                    None => Err(Errno::EIO),
                },
            },
            Err(mlua::Error::MemoryError(e)) => {
                log::error(&format!("{} failed: {e}", op.name()));
                Err(Errno::ENOMEM)
            }
            Err(e) => {
                log::error(&format!("{} failed: {e}", op.name()));
                Err(Errno::EIO)
            }
        };
        if let (Some(start), Some(args)) = (start, trace_args) {
            let us = start.elapsed().as_micros();
            let outcome = match &result {
                Ok(Returned::Values(v)) => {
                    format!("ok {}", v.iter().map(show).collect::<Vec<_>>().join(", "))
                }
                Ok(Returned::Peeked) => "ok".to_string(),
                Err(e) => errno_name(*e),
            };
            log::trace(&format!("{}({args}) -> {outcome} ({us} µs)", op.name()));
        }
        result
    }

    /// Call `op` and ignore what it returns.
    async fn call_unit(&self, op: OpName, args: impl IntoLuaMulti) -> Result<(), Fail> {
        self.call(op, args).await.map(drop)
    }

    /// Log that `op` returned something of the wrong shape; the request gets EIO.
    fn bad_value(&self, op: OpName, path: &[u8], msg: impl std::fmt::Display) -> Fail {
        log::error(&format!(
            "{}({:?}) returned a bad value: {msg}",
            op.name(),
            String::from_utf8_lossy(path)
        ));
        Errno::EIO
    }

    /// The first result of `op` as a string.
    fn want_string(
        &self,
        op: OpName,
        path: &[u8],
        out: MultiValue,
    ) -> Result<mlua::LuaString, Fail> {
        match first(out) {
            Some(Value::String(s)) => Ok(s),
            other => Err(self.bad_value(
                op,
                path,
                format!("expected a string, got {}", type_or_value(&other)),
            )),
        }
    }

    /// The first result of `op` as a non-negative integer no larger than `max`.
    fn want_count(&self, op: OpName, path: &[u8], out: MultiValue, max: u64) -> Result<u64, Fail> {
        let v = first(out);
        let n = match &v {
            Some(Value::Integer(i)) => u64::try_from(*i).ok(),
            Some(Value::Number(f)) if f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19 => {
                Some(*f as u64)
            }
            _ => None,
        };
        match n.filter(|n| *n <= max) {
            Some(n) => Ok(n),
            None => Err(self.bad_value(
                op,
                path,
                format!("expected a count in 0..={max}, got {}", type_or_value(&v)),
            )),
        }
    }

    fn table(&self) -> Result<Table, Fail> {
        self.lua.create_table().map_err(|_| Errno::ENOMEM)
    }

    fn path(&self, ino: u64) -> Result<Vec<u8>, Fail> {
        self.inodes.borrow_mut().path(ino).ok_or(Errno::ESTALE)
    }

    fn child_path(&self, parent: u64, name: &[u8]) -> Result<Vec<u8>, Fail> {
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        self.inodes
            .borrow_mut()
            .child_path(parent, name)
            .ok_or(Errno::ESTALE)
    }

    /// The path and `fi` of open file `fh` on `ino`. The path is made into a Lua string once
    /// per handle, and again only after a path changed (`Inodes::moves`): the reads and
    /// writes of an open file pass the same path every time, and building and interning it
    /// cost more than the rest of a 4 KiB read's host side.
    fn open_file(&self, ino: u64, fh: u64) -> Result<Rc<OpenArgs>, Fail> {
        let moves = self.inodes.borrow().moves();
        if let Some(h) = self.handles.borrow().get(&fh)
            && h.ino == ino
            && let Some((m, args)) = &h.args
            && *m == moves
        {
            return Ok(args.clone());
        }
        let path = self.path(ino)?;
        let path = self.lua.create_string(&path).map_err(|_| Errno::ENOMEM)?;
        let mut handles = self.handles.borrow_mut();
        let h = handles.get_mut(&fh);
        let fi = h.as_ref().map(|h| h.fi.clone());
        let args = Rc::new(OpenArgs { path, fi });
        // Kept for the handle's next calls when it is open on this node.
        if let Some(h) = h
            && h.ino == ino
        {
            h.args = Some((moves, args.clone()));
        }
        Ok(args)
    }

    fn fi(&self, fh: u64) -> Option<Table> {
        self.handles.borrow_mut().get(&fh).map(|h| h.fi.clone())
    }

    /// The `fi` of handle `fh`, or, for a node no name refers to any more (unlinked while
    /// open), of any handle open on it: its old path would not resolve.
    fn fi_for(&self, ino: u64, fh: Option<u64>) -> Option<Table> {
        if let Some(fi) = fh.and_then(|fh| self.fi(fh)) {
            return Some(fi);
        }
        if self.inodes.borrow_mut().is_removed(ino) {
            return self
                .handles
                .borrow_mut()
                .values()
                .find(|h| h.ino == ino)
                .map(|h| h.fi.clone());
        }
        None
    }

    /// A mode argument: a Flu mode set, or the integer with `fs.modes_as_numbers`.
    fn modeset(&self, mode: u32) -> Result<Value, Fail> {
        if self.ops.modes_as_numbers {
            return Ok(Value::Integer(mode.into()));
        }
        self.names
            .mode_set(&self.lua, mode)
            .map(Value::Table)
            .map_err(|_| Errno::ENOMEM)
    }

    /// Record a lookup of `name` in `parent` with attributes `st`; returns the node id.
    fn remember(&self, parent: u64, name: &[u8], st: &Stat) -> u64 {
        self.inodes
            .borrow_mut()
            .lookup(parent, name, st.ino, st.mode & libc::S_IFMT, st.nlink)
    }

    /// `remember` for a node an operation just made (create, mknod, mkdir, symlink). A node
    /// the table had never seen is new: with `fs.no_xattrs_until_set` it is marked as having no
    /// extended attributes (`Inodes::set_bare`), and a new directory's names are followed from
    /// here on (`fresh`, with `fs.reuse_listings`). One the table knew (a script that handed
    /// out an existing node) is neither.
    fn remember_made(&self, parent: u64, name: &[u8], st: &Stat) -> u64 {
        let kind = st.mode & libc::S_IFMT;
        let mut inodes = self.inodes.borrow_mut();
        let (ino, new) = inodes.lookup_made(parent, name, st.ino, kind, st.nlink);
        if new {
            if self.ops.no_xattrs_until_set {
                inodes.set_bare(ino);
            }
            if kind == libc::S_IFDIR {
                self.follow(|f| f.made(ino));
            }
        }
        ino
    }

    /// The attributes of node `ino` for a reply the kernel stores only when nothing changed
    /// them since it sent the request (getattr, lookup, readdirplus): with the links it is
    /// about to take off after unlinks it has not seen answered yet (see `crate::nlinks`).
    pub(super) fn looked_up(&self, ino: u64, st: &Stat) -> fuser::FileAttr {
        let mut attr = st.to_attr(ino);
        let drops = self.drops.borrow();
        let carry = drops.carry(ino, self.ctx.get().unique);
        attr.nlink = attr.nlink.saturating_add(carry);
        attr
    }

    /// A name of `node` (its id and file type, as the table knew it before) was unlinked or
    /// renamed over: the kernel lowers a file's cached link count once it has the answer.
    pub(super) fn unlinked(&self, node: Option<(u64, u32)>) {
        if let Some((ino, kind)) = node
            && kind != libc::S_IFDIR
        {
            let unique = self.ctx.get().unique;
            self.drops.borrow_mut().unlinked(ino, unique);
        }
    }

    fn reply_entry(&self, reply: ReplyEntry, attr: &fuser::FileAttr) {
        reply.entry(&self.cfg.entry_ttl, attr, Generation(0));
    }

    fn entry_result(&self, reply: ReplyEntry, r: Result<(u64, Stat), Fail>) {
        match r {
            Ok((ino, st)) => self.reply_entry(reply, &st.to_attr(ino)),
            Err(e) => reply.error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine boxes one `handle` future per request. glibc's malloc serves blocks of up
    /// to 1032 bytes from its per-thread cache; a larger future goes the slower way on every
    /// request (~6% more daemon CPU for a stat, measured when rare operations were boxed to
    /// get under it). An operation that grows it should be boxed in `handle`.
    #[test]
    fn a_request_future_fits_mallocs_thread_cache() {
        let lua = unsafe { Lua::unsafe_new_with(mlua::StdLib::ALL, mlua::LuaOptions::default()) };
        let fs = lua.create_table().unwrap();
        let d = dispatch(&lua, &fs, None);
        let size = handle_future_size(&d);
        assert!(size <= 1032, "the request future is {size} bytes");
    }

    /// The size of the future `handle` makes (its type, without making one: a request needs
    /// a kernel reply).
    pub(super) fn handle_future_size(d: &Rc<Dispatch>) -> usize {
        fn size_of_output<R>(_: impl FnOnce(crate::kernel::Request) -> R) -> usize {
            std::mem::size_of::<R>()
        }
        size_of_output(|r| d.clone().handle(r))
    }

    /// A dispatcher for script table `fs` with the default time-outs.
    pub(super) fn dispatch(lua: &Lua, fs: &Table, op_timeout: Option<Duration>) -> Rc<Dispatch> {
        let cfg = Config {
            attr_ttl: Duration::from_secs(1),
            entry_ttl: Duration::from_secs(1),
            negative_ttl: Duration::ZERO,
            direct_io: false,
            kernel_cache: false,
            debug: false,
            op_timeout,
        };
        let ctx = Rc::new(Cell::new(Ctx::default()));
        Rc::new(Dispatch::new(lua.clone(), fs, cfg, ctx).unwrap())
    }
}

#[cfg(test)]
mod perf_probe {
    use super::*;

    /// Not a test: per-call costs of the hot path (`cargo test --release perf_probe --
    /// --ignored --nocapture`).
    #[test]
    #[ignore]
    fn costs() {
        let lua = unsafe { Lua::unsafe_new_with(mlua::StdLib::ALL, mlua::LuaOptions::default()) };
        let fs: Table = lua
            .load(
                r#"local F = {mode = 33188, nlink = 1, size = 4096, ino = 2}
                local E = flu and flu.errno
                return { getattr = function(path) return F end,
                         getxattr = function(path, name) error("ENODATA", 0) end }"#,
            )
            .eval()
            .unwrap();
        let d = super::tests::dispatch(&lua, &fs, Some(Duration::from_secs(10)));
        let n = 200_000;
        // The engine boxes one `handle` future per request: above 1 KiB glibc's malloc leaves
        // its per-thread cache for a slower path.
        println!(
            "handle future: {} bytes, stat future: {} bytes",
            super::tests::handle_future_size(&d),
            std::mem::size_of_val(&d.stat(b"/", None))
        );
        let time = |name: &str, f: &mut dyn FnMut()| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            println!("{name}: {:.0} ns", t.elapsed().as_nanos() as f64 / n as f64);
        };
        time("stat (full)", &mut || {
            crate::runtime::block_on(d.stat(b"/s/f1", None)).unwrap();
        });
        time("call getattr", &mut || {
            crate::runtime::block_on(d.call(OpName::Getattr, "/s/f1")).unwrap();
        });
        let getattr = d.ops.get(OpName::Getattr).unwrap().clone();
        let argv = || "/s/f1".into_lua_multi(&d.lua).unwrap();
        time("call getxattr raising ENODATA", &mut || {
            let r = crate::runtime::block_on(d.call(OpName::Getxattr, ("/s/f1", "user.x")));
            assert!(r.is_err());
        });
        time("run_coroutine", &mut || {
            crate::runtime::block_on(d.run_coroutine(&getattr, argv(), no_peek))
                .0
                .unwrap();
        });
        time("xpcall (sync)", &mut || {
            d.xpcall
                .call::<MultiValue>((getattr.clone(), d.handler.clone(), argv()))
                .unwrap();
        });
        let t = d.table().unwrap();
        t.raw_set("mode", 33188).unwrap();
        t.raw_set("nlink", 1).unwrap();
        time("Stat::decode", &mut || {
            d.stat_reader.decode(&t, &d.defaults).unwrap();
        });
        time("create table + string", &mut || {
            let _ = d.table().unwrap();
            let _ = d.lua.create_string(b"/s/f1").unwrap();
        });
    }
}
