//! Stress tests on lua/luafs.lua: a file larger than 1 GiB streamed through with checksums,
//! 100,000 files created, statted, renamed and removed, trees deeper than 200 levels (and
//! longer than PATH_MAX), 255-byte non-UTF-8 names in bulk, and a concurrent variant of the
//! differential test: several workers on one mount at once, compared with a reference
//! directory on tmpfs (where a hard link is refused by the FUSE kernel module's own race, see
//! `kernel_nlink_zero`, the link is retried after a refresh and the event counted).
//!
//! FLUFS_STRESS_OPS sets the operations per concurrent worker (default 5000).
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{Mount, RefDir, Rng, cpath, last_errno, shipped, statx_nlink};

fn luafs() -> Mount {
    Mount::new(&shipped("luafs.lua"), &[])
}

// ---------------------------------------------------------------------------------------------
// helpers

/// Deterministic pseudo-random bytes for block `seed`.
fn fill(seed: u64, buf: &mut [u8]) {
    let mut r = Rng::new(seed ^ 0x5eed_f00d);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&r.next().to_le_bytes());
    }
    let rest = chunks.into_remainder();
    let last = r.next().to_le_bytes();
    let n = rest.len();
    rest.copy_from_slice(&last[..n]);
}

fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill(seed, &mut v);
    v
}

/// A fast 64-bit checksum (FNV-style over 8-byte words).
fn checksum(data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ data.len() as u64;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        h = (h ^ u64::from_le_bytes(w.try_into().unwrap()))
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(23);
    }
    for &b in words.remainder() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn statvfs(p: &Path) -> libc::statvfs {
    let mut v: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(cpath(p).as_ptr(), &mut v) }, 0);
    v
}

fn errno_of(e: std::io::Error) -> i32 {
    e.raw_os_error()
        .unwrap_or_else(|| panic!("error without errno: {e}"))
}

fn names(dir: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name())
        .collect();
    v.sort();
    v
}

fn openat(dir: &File, name: &[u8], flags: i32, mode: u32) -> std::io::Result<File> {
    let c = CString::new(name).unwrap();
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(unsafe { File::from_raw_fd(fd) })
    }
}

fn mkdirat(dir: &File, name: &[u8]) -> std::io::Result<()> {
    let c = CString::new(name).unwrap();
    if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn unlinkat(dir: &File, name: &[u8], flags: i32) -> std::io::Result<()> {
    let c = CString::new(name).unwrap();
    if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// one large file

#[test]
fn file_over_one_gib_streams_through_with_matching_checksums() {
    if !common::fuse_available() {
        return;
    }
    const BLOCK: usize = 1 << 20;
    const NBLOCKS: usize = 1024;
    const TAIL: usize = 54_321;
    let block_len = |i: usize| if i < NBLOCKS { BLOCK } else { TAIL };
    let total = (NBLOCKS * BLOCK + TAIL) as u64;
    let m = luafs();
    let path = m.path("big");
    let free0 = statvfs(&m.mnt).f_bfree;

    // Write 1 GiB + TAIL in 1 MiB writes, one checksum per block.
    let start = Instant::now();
    let mut want = Vec::with_capacity(NBLOCKS + 1);
    let mut buf = vec![0u8; BLOCK];
    {
        let mut f = File::create(&path).unwrap();
        for i in 0..=NBLOCKS {
            let b = &mut buf[..block_len(i)];
            fill(i as u64, b);
            want.push(checksum(b));
            f.write_all(b)
                .unwrap_or_else(|e| panic!("write of block {i}: {e}"));
        }
        f.sync_all().unwrap();
    }
    let wrote = start.elapsed();
    assert_eq!(fs::metadata(&path).unwrap().len(), total);
    let used = free0 - statvfs(&m.mnt).f_bfree;
    assert!(
        used * 4096 >= total,
        "statfs shows {used} blocks in use for {total} bytes"
    );

    // Read it back sequentially in odd-sized reads (not aligned to blocks or chunks).
    let start = Instant::now();
    let mut f = File::open(&path).unwrap();
    let mut rd = vec![0u8; BLOCK + 777];
    let mut pending: Vec<u8> = Vec::with_capacity(3 * BLOCK);
    let mut got = Vec::with_capacity(NBLOCKS + 1);
    let mut expect = vec![0u8; BLOCK];
    let mut read_total = 0u64;
    loop {
        let n = f.read(&mut rd).unwrap();
        read_total += n as u64;
        pending.extend_from_slice(&rd[..n]);
        while got.len() <= NBLOCKS && pending.len() >= block_len(got.len()) {
            let i = got.len();
            let len = block_len(i);
            let sum = checksum(&pending[..len]);
            if sum != want[i] {
                let e = &mut expect[..len];
                fill(i as u64, e);
                let at = pending[..len]
                    .iter()
                    .zip(e.iter())
                    .position(|(a, b)| a != b);
                panic!(
                    "block {i}: checksum {sum:016x}, written {:016x}; first differing byte at file offset {:?}",
                    want[i],
                    at.map(|a| i * BLOCK + a)
                );
            }
            got.push(sum);
            pending.drain(..len);
        }
        if n == 0 {
            break;
        }
    }
    let read = start.elapsed();
    assert_eq!(read_total, total, "bytes read back");
    assert!(pending.is_empty(), "{} bytes past the end", pending.len());
    assert_eq!(got, want, "block checksums");

    // Random reads across chunk boundaries.
    let mut r = Rng::new(42);
    for _ in 0..64 {
        let off = r.below(total - 1);
        let len = (1 + r.below(400_000)).min(total - off) as usize;
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, off).unwrap();
        let first = off as usize / BLOCK;
        let last = (off as usize + len - 1) / BLOCK;
        let mut exp = Vec::new();
        for i in first..=last {
            exp.extend_from_slice(&data(i as u64, block_len(i)));
        }
        let s = off as usize - first * BLOCK;
        assert!(
            b[..] == exp[s..s + len],
            "pread of {len} bytes at {off} differs"
        );
    }
    drop(f);
    fs::remove_file(&path).unwrap();
    let free1 = statvfs(&m.mnt).f_bfree;
    assert_eq!(free1, free0, "space not given back after unlink");
    eprintln!(
        "{total} bytes: written in {wrote:?} ({:.0} MiB/s), read in {read:?} ({:.0} MiB/s)",
        total as f64 / (1 << 20) as f64 / wrote.as_secs_f64(),
        total as f64 / (1 << 20) as f64 / read.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// many files

#[test]
fn hundred_thousand_files_created_statted_renamed_and_removed() {
    if !common::fuse_available() {
        return;
    }
    const N: usize = 100_000;
    let m = luafs();
    let dir = m.path("many");
    fs::create_dir(&dir).unwrap();
    let ffree0 = statvfs(&m.mnt).f_ffree;
    let start = Instant::now();
    for i in 0..N {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(format!("f{i:06}")))
            .unwrap_or_else(|e| panic!("create #{i}: {e}"));
        if i % 1000 == 0 {
            (&f).write_all(format!("content of {i}").as_bytes())
                .unwrap();
        }
    }
    let created = start.elapsed();
    assert_eq!(statvfs(&m.mnt).f_ffree, ffree0 - N as u64, "statfs f_ffree");
    let listed = names(&dir);
    assert_eq!(listed.len(), N);
    // A sample: every 97th file, plus the ones with content.
    let mut inos = BTreeSet::new();
    for i in (0..N).step_by(97) {
        let md = fs::symlink_metadata(dir.join(format!("f{i:06}"))).unwrap();
        assert!(md.is_file());
        assert_eq!(md.nlink(), 1);
        assert!(inos.insert(md.ino()), "inode {} reused", md.ino());
    }
    for i in (0..N).step_by(1000) {
        assert_eq!(
            fs::read_to_string(dir.join(format!("f{i:06}"))).unwrap(),
            format!("content of {i}")
        );
    }
    // Rename every tenth file.
    for i in (0..N).step_by(10) {
        fs::rename(
            dir.join(format!("f{i:06}")),
            dir.join(format!("renamed-{i}")),
        )
        .unwrap();
    }
    let listed = names(&dir);
    assert_eq!(listed.len(), N, "entries after renames");
    assert_eq!(
        listed
            .iter()
            .filter(|n| n.as_bytes().starts_with(b"renamed-"))
            .count(),
        N / 10
    );
    assert_eq!(
        fs::read_to_string(dir.join("renamed-5000")).unwrap(),
        "content of 5000"
    );
    // Remove everything.
    let start_rm = Instant::now();
    for n in &listed {
        fs::remove_file(dir.join(n)).unwrap_or_else(|e| panic!("unlink {n:?}: {e}"));
    }
    let removed = start_rm.elapsed();
    assert!(
        names(&dir).is_empty(),
        "directory not empty after removing all"
    );
    assert_eq!(fs::metadata(&dir).unwrap().nlink(), 2);
    fs::remove_dir(&dir).unwrap();
    assert_eq!(
        statvfs(&m.mnt).f_ffree,
        ffree0 + 1,
        "statfs f_ffree after removal"
    );
    eprintln!("{N} files: created in {created:?}, removed in {removed:?}");
}

// ---------------------------------------------------------------------------------------------
// deep trees

#[test]
fn tree_300_levels_deep_created_moved_and_removed_by_path() {
    if !common::fuse_available() {
        return;
    }
    const DEPTH: usize = 300;
    let m = luafs();
    let mut p = m.path("top");
    fs::create_dir(&p).unwrap();
    for i in 1..DEPTH {
        p.push(format!("l{i}"));
        fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir level {i}: {e}"));
    }
    let leaf = p.join("leaf");
    fs::write(&leaf, b"at the bottom").unwrap();
    let md = fs::metadata(&p).unwrap();
    assert!(md.is_dir());
    assert_eq!(md.nlink(), 2, "deepest dir");
    assert_eq!(fs::read(&leaf).unwrap(), b"at the bottom");
    let leaf_ino = fs::metadata(&leaf).unwrap().ino();
    // Every level has exactly one subdirectory.
    let mut q = m.path("top");
    for i in 1..DEPTH {
        assert_eq!(fs::metadata(&q).unwrap().nlink(), 3, "level {i} nlink");
        q.push(format!("l{i}"));
    }
    // Moving the top moves the whole tree; the leaf keeps its inode.
    fs::rename(m.path("top"), m.path("moved")).unwrap();
    let rel = leaf.strip_prefix(m.path("top")).unwrap().to_path_buf();
    let moved_leaf = m.path("moved").join(&rel);
    assert_eq!(fs::read(&moved_leaf).unwrap(), b"at the bottom");
    assert_eq!(fs::metadata(&moved_leaf).unwrap().ino(), leaf_ino);
    // A relative symlink climbing all the way up.
    let up = "../".repeat(DEPTH) + "marker";
    fs::write(m.path("marker"), b"top level").unwrap();
    std::os::unix::fs::symlink(&up, moved_leaf.with_file_name("up")).unwrap();
    assert_eq!(
        fs::read(moved_leaf.with_file_name("up")).unwrap(),
        b"top level"
    );
    fs::remove_dir_all(m.path("moved")).unwrap();
    assert_eq!(names(&m.mnt), vec![OsString::from("marker")]);
    assert_eq!(fs::metadata(&m.mnt).unwrap().nlink(), 2);
}

#[test]
fn tree_longer_than_path_max_through_at_calls() {
    if !common::fuse_available() {
        return;
    }
    // 400 levels of 24-byte names: a path of ~10,000 bytes, walked with openat/mkdirat.
    const DEPTH: usize = 400;
    let m = luafs();
    let name = |i: usize| format!("level-{i:04}-padding-xyz").into_bytes();
    let mut fds = vec![File::open(&m.mnt).unwrap()];
    for i in 0..DEPTH {
        let cur = fds.last().unwrap();
        mkdirat(cur, &name(i)).unwrap_or_else(|e| panic!("mkdirat level {i}: {e}"));
        let next = openat(cur, &name(i), libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .unwrap_or_else(|e| panic!("openat level {i}: {e}"));
        fds.push(next);
    }
    let bottom = fds.last().unwrap();
    let mut f = openat(bottom, b"leaf", libc::O_CREAT | libc::O_RDWR, 0o644).unwrap();
    f.write_all(b"deeper than PATH_MAX").unwrap();
    let mut s = String::new();
    openat(bottom, b"leaf", libc::O_RDONLY, 0)
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "deeper than PATH_MAX");
    // The full path is too long for path-based calls.
    let mut full = m.mnt.clone();
    for i in 0..DEPTH {
        full.push(OsStr::from_bytes(&name(i)));
    }
    assert!(full.as_os_str().len() > 4096);
    assert_eq!(
        fs::metadata(full.join("leaf"))
            .map_err(errno_of)
            .unwrap_err(),
        libc::ENAMETOOLONG
    );
    // Rename in the middle of the chain through *at calls; the leaf stays reachable.
    let mid = DEPTH / 2;
    let c_old = CString::new(name(mid)).unwrap();
    let c_new = CString::new(b"renamed-middle".to_vec()).unwrap();
    let parent = &fds[mid];
    assert_eq!(
        unsafe {
            libc::renameat(
                parent.as_raw_fd(),
                c_old.as_ptr(),
                parent.as_raw_fd(),
                c_new.as_ptr(),
            )
        },
        0,
        "renameat: errno {}",
        last_errno()
    );
    let mut s = String::new();
    openat(bottom, b"leaf", libc::O_RDONLY, 0)
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(
        s, "deeper than PATH_MAX",
        "leaf after renaming a middle level"
    );
    drop(f);
    // Remove bottom-up.
    unlinkat(bottom, b"leaf", 0).unwrap();
    for i in (0..DEPTH).rev() {
        let n = if i == mid {
            b"renamed-middle".to_vec()
        } else {
            name(i)
        };
        fds.pop();
        unlinkat(fds.last().unwrap(), &n, libc::AT_REMOVEDIR)
            .unwrap_or_else(|e| panic!("rmdir level {i}: {e}"));
    }
    assert!(names(&m.mnt).is_empty());
}

// ---------------------------------------------------------------------------------------------
// long, non-UTF-8 names in bulk

/// A 255-byte name for index i, full of bytes that are not valid UTF-8 (never '/' or NUL).
fn raw_name(i: usize, salt: u8) -> Vec<u8> {
    let mut v = format!("{i:05}-").into_bytes();
    let mut r = Rng::new(i as u64 * 31 + salt as u64);
    while v.len() < 255 {
        let b = (r.next() % 255) as u8 + 1;
        if b != b'/' {
            v.push(b);
        }
    }
    v
}

#[test]
fn two_thousand_255_byte_non_utf8_names() {
    if !common::fuse_available() {
        return;
    }
    const N: usize = 2000;
    let m = luafs();
    let dir = m.path("names");
    fs::create_dir(&dir).unwrap();
    let mut want = BTreeSet::new();
    for i in 0..N {
        let n = raw_name(i, 1);
        assert!(std::str::from_utf8(&n).is_err() || i > 0);
        fs::write(dir.join(OsStr::from_bytes(&n)), format!("{i}"))
            .unwrap_or_else(|e| panic!("create name #{i}: {e}"));
        want.insert(n);
    }
    let got: BTreeSet<Vec<u8>> = names(&dir).into_iter().map(|n| n.into_vec()).collect();
    assert!(
        got == want,
        "listing differs ({} listed, {} created)",
        got.len(),
        want.len()
    );
    for i in (0..N).step_by(7) {
        let n = raw_name(i, 1);
        assert_eq!(
            fs::read_to_string(dir.join(OsStr::from_bytes(&n))).unwrap(),
            format!("{i}")
        );
    }
    // Rename every file to another 255-byte name; a nested chain of such directories.
    for i in 0..N {
        fs::rename(
            dir.join(OsStr::from_bytes(&raw_name(i, 1))),
            dir.join(OsStr::from_bytes(&raw_name(i, 2))),
        )
        .unwrap_or_else(|e| panic!("rename name #{i}: {e}"));
    }
    let got: BTreeSet<Vec<u8>> = names(&dir).into_iter().map(|n| n.into_vec()).collect();
    let want: BTreeSet<Vec<u8>> = (0..N).map(|i| raw_name(i, 2)).collect();
    assert!(got == want, "listing after renames differs");
    let mut p = dir.clone();
    for i in 0..15 {
        p.push(OsStr::from_bytes(&raw_name(i, 3)));
        fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir nested #{i}: {e}"));
    }
    fs::write(p.join("leaf"), b"nested").unwrap();
    assert_eq!(fs::read(p.join("leaf")).unwrap(), b"nested");
    fs::remove_dir_all(&dir).unwrap();
    assert!(names(&m.mnt).is_empty());
}

// ---------------------------------------------------------------------------------------------
// concurrent differential

const WORKERS: usize = 4;
const NAMES: [&str; 4] = ["a", "b", "c", "d"];
const XATTRS: [&str; 2] = ["user.x", "user.y"];
const RECORD: usize = 32;
const SLOTS: usize = 64;
const SLOT: usize = 64;

fn ops_per_worker() -> usize {
    std::env::var("FLUFS_STRESS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        path: String,
        excl: bool,
        trunc: bool,
        mode: u32,
    },
    Write {
        path: String,
        off: u64,
        len: usize,
        seed: u64,
        append: bool,
    },
    Read {
        path: String,
        off: u64,
        len: usize,
    },
    Truncate {
        path: String,
        len: u64,
    },
    Mkdir {
        path: String,
        mode: u32,
    },
    Rmdir {
        path: String,
    },
    Unlink {
        path: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Link {
        from: String,
        to: String,
    },
    Symlink {
        target: String,
        path: String,
    },
    Readlink {
        path: String,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    SetMtime {
        path: String,
        sec: i64,
        nsec: i64,
    },
    SetXattr {
        path: String,
        name: &'static str,
        value: Vec<u8>,
    },
    GetXattr {
        path: String,
        name: &'static str,
    },
    RemoveXattr {
        path: String,
        name: &'static str,
    },
    OpenUnlinkRead {
        path: String,
    },
    Stat {
        path: String,
    },
    List {
        path: String,
    },
}

type Outcome = Result<String, i32>;

fn apply(root: &Path, op: &Op) -> Outcome {
    let p = |s: &str| root.join(s);
    let unit = |r: std::io::Result<()>| r.map(|_| String::new()).map_err(errno_of);
    let rc = |r: libc::c_int| {
        if r == 0 {
            Ok(String::new())
        } else {
            Err(last_errno())
        }
    };
    match op {
        Op::Create {
            path,
            excl,
            trunc,
            mode,
        } => {
            let mut o = OpenOptions::new();
            o.write(true).mode(*mode).truncate(*trunc);
            if *excl {
                o.create_new(true);
            } else {
                o.create(true);
            }
            unit(o.open(p(path)).map(|_| ()))
        }
        Op::Write {
            path,
            off,
            len,
            seed,
            append,
        } => {
            let d = data(*seed, *len);
            if *append {
                let mut f = OpenOptions::new()
                    .append(true)
                    .open(p(path))
                    .map_err(errno_of)?;
                unit(f.write_all(&d))
            } else {
                let f = OpenOptions::new()
                    .write(true)
                    .open(p(path))
                    .map_err(errno_of)?;
                unit(f.write_all_at(&d, *off))
            }
        }
        Op::Read { path, off, len } => {
            let f = File::open(p(path)).map_err(errno_of)?;
            let mut b = vec![0u8; *len];
            let mut got = 0;
            while got < *len {
                let n = f
                    .read_at(&mut b[got..], off + got as u64)
                    .map_err(errno_of)?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            Ok(format!("{got} bytes {:016x}", checksum(&b[..got])))
        }
        Op::Truncate { path, len } => {
            rc(unsafe { libc::truncate(cpath(&p(path)).as_ptr(), *len as i64) })
        }
        Op::Mkdir { path, mode } => unit(fs::DirBuilder::new().mode(*mode).create(p(path))),
        Op::Rmdir { path } => unit(fs::remove_dir(p(path))),
        Op::Unlink { path } => unit(fs::remove_file(p(path))),
        Op::Rename { from, to } => unit(fs::rename(p(from), p(to))),
        Op::Link { from, to } => unit(fs::hard_link(p(from), p(to))),
        Op::Symlink { target, path } => unit(std::os::unix::fs::symlink(target, p(path))),
        Op::Readlink { path } => fs::read_link(p(path))
            .map(|t| t.to_string_lossy().into_owned())
            .map_err(errno_of),
        Op::Chmod { path, mode } => unit(fs::set_permissions(
            p(path),
            fs::Permissions::from_mode(*mode),
        )),
        Op::SetMtime { path, sec, nsec } => {
            let t = [
                libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_OMIT,
                },
                libc::timespec {
                    tv_sec: *sec,
                    tv_nsec: *nsec,
                },
            ];
            rc(unsafe {
                libc::utimensat(libc::AT_FDCWD, cpath(&p(path)).as_ptr(), t.as_ptr(), 0)
            })?;
            let md = fs::metadata(p(path)).map_err(errno_of)?;
            Ok(format!("mtime {}.{:09}", md.mtime(), md.mtime_nsec()))
        }
        Op::SetXattr { path, name, value } => {
            let n = CString::new(*name).unwrap();
            rc(unsafe {
                libc::setxattr(
                    cpath(&p(path)).as_ptr(),
                    n.as_ptr(),
                    value.as_ptr() as *const _,
                    value.len(),
                    0,
                )
            })
        }
        Op::GetXattr { path, name } => {
            let n = CString::new(*name).unwrap();
            let mut b = [0u8; 256];
            let r = unsafe {
                libc::getxattr(
                    cpath(&p(path)).as_ptr(),
                    n.as_ptr(),
                    b.as_mut_ptr() as *mut _,
                    b.len(),
                )
            };
            if r < 0 {
                Err(last_errno())
            } else {
                Ok(format!("{:?}", &b[..r as usize]))
            }
        }
        Op::RemoveXattr { path, name } => {
            let n = CString::new(*name).unwrap();
            rc(unsafe { libc::removexattr(cpath(&p(path)).as_ptr(), n.as_ptr()) })
        }
        Op::OpenUnlinkRead { path } => {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(p(path))
                .map_err(errno_of)?;
            fs::remove_file(p(path)).map_err(|e| 1000 + errno_of(e))?;
            f.write_all_at(b"after unlink", 3)
                .map_err(|e| 2000 + errno_of(e))?;
            let mut all = Vec::new();
            (&f).read_to_end(&mut all).map_err(|e| 3000 + errno_of(e))?;
            Ok(format!("{} bytes {:016x}", all.len(), checksum(&all)))
        }
        Op::Stat { path } => {
            let md = fs::symlink_metadata(p(path)).map_err(errno_of)?;
            let size = if md.is_dir() { 0 } else { md.len() };
            Ok(format!(
                "mode {:o} nlink {} size {size}",
                md.mode(),
                md.nlink()
            ))
        }
        Op::List { path } => {
            let mut v: Vec<String> = fs::read_dir(p(path))
                .map_err(errno_of)?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_, _>>()
                .map_err(errno_of)?;
            v.sort();
            Ok(v.join(","))
        }
    }
}

/// Paths under `sub` in the reference tree (relative to the reference root).
struct Existing {
    all: Vec<String>,
    dirs: Vec<String>,
    files: Vec<String>,
}

fn existing(root: &Path, sub: &str) -> Existing {
    let mut ex = Existing {
        all: vec![],
        dirs: vec![sub.to_string()],
        files: vec![],
    };
    let mut stack = vec![sub.to_string()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = fs::read_dir(root.join(&rel)) else {
            continue;
        };
        let mut ns: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ns.sort();
        for n in ns {
            let r = format!("{rel}/{n}");
            match fs::symlink_metadata(root.join(&r)) {
                Ok(md) if md.is_dir() => {
                    ex.dirs.push(r.clone());
                    stack.push(r.clone());
                }
                Ok(md) if md.is_file() => ex.files.push(r.clone()),
                _ => {}
            }
            ex.all.push(r);
        }
    }
    ex
}

struct Gen {
    rng: Rng,
    sub: String,
}

impl Gen {
    fn pick<'a>(&mut self, v: &'a [String]) -> Option<&'a String> {
        if v.is_empty() {
            None
        } else {
            Some(&v[self.rng.below(v.len() as u64) as usize])
        }
    }
    fn random_path(&mut self) -> String {
        let depth = 1 + self.rng.below(3);
        let mut s = self.sub.clone();
        for _ in 0..depth {
            s.push('/');
            s.push_str(NAMES[self.rng.below(NAMES.len() as u64) as usize]);
        }
        s
    }
    fn path(&mut self, ex: &Existing) -> String {
        if self.rng.chance(60)
            && let Some(p) = self.pick(&ex.all)
        {
            return p.clone();
        }
        self.random_path()
    }
    fn file(&mut self, ex: &Existing) -> String {
        if self.rng.chance(70)
            && let Some(p) = self.pick(&ex.files)
        {
            return p.clone();
        }
        self.path(ex)
    }
    fn new_path(&mut self, ex: &Existing) -> String {
        if self.rng.chance(60)
            && let Some(d) = self.pick(&ex.dirs).cloned()
            && d.matches('/').count() < 3
        {
            return format!("{d}/{}", NAMES[self.rng.below(4) as usize]);
        }
        self.random_path()
    }
    fn op(&mut self, ex: &Existing) -> Op {
        let r = &mut self.rng;
        let big = r.chance(20);
        let len = 1 + r.below(if big { 150_000 } else { 4000 }) as usize;
        let far = r.chance(20);
        let off = r.below(if far { 300_000 } else { 8192 });
        let mode = 0o700 | r.below(0o100) as u32;
        let seed = r.next();
        let which = r.below(100);
        match which {
            0..=9 => Op::Create {
                path: self.new_path(ex),
                excl: self.rng.chance(30),
                trunc: self.rng.chance(30),
                mode,
            },
            10..=24 => Op::Write {
                path: self.file(ex),
                off,
                len,
                seed,
                append: self.rng.chance(20),
            },
            25..=32 => Op::Read {
                path: self.file(ex),
                off,
                len,
            },
            33..=37 => Op::Truncate {
                path: self.file(ex),
                len: off,
            },
            38..=44 => Op::Mkdir {
                path: self.new_path(ex),
                mode: 0o755,
            },
            45..=49 => Op::Rmdir {
                path: self.path(ex),
            },
            50..=55 => Op::Unlink {
                path: self.path(ex),
            },
            56..=64 => {
                let from = self.path(ex);
                let to = if self.rng.chance(50) {
                    self.path(ex)
                } else {
                    self.new_path(ex)
                };
                Op::Rename { from, to }
            }
            65..=69 => Op::Link {
                from: self.file(ex),
                to: self.new_path(ex),
            },
            70..=73 => {
                let target = NAMES[self.rng.below(4) as usize].to_string();
                Op::Symlink {
                    target,
                    path: self.new_path(ex),
                }
            }
            74..=75 => Op::Readlink {
                path: self.path(ex),
            },
            76..=78 => Op::Chmod {
                path: self.path(ex),
                mode,
            },
            79..=81 => Op::SetMtime {
                path: self.path(ex),
                sec: self.rng.below(2_000_000_000) as i64,
                nsec: self.rng.below(1_000_000_000) as i64,
            },
            82..=84 => Op::SetXattr {
                path: self.file(ex),
                name: XATTRS[self.rng.below(2) as usize],
                value: data(seed, (seed % 40) as usize),
            },
            85..=86 => Op::GetXattr {
                path: self.file(ex),
                name: XATTRS[self.rng.below(2) as usize],
            },
            87 => Op::RemoveXattr {
                path: self.file(ex),
                name: XATTRS[self.rng.below(2) as usize],
            },
            88..=89 => Op::OpenUnlinkRead {
                path: self.file(ex),
            },
            90..=95 => Op::Stat {
                path: self.path(ex),
            },
            _ => Op::List {
                path: self.path(ex),
            },
        }
    }
}

/// Whether the kernel's cached link count of `path` is 0 while the file is there: true after a
/// FUSE kernel race, not a filesystem's fault. An UNLINK's (or a rename's over a name) reply
/// has the kernel drop the cached count by one in the unlinking task, after it wakes; another
/// task's GETATTR, LOOKUP or READDIRPLUS, sent before that and answered after the unlink, can
/// store the already lower count first, and the drop then takes it to 0. `link(2)` refuses a
/// source whose cached count is 0 (ENOENT) without asking the filesystem, until an attribute
/// refresh. libfuse's passthrough_ll and memfs do the same (`scripts/nlink-race`). This reads
/// the cached count (`AT_STATX_DONT_SYNC`), then refreshes it (`AT_STATX_FORCE_SYNC`).
fn kernel_nlink_zero(path: &Path) -> bool {
    statx_nlink(path, libc::AT_STATX_DONT_SYNC) == Some(0)
        && statx_nlink(path, libc::AT_STATX_FORCE_SYNC).is_some()
}

/// path -> description of everything comparable (not times, not inode numbers).
fn snapshot(root: &Path, skip: &dyn Fn(&str) -> bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inos: BTreeMap<u64, String> = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let mut ns: Vec<OsString> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name())
            .collect();
        ns.sort();
        for n in ns {
            let r = if rel.is_empty() {
                n.to_string_lossy().into_owned()
            } else {
                format!("{rel}/{}", n.to_string_lossy())
            };
            if skip(&r) {
                continue;
            }
            let full = root.join(&r);
            let md = fs::symlink_metadata(&full).unwrap();
            let mut xs = Vec::new();
            for x in XATTRS {
                let c = CString::new(x).unwrap();
                let mut b = [0u8; 256];
                let k = unsafe {
                    libc::lgetxattr(
                        cpath(&full).as_ptr(),
                        c.as_ptr(),
                        b.as_mut_ptr() as *mut _,
                        b.len(),
                    )
                };
                if k >= 0 {
                    xs.push(format!("{x}={:016x}", checksum(&b[..k as usize])));
                }
            }
            let desc = if md.is_dir() {
                stack.push(r.clone());
                format!("dir {:o} nlink {} {xs:?}", md.mode(), md.nlink())
            } else {
                let group = inos.entry(md.ino()).or_insert_with(|| r.clone()).clone();
                if md.file_type().is_symlink() {
                    format!(
                        "symlink {:?} nlink {} group {group}",
                        fs::read_link(&full).unwrap(),
                        md.nlink()
                    )
                } else {
                    let b = fs::read(&full).unwrap();
                    format!(
                        "file {:o} nlink {} size {} sum {:016x} {xs:?} group {group}",
                        md.mode(),
                        md.nlink(),
                        md.len(),
                        checksum(&b)
                    )
                }
            };
            out.insert(r, desc);
        }
    }
    out
}

/// A reference directory on tmpfs (/dev/shm), removed on drop.
fn record(w: usize, i: usize) -> Vec<u8> {
    let mut r = format!("worker {w} op {i:08}").into_bytes();
    r.resize(RECORD - 1, b'.');
    r.push(b'\n');
    r
}

/// The deterministic part of a worker's shared-area actions, applied to `root`.
fn shared_step(root: &Path, w: usize, i: usize) -> Result<(), String> {
    let s = root.join("shared");
    if i.is_multiple_of(5) {
        let mut f = OpenOptions::new()
            .append(true)
            .open(s.join("log"))
            .map_err(|e| format!("open log: {e}"))?;
        f.write_all(&record(w, i))
            .map_err(|e| format!("append: {e}"))?;
    }
    if i.is_multiple_of(7) {
        let f = OpenOptions::new()
            .write(true)
            .open(s.join("region"))
            .map_err(|e| format!("open region: {e}"))?;
        let off = (w * SLOTS + (i / 7) % SLOTS) * SLOT;
        f.write_all_at(&data((w * 1_000_000 + i) as u64, SLOT), off as u64)
            .map_err(|e| format!("pwrite region: {e}"))?;
    }
    if i.is_multiple_of(11) {
        fs::write(s.join(format!("files/w{w}-{i}")), record(w, i))
            .map_err(|e| format!("create shared file: {e}"))?;
    }
    if i.is_multiple_of(13) && i >= 11 * 3 {
        // Rename one of this worker's earlier files (a multiple of 11 below i).
        let j = (i / 11 - 2) * 11;
        let from = s.join(format!("files/w{w}-{j}"));
        if from.exists() {
            fs::rename(&from, s.join(format!("files/w{w}-{j}.done")))
                .map_err(|e| format!("rename shared file: {e}"))?;
        }
    }
    Ok(())
}

/// Which workers won each O_EXCL create and each mkdir contest.
struct Winners {
    locks: Vec<Vec<usize>>,
    mkdirs: Vec<Vec<usize>>,
}

#[test]
fn concurrent_workers_on_one_mount_match_a_reference() {
    if !common::fuse_available() {
        return;
    }
    let n_ops = ops_per_worker();
    let m = luafs();
    let reference = RefDir::new("stress-concurrent");
    let mnt = m.mnt.clone();
    for root in [&mnt, &reference.0] {
        fs::create_dir(root.join("shared")).unwrap();
        fs::create_dir(root.join("shared/files")).unwrap();
        fs::write(root.join("shared/log"), b"").unwrap();
        fs::write(
            root.join("shared/region"),
            vec![0u8; WORKERS * SLOTS * SLOT],
        )
        .unwrap();
        for w in 0..WORKERS {
            fs::create_dir(root.join(format!("w{w}"))).unwrap();
        }
    }
    let contests = n_ops / 17 + 1;
    // (lock-k O_EXCL winners, mk-k mkdir winners)
    let wins: Arc<Mutex<Winners>> = Arc::new(Mutex::new(Winners {
        locks: vec![vec![]; contests],
        mkdirs: vec![vec![]; contests],
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let total_ops = Arc::new(AtomicUsize::new(0));
    let nlink_races = Arc::new(AtomicUsize::new(0));
    // A reader walking the whole mount while the workers run.
    let walker = {
        let mnt = mnt.clone();
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<usize, String> {
            let mut walks = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut stack = vec![mnt.clone()];
                while let Some(d) = stack.pop() {
                    let rd = match fs::read_dir(&d) {
                        Ok(rd) => rd,
                        // Gone, or replaced by a file or by a symlink that loops (a worker's
                        // rename or symlink since it was listed): tmpfs answers the same.
                        Err(e)
                            if matches!(
                                e.raw_os_error(),
                                Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                            ) =>
                        {
                            continue;
                        }
                        Err(e) => return Err(format!("readdir {}: {e}", d.display())),
                    };
                    for e in rd {
                        let Ok(e) = e else { continue };
                        match fs::symlink_metadata(e.path()) {
                            Ok(md) if md.is_dir() => stack.push(e.path()),
                            Ok(_) => {}
                            // Gone since the listing, or a directory on the way replaced by
                            // a file (rmdir + create by a worker) or a looping symlink: tmpfs
                            // answers the same.
                            Err(e2)
                                if matches!(
                                    e2.raw_os_error(),
                                    Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                                ) => {}
                            Err(e2) => return Err(format!("lstat {}: {e2}", e.path().display())),
                        }
                    }
                }
                walks += 1;
            }
            Ok(walks)
        })
    };
    let start = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let mnt = mnt.clone();
            let refroot = reference.0.clone();
            let wins = wins.clone();
            let total_ops = total_ops.clone();
            let nlink_races = nlink_races.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let mut g = Gen { rng: Rng::new(1000 + w as u64), sub: format!("w{w}") };
                let mut history: Vec<String> = Vec::new();
                for i in 0..n_ops {
                    let ex = existing(&refroot, &g.sub);
                    let op = g.op(&ex);
                    let mut got = apply(&mnt, &op);
                    let want = apply(&refroot, &op);
                    if let Op::Link { from, .. } = &op
                        && got == Err(libc::ENOENT)
                        && want.is_ok()
                        && kernel_nlink_zero(&mnt.join(from))
                    {
                        // The kernel's race, not the filesystem's (see `kernel_nlink_zero`):
                        // its cached count is refreshed, and the link must then succeed.
                        nlink_races.fetch_add(1, Ordering::Relaxed);
                        history.push(format!("{i}: {op:?} => {got:?}: kernel's cached nlink 0, refreshed"));
                        got = apply(&mnt, &op);
                    }
                    history.push(format!("{i}: {op:?} => {got:?}"));
                    if got != want {
                        let h = history[history.len().saturating_sub(25)..].join("\n");
                        return Err(format!(
                            "worker {w} op #{i} {op:?}\n  luafs:     {got:?}\n  reference: {want:?}\nlast operations:\n{h}"
                        ));
                    }
                    shared_step(&mnt, w, i).map_err(|e| format!("worker {w} op #{i} on luafs: {e}"))?;
                    shared_step(&refroot, w, i).map_err(|e| format!("worker {w} op #{i} on the reference: {e}"))?;
                    if i % 17 == 0 {
                        let k = i / 17;
                        let s = mnt.join("shared");
                        match OpenOptions::new().write(true).create_new(true).open(s.join(format!("lock-{k}"))) {
                            Ok(mut f) => {
                                f.write_all(format!("w{w}").as_bytes()).map_err(|e| e.to_string())?;
                                wins.lock().unwrap().locks[k].push(w);
                            }
                            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                            Err(e) => return Err(format!("worker {w}: O_EXCL contest {k}: {e}")),
                        }
                        match fs::create_dir(s.join(format!("mk-{k}"))) {
                            Ok(()) => wins.lock().unwrap().mkdirs[k].push(w),
                            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                            Err(e) => return Err(format!("worker {w}: mkdir contest {k}: {e}")),
                        }
                    }
                    if i % 19 == 0 {
                        // This worker's own shared files must all be listed.
                        let listed: BTreeSet<String> = fs::read_dir(mnt.join("shared/files"))
                            .map_err(|e| format!("worker {w}: list shared: {e}"))?
                            .filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect();
                        let mine: BTreeSet<String> = fs::read_dir(refroot.join("shared/files"))
                            .unwrap()
                            .filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .filter(|n| n.starts_with(&format!("w{w}-")))
                            .collect();
                        let missing: Vec<_> = mine.difference(&listed).collect();
                        if !missing.is_empty() {
                            return Err(format!("worker {w} op #{i}: own shared files not listed: {missing:?}"));
                        }
                    }
                    total_ops.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    let mut errors = Vec::new();
    for (w, h) in workers.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push(format!("worker {w} panicked")),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let walks = walker.join().expect("walker panicked");
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
    let walks = walks.unwrap_or_else(|e| panic!("walker: {e}"));
    let elapsed = start.elapsed();

    // Contests: exactly one winner each, and the lock file names it.
    let won = wins.lock().unwrap();
    let (locks, mks) = (&won.locks, &won.mkdirs);
    for (k, ws) in locks.iter().enumerate() {
        assert_eq!(ws.len(), 1, "O_EXCL contest {k}: winners {ws:?}");
        assert_eq!(
            fs::read_to_string(mnt.join(format!("shared/lock-{k}"))).unwrap(),
            format!("w{}", ws[0])
        );
    }
    for (k, ws) in mks.iter().enumerate() {
        assert_eq!(ws.len(), 1, "mkdir contest {k}: winners {ws:?}");
    }
    // Contest entries exist on luafs only: remove them before comparing the trees.
    for k in 0..contests {
        fs::remove_file(mnt.join(format!("shared/lock-{k}"))).unwrap();
        fs::remove_dir(mnt.join(format!("shared/mk-{k}"))).unwrap();
    }
    // The append log: same records, in any order, none torn or lost.
    let records = |p: &Path| -> Vec<Vec<u8>> {
        let b = fs::read(p).unwrap();
        let mut v: Vec<Vec<u8>> = b.chunks(RECORD).map(|c| c.to_vec()).collect();
        v.sort();
        v
    };
    let got = records(&mnt.join("shared/log"));
    let want = records(&reference.0.join("shared/log"));
    if got != want {
        let g: BTreeSet<_> = got.iter().collect();
        let w: BTreeSet<_> = want.iter().collect();
        let show = |v: Vec<&&Vec<u8>>| {
            v.iter()
                .take(10)
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .collect::<Vec<_>>()
        };
        panic!(
            "append log differs: luafs {} records ({} bytes), reference {} records\n\
             missing on luafs: {:?}\nonly on luafs: {:?}",
            got.len(),
            fs::metadata(mnt.join("shared/log")).unwrap().len(),
            want.len(),
            show(w.difference(&g).collect()),
            show(g.difference(&w).collect()),
        );
    }
    // Everything else, exactly.
    let skip = |r: &str| r == "shared/log";
    let a = snapshot(&mnt, &skip);
    let b = snapshot(&reference.0, &skip);
    let mut diffs = Vec::new();
    for (k, v) in &a {
        match b.get(k) {
            None => diffs.push(format!("  {k}: only on luafs: {v}")),
            Some(w) if w != v => {
                diffs.push(format!("  {k}:\n    luafs:     {v}\n    reference: {w}"))
            }
            _ => {}
        }
    }
    for (k, w) in &b {
        if !a.contains_key(k) {
            diffs.push(format!("  {k}: only in the reference: {w}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "final trees differ:\n{}",
        diffs.join("\n")
    );
    let ops = total_ops.load(Ordering::Relaxed);
    eprintln!(
        "{WORKERS} workers, {ops} operations (+ shared-area steps) in {elapsed:?}; {walks} concurrent walks; final tree {} entries; links refused by the kernel's nlink race and retried: {}",
        a.len(),
        nlink_races.load(Ordering::Relaxed)
    );
    assert_eq!(ops, WORKERS * n_ops);
    assert!(a.len() > WORKERS * 5, "final tree suspiciously small");
}
