#!/usr/bin/env flufs
-- luafs.lua: a complete in-memory filesystem (tmpfs-like) for flufs.
--
--   $ flufs lua/luafs.lua /mnt/mem                      # as root: add -o default_permissions
--   $ flufs -o allow_other,default_permissions lua/luafs.lua /mnt/mem
--
-- Everything lives in Lua tables and is gone at unmount.
--
-- Inodes are tables:
--   mode (integer, type bits included), ino, nlink, uid, gid, rdev (devices), size, blocks,
--   access/modification/change (whole seconds) with access_nsec/modification_nsec/change_nsec
--   beside them (flufs reads those; a {sec=, nsec=} table per time made every new node four
--   tables, and creating a node ~3 times dearer): the fields of a stat table, so a node is
--   its own stat table (getattr and readdir pass nodes as they are, and create, mknod,
--   mkdir, symlink and link return the node, which saves flufs a getattr per new entry);
--   xattrs (name -> string, created on first use),
--   regular files: data (chunk index -> string), nalloc (chunks present), opens (open count)
--   directories:   entries (name -> inode), parent (inode)
--   symlinks:      target (string)
--
-- File data is kept in fixed-size chunks of CS bytes: data[k] holds bytes
-- [(k-1)*CS, k*CS).  A missing chunk is a hole and reads as zeros; a chunk may be
-- shorter than CS, the bytes past its end (and below the file size) read as zeros.
-- Invariant: no chunk stores a byte at or beyond the file size, so growing a file
-- never exposes stale data.  Writes overwrite in place (one chunk copy at most per
-- chunk touched); reads copy only the requested range.  Two refinements avoid copies:
-- a write larger than a chunk stores its full chunks as views of the written string
-- (and reading back exactly that range returns the string itself), and a chunk that
-- is appended to in small pieces is kept as a rope (a list of the pieces, sent as they are
-- when read).

local flu = require "flu"

-- The incremental collector, in small steps (2 KiB of allocation each, where the default is
-- 8 KiB): a request never waits for more than a small part of a cycle. The generational one
-- was as fast (1000 creates on a fresh mount: 16.87 against 16.83 ms daemon CPU; the benchmark
-- within noise), but its major collections mark the whole heap at once, and a filesystem's
-- heap is its files: a create then waited 75-81 ms at 120,000 files written with 4 KiB each
-- and 291 ms at 600,000 empty files, growing with the heap, where the incremental one's
-- longest waits were 12 ms and 55 ms (the slowest create in 1000 instead took 0.15-0.41 ms
-- where it took 0.10-0.18).
collectgarbage("incremental", 200, 100, 11)

local errno = flu.errno
local ENOENT, ENOTDIR, EISDIR, EEXIST = errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST
local ENOTEMPTY, EINVAL, EPERM, EBUSY = errno.ENOTEMPTY, errno.EINVAL, errno.EPERM, errno.EBUSY
local ENAMETOOLONG, ENODATA, EOPNOTSUPP = errno.ENAMETOOLONG, errno.ENODATA, errno.EOPNOTSUPP
local EACCES = errno.EACCES

local now, get_context, clone, split = flu.now, flu.get_context, flu.clone, flu.split
local sub, find, match, rep, byte = string.sub, string.find, string.match, string.rep, string.byte
local concat = table.concat
local type, next, pairs, error, tonumber = type, next, pairs, error, tonumber
local gmatch = string.gmatch
local ostime = os.time

local S_IFMT, S_IFDIR, S_IFREG, S_IFLNK = 0xF000, 0x4000, 0x8000, 0xA000
local S_ISUID, S_ISGID, S_IXGRP = 0x800, 0x400, 0x8
local S_SETID = S_ISUID | S_ISGID
local CAP_FSETID_BIT = 0x10 -- 1 << CAP_FSETID (4)
local DAY = 86400
local PERM = 0xFFF -- 07777
local NAME_MAX = 255
local DIR_SIZE = 4096

local CS = 131072 -- chunk size
local CS_BLOCKS = CS // 512
local ZERO = rep("\0", CS)
local ROPE_MAX = 64 -- flatten a rope after this many pieces
local SMALL = 4096 -- appends that keep a chunk this small are concatenated directly

-- statfs figures (4 KiB blocks)
local TOTAL_BLOCKS = 16 * 1024 * 1024 -- 64 GiB
local TOTAL_FILES = 16 * 1024 * 1024

-------------------------------------------------------------------------------
-- Inodes
-------------------------------------------------------------------------------

local last_ino = 0
local ninodes = 0 -- live inodes (for statfs)
local used = 0 -- 512-byte blocks held by file data (for statfs)

-- Only fields every node has: 15 fit the 16 slots a regular file's `data` completes. rdev (0)
-- and blksize (4096) are flufs's defaults; xattrs, data, entries, parent, target and freed are
-- added where they apply. A node is a copy of this template (flu.clone copies its slots as
-- they are, where a constructor would insert the 15 keys one by one), its own values then set.
local NODE = {
	mode = 0, ino = 0, nlink = 1, uid = 0, gid = 0, size = 0, blocks = 0,
	access = 0, access_nsec = 0, modification = 0, modification_nsec = 0,
	change = 0, change_nsec = 0, nalloc = 0, opens = 0,
}

local function new_node(mode, uid, gid)
	last_ino = last_ino + 1
	ninodes = ninodes + 1
	local s, ns = now()
	local node = clone(NODE)
	node.mode, node.ino, node.uid, node.gid = mode, last_ino, uid, gid
	node.access, node.access_nsec, node.modification, node.modification_nsec = s, ns, s, ns
	node.change, node.change_nsec = s, ns
	return node
end

-- 512-byte blocks of a regular file: what is written, at most size rounded to 4 KiB.
local function fblocks(node)
	local b = (node.size + 4095) // 4096 * 8
	local a = node.nalloc * CS_BLOCKS
	if a < b then return a end
	return b
end

local function touch_c(node, s, ns)
	node.change, node.change_nsec = s, ns
end

local function touch_mc(node, s, ns)
	node.modification, node.modification_nsec = s, ns
	node.change, node.change_nsec = s, ns
end

-- An access (read, readdir, readlink) under the relatime rule, as tmpfs does with the default
-- relatime mount (relatime_need_update in Linux's fs/inode.c): atime is set to now when it is
-- not newer than mtime or ctime, or is at least a day old. The kernel marks FUSE inodes
-- S_NOATIME and leaves atime to the file system. Runs on every read: comparisons first, and
-- the clock is read (os.time: seconds, no allocation) only when atime is newer than both.
-- Only accesses that reach luafs count: data the kernel serves from its page cache (within
-- one open, or with keep_cache) and symlink targets it caches (FUSE_CACHE_SYMLINKS) do not.
local function access(node)
	local as, t = node.access, node.modification
	if as > t or (as == t and node.access_nsec > node.modification_nsec) then
		t = node.change
		if (as > t or (as == t and node.access_nsec > node.change_nsec))
			and ostime() - as < DAY then
			return
		end
	end
	node.access, node.access_nsec = now()
end

-- The uid and gid of the daemon, for the root directory.
local function daemon_ids()
	local ok, uid, gid = pcall(function()
		local f = io.open("/proc/self/status")
		if not f then return end
		local s = f:read("a")
		f:close()
		return tonumber(match(s, "\nUid:%s*%d+%s+(%d+)")), tonumber(match(s, "\nGid:%s*%d+%s+(%d+)"))
	end)
	if ok then return uid or 0, gid or 0 end
	return 0, 0
end

local root
do
	local uid, gid = daemon_ids()
	root = new_node(S_IFDIR | 0x1ED, uid, gid) -- 0755
	root.nlink = 2
	root.size = DIR_SIZE
	root.entries = {}
	root.parent = root
end

-- File data dropped (a file removed, cut short or written over): Lua paces its collector by
-- what is allocated, not by what dies, so without a nudge the memory stayed taken until as
-- much again was allocated (rm -rf of 300 MB of files: RSS 331 MB three seconds later, 22 MB
-- with this and flufs's trimming; a 256 MiB file written over three times: RSS 522 MB, 344
-- MB, and 262 MB once flufs also collected while idle). The collector is told of what was
-- dropped as if it had been allocated, once that is a quarter of the heap (and at least 16
-- MiB). It then frees as it goes: rm -rf of those 300 MB took ~390 ms instead of ~300,
-- against ~370 for the removal and one full collection after.
local DROP_MIN = 16 * 1024 * 1024
local dropped = 0

local function drop_bytes(n)
	dropped = dropped + n
	if dropped >= DROP_MIN and dropped >= collectgarbage("count") * 256 then
		collectgarbage("step", dropped // 1024)
		dropped = 0
	end
end

local function drop_blocks(blocks)
	used = used - blocks
	drop_bytes(blocks * 512)
end

-- Drop an inode that has no links left once nobody has it open.
local function maybe_free(node)
	if node.nlink <= 0 and node.opens <= 0 and not node.freed then
		node.freed = true
		ninodes = ninodes - 1
		if node.data then
			local blocks = fblocks(node)
			node.data = {}
			node.nalloc = 0
			node.size = 0
			node.blocks = 0
			drop_blocks(blocks) -- last: the collector may run, and must find the data dead
		end
	end
end

-------------------------------------------------------------------------------
-- Paths
-------------------------------------------------------------------------------

-- Paths looked up lately -> node, in front of the walk from the root (which makes a string
-- per name on the way). Only unlink, rmdir and rename take a name away or give it another node.
-- unlink and rmdir take out their own path (nothing is below a file or an empty directory); a
-- rename empties the whole cache (a renamed directory moves every path below it). At PATHS_MAX
-- entries it starts over.
local paths, npaths = {}, 0
local PATHS_MAX = 16384

-- The last path walk found missing in an existing directory, with that directory and the
-- missing name: the kernel looks a name up before it creates it (LOOKUP, then CREATE, MKDIR,
-- MKNOD or SYMLINK of the same path), and parent_of then takes them from here instead of
-- splitting the path and walking to its directory again (~3% of a created file's
-- instructions). In a directory made through the mount flufs answers that lookup itself (see
-- fs.reuse_listings below), so this serves the others. Forgotten with the paths: the directory
-- could be gone or elsewhere after an unlink, rmdir or rename.
local miss_path, miss_dir, miss_name

local function forget_paths()
	if npaths > 0 then paths, npaths = {}, 0 end
	miss_path, miss_dir, miss_name = nil, nil, nil
end

-- Only path loses its node; and the last missing name is forgotten, since it may be in a
-- directory that goes.
local function forget_path(path)
	paths[path] = nil
	miss_path, miss_dir, miss_name = nil, nil, nil
end

local function remember_path(path, node)
	if npaths >= PATHS_MAX then paths, npaths = {}, 0 end
	paths[path] = node
	npaths = npaths + 1
end

-- Walk from the root, for a path not in the path cache: the node, or nil and ENOENT /
-- ENOTDIR / ENAMETOOLONG.
local function walk_names(path)
	local node = root
	local pos, len = 2, #path
	while pos <= len do
		local e = find(path, "/", pos, true)
		local name
		if e then
			name = sub(path, pos, e - 1)
			pos = e + 1
		else
			name = sub(path, pos)
			pos = len + 1
		end
		if name ~= "" then
			local ents = node.entries
			if not ents then return nil, ENOTDIR end
			local child = ents[name]
			if not child then
				if #name > NAME_MAX then return nil, ENAMETOOLONG end
				if not e then miss_path, miss_dir, miss_name = path, node, name end
				return nil, ENOENT
			end
			node = child
		end
	end
	remember_path(path, node)
	return node
end

-- The node of path: from the path cache, else walked from the root (see walk_names).
local function walk(path)
	local node = paths[path]
	if node then return node end
	return walk_names(path)
end

-- walk, raising its errno.
local function lookup(path)
	local node, e = walk(path)
	if not node then error(e) end
	return node
end

-- The directory holding path, and the last name of path.
local function parent_of(path)
	if path == miss_path then return miss_dir, miss_name end
	-- flu.split cuts at the last "/" in one scan (a Lua pattern, "^(.*)/([^/]+)$", took
	-- ~2,000 instructions: a capture and a backtrack per byte of the name).
	local dpath, name = split(path)
	if not dpath or name == "" then error(EINVAL) end
	local dir = lookup(dpath)
	if not dir.entries then error(ENOTDIR) end
	return dir, name
end

-- Like parent_of, for a name that is about to be created.
local function new_entry(path)
	local dir, name = parent_of(path)
	if dir.entries[name] then error(EEXIST) end
	if #name > NAME_MAX then error(ENAMETOOLONG) end
	return dir, name
end

-- Owner and permission bits of a new inode in dir.
local ctx = {}
local function owner(dir, mode)
	local c = get_context(ctx) or ctx
	local umask = c.umask
	if umask then mode = mode & ~umask end
	local gid = c.gid or 0
	if dir.mode & S_ISGID ~= 0 then gid = dir.gid end
	return c.uid or 0, gid, mode
end

-- The caller's /proc/<pid>/status (FUSE passes the thread id, whose credentials these are).
local function caller_status(pid)
	if not pid or pid <= 0 then return nil end
	local f = io.open("/proc/" .. pid .. "/status")
	if not f then return nil end
	local s = f:read("a")
	f:close()
	return s
end

-- capable(CAP_FSETID) for the caller; without /proc, root counts as privileged.
local function capable_fsetid(status, uid)
	local cap = status and match(status, "\nCapEff:%s*%x*(%x%x)\n")
	if cap then return tonumber(cap, 16) & CAP_FSETID_BIT ~= 0 end
	return uid == 0
end

-- in_group_p: gid is the caller's (fs)gid or one of its supplementary groups.
local function in_group(status, cgid, gid)
	if cgid == gid then return true end
	local groups = status and match(status, "\nGroups:([^\n]*)")
	if groups then
		for g in gmatch(groups, "%d+") do
			if tonumber(g) == gid then return true end
		end
	end
	return false
end

-- Drop set-user-ID / set-group-ID as Linux does on write and truncate of a regular file
-- (setattr_should_drop_suidgid) or on chown of a non-directory (chown_common), for the
-- calling process; call only when node.mode has S_ISUID or S_ISGID (a cheap test first).
--   write, truncate: nothing if the caller has CAP_FSETID; else S_ISUID, and S_ISGID when
--                    group-execute is set or the caller is not in the file's group.
--   chown:           S_ISUID always; S_ISGID when group-execute is set or the caller is
--                    neither in the file's (old) group nor has CAP_FSETID.
-- Since luafs does all of this itself it says so (fs.handle_killpriv below): the kernel then
-- leaves setid bits to it and skips asking for security.capability before every write (it
-- checks once per file, and again after a setxattr of a security.* name). The kernel learns of a
-- mode changed here only when it next fetches the attributes: stat(2) does at once (the write
-- invalidated mtime and size), a statx asking for the mode alone may see the old mode until
-- attr_timeout runs out.
local function drop_setid(node, chown)
	local mode = node.mode
	local kill = mode & S_ISUID
	local sgid = mode & S_ISGID ~= 0
	if chown and not sgid then
		node.mode = mode & ~kill
		return
	end
	local c = get_context(ctx) or ctx
	local status = caller_status(c.pid)
	local cap = capable_fsetid(status, c.uid)
	if cap and not chown then return end
	if sgid and (mode & S_IXGRP ~= 0 or not (cap or in_group(status, c.gid, node.gid))) then
		kill = kill | S_ISGID
	end
	node.mode = mode & ~kill
end

-- A new entry name -> new node in dir, which changes when the node was made.
local function link_in(dir, name, node)
	dir.entries[name] = node
	touch_mc(dir, node.change, node.change_nsec)
end

local function is_under(path, dirpath)
	local n = #dirpath
	return #path > n and sub(path, n + 1, n + 1) == "/" and sub(path, 1, n) == dirpath
end

-------------------------------------------------------------------------------
-- File data
-------------------------------------------------------------------------------

-- Chunk values:
--   string                      the chunk's bytes (at most CS)
--   {big=B, off=O}              a "view": bytes O+1 .. O+CS of the string B.  A write of
--                               more than CS bytes stores its full chunks this way, so
--                               the data is not copied, and a read of exactly what one
--                               such write stored returns B itself.
--   {n=, len=, [1..n]=strings}  a "rope" that small appends go to; read as its pieces,
--                               joined when written inside or after ROPE_MAX pieces

-- The chunk as a string (ropes and views are materialized and stored back).
local function flat(data, idx, c)
	local b = c.big
	if b then
		local off = c.off
		c = sub(b, off + 1, off + CS)
	else
		c = concat(c, "", 1, c.n)
	end
	data[idx] = c
	return c
end

-- m bytes of chunk idx from offset o (0-based, o + m <= CS).
local function chunk_range(data, idx, o, m)
	local c = data[idx]
	if c == nil then
		if m == CS then return ZERO end
		return sub(ZERO, 1, m)
	end
	if type(c) == "table" then
		local b = c.big
		if b then
			local s = c.off + o
			return sub(b, s + 1, s + m)
		end
		c = flat(data, idx, c)
	end
	local cl = #c
	local e = o + m
	if e <= cl then
		if o == 0 and e == cl then return c end
		return sub(c, o + 1, e)
	end
	if o >= cl then return sub(ZERO, 1, m) end
	return sub(c, o + 1) .. sub(ZERO, 1, e - cl)
end

-- Append to parts (np so far) the pieces of rope c that hold its m bytes from offset o, whole
-- pieces as they are and the ends as substrings, then zeros for what lies past its end (the
-- file was extended since); returns the new count.
local function rope_pieces(c, o, m, parts, np)
	local e = o + m
	local pos = 0
	for i = 1, c.n do
		if pos >= e then break end
		local p = c[i]
		local pl = #p
		local pe = pos + pl
		if pe > o then
			local s = o > pos and o - pos or 0
			local t = e < pe and e - pos or pl
			np = np + 1
			parts[np] = (s == 0 and t == pl) and p or sub(p, s + 1, t)
		end
		pos = pe
	end
	if pos < e then
		np = np + 1
		parts[np] = sub(ZERO, 1, e - (pos > o and pos or o))
	end
	return np
end

-- Append to parts the m bytes of chunk idx from offset o; returns the new count. A rope goes
-- out as its pieces (flufs gathers them into the reply, one copy): a file written in small
-- pieces, as `tar` unpacks one, is never joined by reading it, so its memory is not taken
-- twice (the pieces and the joined string until the collector frees the pieces).
local function range_into(data, idx, o, m, parts, np)
	local c = data[idx]
	if type(c) == "table" and not c.big then
		return rope_pieces(c, o, m, parts, np)
	end
	np = np + 1
	parts[np] = chunk_range(data, idx, o, m)
	return np
end

-- A read's answer: a string, a string with an offset and a length (a range of it), or an
-- array of strings (pieces flufs sends one after another: no new string joins them).
local function read_data(node, size, offset)
	local fsize = node.size
	if offset >= fsize or size <= 0 then return "" end
	if offset + size > fsize then size = fsize - offset end
	local data = node.data
	local idx = offset // CS + 1
	local o = offset - (idx - 1) * CS
	if o + size <= CS then
		local c = data[idx]
		if type(c) == "table" then
			if c.big then
				-- A view of a string one write stored: flufs sends that range of it, no copy.
				return c.big, c.off + o, size
			end
			local parts = {}
			if rope_pieces(c, o, size, parts, 0) == 1 then return parts[1] end
			return parts
		end
		return chunk_range(data, idx, o, size)
	end
	local parts, np = {}, 0
	while size > 0 do
		local c = data[idx]
		local b = type(c) == "table" and c.big
		if b then
			-- a run of views of one string: one piece
			local s = c.off + o
			local e = c.off + CS
			local last = idx
			while e - s < size do
				local v = data[last + 1]
				if type(v) ~= "table" or v.big ~= b or v.off ~= e then break end
				last = last + 1
				e = e + CS
			end
			if e - s > size then e = s + size end
			local m = e - s
			if m == size and np == 0 then
				if s == 0 and e == #b then return b end -- exactly what one write stored
				return b, s, m -- a range of it: flufs sends that range, no copy
			end
			np = np + 1
			parts[np] = sub(b, s + 1, e)
			size = size - m
			idx = last + 1
		else
			local m = CS - o
			if m > size then m = size end
			np = range_into(data, idx, o, m, parts, np)
			size = size - m
			idx = idx + 1
		end
		o = 0
	end
	if np == 1 then return parts[1] end
	return parts
end

-- Store piece p (m bytes) at offset o of chunk idx.
local function put(node, data, idx, o, p, m)
	local c = data[idx]
	if c == nil then
		node.nalloc = node.nalloc + 1
		if o == 0 then
			data[idx] = p
		else
			data[idx] = sub(ZERO, 1, o) .. p
		end
		return
	end
	if o == 0 and m == CS then
		data[idx] = p
		drop_bytes(CS) -- written over: the old chunk is garbage
		return
	end
	if type(c) == "table" then
		local len = c.len
		if len and o >= len then -- append to the rope
			local k = c.n
			if o > len then
				k = k + 1
				c[k] = sub(ZERO, 1, o - len)
			end
			k = k + 1
			c[k] = p
			c.n = k
			c.len = o + m
			if k >= ROPE_MAX then data[idx] = concat(c, "", 1, k) end
			return
		end
		c = flat(data, idx, c)
	end
	local cl = #c
	if o == 0 then
		if m >= cl then
			data[idx] = p
		else
			data[idx] = p .. sub(c, m + 1)
		end
	elseif o >= cl then -- append, maybe after a gap
		if o + m <= SMALL then
			if o > cl then
				data[idx] = c .. sub(ZERO, 1, o - cl) .. p
			else
				data[idx] = c .. p
			end
		elseif o > cl then
			data[idx] = { c, sub(ZERO, 1, o - cl), p, n = 3, len = o + m }
		else
			data[idx] = { c, p, n = 2, len = o + m }
		end
	elseif o + m >= cl then
		data[idx] = sub(c, 1, o) .. p
	else
		data[idx] = sub(c, 1, o) .. p .. sub(c, o + m + 1)
	end
end

local function write_data(node, buf, offset, n)
	local data = node.data
	local before = fblocks(node)
	local idx = offset // CS + 1
	local o = offset - (idx - 1) * CS
	if o + n <= CS then
		put(node, data, idx, o, buf, n)
	else
		local pos = 0 -- bytes of buf stored so far
		if o > 0 then -- head
			local m = CS - o
			put(node, data, idx, o, sub(buf, 1, m), m)
			pos = m
			idx = idx + 1
		end
		local over = 0 -- chunks written over
		while n - pos >= CS do -- full chunks: views of buf
			if data[idx] == nil then node.nalloc = node.nalloc + 1 else over = over + 1 end
			data[idx] = { big = buf, off = pos }
			pos = pos + CS
			idx = idx + 1
		end
		if over > 0 then drop_bytes(over * CS) end
		if pos < n then -- tail
			put(node, data, idx, 0, sub(buf, pos + 1), n - pos)
		end
	end
	local e = offset + n
	if e > node.size then node.size = e end
	local after = fblocks(node)
	used = used + after - before
	node.blocks = after
end

-- Chunk idx of node becomes c (a string or a view, never changed in place, so two files may
-- hold the same one; nil: a hole), the file growing to at least e bytes.
local function share_chunk(node, idx, c, e)
	local data = node.data
	local before = fblocks(node)
	local old = data[idx]
	if old ~= nil then
		drop_bytes(CS) -- written over: the old chunk is garbage
		if c == nil then node.nalloc = node.nalloc - 1 end
	elseif c ~= nil then
		node.nalloc = node.nalloc + 1
	end
	data[idx] = c
	if e > node.size then node.size = e end
	local after = fblocks(node)
	used = used + after - before
	node.blocks = after
end

-- Copy n bytes (n > 0) of src from offset a to dst at offset b, inside luafs (ranges of one
-- file do not overlap: the kernel refuses that). A whole chunk copied to a whole chunk is
-- shared, not copied (a rope, which appends change in place, is joined first); the rest goes
-- through write_data a chunk's piece at a time.
local function copy_data(src, a, dst, b, n)
	local sdata = src.data
	while n > 0 do
		local si = a // CS + 1
		local so = a - (si - 1) * CS
		local bo = b % CS
		local m = CS - (so > bo and so or bo)
		if m > n then m = n end
		if m == CS then
			local c = sdata[si]
			if type(c) == "table" and not c.big then c = flat(sdata, si, c) end
			share_chunk(dst, b // CS + 1, c, b + CS)
		else
			write_data(dst, chunk_range(sdata, si, so, m), b, m)
		end
		a, b, n = a + m, b + m, n - m
	end
end

-- Zero [offset, offset+len) inside the file without changing its size.
local function zero_range(node, offset, len)
	local size = node.size
	if offset + len > size then len = size - offset end
	if len <= 0 then return end
	local data = node.data
	local before = fblocks(node)
	local idx = offset // CS + 1
	local o = offset - (idx - 1) * CS
	while len > 0 do
		local m = CS - o
		if m > len then m = len end
		local c = data[idx]
		if c ~= nil then
			if o == 0 and m == CS then
				data[idx] = nil
				node.nalloc = node.nalloc - 1
			else
				if type(c) == "table" then c = flat(data, idx, c) end
				local cl = #c
				if o == 0 and m >= cl then
					data[idx] = nil
					node.nalloc = node.nalloc - 1
				elseif o < cl then
					if o + m >= cl then
						data[idx] = sub(c, 1, o)
					else
						data[idx] = sub(c, 1, o) .. sub(ZERO, 1, m) .. sub(c, o + m + 1)
					end
				end
			end
		end
		len = len - m
		idx = idx + 1
		o = 0
	end
	local after = fblocks(node)
	used = used + after - before
	node.blocks = after
end

local function set_size(node, newsize)
	local old = node.size
	if newsize == old then return end
	local before = fblocks(node)
	if newsize < old then
		if newsize == 0 then
			node.data = {}
			node.nalloc = 0
		else
			local data = node.data
			local last = (newsize - 1) // CS + 1
			local oldlast = (old - 1) // CS + 1
			local freed = 0
			if oldlast - last > 1024 then -- sparse: visit only what exists
				for k in pairs(data) do
					if k > last then
						data[k] = nil
						freed = freed + 1
					end
				end
			else
				for k = last + 1, oldlast do
					if data[k] ~= nil then
						data[k] = nil
						freed = freed + 1
					end
				end
			end
			node.nalloc = node.nalloc - freed
			local keep = newsize - (last - 1) * CS
			local c = data[last]
			if c ~= nil then
				if type(c) == "table" then
					local b = c.big
					if b then
						if keep < CS then data[last] = sub(b, c.off + 1, c.off + keep) end
					elseif c.len > keep then
						data[last] = sub(concat(c, "", 1, c.n), 1, keep)
					end
				elseif #c > keep then
					data[last] = sub(c, 1, keep)
				end
			end
		end
	end
	node.size = newsize
	local after = fblocks(node)
	if after < before then
		drop_blocks(before - after)
	else
		used = used + after - before
	end
	node.blocks = after
end

-------------------------------------------------------------------------------
-- Attributes
-------------------------------------------------------------------------------

-- A node is its own stat table: its mode, ino, nlink, uid, gid, rdev, size, blocks, access,
-- modification and change fields (and the nanoseconds beside the times) are the ones getattr
-- returns (the host reads only those), so getattr and readdir hand nodes over without copying.
local function stat(node)
	return node
end

-- A utimens time ({sec=, nsec=}, or seconds) as whole seconds and nanoseconds.
local function time_of(v)
	if type(v) == "table" then
		return v.sec or 0, v.nsec or 0
	end
	local sec = v // 1
	return math.tointeger(sec) or sec, math.tointeger((v - sec) * 1e9 // 1) or 0
end

local function file_node(fi, path)
	local node = fi and fi.fh or lookup(path)
	if not node.data then
		if node.entries then error(EISDIR) end
		error(EINVAL)
	end
	return node
end

-- The namespaces tmpfs accepts (system.* would be ACLs, which luafs does not enforce).
-- Names found valid (the same few are asked again and again: security.capability before
-- every new file's first write, security.selinux by ls -l): a table lookup instead of a byte
-- and a sub call each time (~550 instructions). Starts over beyond 1024 names.
local valid_names, nvalid = {}, 0

local function xattr_name_ok(name)
	if valid_names[name] then return end
	local c = byte(name)
	if not ((c == 117 and sub(name, 1, 5) == "user.") or (c == 115 and sub(name, 1, 9) == "security.")
		or (c == 116 and sub(name, 1, 8) == "trusted.")) then
		error(EOPNOTSUPP)
	end
	if nvalid >= 1024 then valid_names, nvalid = {}, 0 end
	valid_names[name] = true
	nvalid = nvalid + 1
end

-------------------------------------------------------------------------------
-- Operations
-------------------------------------------------------------------------------

local fs = {}

-- A missing name is common (every new file's name is looked up first): its errno is
-- returned, not raised (flufs takes a returned flu.errno value as the failure; raising costs
-- an error's unwinding).
function fs.getattr(path)
	-- walk without a call for a path in the cache; a node is its own stat table.
	local node = paths[path]
	if node then return node end
	local e
	node, e = walk_names(path)
	if node then return node end
	return e
end

function fs.fgetattr(path, st, fi)
	return stat(fi and fi.fh or lookup(path))
end

function fs.access(path, mask)
	local node = lookup(path)
	-- Only reached without default_permissions; root may execute only what has an x bit.
	if mask and mask & 1 ~= 0 and not node.entries and node.mode & 0x49 == 0 then
		local c = get_context(ctx) or ctx
		if c.uid == 0 then error(EACCES) end
	end
end

function fs.readlink(path)
	local node = lookup(path)
	local target = node.target
	if not target then error(EINVAL) end
	access(node)
	return target
end

function fs.mknod(path, mode, rdev)
	local dir, name = new_entry(path)
	local typ = mode & S_IFMT
	if typ == 0 then typ = S_IFREG end
	if typ == S_IFDIR or typ == S_IFLNK then error(EINVAL) end
	local uid, gid, perm = owner(dir, mode & PERM)
	local node = new_node(typ | perm, uid, gid)
	if typ == S_IFREG then
		node.data = {}
	else
		node.rdev = rdev or 0
	end
	link_in(dir, name, node)
	return node
end

function fs.mkdir(path, mode)
	local dir, name = new_entry(path)
	local uid, gid, perm = owner(dir, mode & PERM)
	if dir.mode & S_ISGID ~= 0 then perm = perm | S_ISGID end
	local node = new_node(S_IFDIR | perm, uid, gid)
	node.nlink = 2
	node.size = DIR_SIZE
	node.entries = {}
	node.parent = dir
	dir.nlink = dir.nlink + 1
	link_in(dir, name, node)
	return node
end

function fs.symlink(target, path)
	local dir, name = new_entry(path)
	local uid, gid = owner(dir, 0)
	local node = new_node(S_IFLNK | 0x1FF, uid, gid) -- 0777
	node.target = target
	node.size = #target
	link_in(dir, name, node)
	return node
end

function fs.unlink(path)
	-- Only this path loses its node (a file has no paths below it, and its other names keep
	-- it): the cache keeps the rest, so rm -rf finds each parent there instead of walking it.
	forget_path(path)
	local dir, name = parent_of(path)
	local ents = dir.entries
	local node = ents[name]
	if not node then
		if #name > NAME_MAX then error(ENAMETOOLONG) end
		error(ENOENT)
	end
	if node.entries then error(EISDIR) end
	ents[name] = nil
	node.nlink = node.nlink - 1
	local s, ns = now()
	touch_c(node, s, ns)
	touch_mc(dir, s, ns)
	maybe_free(node)
end

function fs.rmdir(path)
	if path == "/" then error(EBUSY) end
	-- An empty directory: the paths below it left the cache with their own unlink, rmdir or
	-- rename.
	forget_path(path)
	local dir, name = parent_of(path)
	local ents = dir.entries
	local node = ents[name]
	if not node then
		if #name > NAME_MAX then error(ENAMETOOLONG) end
		error(ENOENT)
	end
	if not node.entries then error(ENOTDIR) end
	if next(node.entries) ~= nil then error(ENOTEMPTY) end
	ents[name] = nil
	dir.nlink = dir.nlink - 1
	node.nlink = 0
	local s, ns = now()
	touch_c(node, s, ns)
	touch_mc(dir, s, ns)
	maybe_free(node)
end

function fs.rename(from, to, flags)
	if from == "/" or to == "/" then error(EBUSY) end
	forget_paths()
	local odir, oname = parent_of(from)
	local oents = odir.entries
	local node = oents[oname]
	if not node then
		if #oname > NAME_MAX then error(ENAMETOOLONG) end
		error(ENOENT)
	end
	local ndir, nname = parent_of(to)
	if #nname > NAME_MAX then error(ENAMETOOLONG) end
	local nents = ndir.entries
	local target = nents[nname]
	local isdir = node.entries ~= nil
	local exchange, noreplace
	if flags then exchange, noreplace = flags.exchange, flags.noreplace end

	if exchange then
		if not target then error(ENOENT) end
		if (isdir and is_under(to, from)) or (target.entries and is_under(from, to)) then
			error(EINVAL)
		end
		if target == node then return end
		oents[oname] = target
		nents[nname] = node
		if odir ~= ndir then
			if isdir then
				odir.nlink = odir.nlink - 1
				ndir.nlink = ndir.nlink + 1
				node.parent = ndir
			end
			if target.entries then
				ndir.nlink = ndir.nlink - 1
				odir.nlink = odir.nlink + 1
				target.parent = odir
			end
		end
		local s, ns = now()
		touch_c(node, s, ns)
		touch_c(target, s, ns)
		touch_mc(odir, s, ns)
		touch_mc(ndir, s, ns)
		return
	end

	if target and noreplace then error(EEXIST) end
	if isdir and is_under(to, from) then error(EINVAL) end
	if target then
		if target == node then return end -- same file (same path or hard links)
		if isdir then
			if not target.entries then error(ENOTDIR) end
			if next(target.entries) ~= nil then error(ENOTEMPTY) end
		elseif target.entries then
			error(EISDIR)
		end
	end

	local s, ns = now()
	if target then
		if target.entries then
			target.nlink = 0
			ndir.nlink = ndir.nlink - 1
		else
			target.nlink = target.nlink - 1
		end
		touch_c(target, s, ns)
		maybe_free(target)
	end
	oents[oname] = nil
	nents[nname] = node
	if isdir and odir ~= ndir then
		odir.nlink = odir.nlink - 1
		ndir.nlink = ndir.nlink + 1
		node.parent = ndir
	end
	touch_c(node, s, ns)
	touch_mc(odir, s, ns)
	if ndir ~= odir then touch_mc(ndir, s, ns) end
end

function fs.link(from, to)
	local node = lookup(from)
	if node.entries then error(EPERM) end
	local dir, name = new_entry(to)
	node.nlink = node.nlink + 1
	dir.entries[name] = node
	local s, ns = now()
	touch_c(node, s, ns)
	touch_mc(dir, s, ns)
	return node
end

-- chmod, chown, truncate and utimens get the open file's fi as an extra argument when the
-- change is made through a descriptor (fchmod, ...), which still works after unlink.
-- chmod, chown, truncate, ftruncate and utimens return the node, which is its own stat table:
-- flufs answers the kernel with it instead of calling getattr after them (`tar x` sets the
-- times, owner and mode of every file it makes).
function fs.chmod(path, mode, fi)
	local node = fi and fi.fh or lookup(path)
	node.mode = (node.mode & S_IFMT) | (mode & PERM)
	local s, ns = now()
	touch_c(node, s, ns)
	return node
end

function fs.chown(path, uid, gid, fi)
	local node = fi and fi.fh or lookup(path)
	-- like Linux: chown of a non-directory drops set-user-ID, and set-group-ID when it means
	-- "setgid executable" or the caller may not keep it (decided on the old group)
	if node.mode & S_SETID ~= 0 and not node.entries then drop_setid(node, true) end
	if uid and uid ~= -1 and uid ~= 0xFFFFFFFF then node.uid = uid end
	if gid and gid ~= -1 and gid ~= 0xFFFFFFFF then node.gid = gid end
	local s, ns = now()
	touch_c(node, s, ns)
	return node
end

-- Times change even when the size does not: open(O_TRUNC) of an empty file reaches us as
-- truncate(path, 0) and must update them (FUSE leaves that to the file system), and it
-- cannot be told apart from truncate(2) to the same size (which tmpfs would not count).
function fs.truncate(path, size, fi)
	local node = file_node(fi, path)
	if node.mode & S_SETID ~= 0 then drop_setid(node) end
	set_size(node, size)
	local s, ns = now()
	touch_mc(node, s, ns)
	return node
end

-- Through a descriptor: the same, with the open file's node from fi.
fs.ftruncate = fs.truncate

function fs.utimens(path, atime, mtime, fi)
	local node = fi and fi.fh or lookup(path)
	if atime then node.access, node.access_nsec = time_of(atime) end
	if mtime then node.modification, node.modification_nsec = time_of(mtime) end
	local s, ns = now()
	touch_c(node, s, ns)
	return node
end

-- fi.flags is the open(2) flags integer (fs.flags_as_numbers below).
local O_EXCL, O_TRUNC = 0x80, 0x200

local function open_node(node, fi)
	if node.data then
		if fi.flags & O_TRUNC ~= 0 then
			if node.mode & S_SETID ~= 0 then drop_setid(node) end
			set_size(node, 0)
			local s, ns = now()
			touch_mc(node, s, ns)
		end
		node.opens = node.opens + 1
	end
	fi.fh = node
end

function fs.open(path, fi)
	open_node(lookup(path), fi)
end

function fs.create(path, mode, fi)
	local dir, name = parent_of(path)
	local node = dir.entries[name]
	if node then -- the kernel only creates new names; be safe anyway
		if fi.flags & O_EXCL ~= 0 then error(EEXIST) end
		if node.entries then error(EISDIR) end
		open_node(node, fi)
		return node
	end
	if #name > NAME_MAX then error(ENAMETOOLONG) end
	local uid, gid, perm = owner(dir, mode & PERM)
	node = new_node(S_IFREG | perm, uid, gid)
	node.data = {nil} -- room for a first chunk: its write fills it without a rehash
	node.opens = 1
	link_in(dir, name, node)
	fi.fh = node
	-- Requests that next reach a new file by path (a stat with caching off, ls -l's getxattr
	-- of security.selinux, a chmod or utimens) find it here without a walk from the root
	-- (without this: listdir + stat of 2000 new files with caching off 30.9 -> 32.4 ms). Its
	-- writes and release come with fi; flufs answers its security.capability getxattr.
	remember_path(path, node)
	return node
end

-- read and write take the open file's node from fi without a call when it is a file (the
-- common case: every read and write of an open file).
function fs.read(path, size, offset, fi)
	local node = fi and fi.fh
	if not (node and node.data) then node = file_node(fi, path) end
	if size > 0 then access(node) end
	return read_data(node, size, offset)
end

function fs.write(path, buf, offset, fi)
	local node = fi and fi.fh
	if not (node and node.data) then node = file_node(fi, path) end
	local n = #buf
	if n > 0 then
		if node.mode & S_SETID ~= 0 then drop_setid(node) end
		write_data(node, buf, offset, n)
		local s, ns = now()
		node.modification, node.modification_nsec = s, ns
		node.change, node.change_nsec = s, ns
	end
	return n
end

-- copy_file_range(2), as cp (coreutils 9) copies a file: the data stays in luafs instead of
-- going out to the kernel and back, and whole chunks are shared between the two files. At
-- most 1 GiB per call (a short copy is allowed; callers loop), none past the source's end.
local COPY_MAX = 1024 * 1024 * 1024

function fs.copy_file_range(pin, fiin, offin, pout, fiout, offout, len)
	local src = file_node(fiin, pin)
	local dst = file_node(fiout, pout)
	local size = src.size
	if offin >= size or len <= 0 then return 0 end
	if len > size - offin then len = size - offin end
	if len > COPY_MAX then len = COPY_MAX end
	if src == dst and offin < offout + len and offout < offin + len then error(EINVAL) end
	access(src)
	if dst.mode & S_SETID ~= 0 then drop_setid(dst) end
	copy_data(src, offin, dst, offout, len)
	local s, ns = now()
	touch_mc(dst, s, ns)
	return len
end

function fs.release(path, fi)
	local node = fi.fh
	if node and node.data and node.opens > 0 then
		node.opens = node.opens - 1
		maybe_free(node)
	end
	fi.fh = nil
end

function fs.fallocate(path, mode, offset, length, fi)
	local node = file_node(fi, path)
	if type(mode) == "table" then -- a set, if the host ever passes one
		mode = (mode.keep_size and 1 or 0) | (mode.punch_hole and 2 or 0)
			| (mode.collapse_range and 8 or 0) | (mode.zero_range and 16 or 0)
			| (mode.insert_range and 32 or 0)
	end
	mode = mode or 0
	if offset < 0 or length <= 0 then error(EINVAL) end
	local s, ns = now()
	if mode == 0 or mode == 1 then -- allocate (KEEP_SIZE: nothing visible changes)
		if mode == 0 and offset + length > node.size then
			set_size(node, offset + length)
			touch_c(node, s, ns)
		end
	elseif mode == 3 then -- PUNCH_HOLE | KEEP_SIZE
		zero_range(node, offset, length)
		touch_mc(node, s, ns)
	else
		error(EOPNOTSUPP)
	end
end

-- No fi.keep_cache / fi.cache_readdir: luafs's offsets are positions in a listing taken per
-- open (Lua's table order), and the kernel fills its cache from concurrent listings, joining
-- them at an offset; a directory changed while listed could then stay listed stale. (Offsets
-- that name their listing keep listings apart, but then a reader whose offset is not in the
-- cache can get a premature end of the listing from the kernel when the cache ends on a page
-- boundary, even in a directory that does not change: tried, and dropped.)
function fs.opendir(path, fi)
	local node = lookup(path)
	if not node.entries then error(ENOTDIR) end
	fi.fh = node
end

function fs.readdir(path, filler, fi)
	local dir = fi and fi.fh or lookup(path)
	local ents = dir.entries
	if not ents then error(ENOTDIR) end
	access(dir)
	filler(".", dir)
	filler("..", dir.parent or dir)
	-- All entries in one call (flufs's filler takes a table of name -> stat table): no Lua
	-- loop and no call per entry.
	filler(ents)
end

function fs.releasedir(path, fi)
	fi.fh = nil
end

function fs.statfs()
	local bused = (used + 7) // 8
	local bfree = TOTAL_BLOCKS - bused
	if bfree < 0 then bfree = 0 end
	local ffree = TOTAL_FILES - ninodes
	if ffree < 0 then ffree = 0 end
	return {
		bsize = 4096, frsize = 4096, blocks = TOTAL_BLOCKS, bfree = bfree, bavail = bfree,
		files = TOTAL_FILES, ffree = ffree, favail = ffree, namemax = NAME_MAX,
	}
end

function fs.setxattr(path, name, value, flags)
	local node = lookup(path)
	xattr_name_ok(name)
	local x = node.xattrs
	local old = x and x[name]
	if flags then
		if flags.create and old ~= nil then error(EEXIST) end
		if flags.replace and old == nil then error(ENODATA) end
	end
	if not x then
		x = {}
		node.xattrs = x
	end
	x[name] = value
	local s, ns = now()
	touch_c(node, s, ns)
end

function fs.getxattr(path, name)
	local x = (paths[path] or lookup(path)).xattrs
	local v = x and x[name]
	if v == nil then
		-- Asked of every file before its first write (security.capability) and by ls -l
		-- (security.selinux): returned, not raised, as getattr's ENOENT; a name found valid
		-- before is not checked again (without a call).
		if not valid_names[name] then xattr_name_ok(name) end
		return ENODATA
	end
	return v
end

function fs.listxattr(path)
	local node = lookup(path)
	local list, n = {}, 0
	local x = node.xattrs
	if x then
		for name in next, x do
			n = n + 1
			list[n] = name
		end
	end
	return list
end

function fs.removexattr(path, name)
	local node = lookup(path)
	xattr_name_ok(name)
	local x = node.xattrs
	if not x or x[name] == nil then error(ENODATA) end
	x[name] = nil
	local s, ns = now()
	touch_c(node, s, ns)
end

-- luafs drops set-user-ID/set-group-ID bits itself on write, truncate and chown (drop_setid).
fs.handle_killpriv = true

-- Modes and open flags as integers, not Flu's sets: a set is a table flufs builds per create
-- and open (1000 creates: ~8% of flufs's instructions), which luafs would turn into an integer
-- anyway. luafs relies on it: mknod, mkdir, create and chmod use the mode as an integer.
fs.modes_as_numbers = true
fs.flags_as_numbers = true

-- fs.readdirplus stays "auto" (the kernel asks for attributes with the first chunk of a
-- listing and with chunks after lookups in the directory). "always" would spare a listing that
-- is read whole and then statted its LOOKUP per entry (listdir + stat of 2000 files, cold:
-- 19.5 -> 8.8 ms), but every listing would make the kernel build an inode per entry (a first
-- listing of 10,000 names, as `find` or `ls -f` do: 5.5 -> 27 ms, 4x passthrough_ll's).

-- Every change to luafs comes through the mount, so a listing taken a moment ago (within
-- attr_timeout, with no change since) is still what readdir would give: flufs serves a new
-- open of the directory from it without calling readdir (listing 10,000 names again: daemon
-- CPU 3.9 -> 0.44 ms, with the node ids the listing remembers). For the same reason flufs
-- answers the lookup of a name missing from a directory made through the mount without
-- calling getattr (it follows the names made and removed there): one call less per new file.
fs.reuse_listings = true

-- A node luafs makes (create, mknod, mkdir, symlink) starts with no extended attributes, and
-- gets them only from setxattr: flufs answers a getxattr of a user., security. or trusted.
-- name on such a node ENODATA itself until one is set there. The kernel asks every new file
-- for security.capability before its first write, and ls -l asks every file for
-- security.selinux; neither reaches Lua (1000 created files: 28.2 -> 27.3 ms; ls -l of 2000
-- files after drop_caches: 20.2 -> 17.6 ms, pinned). luafs never gives an ino twice, so flufs
-- keeps the mark while the kernel forgets and looks up a node again.
fs.no_xattrs_until_set = true

-- luafs keeps no security.selinux label: flufs answers its getxattr, setxattr and removexattr
-- EOPNOTSUPP without calling luafs. SELinux answers the same for a FUSE mount it labels by the
-- mount (genfscon, as Fedora's policy labels fuse), and answers the label's getxattr itself;
-- without a security module tmpfs would store the name, so this is where luafs and tmpfs part.
-- ls -l asks every file for the label, and after EOPNOTSUPP no further file on that
-- filesystem: one request instead of one per file.
fs.unsupported_xattrs = { "security.selinux" }

return fs
