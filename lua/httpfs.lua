#!/usr/bin/env flufs
-- httpfs: a REST object store as a filesystem, in a page of Lua on the built-in http and json
-- modules. Any server with this API works (tests/objectstore_server.py is one):
--   GET /objects                  -> [{"key": "docs/a.txt", "size": 5, "mtime": 1.7e9}, ...]
--   GET | PUT | DELETE /objects/KEY   read, store (whole) or remove one object; 404: no such key
-- Keys containing "/" show as directories, as in S3; mkdir stores an empty marker "DIR/".
-- Files are read whole when opened and written back whole when closed (or fsync'ed).
--
--   flufs lua/httpfs.lua MOUNTPOINT -- URL [refresh=SECONDS] [timeout=SECONDS]
--   (or HTTPFS_URL=URL); refresh: how long a listing is trusted (default 1), timeout: of one
--   HTTP request (default 30).
local flu, http, json = require "flu", require "http", require "json"
local E = flu.errno

local base, refresh = os.getenv("HTTPFS_URL"), 1
http.timeout = 30
for i = 2, select("#", ...) do
  local a = select(i, ...)
  local k, v = a:match("^(%a+)=(.*)$")
  if k == "refresh" then refresh = assert(tonumber(v), "refresh=SECONDS")
  elseif k == "timeout" then http.timeout = assert(tonumber(v), "timeout=SECONDS")
  elseif k then error("httpfs: unknown setting " .. a)
  else base = a end
end
assert(base, "usage: flufs httpfs.lua MOUNTPOINT -- URL [refresh=SECONDS] [timeout=SECONDS]")
base = base:gsub("/+$", "") .. "/objects"

local function now() local s, ns = flu.now() return s + ns * 1e-9 end

-- One request. No answer, or an error status, becomes the errno the user's call fails with.
local errnos = {[400] = E.EINVAL, [401] = E.EACCES, [403] = E.EACCES, [404] = E.ENOENT,
                [413] = E.EFBIG, [507] = E.ENOSPC}
local function call(method, key, body)
  local url = key and base .. "/" .. http.escape(key) or base
  local status, data = http.request{method = method, url = url, body = body}
  if not status then
    flu.log(("httpfs: %s %s: %s"):format(method, key or "", tostring(data)), "warning")
    error(data.errno)
  end
  if status >= 300 then error(errnos[status] or E.EIO) end
  return data
end

-- The listing (key -> {key, size, mtime}), fetched again when older than `refresh` seconds.
local listing, listed_at = nil, 0
local function objects()
  if not listing or now() - listed_at >= refresh then
    local list = json.decode(call("GET")) or error(E.EIO)
    listing, listed_at = {}, now()
    for _, o in ipairs(list) do listing[o.key] = o end
  end
  return listing
end
local function changed() listing = nil end

local writing = {}    -- path -> buffer {path, data, dirty, users} of a file open for writing

-- "dir", a file ({size=, mtime=}) or nil.
local function lookup(path)
  if path == "/" then return "dir" end
  local buf = writing[path]
  if buf then return {size = #buf.data, mtime = buf.mtime} end
  local objs, key = objects(), path:sub(2)
  if objs[key] then return objs[key] end
  for k in pairs(objs) do
    if k:sub(1, #key + 1) == key .. "/" then return "dir" end
  end
end

local function stat(o)
  if o == "dir" then return {mode = tonumber("40755", 8)} end
  return {mode = tonumber("100644", 8), size = o.size,
          modification = o.mtime, change = o.mtime, access = o.mtime}
end

local function save(buf)
  if buf.dirty then
    call("PUT", buf.path:sub(2), buf.data)
    buf.dirty = false
    changed()
  end
end

local fs = {}

function fs.getattr(path) return stat(lookup(path) or error(E.ENOENT)) end

function fs.readdir(path, filler)
  local prefix = path == "/" and "" or path:sub(2) .. "/"
  local seen = {}
  filler(".") filler("..")
  for key, o in pairs(objects()) do
    if key:sub(1, #prefix) == prefix then
      local name, slash = key:sub(#prefix + 1):match("^([^/]+)(/?)")
      if name and not seen[name] then
        seen[name] = true
        filler(name, stat(slash == "/" and "dir" or o))
      end
    end
  end
end

function fs.open(path, fi)
  local w = fi.flags.wronly or fi.flags.rdwr
  local buf = writing[path]
  if not buf then
    buf = {path = path, users = 0}
    if w and fi.flags.trunc then buf.data, buf.dirty = "", true
    else buf.data = call("GET", path:sub(2)) end
  end
  if w then buf.users = buf.users + 1; writing[path] = buf end
  fi.fh = {buf = buf, writer = w}
end

function fs.create(path, mode, fi)
  call("PUT", path:sub(2), "")        -- the file exists at once; a refused name fails here
  changed()
  local buf = {path = path, data = "", users = 1, mtime = now()}
  writing[path] = buf
  fi.fh = {buf = buf, writer = true}
end

function fs.read(path, size, offset, fi) return fi.fh.buf.data:sub(offset + 1, offset + size) end

function fs.write(path, data, offset, fi)
  local buf = fi.fh.buf
  local d = buf.data
  if offset > #d then d = d .. ("\0"):rep(offset - #d) end
  buf.data = d:sub(1, offset) .. data .. d:sub(offset + #data + 1)
  buf.dirty, buf.mtime = true, now()
  return #data
end

function fs.flush(path, fi) save(fi.fh.buf) end           -- close() reports a failed upload
function fs.fsync(path, datasync, fi) save(fi.fh.buf) end

function fs.release(path, fi)
  local h = fi.fh
  if not h.writer then return end
  h.buf.users = h.buf.users - 1
  if h.buf.users == 0 then
    if writing[h.buf.path] == h.buf then writing[h.buf.path] = nil end
    save(h.buf)
  end
end

function fs.truncate(path, size, fi)
  local buf = fi and fi.fh and fi.fh.buf or writing[path]
  local data = buf and buf.data or (size == 0 and "" or call("GET", path:sub(2)))
  data = size <= #data and data:sub(1, size) or data .. ("\0"):rep(size - #data)
  if buf then buf.data, buf.dirty, buf.mtime = data, true, now()
  else call("PUT", path:sub(2), data) changed() end
end

function fs.unlink(path) call("DELETE", path:sub(2)) changed() end

function fs.mkdir(path) call("PUT", path:sub(2) .. "/", "") changed() end

function fs.rmdir(path)
  local prefix = path:sub(2) .. "/"
  for key in pairs(objects()) do
    if key ~= prefix and key:sub(1, #prefix) == prefix then error(E.ENOTEMPTY) end
  end
  call("DELETE", prefix)
  changed()
end

function fs.rename(from, to)
  local o = lookup(from)
  if o == "dir" then error(E.EXDEV) end   -- mv then copies the directory and removes it
  if not o then error(E.ENOENT) end
  local buf = writing[from]
  call("PUT", to:sub(2), buf and buf.data or call("GET", from:sub(2)))
  call("DELETE", from:sub(2))
  if buf then writing[from], writing[to], buf.path = nil, buf, to end
  changed()
end

-- Objects have no owner, mode or settable times: accept and ignore (cp -p, touch work).
function fs.chmod() end
function fs.chown() end
function fs.utimens() end

return fs
