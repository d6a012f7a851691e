//! File modes and open flags as Flu names them: the flag names of mode sets
//! (`{reg=true, rusr=true}`), the predefined mode strings (`'file'`, `'directory'`, ...), and the
//! open-flag names of `fi.flags`. Pure bit arithmetic; the Lua side lives in `convert`.

/// File-type names and their `S_IFMT` values.
pub const TYPES: &[(&str, u32)] = &[
    ("blk", libc::S_IFBLK),
    ("chr", libc::S_IFCHR),
    ("fifo", libc::S_IFIFO),
    ("reg", libc::S_IFREG),
    ("dir", libc::S_IFDIR),
    ("lnk", libc::S_IFLNK),
    ("sock", libc::S_IFSOCK),
];

/// Permission and special bit names.
pub const PERMS: &[(&str, u32)] = &[
    ("rusr", 0o400),
    ("wusr", 0o200),
    ("xusr", 0o100),
    ("rgrp", 0o040),
    ("wgrp", 0o020),
    ("xgrp", 0o010),
    ("roth", 0o004),
    ("woth", 0o002),
    ("xoth", 0o001),
    ("suid", 0o4000),
    ("sgid", 0o2000),
    ("svtx", 0o1000),
];

/// The value of one mode-set key (`"reg"`, `"rusr"`, ...).
pub fn flag_bits(name: &str) -> Option<u32> {
    TYPES
        .iter()
        .chain(PERMS.iter())
        .find(|(n, _)| *n == name)
        .map(|&(_, v)| v)
}

/// Flu's predefined mode strings.
pub fn from_preset(name: &str) -> Option<u32> {
    let rw = 0o660;
    Some(match name {
        "file" => libc::S_IFREG | rw,
        "directory" => libc::S_IFDIR | 0o770,
        "link" => libc::S_IFLNK | rw,
        "socket" => libc::S_IFSOCK | rw,
        "named pipe" => libc::S_IFIFO | rw,
        "char device" => libc::S_IFCHR | rw,
        "block device" => libc::S_IFBLK | rw,
        "other" => 0,
        _ => return None,
    })
}

/// The names set in `mode` (type name first, then permission names): what
/// `convert::Names::mode_set` builds (its tests compare).
#[cfg(test)]
pub fn names(mode: u32) -> impl Iterator<Item = &'static str> {
    let fmt = mode & libc::S_IFMT;
    TYPES
        .iter()
        .filter(move |&&(_, v)| v == fmt)
        .chain(PERMS.iter().filter(move |&&(_, v)| mode & v != 0))
        .map(|&(n, _)| n)
}

/// Open flags (`fi.flags`): lower-case Flu names, bit values. `rdonly`, `wronly`, `rdwr` are
/// decided from `O_ACCMODE`, not by bit tests.
pub const OPEN_FLAGS: &[(&str, i32)] = &[
    ("append", libc::O_APPEND),
    ("async", libc::O_ASYNC),
    ("creat", libc::O_CREAT),
    ("direct", libc::O_DIRECT),
    ("directory", libc::O_DIRECTORY),
    ("excl", libc::O_EXCL),
    ("largefile", libc::O_LARGEFILE),
    ("noatime", libc::O_NOATIME),
    ("noctty", libc::O_NOCTTY),
    ("nofollow", libc::O_NOFOLLOW),
    ("nonblock", libc::O_NONBLOCK),
    ("sync", libc::O_SYNC),
    ("dsync", libc::O_DSYNC),
    ("trunc", libc::O_TRUNC),
    ("cloexec", libc::O_CLOEXEC),
    ("path", libc::O_PATH),
    ("tmpfile", libc::O_TMPFILE),
];

/// The access-mode name of open flags.
#[cfg(test)]
pub fn access_name(flags: i32) -> &'static str {
    match flags & libc::O_ACCMODE {
        libc::O_WRONLY => "wronly",
        libc::O_RDWR => "rdwr",
        _ => "rdonly",
    }
}

/// Names of the open flags set in `flags`, access mode first (`ndelay` is an alias of
/// `nonblock`, reported too). O_SYNC includes the O_DSYNC bit; both are reported for O_SYNC.
/// The reference for the sets `convert::Names` builds (its tests compare).
#[cfg(test)]
pub fn open_flag_names(flags: i32) -> Vec<&'static str> {
    let mut v = vec![access_name(flags)];
    for &(name, bit) in OPEN_FLAGS {
        if bit != 0 && flags & bit == bit {
            v.push(name);
            if name == "nonblock" {
                v.push("ndelay");
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_follow_flu() {
        assert_eq!(from_preset("file"), Some(libc::S_IFREG | 0o660));
        assert_eq!(from_preset("directory"), Some(libc::S_IFDIR | 0o770));
        assert_eq!(from_preset("other"), Some(0));
        assert_eq!(from_preset("bogus"), None);
    }

    #[test]
    fn names_round_trip() {
        let mode = libc::S_IFREG | 0o4755;
        let bits: u32 = names(mode).filter_map(flag_bits).fold(0, |a, b| a | b);
        assert_eq!(bits, mode);
        let v: Vec<_> = names(libc::S_IFDIR | 0o1700).collect();
        assert_eq!(v, ["dir", "rusr", "wusr", "xusr", "svtx"]);
    }

    #[test]
    fn open_flags_report_access_mode() {
        assert_eq!(open_flag_names(libc::O_RDONLY), ["rdonly"]);
        let v = open_flag_names(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC);
        assert!(v.contains(&"wronly") && v.contains(&"creat") && v.contains(&"trunc"));
        assert!(!v.contains(&"rdonly"));
        let v = open_flag_names(libc::O_RDWR | libc::O_APPEND | libc::O_NONBLOCK);
        assert!(v.contains(&"rdwr") && v.contains(&"append") && v.contains(&"ndelay"));
    }
}
