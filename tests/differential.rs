//! Differential test: the same seeded random sequence of file-system operations is applied to a
//! luafs mount and to a reference directory on tmpfs (/dev/shm, or the temp dir when there is no
//! /dev/shm). After every operation the outcomes (value or errno) must be equal, and every
//! `TREE_EVERY` operations, and at the end, the whole trees must be equal: names, types, modes,
//! link counts, sizes, file contents, symlink targets, hard-link groups and user xattrs.
//!
//! FLUFS_DIFF_OPS sets the number of operations per seed (default 20000).
//! A failure prints the seed, the op index and the last operations; rerun one seed with
//! `cargo test --test differential diff_seed_1`.
mod common;

use common::{Mount, RefDir, Rng, cpath, last_errno, shipped};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
const XATTR_NAMES: [&str; 3] = ["user.a", "user.b", "user.c"];
const TREE_EVERY: usize = 200;

// ---------------------------------------------------------------------------------------------
// PRNG

fn data_from_seed(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

// ---------------------------------------------------------------------------------------------
// operations

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
        offset: u64,
        len: usize,
        seed: u64,
        append: bool,
    },
    Read {
        path: String,
        offset: u64,
        len: usize,
    },
    Truncate {
        path: String,
        len: u64,
        via_fd: bool,
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
        flags: u32,
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
        nofollow: bool,
    },
    SetXattr {
        path: String,
        name: String,
        value: Vec<u8>,
        flags: i32,
        nofollow: bool,
    },
    GetXattr {
        path: String,
        name: String,
    },
    RemoveXattr {
        path: String,
        name: String,
    },
    OpenUnlinkRead {
        path: String,
        write: Option<(u64, usize, u64)>,
    },
    Stat {
        path: String,
        follow: bool,
    },
    ListDir {
        path: String,
    },
}

type Outcome = Result<String, i32>;

fn err(e: std::io::Error) -> i32 {
    e.raw_os_error()
        .unwrap_or_else(|| panic!("error without errno: {e}"))
}

fn kind_of(ft: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "other"
    }
}

fn stat_summary(md: &fs::Metadata) -> String {
    let kind = kind_of(md.file_type());
    let size = if md.is_dir() {
        "-".to_string()
    } else {
        md.len().to_string()
    };
    format!(
        "{kind} mode={:o} nlink={} size={size}",
        md.mode() & 0o7777,
        md.nlink()
    )
}

/// Read from `f` at `offset` until `len` bytes or EOF.
fn read_at_most(f: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = f.read_at(&mut buf[got..], offset + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    Ok(buf)
}

fn describe_bytes(b: &[u8]) -> String {
    format!("{} bytes fnv={:016x}", b.len(), fnv(b))
}

fn apply(root: &Path, op: &Op) -> Outcome {
    let p = |s: &str| root.join(s);
    match op {
        Op::Create {
            path,
            excl,
            trunc,
            mode,
        } => {
            let mut o = OpenOptions::new();
            o.write(true).mode(*mode);
            if *excl {
                o.create_new(true);
            } else {
                o.create(true);
            }
            o.truncate(*trunc);
            o.open(p(path)).map_err(err)?;
            Ok(String::new())
        }
        Op::Write {
            path,
            offset,
            len,
            seed,
            append,
        } => {
            let data = data_from_seed(*seed, *len);
            if *append {
                let mut f = OpenOptions::new().append(true).open(p(path)).map_err(err)?;
                f.write_all(&data).map_err(err)?;
            } else {
                let f = OpenOptions::new().write(true).open(p(path)).map_err(err)?;
                f.write_all_at(&data, *offset).map_err(err)?;
            }
            Ok(String::new())
        }
        Op::Read { path, offset, len } => {
            let f = File::open(p(path)).map_err(err)?;
            let b = read_at_most(&f, *offset, *len).map_err(err)?;
            Ok(describe_bytes(&b))
        }
        Op::Truncate { path, len, via_fd } => {
            if *via_fd {
                let f = OpenOptions::new().write(true).open(p(path)).map_err(err)?;
                f.set_len(*len).map_err(err)?;
            } else {
                let rc = unsafe { libc::truncate(cpath(&p(path)).as_ptr(), *len as i64) };
                if rc != 0 {
                    return Err(last_errno());
                }
            }
            Ok(String::new())
        }
        Op::Mkdir { path, mode } => {
            fs::DirBuilder::new()
                .mode(*mode)
                .create(p(path))
                .map_err(err)?;
            Ok(String::new())
        }
        Op::Rmdir { path } => fs::remove_dir(p(path)).map(|_| String::new()).map_err(err),
        Op::Unlink { path } => fs::remove_file(p(path)).map(|_| String::new()).map_err(err),
        Op::Rename { from, to, flags } => common::rename2(&p(from), &p(to), *flags)
            .map(|_| String::new())
            .map_err(err),
        Op::Link { from, to } => fs::hard_link(p(from), p(to))
            .map(|_| String::new())
            .map_err(err),
        Op::Symlink { target, path } => std::os::unix::fs::symlink(target, p(path))
            .map(|_| String::new())
            .map_err(err),
        Op::Readlink { path } => fs::read_link(p(path))
            .map(|t| t.to_string_lossy().into_owned())
            .map_err(err),
        Op::Chmod { path, mode } => fs::set_permissions(p(path), fs::Permissions::from_mode(*mode))
            .map(|_| String::new())
            .map_err(err),
        Op::SetMtime {
            path,
            sec,
            nsec,
            nofollow,
        } => {
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
            let flags = if *nofollow {
                libc::AT_SYMLINK_NOFOLLOW
            } else {
                0
            };
            let rc = unsafe {
                libc::utimensat(libc::AT_FDCWD, cpath(&p(path)).as_ptr(), t.as_ptr(), flags)
            };
            if rc != 0 {
                return Err(last_errno());
            }
            let md = if *nofollow {
                fs::symlink_metadata(p(path))
            } else {
                fs::metadata(p(path))
            }
            .map_err(err)?;
            Ok(format!("mtime={}.{:09}", md.mtime(), md.mtime_nsec()))
        }
        Op::SetXattr {
            path,
            name,
            value,
            flags,
            nofollow,
        } => {
            let cp = cpath(&p(path));
            let cn = CString::new(name.as_str()).unwrap();
            let rc = unsafe {
                let f = if *nofollow {
                    libc::lsetxattr
                } else {
                    libc::setxattr
                };
                f(
                    cp.as_ptr(),
                    cn.as_ptr(),
                    value.as_ptr() as *const _,
                    value.len(),
                    *flags,
                )
            };
            if rc != 0 {
                Err(last_errno())
            } else {
                Ok(String::new())
            }
        }
        Op::GetXattr { path, name } => {
            let cp = cpath(&p(path));
            let cn = CString::new(name.as_str()).unwrap();
            let mut buf = [0u8; 256];
            let n = unsafe {
                libc::getxattr(
                    cp.as_ptr(),
                    cn.as_ptr(),
                    buf.as_mut_ptr() as *mut _,
                    buf.len(),
                )
            };
            if n < 0 {
                Err(last_errno())
            } else {
                Ok(format!("{:?}", &buf[..n as usize]))
            }
        }
        Op::RemoveXattr { path, name } => {
            let cp = cpath(&p(path));
            let cn = CString::new(name.as_str()).unwrap();
            let rc = unsafe { libc::removexattr(cp.as_ptr(), cn.as_ptr()) };
            if rc != 0 {
                Err(last_errno())
            } else {
                Ok(String::new())
            }
        }
        Op::OpenUnlinkRead { path, write } => {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(p(path))
                .map_err(err)?;
            fs::remove_file(p(path)).map_err(|e| 1000 + err(e))?;
            if let Some((offset, len, seed)) = write {
                f.write_all_at(&data_from_seed(*seed, *len), *offset)
                    .map_err(|e| 2000 + err(e))?;
            }
            // Read everything back through the descriptor. (fstat of the unlinked file is
            // checked on its own in tests/luafs.rs.)
            let all = read_at_most(&f, 0, 1 << 20).map_err(|e| 3000 + err(e))?;
            Ok(describe_bytes(&all))
        }
        Op::Stat { path, follow } => {
            let md = if *follow {
                fs::metadata(p(path))
            } else {
                fs::symlink_metadata(p(path))
            }
            .map_err(err)?;
            Ok(stat_summary(&md))
        }
        Op::ListDir { path } => {
            let mut names: Vec<String> = fs::read_dir(p(path))
                .map_err(err)?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_, _>>()
                .map_err(err)?;
            names.sort();
            Ok(names.join(","))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// whole-tree snapshot

#[derive(Debug, PartialEq)]
struct Node {
    kind: &'static str,
    /// Permission bits (07777), in octal.
    mode: String,
    nlink: u64,
    /// Size for files and symlinks (directory sizes are file-system specific).
    size: Option<u64>,
    content: Option<String>,
    target: Option<String>,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// For non-directories: the first path (in sorted order) sharing this inode.
    link_group: Option<String>,
}

fn list_user_xattrs(p: &Path) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let cp = cpath(p);
    let n = unsafe { libc::llistxattr(cp.as_ptr(), std::ptr::null_mut(), 0) };
    if n < 0 {
        let e = last_errno();
        if e == libc::ENOTSUP || e == libc::ENOSYS {
            return Ok(BTreeMap::new());
        }
        return Err(format!("llistxattr {}: errno {e}", p.display()));
    }
    let mut buf = vec![0u8; n as usize + 1];
    let n = unsafe { libc::llistxattr(cp.as_ptr(), buf.as_mut_ptr() as *mut _, buf.len()) };
    if n < 0 {
        return Err(format!(
            "llistxattr {}: errno {}",
            p.display(),
            last_errno()
        ));
    }
    let mut out = BTreeMap::new();
    for name in buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
    {
        if !name.starts_with(b"user.") {
            continue;
        }
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 4096];
        let m =
            unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), v.as_mut_ptr() as *mut _, v.len()) };
        if m < 0 {
            return Err(format!(
                "lgetxattr {} {}: errno {}",
                p.display(),
                String::from_utf8_lossy(name),
                last_errno()
            ));
        }
        v.truncate(m as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), v);
    }
    Ok(out)
}

fn snapshot(root: &Path) -> Result<BTreeMap<String, Node>, String> {
    let mut out = BTreeMap::new();
    let mut inos: BTreeMap<String, u64> = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let entries = fs::read_dir(&dir).map_err(|e| format!("readdir {}: {e}", dir.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("readdir {}: {e}", dir.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let relp = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let full = root.join(&relp);
            let md = fs::symlink_metadata(&full).map_err(|e| format!("lstat {relp}: {e}"))?;
            let kind = kind_of(md.file_type());
            let mut node = Node {
                kind,
                mode: format!("{:o}", md.mode() & 0o7777),
                nlink: md.nlink(),
                size: (kind != "dir").then_some(md.len()),
                content: None,
                target: None,
                xattrs: list_user_xattrs(&full)?,
                link_group: None,
            };
            match kind {
                "dir" => stack.push(relp.clone()),
                "file" => {
                    let b = fs::read(&full).map_err(|e| format!("read {relp}: {e}"))?;
                    node.content = Some(describe_bytes(&b));
                    inos.insert(relp.clone(), md.ino());
                }
                "symlink" => {
                    let t = fs::read_link(&full).map_err(|e| format!("readlink {relp}: {e}"))?;
                    node.target = Some(t.to_string_lossy().into_owned());
                    inos.insert(relp.clone(), md.ino());
                }
                _ => {
                    inos.insert(relp.clone(), md.ino());
                }
            }
            out.insert(relp, node);
        }
    }
    let mut first: BTreeMap<u64, String> = BTreeMap::new();
    for (path, ino) in &inos {
        let g = first.entry(*ino).or_insert_with(|| path.clone()).clone();
        out.get_mut(path).unwrap().link_group = Some(g);
    }
    Ok(out)
}

fn tree_diff(a: &BTreeMap<String, Node>, b: &BTreeMap<String, Node>) -> Option<String> {
    let mut lines = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => lines.push(format!("  {k}: luafs has it, reference does not: {v:?}")),
            Some(w) if w != v => lines.push(format!(
                "  {k}:\n    luafs:     {v:?}\n    reference: {w:?}"
            )),
            _ => {}
        }
    }
    for (k, w) in b {
        if !a.contains_key(k) {
            lines.push(format!("  {k}: reference has it, luafs does not: {w:?}"));
        }
    }
    if lines.is_empty() {
        None
    } else {
        Some(lines.join("\n"))
    }
}

// ---------------------------------------------------------------------------------------------
// op generation

struct Gen {
    rng: Rng,
    xattrs: bool,
    root_user: bool,
}

impl Gen {
    fn random_path(&mut self) -> String {
        let depth = 1 + self.rng.below(3);
        (0..depth)
            .map(|_| *self.rng.pick(&NAMES))
            .collect::<Vec<_>>()
            .join("/")
    }

    /// A path that exists in the reference tree half of the time, a random one otherwise.
    fn path(&mut self, ex: &Existing) -> String {
        if !ex.all.is_empty() && self.rng.chance(50) {
            self.rng.pick(&ex.all).clone()
        } else {
            self.random_path()
        }
    }

    /// For data operations: mostly an existing regular file.
    fn file_path(&mut self, ex: &Existing) -> String {
        if !ex.files.is_empty() && self.rng.chance(60) {
            self.rng.pick(&ex.files).clone()
        } else {
            self.path(ex)
        }
    }

    /// For rmdir: mostly an existing directory.
    fn dir_path(&mut self, ex: &Existing) -> String {
        if !ex.dirs.is_empty() && self.rng.chance(50) {
            self.rng.pick(&ex.dirs).clone()
        } else {
            self.path(ex)
        }
    }

    /// A path for a new entry: usually a child of an existing (shallow) directory.
    fn new_path(&mut self, ex: &Existing) -> String {
        if !ex.dirs.is_empty() && self.rng.chance(50) {
            let d = self.rng.pick(&ex.dirs).clone();
            format!("{d}/{}", self.rng.pick(&NAMES))
        } else {
            self.random_path()
        }
    }

    fn offset(&mut self) -> u64 {
        match self.rng.below(10) {
            0..=5 => self.rng.below(4096),
            6..=8 => self.rng.below(16384),
            _ => self.rng.below(70_000),
        }
    }

    fn len(&mut self) -> usize {
        match self.rng.below(10) {
            0 => 0,
            1..=7 => 1 + self.rng.below(3000) as usize,
            _ => 1 + self.rng.below(20_000) as usize,
        }
    }

    fn file_mode(&mut self) -> u32 {
        let m = self.rng.below(0o1000) as u32;
        if self.root_user { m } else { m | 0o700 }
    }

    fn chmod_mode(&mut self) -> u32 {
        // No setgid: its inheritance by new entries is checked separately (tests/luafs.rs).
        let m = self.rng.below(0o10000) as u32 & !0o2000;
        if self.root_user { m } else { m | 0o700 }
    }

    fn op(&mut self, ex: &Existing) -> Op {
        let r = self.rng.below(100);
        match r {
            0..=9 => Op::Create {
                path: self.new_path(ex),
                excl: self.rng.chance(30),
                trunc: self.rng.chance(30),
                mode: self.file_mode(),
            },
            10..=21 => Op::Write {
                path: self.file_path(ex),
                offset: self.offset(),
                len: self.len(),
                seed: self.rng.next(),
                append: self.rng.chance(15),
            },
            22..=29 => Op::Read {
                path: self.file_path(ex),
                offset: self.offset(),
                len: self.len(),
            },
            30..=34 => Op::Truncate {
                path: self.file_path(ex),
                len: self.offset(),
                via_fd: self.rng.chance(50),
            },
            35..=41 => Op::Mkdir {
                path: self.new_path(ex),
                mode: self.file_mode(),
            },
            42..=46 => Op::Rmdir {
                path: self.dir_path(ex),
            },
            47..=52 => Op::Unlink {
                path: self.path(ex),
            },
            53..=61 => {
                let from = self.path(ex);
                let to = if self.rng.chance(15) {
                    // Into its own subtree (EINVAL for directories).
                    format!("{from}/{}", self.rng.pick(&NAMES))
                } else if self.rng.chance(50) {
                    self.path(ex)
                } else {
                    self.new_path(ex)
                };
                let flags = match self.rng.below(10) {
                    0 => libc::RENAME_NOREPLACE,
                    1 => libc::RENAME_EXCHANGE,
                    _ => 0,
                };
                Op::Rename { from, to, flags }
            }
            62..=66 => Op::Link {
                from: self.file_path(ex),
                to: self.new_path(ex),
            },
            67..=70 => {
                let n = 1 + self.rng.below(2);
                let target = (0..n)
                    .map(|_| *self.rng.pick(&NAMES))
                    .collect::<Vec<_>>()
                    .join("/");
                Op::Symlink {
                    target,
                    path: self.new_path(ex),
                }
            }
            71..=72 => Op::Readlink {
                path: self.path(ex),
            },
            73..=76 => Op::Chmod {
                path: self.path(ex),
                mode: self.chmod_mode(),
            },
            77..=79 => Op::SetMtime {
                path: self.path(ex),
                sec: self.rng.below(2_000_000_000) as i64,
                nsec: self.rng.below(1_000_000_000) as i64,
                nofollow: self.rng.chance(30),
            },
            80..=84 if self.xattrs => {
                let vlen = self.rng.below(24) as usize;
                Op::SetXattr {
                    path: self.path(ex),
                    name: self.rng.pick(&XATTR_NAMES).to_string(),
                    value: data_from_seed(self.rng.next(), vlen),
                    flags: match self.rng.below(4) {
                        0 => libc::XATTR_CREATE,
                        1 => libc::XATTR_REPLACE,
                        _ => 0,
                    },
                    nofollow: self.rng.chance(20),
                }
            }
            85..=86 if self.xattrs => Op::GetXattr {
                path: self.path(ex),
                name: self.rng.pick(&XATTR_NAMES).to_string(),
            },
            87..=88 if self.xattrs => Op::RemoveXattr {
                path: self.path(ex),
                name: self.rng.pick(&XATTR_NAMES).to_string(),
            },
            89..=91 => Op::OpenUnlinkRead {
                path: self.file_path(ex),
                write: self
                    .rng
                    .chance(50)
                    .then(|| (self.offset(), self.len(), self.rng.next())),
            },
            92..=96 => Op::Stat {
                path: self.path(ex),
                follow: self.rng.chance(50),
            },
            _ => Op::ListDir {
                path: self.path(ex),
            },
        }
    }
}

/// The reference tree's paths in a deterministic order.
struct Existing {
    all: Vec<String>,
    /// Directories at depth ≤ 3 (parents for new entries).
    dirs: Vec<String>,
    files: Vec<String>,
}

fn reference_paths(root: &Path) -> Existing {
    let mut all = Vec::new();
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            let relp = if rel.is_empty() {
                n
            } else {
                format!("{rel}/{n}")
            };
            let md = fs::symlink_metadata(root.join(&relp));
            if md.as_ref().map(|m| m.is_dir()).unwrap_or(false) {
                if relp.matches('/').count() < 3 {
                    dirs.push(relp.clone());
                }
                stack.push(relp.clone());
            } else if md.as_ref().map(|m| m.is_file()).unwrap_or(false) {
                files.push(relp.clone());
            }
            all.push(relp);
        }
    }
    Existing { all, dirs, files }
}

// ---------------------------------------------------------------------------------------------
// driver

/// Reference directory on tmpfs when available; removed on drop.
fn user_xattrs_supported(dir: &Path) -> bool {
    let probe = dir.join(".xattr-probe");
    fs::write(&probe, b"").unwrap();
    let cp = cpath(&probe);
    let n = CString::new("user.probe").unwrap();
    let ok =
        unsafe { libc::setxattr(cp.as_ptr(), n.as_ptr(), b"1".as_ptr() as *const _, 1, 0) } == 0;
    fs::remove_file(&probe).unwrap();
    ok
}

fn ops_per_seed() -> usize {
    std::env::var("FLUFS_DIFF_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn run_seed(seed: u64, opts: &[&str]) {
    let n_ops = ops_per_seed();
    let reference = RefDir::new(&format!("diff-ref-{seed}"));
    let xattrs = user_xattrs_supported(&reference.0);
    if !xattrs {
        eprintln!("seed {seed}: reference fs has no user xattrs; xattr ops disabled");
    }
    let m = Mount::new(&shipped("luafs.lua"), opts);
    // The mount root and the reference root start identical (mode 0755, empty).
    let mut g = Gen {
        rng: Rng::new(seed),
        xattrs,
        root_user: unsafe { libc::geteuid() } == 0,
    };
    let mut history: Vec<String> = Vec::new();
    let fail = |i: usize, history: &[String], msg: String| -> ! {
        let start = history.len().saturating_sub(40);
        panic!(
            "differential mismatch: seed {seed}, op #{i} (of {n_ops})\n{msg}\n\
             last operations (index: op => luafs outcome):\n{}\n\
             rerun: FLUFS_DIFF_OPS={} cargo test --test differential diff_seed_{seed}",
            history[start..].join("\n"),
            i + 1
        )
    };
    let started = std::time::Instant::now();
    for i in 0..n_ops {
        let existing = reference_paths(&reference.0);
        let op = g.op(&existing);
        let got = apply(&m.mnt, &op);
        let want = apply(&reference.0, &op);
        history.push(format!("{i}: {op:?} => {got:?}"));
        if got != want {
            fail(
                i,
                &history,
                format!(
                    "op {op:?}\n  luafs:     {got:?}\n  reference: {want:?}\n(errnos: 1000+ = unlink, 2000+ = write, 3000+ = read)"
                ),
            );
        }
        if (i + 1) % TREE_EVERY == 0 || i + 1 == n_ops {
            let a = snapshot(&m.mnt)
                .unwrap_or_else(|e| fail(i, &history, format!("luafs tree walk failed: {e}")));
            let b = snapshot(&reference.0)
                .unwrap_or_else(|e| fail(i, &history, format!("reference tree walk failed: {e}")));
            if let Some(d) = tree_diff(&a, &b) {
                fail(i, &history, format!("trees differ after op #{i}:\n{d}"));
            }
        }
    }
    let final_tree = snapshot(&reference.0).unwrap();
    eprintln!(
        "seed {seed}: {n_ops} ops in {:?}, final tree has {} entries",
        started.elapsed(),
        final_tree.len()
    );
    // The tree must not have stayed trivially empty, or the comparison proves little.
    assert!(
        n_ops < 500 || !final_tree.is_empty(),
        "seed {seed}: final tree empty"
    );
    drop(m);
}

#[test]
fn diff_seed_1() {
    if !common::fuse_available() {
        return;
    }
    run_seed(1, &[]);
}

#[test]
fn diff_seed_2() {
    if !common::fuse_available() {
        return;
    }
    run_seed(2, &[]);
}

#[test]
fn diff_seed_3() {
    if !common::fuse_available() {
        return;
    }
    run_seed(3, &[]);
}

#[test]
fn diff_seed_4() {
    if !common::fuse_available() {
        return;
    }
    run_seed(4, &[]);
}

/// Without kernel caching every lookup and getattr reaches the daemon, so stale path/inode
/// bookkeeping in the host cannot hide behind the kernel's caches.
const NO_CACHE: &[&str] = &["-o", "attr_timeout=0,entry_timeout=0,negative_timeout=0"];

#[test]
fn diff_seed_5_no_kernel_cache() {
    if !common::fuse_available() {
        return;
    }
    run_seed(5, NO_CACHE);
}

#[test]
fn diff_seed_6_no_kernel_cache() {
    if !common::fuse_available() {
        return;
    }
    run_seed(6, NO_CACHE);
}

#[test]
fn diff_seed_7_writeback_cache() {
    if !common::fuse_available() {
        return;
    }
    run_seed(7, &["-o", "writeback_cache"]);
}
