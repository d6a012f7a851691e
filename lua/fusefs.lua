-- fusefs.lua: Ruby FuseFS's high-level API for flufs.
--
-- A filesystem is one "directory object" that answers a few questions about paths (what is in
-- this directory, is this a file, what does it contain, may this be written...); this module
-- derives every FUSE operation from those answers, in the order FuseFS asked them.
--
--   local fusefs = require "fusefs"
--   local Hello = {}
--   function Hello:contents(path) return { "hello.txt" } end
--   function Hello:is_file(path) return path == "/hello.txt" end
--   function Hello:read_file(path) return "Hello, World!\n" end
--
--   fusefs.set_root(Hello)              -- FuseFS style:
--   fusefs.mount_under(arg[1])          --   mount on flufs's MOUNTPOINT
--   fusefs.run()                        --   serve until unmounted
--   -- or, flufs style:  return fusefs.adapt(Hello)
--
-- Directory methods (all optional, called with self; paths start with "/"):
--   contents(path) -> array of names      is_directory(path)   is_file(path)
--   is_executable(path)   size(path) -> integer   read_file(path) -> string
--   can_write(path)  write_to(path, str)   can_delete(path)  delete(path)
--   can_mkdir(path)  mkdir(path)           can_rmdir(path)   rmdir(path)   touch(path)
--   raw_open(path, mode) -> true to handle the file yourself (mode "r", "w", "rw", + "a")
--   raw_read(path, offset, size) -> string   raw_write(path, offset, size, buf)   raw_close(path)
-- A method may raise error(flu.errno.X) to answer with that errno; any other error gives EIO
-- and a log line with the traceback.
--
-- The full description (check order, editor files, MetaDir) is the README section
-- "High-level API: FuseFS directory objects" (doc/fusefs.md).

local flu = require "flu"

local E = flu.errno
local type, pairs, ipairs, error, tostring, setmetatable, getmetatable, select =
	type, pairs, ipairs, error, tostring, setmetatable, getmetatable, select
local concat, sort = table.concat, table.sort

local M = {}

-- Editor swap and backup files are kept in memory, away from the directory object.
M.handle_editor = true
-- Files are opened with direct_io (as FuseFS mounted with -odirect_io), so reads reach the
-- object even when size() is missing or wrong.
M.direct_io = true

local S_IFDIR, S_IFREG, S_IFLNK = 0x4000, 0x8000, 0xA000
local oct = function(s) return tonumber(s, 8) end
local RW_ALL, R_ALL, X_ALL = oct "666", oct "444", oct "111"
local DIR_RO, DIR_RW = oct "555", oct "755"

---------------------------------------------------------------------------------------------
-- request context

function M.reader_uid()
	local ok, c = pcall(flu.get_context)
	if ok and type(c) == "table" then return c.uid end
	return nil
end

function M.reader_gid()
	local ok, c = pcall(flu.get_context)
	if ok and type(c) == "table" then return c.gid end
	return nil
end

-- Real uid of this process (FuseFS's Process.uid), from /proc/self/status.
local process_uid_cache
local function process_uid()
	if process_uid_cache == nil then
		process_uid_cache = false
		local f = io.open("/proc/self/status", "r")
		if f then
			for line in f:lines() do
				local uid = line:match("^Uid:%s*(%d+)")
				if uid then
					process_uid_cache = math.tointeger(tonumber(uid))
					break
				end
			end
			f:close()
		end
	end
	return process_uid_cache or nil
end
M.process_uid = process_uid

---------------------------------------------------------------------------------------------
-- classes: FuseDir and MetaDir

-- A tiny class system: Class.new(...) and Class:new(...) both make an instance and call its
-- initialize(...) method; Class:extend() (or Class.extend()) makes a subclass.
local function class(parent)
	local cls = {}
	cls.__index = cls
	if parent then
		setmetatable(cls, { __index = parent })
	end
	cls.new = function(...)
		local first = 1
		if select("#", ...) > 0 and (...) == cls then first = 2 end
		local obj = setmetatable({}, cls)
		if obj.initialize then
			obj:initialize(select(first, ...))
		end
		return obj
	end
	cls.extend = function()
		return class(cls)
	end
	return cls
end
M.class = class

local function components(path)
	local parts = {}
	for c in tostring(path or ""):gmatch("[^/]+") do
		parts[#parts + 1] = c
	end
	return parts
end

local FuseDir = class()
M.FuseDir = FuseDir

-- base, rest = dir:split_path(path): base is the first component of path (nil for "/"), rest
-- the remainder as a path from "/" (nil when path has one component):
--   split_path("/a/b/c") -> "a", "/b/c"     split_path("/a") -> "a", nil     split_path("/") -> nil, nil
function FuseDir:split_path(path)
	local parts = components(path)
	if #parts == 0 then return nil, nil end
	if #parts == 1 then return parts[1], nil end
	return parts[1], "/" .. concat(parts, "/", 2)
end

-- dir:scan_path("/a/b/c") -> {"a", "b", "c"}; scan_path("/") -> {}
function FuseDir:scan_path(path)
	return components(path)
end

-- The callable `name` of obj, or nil (FuseFS's respond_to?).
local function method_of(obj, name)
	if obj == nil then return nil end
	local ok, f = pcall(function() return obj[name] end)
	if not ok or f == nil then return nil end
	if type(f) == "function" then return f end
	local mt = getmetatable(f)
	if mt and mt.__call then return f end
	return nil
end
M.method_of = method_of

-- obj:name(...) if obj has that method, else `default`.
local function try(obj, name, default, ...)
	local f = method_of(obj, name)
	if f == nil then return default end
	return f(obj, ...)
end

local MetaDir = class(FuseDir)
M.MetaDir = MetaDir

function MetaDir:initialize()
	self._subdirs = {}
	self._files = {}
end

-- Only the user who mounted may change a MetaDir (as in FuseFS).
local function owner_request()
	local reader, me = M.reader_uid(), process_uid()
	return reader == nil or me == nil or reader == me
end

function MetaDir:contents(path)
	local base, rest = self:split_path(path)
	if base == nil then
		local names, seen = {}, {}
		for name in pairs(self._files) do
			names[#names + 1] = name
			seen[name] = true
		end
		for name in pairs(self._subdirs) do
			if not seen[name] then names[#names + 1] = name end
		end
		sort(names)
		return names
	end
	local sub = self._subdirs[base]
	if sub == nil then return nil end
	return try(sub, "contents", nil, rest or "/")
end

function MetaDir:is_directory(path)
	local base, rest = self:split_path(path)
	if base == nil then return true end
	local sub = self._subdirs[base]
	if sub == nil then return false end
	if rest == nil then return true end
	return try(sub, "is_directory", false, rest)
end

function MetaDir:is_file(path)
	local base, rest = self:split_path(path)
	if base == nil then return false end
	if rest == nil then return self._files[base] ~= nil end
	local sub = self._subdirs[base]
	if sub == nil then return false end
	return try(sub, "is_file", false, rest)
end

function MetaDir:is_executable(path)
	local base, rest = self:split_path(path)
	if base == nil or rest == nil then return false end
	local sub = self._subdirs[base]
	if sub == nil then return false end
	return try(sub, "is_executable", false, rest)
end

-- Files hold strings or objects: read_file gives tostring(value), so a table with __tostring
-- can compute its contents on every read (FuseFS's to_s).
function MetaDir:read_file(path)
	local base, rest = self:split_path(path)
	if base == nil then return nil end
	if rest == nil then
		local v = self._files[base]
		if v == nil then return nil end
		return tostring(v)
	end
	local sub = self._subdirs[base]
	if sub == nil then return nil end
	return try(sub, "read_file", nil, rest)
end

function MetaDir:size(path)
	local base, rest = self:split_path(path)
	if base == nil then return 0 end
	if rest == nil then
		local v = self._files[base]
		if type(v) == "string" then return #v end
		if v ~= nil and method_of(v, "size") then return v:size() end
		return 0
	end
	local sub = self._subdirs[base]
	if sub == nil then return 0 end
	return try(sub, "size", 0, rest)
end

function MetaDir:can_write(path)
	if not owner_request() then return false end
	local base, rest = self:split_path(path)
	if base == nil then return true end
	if rest == nil then return self._subdirs[base] == nil end
	local sub = self._subdirs[base]
	if sub == nil then return false end
	return try(sub, "can_write", false, rest)
end

function MetaDir:write_to(path, str)
	local base, rest = self:split_path(path)
	if base == nil then return false end
	if rest == nil then
		if self._subdirs[base] ~= nil then return false end
		self._files[base] = str
		return true
	end
	local sub = self._subdirs[base]
	if sub == nil then return false end
	return try(sub, "write_to", false, rest, str)
end

function MetaDir:can_delete(path)
	if not owner_request() then return false end
	local base, rest = self:split_path(path)
	if base == nil then return false end
	if rest == nil then return self._files[base] ~= nil end
	local sub = self._subdirs[base]
	if sub == nil then return false end
	return try(sub, "can_delete", false, rest)
end

function MetaDir:delete(path)
	local base, rest = self:split_path(path)
	if base == nil then return nil end
	if rest == nil then
		self._files[base] = nil
		return true
	end
	local sub = self._subdirs[base]
	if sub == nil then return nil end
	return try(sub, "delete", nil, rest)
end

function MetaDir:can_mkdir(path)
	if not owner_request() then return false end
	local base, rest = self:split_path(path)
	if base == nil then return false end
	if rest == nil then
		return self._subdirs[base] == nil and self._files[base] == nil
	end
	local sub = self._subdirs[base]
	if sub == nil then return false end
	return try(sub, "can_mkdir", false, rest)
end

-- mkdir(path [, dir]): a new empty MetaDir at path, or mount the directory object `dir` there
-- (it then sees paths relative to path: its own root is "/").
function MetaDir:mkdir(path, dir)
	local base, rest = self:split_path(path)
	if base == nil then return false end
	if rest == nil then
		if self._files[base] ~= nil then return false end
		self._subdirs[base] = dir or MetaDir.new()
		return true
	end
	local sub = self._subdirs[base]
	if sub == nil then return false end
	return try(sub, "mkdir", false, rest, dir)
end

function MetaDir:can_rmdir(path)
	if not owner_request() then return false end
	local base, rest = self:split_path(path)
	if base == nil then return false end
	if rest == nil then return self._subdirs[base] ~= nil end
	local sub = self._subdirs[base]
	if sub == nil then return false end
	return try(sub, "can_rmdir", false, rest)
end

-- rmdir(path): raises ENOTEMPTY if the directory (or mounted object) still has contents.
function MetaDir:rmdir(path)
	local base, rest = self:split_path(path)
	if base == nil then return false end
	local sub = self._subdirs[base]
	if sub == nil then return false end
	if rest == nil then
		local c = try(sub, "contents", nil, "/")
		if type(c) == "table" and #c > 0 then error(E.ENOTEMPTY) end
		self._subdirs[base] = nil
		return true
	end
	return try(sub, "rmdir", false, rest)
end

function MetaDir:touch(path)
	local base, rest = self:split_path(path)
	if base == nil or rest == nil then return nil end
	local sub = self._subdirs[base]
	if sub == nil then return nil end
	return try(sub, "touch", nil, rest)
end

-- raw_* are passed on to mounted objects (a MetaDir's own files are never raw).
function MetaDir:raw_open(path, mode)
	local base, rest = self:split_path(path)
	if base == nil or rest == nil then return false end
	local sub = self._subdirs[base]
	if sub == nil then return false end
	return try(sub, "raw_open", false, rest, mode)
end

function MetaDir:raw_read(path, offset, size)
	local base, rest = self:split_path(path)
	local sub = base and rest and self._subdirs[base]
	if not sub then return nil end
	return try(sub, "raw_read", nil, rest, offset, size)
end

function MetaDir:raw_write(path, offset, size, buf)
	local base, rest = self:split_path(path)
	local sub = base and rest and self._subdirs[base]
	if not sub then return nil end
	return try(sub, "raw_write", nil, rest, offset, size, buf)
end

function MetaDir:raw_close(path)
	local base, rest = self:split_path(path)
	local sub = base and rest and self._subdirs[base]
	if not sub then return nil end
	return try(sub, "raw_close", nil, rest)
end

---------------------------------------------------------------------------------------------
-- in-memory file contents (write buffers, read snapshots, editor files)

local Node = {}
Node.__index = Node

local function new_node(s)
	s = s or ""
	return setmetatable({ parts = { s }, len = #s, modified = false, loaded = true }, Node)
end

function Node:flat()
	if #self.parts ~= 1 then
		self.parts = { concat(self.parts) }
	end
	return self.parts[1]
end

function Node:read(offset, size)
	if offset >= self.len or size <= 0 then return "" end
	return self:flat():sub(offset + 1, offset + size)
end

function Node:write(offset, data)
	if offset == self.len then
		-- appending: keep pieces, join once when needed
		self.parts[#self.parts + 1] = data
		self.len = self.len + #data
		return
	end
	local s = self:flat()
	if offset > #s then
		s = s .. ("\0"):rep(offset - #s)
	end
	s = s:sub(1, offset) .. data .. s:sub(offset + #data + 1)
	self.parts = { s }
	self.len = #s
end

function Node:truncate(size)
	local s = self:flat()
	if size < #s then
		s = s:sub(1, size)
	else
		s = s .. ("\0"):rep(size - #s)
	end
	self.parts = { s }
	self.len = #s
end

---------------------------------------------------------------------------------------------
-- editor files

local function basename(path)
	return path:match("([^/]*)$")
end

local function dirname(path)
	local d = path:match("^(.*)/[^/]*$")
	if d == nil or d == "" then return "/" end
	return d
end

-- "vim" for vim swap files (.name.swp, .swo, ..., .swpx), "emacs" for #autosave# and .#lock
-- files, "backup" for name~; nil otherwise.
local function editor_kind(name)
	if name:sub(1, 1) == "." then
		local ext = name:match("(%.[^.]*)$")
		if ext and (#ext == 4 or #ext == 5) and ext:sub(1, 3) == ".sw" then return "vim" end
		if name:sub(2, 2) == "#" and #name > 2 then return "emacs" end
	end
	if #name >= 2 and name:sub(1, 1) == "#" and name:sub(-1) == "#" then return "emacs" end
	if #name >= 2 and name:sub(-1) == "~" then return "backup" end
	return nil
end
M.editor_kind = editor_kind

---------------------------------------------------------------------------------------------
-- the adapter: Flu-level operations from a directory object

local function open_mode(flags)
	local m
	if flags.rdwr then
		m = "rw"
	elseif flags.wronly then
		m = "w"
	else
		m = "r"
	end
	if flags.append then m = m .. "a" end
	return m
end

local function valid_name(name)
	return type(name) == "string" and name ~= "" and name ~= "." and name ~= ".."
		and not name:find("/", 1, true) and not name:find("\0", 1, true)
end

function M.adapt(root)
	if root == nil then root = {} end
	local ops = {}

	local editor = {}   -- path -> node (in-memory editor files; node.link for symlinks)
	local pending = {}  -- path -> {node=, opens=, committed=} created files not yet passed on
	local handles = {}  -- path -> set of open write handles on object files (for truncate)

	local function has(name) return method_of(root, name) ~= nil end
	local function call(name, ...)
		local f = method_of(root, name)
		if f == nil then return nil end
		return f(root, ...)
	end
	-- A refusal: EACCES when the object said no, EROFS when it cannot write at all.
	local function deny(can)
		error(has(can) and E.EACCES or E.EROFS, 0)
	end
	local function writable_fs()
		return has("can_write") or has("can_mkdir") or has("can_delete") or has("can_rmdir")
	end

	-- 0 = not an editor file, 1 = looks like one but does not exist, 2 = held in memory.
	local function editor_state(path)
		if not M.handle_editor then return 0 end
		if editor[path] then return 2 end
		local name = basename(path)
		if editor_kind(name) then return 1 end
		-- vim's writability probe (4913, 5036, ...) while a vim swap file is open in that dir
		if name:match("^%d+$") then
			local dir = dirname(path)
			for p, node in pairs(editor) do
				if node.kind == "vim" and dirname(p) == dir then return 1 end
			end
		end
		return 0
	end

	local function new_editor(path)
		local node = new_node("")
		local name = basename(path)
		node.kind = editor_kind(name) or "probe"
		editor[path] = node
		return node
	end

	local function commit(path, node)
		call("write_to", path, node:flat())
		node.modified = false
		node.written = false
		node.committed = true
	end

	local function dir_stat()
		return { mode = S_IFDIR | (writable_fs() and DIR_RW or DIR_RO), nlink = 2, size = 4096 }
	end

	local function mem_stat(node)
		if node.link then
			return { mode = S_IFLNK | oct "777", size = #node.link }
		end
		return { mode = S_IFREG | RW_ALL, size = node.len }
	end

	local function track(h)
		local set = handles[h.path]
		if not set then
			set = {}
			handles[h.path] = set
		end
		set[h] = true
	end

	local function untrack(h)
		local set = handles[h.path]
		if set then
			set[h] = nil
			if next(set) == nil then handles[h.path] = nil end
		end
	end

	local function requester()
		local ok, c = pcall(flu.get_context)
		return ok and type(c) == "table" and c.pid or nil
	end

	-- Every open: direct_io, and which process opened (see flush).
	local function set_open_flags(fi)
		if M.direct_io then fi.direct_io = true end
		if type(fi.fh) == "table" then fi.fh.pid = requester() end
	end

	-- getattr: "/" is a directory; created-but-open and editor files are answered from memory;
	-- then is_directory, then is_file (with can_write, is_executable and size), else ENOENT.
	function ops.getattr(path)
		if path == "/" then return dir_stat() end
		local p = pending[path]
		if p then
			return { mode = S_IFREG | RW_ALL, size = p.node and p.node.len or 0 }
		end
		local e = editor_state(path)
		if e == 2 then return mem_stat(editor[path]) end
		if e == 1 then error(E.ENOENT, 0) end
		if call("is_directory", path) then return dir_stat() end
		if call("is_file", path) then
			local mode = S_IFREG | R_ALL
			if call("can_write", path) then mode = mode | RW_ALL end
			if call("is_executable", path) then mode = mode | X_ALL end
			local size = call("size", path)
			size = type(size) == "number" and math.tointeger(size // 1) or 0
			if size < 0 then size = 0 end
			-- a file being rewritten shows the size it will have at close
			local set = handles[path]
			if set then
				for h in pairs(set) do
					if h.node.modified then size = h.node.len end
				end
			end
			return { mode = mode, nlink = 1, size = size }
		end
		error(E.ENOENT, 0)
	end

	-- readdir: is_directory (never for "/"), then contents; ".", ".." added; editor files and
	-- created files still open are listed too.
	function ops.readdir(path, filler)
		if path ~= "/" and not call("is_directory", path) then error(E.ENOENT, 0) end
		filler(".")
		filler("..")
		local seen = { ["."] = true, [".."] = true }
		local list = call("contents", path)
		if type(list) == "table" then
			local prefix = path == "/" and "/" or path .. "/"
			for _, name in ipairs(list) do
				if valid_name(name) and not seen[name] and editor_state(prefix .. name) ~= 1 then
					seen[name] = true
					filler(name)
				end
			end
		end
		local extra = {}
		for p in pairs(pending) do
			if dirname(p) == path then extra[#extra + 1] = basename(p) end
		end
		if M.handle_editor then
			for p in pairs(editor) do
				if dirname(p) == path then extra[#extra + 1] = basename(p) end
			end
		end
		sort(extra)
		for _, name in ipairs(extra) do
			if not seen[name] then
				seen[name] = true
				filler(name)
			end
		end
	end

	-- The checks FuseFS's mknod made before a new regular file exists; returns true when the
	-- path is an editor file now held in memory.
	local function may_create(path)
		local e = editor_state(path)
		if e == 2 then error(E.EEXIST, 0) end
		if e == 1 then
			new_editor(path)
			return true
		end
		if pending[path] then error(E.EEXIST, 0) end
		if call("is_file", path) then error(E.EEXIST, 0) end
		if not call("can_write", path) then deny("can_write") end
		return false
	end

	local function editor_handle(path, fi)
		local node = editor[path]
		fi.fh = { kind = "mem", path = path, node = node, editor = true,
			write = fi.flags.wronly or fi.flags.rdwr or false, append = fi.flags.append }
		if fi.flags.trunc and fi.fh.write then node:truncate(0) end
		set_open_flags(fi)
	end

	function ops.mknod(path, modeset)
		if not modeset.reg then error(E.EACCES, 0) end
		if may_create(path) then return end
		if M.handle_editor then
			pending[path] = { node = new_node(""), opens = 0 }
		else
			call("write_to", path, "")
		end
	end

	function ops.create(path, modeset, fi)
		if not modeset.reg then error(E.EACCES, 0) end
		if may_create(path) then return editor_handle(path, fi) end
		local mode = open_mode(fi.flags)
		if has("raw_open") and call("raw_open", path, mode) then
			pending[path] = { opens = 1 }
			fi.fh = { kind = "raw", path = path, created = true }
			set_open_flags(fi)
			return
		end
		local p = { node = new_node(""), opens = 1 }
		pending[path] = p
		fi.fh = { kind = "mem", path = path, node = p.node, write = true,
			append = fi.flags.append, pending = p }
		set_open_flags(fi)
	end

	-- open: editor files and created files still open from memory; raw_open first when
	-- defined; read-only: is_file then read_file (a snapshot); read-write or append:
	-- can_write, is_file, read_file; write-only: can_write, contents read on first change.
	function ops.open(path, fi)
		local flags = fi.flags
		local e = editor_state(path)
		if e == 2 then return editor_handle(path, fi) end
		if e == 1 then error(E.ENOENT, 0) end
		local p = pending[path]
		if p and p.node then
			p.opens = p.opens + 1
			fi.fh = { kind = "mem", path = path, node = p.node,
				write = flags.wronly or flags.rdwr or false,
				append = flags.append, pending = p }
			if flags.trunc and fi.fh.write then
				p.node:truncate(0)
				p.node.modified = true
			end
			set_open_flags(fi)
			return
		end
		if has("raw_open") and call("raw_open", path, open_mode(flags)) then
			if p then p.opens = p.opens + 1 end
			fi.fh = { kind = "raw", path = path, pending = p }
			set_open_flags(fi)
			return
		end
		local node
		if not flags.wronly and not flags.rdwr then
			if not call("is_file", path) then error(E.ENOENT, 0) end
			local body = call("read_file", path)
			if type(body) ~= "string" then error(E.ENOENT, 0) end
			fi.fh = { kind = "mem", path = path, node = new_node(body), write = false }
			set_open_flags(fi)
			return
		elseif flags.rdwr or flags.append then
			if not call("can_write", path) then deny("can_write") end
			if flags.trunc then
				node = new_node("")
				node.modified = true
			elseif call("is_file", path) then
				local body = call("read_file", path)
				if type(body) ~= "string" then error(E.ENOENT, 0) end
				node = new_node(body)
			else
				node = new_node("")
			end
		else
			-- write-only: the contents are read (is_file, read_file) only if the file is
			-- written to or cut before being truncated to 0 (O_TRUNC)
			if not call("can_write", path) then deny("can_write") end
			node = new_node("")
			if flags.trunc then
				node.modified = true
			else
				node.loaded = false
			end
		end
		local h = { kind = "mem", path = path, node = node, write = true, append = flags.append }
		track(h)
		fi.fh = h
		set_open_flags(fi)
	end

	-- A write-only buffer gets the file's current contents before its first change.
	local function ensure_loaded(h)
		local node = h.node
		if node.loaded then return end
		node.loaded = true
		if call("is_file", h.path) then
			local body = call("read_file", h.path)
			if type(body) == "string" then
				node.parts = { body }
				node.len = #body
			end
		end
	end

	local function cut(h, size)
		if size == 0 then
			h.node.loaded = true
		else
			ensure_loaded(h)
		end
		h.node:truncate(size)
		if not h.editor then h.node.modified = true end
	end

	function ops.read(path, size, offset, fi)
		local h = fi.fh
		if type(h) ~= "table" then error(E.EBADF, 0) end
		if h.kind == "raw" then
			local r = call("raw_read", path, offset, size)
			if type(r) ~= "string" then return "" end
			if #r > size then r = r:sub(1, size) end
			return r
		end
		return h.node:read(offset, size)
	end

	function ops.write(path, data, offset, fi)
		local h = fi.fh
		if type(h) ~= "table" then error(E.EBADF, 0) end
		if h.kind == "raw" then
			local r = call("raw_write", path, offset, #data, data)
			r = math.type(r) == "integer" and r >= 0 and r <= #data and r or #data
			return r
		end
		if not h.write then error(E.EBADF, 0) end
		ensure_loaded(h)
		local node = h.node
		if h.append then offset = node.len end
		node:write(offset, data)
		node.modified = true
		node.written = true
		return #data
	end

	-- A close by the process that opened the file hands a buffer written to since the last
	-- commit to write_to, whole, so close reports write_to's errors. Other closes wait for the
	-- last one (release): a shell redirection closes a dup of the file before writing to it
	-- (nothing written yet), a child forked while the file was open closes its copy at exit.
	local function gone(h)
		return h.unlinked or (h.pending and h.pending.unlinked)
	end

	function ops.flush(path, fi)
		local h = fi.fh
		if type(h) ~= "table" or h.kind ~= "mem" or h.editor or not h.write then return end
		if h.node.written and not gone(h) and h.pid == requester() then
			commit(path, h.node)
		end
	end

	-- Last close: raw files get raw_close; buffers still modified are committed; with
	-- handle_editor off, a created file nothing was written to is still passed on (empty).
	function ops.release(path, fi)
		local h = fi.fh
		if type(h) ~= "table" then return end
		fi.fh = nil
		local p = h.pending
		if p then
			p.opens = p.opens - 1
		elseif h.kind == "raw" and h.created then
			p = pending[path]
			if p then p.opens = p.opens - 1 end
		end
		if h.kind == "raw" then
			call("raw_close", path)
		elseif h.write and not h.editor then
			untrack(h)
			local node = h.node
			if gone(h) then
				-- unlinked while open: nothing to hand over
			elseif node.modified then
				commit(path, node)
			elseif p and not node.committed and not M.handle_editor then
				commit(path, node)
			end
		end
		if p and p.opens <= 0 and pending[path] == p then pending[path] = nil end
	end

	function ops.unlink(path)
		local e = editor_state(path)
		if e == 2 then
			editor[path] = nil
			return
		end
		if e == 1 then error(E.ENOENT, 0) end
		local p = pending[path]
		if p then
			pending[path] = nil
			p.unlinked = true
			if not (p.node and p.node.committed) then return end
		end
		if not call("is_file", path) then error(E.ENOENT, 0) end
		if not call("can_delete", path) then deny("can_delete") end
		call("delete", path)
		-- files still open for writing must not bring it back when closed
		local set = handles[path]
		if set then
			for h in pairs(set) do h.unlinked = true end
		end
	end

	-- mkdir: is_directory and is_file (EEXIST), then can_mkdir, then mkdir.
	function ops.mkdir(path)
		if call("is_directory", path) then error(E.EEXIST, 0) end
		if call("is_file", path) then error(E.EEXIST, 0) end
		if not call("can_mkdir", path) then deny("can_mkdir") end
		call("mkdir", path)
	end

	-- rmdir: is_directory (else ENOTDIR for a file, ENOENT), can_rmdir, rmdir.
	function ops.rmdir(path)
		if not call("is_directory", path) then
			if call("is_file", path) then error(E.ENOTDIR, 0) end
			error(E.ENOENT, 0)
		end
		if not call("can_rmdir", path) then deny("can_rmdir") end
		call("rmdir", path)
	end

	local function exists(path)
		return call("is_file", path) or call("is_directory", path)
	end

	-- After a rename, files open for writing under the old name are closed under the new one;
	-- those open under the new name were replaced.
	local function moved(from, to)
		local replaced = handles[to]
		if replaced then
			for h in pairs(replaced) do h.unlinked = true end
		end
		local set = handles[from]
		handles[from], handles[to] = nil, set
		if set then
			for h in pairs(set) do h.path = to end
		end
		local p = pending[from]
		if p then pending[from], pending[to] = nil, p end
	end

	-- rename, as FuseFS: is_file(old), can_delete(old), can_write(new), then read_file(old),
	-- delete(old), write_to(new). Directories cannot be renamed (EXDEV, so mv copies them).
	function ops.rename(from, to, flags)
		if flags and flags.exchange then error(E.EINVAL, 0) end
		local noreplace = flags and flags.noreplace
		local fe, te = editor_state(from), editor_state(to)
		if fe == 1 then error(E.ENOENT, 0) end
		if fe == 2 then
			local node = editor[from]
			if te ~= 0 then
				if noreplace and te == 2 then error(E.EEXIST, 0) end
				editor[from] = nil
				node.kind = editor_kind(basename(to)) or "probe"
				editor[to] = node
				return
			end
			if noreplace and exists(to) then error(E.EEXIST, 0) end
			if not call("can_write", to) then deny("can_write") end
			editor[from] = nil
			call("write_to", to, node.link and "" or node:flat())
			moved(from, to)
			return
		end
		local p = pending[from]
		if p and p.node and not p.node.committed then
			-- created, still open, never handed over: it moves in memory
			if noreplace and (te == 2 or pending[to] or (te == 0 and exists(to))) then
				error(E.EEXIST, 0)
			end
			if te ~= 0 then
				p.unlinked = true
				pending[from] = nil
				p.node.kind = editor_kind(basename(to)) or "probe"
				editor[to] = p.node
				return
			end
			if not call("can_write", to) then deny("can_write") end
			moved(from, to)
			return
		end
		if not call("is_file", from) then
			if call("is_directory", from) then error(E.EXDEV, 0) end
			error(E.ENOENT, 0)
		end
		if not call("can_delete", from) then deny("can_delete") end
		if te ~= 0 then
			if noreplace and te == 2 then error(E.EEXIST, 0) end
			local body = call("read_file", from)
			call("delete", from)
			local node = new_editor(to)
			if type(body) == "string" then node:write(0, body) end
			local set = handles[from]
			if set then
				for h in pairs(set) do h.unlinked = true end
			end
			return
		end
		if noreplace and exists(to) then error(E.EEXIST, 0) end
		if not call("can_write", to) then deny("can_write") end
		local body = call("read_file", from)
		if type(body) ~= "string" then body = "" end
		call("delete", from)
		call("write_to", to, body)
		moved(from, to)
	end

	-- truncate: buffers of the file open for writing are cut (so O_TRUNC and ftruncate act on
	-- what will be written at close); otherwise is_file, can_write, read_file, write_to.
	local function truncate_path(path, size)
		local e = editor_state(path)
		if e == 2 then
			local node = editor[path]
			if not node.link then node:truncate(size) end
			return
		end
		if e == 1 then error(E.ENOENT, 0) end
		local p = pending[path]
		if p and p.node then
			p.node:truncate(size)
			p.node.modified = true
			return
		end
		local set = handles[path]
		if set and next(set) then
			for h in pairs(set) do cut(h, size) end
			return
		end
		if not call("is_file", path) then error(E.ENOENT, 0) end
		if not call("can_write", path) then deny("can_write") end
		local body = call("read_file", path)
		if type(body) ~= "string" then body = "" end
		local node = new_node(body)
		if node.len == size then return end
		node:truncate(size)
		call("write_to", path, node:flat())
	end

	function ops.truncate(path, size)
		truncate_path(path, size)
	end

	function ops.ftruncate(path, size, fi)
		local h = fi and fi.fh
		if type(h) == "table" and h.kind == "mem" then
			if not h.write then error(E.EBADF, 0) end
			cut(h, size)
		else
			truncate_path(path, size)
		end
	end

	-- utimens: the touch(path) toy (the kernel sends no times with truncations).
	function ops.utimens(path)
		if editor_state(path) ~= 0 then return end
		call("touch", path)
	end

	-- Editor lock files (emacs's .#name) may be symlinks; nothing else can be.
	function ops.symlink(target, path)
		local e = editor_state(path)
		if e == 2 then error(E.EEXIST, 0) end
		if e == 1 then
			local node = new_editor(path)
			node.link = target
			return
		end
		error(E.EPERM, 0)
	end

	function ops.readlink(path)
		local node = editor_state(path) == 2 and editor[path]
		if node and node.link then return node.link end
		error(E.EINVAL, 0)
	end

	-- Modes and owners are derived from the object: chmod and chown are accepted and change
	-- nothing (so cp -p, and mv copying a directory, work).
	function ops.chmod() end
	function ops.chown() end

	function ops.link()
		error(E.EPERM, 0)
	end

	function ops.statfs()
		return { bsize = 1024, frsize = 1024, blocks = 1000000000, bfree = 999999999,
			bavail = 999999999, files = 100000, ffree = 99999, namemax = 255 }
	end

	return ops
end

---------------------------------------------------------------------------------------------
-- FuseFS-style entry points

local state = { root = nil, mountpoint = nil, options = {} }

function M.set_root(obj)
	state.root = obj
	return true
end
M.root = function() return state.root end

-- mount_under(path [, opt ...]): FUSE options as FuseFS took them ("allow_other",
-- "default_permissions", "fsname=NAME", "max_read=N", ...). flufs mounts on its MOUNTPOINT;
-- another path is reported and ignored.
function M.mount_under(path, ...)
	if type(path) ~= "string" then
		error("fusefs.mount_under: a mount point path is required", 2)
	end
	local opts = {}
	for i = 1, select("#", ...) do
		local o = select(i, ...)
		if o ~= nil then opts[#opts + 1] = tostring(o) end
	end
	state.mountpoint = path
	state.options = opts
	local cli = rawget(_G, "arg") and _G.arg[1]
	if cli and path:gsub("/+$", "") ~= cli:gsub("/+$", "") then
		io.stderr:write(("fusefs: mount_under(%q): flufs mounts on its MOUNTPOINT %q\n"):format(path, cli))
	end
	return true
end

local function progname()
	local a = rawget(_G, "arg")
	local script = a and a[0]
	if type(script) == "string" then
		local stem = script:match("([^/]+)$"):gsub("%.lua$", "")
		if stem ~= "" then return stem end
	end
	return "fusefs"
end

-- run(): mount the root set with set_root and serve until unmounted (flu.main).
function M.run()
	local ops = M.adapt(state.root or {})
	local argv = { progname() }
	local a = rawget(_G, "arg")
	argv[#argv + 1] = state.mountpoint or (a and a[1]) or nil
	if #state.options > 0 then
		argv[#argv + 1] = "-o"
		argv[#argv + 1] = concat(state.options, ",")
	end
	local ok, err = flu.main(argv, ops)
	if not ok then error("fusefs.run: " .. tostring(err), 2) end
	return true
end

return M
