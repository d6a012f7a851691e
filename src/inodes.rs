//! The inode ↔ path table: which node id the kernel holds for which name in which directory,
//! so that every request on a node id can be turned into the path a script expects. Paths are
//! derived by walking parent links, so renaming a directory moves all its descendants at once.
//! Hard links (paths whose stat carries the same `ino` with `nlink > 1`) share one node.
//! Knows nothing about Lua.

use foldhash::HashMap;
use foldhash::HashMapExt;

use crate::inomap::InoMap;

pub const ROOT: u64 = 1;

#[derive(Debug)]
struct Node {
    /// Primary name (parent, name); further hard-link names in `alt`.
    parent: u64,
    name: Name,
    alt: Vec<(u64, Vec<u8>)>,
    /// Kernel lookup count.
    lookups: u64,
    /// Open handles on this node.
    opens: u32,
    /// The script's `ino` when it groups hard links (0 = none).
    script_ino: u64,
    /// File type bits (S_IFMT) as last seen.
    kind: u32,
    /// No name refers to this node any more (unlinked while still referenced).
    removed: bool,
    /// Names in this directory whose node was dropped (forgotten by the kernel) and will get
    /// a new id when looked up again (no script ino): see `unnamings`.
    child_drops: u64,
}

/// Where node id `ino`'s mark is in `Inodes::bare`: the word and the bit in it.
fn bare_bit(ino: u64) -> (usize, u64) {
    (
        usize::try_from(ino / 64).unwrap_or(usize::MAX),
        1 << (ino % 64),
    )
}

/// The path of `name` inside the directory at path `dir`.
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    if dir.len() > 1 {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A name in a directory, its bytes inline up to 24 (most names): looking one up then costs
/// no second cache miss for the key's bytes.
type Name = smallvec::SmallVec<[u8; 24]>;

/// The table. Node ids are never reused within a session.
#[derive(Debug)]
pub struct Inodes {
    nodes: HashMap<u64, Node>,
    children: HashMap<u64, HashMap<Name, u64>>,
    by_script_ino: InoMap,
    next: u64,
    /// Counts changes of a node's primary name or directory (renames, and the rarer ways a
    /// path changes): a path made when it had another value may be out of date.
    moves: u64,
    /// Counts what may give a name or a script ino another node id (a name removed or
    /// replaced: unlink, rename, exchange; a directory dropped; a script ino mapped anew).
    /// With a directory's `child_drops` (its names whose node the kernel forgot, and which
    /// had no script ino to get their id back by), this is
    /// `unnamings(dir)`: a node id found for a name in `dir` when it had another value may be
    /// out of date. Forgetting nodes elsewhere (thousands at a time after `drop_caches`)
    /// leaves a directory's count alone.
    unnamings: u64,
    /// One bit per node id: made by this mount with no extended attributes, and given none
    /// since (`set_bare`). Kept by id, not in `Node`, so that the mark outlives the kernel's
    /// forgetting the node: a node with a script ino gets its id back when it is looked up
    /// again (after `drop_caches`, or a listing of thousands of names), and the mark with it.
    bare: Vec<u64>,
}

impl Default for Inodes {
    fn default() -> Self {
        Self::new()
    }
}

impl Inodes {
    pub fn new() -> Inodes {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                parent: ROOT,
                name: Name::new(),
                alt: Vec::new(),
                lookups: 1,
                opens: 0,
                script_ino: 0,
                kind: libc::S_IFDIR,
                removed: false,
                child_drops: 0,
            },
        );
        Inodes {
            nodes,
            children: HashMap::new(),
            by_script_ino: InoMap::new(),
            next: ROOT + 1,
            moves: 0,
            unnamings: 0,
            bare: Vec::new(),
        }
    }

    /// Number of nodes known (root included).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// See `moves`.
    pub fn moves(&self) -> u64 {
        self.moves
    }

    /// See `unnamings`.
    pub fn unnamings(&self, dir: u64) -> (u64, u64) {
        let drops = self.nodes.get(&dir).map_or(u64::MAX, |n| n.child_drops);
        (self.unnamings, drops)
    }

    /// The path of a node ("/" for the root). Removed nodes keep their last path.
    pub fn path(&self, ino: u64) -> Option<Vec<u8>> {
        self.path_with(ino, None)
    }

    /// The path of `name` inside directory `parent`.
    pub fn child_path(&self, parent: u64, name: &[u8]) -> Option<Vec<u8>> {
        self.path_with(parent, Some(name))
    }

    /// The path of `ino`, with `/name` after it when `child` is given: one walk up the parent
    /// links collecting the names, then written forward into one allocation of the exact size
    /// (one per request; a lookup's path took three).
    fn path_with(&self, ino: u64, child: Option<&[u8]>) -> Option<Vec<u8>> {
        let mut names: smallvec::SmallVec<[&[u8]; 8]> = smallvec::SmallVec::new();
        let mut len = 0;
        let mut cur = ino;
        while cur != ROOT {
            let n = self.nodes.get(&cur)?;
            len += n.name.len() + 1;
            names.push(&n.name);
            cur = n.parent;
            if names.len() > 100_000 {
                return None;
            }
        }
        let total = len + child.map_or(0, |c| c.len() + 1);
        if total == 0 {
            return Some(b"/".to_vec());
        }
        let mut out = Vec::with_capacity(total);
        for name in names.iter().rev() {
            out.push(b'/');
            out.extend_from_slice(name);
        }
        if let Some(c) = child {
            out.push(b'/');
            out.extend_from_slice(c);
        }
        Some(out)
    }

    /// Whether node `ino` is in the table.
    pub fn contains(&self, ino: u64) -> bool {
        self.nodes.contains_key(&ino)
    }

    /// The node currently known under `name` in `parent`.
    pub fn child(&self, parent: u64, name: &[u8]) -> Option<u64> {
        self.children.get(&parent)?.get(name).copied()
    }

    /// The node currently known under `name` in `parent`, with its file type bits last seen
    /// (what a plain READDIR entry needs).
    pub fn child_kind(&self, parent: u64, name: &[u8]) -> Option<(u64, u32)> {
        let id = self.child(parent, name)?;
        Some((id, self.nodes.get(&id)?.kind))
    }

    /// The directory a node's primary name is in (the root is its own parent).
    pub fn parent(&self, ino: u64) -> Option<u64> {
        self.nodes.get(&ino).map(|n| n.parent)
    }

    /// File type bits last seen for a node.
    pub fn kind(&self, ino: u64) -> Option<u32> {
        self.nodes.get(&ino).map(|n| n.kind)
    }

    /// Record a successful lookup of `name` in `parent` whose stat had `script_ino`, `kind`
    /// (S_IFMT bits) and `nlink`; returns the node id and counts one kernel reference.
    pub fn lookup(
        &mut self,
        parent: u64,
        name: &[u8],
        script_ino: u64,
        kind: u32,
        nlink: u32,
    ) -> u64 {
        let id = self.resolve(parent, name, script_ino, kind, nlink);
        self.count_lookup(id);
        id
    }

    /// `lookup` for the node an operation just made, and whether it is one the table had
    /// never seen (a new id; ids are not reused): a script may hand out a node it had.
    pub fn lookup_made(
        &mut self,
        parent: u64,
        name: &[u8],
        script_ino: u64,
        kind: u32,
        nlink: u32,
    ) -> (u64, bool) {
        let first_new = self.next;
        let id = self.lookup(parent, name, script_ino, kind, nlink);
        (id, id >= first_new)
    }

    /// The node id that script inode `script_ino` has or will have (for readdir's d_ino, so it
    /// matches st_ino before the entry is looked up).
    pub fn id_for(&mut self, script_ino: u64) -> Option<u64> {
        if script_ino == 0 {
            return None;
        }
        if let Some(id) = self.by_script_ino.get(script_ino) {
            return Some(id);
        }
        let id = self.next;
        self.next += 1;
        self.by_script_ino.insert(script_ino, id);
        Some(id)
    }

    /// Ask the CPU to fetch where `id_for(script_ino)` looks (see `InoMap::prefetch`).
    pub fn prefetch_script_ino(&self, script_ino: u64) {
        self.by_script_ino.prefetch(script_ino);
    }

    /// Count one kernel reference to a node returned by `resolve`.
    pub fn count_lookup(&mut self, id: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.lookups += 1;
        }
    }

    /// True when no name refers to the node any more (it was unlinked while referenced).
    pub fn is_removed(&self, ino: u64) -> bool {
        self.nodes.get(&ino).is_some_and(|n| n.removed)
    }

    /// Mark node `ino` as having no extended attributes (it was just made through the mount).
    /// The mark stays with the id: when the kernel forgets the node and looks its script ino
    /// up again, the node gets the same id back and is still marked (see `bare`).
    pub fn set_bare(&mut self, ino: u64) {
        if !self.nodes.contains_key(&ino) {
            return;
        }
        let (word, bit) = bare_bit(ino);
        if self.bare.len() <= word {
            self.bare.resize(word + 1, 0);
        }
        self.bare[word] |= bit;
    }

    /// Whether node `ino` is marked as having no extended attributes.
    pub fn is_bare(&self, ino: u64) -> bool {
        let (word, bit) = bare_bit(ino);
        self.bare.get(word).is_some_and(|w| w & bit != 0) && self.nodes.contains_key(&ino)
    }

    /// Node `ino` may have extended attributes from now on (one is being set).
    pub fn clear_bare(&mut self, ino: u64) {
        let (word, bit) = bare_bit(ino);
        if let Some(w) = self.bare.get_mut(word) {
            *w &= !bit;
        }
    }

    /// The node for `name` in `parent` (creating it), without counting a kernel reference.
    /// A script `ino` seen before gets its old node id back, so inode numbers stay the same
    /// after the kernel forgets a node.
    pub fn resolve(
        &mut self,
        parent: u64,
        name: &[u8],
        script_ino: u64,
        kind: u32,
        nlink: u32,
    ) -> u64 {
        let groups = script_ino != 0 && kind != libc::S_IFDIR && nlink > 1;
        let remember = script_ino != 0;
        if let Some(id) = self.child(parent, name) {
            let n = &self.nodes[&id];
            let same = n.script_ino == 0 || script_ino == 0 || n.script_ino == script_ino;
            let type_ok = (n.kind == libc::S_IFDIR) == (kind == libc::S_IFDIR);
            if same && type_ok {
                if remember && n.script_ino == 0 {
                    self.set_script_ino(id, script_ino);
                }
                return id;
            }
            // The script replaced what this name refers to behind the kernel's back.
            self.unlink(parent, name);
        }
        if groups
            && let Some(id) = self.by_script_ino.get(script_ino)
            && let Some(n) = self.nodes.get_mut(&id)
            && n.kind == kind
        {
            if n.removed {
                n.parent = parent;
                n.name = Name::from_slice(name);
                n.removed = false;
                self.moves += 1;
            } else {
                n.alt.push((parent, name.to_vec()));
            }
            self.children
                .entry(parent)
                .or_default()
                .insert(Name::from_slice(name), id);
            return id;
        }
        // A script ino seen before gets its old id back when that node is gone; the map
        // then points at the new node (one probe of the map either way).
        let id = if remember {
            match self.by_script_ino.get(script_ino) {
                Some(id) if !self.nodes.contains_key(&id) => id,
                old => {
                    // Mapped anew when the old id's node is still there (see `unnamings`).
                    self.unnamings += u64::from(old.is_some());
                    self.next += 1;
                    self.by_script_ino.insert(script_ino, self.next - 1);
                    self.next - 1
                }
            }
        } else {
            self.next += 1;
            self.next - 1
        };
        self.nodes.insert(
            id,
            Node {
                parent,
                name: Name::from_slice(name),
                alt: Vec::new(),
                lookups: 0,
                opens: 0,
                script_ino: if remember { script_ino } else { 0 },
                kind,
                removed: false,
                child_drops: 0,
            },
        );
        self.children
            .entry(parent)
            .or_default()
            .insert(Name::from_slice(name), id);
        id
    }

    /// A hard link of node `ino` was made as `name` in `parent`; counts one kernel reference.
    pub fn link(&mut self, ino: u64, parent: u64, name: &[u8]) {
        if self.child(parent, name).is_some() {
            self.unlink(parent, name);
        }
        let Some(n) = self.nodes.get_mut(&ino) else {
            return;
        };
        if n.removed {
            n.parent = parent;
            n.name = Name::from_slice(name);
            n.removed = false;
            self.moves += 1;
        } else {
            n.alt.push((parent, name.to_vec()));
        }
        n.lookups += 1;
        self.children
            .entry(parent)
            .or_default()
            .insert(Name::from_slice(name), ino);
    }

    fn set_script_ino(&mut self, id: u64, script_ino: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.script_ino = script_ino;
        }
        if self
            .by_script_ino
            .insert(script_ino, id)
            .is_some_and(|old| old != id)
        {
            self.unnamings += 1;
        }
    }

    /// The kernel dropped `n` references.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
        }
        self.maybe_drop(ino);
    }

    pub fn opened(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.opens += 1;
        }
    }

    pub fn closed(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.opens = n.opens.saturating_sub(1);
        }
        self.maybe_drop(ino);
    }

    fn maybe_drop(&mut self, ino: u64) {
        let Some(n) = self.nodes.get(&ino) else {
            return;
        };
        if ino == ROOT || n.lookups > 0 || n.opens > 0 {
            return;
        }
        // Keep directories that still have known children: their paths are needed.
        if self.children.get(&ino).is_some_and(|c| !c.is_empty()) {
            return;
        }
        let Some(n) = self.nodes.remove(&ino) else {
            return;
        };
        if n.removed {
            // Gone for good: a script may give its ino to a node made later by other means.
            self.clear_bare(ino);
        }
        if n.kind == libc::S_IFDIR {
            self.unnamings += 1;
        }
        // A node with a script ino gets its id back when its name is looked up again (see
        // `resolve`): ids found for its names stay good.
        let same_id_again = n.script_ino != 0;
        if !n.removed {
            self.remove_name(n.parent, &n.name, ino);
            if !same_id_again {
                self.child_dropped(n.parent);
            }
        }
        for (p, name) in &n.alt {
            self.remove_name(*p, name, ino);
            if !same_id_again {
                self.child_dropped(*p);
            }
        }
        self.children.remove(&ino);
        // The parent may now be droppable too.
        if n.parent != ino {
            self.maybe_drop(n.parent);
        }
    }

    fn child_dropped(&mut self, dir: u64) {
        if let Some(d) = self.nodes.get_mut(&dir) {
            d.child_drops += 1;
        }
    }

    fn remove_name(&mut self, parent: u64, name: &[u8], ino: u64) {
        if let Some(c) = self.children.get_mut(&parent)
            && c.get(name) == Some(&ino)
        {
            c.remove(name);
            if c.is_empty() {
                self.children.remove(&parent);
            }
        }
    }

    /// `name` in `parent` no longer exists (unlink, rmdir, or replaced by a rename).
    pub fn unlink(&mut self, parent: u64, name: &[u8]) {
        let Some(id) = self.child(parent, name) else {
            return;
        };
        self.unnamings += 1;
        self.remove_name(parent, name, id);
        if let Some(n) = self.nodes.get_mut(&id) {
            if n.parent == parent && n.name.as_slice() == name {
                if let Some((p, nm)) = n.alt.pop() {
                    n.parent = p;
                    n.name = Name::from_vec(nm);
                    self.moves += 1;
                } else {
                    n.removed = true;
                }
            } else {
                n.alt.retain(|(p, nm)| !(*p == parent && nm == name));
            }
        }
        self.maybe_drop(id);
    }

    /// `name` in `parent` was renamed to `newname` in `newparent` (replacing any target).
    pub fn rename(&mut self, parent: u64, name: &[u8], newparent: u64, newname: &[u8]) {
        if parent == newparent && name == newname {
            return;
        }
        let moving = self.child(parent, name);
        self.unnamings += 1;
        if let Some(target) = self.child(newparent, newname) {
            if Some(target) == moving {
                // Renaming one hard link onto another of the same node: the source name goes.
                self.unlink(parent, name);
                return;
            }
            self.unlink(newparent, newname);
        }
        let Some(id) = moving else {
            return;
        };
        self.remove_name(parent, name, id);
        if let Some(n) = self.nodes.get_mut(&id) {
            if n.parent == parent && n.name.as_slice() == name {
                n.parent = newparent;
                n.name = Name::from_slice(newname);
                self.moves += 1;
            } else {
                for alt in n.alt.iter_mut() {
                    if alt.0 == parent && alt.1 == name {
                        *alt = (newparent, newname.to_vec());
                    }
                }
            }
        }
        self.children
            .entry(newparent)
            .or_default()
            .insert(Name::from_slice(newname), id);
        self.maybe_drop(parent);
    }

    /// RENAME_EXCHANGE: the two names swap nodes.
    pub fn exchange(&mut self, parent: u64, name: &[u8], newparent: u64, newname: &[u8]) {
        let a = self.child(parent, name);
        let b = self.child(newparent, newname);
        self.unnamings += 1;
        for (id, from, to) in [
            (a, (parent, name), (newparent, newname)),
            (b, (newparent, newname), (parent, name)),
        ] {
            let Some(id) = id else { continue };
            if let Some(n) = self.nodes.get_mut(&id) {
                if n.parent == from.0 && n.name.as_slice() == from.1 {
                    n.parent = to.0;
                    n.name = Name::from_slice(to.1);
                    self.moves += 1;
                } else {
                    for alt in n.alt.iter_mut() {
                        if alt.0 == from.0 && alt.1 == from.1 {
                            *alt = (to.0, to.1.to_vec());
                        }
                    }
                }
            }
        }
        match a {
            Some(a) => {
                self.children
                    .entry(newparent)
                    .or_default()
                    .insert(Name::from_slice(newname), a);
            }
            None => self.remove_name_any(newparent, newname),
        }
        match b {
            Some(b) => {
                self.children
                    .entry(parent)
                    .or_default()
                    .insert(Name::from_slice(name), b);
            }
            None => self.remove_name_any(parent, name),
        }
    }

    fn remove_name_any(&mut self, parent: u64, name: &[u8]) {
        self.unnamings += 1;
        if let Some(c) = self.children.get_mut(&parent) {
            c.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REG: u32 = libc::S_IFREG;
    const DIR: u32 = libc::S_IFDIR;

    fn p(t: &Inodes, ino: u64) -> String {
        String::from_utf8(t.path(ino).unwrap()).unwrap()
    }

    #[test]
    fn paths_follow_parents() {
        let mut t = Inodes::new();
        assert_eq!(p(&t, ROOT), "/");
        let a = t.lookup(ROOT, b"a", 0, DIR, 2);
        let b = t.lookup(a, b"b", 0, REG, 1);
        assert_eq!(p(&t, b), "/a/b");
        assert_eq!(t.lookup(a, b"b", 0, REG, 1), b, "same name, same node");
        assert_eq!(t.child_path(a, b"c").unwrap(), b"/a/c");
        assert_eq!(t.child_path(ROOT, b"c").unwrap(), b"/c");
    }

    #[test]
    fn renaming_a_directory_moves_descendants() {
        let mut t = Inodes::new();
        let a = t.lookup(ROOT, b"a", 0, DIR, 2);
        let b = t.lookup(a, b"b", 0, DIR, 2);
        let c = t.lookup(b, b"c", 0, REG, 1);
        let x = t.lookup(ROOT, b"x", 0, DIR, 2);
        t.rename(a, b"b", x, b"y");
        assert_eq!(p(&t, c), "/x/y/c");
        assert_eq!(t.child(a, b"b"), None);
        assert_eq!(t.child(x, b"y"), Some(b));
    }

    #[test]
    fn rename_over_existing_target_replaces_it() {
        let mut t = Inodes::new();
        let f = t.lookup(ROOT, b"f", 0, REG, 1);
        let g = t.lookup(ROOT, b"g", 0, REG, 1);
        t.rename(ROOT, b"f", ROOT, b"g");
        assert_eq!(t.child(ROOT, b"g"), Some(f));
        assert_eq!(p(&t, f), "/g");
        // g is still referenced by the kernel: it stays, removed, with its last path.
        assert_eq!(p(&t, g), "/g");
        t.forget(g, 1);
        assert!(!t.contains(g));
        assert_eq!(t.child(ROOT, b"g"), Some(f));
    }

    #[test]
    fn a_bare_mark_stays_with_its_node_until_it_is_unlinked_and_dropped() {
        let mut t = Inodes::new();
        let (f, new) = t.lookup_made(ROOT, b"f", 5, REG, 1);
        assert!(new, "a node never seen");
        assert!(!t.is_bare(f), "unmarked until marked");
        t.set_bare(f);
        t.rename(ROOT, b"f", ROOT, b"g");
        t.link(f, ROOT, b"h");
        assert_eq!(t.child(ROOT, b"h"), Some(f));
        assert!(t.is_bare(f), "renamed and linked, still the same node");
        t.clear_bare(f);
        assert!(!t.is_bare(f));
        t.set_bare(f);
        t.forget(f, 2);
        assert!(!t.contains(f), "forgotten");
        assert!(!t.is_bare(f), "no node, no mark to find");
        let (again, new) = t.lookup_made(ROOT, b"g", 5, REG, 1);
        assert_eq!(again, f, "the script ino gets its old id back");
        assert!(!new && t.is_bare(again), "not new, and still marked");
        // Unlinked under both names, then forgotten: the mark goes with the node, so a node
        // the script gives that ino later is not taken for one without attributes.
        t.unlink(ROOT, b"g");
        t.unlink(ROOT, b"h");
        t.forget(f, 1);
        assert!(!t.contains(f));
        let other = t.lookup(ROOT, b"x", 5, REG, 1);
        assert_eq!(other, f, "the ino's old id again");
        assert!(!t.is_bare(other), "but no longer marked");
        // A node without a script ino gets a new id after a forget: never marked.
        let (n, new) = t.lookup_made(ROOT, b"n", 0, REG, 1);
        assert!(new);
        t.set_bare(n);
        t.forget(n, 1);
        let n2 = t.lookup(ROOT, b"n", 0, REG, 1);
        assert_ne!(n2, n);
        assert!(!t.is_bare(n2));
    }

    #[test]
    fn hard_links_share_a_node() {
        let mut t = Inodes::new();
        let a = t.lookup(ROOT, b"a", 42, REG, 2);
        let b = t.lookup(ROOT, b"b", 42, REG, 2);
        assert_eq!(a, b);
        t.unlink(ROOT, b"a");
        assert_eq!(p(&t, a), "/b", "the other name takes over");
        // Different ino with nlink 1 never groups.
        let c = t.lookup(ROOT, b"c", 7, REG, 1);
        let d = t.lookup(ROOT, b"d", 7, REG, 1);
        assert_ne!(c, d);
    }

    #[test]
    fn readdir_ids_match_later_lookups() {
        let mut t = Inodes::new();
        let id = t.id_for(77).unwrap();
        assert_eq!(t.id_for(77), Some(id));
        assert_eq!(t.lookup(ROOT, b"x", 77, REG, 1), id);
        assert_eq!(t.id_for(0), None);
    }

    #[test]
    fn link_adds_a_name_to_the_same_node() {
        let mut t = Inodes::new();
        let d = t.lookup(ROOT, b"d", 0, DIR, 2);
        let a = t.lookup(ROOT, b"a", 5, REG, 1);
        t.link(a, d, b"b");
        assert_eq!(t.child(d, b"b"), Some(a));
        t.unlink(ROOT, b"a");
        assert_eq!(p(&t, a), "/d/b");
        // A later lookup of another name with the same ino and nlink > 1 joins the node too.
        let c = t.lookup(ROOT, b"c", 5, REG, 2);
        assert_eq!(c, a);
    }

    #[test]
    fn unlinked_open_node_keeps_its_path_until_closed() {
        let mut t = Inodes::new();
        let f = t.lookup(ROOT, b"f", 0, REG, 1);
        t.opened(f);
        t.forget(f, 1);
        t.unlink(ROOT, b"f");
        assert_eq!(p(&t, f), "/f");
        assert_eq!(t.child(ROOT, b"f"), None);
        let g = t.lookup(ROOT, b"f", 0, REG, 1);
        assert_ne!(f, g, "a new file under the old name is a new node");
        t.closed(f);
        assert!(!t.contains(f));
        assert_eq!(t.child(ROOT, b"f"), Some(g));
    }

    #[test]
    fn forget_drops_nodes_and_empty_parents() {
        let mut t = Inodes::new();
        let a = t.lookup(ROOT, b"a", 0, DIR, 2);
        let b = t.lookup(a, b"b", 0, REG, 1);
        t.forget(a, 1);
        assert!(t.contains(a), "a directory with a known child stays");
        t.forget(b, 1);
        assert!(!t.contains(b));
        assert!(!t.contains(a));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn exchange_swaps_names() {
        let mut t = Inodes::new();
        let f = t.lookup(ROOT, b"f", 0, REG, 1);
        let d = t.lookup(ROOT, b"d", 0, DIR, 2);
        let c = t.lookup(d, b"c", 0, REG, 1);
        t.exchange(ROOT, b"f", ROOT, b"d");
        assert_eq!(p(&t, f), "/d");
        assert_eq!(p(&t, d), "/f");
        assert_eq!(p(&t, c), "/f/c");
    }

    #[test]
    fn type_change_behind_the_kernels_back_gives_a_new_node() {
        let mut t = Inodes::new();
        let f = t.lookup(ROOT, b"x", 0, REG, 1);
        let d = t.lookup(ROOT, b"x", 0, DIR, 2);
        assert_ne!(f, d);
    }

    /// `unnamings` moves whenever a name's node id found before may no longer be its node,
    /// and not for lookups, new names or forgets that drop nothing.
    #[test]
    fn unnamings_count_what_may_give_a_name_another_node() {
        let mut t = Inodes::new();
        let mut last = t.unnamings(ROOT);
        let mut moved = |t: &Inodes| {
            let m = t.unnamings(ROOT) != last;
            last = t.unnamings(ROOT);
            m
        };
        let f = t.lookup(ROOT, b"f", 7, REG, 1);
        t.lookup(ROOT, b"f", 7, REG, 1);
        t.lookup(ROOT, b"g", 8, REG, 1);
        assert_eq!(t.id_for(9), t.id_for(9));
        t.forget(f, 1);
        assert!(
            !moved(&t),
            "lookups, id_for and a forget leaving a reference"
        );
        t.rename(ROOT, b"f", ROOT, b"h");
        assert!(moved(&t), "rename");
        t.exchange(ROOT, b"h", ROOT, b"g");
        assert!(moved(&t), "exchange");
        t.unlink(ROOT, b"g");
        assert!(moved(&t), "unlink");
        let d = t.lookup(ROOT, b"d", 0, REG, 1);
        t.forget(d, 1);
        assert!(moved(&t), "a node without a script ino dropped");
        // Script ino 8 (the node now named h) under another name with nlink 1 (no hard
        // link): a new node, and the script ino maps to it.
        t.lookup(ROOT, b"k", 8, REG, 1);
        assert!(moved(&t), "a script ino mapped anew");
        // A file forgotten in another directory leaves the root's count alone; a directory
        // dropped moves every count.
        let sub = t.lookup(ROOT, b"sub", 11, DIR, 2);
        let f = t.lookup(sub, b"f", 12, REG, 1);
        let g = t.lookup(sub, b"g", 0, REG, 1);
        let before = t.unnamings(sub);
        assert!(!moved(&t));
        t.forget(f, 1);
        assert_eq!(
            t.unnamings(sub),
            before,
            "a file with a script ino dropped in sub"
        );
        assert_eq!(t.lookup(sub, b"f", 12, REG, 1), f, "it gets its id back");
        t.forget(g, 1);
        assert!(!moved(&t), "a file dropped elsewhere");
        assert_ne!(
            t.unnamings(sub),
            before,
            "a file without a script ino dropped in sub"
        );
        t.forget(f, 2);
        t.forget(sub, 1);
        assert!(moved(&t), "a directory dropped");
    }
}
