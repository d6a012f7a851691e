#!/usr/bin/env flufs
-- fusefs_hello.lua: Ruby FuseFS's hello world, with lua/fusefs.lua.
--
--   $ flufs lua/fusefs_hello.lua /mnt/hello
--   $ ls /mnt/hello                -> hello.txt
--   $ cat /mnt/hello/hello.txt     -> Hello, World!
--   $ fusermount3 -u /mnt/hello
--
-- One read-only file. The object has no size method, so `ls -l` shows 0 bytes, as in FuseFS;
-- reads still return the whole text because fusefs opens files with direct_io.

local fusefs = require "fusefs"

local HelloDir = {}

function HelloDir:contents(path)
	return { "hello.txt" }
end

function HelloDir:is_file(path)
	return path == "/hello.txt"
end

function HelloDir:read_file(path)
	return "Hello, World!\n"
end

fusefs.set_root(HelloDir)

-- Mount under the directory given on the command line (flufs's MOUNTPOINT).
fusefs.mount_under(arg[1])
fusefs.run()
