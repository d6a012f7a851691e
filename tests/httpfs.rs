//! Real mounts of lua/httpfs.lua (the http + json example) against the local object store
//! (tests/objectstore_server.py): listing (nested keys as directories), reading, copying in,
//! overwriting, appending, truncating, rm, mkdir/rmdir, renames, odd key names, changes made
//! by other clients, and errors (missing objects, refused uploads, a full store, time-outs, the
//! server gone).
//!
//! Every test starts its own server (killed on drop) and mount (unmounted on drop). Without
//! python3 or /dev/fuse the tests are skipped, except with CI=true.

mod common;
mod objectstore;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Mount, errno, fuse_available, sh};
use objectstore::Server;

/// Start a server (extra arguments) and mount httpfs on it with `refresh=0` (every listing
/// asks the server, so changes made behind the mount's back show at once) plus `args`.
fn setup(server_args: &[&str], args: &[&str]) -> Option<(Server, Mount)> {
    if !fuse_available() {
        return None;
    }
    let server = Server::start(server_args)?;
    let m = mount(&server, args);
    Some((server, m))
}

fn mount(server: &Server, args: &[&str]) -> Mount {
    let mut all = vec![server.url.as_str(), "refresh=0"];
    all.extend_from_slice(args);
    // Requests to the local server never go through a proxy.
    let envs = [
        ("NO_PROXY", "127.0.0.1,localhost"),
        ("no_proxy", "127.0.0.1,localhost"),
    ];
    Mount::with_env(&common::shipped("httpfs.lua"), &[], &all, &envs)
}

fn names(dir: &std::path::Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn listing_and_reading() {
    let Some((server, m)) = setup(&[], &[]) else {
        return;
    };
    server.put("hello.txt", b"Hello, objects!\n");
    server.put("docs/a.txt", b"a");
    server.put("docs/sub/b.txt", b"bb");
    server.put("empty/", b"");
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);

    assert_eq!(names(&m.mnt), set(&["hello.txt", "docs", "empty"]));
    assert_eq!(names(&m.path("docs")), set(&["a.txt", "sub"]));
    assert_eq!(names(&m.path("docs/sub")), set(&["b.txt"]));
    assert_eq!(names(&m.path("empty")), set(&[]));

    let md = fs::metadata(m.path("hello.txt")).expect("stat hello.txt");
    assert!(md.is_file());
    assert_eq!(md.len(), 16);
    assert_eq!(md.mode() & 0o7777, 0o644);
    assert!((md.mtime() - before).abs() <= 5, "mtime from the listing");
    assert!(fs::metadata(m.path("docs")).expect("stat docs").is_dir());
    assert!(fs::metadata(m.path("empty")).expect("stat empty").is_dir());

    assert_eq!(
        fs::read_to_string(m.path("hello.txt")).unwrap(),
        "Hello, objects!\n"
    );
    assert_eq!(fs::read_to_string(m.path("docs/sub/b.txt")).unwrap(), "bb");
    let (code, out, _) = sh(&format!("ls -l {}", m.mnt.display()));
    assert_eq!(code, 0);
    assert!(out.contains("hello.txt") && out.contains("docs"), "{out}");

    // Not there.
    let e = fs::metadata(m.path("nope")).expect_err("missing");
    assert_eq!(errno(&e), libc::ENOENT);
    let e = fs::read(m.path("docs/nope")).expect_err("missing");
    assert_eq!(errno(&e), libc::ENOENT);

    // Changes made by another client show (refresh=0).
    server.put("later.txt", b"new");
    assert!(names(&m.mnt).contains("later.txt"));
    assert_eq!(fs::read(m.path("later.txt")).unwrap(), b"new");
    server.call("DELETE", "/objects/later.txt", b"");
    assert!(!names(&m.mnt).contains("later.txt"));
}

#[test]
fn copy_in_overwrite_append_truncate_rm() {
    let Some((server, m)) = setup(&[], &[]) else {
        return;
    };
    // cp in: a new file, binary, a few MiB (several kernel writes).
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 123)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let src = common::TempDir::new("httpfs-src");
    let src_file = src.path.join("big.bin");
    fs::write(&src_file, &data).unwrap();
    let (code, _, err) = sh(&format!(
        "cp {} {}",
        src_file.display(),
        m.path("big.bin").display()
    ));
    assert_eq!(code, 0, "cp: {err}");
    assert!(
        server.object("big.bin").as_deref() == Some(&data[..]),
        "stored bytes"
    );
    assert_eq!(
        fs::metadata(m.path("big.bin")).unwrap().len(),
        data.len() as u64
    );
    assert!(fs::read(m.path("big.bin")).unwrap() == data, "read back");

    // Overwrite with shorter contents: the object is replaced, not patched.
    fs::write(m.path("big.bin"), b"short").unwrap();
    assert_eq!(server.object("big.bin").as_deref(), Some(&b"short"[..]));
    assert_eq!(fs::read(m.path("big.bin")).unwrap(), b"short");
    assert_eq!(fs::metadata(m.path("big.bin")).unwrap().len(), 5);

    // Append.
    let (code, _, err) = sh(&format!(
        "echo ' and more' >> {}",
        m.path("big.bin").display()
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        server.object("big.bin").as_deref(),
        Some(&b"short and more\n"[..])
    );

    // Writes at an offset inside an existing file (no O_TRUNC) keep the rest.
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(m.path("big.bin"))
            .unwrap();
        use std::io::{Seek, SeekFrom};
        f.seek(SeekFrom::Start(1)).unwrap();
        f.write_all(b"HO").unwrap();
        // Visible to readers and stat while still open.
        assert_eq!(fs::read(m.path("big.bin")).unwrap(), b"sHOrt and more\n");
        f.sync_all().unwrap();
        assert_eq!(
            server.object("big.bin").as_deref(),
            Some(&b"sHOrt and more\n"[..])
        );
    }

    // truncate by path (cut and extend).
    let (code, _, err) = sh(&format!("truncate -s 3 {}", m.path("big.bin").display()));
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.object("big.bin").as_deref(), Some(&b"sHO"[..]));
    let (code, _, err) = sh(&format!("truncate -s 5 {}", m.path("big.bin").display()));
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.object("big.bin").as_deref(), Some(&b"sHO\0\0"[..]));

    // touch: a new empty object; touch of an existing one changes nothing.
    let (code, _, err) = sh(&format!(
        "touch {} {}",
        m.path("empty.txt").display(),
        m.path("big.bin").display()
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(server.object("empty.txt").as_deref(), Some(&b""[..]));
    assert_eq!(server.object("big.bin").as_deref(), Some(&b"sHO\0\0"[..]));

    // cp -p (chmod, utimens accepted).
    let (code, _, err) = sh(&format!(
        "cp -p {} {}",
        src_file.display(),
        m.path("p.bin").display()
    ));
    assert_eq!(code, 0, "cp -p: {err}");

    // rm.
    fs::remove_file(m.path("big.bin")).unwrap();
    assert_eq!(server.object("big.bin"), None);
    let e = fs::remove_file(m.path("big.bin")).expect_err("rm twice");
    assert_eq!(errno(&e), libc::ENOENT);
    assert_eq!(server.keys(), vec!["empty.txt", "p.bin"]);
}

#[test]
fn directories_and_renames() {
    let Some((server, m)) = setup(&[], &[]) else {
        return;
    };
    fs::create_dir(m.path("d")).unwrap();
    assert_eq!(server.keys(), vec!["d/"]);
    assert!(fs::metadata(m.path("d")).unwrap().is_dir());
    let e = fs::create_dir(m.path("d")).expect_err("mkdir twice");
    assert_eq!(errno(&e), libc::EEXIST);
    fs::write(m.path("d/f.txt"), b"in d").unwrap();
    fs::create_dir(m.path("d/sub")).unwrap();
    assert_eq!(server.keys(), vec!["d/", "d/f.txt", "d/sub/"]);
    assert_eq!(names(&m.path("d")), set(&["f.txt", "sub"]));

    let e = fs::remove_dir(m.path("d")).expect_err("rmdir non-empty");
    assert_eq!(errno(&e), libc::ENOTEMPTY);

    // Rename a file (within and across directories).
    fs::rename(m.path("d/f.txt"), m.path("d/g.txt")).unwrap();
    assert_eq!(server.keys(), vec!["d/", "d/g.txt", "d/sub/"]);
    fs::rename(m.path("d/g.txt"), m.path("top.txt")).unwrap();
    assert_eq!(server.object("top.txt").as_deref(), Some(&b"in d"[..]));
    assert_eq!(fs::read(m.path("top.txt")).unwrap(), b"in d");
    // Over an existing file.
    fs::write(m.path("other.txt"), b"other").unwrap();
    fs::rename(m.path("other.txt"), m.path("top.txt")).unwrap();
    assert_eq!(server.object("top.txt").as_deref(), Some(&b"other"[..]));
    assert_eq!(server.object("other.txt"), None);

    // Renaming a directory: EXDEV, so mv copies it and removes the original.
    let e = fs::rename(m.path("d"), m.path("e")).expect_err("rename(2) of a directory");
    assert_eq!(errno(&e), libc::EXDEV);
    fs::write(m.path("d/sub/x"), b"x").unwrap();
    let (code, _, err) = sh(&format!(
        "mv {} {}",
        m.path("d").display(),
        m.path("e").display()
    ));
    assert_eq!(code, 0, "mv dir: {err}");
    assert_eq!(server.keys(), vec!["e/", "e/sub/", "e/sub/x", "top.txt"]);

    fs::remove_file(m.path("e/sub/x")).unwrap();
    fs::remove_dir(m.path("e/sub")).unwrap();
    fs::remove_dir(m.path("e")).unwrap();
    assert_eq!(server.keys(), vec!["top.txt"]);
    let e = fs::remove_dir(m.path("e")).expect_err("rmdir twice");
    assert_eq!(errno(&e), libc::ENOENT);
}

#[test]
fn odd_names_reach_the_store_intact() {
    let Some((server, m)) = setup(&[], &[]) else {
        return;
    };
    let odd = [
        "with space.txt",
        "ünïcödé ✓.txt",
        "percent%20sign",
        "q?x=1&y#frag",
        "plus+semi;colon:",
    ];
    for name in odd {
        fs::write(m.path(name), name.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let mut want: Vec<String> = odd.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(server.keys(), want);
    for name in odd {
        assert_eq!(
            server.object(name).as_deref(),
            Some(name.as_bytes()),
            "{name}"
        );
        assert_eq!(fs::read(m.path(name)).unwrap(), name.as_bytes(), "{name}");
    }
    assert_eq!(names(&m.mnt), odd.iter().map(|s| s.to_string()).collect());
    // A name that is not UTF-8 cannot be a key: the store refuses it (400 → EINVAL).
    use std::os::unix::ffi::OsStrExt;
    let bad = m.mnt.join(std::ffi::OsStr::from_bytes(b"bad\xff"));
    let e = fs::write(&bad, b"x").expect_err("non-UTF-8 name");
    assert_eq!(errno(&e), libc::EINVAL);
}

#[test]
fn errors_reach_the_caller() {
    let Some((server, m)) = setup(&["--quota", "1000"], &["timeout=1"]) else {
        return;
    };
    fs::write(m.path("a"), b"small").unwrap();

    // A full store: the upload at close fails, cp says so.
    let big = common::TempDir::new("httpfs-big");
    let big_file = big.path.join("big");
    fs::write(&big_file, vec![7u8; 5000]).unwrap();
    let (code, _, err) = sh(&format!(
        "cp {} {}",
        big_file.display(),
        m.path("big").display()
    ));
    assert_ne!(code, 0, "cp over quota must fail");
    assert!(err.contains("No space left on device"), "{err}");
    // fsync reports it too.
    {
        let mut f = fs::File::create(m.path("a")).unwrap();
        f.write_all(&[1u8; 2000]).unwrap();
        let e = f.sync_all().expect_err("fsync over quota");
        assert_eq!(errno(&e), libc::ENOSPC);
    }
    assert_eq!(server.object("a").as_deref(), Some(&b"small"[..]));

    // Server errors: EIO (from fsync, and from close: cp reports it).
    server.admin(
        "/_admin/fault",
        Some(r#"{"method": "PUT", "path": "/objects/a", "status": 500, "count": -1}"#),
    );
    {
        let mut f = fs::File::create(m.path("a")).unwrap();
        f.write_all(b"x").unwrap();
        let e = f.sync_all().expect_err("PUT answered 500");
        assert_eq!(errno(&e), libc::EIO);
    }
    let (code, _, err) = sh(&format!(
        "cp {} {}",
        big_file.display(),
        m.path("a").display()
    ));
    assert_ne!(code, 0, "cp with failing uploads must fail");
    assert!(err.contains("Input/output error"), "{err}");
    server.admin("/_admin/reset", Some("{}"));
    assert_eq!(server.object("a").as_deref(), Some(&b"small"[..]));

    // An object deleted behind the mount's back: ENOENT at open.
    server.admin(
        "/_admin/fault",
        Some(r#"{"method": "GET", "path": "/objects/a", "status": 404}"#),
    );
    let e = fs::read(m.path("a")).expect_err("GET answered 404");
    assert_eq!(errno(&e), libc::ENOENT);

    // A slow answer: ETIMEDOUT after timeout=1, not after the server's 5 s.
    server.admin(
        "/_admin/delay",
        Some(r#"{"method": "GET", "path": "/objects/a", "seconds": 5}"#),
    );
    let t0 = Instant::now();
    let e = fs::read(m.path("a")).expect_err("slow GET");
    assert_eq!(errno(&e), libc::ETIMEDOUT);
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    server.admin(
        "/_admin/delay",
        Some(r#"{"method": "GET", "path": "/objects/a", "seconds": 0}"#),
    );
    assert_eq!(fs::read(m.path("a")).unwrap(), b"small");

    // The server gone: ECONNREFUSED, and the mount keeps serving.
    drop(server);
    let e = fs::metadata(m.path("a")).expect_err("stat with the server gone");
    assert_eq!(errno(&e), libc::ECONNREFUSED);
    let e = fs::read_dir(&m.mnt)
        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
        .expect_err("ls with the server gone");
    assert_eq!(errno(&e), libc::ECONNREFUSED);
    assert!(
        fs::metadata(&m.mnt).unwrap().is_dir(),
        "the root still answers"
    );
}

#[test]
fn listings_are_cached_for_refresh_seconds() {
    if !fuse_available() {
        return;
    }
    let Some(server) = Server::start(&["--object", "a=1"]) else {
        return;
    };
    let m = mount(&server, &["refresh=30"]);
    assert_eq!(names(&m.mnt), set(&["a"]));
    let listings = |s: &Server| {
        s.admin("/_admin/log", None)
            .as_array()
            .expect("log")
            .iter()
            .filter(|r| r["method"] == "GET" && r["path"] == "/objects")
            .count()
    };
    let n = listings(&server);
    // Added behind the mount's back: not seen until the listing is fetched again...
    server.put("b", b"2");
    for _ in 0..5 {
        let _ = names(&m.mnt);
        let _ = fs::metadata(m.path("a"));
    }
    assert_eq!(listings(&server), n, "no new listing within refresh");
    assert!(!names(&m.mnt).contains("b"));
    // ...but a change through the mount fetches it again.
    fs::write(m.path("c"), b"3").unwrap();
    assert_eq!(names(&m.mnt), set(&["a", "b", "c"]));
}

#[test]
fn bad_arguments_fail_the_mount() {
    if !fuse_available() {
        return;
    }
    let r = Mount::try_with_env(&common::shipped("httpfs.lua"), &[], &[], &[]);
    let Err(msg) = r else {
        panic!("httpfs mounted without a URL")
    };
    assert!(msg.contains("usage: flufs httpfs.lua"), "{msg}");
    let r = Mount::try_with_env(
        &common::shipped("httpfs.lua"),
        &[],
        &["http://127.0.0.1:1", "bogus=1"],
        &[],
    );
    let Err(msg) = r else {
        panic!("httpfs mounted with a bad setting")
    };
    assert!(msg.contains("unknown setting bogus=1"), "{msg}");
}
