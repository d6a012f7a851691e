#!/usr/bin/env flufs
-- hellofs.lua: the FUSE "hello world" for flufs, written in Flu's style.
--
--   $ flufs lua/hellofs.lua /mnt/hello
--   $ ls /mnt/hello          -> hello
--   $ cat /mnt/hello/hello   -> Hello World!
--   $ fusermount3 -u /mnt/hello
--
-- The root directory holds a single read-only file, "hello".

local flu = require "flu"
local errno = flu.errno

local msg = "Hello World!\n"

-- Flu mode sets: the presets 'directory' and 'file' would give 0770 and 0660,
-- so spell the classic hello permissions (0755 and 0444) out as sets.
local function mkset(array)
	local set = {}
	for _, flag in ipairs(array) do
		set[flag] = true
	end
	return set
end

local dir_mode = mkset{ 'dir', 'rusr', 'wusr', 'xusr', 'rgrp', 'xgrp', 'roth', 'xoth' }
local file_mode = mkset{ 'reg', 'rusr', 'rgrp', 'roth' }

local hellofs = {}

function hellofs.getattr(path, st)
	if path == "/" then
		return {
			mode = dir_mode,
			nlink = 2,
		}
	elseif path == "/hello" then
		return {
			mode = file_mode,
			nlink = 1,
			size = #msg,
		}
	else
		error(errno.ENOENT)
	end
end

function hellofs.readdir(path, filler, fi)
	if path ~= "/" then
		error(errno.ENOENT)
	end
	filler(".")
	filler("..")
	filler("hello")
end

function hellofs.open(path, fi)
	if path ~= "/hello" then
		error(errno.ENOENT)
	end
	local flags = fi.flags
	if flags.wronly or flags.rdwr then
		error(errno.EACCES)
	end
end

function hellofs.read(path, size, offset, fi)
	if path ~= "/hello" then
		error(errno.ENOENT)
	end
	local len = #msg
	if offset >= len then
		return ""
	end
	if offset + size > len then
		size = len - offset
	end
	return msg:sub(offset + 1, offset + size)
end

return hellofs
