//! statfs, extended attributes and access.

use fuser::Errno;

use crate::replies::ReplyXattr;
use mlua::Value;

use super::{Dispatch, Fail, first, type_or_value};
use crate::convert::Bytes;
use crate::convert::Statfs;
use crate::ops::OpName;

/// Answer getxattr/listxattr: the size when asked for it, ERANGE when the buffer is short.
pub(super) fn xattr_reply(reply: ReplyXattr, size: u32, r: Result<Vec<u8>, Fail>) {
    match r {
        Err(e) => reply.error(e),
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
    }
}

/// Whether extended attribute `name` is in a namespace a node without extended attributes
/// answers ENODATA for (`fs.no_xattrs_until_set`): `user.`, `security.`, `trusted.`, as tmpfs
/// does. Other names (`system.`, unknown namespaces) still go to the script, which may refuse
/// them with another errno.
fn plain_namespace(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name.starts_with(b"security.") || name.starts_with(b"trusted.")
}

impl Dispatch {
    /// A setxattr or removexattr reached node `ino`: whatever the script makes of it, the node
    /// may have extended attributes from now on (`fs.no_xattrs_until_set`'s mark goes).
    fn may_have_xattrs(&self, ino: u64) {
        if self.ops.no_xattrs_until_set {
            self.inodes.borrow_mut().clear_bare(ino);
        }
    }

    /// EOPNOTSUPP, without the script, for a name it declared unsupported
    /// (`fs.unsupported_xattrs`): getxattr, setxattr and removexattr.
    fn supported_xattr(&self, name: &[u8]) -> Result<(), Fail> {
        if self.ops.unsupported_xattr(name) {
            return Err(Errno::EOPNOTSUPP);
        }
        Ok(())
    }

    /// statfs; without it, libfuse's defaults.
    pub(super) async fn statfs(&self, ino: u64) -> Result<Statfs, Fail> {
        if !self.has(OpName::Statfs) {
            return Ok(Statfs::default());
        }
        let path = self.path(ino).unwrap_or_else(|_| b"/".to_vec());
        let out = self.call(OpName::Statfs, Bytes(&path)).await?;
        match first(out) {
            Some(Value::Table(t)) => {
                Statfs::from_lua(&t).map_err(|e| self.bad_value(OpName::Statfs, &path, e))
            }
            None | Some(Value::Nil) => Ok(Statfs::default()),
            other => Err(self.bad_value(
                OpName::Statfs,
                &path,
                format!("expected a table, got {}", type_or_value(&other)),
            )),
        }
    }

    pub(super) async fn setxattr(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: i32,
    ) -> Result<(), Fail> {
        self.supported_xattr(name)?;
        self.may_have_xattrs(ino);
        let path = self.path(ino)?;
        let lpath = Bytes(&path);
        let set = self.table()?;
        if flags & libc::XATTR_CREATE != 0 {
            let _ = set.raw_set("create", true);
        }
        if flags & libc::XATTR_REPLACE != 0 {
            let _ = set.raw_set("replace", true);
        }
        self.call_unit(OpName::Setxattr, (lpath, Bytes(name), Bytes(value), set))
            .await
    }

    /// getxattr. On a node made through the mount and given no extended attribute since, a
    /// plain name is answered ENODATA without the script when it promised such nodes have
    /// none (`fs.no_xattrs_until_set`): the kernel asks every new file for
    /// `security.capability` before its first write (1000 created files: 28.2 -> 27.3 ms), and
    /// `ls -l` asks every file for `security.selinux`, also after the kernel forgot the nodes
    /// (the mark is kept by node id: 2000 files after `drop_caches`, 20.2 -> 17.6 ms).
    ///
    /// A name the script declared unsupported (`fs.unsupported_xattrs`) is answered EOPNOTSUPP
    /// without it. `ls -l` takes that answer for the whole filesystem and asks no further file
    /// for `security.selinux`: 2000 files, one getxattr instead of 2000 round trips.
    pub(super) async fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>, Fail> {
        self.supported_xattr(name)?;
        if self.ops.no_xattrs_until_set
            && plain_namespace(name)
            && self.inodes.borrow().is_bare(ino)
        {
            return Err(Errno::ENODATA);
        }
        let path = self.path(ino)?;
        let lpath = Bytes(&path);
        let out = self.call(OpName::Getxattr, (lpath, Bytes(name))).await?;
        if matches!(out.front(), None | Some(Value::Nil)) {
            return Err(Errno::ENODATA);
        }
        Ok(self
            .want_string(OpName::Getxattr, &path, out)?
            .as_bytes()
            .to_vec())
    }

    /// listxattr: an array of names, sent as NUL-terminated names.
    pub(super) async fn listxattr(&self, ino: u64) -> Result<Vec<u8>, Fail> {
        let path = self.path(ino)?;
        let lpath = Bytes(&path);
        let out = self.call(OpName::Listxattr, lpath).await?;
        let mut buf = Vec::new();
        match first(out) {
            Some(Value::Table(t)) => {
                for v in t.sequence_values::<Value>() {
                    match v {
                        Ok(Value::String(s)) => {
                            buf.extend_from_slice(&s.as_bytes());
                            buf.push(0);
                        }
                        _ => {
                            return Err(self.bad_value(
                                OpName::Listxattr,
                                &path,
                                "names must be strings",
                            ));
                        }
                    }
                }
                Ok(buf)
            }
            None | Some(Value::Nil) => Ok(buf),
            other => Err(self.bad_value(
                OpName::Listxattr,
                &path,
                format!("expected an array of names, got {}", type_or_value(&other)),
            )),
        }
    }

    pub(super) async fn removexattr(&self, ino: u64, name: &[u8]) -> Result<(), Fail> {
        self.supported_xattr(name)?;
        self.may_have_xattrs(ino);
        let path = self.path(ino)?;
        let lpath = Bytes(&path);
        self.call_unit(OpName::Removexattr, (lpath, Bytes(name)))
            .await
    }

    pub(super) async fn access(&self, ino: u64, mask: i32) -> Result<(), Fail> {
        let path = self.path(ino)?;
        let lpath = Bytes(&path);
        self.call_unit(OpName::Access, (lpath, mask)).await
    }
}
