//! The kernel side of the bridge: a `fuser::Filesystem` that does no work of its own. Each
//! kernel request becomes one `Request` (the operation, its arguments and its reply object)
//! handed to the dispatcher (a `Sink`), the single owner of the Lua state, which answers it;
//! a WRITE is handed over with its data still in fuser's buffer (`Sink::write`), so that the
//! dispatcher copies it once. Runs on fuser's session threads; holds no Lua and no filesystem
//! state. After each request a thread reports to `readers`, which may have it wait there rather
//! than read the next one (one reader in bursts, all of them in a spell of requests).

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::readers::Readers;
use crate::replies;
use std::time::SystemTime;

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, FileHandle, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyBmap, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, TimeOrNow, WriteFlags,
};

/// Who made a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// The umask, when the request carries it (create, mkdir, mknod).
    pub umask: Option<u32>,
    /// The kernel's number for the request, in the order it sent them (see `crate::nlinks`).
    pub unique: u64,
}

/// Attribute changes of one SETATTR request.
#[derive(Debug)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
    pub fh: Option<u64>,
}

/// One kernel operation with its reply.
#[derive(Debug)]
pub enum Op {
    Lookup {
        parent: u64,
        name: OsString,
        reply: replies::ReplyEntry,
    },
    Getattr {
        ino: u64,
        fh: Option<u64>,
        reply: replies::ReplyAttr,
    },
    Setattr {
        ino: u64,
        set: SetAttr,
        reply: replies::ReplyAttr,
    },
    Readlink {
        ino: u64,
        reply: replies::ReplyData,
    },
    Mknod {
        parent: u64,
        name: OsString,
        mode: u32,
        rdev: u32,
        reply: replies::ReplyEntry,
    },
    Mkdir {
        parent: u64,
        name: OsString,
        mode: u32,
        reply: replies::ReplyEntry,
    },
    Unlink {
        parent: u64,
        name: OsString,
        reply: replies::ReplyEmpty,
    },
    Rmdir {
        parent: u64,
        name: OsString,
        reply: replies::ReplyEmpty,
    },
    Symlink {
        parent: u64,
        name: OsString,
        target: OsString,
        reply: replies::ReplyEntry,
    },
    Rename {
        parent: u64,
        name: OsString,
        newparent: u64,
        newname: OsString,
        flags: u32,
        reply: replies::ReplyEmpty,
    },
    Link {
        ino: u64,
        newparent: u64,
        newname: OsString,
        reply: replies::ReplyEntry,
    },
    Open {
        ino: u64,
        flags: i32,
        reply: replies::ReplyOpen,
    },
    Read {
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
        reply: replies::ReplyData,
    },
    Flush {
        ino: u64,
        fh: u64,
        reply: replies::ReplyEmpty,
    },
    Release {
        ino: u64,
        fh: u64,
        reply: replies::ReplyEmpty,
    },
    Fsync {
        ino: u64,
        fh: u64,
        datasync: bool,
        reply: replies::ReplyEmpty,
    },
    Opendir {
        ino: u64,
        flags: i32,
        reply: replies::ReplyOpen,
    },
    Readdirplus {
        ino: u64,
        fh: u64,
        offset: u64,
        reply: replies::ReplyDirectoryPlus,
    },
    Readdir {
        ino: u64,
        fh: u64,
        offset: u64,
        reply: replies::ReplyDirectory,
    },
    Releasedir {
        ino: u64,
        fh: u64,
        reply: replies::ReplyEmpty,
    },
    Fsyncdir {
        ino: u64,
        fh: u64,
        datasync: bool,
        reply: replies::ReplyEmpty,
    },
    Statfs {
        ino: u64,
        reply: replies::ReplyStatfs,
    },
    Setxattr {
        ino: u64,
        name: OsString,
        value: Vec<u8>,
        flags: i32,
        reply: replies::ReplyEmpty,
    },
    Getxattr {
        ino: u64,
        name: OsString,
        size: u32,
        reply: replies::ReplyXattr,
    },
    Listxattr {
        ino: u64,
        size: u32,
        reply: replies::ReplyXattr,
    },
    Removexattr {
        ino: u64,
        name: OsString,
        reply: replies::ReplyEmpty,
    },
    Access {
        ino: u64,
        mask: i32,
        reply: replies::ReplyEmpty,
    },
    Create {
        parent: u64,
        name: OsString,
        mode: u32,
        flags: i32,
        reply: replies::ReplyCreate,
    },
    Getlk {
        ino: u64,
        fh: u64,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: replies::ReplyLock,
    },
    Setlk {
        ino: u64,
        fh: u64,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: replies::ReplyEmpty,
    },
    Bmap {
        ino: u64,
        blocksize: u32,
        idx: u64,
        reply: replies::ReplyBmap,
    },
    Fallocate {
        ino: u64,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
        reply: replies::ReplyEmpty,
    },
    Lseek {
        ino: u64,
        fh: u64,
        offset: i64,
        whence: i32,
        reply: replies::ReplyLseek,
    },
    CopyFileRange {
        ino_in: u64,
        fh_in: u64,
        off_in: u64,
        ino_out: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
        flags: u64,
        reply: replies::ReplyWrite,
    },
}

/// A WRITE, handed over while its data is still in fuser's buffer (see `Sink::write`).
pub struct Write<'a> {
    pub ino: u64,
    pub fh: u64,
    pub offset: u64,
    pub data: &'a [u8],
    pub reply: replies::ReplyWrite,
}

/// A request on its way to the dispatcher.
#[derive(Debug)]
pub struct Request {
    pub ctx: Ctx,
    pub op: Op,
}

/// Kernel features to negotiate at INIT, decided from the script and the options.
#[derive(Debug, Clone, Copy, Default)]
pub struct Features {
    pub posix_locks: bool,
    pub readdirplus: Readdirplus,
    /// The script drops setid bits itself: the kernel need not ask for security.capability
    /// (a getxattr) before every write.
    pub handle_killpriv: bool,
    pub writeback_cache: bool,
    pub max_write: u32,
    pub max_readahead: u32,
}

/// When the kernel lists a directory with READDIRPLUS (entries with their attributes, so
/// that no LOOKUP follows for each) rather than READDIR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Readdirplus {
    /// The kernel decides (FUSE_READDIRPLUS_AUTO, libfuse's default): the first chunk of a
    /// listing, and chunks after lookups in the directory.
    #[default]
    Auto,
    /// Every chunk: for a script whose readdir gives stat tables at no cost.
    Always,
    /// Never (also when the script has no readdir).
    Never,
}

/// The `fuser::Filesystem` that forwards every request.
pub struct Kernel {
    sink: Arc<dyn Sink>,
    features: Features,
    readers: Readers,
}

/// Where requests go: the dispatcher, which runs each on the calling kernel thread.
pub trait Sink: Send + Sync {
    fn submit(&self, req: Request);
    /// A WRITE, apart from the other requests: its data is borrowed from fuser's buffer, so
    /// that the sink copies it once, straight into what it keeps it as (the dispatcher: the
    /// Lua string the script gets), not first into a `Vec` of the request's own.
    fn write(&self, ctx: Ctx, w: Write<'_>);
    /// The kernel dropped `nlookup` references to `ino` (no reply, no script call).
    fn forget(&self, ino: u64, nlookup: u64);
}

impl Kernel {
    /// `threads`: fuser's session threads (see `crate::readers`).
    pub fn new(sink: Arc<dyn Sink>, features: Features, threads: usize) -> Kernel {
        Kernel {
            sink,
            features,
            readers: Readers::new(threads),
        }
    }

    fn send(&self, req: &fuser::Request, op: Op) {
        self.send_ctx(ctx_of(req, None), op);
    }

    fn send_ctx(&self, ctx: Ctx, op: Op) {
        // The dispatcher runs it now, on this thread. Once the dispatcher is closed the
        // request (and its reply) is dropped, and fuser answers EIO for an unanswered reply.
        self.run(ctx.pid, || self.sink.submit(Request { ctx, op }));
    }

    /// Hand a request of thread `pid` over with `hand` (its replies held while several threads
    /// read), then report it done to the readers' gate, which may keep this thread waiting.
    fn run(&self, pid: u32, hand: impl FnOnce()) {
        {
            let _out = self.hold_replies();
            hand();
        }
        self.readers.done(pid);
    }

    /// While several kernel threads read, each keeps its replies until it has let go of the
    /// dispatcher's lock (see `replies`): a client woken by a reply sent under the lock would
    /// have the next thread wait for the lock. With one reading, no other thread wants the
    /// lock, and sending at once saves a closure per reply and a copy of read data (2000
    /// random 4 KiB reads: ~3% less daemon CPU, A/B medians).
    fn hold_replies(&self) -> Option<replies::Held> {
        self.readers.several().then(replies::hold)
    }
}

/// The context of a request this thread just read (which `nlinks` notes as read).
fn ctx_of(req: &fuser::Request, umask: Option<u32>) -> Ctx {
    let unique = req.unique().0;
    crate::nlinks::seen(unique);
    Ctx {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
        umask,
        unique,
    }
}

fn os(name: &OsStr) -> OsString {
    name.to_os_string()
}

impl fuser::Filesystem for Kernel {
    fn init(&mut self, _req: &fuser::Request, config: &mut KernelConfig) -> io::Result<()> {
        let f = self.features;
        let mut want = InitFlags::FUSE_AUTO_INVAL_DATA
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_DIO
            | InitFlags::FUSE_CACHE_SYMLINKS;
        if f.posix_locks {
            want |= InitFlags::FUSE_POSIX_LOCKS;
        }
        match f.readdirplus {
            Readdirplus::Auto => {
                want |= InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO
            }
            Readdirplus::Always => want |= InitFlags::FUSE_DO_READDIRPLUS,
            Readdirplus::Never => {}
        }
        if f.writeback_cache {
            want |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        if f.handle_killpriv {
            want |= InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        }
        let supported = config.capabilities() & want;
        let _ = config.add_capabilities(supported);
        if f.max_write > 0 {
            let _ = config.set_max_write(f.max_write);
        }
        if f.max_readahead > 0 {
            let _ = config.set_max_readahead(f.max_readahead);
        }
        // Requests that wait (network, timers) should not hold back others: let the kernel
        // keep many in flight.
        let _ = config.set_max_background(256);
        let _ = config.set_congestion_threshold(192);
        Ok(())
    }

    fn lookup(&self, req: &fuser::Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.send(
            req,
            Op::Lookup {
                parent: parent.0,
                name: os(name),
                reply: reply.into(),
            },
        );
    }

    fn forget(&self, _req: &fuser::Request, ino: INodeNo, nlookup: u64) {
        self.sink.forget(ino.0, nlookup);
    }

    fn getattr(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        fh: Option<FileHandle>,
        reply: ReplyAttr,
    ) {
        self.send(
            req,
            Op::Getattr {
                ino: ino.0,
                fh: fh.map(|f| f.0),
                reply: reply.into(),
            },
        );
    }

    fn setattr(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            fh: fh.map(|f| f.0),
        };
        self.send(
            req,
            Op::Setattr {
                ino: ino.0,
                set,
                reply: reply.into(),
            },
        );
    }

    fn readlink(&self, req: &fuser::Request, ino: INodeNo, reply: ReplyData) {
        self.send(
            req,
            Op::Readlink {
                ino: ino.0,
                reply: reply.into(),
            },
        );
    }

    fn mknod(
        &self,
        req: &fuser::Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let op = Op::Mknod {
            parent: parent.0,
            name: os(name),
            mode,
            rdev,
            reply: reply.into(),
        };
        self.send_ctx(ctx_of(req, Some(umask)), op);
    }

    fn mkdir(
        &self,
        req: &fuser::Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let op = Op::Mkdir {
            parent: parent.0,
            name: os(name),
            mode,
            reply: reply.into(),
        };
        self.send_ctx(ctx_of(req, Some(umask)), op);
    }

    fn unlink(&self, req: &fuser::Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.send(
            req,
            Op::Unlink {
                parent: parent.0,
                name: os(name),
                reply: reply.into(),
            },
        );
    }

    fn rmdir(&self, req: &fuser::Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.send(
            req,
            Op::Rmdir {
                parent: parent.0,
                name: os(name),
                reply: reply.into(),
            },
        );
    }

    fn symlink(
        &self,
        req: &fuser::Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let op = Op::Symlink {
            parent: parent.0,
            name: os(link_name),
            target: target.as_os_str().to_os_string(),
            reply: reply.into(),
        };
        self.send(req, op);
    }

    fn rename(
        &self,
        req: &fuser::Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let op = Op::Rename {
            parent: parent.0,
            name: os(name),
            newparent: newparent.0,
            newname: os(newname),
            flags: flags.bits(),
            reply: reply.into(),
        };
        self.send(req, op);
    }

    fn link(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.send(
            req,
            Op::Link {
                ino: ino.0,
                newparent: newparent.0,
                newname: os(newname),
                reply: reply.into(),
            },
        );
    }

    fn open(&self, req: &fuser::Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.send(
            req,
            Op::Open {
                ino: ino.0,
                flags: flags.0,
                reply: reply.into(),
            },
        );
    }

    fn read(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.send(
            req,
            Op::Read {
                ino: ino.0,
                fh: fh.0,
                offset,
                size,
                reply: reply.into(),
            },
        );
    }

    fn write(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let w = Write {
            ino: ino.0,
            fh: fh.0,
            offset,
            data,
            reply: reply.into(),
        };
        let ctx = ctx_of(req, None);
        self.run(ctx.pid, || self.sink.write(ctx, w));
    }

    fn flush(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.send(
            req,
            Op::Flush {
                ino: ino.0,
                fh: fh.0,
                reply: reply.into(),
            },
        );
    }

    fn release(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.send(
            req,
            Op::Release {
                ino: ino.0,
                fh: fh.0,
                reply: reply.into(),
            },
        );
    }

    fn fsync(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.send(
            req,
            Op::Fsync {
                ino: ino.0,
                fh: fh.0,
                datasync,
                reply: reply.into(),
            },
        );
    }

    fn opendir(&self, req: &fuser::Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.send(
            req,
            Op::Opendir {
                ino: ino.0,
                flags: flags.0,
                reply: reply.into(),
            },
        );
    }

    fn readdir(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.send(
            req,
            Op::Readdir {
                ino: ino.0,
                fh: fh.0,
                offset,
                reply: reply.into(),
            },
        );
    }

    fn readdirplus(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let op = Op::Readdirplus {
            ino: ino.0,
            fh: fh.0,
            offset,
            reply: reply.into(),
        };
        self.send(req, op);
    }

    fn releasedir(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.send(
            req,
            Op::Releasedir {
                ino: ino.0,
                fh: fh.0,
                reply: reply.into(),
            },
        );
    }

    fn fsyncdir(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.send(
            req,
            Op::Fsyncdir {
                ino: ino.0,
                fh: fh.0,
                datasync,
                reply: reply.into(),
            },
        );
    }

    fn statfs(&self, req: &fuser::Request, ino: INodeNo, reply: ReplyStatfs) {
        self.send(
            req,
            Op::Statfs {
                ino: ino.0,
                reply: reply.into(),
            },
        );
    }

    fn setxattr(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.send(
            req,
            Op::Setxattr {
                ino: ino.0,
                name: os(name),
                value: value.to_vec(),
                flags,
                reply: reply.into(),
            },
        );
    }

    fn getxattr(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        self.send(
            req,
            Op::Getxattr {
                ino: ino.0,
                name: os(name),
                size,
                reply: reply.into(),
            },
        );
    }

    fn listxattr(&self, req: &fuser::Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.send(
            req,
            Op::Listxattr {
                ino: ino.0,
                size,
                reply: reply.into(),
            },
        );
    }

    fn removexattr(&self, req: &fuser::Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.send(
            req,
            Op::Removexattr {
                ino: ino.0,
                name: os(name),
                reply: reply.into(),
            },
        );
    }

    fn access(&self, req: &fuser::Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.send(
            req,
            Op::Access {
                ino: ino.0,
                mask: mask.bits(),
                reply: reply.into(),
            },
        );
    }

    fn create(
        &self,
        req: &fuser::Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let op = Op::Create {
            parent: parent.0,
            name: os(name),
            mode,
            flags,
            reply: reply.into(),
        };
        self.send_ctx(ctx_of(req, Some(umask)), op);
    }

    fn getlk(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        self.send(
            req,
            Op::Getlk {
                ino: ino.0,
                fh: fh.0,
                start,
                end,
                typ,
                pid,
                reply: reply.into(),
            },
        );
    }

    fn setlk(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        self.send(
            req,
            Op::Setlk {
                ino: ino.0,
                fh: fh.0,
                start,
                end,
                typ,
                pid,
                sleep,
                reply: reply.into(),
            },
        );
    }

    fn bmap(&self, req: &fuser::Request, ino: INodeNo, blocksize: u32, idx: u64, reply: ReplyBmap) {
        self.send(
            req,
            Op::Bmap {
                ino: ino.0,
                blocksize,
                idx,
                reply: reply.into(),
            },
        );
    }

    fn fallocate(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.send(
            req,
            Op::Fallocate {
                ino: ino.0,
                fh: fh.0,
                offset,
                length,
                mode,
                reply: reply.into(),
            },
        );
    }

    fn lseek(
        &self,
        req: &fuser::Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.send(
            req,
            Op::Lseek {
                ino: ino.0,
                fh: fh.0,
                offset,
                whence,
                reply: reply.into(),
            },
        );
    }

    fn copy_file_range(
        &self,
        req: &fuser::Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let op = Op::CopyFileRange {
            ino_in: ino_in.0,
            fh_in: fh_in.0,
            off_in: offset_in,
            ino_out: ino_out.0,
            fh_out: fh_out.0,
            off_out: offset_out,
            len,
            flags: flags.bits(),
            reply: reply.into(),
        };
        self.send(req, op);
    }
}
