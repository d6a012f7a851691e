#!/usr/bin/python3
"""In-memory filesystem on fusepy (Debian python3-fusepy, libfuse 2), the "Python peer" of
scripts/bench.

Modelled on fusepy's examples/memory.py (a dict of path -> stat dict and path -> data), with
three changes so that it is a fair peer and correct for the benchmark's workloads:
  - readdir lists the directory's own children (memory.py lists every path of the whole
    filesystem, which is wrong below the root); children are kept in a set per directory;
  - file data is a bytearray written in place (memory.py rebuilds the whole bytes object on
    every write, which is quadratic in the file size);
  - absent xattrs raise ENODATA (memory.py answers an empty value), and there is no
    LoggingMixIn / DEBUG logging.
It runs as memory.py does: foreground, fusepy's default multithreaded loop; in addition it
asks for big_writes (libfuse 2 sends 4 KiB writes without it).

usage: bench_memory_fusepy.py MOUNTPOINT [-o opt=val,...]   (e.g. -o attr_timeout=0,entry_timeout=0)
"""

import os
import sys
import warnings
from errno import ENODATA, ENOENT, ENOTEMPTY
from stat import S_IFDIR, S_IFLNK, S_IFREG
from time import time

warnings.simplefilter("ignore")
from fusepy import FUSE, FuseOSError, Operations  # noqa: E402


def split(path):
    head, _, tail = path.rpartition("/")
    return head or "/", tail


class Memory(Operations):
    def __init__(self):
        self.files = {}
        self.data = {}
        self.children = {"/": set()}
        self.fd = 0
        now = time()
        self.files["/"] = dict(
            st_mode=(S_IFDIR | 0o755), st_ctime=now, st_mtime=now, st_atime=now, st_nlink=2
        )

    def _add(self, path, st):
        parent, name = split(path)
        self.files[path] = st
        self.children[parent].add(name)
        now = time()
        self.files[parent]["st_mtime"] = self.files[parent]["st_ctime"] = now

    def _remove(self, path):
        parent, name = split(path)
        self.children[parent].discard(name)
        self.files.pop(path, None)
        self.data.pop(path, None)

    def chmod(self, path, mode):
        self.files[path]["st_mode"] &= 0o770000
        self.files[path]["st_mode"] |= mode
        return 0

    def chown(self, path, uid, gid):
        self.files[path]["st_uid"] = uid
        self.files[path]["st_gid"] = gid

    def create(self, path, mode):
        now = time()
        self._add(
            path,
            dict(st_mode=(S_IFREG | mode), st_nlink=1, st_size=0,
                 st_ctime=now, st_mtime=now, st_atime=now),
        )
        self.data[path] = bytearray()
        self.fd += 1
        return self.fd

    def getattr(self, path, fh=None):
        try:
            return self.files[path]
        except KeyError:
            raise FuseOSError(ENOENT)

    def getxattr(self, path, name, position=0):
        attrs = self.files[path].get("attrs", {})
        try:
            return attrs[name]
        except KeyError:
            raise FuseOSError(ENODATA)

    def listxattr(self, path):
        return list(self.files[path].get("attrs", {}).keys())

    def mkdir(self, path, mode):
        now = time()
        self._add(
            path,
            dict(st_mode=(S_IFDIR | mode), st_nlink=2, st_size=0,
                 st_ctime=now, st_mtime=now, st_atime=now),
        )
        self.children[path] = set()
        self.files[split(path)[0]]["st_nlink"] += 1

    def open(self, path, flags):
        if flags & os.O_TRUNC and path in self.data:
            self.truncate(path, 0)
        self.fd += 1
        return self.fd

    def read(self, path, size, offset, fh):
        return bytes(self.data[path][offset:offset + size])

    def readdir(self, path, fh):
        return [".", ".."] + list(self.children[path])

    def readlink(self, path):
        return bytes(self.data[path]).decode()

    def removexattr(self, path, name):
        attrs = self.files[path].get("attrs", {})
        try:
            del attrs[name]
        except KeyError:
            raise FuseOSError(ENODATA)

    def rename(self, old, new):
        if new in self.children and self.children[new]:
            raise FuseOSError(ENOTEMPTY)
        st = self.files[old]
        data = self.data.get(old)
        kids = self.children.pop(old, None)
        self._remove(old)
        self._remove(new)
        self._add(new, st)
        if data is not None:
            self.data[new] = data
        if kids is not None:
            # move the subtree (memory.py has no subdirectories to worry about)
            self.children[new] = kids
            prefix = old + "/"
            for p in [p for p in self.files if p.startswith(prefix)]:
                q = new + p[len(old):]
                self.files[q] = self.files.pop(p)
                if p in self.data:
                    self.data[q] = self.data.pop(p)
                if p in self.children:
                    self.children[q] = self.children.pop(p)

    def rmdir(self, path):
        if self.children.get(path):
            raise FuseOSError(ENOTEMPTY)
        self._remove(path)
        self.children.pop(path, None)
        self.files[split(path)[0]]["st_nlink"] -= 1

    def setxattr(self, path, name, value, options, position=0):
        attrs = self.files[path].setdefault("attrs", {})
        attrs[name] = value

    def statfs(self, path):
        return dict(f_bsize=512, f_blocks=4096, f_bavail=2048)

    def symlink(self, target, source):
        self._add(target, dict(st_mode=(S_IFLNK | 0o777), st_nlink=1, st_size=len(source)))
        self.data[target] = bytearray(source.encode())

    def truncate(self, path, length, fh=None):
        d = self.data[path]
        if length < len(d):
            del d[length:]
        else:
            d.extend(b"\0" * (length - len(d)))
        self.files[path]["st_size"] = length

    def unlink(self, path):
        self._remove(path)

    def utimens(self, path, times=None):
        now = time()
        atime, mtime = times if times else (now, now)
        self.files[path]["st_atime"] = atime
        self.files[path]["st_mtime"] = mtime

    def write(self, path, data, offset, fh):
        d = self.data[path]
        end = offset + len(data)
        if offset > len(d):
            d.extend(b"\0" * (offset - len(d)))
        d[offset:end] = data
        self.files[path]["st_size"] = len(d)
        return len(data)


def main():
    args = sys.argv[1:]
    opts = {}
    mnt = None
    while args:
        a = args.pop(0)
        if a == "-o":
            for kv in args.pop(0).split(","):
                k, _, v = kv.partition("=")
                opts[k] = v if v else True
        elif a == "-f":
            pass
        else:
            mnt = a
    if mnt is None:
        sys.exit(__doc__)
    opts.setdefault("fsname", "fusepy-memory")
    opts.setdefault("big_writes", True)
    FUSE(Memory(), mnt, foreground=True, **opts)


if __name__ == "__main__":
    main()
