#!/usr/bin/env flufs
-- gett.lua: your Ge.tt shares as a filesystem (the FUSE-Gett idea, on the built-in `gett` module).
--
--   $ export GETT_APIKEY=... GETT_EMAIL=... GETT_PASSWORD=...   # GETT_API=http://host:port
--   $ flufs lua/gett.lua /mnt/gett [-- refresh=SECONDS cache=MIB timeout=SECONDS]
--
-- Every request is bounded by its HTTP time-outs; network waits do not count towards flufs'
-- --op-timeout.  Try it without an account: scripts/gett-demo.
--
-- Credentials come only from the environment: a password is never taken from the command
-- line (it would show in `ps`).  Settings (script arguments win over the environment):
--   refresh=S   GETT_REFRESH    seconds a listing of the shares is trusted (default 5; 0 = always ask)
--   cache=MIB   GETT_CACHE_MB   bytes of downloaded data kept for re-reads (default 64)
--   timeout=S   GETT_TIMEOUT    time-out of one HTTP request (default: the module's)
--   GETT_RESCUE_DIR             where data that could not be uploaded is saved at unmount
--                               (default ${XDG_DATA_HOME:-$HOME/.local/share}/flufs-gett/unsaved)
--
-- Layout:
--   /                 one directory per share, named by its title when that title is unique (and
--                     a usable file name), else by its sharename
--   /SHARE/FILE       the share's files by filename; when several files have the same name the
--                     newest keeps it and the others appear as "name (FILEID).ext"
--
-- Reading downloads (whole for files up to 4 MiB, 1 MiB-aligned byte ranges for larger ones)
-- through a bounded LRU cache.  Files that are not uploaded yet (readystate remote/uploading)
-- are listed with their known size (0 when absent) and reading them fails with EIO (not EAGAIN,
-- which some programs retry forever or take for end of file); see doc/gett.md.
--
-- Writing: every open file of the mount shares one in-memory "node" per Ge.tt file; writes go
-- into its buffer and close (flush), fsync or release uploads the whole buffer.  A failed upload
-- is the error of close()/fsync(); the data stays in memory (listed, readable, writable) and the
-- next close of a writer or `sync FILE` retries; `rm FILE` discards it.  Whatever is still
-- unsaved at unmount is tried once more, then written to GETT_RESCUE_DIR.
--
-- Ge.tt has no rename: renaming a file uploads its data under the new name (into the existing
-- target file when there is one, so its link stays the same) and then destroys the old file.
-- Renaming a share directory changes the share's title (to its own sharename: removes the title).
--
-- Ownership: everything belongs to the user who mounted; with -o allow_other other users may
-- read, and only that user (or root) may change anything (EACCES otherwise).

local flu = require "flu"
local gett = require "gett"

local errno = flu.errno
local ENOENT, ENOTDIR, EISDIR, EEXIST = errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST
local ENOTEMPTY, EINVAL, EPERM, EBUSY = errno.ENOTEMPTY, errno.EINVAL, errno.EPERM, errno.EBUSY
local EIO, EACCES = errno.EIO, errno.EACCES

local concat, insert, remove, sort = table.concat, table.insert, table.remove, table.sort
local min, max, floor = math.min, math.max, math.floor

local DIR_MODE = 0x41ed -- drwxr-xr-x
local FILE_MODE = 0x81a4 -- -rw-r--r--
local BLOCK = 1024 * 1024 -- download / cache granule of large files
local NAME_MAX = 255

-------------------------------------------------------------------------------
-- Settings and login
-------------------------------------------------------------------------------

local function log(msg)
	io.stderr:write("gett.lua: ", msg, "\n")
	io.stderr:flush()
end

local function usage_error(msg)
	error("gett.lua: " .. msg, 0)
end

local settings = {}
do
	local known = { refresh = true, cache = true, timeout = true }
	for i = 2, select("#", ...) do -- ... = MOUNTPOINT, SCRIPT_ARGS
		local a = tostring((select(i, ...)))
		local k, v = a:gsub("^%-%-", ""):match("^([%w_]+)=(.*)$")
		if a:lower():find("passw", 1, true) then
			usage_error("a password is never taken from the command line: set GETT_PASSWORD")
		elseif not k or not known[k] then
			usage_error("unknown argument '" .. a .. "' (known: refresh=SECONDS cache=MIB timeout=SECONDS)")
		elseif not tonumber(v) or tonumber(v) < 0 then
			usage_error(k .. "=" .. v .. ": expected a number >= 0")
		end
		settings[k] = tonumber(v)
	end
end

local function env_number(name)
	local v = os.getenv(name)
	if v == nil or v == "" then return nil end
	local n = tonumber(v)
	if not n or n < 0 then usage_error(name .. "=" .. v .. ": expected a number >= 0") end
	return n
end

local REFRESH = settings.refresh or env_number("GETT_REFRESH") or 5
local CACHE_BYTES = floor((settings.cache or env_number("GETT_CACHE_MB") or 64) * 1024 * 1024)
local TIMEOUT = settings.timeout or env_number("GETT_TIMEOUT")
local WHOLE_MAX = min(4 * BLOCK, max(CACHE_BYTES // 4, BLOCK)) -- files up to this are fetched whole

local session
do
	local apikey, email, password = os.getenv("GETT_APIKEY"), os.getenv("GETT_EMAIL"), os.getenv("GETT_PASSWORD")
	if not apikey or apikey == "" or not email or email == "" or not password then
		usage_error("set GETT_APIKEY, GETT_EMAIL and GETT_PASSWORD (and GETT_API for a server other than https://api.ge.tt)")
	end
	local err
	session, err = gett.login { apikey = apikey, email = email, password = password, timeout = TIMEOUT }
	if not session then usage_error("login failed: " .. tostring(err and (err.message or err))) end
end

-- The user who mounted (the daemon's real uid): only they (and root) may change the account.
local OWNER
do
	local f = io.open("/proc/self/status")
	if f then
		local s = f:read("a")
		f:close()
		OWNER = tonumber(s:match("\nUid:%s*(%d+)"))
	end
end

local function check_owner()
	if OWNER == nil then return end
	local uid = flu.get_context().uid
	if uid ~= OWNER and uid ~= 0 then error(EACCES) end
end

local function clock()
	local s, ns = flu.now()
	return s + ns * 1e-9
end

local MOUNT_TIME = clock()

-------------------------------------------------------------------------------
-- Errors from the gett module
-------------------------------------------------------------------------------

local function code_of(e)
	local t = type(e)
	if t == "userdata" then return e.code end
	if t == "number" then return e end
	if t == "string" and errno[e] then return errno[e].code end
	return nil
end

local function is_err(err, e)
	return type(err) == "table" and code_of(err.errno) == e.code
end

-- Raise the errno the module chose for `err` (EIO when it has none).
local function fail(err, what)
	if what then log(what .. ": " .. tostring(type(err) == "table" and err.message or err)) end
	local e = type(err) == "table" and err.errno
	if code_of(e) then error(e) end
	error(EIO)
end

-------------------------------------------------------------------------------
-- Write buffers: a list of pieces, joined when something needs a random access
-------------------------------------------------------------------------------

local Buf = {}
Buf.__index = Buf

local function new_buf(s)
	s = s or ""
	return setmetatable({ parts = { s }, len = #s }, Buf)
end

function Buf:flatten()
	if #self.parts ~= 1 then self.parts = { concat(self.parts) } end
	return self.parts[1]
end

function Buf:append(s)
	if #s > 0 then
		self.parts[#self.parts + 1] = s
		self.len = self.len + #s
	end
end

function Buf:write(off, data)
	if off == self.len then
		self:append(data)
	elseif off > self.len then
		self:append(("\0"):rep(off - self.len))
		self:append(data)
	else
		local s = self:flatten()
		s = s:sub(1, off) .. data .. s:sub(off + #data + 1)
		self.parts, self.len = { s }, #s
	end
end

function Buf:read(off, size)
	if off >= self.len then return "" end
	return self:flatten():sub(off + 1, off + size)
end

function Buf:truncate(n)
	if n < self.len then
		local s = self:flatten():sub(1, n)
		self.parts, self.len = { s }, n
	elseif n > self.len then
		self:append(("\0"):rep(n - self.len))
	end
end

-------------------------------------------------------------------------------
-- Download cache: LRU of whole small files and BLOCK-sized pieces of large ones
-------------------------------------------------------------------------------

local cache = { bytes = 0, tick = 0, entries = {}, files = {} }

local function cache_get(ck)
	local e = cache.entries[ck]
	if not e then return nil end
	cache.tick = cache.tick + 1
	e.used = cache.tick
	return e.data
end

local function cache_del(ck)
	local e = cache.entries[ck]
	if not e then return end
	cache.entries[ck] = nil
	cache.bytes = cache.bytes - #e.data
	local f = cache.files[e.fkey]
	if f then
		f[ck] = nil
		if next(f) == nil then cache.files[e.fkey] = nil end
	end
end

local function cache_put(fkey, ck, data)
	if #data > CACHE_BYTES then return end
	cache_del(ck)
	while cache.bytes + #data > CACHE_BYTES do
		local oldest, ok
		for k, e in pairs(cache.entries) do
			if not ok or e.used < oldest then oldest, ok = e.used, k end
		end
		cache_del(ok)
	end
	cache.tick = cache.tick + 1
	cache.entries[ck] = { data = data, used = cache.tick, fkey = fkey }
	cache.bytes = cache.bytes + #data
	local f = cache.files[fkey]
	if not f then
		f = {}
		cache.files[fkey] = f
	end
	f[ck] = true
end

local function cache_drop(fkey)
	local f = cache.files[fkey]
	if not f then return end
	for ck in pairs(f) do cache_del(ck) end
end

-------------------------------------------------------------------------------
-- The model: the shares as last listed, plus local nodes of open or unsaved files
-------------------------------------------------------------------------------

local shares = {} -- share tables from the API (live ones, API order: newest first)
local fetched = -math.huge -- clock() of the last listing
local index -- names -> objects, rebuilt lazily (nil = stale)
local nodes = {} -- key -> node of a file that is open, or has data not uploaded yet
local mtimes = {} -- key -> time of the last upload from this mount
local user_info, user_time -- cached user() for statfs

local function key_of(sharename, fileid)
	return sharename .. "/" .. fileid
end

local function usable_name(s)
	return type(s) == "string" and s ~= "" and s ~= "." and s ~= ".." and #s <= NAME_MAX
		and not s:find("[/%z]")
end

local function uploaded(f)
	if f.readystate == nil then return f.size ~= nil end
	return f.readystate == "uploaded"
end

local function live_files(s)
	local out = {}
	if type(s.files) == "table" then
		for _, f in ipairs(s.files) do
			if type(f) == "table" and f.fileid ~= nil and f.readystate ~= "removed" then
				out[#out + 1] = f
			end
		end
	end
	return out
end

local function split_ext(name)
	local stem, ext = name:match("^(.+)(%.[^.]+)$")
	if stem then return stem, ext end
	return name, ""
end

-- The names of one share's files: name -> entry {key=, fileid=, rec=file table or nil}
local function name_files(s)
	local list, seen = {}, {}
	for pos, f in ipairs(live_files(s)) do
		local id = tostring(f.fileid)
		local k = key_of(s.sharename, id)
		seen[k] = true
		local base = type(f.filename) == "string" and f.filename:gsub("[/%z]", "_") or ""
		if not usable_name(base) then base = "(" .. id:gsub("[/%z]", "_") .. ")" end
		list[#list + 1] = { key = k, fileid = id, rec = f, base = base,
			created = tonumber(f.created) or 0, pos = pos }
	end
	-- files whose upload failed and whose Ge.tt record is gone meanwhile: still listed
	for k, n in pairs(nodes) do
		if n.share == s.sharename and n.dirty and not n.unlinked and not seen[k] then
			list[#list + 1] = { key = k, fileid = n.fileid, base = n.name, created = math.huge, pos = 0 }
		end
	end
	local groups, bases = {}, {}
	for _, e in ipairs(list) do
		local g = groups[e.base]
		if not g then
			g = {}
			groups[e.base] = g
			bases[#bases + 1] = e.base
		end
		g[#g + 1] = e
	end
	sort(bases)
	local out = {}
	for _, base in ipairs(bases) do
		local g = groups[base]
		sort(g, function(a, b)
			if a.created ~= b.created then return a.created > b.created end
			return a.pos < b.pos
		end)
		out[base] = g[1]
	end
	for _, base in ipairs(bases) do
		local g = groups[base]
		local stem, ext = split_ext(base)
		for i = 2, #g do
			local id = g[i].fileid:gsub("[/%z]", "_")
			local name, n = stem .. " (" .. id .. ")" .. ext, 1
			while out[name] do
				n = n + 1
				name = stem .. " (" .. id .. "-" .. n .. ")" .. ext
			end
			out[name] = g[i]
		end
	end
	return out
end

local function build_index()
	local idx = { dirs = {}, dirname = {}, files = {}, recs = {} }
	local titles, snames = {}, {}
	for _, s in ipairs(shares) do
		snames[s.sharename] = true
		if usable_name(s.title) then titles[s.title] = (titles[s.title] or 0) + 1 end
	end
	for _, s in ipairs(shares) do
		local t, name = s.title, s.sharename
		if usable_name(t) and titles[t] == 1 and (t == s.sharename or not snames[t]) then name = t end
		idx.dirs[name] = s
		idx.dirname[s.sharename] = name
		local files = name_files(s)
		idx.files[s.sharename] = files
		for _, e in pairs(files) do
			if e.rec then idx.recs[e.key] = e.rec end
		end
	end
	index = idx
	return idx
end

local function idx()
	return index or build_index()
end

-- Fetch the list of shares when the last one is older than REFRESH (or `force`).
local function refresh(force)
	if not force and clock() - fetched < REFRESH then return end
	local list, err = session:shares()
	fetched = clock()
	if not list then
		log("cannot list the shares (keeping the last listing): " .. tostring(err and err.message))
		return
	end
	local old = idx().recs
	local live = {}
	for _, s in ipairs(list) do
		if type(s) == "table" and type(s.sharename) == "string" and s.readystate ~= "removed" then
			live[#live + 1] = s
		end
	end
	shares = live
	index = nil
	-- forget downloaded data of files that changed or went away
	local new = idx().recs
	for k, f in pairs(old) do
		local g = new[k]
		if not g or g.size ~= f.size or g.readystate ~= f.readystate or g.created ~= f.created then
			cache_drop(k)
		end
	end
end

local function find_share(sharename)
	for i, s in ipairs(shares) do
		if s.sharename == sharename then return s, i end
	end
end

local function find_rec(sharename, fileid)
	local s = find_share(sharename)
	if not s or type(s.files) ~= "table" then return nil end
	for i, f in ipairs(s.files) do
		if type(f) == "table" and tostring(f.fileid) == fileid then return f, s, i end
	end
end

local function drop_rec(sharename, fileid)
	local _, s, i = find_rec(sharename, fileid)
	if s then remove(s.files, i) end
	index = nil
end

-- path -> {kind="root"} | {kind="share", share=} | {kind="file", share=, entry=}, or nil,
-- in the current listing
local function lookup(path)
	if path == "/" then return { kind = "root" } end
	local dir, rest = path:match("^/([^/]+)(.*)$")
	local s = dir and idx().dirs[dir]
	if not s then return nil end
	if rest == "" then return { kind = "share", share = s } end
	local name = rest:match("^/([^/]+)$")
	local e = name and idx().files[s.sharename][name]
	if not e then return nil end
	return { kind = "file", share = s, entry = e }
end

-- The same after refreshing the listing if it is older than REFRESH.  An operation calls this
-- once (then `lookup`), so that the share tables it holds stay the current ones.
local function resolve(path)
	refresh()
	return lookup(path)
end

local function split_path(path)
	local dir, name = path:match("^(.*)/([^/]+)$")
	if dir == "" then dir = "/" end
	return dir, name
end

-------------------------------------------------------------------------------
-- Nodes: one per Ge.tt file that is open here or holds unsaved data
-------------------------------------------------------------------------------
-- node = {key=, share=, fileid=, name=, refs=, buf=Buf or nil (not loaded), dirty=,
--         attempted= (an upload was tried since the last change), unlinked=, mtime=}

local function get_node(sharename, fileid, name)
	local k = key_of(sharename, fileid)
	local n = nodes[k]
	if not n then
		n = { key = k, share = sharename, fileid = fileid, name = name, refs = 0 }
		nodes[k] = n
	end
	return n
end

local function forget_node(n)
	if nodes[n.key] == n then nodes[n.key] = nil end
end

local function rekey(n, sharename, fileid, name)
	forget_node(n)
	n.key, n.share, n.fileid, n.name = key_of(sharename, fileid), sharename, fileid, name
	nodes[n.key] = n
end

-- The file table of a node's file, refreshed from the server when it is not uploaded yet.
local function current_rec(sharename, fileid)
	local f = find_rec(sharename, fileid)
	if f and uploaded(f) then return f end
	local g, err = session:file(sharename, fileid)
	if not g then
		if is_err(err, ENOENT) then return nil end
		fail(err, "cannot look up file " .. fileid .. " of share " .. sharename)
	end
	if f then
		for k, v in pairs(g) do f[k] = v end
		return f
	end
	return g
end

-- The whole content of an uploaded file (through the cache).
local function download_whole(sharename, fileid)
	local k = key_of(sharename, fileid)
	local d = cache_get(k .. "#all")
	if d then return d end
	local data, err = session:download(sharename, fileid)
	if not data then fail(err, "download of " .. k .. " failed") end
	cache_put(k, k .. "#all", data)
	return data
end

-- Bytes [offset, offset+size) of an uploaded file of `fsize` bytes.
local function read_remote(sharename, fileid, fsize, offset, size)
	if fsize == nil or fsize <= WHOLE_MAX then
		return download_whole(sharename, fileid):sub(offset + 1, offset + size)
	end
	if offset >= fsize then return "" end
	local k = key_of(sharename, fileid)
	local last = min(offset + size, fsize) -- exclusive
	local b0, b1 = offset // BLOCK, (last - 1) // BLOCK
	local parts, b = {}, b0
	while b <= b1 do
		local d = cache_get(k .. "#" .. b)
		if d then
			parts[#parts + 1] = d
			b = b + 1
		else
			local e = b -- one ranged request for the run of missing blocks
			while e < b1 and not cache.entries[k .. "#" .. (e + 1)] do e = e + 1 end
			local from = b * BLOCK
			local len = min((e + 1) * BLOCK, fsize) - from
			local data, err = session:download(sharename, fileid, from, len)
			if not data then fail(err, "download of " .. k .. " failed") end
			for i = b, e do
				local piece = data:sub((i - b) * BLOCK + 1, (i - b + 1) * BLOCK)
				if #piece == 0 then break end
				cache_put(k, k .. "#" .. i, piece)
				parts[#parts + 1] = piece
			end
			if #data < len then -- the file shrank meanwhile
				fetched = -math.huge
				break
			end
			b = e + 1
		end
	end
	local start = offset - b0 * BLOCK
	return concat(parts):sub(start + 1, start + (last - offset))
end

-- Load a node's current content into its buffer (for writing).
local function load(n)
	if n.buf then return end
	local f = current_rec(n.share, n.fileid)
	if not f then error(ENOENT) end
	if not uploaded(f) then
		log(n.name .. ": not uploaded yet, cannot be changed in place (overwrite it whole)")
		error(EIO)
	end
	if tonumber(f.size) == 0 then
		n.buf = new_buf("")
	else
		n.buf = new_buf(download_whole(n.share, n.fileid))
	end
end

local function set_size(n, size)
	if size == 0 then
		n.buf = new_buf("")
	else
		load(n)
		n.buf:truncate(size)
	end
	n.dirty, n.attempted, n.mtime = true, false, clock()
end

-- Upload a node's buffer.  On failure the data stays in the node and the errno is raised.
local function save(n)
	local data = n.buf:flatten()
	n.attempted = true
	local ok, err = session:upload(n.share, n.fileid, data)
	if not ok and is_err(err, ENOENT) then
		-- the Ge.tt file was destroyed meanwhile (elsewhere): create it again
		local f = session:create_file(n.share, n.name)
		if f then
			local s = find_share(n.share)
			f.upload = nil
			if s and type(s.files) == "table" then insert(s.files, 1, f) end
			index = nil
			rekey(n, n.share, tostring(f.fileid), n.name)
			ok, err = session:upload(n.share, n.fileid, data)
		end
	end
	if not ok then
		local msg = tostring(err and err.message)
		log(("upload of %s (%d bytes) failed: %s; the data is kept: close or 'sync' it to retry, rm to discard")
			:format(n.share .. "/" .. n.name, #data, msg))
		fail(err)
	end
	n.dirty = false
	local f = find_rec(n.share, n.fileid)
	if f then
		f.size, f.readystate = #data, "uploaded"
	end
	mtimes[n.key] = n.mtime or clock()
	cache_drop(n.key)
	if #data <= WHOLE_MAX then cache_put(n.key, n.key .. "#all", data) end
	user_info = nil
end

-------------------------------------------------------------------------------
-- Attributes
-------------------------------------------------------------------------------

local function share_stat(s)
	local t = tonumber(s.created) or MOUNT_TIME
	return { mode = DIR_MODE, nlink = 2, size = 0, modification = t, access = t, change = t }
end

local function file_stat(k, f)
	local n = nodes[k]
	local size
	if n and n.buf then
		size = n.buf.len
	else
		size = f and tonumber(f.size) or 0
	end
	local t = (n and n.dirty and n.mtime) or mtimes[k] or (f and tonumber(f.created)) or MOUNT_TIME
	return { mode = FILE_MODE, nlink = 1, size = size, modification = t, access = t, change = t }
end

local function stat_of(r)
	if r.kind == "root" then
		return { mode = DIR_MODE, nlink = 2 + #shares, modification = MOUNT_TIME }
	elseif r.kind == "share" then
		return share_stat(r.share)
	end
	return file_stat(r.entry.key, r.entry.rec)
end

-------------------------------------------------------------------------------
-- Operations
-------------------------------------------------------------------------------

local fs = {}

function fs.getattr(path)
	local r = resolve(path)
	if not r then error(ENOENT) end
	return stat_of(r)
end

function fs.fgetattr(path, st, fi)
	local n = fi and type(fi.fh) == "table" and fi.fh.node
	if n then -- by the open file, so it works after unlink and rename
		return file_stat(n.key, find_rec(n.share, n.fileid))
	end
	return fs.getattr(path)
end

function fs.readdir(path, filler)
	local r = resolve(path)
	if not r then error(ENOENT) end
	if r.kind == "file" then error(ENOTDIR) end
	filler(".")
	filler("..")
	local names, objs = {}, {}
	if r.kind == "root" then
		for name, s in pairs(idx().dirs) do
			names[#names + 1] = name
			objs[name] = share_stat(s)
		end
	else
		for name, e in pairs(idx().files[r.share.sharename]) do
			names[#names + 1] = name
			objs[name] = file_stat(e.key, e.rec)
		end
	end
	sort(names)
	for _, name in ipairs(names) do filler(name, objs[name]) end
end

function fs.statfs()
	if not user_info or clock() - user_time >= REFRESH then
		local u, err = session:user()
		if u then
			user_info, user_time = u, clock()
		elseif not user_info then
			fail(err, "cannot read the account's storage")
		end
	end
	local st = type(user_info.storage) == "table" and user_info.storage or {}
	local limit, used = tonumber(st.limit) or 0, tonumber(st.used) or 0
	local free = max(0, limit - used)
	return { bsize = 4096, frsize = 4096, blocks = limit // 4096, bfree = free // 4096,
		bavail = free // 4096, namemax = NAME_MAX }
end

function fs.mkdir(path)
	check_owner()
	local dir, name = split_path(path)
	local r = resolve(dir)
	if not r then error(ENOENT) end
	if r.kind ~= "root" then error(EPERM) end -- shares do not nest
	if idx().dirs[name] then error(EEXIST) end
	for _, s in ipairs(shares) do
		-- a share titled like another would not show under that name
		if s.title == name or s.sharename == name then error(EEXIST) end
	end
	local s, err = session:create_share(name)
	if not s then fail(err, "cannot create share " .. name) end
	if type(s.files) ~= "table" then s.files = {} end
	insert(shares, 1, s)
	index = nil
end

-- An up-to-date check that a share has no files (here or on the server).
local function share_is_empty(s)
	for _, n in pairs(nodes) do
		if n.share == s.sharename and not n.unlinked then return false end
	end
	local fresh, err = session:share(s.sharename)
	if not fresh then fail(err, "cannot read share " .. s.sharename) end
	s.files = fresh.files
	index = nil
	return #live_files(fresh) == 0
end

local function forget_share(s)
	local _, i = find_share(s.sharename)
	if i then remove(shares, i) end
	index = nil
	user_info = nil
end

function fs.rmdir(path)
	check_owner()
	local r = resolve(path)
	if not r then error(ENOENT) end
	if r.kind == "root" then error(EBUSY) end
	if r.kind == "file" then error(ENOTDIR) end
	local s = r.share
	if not share_is_empty(s) then error(ENOTEMPTY) end
	local ok, err = session:destroy_share(s.sharename)
	if not ok then fail(err, "cannot destroy share " .. s.sharename) end
	forget_share(s)
end

function fs.create(path, modeset, fi)
	check_owner()
	local dir, name = split_path(path)
	local r = resolve(dir)
	if not r then error(ENOENT) end
	if r.kind == "root" then error(EPERM) end -- files live in shares
	if r.kind == "file" then error(ENOTDIR) end
	local s = r.share
	if idx().files[s.sharename][name] then error(EEXIST) end
	local f, err = session:create_file(s.sharename, name)
	if not f then fail(err, "cannot create " .. name .. " in share " .. s.sharename) end
	f.upload = nil
	if type(s.files) ~= "table" then s.files = {} end
	insert(s.files, 1, f)
	index = nil
	local n = get_node(s.sharename, tostring(f.fileid), name)
	n.refs = n.refs + 1
	n.buf, n.dirty, n.attempted, n.mtime = new_buf(""), true, false, clock()
	fi.fh = { node = n, writing = true }
end

function fs.open(path, fi)
	local r = resolve(path)
	if not r then error(ENOENT) end
	if r.kind ~= "file" then error(EISDIR) end
	local fl = fi.flags
	local writing = fl.wronly or fl.rdwr or false
	if writing then check_owner() end
	local e = r.entry
	local n = get_node(r.share.sharename, e.fileid, e.rec and e.rec.filename or e.base)
	n.refs = n.refs + 1
	fi.fh = { node = n, writing = writing }
	if writing and fl.trunc then set_size(n, 0) end
	-- a file without content has size 0: bypass the page cache so that read() reaches us
	if not n.buf and not (e.rec and uploaded(e.rec)) then fi.direct_io = true end
end

function fs.read(path, size, offset, fi)
	local n = fi and type(fi.fh) == "table" and fi.fh.node
	if not n then
		local r = resolve(path)
		if not r then error(ENOENT) end
		if r.kind ~= "file" then error(EISDIR) end
		n = nodes[r.entry.key] or { share = r.share.sharename, fileid = r.entry.fileid, name = r.entry.base }
	end
	if n.buf then return n.buf:read(offset, size) end
	local f = current_rec(n.share, n.fileid)
	if not f then error(ENOENT) end
	if not uploaded(f) then
		log(("%s/%s: not uploaded yet (readystate %s): read refused")
			:format(n.share, n.name or n.fileid, tostring(f.readystate)))
		error(EIO)
	end
	return read_remote(n.share, n.fileid, tonumber(f.size), offset, size)
end

function fs.write(path, data, offset, fi)
	local n = fi.fh.node
	if n.unlinked and not n.buf then n.buf = new_buf("") end
	load(n)
	n.buf:write(offset, data)
	n.dirty, n.attempted, n.mtime = true, false, clock()
	return #data
end

function fs.ftruncate(path, size, fi)
	check_owner()
	local n = fi.fh.node
	set_size(n, size)
end

function fs.truncate(path, size)
	check_owner()
	local r = resolve(path)
	if not r then error(ENOENT) end
	if r.kind ~= "file" then error(EISDIR) end
	local e = r.entry
	local n = nodes[e.key]
	if n then -- open here (or unsaved): change that content, upload now
		set_size(n, size)
		save(n)
		return
	end
	n = { key = e.key, share = r.share.sharename, fileid = e.fileid, name = e.base, refs = 0 }
	local ok, err = pcall(function()
		set_size(n, size)
		save(n)
	end)
	forget_node(n) -- a temporary node; on failure nothing changed (the error says so)
	if not ok then error(err, 0) end
end

-- Upload on close: errors go to close(2) of the program (cp, editors, shell redirections).
function fs.flush(path, fi)
	local h = fi.fh
	if type(h) ~= "table" or not h.writing then return end
	local n = h.node
	if n.dirty and not n.unlinked then save(n) end
end

function fs.fsync(path, datasync, fi)
	local h = fi.fh
	if type(h) ~= "table" then return end
	local n = h.node
	if n.dirty and not n.unlinked then save(n) end
end

function fs.release(path, fi)
	local h = fi.fh
	if type(h) ~= "table" then return end
	local n = h.node
	fi.fh = nil
	n.refs = n.refs - 1
	if n.dirty and not n.unlinked and not n.attempted then
		pcall(save, n) -- written but never flushed (should not happen: close flushes)
	end
	if n.refs > 0 then return end
	if n.dirty and not n.unlinked then
		if h.writing then
			log(n.share .. "/" .. n.name .. ": closed with data that is not uploaded; kept in memory")
		end
	else
		forget_node(n)
	end
end

function fs.unlink(path)
	check_owner()
	local r = resolve(path)
	if not r then error(ENOENT) end
	if r.kind ~= "file" then error(EISDIR) end
	local e, sname = r.entry, r.share.sharename
	local n = nodes[e.key]
	local ok, err = true, nil
	if e.rec then ok, err = session:destroy_file(sname, e.fileid) end
	if not ok then
		if not is_err(err, ENOENT) then fail(err, "cannot destroy " .. e.key) end
		drop_rec(sname, e.fileid) -- gone already
		if not (n and n.dirty) then error(ENOENT) end
	end
	drop_rec(sname, e.fileid)
	if n then
		n.unlinked = true
		forget_node(n)
	end
	cache_drop(e.key)
	mtimes[e.key] = nil
	user_info = nil
end

local function rename_share(s, newname, flags)
	local target = idx().dirs[newname]
	if target == s then return end
	if target and flags.noreplace then error(EEXIST) end
	local title = newname
	if newname == s.sharename then
		title = nil -- back to the sharename: no title
	else
		for _, o in ipairs(shares) do
			if o ~= s and o ~= target and (o.title == newname or o.sharename == newname) then
				error(EEXIST) -- the share would not show under that name
			end
		end
	end
	if target then -- POSIX: a directory may replace an empty one
		if not share_is_empty(target) then error(ENOTEMPTY) end
		local ok, err = session:destroy_share(target.sharename)
		if not ok then fail(err, "cannot destroy share " .. target.sharename) end
		forget_share(target)
	end
	local ns, err = session:update_share(s.sharename, title)
	if not ns then fail(err, "cannot retitle share " .. s.sharename) end
	for k, v in pairs(ns) do s[k] = v end
	s.title = ns.title
	if title and s.title == nil then s.title = title end
	index = nil
end

local function rename_file(r, dshare, newname, flags)
	local e, sname = r.entry, r.share.sharename
	local dst = idx().files[dshare.sharename][newname]
	if dst and dst.key == e.key then return end
	if dst and flags.noreplace then error(EEXIST) end
	-- the data to move
	local n = nodes[e.key]
	local data
	if n and n.buf then
		data = n.buf:flatten()
	else
		local f = current_rec(sname, e.fileid)
		if not f then error(ENOENT) end
		if not uploaded(f) then
			log(e.key .. ": not uploaded yet, cannot be renamed")
			error(EBUSY)
		end
		data = tonumber(f.size) == 0 and "" or download_whole(sname, e.fileid)
	end
	-- upload it under the new name: into the existing target, or a new file
	local tshare, tid, created = dshare.sharename, nil, nil
	if dst and dst.rec then
		tid = dst.fileid
	else
		local f, err = session:create_file(tshare, newname)
		if not f then fail(err, "cannot create " .. newname .. " in share " .. tshare) end
		f.upload = nil
		if type(dshare.files) ~= "table" then dshare.files = {} end
		insert(dshare.files, 1, f)
		tid, created = tostring(f.fileid), f
	end
	index = nil
	local ok, err = session:upload(tshare, tid, data)
	if not ok then
		if created then
			session:destroy_file(tshare, tid)
			drop_rec(tshare, tid)
		end
		fail(err, "upload of " .. tshare .. "/" .. newname .. " failed")
	end
	local tkey = key_of(tshare, tid)
	local f = find_rec(tshare, tid)
	if f then f.size, f.readystate = #data, "uploaded" end
	if dst and dst.key ~= tkey then -- a local-only target (its record is gone): replaced
		local dn = nodes[dst.key]
		if dn then
			dn.unlinked = true
			forget_node(dn)
		end
	end
	local tn = nodes[tkey]
	if tn and tn ~= n then -- whoever had the target open keeps the replaced content
		tn.unlinked = true
		forget_node(tn)
	end
	cache_drop(tkey)
	if #data <= WHOLE_MAX then cache_put(tkey, tkey .. "#all", data) end
	mtimes[tkey] = (n and n.mtime) or mtimes[e.key] or clock()
	user_info = nil
	-- then destroy the source
	local ok2, err2 = session:destroy_file(sname, e.fileid)
	if n then
		rekey(n, tshare, tid, newname)
		n.dirty = false
		if n.refs <= 0 then forget_node(n) end -- was unsaved data: now it is uploaded
	end
	cache_drop(e.key)
	mtimes[e.key] = nil
	if not ok2 and not is_err(err2, ENOENT) then
		fail(err2, "renamed " .. e.key .. " to " .. tkey .. " but cannot destroy the old file")
	end
	drop_rec(sname, e.fileid)
end

function fs.rename(old, new, flags)
	check_owner()
	flags = flags or {}
	if flags.exchange then error(EINVAL) end
	local r = resolve(old)
	if not r then error(ENOENT) end
	if old == new then return end
	if r.kind == "root" then error(EBUSY) end
	local newdir, newname = split_path(new)
	local pr = lookup(newdir)
	if not pr then error(ENOENT) end
	if r.kind == "share" then
		if pr.kind ~= "root" then error(EPERM) end -- shares do not nest
		return rename_share(r.share, newname, flags)
	end
	if pr.kind == "root" then error(EPERM) end -- files live in shares
	if pr.kind == "file" then error(ENOTDIR) end
	return rename_file(r, pr.share, newname, flags)
end

-- Ge.tt keeps no modes, owners or times: accepted (so cp -p, touch and editors work), not kept.
function fs.chmod(path)
	check_owner()
	if not resolve(path) then error(ENOENT) end
end

function fs.chown(path)
	check_owner()
	if not resolve(path) then error(ENOENT) end
end

function fs.utimens(path)
	check_owner()
	if not resolve(path) then error(ENOENT) end
end

-- access(2): everyone may read and search; writing is the mounting user's (and root's).
function fs.access(path, mask)
	local r = resolve(path)
	if not r then error(ENOENT) end
	if mask & 1 ~= 0 and r.kind == "file" then error(EACCES) end -- files are not executable
	if mask & 2 ~= 0 then check_owner() end
end

-- At unmount: upload what is still unsaved, or save it locally.
function fs.destroy()
	local rescue
	for _, n in pairs(nodes) do
		if n.dirty and not n.unlinked and n.buf then
			if not pcall(save, n) then
				if not rescue then
					local base = os.getenv("GETT_RESCUE_DIR")
					if not base or base == "" then
						local data = os.getenv("XDG_DATA_HOME")
						if not data or data == "" then data = (os.getenv("HOME") or "/tmp") .. "/.local/share" end
						base = data .. "/flufs-gett/unsaved"
					end
					rescue = base .. "/" .. os.date("%Y%m%d-%H%M%S")
				end
				local dir = rescue .. "/" .. n.share
				os.execute("mkdir -p '" .. dir:gsub("'", "'\\''") .. "'")
				local path = dir .. "/" .. n.name:gsub("/", "_")
				local f = io.open(path, "wb")
				if f and f:write(n.buf:flatten()) and f:close() then
					log("not uploaded, saved to " .. path)
				else
					log("not uploaded and cannot be saved: " .. n.share .. "/" .. n.name .. " (data lost)")
				end
			end
		end
	end
end

refresh(true) -- the first listing, before the mount goes live

return fs
