#!/usr/bin/env flufs
-- fusefs_metadir.lua: a writable in-memory tree (fusefs.MetaDir) with read-only directory
-- objects mounted in it, as in Ruby FuseFS's demo.rb.
--
--   $ flufs lua/fusefs_metadir.lua /mnt/meta
--   $ cat /mnt/meta/hello/world        -> Hello, World!
--   $ cat /mnt/meta/counter            -> 1, then 2, ... (computed on every open)
--   $ cat /mnt/meta/env/HOME           -> the daemon's $HOME (a view of its environment)
--   $ cat /mnt/meta/dict/fuse          -> a definition from a small dictionary
--   $ mkdir /mnt/meta/notes && echo hi > /mnt/meta/notes/todo      (MetaDir is writable
--   $ echo x > /mnt/meta/env/NEW       -> Permission denied         by the mounting user)
--
-- Everything written lives in memory until unmount.

local fusefs = require "fusefs"

-- EnvFS: the environment of this process, one read-only file per variable.
local EnvFS = fusefs.FuseDir:extend()

function EnvFS:initialize()
	self.vars = {}
	local f = io.open("/proc/self/environ", "rb")
	if f then
		local all = f:read("a")
		f:close()
		for entry in all:gmatch("([^%z]+)") do
			local name, value = entry:match("^([^=]+)=(.*)$")
			if name and not name:find("/", 1, true) then self.vars[name] = value end
		end
	end
end

function EnvFS:contents(path)
	local names = {}
	for name in pairs(self.vars) do names[#names + 1] = name end
	table.sort(names)
	return names
end

function EnvFS:is_file(path)
	local name, rest = self:split_path(path)
	return name ~= nil and rest == nil and self.vars[name] ~= nil
end

function EnvFS:size(path)
	local name = self:split_path(path)
	return #self.vars[name] + 1
end

function EnvFS:read_file(path)
	local name = self:split_path(path)
	return self.vars[name] .. "\n"
end

-- DictFS: a tiny dictionary; every word is a file holding its definition.
local DictFS = fusefs.FuseDir:extend()

function DictFS:initialize(words)
	self.words = words
end

function DictFS:contents(path)
	local names = { "README" }
	for word in pairs(self.words) do names[#names + 1] = word end
	table.sort(names)
	return names
end

function DictFS:is_file(path)
	local word, rest = self:split_path(path)
	return rest == nil and (word == "README" or self.words[word and word:lower()] ~= nil)
end

function DictFS:read_file(path)
	local word = self:split_path(path)
	if word == "README" then
		return "DictFS: cat any word listed here to read its definition.\n"
	end
	return ("%s: %s\n"):format(word:lower(), self.words[word:lower()])
end

function DictFS:size(path)
	return #self:read_file(path)
end

-- A file whose contents are computed on every read: MetaDir files may hold any value, read
-- with tostring (Ruby FuseFS's to_s).
local Counter = setmetatable({ n = 0 }, {
	__tostring = function(self)
		self.n = self.n + 1
		return self.n .. "\n"
	end,
})
function Counter:size() return #tostring(self.n + 1) + 1 end

local root = fusefs.MetaDir.new()
root:mkdir("/hello")
root:write_to("/hello/world", "Hello, World!\n")
root:write_to("/hello/everybody", "Hello, Everybody!\n")
root:write_to("/counter", Counter)
root:mkdir("/env", EnvFS.new())
root:mkdir("/dict", DictFS.new({
	fuse = "a filesystem in userspace; also, a device that breaks a circuit when overloaded",
	lua = "a small, fast scripting language (Portuguese for moon)",
	ruby = "a red gemstone; also the language Ruby FuseFS was written for",
	metadir = "a directory tree kept in memory that other directory objects can be mounted on",
}))

return fusefs.adapt(root)
