//! memfs: an in-memory filesystem written directly on fuser 0.18, with no Lua. It is the
//! reference ("the limit for this design") that `scripts/bench` compares flufs + luafs.lua
//! against, so it mirrors what flufs does around the filesystem code:
//!
//! - the same INIT negotiation as flufs (src/kernel.rs `init`) with luafs.lua (readdir, no
//!   lock): AUTO_INVAL_DATA, PARALLEL_DIROPS, ASYNC_DIO, CACHE_SYMLINKS, DO_READDIRPLUS and
//!   READDIRPLUS_AUTO, max_write and max_readahead 1 MiB, no writeback cache; and, as
//!   flufs does after mounting, the mount's /sys/class/bdi/*/read_ahead_kb raised to 1 MiB;
//! - attr/entry time-outs of 1 s and no negative caching (flufs defaults), overridable with
//!   `-o attr_timeout=S,entry_timeout=S,negative_timeout=S`;
//! - one malloc arena for every thread (flufs's `one_malloc_arena`), and flufs's global
//!   allocator (src/prefault.rs: large new blocks faulted in at once). memfs's file data grows
//!   by `realloc` (one vector per file), which that allocator leaves alone, so its writes
//!   take their page faults one page at a time as before;
//! - two fuser session threads, the second reading only in spells of requests (flufs's
//!   `src/readers.rs`, included here; each request's lock guard reports it done, a FORGET's
//!   excepted, as in flufs); the same
//!   mount (as root: mount(2) with nosuid,nodev and
//!   `fd=N,rootmode=..,user_id=..,group_id=..`; otherwise fusermount3 through fuser);
//! - a directory listing snapshotted at the first readdir(plus) of an open directory and served
//!   from it for the following offsets (as flufs does); readdirplus entries carry the entry
//!   time-out and count a lookup each;
//! - no flush (fuser answers ENOSYS, as flufs does for a script without flush and lock: the
//!   kernel sends no more FLUSH);
//! - extended attributes as luafs keeps them: ENODATA for absent ones; EOPNOTSUPP for names
//!   outside `user.`, `security.` and `trusted.` and for `security.selinux`, which luafs
//!   declares unsupported (`fs.unsupported_xattrs`). `ls -l` then asks only its first file
//!   for `security.selinux` and for `system.posix_acl_access`, as with luafs.
//!
//! Everything is kept in one `Mutex<State>`: an inode table (HashMap), directories as HashMaps
//! of names, file data as one `Vec<u8>` per file (reads reply with a slice, no copy).
//!
//! Usage: `memfs [-o opt[,opt...]] MOUNTPOINT` — stays in the foreground; SIGINT, SIGTERM and
//! SIGHUP unmount (lazily) and exit 0, as does `fusermount3 -u MOUNTPOINT`.

#[path = "../src/prefault.rs"]
mod prefault;
#[allow(dead_code)] // memfs holds no replies back: `Readers::several` is flufs's
#[path = "../src/readers.rs"]
mod readers;

#[global_allocator]
static ALLOCATOR: prefault::Prefaulting = prefault::Prefaulting;

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Config, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, Session, SessionACL, TimeOrNow,
    WriteFlags,
};

use readers::Readers;

const ROOT: u64 = 1;
const NAME_MAX: usize = 255;

enum Content {
    File(Vec<u8>),
    Dir(HashMap<OsString, u64>),
    Symlink(Vec<u8>),
    Other,
}

struct Node {
    kind: FileType,
    perm: u16,
    nlink: u32,
    uid: u32,
    gid: u32,
    rdev: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    parent: u64,
    content: Content,
    xattrs: Option<HashMap<OsString, Vec<u8>>>,
    /// Kernel references (lookups not yet forgotten) and open handles: a node with no links
    /// is freed once both reach zero.
    nlookup: u64,
    opens: u32,
}

impl Node {
    fn size(&self) -> u64 {
        match &self.content {
            Content::File(d) => d.len() as u64,
            Content::Symlink(t) => t.len() as u64,
            Content::Dir(e) => (e.len() as u64 + 2) * 32,
            Content::Other => 0,
        }
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let size = self.size();
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            crtime: self.ctime,
            kind: self.kind,
            perm: self.perm,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: self.rdev,
            blksize: 4096,
            flags: 0,
        }
    }
}

/// One directory listing: inode, type and name of each entry, `.` and `..` first.
type Listing = Vec<(u64, FileType, OsString)>;

struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// Open directories: the listing taken at the first readdir.
    dirs: HashMap<u64, Option<Listing>>,
    next_fh: u64,
}

impl State {
    fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn entries(&self, ino: u64) -> Result<&HashMap<OsString, u64>, Errno> {
        match &self.node(ino)?.content {
            Content::Dir(e) => Ok(e),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, ino: u64) -> Result<&mut HashMap<OsString, u64>, Errno> {
        match &mut self.node_mut(ino)?.content {
            Content::Dir(e) => Ok(e),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(parent)?
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    /// Take the listing of directory `ino` for open handle `fh` at its first readdir (offset 0),
    /// or when a later offset finds none.
    fn snapshot(&mut self, ino: u64, fh: u64, offset: u64) -> Result<(), Errno> {
        if offset > 0 && matches!(self.dirs.get(&fh), Some(Some(_))) {
            return Ok(());
        }
        let n = self.node(ino)?;
        let Content::Dir(entries) = &n.content else {
            return Err(Errno::ENOTDIR);
        };
        let mut v = Vec::with_capacity(entries.len() + 2);
        v.push((ino, FileType::Directory, OsString::from(".")));
        v.push((n.parent, FileType::Directory, OsString::from("..")));
        for (name, &child) in entries {
            if let Some(c) = self.nodes.get(&child) {
                v.push((child, c.kind, name.clone()));
            }
        }
        self.dirs.insert(fh, Some(v));
        Ok(())
    }

    /// Free a node that has no links, no kernel references and no open handles.
    fn maybe_free(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get(&ino)
            && ino != ROOT
            && n.nlink == 0
            && n.nlookup == 0
            && n.opens == 0
        {
            self.nodes.remove(&ino);
        }
    }

    /// Drop one link of `ino` (after its name was removed from a directory).
    fn unlinked(&mut self, ino: u64, now: SystemTime) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlink = if matches!(n.content, Content::Dir(_)) {
                0
            } else {
                n.nlink.saturating_sub(1)
            };
            n.ctime = now;
        }
        self.maybe_free(ino);
    }

    /// Make a new node named `name` in `parent`; returns its inode number with one lookup.
    #[allow(clippy::too_many_arguments)]
    fn make(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        kind: FileType,
        mode: u32,
        rdev: u32,
        content: Content,
    ) -> Result<u64, Errno> {
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let now = SystemTime::now();
        let pdir = self.node(parent)?;
        let gid = if pdir.perm & 0o2000 != 0 {
            pdir.gid
        } else {
            req.gid()
        };
        let entries = self.entries(parent)?;
        if entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let is_dir = kind == FileType::Directory;
        self.nodes.insert(
            ino,
            Node {
                kind,
                perm: (mode & 0o7777) as u16,
                nlink: if is_dir { 2 } else { 1 },
                uid: req.uid(),
                gid,
                rdev,
                atime: now,
                mtime: now,
                ctime: now,
                parent,
                content,
                xattrs: None,
                nlookup: 1,
                opens: 0,
            },
        );
        self.entries_mut(parent)?.insert(name.to_os_string(), ino);
        let p = self.node_mut(parent)?;
        if is_dir {
            p.nlink += 1;
        }
        p.mtime = now;
        p.ctime = now;
        Ok(ino)
    }
}

fn kind_of(mode: u32) -> Option<FileType> {
    Some(match mode & libc::S_IFMT {
        libc::S_IFREG | 0 => FileType::RegularFile,
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => return None,
    })
}

fn time(t: TimeOrNow, now: SystemTime) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => now,
    }
}

struct MemFs {
    state: Mutex<State>,
    attr_ttl: Duration,
    entry_ttl: Duration,
    negative_ttl: Duration,
    readers: Readers,
}

/// flufs's kernel threads (mount::DEFAULT_THREADS): the second reads only in spells of
/// requests (src/readers.rs).
const THREADS: usize = 2;

/// The state, locked for one request. Dropping it unlocks and then tells `readers` the
/// request is done (every request takes the lock once and answers before letting it go).
struct Locked<'a> {
    st: ManuallyDrop<MutexGuard<'a, State>>,
    readers: &'a Readers,
    /// The request's sender (its pid), for `readers`.
    pid: u32,
}

impl Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.st
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.st
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: the guard is dropped here only, and not used after.
        unsafe { ManuallyDrop::drop(&mut self.st) };
        self.readers.done(self.pid);
    }
}

impl MemFs {
    /// `threads`: the fuser session threads (`readers::usable`).
    fn new(opts: &Opts, threads: usize) -> MemFs {
        let now = SystemTime::now();
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                kind: FileType::Directory,
                perm: 0o755,
                nlink: 2,
                uid: unsafe { libc::getuid() },
                gid: unsafe { libc::getgid() },
                rdev: 0,
                atime: now,
                mtime: now,
                ctime: now,
                parent: ROOT,
                content: Content::Dir(HashMap::new()),
                xattrs: None,
                nlookup: 0,
                opens: 0,
            },
        );
        MemFs {
            state: Mutex::new(State {
                nodes,
                next_ino: 2,
                dirs: HashMap::new(),
                next_fh: 1,
            }),
            attr_ttl: opts.attr_ttl,
            entry_ttl: opts.entry_ttl,
            negative_ttl: opts.negative_ttl,
            readers: Readers::new(threads),
        }
    }

    fn lock(&self, req: &Request) -> Locked<'_> {
        Locked {
            st: ManuallyDrop::new(self.state.lock().unwrap_or_else(|e| e.into_inner())),
            readers: &self.readers,
            pid: req.pid(),
        }
    }

    fn reply_new(&self, st: &State, r: Result<u64, Errno>, reply: ReplyEntry) {
        match r.and_then(|ino| Ok(st.node(ino)?.attr(ino))) {
            Ok(a) => reply.entry(&self.entry_ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

/// Write `data` at `offset` of file node `n` (growing it with zeros first), as write and
/// copy_file_range do; the count written.
fn store(n: &mut Node, offset: u64, data: &[u8], now: SystemTime) -> Result<u32, Errno> {
    let Content::File(d) = &mut n.content else {
        return Err(Errno::EINVAL);
    };
    let off = usize::try_from(offset).map_err(|_| Errno::EFBIG)?;
    let end = off.checked_add(data.len()).ok_or(Errno::EFBIG)?;
    if end > d.len() {
        d.resize(end, 0);
    }
    d[off..end].copy_from_slice(data);
    n.mtime = now;
    n.ctime = now;
    Ok(data.len() as u32)
}

fn done(r: Result<(), Errno>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl fuser::Filesystem for MemFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Exactly what flufs asks for with its default options and luafs (which sets
        // fs.handle_killpriv).
        let want = InitFlags::FUSE_AUTO_INVAL_DATA
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_DIO
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        let supported = config.capabilities() & want;
        let _ = config.add_capabilities(supported);
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut st = self.lock(req);
        let r = st.child(parent.0, name).and_then(|ino| {
            let n = st.node_mut(ino)?;
            n.nlookup += 1;
            Ok(n.attr(ino))
        });
        match r {
            Ok(a) => reply.entry(&self.entry_ttl, &a, Generation(0)),
            Err(e) if e == Errno::ENOENT && !self.negative_ttl.is_zero() => {
                // A zero inode number is a cacheable "does not exist".
                let mut a = st.nodes[&ROOT].attr(0);
                a.ino = INodeNo(0);
                reply.entry(&self.negative_ttl, &a, Generation(0));
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        // The state alone, not `lock`: a FORGET has no reply and no waiting sender, and flufs
        // does not report it to its readers' gate either.
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = st.nodes.get_mut(&ino.0) {
            n.nlookup = n.nlookup.saturating_sub(nlookup);
        }
        st.maybe_free(ino.0);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let st = self.lock(req);
        match st.node(ino.0) {
            Ok(n) => reply.attr(&self.attr_ttl, &n.attr(ino.0)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.lock(req);
        let now = SystemTime::now();
        let r = (|| {
            let n = st.node_mut(ino.0)?;
            if let Some(size) = size {
                match &mut n.content {
                    Content::File(d) => {
                        d.resize(size as usize, 0);
                        if (d.capacity() as u64) > 2 * size + 4096 {
                            d.shrink_to_fit();
                        }
                        n.mtime = now;
                    }
                    Content::Dir(_) => return Err(Errno::EISDIR),
                    _ => return Err(Errno::EINVAL),
                }
            }
            if let Some(m) = mode {
                n.perm = (m & 0o7777) as u16;
            }
            if let Some(u) = uid {
                n.uid = u;
            }
            if let Some(g) = gid {
                n.gid = g;
            }
            if let Some(t) = atime {
                n.atime = time(t, now);
            }
            if let Some(t) = mtime {
                n.mtime = time(t, now);
            }
            n.ctime = now;
            Ok(n.attr(ino.0))
        })();
        match r {
            Ok(a) => reply.attr(&self.attr_ttl, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let st = self.lock(req);
        match st.node(ino.0).map(|n| &n.content) {
            Ok(Content::Symlink(t)) => reply.data(t),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let mut st = self.lock(req);
        let r = match kind_of(mode) {
            Some(FileType::Directory) | Some(FileType::Symlink) | None => Err(Errno::EINVAL),
            Some(FileType::RegularFile) => st.make(
                req,
                parent.0,
                name,
                FileType::RegularFile,
                mode,
                0,
                Content::File(Vec::new()),
            ),
            Some(k) => st.make(req, parent.0, name, k, mode, rdev, Content::Other),
        };
        self.reply_new(&st, r, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut st = self.lock(req);
        let r = st.make(
            req,
            parent.0,
            name,
            FileType::Directory,
            mode,
            0,
            Content::Dir(HashMap::new()),
        );
        self.reply_new(&st, r, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let mut st = self.lock(req);
        let r = st.make(
            req,
            parent.0,
            link_name,
            FileType::Symlink,
            0o777,
            0,
            Content::Symlink(target.as_os_str().as_bytes().to_vec()),
        );
        self.reply_new(&st, r, reply);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut st = self.lock(req);
        let now = SystemTime::now();
        let r = (|| {
            if matches!(st.node(ino.0)?.content, Content::Dir(_)) {
                return Err(Errno::EPERM);
            }
            if newname.len() > NAME_MAX {
                return Err(Errno::ENAMETOOLONG);
            }
            let entries = st.entries_mut(newparent.0)?;
            if entries.contains_key(newname) {
                return Err(Errno::EEXIST);
            }
            entries.insert(newname.to_os_string(), ino.0);
            let p = st.node_mut(newparent.0)?;
            p.mtime = now;
            p.ctime = now;
            let n = st.node_mut(ino.0)?;
            n.nlink += 1;
            n.nlookup += 1;
            n.ctime = now;
            Ok(ino.0)
        })();
        self.reply_new(&st, r, reply);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.lock(req);
        let now = SystemTime::now();
        let r = (|| {
            let ino = st.child(parent.0, name)?;
            if matches!(st.node(ino)?.content, Content::Dir(_)) {
                return Err(Errno::EISDIR);
            }
            st.entries_mut(parent.0)?.remove(name);
            let p = st.node_mut(parent.0)?;
            p.mtime = now;
            p.ctime = now;
            st.unlinked(ino, now);
            Ok(())
        })();
        done(r, reply);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.lock(req);
        let now = SystemTime::now();
        let r = (|| {
            let ino = st.child(parent.0, name)?;
            if !st.entries(ino)?.is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
            st.entries_mut(parent.0)?.remove(name);
            let p = st.node_mut(parent.0)?;
            p.nlink -= 1;
            p.mtime = now;
            p.ctime = now;
            st.unlinked(ino, now);
            Ok(())
        })();
        done(r, reply);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock(req);
        let now = SystemTime::now();
        let r = (|| {
            if flags.contains(RenameFlags::RENAME_EXCHANGE)
                || flags.contains(RenameFlags::RENAME_WHITEOUT)
            {
                return Err(Errno::EINVAL);
            }
            if newname.len() > NAME_MAX {
                return Err(Errno::ENAMETOOLONG);
            }
            let ino = st.child(parent.0, name)?;
            let is_dir = matches!(st.node(ino)?.content, Content::Dir(_));
            // A directory cannot move below itself.
            if is_dir {
                let mut p = newparent.0;
                while p != ROOT {
                    if p == ino {
                        return Err(Errno::EINVAL);
                    }
                    p = st.node(p)?.parent;
                }
            }
            let old = st.entries(newparent.0)?.get(newname).copied();
            if let Some(old) = old {
                if old == ino {
                    return Ok(());
                }
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                match (&st.node(old)?.content, is_dir) {
                    (Content::Dir(e), true) if !e.is_empty() => return Err(Errno::ENOTEMPTY),
                    (Content::Dir(_), true) => st.node_mut(newparent.0)?.nlink -= 1,
                    (Content::Dir(_), false) => return Err(Errno::EISDIR),
                    (_, true) => return Err(Errno::ENOTDIR),
                    _ => {}
                }
            }
            st.entries_mut(parent.0)?.remove(name);
            st.entries_mut(newparent.0)?
                .insert(newname.to_os_string(), ino);
            if is_dir && parent != newparent {
                st.node_mut(parent.0)?.nlink -= 1;
                st.node_mut(newparent.0)?.nlink += 1;
            }
            for p in [parent.0, newparent.0] {
                let p = st.node_mut(p)?;
                p.mtime = now;
                p.ctime = now;
            }
            let n = st.node_mut(ino)?;
            n.parent = newparent.0;
            n.ctime = now;
            if let Some(old) = old {
                st.unlinked(old, now);
            }
            Ok(())
        })();
        done(r, reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.lock(req);
        let now = SystemTime::now();
        let r = (|| {
            let n = st.node_mut(ino.0)?;
            if let Content::File(d) = &mut n.content {
                if flags.0 & libc::O_TRUNC != 0 && !d.is_empty() {
                    *d = Vec::new();
                    n.mtime = now;
                    n.ctime = now;
                }
                n.opens += 1;
            }
            Ok(())
        })();
        match r {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.lock(req);
        let r = st
            .make(
                req,
                parent.0,
                name,
                FileType::RegularFile,
                mode,
                0,
                Content::File(Vec::new()),
            )
            .and_then(|ino| {
                let n = st.node_mut(ino)?;
                n.opens = 1;
                Ok(n.attr(ino))
            });
        match r {
            Ok(a) => reply.created(
                &self.entry_ttl,
                &a,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.lock(req);
        match st.node(ino.0).map(|n| &n.content) {
            Ok(Content::File(d)) => {
                let start = (offset as usize).min(d.len());
                let end = start.saturating_add(size as usize).min(d.len());
                reply.data(&d[start..end]);
            }
            Ok(Content::Dir(_)) => reply.error(Errno::EISDIR),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.lock(req);
        let now = SystemTime::now();
        let r = (|| {
            let n = st.node_mut(ino.0)?;
            // FUSE_HANDLE_KILLPRIV_V2 (as luafs): the writer lacks CAP_FSETID, drop set-user-ID,
            // and set-group-ID with group-execute.
            if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
                n.perm &= !(libc::S_ISUID as u16);
                if n.perm & libc::S_IXGRP as u16 != 0 {
                    n.perm &= !(libc::S_ISGID as u16);
                }
            }
            store(n, offset, data, now)
        })();
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock(req);
        if let Some(n) = st.nodes.get_mut(&ino.0) {
            n.opens = n.opens.saturating_sub(1);
        }
        st.maybe_free(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.lock(req);
        if let Err(e) = st.entries(ino.0) {
            return reply.error(e);
        }
        let fh = st.next_fh;
        st.next_fh += 1;
        st.dirs.insert(fh, None);
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut st = self.lock(req);
        if let Err(e) = st.snapshot(ino.0, fh.0, offset) {
            return reply.error(e);
        }
        let Some(Some(list)) = st.dirs.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let mut guard = self.lock(req);
        let st = &mut *guard;
        if let Err(e) = st.snapshot(ino.0, fh.0, offset) {
            return reply.error(e);
        }
        let Some(Some(list)) = st.dirs.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (child, _, name)) in list.iter().enumerate().skip(offset as usize) {
            // Entries removed since the listing was taken are left out.
            let Some(n) = st.nodes.get_mut(child) else {
                continue;
            };
            let dot = i < 2;
            if reply.add(
                INodeNo(*child),
                i as u64 + 1,
                name,
                &self.entry_ttl,
                &n.attr(*child),
                Generation(0),
            ) {
                break;
            }
            // The kernel counts a lookup for every entry but "." and "..".
            if !dot {
                n.nlookup += 1;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock(req);
        st.dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let st = self.lock(req);
        let used: u64 = st.nodes.values().map(|n| n.size().div_ceil(4096)).sum();
        let blocks = 1u64 << 28; // 1 TiB of 4 KiB blocks
        let files = 1u64 << 32;
        reply.statfs(
            blocks,
            blocks.saturating_sub(used),
            blocks.saturating_sub(used),
            files,
            files - st.nodes.len() as u64,
            4096,
            NAME_MAX as u32,
            4096,
        );
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if unsupported(name) {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let mut st = self.lock(req);
        let now = SystemTime::now();
        let r = (|| {
            let n = st.node_mut(ino.0)?;
            let x = n.xattrs.get_or_insert_with(HashMap::new);
            let exists = x.contains_key(name);
            if flags & libc::XATTR_CREATE != 0 && exists {
                return Err(Errno::EEXIST);
            }
            if flags & libc::XATTR_REPLACE != 0 && !exists {
                return Err(Errno::ENODATA);
            }
            x.insert(name.to_os_string(), value.to_vec());
            n.ctime = now;
            Ok(())
        })();
        done(r, reply);
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if unsupported(name) {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let st = self.lock(req);
        let r = st.node(ino.0).and_then(|n| {
            n.xattrs
                .as_ref()
                .and_then(|x| x.get(name))
                .ok_or(Errno::ENODATA)
        });
        match r {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(v) => reply.data(v),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let st = self.lock(req);
        let n = match st.node(ino.0) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let mut buf = Vec::new();
        for name in n.xattrs.iter().flat_map(|x| x.keys()) {
            buf.extend_from_slice(name.as_bytes());
            buf.push(0);
        }
        if size == 0 {
            reply.size(buf.len() as u32);
        } else if buf.len() > size as usize {
            reply.error(Errno::ERANGE);
        } else {
            reply.data(&buf);
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if unsupported(name) {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let mut st = self.lock(req);
        let r = st.node_mut(ino.0).and_then(|n| {
            n.xattrs
                .as_mut()
                .and_then(|x| x.remove(name))
                .map(|_| ())
                .ok_or(Errno::ENODATA)
        });
        done(r, reply);
    }

    /// As luafs: at most 1 GiB per call, nothing past the source's end; the bytes are copied
    /// (luafs shares whole chunks instead).
    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let mut st = self.lock(req);
        let now = SystemTime::now();
        let r = (|| {
            let Content::File(d) = &st.node(ino_in.0)?.content else {
                return Err(Errno::EINVAL);
            };
            let start = usize::try_from(offset_in).map_or(d.len(), |o| o.min(d.len()));
            let n = usize::try_from(len.min(1 << 30))
                .unwrap_or(0)
                .min(d.len() - start);
            let bytes = d[start..start + n].to_vec();
            store(st.node_mut(ino_out.0)?, offset_out, &bytes, now)
        })();
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        done(self.lock(req).node(ino.0).map(|_| ()), reply);
    }
}

/// The extended attribute names luafs refuses: outside the namespaces it keeps (its
/// `xattr_name_ok`), or declared unsupported (`fs.unsupported_xattrs`).
fn unsupported(name: &OsStr) -> bool {
    let name = name.as_bytes();
    let kept = [&b"user."[..], b"security.", b"trusted."];
    name == b"security.selinux" || !kept.iter().any(|p| name.starts_with(p))
}

struct Opts {
    mountpoint: PathBuf,
    attr_ttl: Duration,
    entry_ttl: Duration,
    negative_ttl: Duration,
}

fn usage() -> ! {
    eprintln!(
        "usage: memfs [-o attr_timeout=S,entry_timeout=S,negative_timeout=S] MOUNTPOINT\n\
         an in-memory filesystem on fuser (no Lua), the reference for scripts/bench"
    );
    std::process::exit(2);
}

fn parse_args() -> Opts {
    let mut o = Opts {
        mountpoint: PathBuf::new(),
        attr_ttl: Duration::from_secs(1),
        entry_ttl: Duration::from_secs(1),
        negative_ttl: Duration::ZERO,
    };
    let mut mnt = None;
    let mut args = std::env::args().skip(1);
    let secs = |v: &str| match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s),
        _ => usage(),
    };
    while let Some(a) = args.next() {
        let list = match a.as_str() {
            "-f" => continue, // always in the foreground
            "-o" => args.next().unwrap_or_else(|| usage()),
            s if s.starts_with("-o") => s[2..].to_string(),
            "-h" | "--help" => usage(),
            s if s.starts_with('-') => usage(),
            _ => {
                if mnt.replace(a).is_some() {
                    usage();
                }
                continue;
            }
        };
        for opt in list.split(',').filter(|s| !s.is_empty()) {
            match opt.split_once('=') {
                Some(("attr_timeout", v)) => o.attr_ttl = secs(v),
                Some(("entry_timeout", v)) => o.entry_ttl = secs(v),
                Some(("negative_timeout", v)) => o.negative_ttl = secs(v),
                _ => {
                    eprintln!("memfs: unknown option '{opt}'");
                    std::process::exit(2);
                }
            }
        }
    }
    o.mountpoint = PathBuf::from(mnt.unwrap_or_else(|| usage()));
    o
}

/// As root, mount(2) directly exactly as flufs does (src/mount.rs `mount_direct`).
fn mount_direct(mnt: &Path) -> io::Result<OwnedFd> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let fd = OwnedFd::from(dev);
    let root_mode = std::fs::metadata(mnt)?.permissions().mode() & libc::S_IFMT;
    let data = format!(
        "fd={},rootmode={:o},user_id={},group_id={}",
        fd.as_raw_fd(),
        root_mode,
        unsafe { libc::getuid() },
        unsafe { libc::getgid() }
    );
    let source = CString::new("memfs").unwrap();
    let fstype = CString::new("fuse.memfs").unwrap();
    let target = CString::new(mnt.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let data = CString::new(data).unwrap();
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// As flufs does after INIT (src/mount.rs `raise_readahead`): let the kernel read ahead as far
/// as one request can carry (the bdi default caps max_readahead at 128 KiB).
fn raise_readahead(mnt: &Path, bytes: u32) {
    let want = mnt.to_string_lossy();
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let dev = info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let point = f.get(4)?.replace("\\040", " ").replace("\\134", "\\");
        (point == want).then(|| f.get(2).map(|d| d.to_string()))?
    });
    if let Some(dev) = dev {
        let kib = (bytes / 1024).max(128);
        let _ = std::fs::write(
            format!("/sys/class/bdi/{dev}/read_ahead_kb"),
            kib.to_string(),
        );
    }
}

fn lazy_unmount(mnt: &Path) {
    if let Ok(c) = CString::new(mnt.as_os_str().as_bytes())
        && unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0
    {
        return;
    }
    let _ = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(mnt)
        .stderr(std::process::Stdio::null())
        .status();
}

fn main() {
    // As flufs (src/main.rs, one_malloc_arena): every thread allocates from the main arena.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of glibc's allocator; no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let opts = parse_args();
    let mnt = opts.mountpoint.clone();

    // Block the stop signals here and in every thread started later; one thread sigwaits.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };

    let threads = readers::usable(THREADS);
    let fs = MemFs::new(&opts, threads);
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("memfs".into()),
        MountOption::Subtype("memfs".into()),
        MountOption::NoSuid,
        MountOption::NoDev,
    ];
    config.acl = SessionACL::Owner;
    config.n_threads = Some(threads);
    let session = if unsafe { libc::geteuid() } == 0 {
        mount_direct(&mnt).and_then(|fd| {
            Session::from_fd(fs, fd, config.acl, config.clone()).inspect_err(|_| lazy_unmount(&mnt))
        })
    } else {
        Session::new(fs, &mnt, &config)
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            eprintln!("memfs: cannot mount on {}: {e}", mnt.display());
            std::process::exit(1);
        }
    };

    raise_readahead(&mnt, 1 << 20);

    let signal_mnt = mnt.clone();
    std::thread::spawn(move || {
        let mut sig = 0;
        while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
        lazy_unmount(&signal_mnt);
        std::process::exit(0);
    });

    match session.run() {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
        Err(e) => {
            eprintln!("memfs: session ended: {e}");
            std::process::exit(1);
        }
    }
}
