//! The POSIX suite (tests/posix/mod.rs) against lua/luafs.lua, mounted with
//! `-o allow_other,default_permissions` so the kernel checks permissions and a second user
//! (nobody, 65534) can reach the mount. Each case gets a fresh mount.
mod common;
mod posix;

use std::path::PathBuf;

use common::{Mount, shipped};

fn luafs() -> (Mount, PathBuf, posix::SuiteOpts) {
    let m = Mount::new(
        &shipped("luafs.lua"),
        &["-o", "allow_other,default_permissions"],
    );
    let root = m.mnt.clone();
    (m, root, posix::SuiteOpts::detect())
}

posix::posix_tests!(luafs);

/// `run_all` over one mount: all cases side by side in one file system.
#[test]
fn run_all_on_one_luafs_mount() {
    if !common::fuse_available() {
        return;
    }
    let (_m, root, opts) = luafs();
    posix::assert_all_pass(&root, &opts);
}

/// Without kernel attribute and entry caching every stat reaches luafs, so the kernel's own
/// bookkeeping cannot hide a wrong answer.
#[test]
fn run_all_without_kernel_cache() {
    if !common::fuse_available() {
        return;
    }
    let m = Mount::new(
        &shipped("luafs.lua"),
        &[
            "-o",
            "allow_other,default_permissions,attr_timeout=0,entry_timeout=0,negative_timeout=0",
        ],
    );
    posix::assert_all_pass(&m.mnt, &posix::SuiteOpts::detect());
}
