//! Directories made through the mount whose every name flufs has seen made since, for scripts
//! whose directories change only through the mount (`fs.reuse_listings`). The kernel looks a
//! name up before it creates it (`tar x`, `cp -r`, a new file), so filling a new directory
//! costs a LOOKUP answered ENOENT per name; for a name missing from such a directory that
//! answer is given here, without calling the script.
//!
//! A directory is followed from its mkdir on: names made in it (create, mknod, mkdir, symlink,
//! link, a rename into it) are added, names removed (unlink, rmdir, a rename out of it) taken
//! away. Whatever flufs cannot follow exactly drops it, and it is asked as usual from then on:
//! an operation on it that failed (the script may have changed something before failing), a
//! forgotten node, more than `MAX_NAMES` names.

use std::collections::hash_map::Entry;
use std::hash::BuildHasher;

use foldhash::HashMap;
use foldhash::HashMapExt;

/// Names followed per directory; a directory with more is dropped (a large directory's names
/// are the script's to keep, not flufs's).
const MAX_NAMES: u32 = 100_000;

/// A directory's names, as counts of their hashes: no copy of a name is kept (one allocation
/// per name made, and as many frees when the kernel forgets the directory, cost more than the
/// lookups they save). A name whose hash is counted is not known to be missing, so a
/// collision only sends a lookup to the script.
#[derive(Default)]
struct Names {
    hashes: HashMap<u64, u32>,
    count: u32,
}

pub struct FreshDirs {
    dirs: HashMap<u64, Names>,
    hasher: foldhash::fast::FixedState,
}

impl FreshDirs {
    pub fn new() -> FreshDirs {
        FreshDirs {
            dirs: HashMap::new(),
            hasher: foldhash::fast::FixedState::default(),
        }
    }

    fn hash(&self, name: &[u8]) -> u64 {
        self.hasher.hash_one(name)
    }

    /// `dir` was just made, empty.
    pub fn made(&mut self, dir: u64) {
        self.dirs.insert(dir, Names::default());
    }

    /// `name` was made in `dir`.
    pub fn added(&mut self, dir: u64, name: &[u8]) {
        if self.dirs.is_empty() {
            return;
        }
        let h = self.hash(name);
        if let Entry::Occupied(mut e) = self.dirs.entry(dir) {
            let names = e.get_mut();
            if names.count >= MAX_NAMES {
                e.remove();
            } else {
                *names.hashes.entry(h).or_insert(0) += 1;
                names.count += 1;
            }
        }
    }

    /// `name` was removed from `dir`.
    pub fn removed(&mut self, dir: u64, name: &[u8]) {
        if self.dirs.is_empty() {
            return;
        }
        let h = self.hash(name);
        if let Some(names) = self.dirs.get_mut(&dir)
            && let Entry::Occupied(mut e) = names.hashes.entry(h)
        {
            names.count -= 1;
            if *e.get() > 1 {
                *e.get_mut() -= 1;
            } else {
                e.remove();
            }
        }
    }

    /// Whether `dir` is followed.
    pub fn follows(&self, dir: u64) -> bool {
        !self.dirs.is_empty() && self.dirs.contains_key(&dir)
    }

    /// Stop following `dir`.
    pub fn drop_dir(&mut self, dir: u64) {
        if !self.dirs.is_empty() {
            self.dirs.remove(&dir);
        }
    }

    /// Whether `name` is known to be missing from `dir`. "." and "..", and a name too long to
    /// be an entry's (the script answers it ENAMETOOLONG), never are.
    pub fn lacks(&self, dir: u64, name: &[u8]) -> bool {
        if self.dirs.is_empty() || name.len() > super::NAME_MAX || name == b"." || name == b".." {
            return false;
        }
        match self.dirs.get(&dir) {
            Some(names) => !names.hashes.contains_key(&self.hash(name)),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_directory_lacks_what_was_not_made_in_it() {
        let mut f = FreshDirs::new();
        assert!(!f.lacks(7, b"a"), "a directory not followed lacks nothing");
        f.made(7);
        assert!(f.lacks(7, b"a"));
        f.added(7, b"a");
        assert!(!f.lacks(7, b"a"));
        assert!(f.lacks(7, b"b"));
        f.removed(7, b"a");
        assert!(f.lacks(7, b"a"));
        for name in [&b"."[..], b"..", &[b'n'; 256]] {
            assert!(!f.lacks(7, name), "never made, yet not missing");
        }
        f.added(8, b"x");
        assert!(
            !f.lacks(8, b"y"),
            "names added to a directory not followed are not kept"
        );
        f.drop_dir(7);
        assert!(!f.lacks(7, b"a"));
    }

    #[test]
    fn a_directory_with_too_many_names_is_dropped() {
        let mut f = FreshDirs::new();
        f.made(1);
        for i in 0..MAX_NAMES {
            f.added(1, format!("n{i}").as_bytes());
        }
        assert!(f.lacks(1, b"other"));
        f.added(1, b"one more");
        assert!(!f.lacks(1, b"other"));
    }
}
