//! The dispatcher: the one owner of the Lua state. It takes `Request`s from the kernel side in
//! order, turns each into a call of the script's operation (path, arguments and `fi` table as
//! Flu defines them), turns the result into the kernel reply, and answers every request exactly
//! once. A Lua error becomes an errno for that request only.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::rc::Rc;
use std::time::{Duration, Instant};

use fuser::{
    Errno, FileHandle, FopenFlags, Generation, INodeNo, ReplyDirectory, ReplyEmpty, ReplyEntry,
    TimeOrNow,
};
use mlua::{Function, IntoLuaMulti, Lua, MultiValue, Table, Value};

use crate::convert::{self, Lock, Stat, StatDefaults, Statfs, Timespec};
use crate::errno;
use crate::inodes::Inodes;
use crate::kernel::{Ctx, Op, Request, SetAttr};
use crate::log;
use crate::ops::{OpName, Ops};

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

/// The context of the request being served, shared with `flu.get_context`.
pub type CurrentCtx = Rc<Cell<Ctx>>;

/// Why a call did not produce a value.
type Fail = Errno;

struct DirEnt {
    name: Vec<u8>,
    stat: Option<Stat>,
}

/// An open file or directory.
struct Handle {
    ino: u64,
    fi: Table,
    /// Directory listing captured at offset 0 (for scripts that do not use offsets).
    dir: Option<Vec<DirEnt>>,
}

/// State shared with the readdir `filler` function while a readdir call runs.
#[derive(Default)]
struct DirSink {
    active: bool,
    entries: Vec<DirEnt>,
    /// Offset mode: entries go straight into this reply.
    reply: Option<ReplyDirectory>,
    used_offsets: bool,
    dir_path: Vec<u8>,
}

pub struct Dispatch {
    lua: Lua,
    ops: Ops,
    trampoline: Function,
    filler: Function,
    sink: Rc<RefCell<DirSink>>,
    inodes: Inodes,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    cfg: Config,
    defaults: StatDefaults,
    ctx: CurrentCtx,
    watchdog: Rc<Watchdog>,
}

/// The `--op-timeout` bound: a deadline per request, checked by a Lua instruction-count hook.
#[derive(Default)]
struct Watchdog {
    deadline: Cell<Option<Instant>>,
    fired: Cell<bool>,
}

const TRAMPOLINE: &str = r#"
local xpcall, traceback, tostring, errno_of = xpcall, debug.traceback, tostring, ...
local function handler(e)
  local code = errno_of(e)
  if code then return code end
  local msg = tostring(e)
  if msg:find("stack traceback:", 1, true) then return msg end
  return traceback(msg, 2)
end
return function(f, ...) return xpcall(f, handler, ...) end
"#;

fn lua_errno(v: &Value) -> Option<i32> {
    match v {
        Value::UserData(u) => u.borrow::<crate::flu::ErrnoValue>().ok().map(|e| e.0),
        Value::Integer(i) => errno::from_integer(*i),
        Value::Number(n) if n.fract() == 0.0 => errno::from_integer(*n as i64),
        Value::String(s) => errno::from_message(&s.to_string_lossy()),
        _ => None,
    }
}

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

fn bytes_of(name: &OsString) -> &[u8] {
    name.as_bytes()
}

fn errno_name(e: Errno) -> String {
    errno::name_of(e.code()).map_or_else(|| e.code().to_string(), str::to_string)
}

impl Dispatch {
    pub fn new(lua: Lua, fs: &Table, cfg: Config, ctx: CurrentCtx) -> mlua::Result<Dispatch> {
        let (ops, warnings) = Ops::resolve(fs)?;
        for w in warnings {
            log::warn(&w);
        }
        let errno_of = lua.create_function(|_, v: Value| Ok(lua_errno(&v)))?;
        let trampoline: Function = lua.load(TRAMPOLINE).set_name("=flufs").call(errno_of)?;
        let sink = Rc::new(RefCell::new(DirSink::default()));
        let defaults = StatDefaults {
            uid: unsafe { libc::getuid() },
            gid: unsafe { libc::getgid() },
            time: Timespec::now(),
        };
        let watchdog = Rc::new(Watchdog::default());
        if cfg.op_timeout.is_some() {
            let w = watchdog.clone();
            let triggers = mlua::HookTriggers::new().every_nth_instruction(100_000);
            lua.set_global_hook(triggers, move |_, _| match w.deadline.get() {
                Some(d) if Instant::now() > d => {
                    w.fired.set(true);
                    Err(mlua::Error::runtime(
                        "operation interrupted: it ran longer than --op-timeout",
                    ))
                }
                _ => Ok(mlua::VmState::Continue),
            })?;
        }
        let filler = make_filler(
            &lua,
            sink.clone(),
            ops.get(OpName::Getattr).cloned(),
            defaults,
        )?;
        Ok(Dispatch {
            lua,
            ops,
            trampoline,
            filler,
            sink,
            inodes: Inodes::new(),
            handles: HashMap::new(),
            next_fh: 1,
            cfg,
            defaults,
            ctx,
            watchdog,
        })
    }

    pub fn has(&self, op: OpName) -> bool {
        self.ops.has(op)
    }

    /// Call the script's `init`, if any.
    pub fn init(&mut self) -> Result<(), String> {
        if self.has(OpName::Init) {
            self.call(OpName::Init, ())
                .map_err(|e| format!("the script's init failed: {}", errno::strerror(e.code())))?;
        }
        Ok(())
    }

    /// Call the script's `destroy`, if any.
    pub fn destroy(&mut self) {
        if self.has(OpName::Destroy) {
            let _ = self.call(OpName::Destroy, ());
        }
    }

    /// Serve requests until the channel closes or a `Shutdown` arrives.
    pub fn run(&mut self, rx: &std::sync::mpsc::Receiver<Request>) {
        while let Ok(req) = rx.recv() {
            if matches!(req.op, Op::Shutdown) {
                break;
            }
            self.handle(req);
        }
    }

    /// Call operation `op` through the error-catching trampoline.
    fn call(&self, op: OpName, args: impl IntoLuaMulti) -> Result<MultiValue, Fail> {
        let Some(f) = self.ops.get(op) else {
            return Err(Errno::ENOSYS);
        };
        let start = self.cfg.debug.then(Instant::now);
        let mut argv = match args.into_lua_multi(&self.lua) {
            Ok(a) => a,
            Err(e) => {
                log::error(&format!("{}: cannot pass arguments: {e}", op.name()));
                return Err(Errno::EIO);
            }
        };
        let trace_args = start.map(|_| argv.iter().map(show).collect::<Vec<_>>().join(", "));
        argv.push_front(Value::Function(f.clone()));
        if let Some(t) = self.cfg.op_timeout {
            self.watchdog.deadline.set(Some(Instant::now() + t));
            self.watchdog.fired.set(false);
        }
        let outcome = self.trampoline.call::<MultiValue>(argv);
        self.watchdog.deadline.set(None);
        let result = match outcome {
            Ok(mut out) => match out.pop_front() {
                Some(Value::Boolean(true)) => Ok(out),
                _ => match out.pop_front() {
                    Some(Value::Integer(code)) => Err(Errno::from_i32(code as i32)),
                    Some(v) => {
                        let msg = match &v {
                            Value::String(s) => s.to_string_lossy(),
                            other => show(other),
                        };
                        log::error(&format!("{} failed: {msg}", op.name()));
                        if self.watchdog.fired.get() {
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
                Ok(v) => format!("ok {}", v.iter().map(show).collect::<Vec<_>>().join(", ")),
                Err(e) => errno_name(*e),
            };
            log::trace(&format!("{}({args}) -> {outcome} ({us} µs)", op.name()));
        }
        result
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

    fn lstr(&self, b: &[u8]) -> Result<mlua::LuaString, Fail> {
        self.lua.create_string(b).map_err(|_| Errno::ENOMEM)
    }

    fn path(&self, ino: u64) -> Result<Vec<u8>, Fail> {
        self.inodes.path(ino).ok_or(Errno::ESTALE)
    }

    fn child_path(&self, parent: u64, name: &[u8]) -> Result<Vec<u8>, Fail> {
        if name.len() > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        self.inodes.child_path(parent, name).ok_or(Errno::ESTALE)
    }

    fn fi(&self, fh: u64) -> Option<Table> {
        self.handles.get(&fh).map(|h| h.fi.clone())
    }

    /// getattr (or fgetattr with an open handle) decoded into a `Stat`.
    fn stat(&self, path: &[u8], fh: Option<u64>) -> Result<Stat, Fail> {
        let st = self.lua.create_table().map_err(|_| Errno::ENOMEM)?;
        let lpath = self.lstr(path)?;
        let (op, out) = match fh.and_then(|fh| self.fi(fh)) {
            Some(fi) if self.has(OpName::Fgetattr) => (
                OpName::Fgetattr,
                self.call(OpName::Fgetattr, (lpath, st.clone(), fi))?,
            ),
            _ => (
                OpName::Getattr,
                self.call(OpName::Getattr, (lpath, st.clone()))?,
            ),
        };
        let table = match out.into_iter().next() {
            Some(Value::Table(t)) => t,
            None | Some(Value::Nil) => st,
            Some(other) => {
                return Err(self.bad_value(
                    op,
                    path,
                    format!("expected a stat table, got {}", other.type_name()),
                ));
            }
        };
        Stat::from_lua(&table, &self.defaults).map_err(|e| self.bad_value(op, path, e))
    }

    fn reply_entry(&mut self, parent: u64, name: &[u8], path: &[u8], reply: ReplyEntry) {
        match self.stat(path, None) {
            Ok(st) => {
                let ino =
                    self.inodes
                        .lookup(parent, name, st.ino, st.mode & libc::S_IFMT, st.nlink);
                reply.entry(&self.cfg.entry_ttl, &st.to_attr(ino), Generation(0));
            }
            Err(e) => reply.error(e),
        }
    }

    fn empty(&self, reply: ReplyEmpty, r: Result<MultiValue, Fail>) {
        match r {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn new_handle(&mut self, flags: i32) -> Result<(u64, Table), Fail> {
        let fi = self.lua.create_table().map_err(|_| Errno::ENOMEM)?;
        let set = convert::open_flags_to_lua(&self.lua, flags).map_err(|_| Errno::ENOMEM)?;
        let _ = fi.raw_set("flags", set);
        let _ = fi.raw_set("direct_io", self.cfg.direct_io);
        let _ = fi.raw_set("keep_cache", self.cfg.kernel_cache);
        let _ = fi.raw_set("nonseekable", false);
        let fh = self.next_fh;
        self.next_fh += 1;
        Ok((fh, fi))
    }

    fn open_flags(fi: &Table) -> FopenFlags {
        let mut f = FopenFlags::empty();
        if fi.raw_get::<bool>("direct_io").unwrap_or(false) {
            f |= FopenFlags::FOPEN_DIRECT_IO;
        }
        if fi.raw_get::<bool>("keep_cache").unwrap_or(false) {
            f |= FopenFlags::FOPEN_KEEP_CACHE;
        }
        if fi.raw_get::<bool>("nonseekable").unwrap_or(false) {
            f |= FopenFlags::FOPEN_NONSEEKABLE;
        }
        f
    }

    fn register(&mut self, fh: u64, ino: u64, fi: Table) {
        self.inodes.opened(ino);
        self.handles.insert(fh, Handle { ino, fi, dir: None });
    }

    fn unregister(&mut self, fh: u64) -> Option<Handle> {
        let h = self.handles.remove(&fh)?;
        self.inodes.closed(h.ino);
        Some(h)
    }

    fn modeset(&self, mode: u32) -> Result<Table, Fail> {
        convert::mode_to_lua(&self.lua, mode).map_err(|_| Errno::ENOMEM)
    }

    fn time_arg(&self, t: Option<TimeOrNow>) -> Result<Value, Fail> {
        let ts = match t {
            None => return Ok(Value::Nil),
            Some(TimeOrNow::Now) => Timespec::now(),
            Some(TimeOrNow::SpecificTime(s)) => Timespec::from_system(s),
        };
        ts.into_lua_table(&self.lua)
            .map(Value::Table)
            .map_err(|_| Errno::ENOMEM)
    }

    /// Serve one request.
    pub fn handle(&mut self, req: Request) {
        self.ctx.set(req.ctx);
        match req.op {
            Op::Shutdown => {}
            Op::Lookup {
                parent,
                name,
                reply,
            } => {
                let name = bytes_of(&name);
                let path = match self.child_path(parent, name) {
                    Ok(p) => p,
                    Err(e) => return reply.error(e),
                };
                match self.stat(&path, None) {
                    Ok(st) => {
                        let ino = self.inodes.lookup(
                            parent,
                            name,
                            st.ino,
                            st.mode & libc::S_IFMT,
                            st.nlink,
                        );
                        reply.entry(&self.cfg.entry_ttl, &st.to_attr(ino), Generation(0));
                    }
                    Err(e) if e == Errno::ENOENT && !self.cfg.negative_ttl.is_zero() => {
                        let mut attr = Stat::to_attr(
                            Stat {
                                mode: libc::S_IFREG,
                                ino: 0,
                                nlink: 1,
                                uid: 0,
                                gid: 0,
                                rdev: 0,
                                size: 0,
                                blocks: 0,
                                blksize: 4096,
                                atime: self.defaults.time,
                                mtime: self.defaults.time,
                                ctime: self.defaults.time,
                            },
                            0,
                        );
                        attr.ino = INodeNo(0);
                        reply.entry(&self.cfg.negative_ttl, &attr, Generation(0));
                    }
                    Err(e) => reply.error(e),
                }
            }
            Op::Forget { nodes } => {
                for (ino, n) in nodes {
                    self.inodes.forget(ino, n);
                }
            }
            Op::Getattr { ino, fh, reply } => {
                let r = self.path(ino).and_then(|p| self.stat(&p, fh));
                match r {
                    Ok(st) => reply.attr(&self.cfg.attr_ttl, &st.to_attr(ino)),
                    Err(e) => reply.error(e),
                }
            }
            Op::Setattr { ino, set, reply } => match self.setattr(ino, set) {
                Ok(st) => reply.attr(&self.cfg.attr_ttl, &st.to_attr(ino)),
                Err(e) => reply.error(e),
            },
            Op::Readlink { ino, reply } => {
                let r = (|| {
                    let path = self.path(ino)?;
                    let out = self.call(OpName::Readlink, (self.lstr(&path)?, 4096))?;
                    match out.into_iter().next() {
                        Some(Value::String(s)) => Ok(s.as_bytes().to_vec()),
                        other => Err(self.bad_value(
                            OpName::Readlink,
                            &path,
                            format!(
                                "expected a string, got {}",
                                other.as_ref().map_or("nothing", |v| v.type_name())
                            ),
                        )),
                    }
                })();
                match r {
                    Ok(t) => reply.data(&t),
                    Err(e) => reply.error(e),
                }
            }
            Op::Mknod {
                parent,
                name,
                mode,
                rdev,
                reply,
            } => {
                let name = bytes_of(&name);
                let r = (|| {
                    let path = self.child_path(parent, name)?;
                    let r = self.call(
                        OpName::Mknod,
                        (self.lstr(&path)?, self.modeset(mode)?, rdev),
                    )?;
                    Ok::<_, Fail>((path, r))
                })();
                match r {
                    Ok((path, _)) => self.reply_entry(parent, name, &path, reply),
                    Err(e) => reply.error(e),
                }
            }
            Op::Mkdir {
                parent,
                name,
                mode,
                reply,
            } => {
                let name = bytes_of(&name);
                let r = (|| {
                    let path = self.child_path(parent, name)?;
                    // Flu's mkdir set has no `dir` key.
                    let set = self.modeset(mode & !libc::S_IFMT)?;
                    self.call(OpName::Mkdir, (self.lstr(&path)?, set))?;
                    Ok::<_, Fail>(path)
                })();
                match r {
                    Ok(path) => self.reply_entry(parent, name, &path, reply),
                    Err(e) => reply.error(e),
                }
            }
            Op::Unlink {
                parent,
                name,
                reply,
            } => {
                let name = bytes_of(&name);
                let r = self
                    .child_path(parent, name)
                    .and_then(|p| self.call(OpName::Unlink, self.lstr(&p)?));
                if r.is_ok() {
                    self.inodes.unlink(parent, name);
                }
                self.empty(reply, r);
            }
            Op::Rmdir {
                parent,
                name,
                reply,
            } => {
                let name = bytes_of(&name);
                let r = self
                    .child_path(parent, name)
                    .and_then(|p| self.call(OpName::Rmdir, self.lstr(&p)?));
                if r.is_ok() {
                    self.inodes.unlink(parent, name);
                }
                self.empty(reply, r);
            }
            Op::Symlink {
                parent,
                name,
                target,
                reply,
            } => {
                let name = bytes_of(&name);
                let r = (|| {
                    let path = self.child_path(parent, name)?;
                    self.call(
                        OpName::Symlink,
                        (self.lstr(target.as_bytes())?, self.lstr(&path)?),
                    )?;
                    Ok::<_, Fail>(path)
                })();
                match r {
                    Ok(path) => self.reply_entry(parent, name, &path, reply),
                    Err(e) => reply.error(e),
                }
            }
            Op::Rename {
                parent,
                name,
                newparent,
                newname,
                flags,
                reply,
            } => {
                let (name, newname) = (bytes_of(&name), bytes_of(&newname));
                let r = (|| {
                    let from = self.child_path(parent, name)?;
                    let to = self.child_path(newparent, newname)?;
                    let set = self.lua.create_table().map_err(|_| Errno::ENOMEM)?;
                    if flags & libc::RENAME_NOREPLACE != 0 {
                        let _ = set.raw_set("noreplace", true);
                    }
                    if flags & libc::RENAME_EXCHANGE != 0 {
                        let _ = set.raw_set("exchange", true);
                    }
                    if flags & libc::RENAME_WHITEOUT != 0 {
                        return Err(Errno::EINVAL);
                    }
                    self.call(OpName::Rename, (self.lstr(&from)?, self.lstr(&to)?, set))
                })();
                if r.is_ok() {
                    if flags & libc::RENAME_EXCHANGE != 0 {
                        self.inodes.exchange(parent, name, newparent, newname);
                    } else {
                        self.inodes.rename(parent, name, newparent, newname);
                    }
                }
                self.empty(reply, r);
            }
            Op::Link {
                ino,
                newparent,
                newname,
                reply,
            } => {
                let newname = bytes_of(&newname);
                let r = (|| {
                    let from = self.path(ino)?;
                    let to = self.child_path(newparent, newname)?;
                    self.call(OpName::Link, (self.lstr(&from)?, self.lstr(&to)?))?;
                    Ok::<_, Fail>(to)
                })();
                match r.and_then(|to| self.stat(&to, None)) {
                    Ok(st) => {
                        // The new name is the same node as `ino`, whatever the script's ino.
                        self.inodes.link(ino, newparent, newname);
                        reply.entry(&self.cfg.entry_ttl, &st.to_attr(ino), Generation(0));
                    }
                    Err(e) => reply.error(e),
                }
            }
            Op::Open { ino, flags, reply } => {
                let r = (|| {
                    let path = self.path(ino)?;
                    let (fh, fi) = self.new_handle(flags)?;
                    if self.has(OpName::Open) {
                        self.call(OpName::Open, (self.lstr(&path)?, fi.clone()))?;
                    }
                    Ok::<_, Fail>((fh, fi))
                })();
                match r {
                    Ok((fh, fi)) => {
                        let flags = Self::open_flags(&fi);
                        self.register(fh, ino, fi);
                        reply.opened(FileHandle(fh), flags);
                    }
                    Err(e) => reply.error(e),
                }
            }
            Op::Read {
                ino,
                fh,
                offset,
                size,
                reply,
            } => {
                let r = (|| {
                    let path = self.path(ino)?;
                    let fi = self.fi(fh);
                    let out = self.call(OpName::Read, (self.lstr(&path)?, size, offset, fi))?;
                    match out.into_iter().next() {
                        Some(Value::String(s)) => Ok(s),
                        other => Err(self.bad_value(
                            OpName::Read,
                            &path,
                            format!(
                                "expected a string, got {}",
                                other.as_ref().map_or("nothing", |v| v.type_name())
                            ),
                        )),
                    }
                })();
                match r {
                    Ok(s) => {
                        let b = s.as_bytes();
                        let n = b.len().min(size as usize);
                        reply.data(&b[..n]);
                    }
                    Err(e) => reply.error(e),
                }
            }
            Op::Write {
                ino,
                fh,
                offset,
                data,
                reply,
            } => {
                let len = data.len();
                let r = (|| {
                    let path = self.path(ino)?;
                    let fi = self.fi(fh);
                    let out = self.call(
                        OpName::Write,
                        (self.lstr(&path)?, self.lstr(&data)?, offset, fi),
                    )?;
                    match out.into_iter().next() {
                        None | Some(Value::Nil) => Ok(len),
                        Some(v @ (Value::Integer(_) | Value::Number(_))) => {
                            let n = match v {
                                Value::Integer(i) => Some(i),
                                Value::Number(f) if f.fract() == 0.0 => Some(f as i64),
                                _ => None,
                            };
                            match n
                                .and_then(|n| usize::try_from(n).ok())
                                .filter(|n| *n <= len)
                            {
                                Some(n) => Ok(n),
                                None => Err(self.bad_value(
                                    OpName::Write,
                                    &path,
                                    format!("byte count {} is not in 0..={len}", show(&v)),
                                )),
                            }
                        }
                        Some(other) => Err(self.bad_value(
                            OpName::Write,
                            &path,
                            format!("expected a byte count, got {}", other.type_name()),
                        )),
                    }
                })();
                match r {
                    Ok(n) => reply.written(n as u32),
                    Err(e) => reply.error(e),
                }
            }
            Op::Flush { ino, fh, reply } => {
                if !self.has(OpName::Flush) {
                    return reply.ok();
                }
                let r = self
                    .path(ino)
                    .and_then(|p| self.call(OpName::Flush, (self.lstr(&p)?, self.fi(fh))));
                self.empty(reply, r);
            }
            Op::Release { ino, fh, reply } => {
                let r = if self.has(OpName::Release) {
                    self.path(ino)
                        .and_then(|p| self.call(OpName::Release, (self.lstr(&p)?, self.fi(fh))))
                } else {
                    Ok(MultiValue::new())
                };
                self.unregister(fh);
                self.empty(reply, r);
            }
            Op::Fsync {
                ino,
                fh,
                datasync,
                reply,
            } => {
                let r = self.path(ino).and_then(|p| {
                    self.call(OpName::Fsync, (self.lstr(&p)?, datasync, self.fi(fh)))
                });
                self.empty(reply, r);
            }
            Op::Opendir { ino, flags, reply } => {
                let r = (|| {
                    let path = self.path(ino)?;
                    let (fh, fi) = self.new_handle(flags)?;
                    if self.has(OpName::Opendir) {
                        self.call(OpName::Opendir, (self.lstr(&path)?, fi.clone()))?;
                    }
                    Ok::<_, Fail>((fh, fi))
                })();
                match r {
                    Ok((fh, fi)) => {
                        let mut flags = FopenFlags::empty();
                        if fi.raw_get::<bool>("keep_cache").unwrap_or(false) {
                            flags |= FopenFlags::FOPEN_CACHE_DIR;
                        }
                        self.register(fh, ino, fi);
                        reply.opened(FileHandle(fh), flags);
                    }
                    Err(e) => reply.error(e),
                }
            }
            Op::Readdir {
                ino,
                fh,
                offset,
                reply,
            } => self.readdir(ino, fh, offset, reply),
            Op::Releasedir { ino, fh, reply } => {
                let r = if self.has(OpName::Releasedir) {
                    self.path(ino)
                        .and_then(|p| self.call(OpName::Releasedir, (self.lstr(&p)?, self.fi(fh))))
                } else {
                    Ok(MultiValue::new())
                };
                self.unregister(fh);
                self.empty(reply, r);
            }
            Op::Fsyncdir {
                ino,
                fh,
                datasync,
                reply,
            } => {
                let r = self.path(ino).and_then(|p| {
                    self.call(OpName::Fsyncdir, (self.lstr(&p)?, datasync, self.fi(fh)))
                });
                self.empty(reply, r);
            }
            Op::Statfs { ino, reply } => {
                let r = if self.has(OpName::Statfs) {
                    (|| {
                        let path = self.path(ino).unwrap_or_else(|_| b"/".to_vec());
                        let out = self.call(OpName::Statfs, self.lstr(&path)?)?;
                        match out.into_iter().next() {
                            Some(Value::Table(t)) => Statfs::from_lua(&t)
                                .map_err(|e| self.bad_value(OpName::Statfs, &path, e)),
                            None | Some(Value::Nil) => Ok(Statfs::default()),
                            Some(other) => Err(self.bad_value(
                                OpName::Statfs,
                                &path,
                                format!("expected a table, got {}", other.type_name()),
                            )),
                        }
                    })()
                } else {
                    Ok(Statfs::default())
                };
                match r {
                    Ok(s) => reply.statfs(
                        s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namemax, s.frsize,
                    ),
                    Err(e) => reply.error(e),
                }
            }
            Op::Setxattr {
                ino,
                name,
                value,
                flags,
                reply,
            } => {
                let r = (|| {
                    let path = self.path(ino)?;
                    let set = self.lua.create_table().map_err(|_| Errno::ENOMEM)?;
                    if flags & libc::XATTR_CREATE != 0 {
                        let _ = set.raw_set("create", true);
                    }
                    if flags & libc::XATTR_REPLACE != 0 {
                        let _ = set.raw_set("replace", true);
                    }
                    self.call(
                        OpName::Setxattr,
                        (
                            self.lstr(&path)?,
                            self.lstr(name.as_bytes())?,
                            self.lstr(&value)?,
                            set,
                        ),
                    )
                })();
                self.empty(reply, r);
            }
            Op::Getxattr {
                ino,
                name,
                size,
                reply,
            } => {
                let r = (|| {
                    let path = self.path(ino)?;
                    let out = self.call(
                        OpName::Getxattr,
                        (self.lstr(&path)?, self.lstr(name.as_bytes())?),
                    )?;
                    match out.into_iter().next() {
                        Some(Value::String(s)) => Ok(s.as_bytes().to_vec()),
                        None | Some(Value::Nil) => Err(Errno::ENODATA),
                        Some(other) => Err(self.bad_value(
                            OpName::Getxattr,
                            &path,
                            format!("expected a string, got {}", other.type_name()),
                        )),
                    }
                })();
                match r {
                    Ok(v) => xattr_reply(reply, size, &v),
                    Err(e) => reply.error(e),
                }
            }
            Op::Listxattr { ino, size, reply } => {
                let r = (|| {
                    let path = self.path(ino)?;
                    let out = self.call(OpName::Listxattr, self.lstr(&path)?)?;
                    let mut buf = Vec::new();
                    match out.into_iter().next() {
                        Some(Value::Table(t)) => {
                            for v in t.sequence_values::<Value>() {
                                match v {
                                    Ok(Value::String(s)) => {
                                        buf.extend_from_slice(&s.as_bytes());
                                        buf.push(0);
                                    }
                                    _ => {
                                        return Err(self.bad_value(
                                            OpName::Listxattr,
                                            &path,
                                            "names must be strings",
                                        ));
                                    }
                                }
                            }
                            Ok(buf)
                        }
                        None | Some(Value::Nil) => Ok(buf),
                        Some(other) => Err(self.bad_value(
                            OpName::Listxattr,
                            &path,
                            format!("expected an array of names, got {}", other.type_name()),
                        )),
                    }
                })();
                match r {
                    Ok(v) => xattr_reply(reply, size, &v),
                    Err(e) => reply.error(e),
                }
            }
            Op::Removexattr { ino, name, reply } => {
                let r = self.path(ino).and_then(|p| {
                    self.call(
                        OpName::Removexattr,
                        (self.lstr(&p)?, self.lstr(name.as_bytes())?),
                    )
                });
                self.empty(reply, r);
            }
            Op::Access { ino, mask, reply } => {
                let r = self
                    .path(ino)
                    .and_then(|p| self.call(OpName::Access, (self.lstr(&p)?, mask)));
                self.empty(reply, r);
            }
            Op::Create {
                parent,
                name,
                mode,
                flags,
                reply,
            } => {
                if !self.has(OpName::Create) {
                    // The kernel falls back to mknod + open.
                    return reply.error(Errno::ENOSYS);
                }
                let name = bytes_of(&name);
                let r = (|| {
                    let path = self.child_path(parent, name)?;
                    let (fh, fi) = self.new_handle(flags)?;
                    self.call(
                        OpName::Create,
                        (self.lstr(&path)?, self.modeset(mode)?, fi.clone()),
                    )?;
                    let st = self.stat_with_fi(&path, &fi)?;
                    Ok::<_, Fail>((fh, fi, st))
                })();
                match r {
                    Ok((fh, fi, st)) => {
                        let ino = self.inodes.lookup(
                            parent,
                            name,
                            st.ino,
                            st.mode & libc::S_IFMT,
                            st.nlink,
                        );
                        let flags = Self::open_flags(&fi);
                        self.register(fh, ino, fi);
                        reply.created(
                            &self.cfg.entry_ttl,
                            &st.to_attr(ino),
                            Generation(0),
                            FileHandle(fh),
                            flags,
                        );
                    }
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
                let r = (|| {
                    let path = self.path(ino)?;
                    let lk = Lock {
                        typ,
                        start,
                        end,
                        pid,
                    }
                    .into_lua_table(&self.lua)
                    .map_err(|_| Errno::ENOMEM)?;
                    let out =
                        self.call(OpName::Lock, (self.lstr(&path)?, self.fi(fh), "getlk", lk))?;
                    match out.into_iter().next() {
                        Some(Value::Table(t)) => {
                            Lock::from_lua(&t).map_err(|e| self.bad_value(OpName::Lock, &path, e))
                        }
                        _ => Ok(Lock {
                            typ: libc::F_UNLCK,
                            start,
                            end,
                            pid,
                        }),
                    }
                })();
                match r {
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
                let r = (|| {
                    let path = self.path(ino)?;
                    let lk = Lock {
                        typ,
                        start,
                        end,
                        pid,
                    }
                    .into_lua_table(&self.lua)
                    .map_err(|_| Errno::ENOMEM)?;
                    let cmd = if sleep { "setlkw" } else { "setlk" };
                    self.call(OpName::Lock, (self.lstr(&path)?, self.fi(fh), cmd, lk))
                })();
                self.empty(reply, r);
            }
            Op::Bmap {
                ino,
                blocksize,
                idx,
                reply,
            } => {
                let r = (|| {
                    let path = self.path(ino)?;
                    let out = self.call(OpName::Bmap, (self.lstr(&path)?, blocksize, idx))?;
                    match out.into_iter().next() {
                        Some(Value::Integer(i)) if i >= 0 => Ok(i as u64),
                        other => Err(self.bad_value(
                            OpName::Bmap,
                            &path,
                            format!("expected a block index, got {}", type_or_value(&other)),
                        )),
                    }
                })();
                match r {
                    Ok(b) => reply.bmap(b),
                    Err(e) => reply.error(e),
                }
            }
            Op::Fallocate {
                ino,
                fh,
                offset,
                length,
                mode,
                reply,
            } => {
                let r = self.path(ino).and_then(|p| {
                    self.call(
                        OpName::Fallocate,
                        (self.lstr(&p)?, mode, offset, length, self.fi(fh)),
                    )
                });
                self.empty(reply, r);
            }
            Op::Lseek {
                ino,
                fh,
                offset,
                whence,
                reply,
            } => {
                let r = (|| {
                    let path = self.path(ino)?;
                    let w = match whence {
                        libc::SEEK_SET => "set",
                        libc::SEEK_CUR => "cur",
                        libc::SEEK_END => "end",
                        libc::SEEK_DATA => "data",
                        libc::SEEK_HOLE => "hole",
                        _ => return Err(Errno::EINVAL),
                    };
                    let out =
                        self.call(OpName::Lseek, (self.lstr(&path)?, offset, w, self.fi(fh)))?;
                    match out.into_iter().next() {
                        Some(Value::Integer(i)) if i >= 0 => Ok(i),
                        other => Err(self.bad_value(
                            OpName::Lseek,
                            &path,
                            format!("expected an offset, got {}", type_or_value(&other)),
                        )),
                    }
                })();
                match r {
                    Ok(o) => reply.offset(o),
                    Err(e) => reply.error(e),
                }
            }
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
                let r = (|| {
                    let pin = self.path(ino_in)?;
                    let pout = self.path(ino_out)?;
                    let args = (
                        self.lstr(&pin)?,
                        self.fi(fh_in),
                        off_in,
                        self.lstr(&pout)?,
                        self.fi(fh_out),
                        off_out,
                        len,
                        flags,
                    );
                    let out = self.call(OpName::CopyFileRange, args)?;
                    match out.into_iter().next() {
                        Some(Value::Integer(i)) if i >= 0 && (i as u64) <= len => Ok(i as u32),
                        other => Err(self.bad_value(
                            OpName::CopyFileRange,
                            &pout,
                            format!("expected a byte count, got {}", type_or_value(&other)),
                        )),
                    }
                })();
                match r {
                    Ok(n) => reply.written(n),
                    Err(e) => reply.error(e),
                }
            }
        }
    }

    fn stat_with_fi(&self, path: &[u8], fi: &Table) -> Result<Stat, Fail> {
        if self.has(OpName::Fgetattr) {
            let st = self.lua.create_table().map_err(|_| Errno::ENOMEM)?;
            let out = self.call(OpName::Fgetattr, (self.lstr(path)?, st.clone(), fi.clone()))?;
            let table = match out.into_iter().next() {
                Some(Value::Table(t)) => t,
                _ => st,
            };
            Stat::from_lua(&table, &self.defaults)
                .map_err(|e| self.bad_value(OpName::Fgetattr, path, e))
        } else {
            self.stat(path, None)
        }
    }

    /// SETATTR as libfuse's path API does it: chmod, chown, truncate, utimens, then getattr.
    fn setattr(&mut self, ino: u64, set: SetAttr) -> Result<Stat, Fail> {
        let path = self.path(ino)?;
        let lpath = self.lstr(&path)?;
        if let Some(mode) = set.mode {
            let mode = if mode & libc::S_IFMT == 0 {
                mode | self.inodes.kind(ino).unwrap_or(0)
            } else {
                mode
            };
            self.call(OpName::Chmod, (lpath.clone(), self.modeset(mode)?))?;
        }
        if set.uid.is_some() || set.gid.is_some() {
            self.call(OpName::Chown, (lpath.clone(), set.uid, set.gid))?;
        }
        if let Some(size) = set.size {
            let fi = set.fh.and_then(|fh| self.fi(fh));
            match fi {
                Some(fi) if self.has(OpName::Ftruncate) => {
                    self.call(OpName::Ftruncate, (lpath.clone(), size, fi))?;
                }
                _ => {
                    self.call(OpName::Truncate, (lpath.clone(), size))?;
                }
            }
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let a = self.time_arg(set.atime)?;
            let m = self.time_arg(set.mtime)?;
            self.call(OpName::Utimens, (lpath, a, m))?;
        }
        self.stat(&path, set.fh)
    }

    fn readdir(&mut self, ino: u64, fh: u64, offset: u64, mut reply: ReplyDirectory) {
        let cached = offset > 0 && self.handles.get(&fh).is_some_and(|h| h.dir.is_some());
        if !cached {
            let path = match self.path(ino) {
                Ok(p) => p,
                Err(e) => return reply.error(e),
            };
            if !self.has(OpName::Readdir) {
                return reply.error(Errno::ENOSYS);
            }
            {
                let mut sink = self.sink.borrow_mut();
                sink.active = true;
                sink.entries.clear();
                sink.used_offsets = false;
                sink.reply = Some(reply);
                sink.dir_path = path.clone();
            }
            let r = (|| {
                let fi = self.fi(fh);
                self.call(
                    OpName::Readdir,
                    (self.lstr(&path)?, self.filler.clone(), fi, offset),
                )
            })();
            let (entries, used_offsets, back) = {
                let mut sink = self.sink.borrow_mut();
                sink.active = false;
                (
                    std::mem::take(&mut sink.entries),
                    sink.used_offsets,
                    sink.reply.take(),
                )
            };
            let Some(back) = back else {
                return;
            };
            reply = back;
            if let Err(e) = r {
                return reply.error(e);
            }
            if used_offsets {
                // Entries went straight into the reply.
                return reply.ok();
            }
            let entries = self.complete_kinds(&path, entries);
            if let Some(h) = self.handles.get_mut(&fh) {
                h.dir = Some(entries);
            } else {
                // No handle (should not happen): serve from a temporary list.
                return self.serve_dir(ino, &entries, offset, reply);
            }
        }
        let entries = self
            .handles
            .get_mut(&fh)
            .and_then(|h| h.dir.take())
            .unwrap_or_default();
        self.serve_dir(ino, &entries, offset, reply);
        if let Some(h) = self.handles.get_mut(&fh) {
            h.dir = Some(entries);
        }
    }

    /// Give every entry a file type: from its stat, from the inode table, or by getattr.
    fn complete_kinds(&self, dir: &[u8], mut entries: Vec<DirEnt>) -> Vec<DirEnt> {
        for e in entries.iter_mut() {
            if e.stat.is_some() || e.name == b"." || e.name == b".." {
                continue;
            }
            let mut p = dir.to_vec();
            if p.len() > 1 {
                p.push(b'/');
            }
            p.extend_from_slice(&e.name);
            if let Ok(st) = self.stat(&p, None) {
                e.stat = Some(st);
            }
        }
        entries
    }

    fn serve_dir(&mut self, ino: u64, entries: &[DirEnt], offset: u64, mut reply: ReplyDirectory) {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, e) in entries.iter().enumerate().skip(start) {
            let kind = match (&e.stat, e.name.as_slice()) {
                (Some(st), _) => convert::file_type(st.mode),
                (None, b"." | b"..") => fuser::FileType::Directory,
                (None, _) => fuser::FileType::RegularFile,
            };
            let child_ino = match e.name.as_slice() {
                b"." => ino,
                b".." => ino,
                name => self.inodes.child(ino, name).unwrap_or(0xffff_ffff),
            };
            if reply.add(
                INodeNo(child_ino),
                (i + 1) as u64,
                kind,
                OsString::from_vec(e.name.clone()),
            ) {
                break;
            }
        }
        reply.ok();
    }
}

fn xattr_reply(reply: fuser::ReplyXattr, size: u32, v: &[u8]) {
    if size == 0 {
        reply.size(v.len() as u32);
    } else if v.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(v);
    }
}

/// The `filler(name [, st [, offset]])` function handed to readdir, created once.
fn make_filler(
    lua: &Lua,
    sink: Rc<RefCell<DirSink>>,
    getattr: Option<Function>,
    defaults: StatDefaults,
) -> mlua::Result<Function> {
    lua.create_function(
        move |lua, (name, st, off): (mlua::LuaString, Option<Table>, Option<i64>)| {
            let name = name.as_bytes().to_vec();
            if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
                return Err(mlua::Error::runtime(format!(
                    "filler: invalid entry name {:?}",
                    String::from_utf8_lossy(&name)
                )));
            }
            let stat = match st {
                Some(t) => Some(
                    Stat::from_lua(&t, &defaults)
                        .map_err(|e| mlua::Error::runtime(format!("filler: {e}")))?,
                ),
                None => None,
            };
            if !sink.borrow().active {
                return Err(mlua::Error::runtime("filler called outside of readdir"));
            }
            match off {
                Some(off) if off > 0 => {
                    let kind = match &stat {
                        Some(st) => convert::file_type(st.mode),
                        None if name == b"." || name == b".." => fuser::FileType::Directory,
                        None => {
                            // Ask getattr for the type (offset mode has no later pass).
                            let mut p = sink.borrow().dir_path.clone();
                            if p.len() > 1 {
                                p.push(b'/');
                            }
                            p.extend_from_slice(&name);
                            let mode = getattr
                                .as_ref()
                                .and_then(|g| g.call::<Table>(lua.create_string(&p).ok()?).ok())
                                .and_then(|t| Stat::from_lua(&t, &defaults).ok())
                                .map_or(libc::S_IFREG, |s| s.mode);
                            convert::file_type(mode)
                        }
                    };
                    let ino =
                        stat.map_or(
                            0xffff_ffff,
                            |s| if s.ino == 0 { 0xffff_ffff } else { s.ino },
                        );
                    let mut sink = sink.borrow_mut();
                    sink.used_offsets = true;
                    match sink.reply.as_mut() {
                        Some(r) => {
                            Ok(!r.add(INodeNo(ino), off as u64, kind, OsString::from_vec(name)))
                        }
                        None => Ok(false),
                    }
                }
                _ => {
                    sink.borrow_mut().entries.push(DirEnt { name, stat });
                    Ok(true)
                }
            }
        },
    )
}
