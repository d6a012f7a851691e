//! Attributes: lookup, getattr (or fgetattr with an open file) and setattr, which libfuse's
//! path API splits into chmod, chown, truncate/ftruncate and utimens.

use fuser::{Errno, TimeOrNow};
use mlua::{IntoLuaMulti, MultiValue, Table, Value};

use super::{Dispatch, Fail, Returned, first, type_or_value};
use crate::convert::Bytes;
use crate::convert::{Stat, Timespec};
use crate::kernel::SetAttr;
use crate::ops::OpName;

impl Dispatch {
    /// Reads a returned stat table in place (see `call_peek`) into `self.peeked`.
    pub(super) fn stat_peek(
        &self,
    ) -> impl FnOnce(*mut mlua::ffi::lua_State, std::ffi::c_int) -> bool + '_ {
        // SAFETY: `call_peek` calls it on a coroutine that just finished, before anything else
        // runs in the Lua state.
        |co, nres| unsafe {
            self.stat_reader
                .peek(co, nres, &mut self.peeked.borrow_mut())
        }
    }

    /// Decode what getattr/fgetattr returned (or the `st` they filled).
    fn decode_stat(
        &self,
        op: OpName,
        path: &[u8],
        out: MultiValue,
        st: Option<Table>,
    ) -> Result<Stat, Fail> {
        let table = match (first(out), st) {
            (Some(Value::Table(t)), _) => t,
            (None | Some(Value::Nil), Some(st)) => st,
            (None | Some(Value::Nil), None) => {
                return Err(self.bad_value(op, path, "expected a stat table, got nothing"));
            }
            (other, _) => {
                return Err(self.bad_value(
                    op,
                    path,
                    format!("expected a stat table, got {}", type_or_value(&other)),
                ));
            }
        };
        self.stat_reader
            .decode(&table, &self.defaults)
            .map_err(|e| self.bad_value(op, path, e))
    }

    /// getattr of a path; fgetattr when an open file's `fi` is known and the script has it.
    pub(super) async fn stat(&self, path: &[u8], fi: Option<Table>) -> Result<Stat, Fail> {
        let op = match fi {
            Some(_) if self.has(OpName::Fgetattr) => OpName::Fgetattr,
            _ => OpName::Getattr,
        };
        // Flu's `st` to fill, unless the function declares no parameter for it.
        let st = if self.ops.reads_arg(op, 2) {
            Some(self.table()?)
        } else {
            None
        };
        let lpath = Bytes(path);
        let peek = self.stat_peek();
        let out = match op {
            OpName::Fgetattr => self.call_peek(op, (lpath, st.clone(), fi), peek).await?,
            _ => self.call_peek(op, (lpath, st.clone()), peek).await?,
        };
        match out {
            Returned::Peeked => self.peeked_stat(op, path),
            Returned::Values(out) => self.decode_stat(op, path, out, st),
        }
    }

    /// The stat of the fields `StatReader::peek` read for the call that just returned.
    fn peeked_stat(&self, op: OpName, path: &[u8]) -> Result<Stat, Fail> {
        Stat::from_ints(&self.peeked.borrow(), &self.defaults)
            .map_err(|e| self.bad_value(op, path, e))
    }

    /// LOOKUP: `Ok(None)` is a negative entry to cache (when negative_timeout is set).
    pub(super) async fn lookup(
        &self,
        parent: u64,
        name: &[u8],
    ) -> Result<Option<(u64, Stat)>, Fail> {
        // A name missing from a directory whose every name flufs saw made (`fresh`).
        if self.fresh.borrow().lacks(parent, name) {
            return if self.cfg.negative_ttl.is_zero() {
                Err(Errno::ENOENT)
            } else {
                Ok(None)
            };
        }
        if let Some(st) = self.listed_stat(parent, name) {
            return Ok(Some((self.remember(parent, name, &st), st)));
        }
        let path = self.child_path(parent, name)?;
        match self.stat(&path, None).await {
            Ok(st) => Ok(Some((self.remember(parent, name, &st), st))),
            Err(e) if e == Errno::ENOENT && !self.cfg.negative_ttl.is_zero() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Attributes of a just-created `name` in `parent`, counting the kernel's reference: the
    /// stat table the creating operation returned (`out`), else getattr's.
    pub(super) async fn new_entry(
        &self,
        op: OpName,
        parent: u64,
        name: &[u8],
        path: &[u8],
        out: Returned,
    ) -> Result<(u64, Stat), Fail> {
        let st = match self.returned_stat(op, path, out)? {
            Some(st) => st,
            None => self.stat(path, None).await?,
        };
        Ok((self.remember_made(parent, name, &st), st))
    }

    /// The stat table an operation that makes an entry (create, mknod, mkdir, symlink, link) or
    /// changes one (chmod, chown, truncate, ftruncate, utimens) may return, saving the getattr
    /// that would follow; `None` when it returned no table.
    /// Not async: the fields it may hold stay out of the callers' futures.
    pub(super) fn returned_stat(
        &self,
        op: OpName,
        path: &[u8],
        out: Returned,
    ) -> Result<Option<Stat>, Fail> {
        let out = match out {
            Returned::Peeked => return self.peeked_stat(op, path).map(Some),
            Returned::Values(out) => out,
        };
        match first(out) {
            Some(Value::Table(t)) => self
                .stat_reader
                .decode(&t, &self.defaults)
                .map(Some)
                .map_err(|e| self.bad_value(op, path, e)),
            _ => Ok(None),
        }
    }

    pub(super) async fn getattr(&self, ino: u64, fh: Option<u64>) -> Result<Stat, Fail> {
        let path = self.path(ino)?;
        self.stat(&path, self.fi_for(ino, fh)).await
    }

    /// SETATTR as libfuse's path API does it: chmod, chown, truncate, utimens, then getattr.
    /// The open file's `fi` (when the kernel names one, or the node was unlinked while open)
    /// is passed as an extra last argument. Beyond Flu, the last of these calls may return
    /// the node's stat table as it now is, and getattr is not called (luafs returns its node:
    /// `tar x` sets times, owner and mode of every file, three SETATTRs each).
    pub(super) async fn setattr(&self, ino: u64, set: SetAttr) -> Result<Stat, Fail> {
        let path = self.path(ino)?;
        let lpath = Bytes(&path);
        let fi = self.fi_for(ino, set.fh);
        // What the last call returned, if a stat table.
        let mut now = None;
        if let Some(mode) = set.mode {
            let mode = if mode & libc::S_IFMT == 0 {
                mode | self.inodes.borrow_mut().kind(ino).unwrap_or(0)
            } else {
                mode
            };
            now = self
                .call_stat_with_fi(OpName::Chmod, &path, (lpath, self.modeset(mode)?), &fi)
                .await?;
        }
        if set.uid.is_some() || set.gid.is_some() {
            now = self
                .call_stat_with_fi(OpName::Chown, &path, (lpath, set.uid, set.gid), &fi)
                .await?;
        }
        if let Some(size) = set.size {
            let op = if fi.is_some() && self.has(OpName::Ftruncate) {
                OpName::Ftruncate
            } else {
                OpName::Truncate
            };
            now = self
                .call_stat_with_fi(op, &path, (lpath, size), &fi)
                .await?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let a = self.time_arg(set.atime)?;
            let m = self.time_arg(set.mtime)?;
            now = self
                .call_stat_with_fi(OpName::Utimens, &path, (lpath, a, m), &fi)
                .await?;
        }
        match now {
            Some(st) => Ok(st),
            None => self.stat(&path, fi).await,
        }
    }

    /// Call `op` with `fi` (if any) as an extra last argument; the stat table it returned,
    /// if it returned one.
    async fn call_stat_with_fi(
        &self,
        op: OpName,
        path: &[u8],
        args: impl IntoLuaMulti,
        fi: &Option<Table>,
    ) -> Result<Option<Stat>, Fail> {
        let mut argv = args.into_lua_multi(&self.lua).map_err(|_| Errno::ENOMEM)?;
        if let Some(fi) = fi {
            argv.push_back(Value::Table(fi.clone()));
        }
        let out = self.call_peek(op, argv, self.stat_peek()).await?;
        self.returned_stat(op, path, out)
    }

    /// A utimens argument: `{sec=, nsec=}`, the current time for UTIME_NOW, nil for UTIME_OMIT.
    fn time_arg(&self, t: Option<TimeOrNow>) -> Result<Value, Fail> {
        let ts = match t {
            None => return Ok(Value::Nil),
            Some(TimeOrNow::Now) => Timespec::now(),
            Some(TimeOrNow::SpecificTime(s)) => Timespec::from_fuser_setattr(s),
        };
        ts.into_lua_table(&self.lua)
            .map(Value::Table)
            .map_err(|_| Errno::ENOMEM)
    }
}
