//! Open files (and the opening of directories): the `fi` table that lives from open to
//! release, read and write, flush/fsync, record locks, fallocate, lseek, copy_file_range, bmap.

use fuser::{Errno, FopenFlags};
use mlua::{MultiValue, Table, Value};

use super::{Dispatch, Fail, Handle, Returned, first};
use crate::convert::Bytes;
use crate::convert::{Lock, Stat};
use crate::ops::OpName;

impl Dispatch {
    /// A new `fi` table for an open with `flags`, with the mount's defaults.
    fn new_fi(&self, flags: i32) -> Result<Table, Fail> {
        self.names
            .fi(
                &self.lua,
                flags,
                self.ops.flags_as_numbers,
                self.cfg.direct_io,
                self.cfg.kernel_cache,
            )
            .map_err(|_| Errno::ENOMEM)
    }

    /// The kernel flags an open file asked for through its `fi`.
    fn fopen_flags(&self, fi: &Table, dir: bool) -> FopenFlags {
        let mut f = FopenFlags::empty();
        let [direct_io, keep_cache, nonseekable, cache_readdir] =
            self.names.fi_flags(&self.lua, fi);
        if dir {
            // As libfuse: cache_readdir lets the kernel cache the listing while the directory is
            // open; keep_cache keeps that cache across opens too, until the directory changes
            // through the mount or its mtime does.
            if cache_readdir {
                f |= FopenFlags::FOPEN_CACHE_DIR;
            }
            if keep_cache {
                f |= FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE;
            }
            return f;
        }
        if direct_io {
            f |= FopenFlags::FOPEN_DIRECT_IO;
        }
        if keep_cache {
            f |= FopenFlags::FOPEN_KEEP_CACHE;
        }
        if nonseekable {
            f |= FopenFlags::FOPEN_NONSEEKABLE;
        }
        f
    }

    fn register(&self, ino: u64, fi: Table) -> u64 {
        let fh = self.next_fh.get();
        self.next_fh.set(fh + 1);
        self.inodes.borrow_mut().opened(ino);
        self.handles.borrow_mut().insert(
            fh,
            Handle {
                ino,
                fi,
                dir: None,
                args: None,
            },
        );
        fh
    }

    /// open or opendir (both optional: without them the open succeeds).
    pub(super) async fn open(
        &self,
        ino: u64,
        flags: i32,
        dir: bool,
    ) -> Result<(u64, FopenFlags), Fail> {
        let path = self.path(ino)?;
        let lpath = Bytes(&path);
        let fi = self.new_fi(flags)?;
        let op = if dir { OpName::Opendir } else { OpName::Open };
        if self.has(op) {
            self.call_unit(op, (lpath, fi.clone())).await?;
        }
        let flags = self.fopen_flags(&fi, dir);
        Ok((self.register(ino, fi), flags))
    }

    /// create; without it the kernel falls back to mknod + open.
    pub(super) async fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
    ) -> Result<(u64, Stat, u64, FopenFlags), Fail> {
        if !self.has(OpName::Create) {
            return Err(Errno::ENOSYS);
        }
        let path = self.child_path(parent, name)?;
        let fi = self.new_fi(flags)?;
        let out = self
            .call_peek(
                OpName::Create,
                (Bytes(&path), self.modeset(mode)?, fi.clone()),
                self.stat_peek(),
            )
            .await?;
        let st = match self.returned_stat(OpName::Create, &path, out)? {
            Some(st) => st,
            None => self.stat(&path, Some(fi.clone())).await?,
        };
        let ino = self.remember_made(parent, name, &st);
        let flags = self.fopen_flags(&fi, false);
        let fh = self.register(ino, fi);
        Ok((ino, st, fh, flags))
    }

    /// read: the script returns the data, or (beyond Flu) the data, an offset in it (from 0)
    /// and a length, so that a slice of a string it keeps goes out without being copied into a
    /// new string first, or an array of strings sent one after another (pieces it keeps, which
    /// it need not join into a new string). The reply is sent straight from the string, or
    /// gathered from the pieces, where the call left them (`read_peek`); other shapes are
    /// taken as values and checked.
    pub(super) async fn read(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
        reply: crate::replies::ReplyData,
    ) {
        let slot = std::cell::Cell::new(Some(reply));
        let r = self.read_values(ino, fh, offset, size, &slot).await;
        // Not answered by the peek: answer here.
        if let Some(reply) = slot.take() {
            match r {
                Ok(Some((s, range))) => {
                    let b = &s.as_bytes()[range];
                    reply.data(&b[..b.len().min(size as usize)]);
                }
                Ok(None) => reply.error(Errno::EIO),
                Err(e) => reply.error(e),
            }
        }
    }

    /// The read call; `Ok(None)` when `read_peek` answered it from the stack.
    async fn read_values(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
        slot: &std::cell::Cell<Option<crate::replies::ReplyData>>,
    ) -> Result<Option<(mlua::LuaString, std::ops::Range<usize>)>, Fail> {
        let open = self.open_file(ino, fh)?;
        let path = &open.path;
        // SAFETY: `call_peek` calls it on a coroutine that just finished, before anything else
        // runs in the Lua state; the data is sent (or copied) before it returns.
        let peek = |co, nres| unsafe { read_peek(co, nres, size, slot) };
        let args = (path, size, offset, open.fi.as_ref());
        let mut out = match self.call_peek(OpName::Read, args, peek).await? {
            Returned::Peeked => return Ok(None),
            Returned::Values(v) => v,
        };
        let range = match (out.get(1), out.get(2)) {
            (Some(&Value::Integer(at)), Some(&Value::Integer(len))) => Some((at, len)),
            _ => None,
        };
        out.truncate(1);
        let path = path.as_bytes();
        if let Some(Value::Table(t)) = out.front() {
            // An array of pieces that `read_peek` did not take: say what is wrong with it.
            if t.raw_len() == 0 {
                let msg = "expected a string or an array of strings, got a table without pieces";
                return Err(self.bad_value(OpName::Read, &path, msg));
            }
            let mut joined = Vec::new();
            for (i, v) in t.sequence_values::<Value>().enumerate() {
                match v {
                    Ok(Value::String(piece)) => joined.extend_from_slice(&piece.as_bytes()),
                    other => {
                        let got = super::type_or_value(&other.ok());
                        let msg = format!("piece {} of the array is {got}, not a string", i + 1);
                        return Err(self.bad_value(OpName::Read, &path, msg));
                    }
                }
            }
            let n = joined.len();
            let joined = self.lua.create_string(&joined).map_err(|_| Errno::ENOMEM)?;
            return Ok(Some((joined, 0..n)));
        }
        let s = self.want_string(OpName::Read, &path, out)?;
        let n = s.as_bytes().len();
        let range = match range {
            None => 0..n,
            Some((at, len)) => {
                let r = usize::try_from(at)
                    .ok()
                    .zip(usize::try_from(len).ok())
                    .and_then(|(at, len)| Some(at..at.checked_add(len)?))
                    .filter(|r| r.end <= n);
                match r {
                    Some(r) => r,
                    None => {
                        let msg = format!("offset {at} and length {len} outside a string of {n}");
                        return Err(self.bad_value(OpName::Read, &path, msg));
                    }
                }
            }
        };
        Ok(Some((s, range)))
    }

    /// write: the script returns the byte count, or nothing for "all of it".
    pub(super) async fn write(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        data: &mlua::LuaString,
    ) -> Result<u32, Fail> {
        let open = self.open_file(ino, fh)?;
        let path = &open.path;
        let len = data.as_bytes().len();
        let count = std::cell::Cell::new(0);
        // SAFETY: `call_peek` calls it on a coroutine that just finished.
        let peek = |co, nres| unsafe { write_peek(co, nres, len, &count) };
        let args = (path, data, offset, open.fi.as_ref());
        let out = match self.call_peek(OpName::Write, args, peek).await? {
            Returned::Peeked => return Ok(count.get()),
            Returned::Values(v) => v,
        };
        if matches!(out.front(), None | Some(Value::Nil)) {
            return Ok(len as u32);
        }
        Ok(self.want_count(OpName::Write, &path.as_bytes(), out, len as u64)? as u32)
    }

    pub(super) async fn flush(&self, ino: u64, fh: u64) -> Result<(), Fail> {
        if !self.has(OpName::Flush) {
            // As libfuse's path API: ENOSYS, which the kernel takes as success and as a sign
            // to send no more FLUSH (one request less per close). With `lock`, a close must
            // reach flufs to release the closer's locks, so it keeps coming.
            return if self.has(OpName::Lock) {
                Ok(())
            } else {
                Err(Errno::ENOSYS)
            };
        }
        let open = self.open_file(ino, fh)?;
        self.call_unit(OpName::Flush, (&open.path, open.fi.as_ref()))
            .await
    }

    /// release or releasedir: the handle goes whatever the script answers.
    pub(super) async fn release(&self, op: OpName, ino: u64, fh: u64) -> Result<(), Fail> {
        let r = if self.has(op) {
            match self.open_file(ino, fh) {
                Ok(open) => self.call_unit(op, (&open.path, open.fi.as_ref())).await,
                Err(e) => Err(e),
            }
        } else {
            Ok(())
        };
        if let Some(h) = self.handles.borrow_mut().remove(&fh) {
            self.inodes.borrow_mut().closed(h.ino);
        }
        r
    }

    /// fsync or fsyncdir.
    pub(super) async fn fsync(
        &self,
        op: OpName,
        ino: u64,
        fh: u64,
        datasync: bool,
    ) -> Result<(), Fail> {
        let open = self.open_file(ino, fh)?;
        self.call_unit(op, (&open.path, datasync, open.fi.as_ref()))
            .await
    }

    async fn lock_call(
        &self,
        ino: u64,
        fh: u64,
        cmd: &str,
        lock: Lock,
    ) -> Result<(Vec<u8>, MultiValue), Fail> {
        let path = self.path(ino)?;
        let lpath = Bytes(&path);
        let lk = lock.into_lua_table(&self.lua).map_err(|_| Errno::ENOMEM)?;
        let out = self
            .call(OpName::Lock, (lpath, self.fi(fh), cmd, lk))
            .await?;
        Ok((path, out))
    }

    /// F_GETLK: the script returns the conflicting lock, or nothing when there is none.
    pub(super) async fn getlk(&self, ino: u64, fh: u64, lock: Lock) -> Result<Lock, Fail> {
        let (path, out) = self.lock_call(ino, fh, "getlk", lock).await?;
        match first(out) {
            Some(Value::Table(t)) => {
                Lock::from_lua(&t).map_err(|e| self.bad_value(OpName::Lock, &path, e))
            }
            _ => Ok(Lock {
                typ: libc::F_UNLCK,
                ..lock
            }),
        }
    }

    pub(super) async fn setlk(
        &self,
        ino: u64,
        fh: u64,
        lock: Lock,
        sleep: bool,
    ) -> Result<(), Fail> {
        self.lock_call(ino, fh, if sleep { "setlkw" } else { "setlk" }, lock)
            .await
            .map(drop)
    }

    pub(super) async fn bmap(&self, ino: u64, blocksize: u32, idx: u64) -> Result<u64, Fail> {
        let path = self.path(ino)?;
        let lpath = Bytes(&path);
        let out = self.call(OpName::Bmap, (lpath, blocksize, idx)).await?;
        self.want_count(OpName::Bmap, &path, out, i64::MAX as u64)
    }

    pub(super) async fn fallocate(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<(), Fail> {
        let path = self.path(ino)?;
        let lpath = Bytes(&path);
        self.call_unit(
            OpName::Fallocate,
            (lpath, mode, offset, length, self.fi(fh)),
        )
        .await
    }

    pub(super) async fn lseek(
        &self,
        ino: u64,
        fh: u64,
        offset: i64,
        whence: i32,
    ) -> Result<i64, Fail> {
        let w = match whence {
            libc::SEEK_SET => "set",
            libc::SEEK_CUR => "cur",
            libc::SEEK_END => "end",
            libc::SEEK_DATA => "data",
            libc::SEEK_HOLE => "hole",
            _ => return Err(Errno::EINVAL),
        };
        let path = self.path(ino)?;
        let lpath = Bytes(&path);
        let out = self
            .call(OpName::Lseek, (lpath, offset, w, self.fi(fh)))
            .await?;
        Ok(self.want_count(OpName::Lseek, &path, out, i64::MAX as u64)? as i64)
    }

    /// copy_file_range between (ino, fh, offset) pairs.
    pub(super) async fn copy_file_range(
        &self,
        src: (u64, u64, u64),
        dst: (u64, u64, u64),
        len: u64,
        flags: u64,
    ) -> Result<u32, Fail> {
        let pin = self.path(src.0)?;
        let pout = self.path(dst.0)?;
        let (lin, lout) = (Bytes(&pin), Bytes(&pout));
        let args = (
            lin,
            self.fi(src.1),
            src.2,
            lout,
            self.fi(dst.1),
            dst.2,
            len,
            flags,
        );
        let out = self.call(OpName::CopyFileRange, args).await?;
        Ok(self.want_count(
            OpName::CopyFileRange,
            &pout,
            out,
            len.min(u64::from(u32::MAX)),
        )? as u32)
    }
}

/// Answer a read from what it returned, where the call left it on coroutine `co`'s stack
/// (`true`, then the string, or the string, an offset and a length in range): the reply is
/// sent from the Lua string itself, with no mlua values made. False (the reply left in
/// `slot`) for any other shape, which the caller takes as values and checks.
///
/// # Safety
/// `co` just returned `nres` results, and nothing runs in its Lua state during the call.
unsafe fn read_peek(
    co: *mut mlua::ffi::lua_State,
    nres: std::ffi::c_int,
    size: u32,
    slot: &std::cell::Cell<Option<crate::replies::ReplyData>>,
) -> bool {
    use mlua::ffi;
    unsafe {
        if !(nres == 2 || nres == 4)
            || ffi::lua_type(co, 1) != ffi::LUA_TBOOLEAN
            || ffi::lua_toboolean(co, 1) == 0
        {
            return false;
        }
        if nres == 2 && ffi::lua_type(co, 2) == ffi::LUA_TTABLE {
            return read_pieces_peek(co, size, slot);
        }
        if ffi::lua_type(co, 2) != ffi::LUA_TSTRING {
            return false;
        }
        let mut n = 0usize;
        let p = ffi::lua_tolstring(co, 2, &mut n) as *const u8;
        let s = std::slice::from_raw_parts(p, n);
        let range = if nres == 4 {
            if ffi::lua_isinteger(co, 3) == 0 || ffi::lua_isinteger(co, 4) == 0 {
                return false;
            }
            let at = ffi::lua_tointegerx(co, 3, std::ptr::null_mut());
            let len = ffi::lua_tointegerx(co, 4, std::ptr::null_mut());
            match usize::try_from(at)
                .ok()
                .zip(usize::try_from(len).ok())
                .and_then(|(at, len)| Some(at..at.checked_add(len)?))
                .filter(|r| r.end <= n)
            {
                Some(r) => r,
                None => return false,
            }
        } else {
            0..n
        };
        let Some(reply) = slot.take() else {
            return false;
        };
        let b = &s[range];
        reply.data(&b[..b.len().min(size as usize)]);
        true
    }
}

thread_local! {
    /// Where a read's pieces are gathered into one reply (kept between reads: no allocation
    /// once it has grown to the reads' size).
    static PIECES: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `read_peek` for an array of strings at index 2 of `co`'s stack: their bytes, one after
/// another and at most `size` of them, gathered into one reply with one copy each. False (the
/// reply left in `slot`) when an element is not a string or there is none (a table returned
/// by mistake, such as a file's node), for the caller to report.
///
/// # Safety
/// As `read_peek`'s.
unsafe fn read_pieces_peek(
    co: *mut mlua::ffi::lua_State,
    size: u32,
    slot: &std::cell::Cell<Option<crate::replies::ReplyData>>,
) -> bool {
    use mlua::ffi;
    let size = size as usize;
    PIECES.with_borrow_mut(|buf| {
        buf.clear();
        // SAFETY: index 2 holds a table; lua_rawgeti runs no Lua code (no metamethods), and
        // each element pushed is popped again before the next; a string's bytes stay valid
        // while it is on the stack.
        unsafe {
            if ffi::lua_checkstack(co, 1) == 0 {
                return false;
            }
            let n = ffi::lua_rawlen(co, 2);
            if n == 0 {
                return false; // no pieces: most likely a wrong table, reported by the caller
            }
            for i in 1..=n {
                ffi::lua_rawgeti(co, 2, i as ffi::lua_Integer);
                if ffi::lua_type(co, -1) != ffi::LUA_TSTRING {
                    ffi::lua_settop(co, -2);
                    return false;
                }
                let mut len = 0usize;
                let p = ffi::lua_tolstring(co, -1, &mut len) as *const u8;
                let take = len.min(size - buf.len());
                buf.extend_from_slice(std::slice::from_raw_parts(p, take));
                ffi::lua_settop(co, -2);
            }
        }
        let Some(reply) = slot.take() else {
            return false;
        };
        reply.data(buf);
        true
    })
}

/// The count a write returned, read where the call left it on coroutine `co`'s stack: an
/// integer from 0 to `len`, or nothing or nil for all of it. False for anything else, which
/// the caller takes as values and checks.
///
/// # Safety
/// `co` just returned `nres` results.
unsafe fn write_peek(
    co: *mut mlua::ffi::lua_State,
    nres: std::ffi::c_int,
    len: usize,
    count: &std::cell::Cell<u32>,
) -> bool {
    use mlua::ffi;
    unsafe {
        if !(1..=2).contains(&nres)
            || ffi::lua_type(co, 1) != ffi::LUA_TBOOLEAN
            || ffi::lua_toboolean(co, 1) == 0
        {
            return false;
        }
        let n = if nres == 1 || ffi::lua_type(co, 2) == ffi::LUA_TNIL {
            len
        } else if ffi::lua_isinteger(co, 2) != 0 {
            match usize::try_from(ffi::lua_tointegerx(co, 2, std::ptr::null_mut())) {
                Ok(n) if n <= len => n,
                _ => return false,
            }
        } else {
            return false;
        };
        match u32::try_from(n) {
            Ok(n) => {
                count.set(n);
                true
            }
            Err(_) => false,
        }
    }
}
