//! Replies that go out once the dispatcher's lock is released. Each wraps fuser's reply of the
//! same name and has the methods flufs uses; while a thread holds the lock (`hold`), what they
//! send is kept in that thread's outbox and written when the guard drops. Writing a reply wakes
//! the process waiting for it, which may then run at once on this CPU; if this thread still
//! held the lock, the kernel thread reading that process's next request would have to wait for
//! it. Large read data (over `COPY_LIMIT`) is written at once rather than copied. While a single
//! kernel thread reads (`crate::readers`) nothing else wants the lock, and the kernel side does
//! not hold replies back (`Kernel::hold_replies`): each goes out as it is made.

use std::cell::{Cell, RefCell};
use std::ffi::OsStr;
use std::ops::Range;
use std::time::Duration;

use fuser::{Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo};

/// A reply waiting in a thread's outbox.
enum Pending {
    /// Read data, copied into the outbox's `data` at this range (no allocation per reply).
    Data(fuser::ReplyData, Range<usize>),
    Other(Box<dyn FnOnce()>),
}

/// The replies a thread holds, and the read data they send. Emptied, not dropped, when they
/// go out: the next hold reuses both buffers.
struct Outbox {
    sends: Vec<Pending>,
    data: Vec<u8>,
}

impl Outbox {
    const fn new() -> Outbox {
        Outbox {
            sends: Vec::new(),
            data: Vec::new(),
        }
    }
}

thread_local! {
    static HOLDING: Cell<bool> = const { Cell::new(false) };
    static OUTBOX: RefCell<Outbox> = const { RefCell::new(Outbox::new()) };
}

/// The session's notifier, once the filesystem is mounted (`set_notifier`).
static NOTIFIER: std::sync::OnceLock<fuser::Notifier> = std::sync::OnceLock::new();

/// Where notifications to the kernel go (set once, when the session exists).
pub fn set_notifier(n: fuser::Notifier) {
    let _ = NOTIFIER.set(n);
}

/// Tell the kernel at once (never held: before the reply of the request that changed them)
/// that node `ino`'s attributes changed. Besides marking them stale, this raises the
/// inode's attribute version, so that the kernel discards attributes answered before the
/// change to requests it sent before this notice; a directory's own marking after a mkdir,
/// rmdir or rename (fs/fuse/dir.c, `fuse_dir_changed`) does not, and such a reply stored after
/// it leaves the old link count cached (`scripts/nlink-race`, "dir"). Attributes only: takes
/// no inode lock, so it cannot wait for the request being answered.
pub fn attributes_changed(ino: u64) {
    if let Some(n) = NOTIFIER.get() {
        // ENOENT: the kernel has no such inode cached; nothing to mark.
        let _ = n.inval_inode(INodeNo(ino), -1, 0);
    }
}

/// Read data up to this size is copied to be sent after the lock; larger data is sent at once.
const COPY_LIMIT: usize = 64 * 1024;

/// An outbox whose data buffer grew beyond this (many replies in one hold) gives it back.
const DATA_KEPT: usize = 4 * COPY_LIMIT;

/// While alive, replies made on this thread wait in its outbox; dropping it sends them.
pub struct Held {
    outer: bool,
}

/// Keep this thread's replies until the returned guard drops (nests).
pub fn hold() -> Held {
    Held {
        outer: !HOLDING.replace(true),
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.outer {
            return;
        }
        HOLDING.set(false);
        let mut out = OUTBOX.replace(Outbox::new());
        let Outbox { sends, data } = &mut out;
        for p in sends.drain(..) {
            match p {
                Pending::Data(r, at) => r.data(&data[at]),
                Pending::Other(f) => f(),
            }
        }
        data.clear();
        if data.capacity() > DATA_KEPT {
            *data = Vec::new();
        }
        // Nothing was held while they went out (HOLDING was off): the emptied buffers go back.
        OUTBOX.with_borrow_mut(|o| {
            if o.sends.is_empty() && o.data.is_empty() {
                *o = out;
            }
        });
    }
}

fn send(f: impl FnOnce() + 'static) {
    if HOLDING.get() {
        OUTBOX.with_borrow_mut(|o| o.sends.push(Pending::Other(Box::new(f))));
    } else {
        f();
    }
}

macro_rules! with_error {
    ($name:ident, $inner:ty) => {
        #[derive(Debug)]
        pub struct $name($inner);

        impl From<$inner> for $name {
            fn from(r: $inner) -> $name {
                $name(r)
            }
        }

        impl $name {
            pub fn error(self, e: Errno) {
                let r = self.0;
                send(move || r.error(e));
            }
        }
    };
}

with_error!(ReplyEmpty, fuser::ReplyEmpty);
with_error!(ReplyData, fuser::ReplyData);
with_error!(ReplyEntry, fuser::ReplyEntry);
with_error!(ReplyAttr, fuser::ReplyAttr);
with_error!(ReplyOpen, fuser::ReplyOpen);
with_error!(ReplyWrite, fuser::ReplyWrite);
with_error!(ReplyStatfs, fuser::ReplyStatfs);
with_error!(ReplyCreate, fuser::ReplyCreate);
with_error!(ReplyLock, fuser::ReplyLock);
with_error!(ReplyBmap, fuser::ReplyBmap);
with_error!(ReplyXattr, fuser::ReplyXattr);
with_error!(ReplyLseek, fuser::ReplyLseek);
with_error!(ReplyDirectory, fuser::ReplyDirectory);
with_error!(ReplyDirectoryPlus, fuser::ReplyDirectoryPlus);

impl ReplyEmpty {
    pub fn ok(self) {
        let r = self.0;
        send(move || r.ok());
    }
}

impl ReplyData {
    /// While replies are held, small data is copied into the outbox and sent after the
    /// lock; large data, or any when nothing is held, is sent at once without a copy.
    pub fn data(self, data: &[u8]) {
        if HOLDING.get() && data.len() <= COPY_LIMIT {
            let r = self.0;
            OUTBOX.with_borrow_mut(|o| {
                let start = o.data.len();
                o.data.extend_from_slice(data);
                o.sends.push(Pending::Data(r, start..start + data.len()));
            });
        } else {
            self.0.data(data);
        }
    }
}

impl ReplyXattr {
    pub fn size(self, size: u32) {
        let r = self.0;
        send(move || r.size(size));
    }

    /// As `ReplyData::data` (a value is copied with its reply: xattrs are seldom read).
    pub fn data(self, data: &[u8]) {
        let r = self.0;
        if HOLDING.get() && data.len() <= COPY_LIMIT {
            let copy = data.to_vec();
            send(move || r.data(&copy));
        } else {
            r.data(data);
        }
    }
}

impl ReplyEntry {
    pub fn entry(self, ttl: &Duration, attr: &FileAttr, generation: Generation) {
        let (r, ttl, attr) = (self.0, *ttl, *attr);
        send(move || r.entry(&ttl, &attr, generation));
    }
}

impl ReplyAttr {
    pub fn attr(self, ttl: &Duration, attr: &FileAttr) {
        let (r, ttl, attr) = (self.0, *ttl, *attr);
        send(move || r.attr(&ttl, &attr));
    }
}

impl ReplyOpen {
    pub fn opened(self, fh: FileHandle, flags: FopenFlags) {
        let r = self.0;
        send(move || r.opened(fh, flags));
    }
}

impl ReplyWrite {
    pub fn written(self, size: u32) {
        let r = self.0;
        send(move || r.written(size));
    }
}

impl ReplyStatfs {
    #[allow(clippy::too_many_arguments)]
    pub fn statfs(
        self,
        blocks: u64,
        bfree: u64,
        bavail: u64,
        files: u64,
        ffree: u64,
        bsize: u32,
        namelen: u32,
        frsize: u32,
    ) {
        let r = self.0;
        send(move || r.statfs(blocks, bfree, bavail, files, ffree, bsize, namelen, frsize));
    }
}

impl ReplyCreate {
    pub fn created(
        self,
        ttl: &Duration,
        attr: &FileAttr,
        generation: Generation,
        fh: FileHandle,
        flags: FopenFlags,
    ) {
        let (r, ttl, attr) = (self.0, *ttl, *attr);
        send(move || r.created(&ttl, &attr, generation, fh, flags));
    }
}

impl ReplyLock {
    pub fn locked(self, start: u64, end: u64, typ: i32, pid: u32) {
        let r = self.0;
        send(move || r.locked(start, end, typ, pid));
    }
}

impl ReplyBmap {
    pub fn bmap(self, block: u64) {
        let r = self.0;
        send(move || r.bmap(block));
    }
}

impl ReplyLseek {
    pub fn offset(self, offset: i64) {
        let r = self.0;
        send(move || r.offset(offset));
    }
}

impl ReplyDirectory {
    /// Add an entry to the reply's buffer (nothing is sent); true when the buffer is full.
    #[must_use]
    pub fn add(&mut self, ino: INodeNo, offset: u64, kind: FileType, name: &OsStr) -> bool {
        self.0.add(ino, offset, kind, name)
    }

    pub fn ok(self) {
        let r = self.0;
        send(move || r.ok());
    }
}

impl ReplyDirectoryPlus {
    /// Add an entry to the reply's buffer (nothing is sent); true when the buffer is full.
    #[must_use]
    pub fn add(
        &mut self,
        ino: INodeNo,
        offset: u64,
        name: &OsStr,
        ttl: &Duration,
        attr: &FileAttr,
        generation: Generation,
    ) -> bool {
        self.0.add(ino, offset, name, ttl, attr, generation)
    }

    pub fn ok(self) {
        let r = self.0;
        send(move || r.ok());
    }
}
