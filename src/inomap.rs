//! The map from a script's inode numbers to node ids (see `Inodes`). Most scripts number
//! their files from 1 up (luafs does): a vector indexed by the number is smaller than a hash
//! map and reached in one load, which a listing of thousands of names not in the CPU's caches
//! can ask for ahead (`prefetch`). Numbers too large for the vector (a script that passes on
//! the inode numbers of a real filesystem) go into a hash map.

use foldhash::HashMap;
use foldhash::HashMapExt;

use crate::prefetch::prefetch;

#[derive(Debug, Default)]
pub struct InoMap {
    /// By number: the node id, 0 for none. Numbers below its length are never in `sparse`.
    dense: Vec<u64>,
    sparse: HashMap<u64, u64>,
    len: usize,
}

/// The vector may grow to hold numbers up to this, or to four times the numbers mapped
/// (at least a quarter of it in use), whichever is larger.
const DENSE_MIN: usize = 1024;

impl InoMap {
    pub fn new() -> InoMap {
        InoMap {
            dense: Vec::new(),
            sparse: HashMap::new(),
            len: 0,
        }
    }

    pub fn get(&self, ino: u64) -> Option<u64> {
        match usize::try_from(ino).ok().and_then(|i| self.dense.get(i)) {
            Some(&0) => None,
            Some(&id) => Some(id),
            None => self.sparse.get(&ino).copied(),
        }
    }

    /// Map `ino` to node `id` (not 0); the id it had.
    pub fn insert(&mut self, ino: u64, id: u64) -> Option<u64> {
        debug_assert!(id != 0);
        let bound = DENSE_MIN.max(4 * (self.len + 1));
        let i = match usize::try_from(ino) {
            Ok(i) if i < self.dense.len() => i,
            Ok(i) if i < bound => {
                self.grow((i + 1).max(2 * self.dense.len()).min(bound));
                i
            }
            _ => {
                let old = self.sparse.insert(ino, id);
                self.len += usize::from(old.is_none());
                return old;
            }
        };
        let old = std::mem::replace(&mut self.dense[i], id);
        self.len += usize::from(old == 0);
        (old != 0).then_some(old)
    }

    /// Ask the CPU to fetch where `get(ino)` looks (a vector's slot; nothing for the hash map).
    pub fn prefetch(&self, ino: u64) {
        if let Some(slot) = usize::try_from(ino).ok().and_then(|i| self.dense.get(i)) {
            prefetch(slot);
        }
    }

    /// Make the vector `len` long, moving the numbers below that out of the hash map.
    fn grow(&mut self, len: usize) {
        self.dense.resize(len, 0);
        let dense = &mut self.dense;
        self.sparse
            .retain(|&ino, &mut id| match usize::try_from(ino) {
                Ok(i) if i < len => {
                    dense[i] = id;
                    false
                }
                _ => true,
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_numbers_map_alike() {
        let mut m = InoMap::new();
        let inos = [1u64, 2, 3, 5000, 1 << 40, u64::MAX, 700, 40_000];
        for (k, &ino) in inos.iter().enumerate() {
            assert_eq!(m.insert(ino, k as u64 + 10), None);
        }
        for (k, &ino) in inos.iter().enumerate() {
            assert_eq!(m.get(ino), Some(k as u64 + 10), "ino {ino}");
        }
        assert_eq!(m.get(4), None);
        assert_eq!(m.get(0), None);
        assert_eq!(m.insert(5000, 99), Some(13));
        assert_eq!(m.get(5000), Some(99));
        assert!(m.dense.len() <= DENSE_MIN.max(4 * (inos.len() + 1)));
    }

    #[test]
    fn numbers_move_into_the_vector_as_it_grows() {
        let mut m = InoMap::new();
        // 3000 is beyond the first bound (1024): it starts in the hash map.
        assert_eq!(m.insert(3000, 7), None);
        assert!(m.sparse.contains_key(&3000));
        for ino in 1..=1000 {
            m.insert(ino, ino + 100);
        }
        // Enough numbers mapped for 3000 to be within the vector's bound now.
        m.insert(3001, 5);
        assert!(m.sparse.is_empty(), "{:?}", m.sparse.len());
        assert_eq!(m.get(3000), Some(7));
        assert_eq!(m.get(3001), Some(5));
        assert_eq!(
            (1..=1000).filter(|&i| m.get(i) == Some(i + 100)).count(),
            1000
        );
        assert_eq!(m.len, 1002);
    }
}
