//! Directory entries: mknod, mkdir, symlink, link (which answer with the new entry: the stat
//! table they return, else getattr's), unlink,
//! rmdir, rename, and readlink. The inode table follows every change that succeeded, and the
//! kernel is told what it would otherwise get wrong about link counts (`crate::nlinks`,
//! `replies::attributes_changed`).

use fuser::Errno;

use super::{Dispatch, Fail};
use crate::convert::Bytes;
use crate::ops::OpName;
use crate::replies;

impl Dispatch {
    pub(super) async fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
    ) -> Result<(u64, crate::convert::Stat), Fail> {
        let path = self.child_path(parent, name)?;
        let out = self
            .call_peek(
                OpName::Mknod,
                (Bytes(&path), self.modeset(mode)?, rdev),
                self.stat_peek(),
            )
            .await?;
        self.new_entry(OpName::Mknod, parent, name, &path, out)
            .await
    }

    pub(super) async fn mkdir(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
    ) -> Result<(u64, crate::convert::Stat), Fail> {
        let path = self.child_path(parent, name)?;
        // Flu's mkdir set has no `dir` key.
        let set = self.modeset(mode & !libc::S_IFMT)?;
        let out = self
            .call_peek(OpName::Mkdir, (Bytes(&path), set), self.stat_peek())
            .await?;
        let made = self
            .new_entry(OpName::Mkdir, parent, name, &path, out)
            .await?;
        // The parent's link count went up.
        replies::attributes_changed(parent);
        Ok(made)
    }

    pub(super) async fn symlink(
        &self,
        parent: u64,
        name: &[u8],
        target: &[u8],
    ) -> Result<(u64, crate::convert::Stat), Fail> {
        let path = self.child_path(parent, name)?;
        let out = self
            .call_peek(
                OpName::Symlink,
                (Bytes(target), Bytes(&path)),
                self.stat_peek(),
            )
            .await?;
        self.new_entry(OpName::Symlink, parent, name, &path, out)
            .await
    }

    /// A hard link: the new name is the same node as `ino`, whatever the script's ino says.
    pub(super) async fn link(
        &self,
        ino: u64,
        newparent: u64,
        newname: &[u8],
    ) -> Result<(u64, crate::convert::Stat), Fail> {
        let from = self.path(ino)?;
        let to = self.child_path(newparent, newname)?;
        let out = self
            .call_peek(OpName::Link, (Bytes(&from), Bytes(&to)), self.stat_peek())
            .await?;
        let st = match self.returned_stat(OpName::Link, &to, out)? {
            Some(st) => st,
            None => self.stat(&to, None).await?,
        };
        self.inodes.borrow_mut().link(ino, newparent, newname);
        Ok((ino, st))
    }

    /// unlink or rmdir.
    pub(super) async fn remove(&self, op: OpName, parent: u64, name: &[u8]) -> Result<(), Fail> {
        let path = self.child_path(parent, name)?;
        self.call_unit(op, Bytes(&path)).await?;
        let gone = {
            let mut inodes = self.inodes.borrow_mut();
            let node = inodes.child_kind(parent, name);
            inodes.unlink(parent, name);
            node
        };
        match op {
            // The parent's link count went down.
            OpName::Rmdir => replies::attributes_changed(parent),
            _ => self.unlinked(gone),
        }
        Ok(())
    }

    pub(super) async fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> Result<(), Fail> {
        if flags & libc::RENAME_WHITEOUT != 0 {
            return Err(Errno::EINVAL);
        }
        let from = self.child_path(parent, name)?;
        let to = self.child_path(newparent, newname)?;
        let set = self.table()?;
        if flags & libc::RENAME_NOREPLACE != 0 {
            let _ = set.raw_set("noreplace", true);
        }
        if flags & libc::RENAME_EXCHANGE != 0 {
            let _ = set.raw_set("exchange", true);
        }
        self.call_unit(OpName::Rename, (Bytes(&from), Bytes(&to), set))
            .await?;
        let (moved, target) = {
            let mut inodes = self.inodes.borrow_mut();
            let moved = inodes.child_kind(parent, name);
            let target = inodes.child_kind(newparent, newname);
            if flags & libc::RENAME_EXCHANGE != 0 {
                inodes.exchange(parent, name, newparent, newname);
            } else {
                inodes.rename(parent, name, newparent, newname);
            }
            (moved, target)
        };
        // A name renamed over loses its node, as an unlinked one does.
        if flags & libc::RENAME_EXCHANGE == 0 {
            self.unlinked(target);
        }
        // A directory moved or replaced: the link counts of both parents change.
        if [moved, target]
            .iter()
            .any(|n| n.is_some_and(|(_, kind)| kind == libc::S_IFDIR))
        {
            replies::attributes_changed(parent);
            if newparent != parent {
                replies::attributes_changed(newparent);
            }
        }
        Ok(())
    }

    pub(super) async fn readlink(&self, ino: u64) -> Result<Vec<u8>, Fail> {
        let path = self.path(ino)?;
        let lpath = Bytes(&path);
        let out = self.call(OpName::Readlink, (lpath, 4096)).await?;
        Ok(self
            .want_string(OpName::Readlink, &path, out)?
            .as_bytes()
            .to_vec())
    }
}
