//! The POSIX suite (tests/posix/mod.rs) against a kernel tmpfs: checks the suite itself.
//! As root a private tmpfs is mounted on a temporary directory (and unmounted on drop);
//! otherwise a directory under /dev/shm is used and the second-user cases are skipped.
mod common;
mod posix;

use std::path::PathBuf;
use std::process::Command;

use common::{TempDir, is_mounted};

/// A tmpfs mounted on a temporary directory, or a plain directory on /dev/shm.
struct Target {
    mounted: bool,
    dir: TempDir,
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.mounted && is_mounted(&self.dir.path) {
            let ok = Command::new("umount")
                .arg(&self.dir.path)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&self.dir.path)
                    .status();
            }
        }
    }
}

fn tmpfs() -> (Target, PathBuf, posix::SuiteOpts) {
    let opts = posix::SuiteOpts::detect();
    if opts.root {
        let dir = TempDir::new("posix-tmpfs");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4g,mode=0755", "flufs-posix"])
            .arg(&dir.path)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok && is_mounted(&dir.path) {
            let root = dir.path.clone();
            return (Target { mounted: true, dir }, root, opts);
        }
        eprintln!("cannot mount a tmpfs: using a directory on /dev/shm");
    }
    let dir = shm_dir();
    let root = dir.path.clone();
    (
        Target {
            mounted: false,
            dir,
        },
        root,
        opts,
    )
}

fn shm_dir() -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let base = std::path::Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let path = base.join(
        format!(
            "flufs-posix-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )
        .replace(['(', ')'], ""),
    );
    std::fs::create_dir_all(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    TempDir { path }
}

posix::posix_tests!(tmpfs);

/// `run_all` over one directory, as a caller of the module would use it.
#[test]
fn run_all_on_one_tmpfs() {
    if !common::fuse_available() {
        return;
    }
    let (_guard, root, opts) = tmpfs();
    posix::assert_all_pass(&root, &opts);
}
