//! Mounted tests: the real binary, a real FUSE mount (root, /dev/fuse), a local-directory store.
//! Each test mounts its own vault; `serial` keeps them from competing for the machine's 2 cores.

mod common;
#[path = "mounted/ops.rs"]
mod ops;
#[path = "mounted/system.rs"]
mod system;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;
use serial_test::serial;

fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).expect("expected an OS error")
}

/// Random writes at any offset against an in-memory model, then every byte compared
/// live, after remount from an empty cache.
#[test]
#[serial]
fn random_writes_truncate_and_sparse_survive_remount() {
    let v = Vault::new();
    let mut model: Vec<u8> = Vec::new();
    {
        let _m = v.mount(&[]);
        let mut f = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(v.path("f")).unwrap();
        let ops: &[(u64, usize)] =
            &[(0, 100_000), (5, 3), (65_530, 20), (300_000, 70_000), (131_072, 65_536), (1_000_000, 1), (99_999, 2)];
        for (i, &(off, len)) in ops.iter().enumerate() {
            let data = pattern(i as u64, len);
            f.write_all_at(&data, off).unwrap();
            let end = off as usize + len;
            if model.len() < end {
                model.resize(end, 0);
            }
            model[off as usize..end].copy_from_slice(&data);
        }
        // Overwrite after seek, as pg_basebackup -X stream does with WAL segments.
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&vec![0u8; 200_000]).unwrap();
        model[..200_000].fill(0);
        f.seek(SeekFrom::Start(10)).unwrap();
        f.write_all(b"rewritten").unwrap();
        model[10..19].copy_from_slice(b"rewritten");
        // Truncate down into the middle of a chunk, then extend: the tail reads as zeros.
        f.set_len(150_007).unwrap();
        model.truncate(150_007);
        f.set_len(400_000).unwrap();
        model.resize(400_000, 0);
        f.sync_all().unwrap();
        let mut live = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut live).unwrap();
        assert!(live == model, "live read differs from the model");
        // Sparse: a file that is only a hole.
        let s = File::create(v.path("sparse")).unwrap();
        s.set_len(10 << 20).unwrap();
        drop(s);
        assert_eq!(fs::read(v.path("sparse")).unwrap(), vec![0u8; 10 << 20]);
    }
    // The Mounted guard unmounted with a drain; now the store alone.
    let _m = v.mount_from_store_only();
    assert!(fs::read(v.path("f")).unwrap() == model, "remounted content differs");
    assert_eq!(fs::metadata(v.path("sparse")).unwrap().len(), 10 << 20);
}

#[test]
#[serial]
fn namespace_operations() {
    let v = Vault::new();
    let before;
    {
        let m = v.mount(&[]);
        fs::create_dir_all(v.path("a/b/c")).unwrap();
        fs::write(v.path("a/b/c/file"), b"deep").unwrap();
        fs::write(v.path("x"), b"old x").unwrap();
        fs::write(v.path("y"), b"new y").unwrap();
        // rename over an existing file replaces it atomically
        fs::rename(v.path("y"), v.path("x")).unwrap();
        assert_eq!(fs::read(v.path("x")).unwrap(), b"new y");
        assert_eq!(errno_of(fs::metadata(v.path("y"))), libc::ENOENT);
        // directory rename, and into an empty directory
        fs::create_dir(v.path("empty")).unwrap();
        fs::rename(v.path("a/b"), v.path("empty")).unwrap();
        assert_eq!(fs::read(v.path("empty/c/file")).unwrap(), b"deep");
        // not into its own subtree; not over a non-empty directory
        assert_eq!(errno_of(fs::rename(v.path("empty"), v.path("empty/c/inside"))), libc::EINVAL);
        fs::create_dir(v.path("full")).unwrap();
        fs::write(v.path("full/f"), b"").unwrap();
        assert_eq!(errno_of(fs::rename(v.path("a"), v.path("full"))), libc::ENOTEMPTY);
        assert_eq!(errno_of(fs::remove_dir(v.path("full"))), libc::ENOTEMPTY);
        // symlinks and hard links
        std::os::unix::fs::symlink("empty/c/file", v.path("sym")).unwrap();
        assert_eq!(fs::read_link(v.path("sym")).unwrap(), Path::new("empty/c/file"));
        assert_eq!(fs::read(v.path("sym")).unwrap(), b"deep");
        fs::hard_link(v.path("x"), v.path("x2")).unwrap();
        assert_eq!(fs::metadata(v.path("x")).unwrap().nlink(), 2);
        assert_eq!(fs::metadata(v.path("x")).unwrap().ino(), fs::metadata(v.path("x2")).unwrap().ino());
        assert_eq!(errno_of(fs::hard_link(v.path("a"), v.path("dirlink"))), libc::EPERM);
        // modes, owners, times
        fs::set_permissions(v.path("x"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(v.path("x"), Some(26), Some(27)).unwrap();
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_789);
        File::options().write(true).open(v.path("x")).unwrap().set_modified(t).unwrap();
        // unlink of an open file: still readable through the descriptor
        fs::write(v.path("open"), b"still here").unwrap();
        let mut h = File::open(v.path("open")).unwrap();
        fs::remove_file(v.path("open")).unwrap();
        let mut s = String::new();
        h.read_to_string(&mut s).unwrap();
        assert_eq!(s, "still here");
        drop(h);
        // errors
        assert_eq!(errno_of(fs::create_dir(v.path("x"))), libc::EEXIST);
        assert_eq!(errno_of(fs::remove_dir(v.path("x"))), libc::ENOTDIR);
        assert_eq!(errno_of(fs::read(v.path("nope"))), libc::ENOENT);
        assert_eq!(errno_of(fs::write(v.path(&"n".repeat(256)), b"")), libc::ENAMETOOLONG);
        // xattrs are refused, never dropped silently
        let p = CString::new(v.path("x").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C strings and buffer.
        let rc = unsafe { libc::setxattr(p.as_ptr(), c"user.k".as_ptr(), b"v".as_ptr().cast(), 1, 0) };
        assert_eq!(rc, -1);
        assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EOPNOTSUPP));
        // device nodes are kept with their numbers (pjdfstest, tar, rsync -D) and never open a
        // device: the mount is nodev
        for (name, kind, major, minor) in [("null", libc::S_IFCHR, 1, 3), ("loop", libc::S_IFBLK, 7, 200), ("big", libc::S_IFCHR, 4095, 1 << 19)] {
            let c = CString::new(v.path(name).as_os_str().as_bytes()).unwrap();
            // SAFETY: valid C string.
            assert_eq!(unsafe { libc::mknod(c.as_ptr(), kind | 0o640, libc::makedev(major, minor)) }, 0, "{name}");
            let md = fs::symlink_metadata(v.path(name)).unwrap();
            assert_eq!((md.mode() & libc::S_IFMT, libc::major(md.rdev()), libc::minor(md.rdev())), (kind, major, minor), "{name}");
        }
        assert_eq!(errno_of(File::open(v.path("null"))), libc::EACCES);
        let fifo = CString::new(v.path("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        // many entries, readdir complete and stable
        fs::create_dir(v.path("many")).unwrap();
        for i in 0..1500 {
            fs::write(v.path(&format!("many/f{i:04}")), i.to_string()).unwrap();
        }
        assert_eq!(fs::read_dir(v.path("many")).unwrap().count(), 1500);
        // statfs
        // SAFETY: zeroed statvfs is a valid out-parameter.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let mp = CString::new(v.mnt.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::statvfs(mp.as_ptr(), &mut st) }, 0);
        assert!(st.f_bavail > 0 && st.f_namemax == 255);
        before = snapshot(&v.mnt);
        m.umount();
    }
    let _m = v.mount_from_store_only();
    assert_same_tree(&snapshot(&v.mnt), &before, "remount");
    let md = fs::metadata(v.path("x")).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o640, 26, 27));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_700_000_000, 123_456_789));
    assert_eq!(md.nlink(), 2);
    let dev = fs::symlink_metadata(v.path("big")).unwrap();
    assert!(dev.file_type().is_char_device());
    assert_eq!((libc::major(dev.rdev()), libc::minor(dev.rdev())), (4095, 1 << 19));
    assert!(fs::symlink_metadata(v.path("loop")).unwrap().file_type().is_block_device());
}

type Entry = (String, String, u32, u32, u32, u64, i64, u64);

/// (path, kind, mode, uid, gid, size, mtime, hash of content or link target) of a whole tree.
fn snapshot(root: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let (kind, body) = if md.is_dir() {
                stack.push(p.clone());
                ("dir", Vec::new())
            } else if md.file_type().is_symlink() {
                ("link", fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec())
            } else if !md.is_file() {
                // FIFOs, sockets, devices: never opened; their kind and number are the content.
                ("special", format!("{:o} {}", md.mode() & libc::S_IFMT, md.rdev()).into_bytes())
            } else {
                ("file", fs::read(&p).unwrap())
            };
            // Directory sizes and times are file-system specific; compare the rest.
            let (mtime, size) = if md.is_dir() { (0, 0) } else { (md.mtime(), md.len()) };
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hasher::write(&mut h, &body);
            out.push((rel, kind.into(), md.mode() & 0o7777, md.uid(), md.gid(), size, mtime, std::hash::Hasher::finish(&h)));
        }
    }
    out.sort();
    out
}

fn assert_same_tree(got: &[Entry], want: &[Entry], what: &str) {
    let diff: Vec<_> = got.iter().zip(want).filter(|(a, b)| a != b).take(5).collect();
    assert!(diff.is_empty() && got.len() == want.len(), "{what}: trees differ ({} vs {} entries): {diff:#?}", got.len(), want.len());
}

/// cp -a, tar -x, rsync -a and mv into the mount; trees compare equal after a remount.
#[test]
#[serial]
fn unmodified_tools_work() {
    let v = Vault::new();
    let src = v.dir.path().join("src");
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    for i in 0..40 {
        fs::write(src.join(format!("sub/f{i}")), pattern(i, (i as usize * 7919) % 300_000)).unwrap();
    }
    fs::write(src.join("sub/deeper/big"), pattern(99, 3 << 20)).unwrap();
    std::os::unix::fs::symlink("sub/f1", src.join("link")).unwrap();
    fs::set_permissions(src.join("sub/f2"), fs::Permissions::from_mode(0o600)).unwrap();
    let tarball = v.dir.path().join("t.tar");
    must(Command::new("tar").arg("-C").arg(&src).arg("-cf").arg(&tarball).arg("."));
    let expect = snapshot(&src);
    {
        let m = v.mount(&[]);
        must(Command::new("cp").arg("-a").arg(&src).arg(v.path("cp")));
        fs::create_dir(v.path("tar")).unwrap();
        must(Command::new("tar").arg("-C").arg(v.path("tar")).arg("-xpf").arg(&tarball));
        must(Command::new("rsync").arg("-a").arg(format!("{}/", src.display())).arg(v.path("rsync")));
        // rsync again over the same tree (its temp-file-and-rename update path)
        fs::write(src.join("sub/f3"), b"changed").unwrap();
        must(Command::new("rsync").arg("-a").arg(format!("{}/", src.display())).arg(v.path("rsync")));
        must(Command::new("mv").arg(v.path("cp")).arg(v.path("moved")));
        must(Command::new("sync").arg("-f").arg(v.path("moved")));
        m.umount();
    }
    let _m = v.mount_from_store_only();
    assert_same_tree(&snapshot(&v.path("moved")), &expect, "cp -a + mv");
    assert_same_tree(&snapshot(&v.path("tar")), &expect, "tar -x");
    assert_same_tree(&snapshot(&v.path("rsync")), &snapshot(&src), "rsync -a");
}

/// kill -9 right after fsync loses nothing; a second crash before fsync loses only that.
#[test]
#[serial]
fn kill9_after_fsync_loses_nothing() {
    kill9_roundtrip(&Vault::new());
}

/// The same against S3, with packs still uploading when the daemon dies: the next mount of
/// the same cache resumes the uploads.
#[test]
#[serial]
fn kill9_mid_backup_on_s3_resumes_uploads() {
    let s3 = common::s3::S3Server::start();
    kill9_roundtrip(&Vault::on_s3(&s3, "crash"));
}

fn kill9_roundtrip(v: &Vault) {
    let data = pattern(7, 5 << 20);
    {
        let m = v.mount(&["--pack-size", "1M"]);
        fs::create_dir(v.path("wal")).unwrap();
        let mut f = File::create(v.path("wal/000000010000000000000001")).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        File::open(v.path("wal")).unwrap().sync_all().unwrap();
        // More data in flight, never fsynced, when the daemon dies.
        fs::write(v.path("wal/000000010000000000000002"), pattern(8, 3 << 20)).unwrap();
        m.kill9();
    }
    {
        // Same cache: recovery replays the journal and stores the staged packs.
        let m = v.mount(&[]);
        assert!(fs::read(v.path("wal/000000010000000000000001")).unwrap() == data);
        assert!(v.log_text().contains("recovering the cache"), "{}", v.log_text());
        m.umount();
    }
    let _m = v.mount_from_store_only();
    assert!(fs::read(v.path("wal/000000010000000000000001")).unwrap() == data);
}

/// Flipped bits, swapped and replayed chunks and a deleted pack give EIO and a log line naming
/// the file; other files stay readable. Tampered metadata refuses the mount.
#[test]
#[serial]
fn tampering_gives_eio_or_refuses_mount() {
    // Sealed size of a full 64 KiB chunk of incompressible data (`pattern`): stored raw, its
    // body padded to Padmé(5 + 65536) = 67584 bytes (FORMAT.md §6), plus nonce and tag.
    const CS: usize = 67584 + 40;
    let v = Vault::new();
    let a1 = pattern(1, 4 * 65536);
    let a2 = pattern(2, 4 * 65536);
    let b = pattern(3, 4 * 65536);
    // Each sync closes the pack, so every version lands in a pack of its own.
    let packs_in_order = |v: &Vault| {
        let mut p: Vec<_> = fs::read_dir(v.store.join("packs")).unwrap().map(|e| e.unwrap()).collect();
        p.sort_by_key(|e| e.metadata().unwrap().modified().unwrap());
        p.into_iter().map(|e| e.path()).collect::<Vec<_>>()
    };
    {
        let m = v.mount(&[]);
        fs::write(v.path("a"), &a1).unwrap();
        must(Command::new(BIN).arg("sync").arg(&v.mnt));
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(v.path("a"), &a2).unwrap();
        must(Command::new(BIN).arg("sync").arg(&v.mnt));
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(v.path("b"), &b).unwrap();
        m.umount();
    }
    let packs = packs_in_order(&v);
    assert_eq!(packs.len(), 3, "{packs:?}");
    let (p_a1, p_a2, p_b) = (&packs[0], &packs[1], &packs[2]);
    let pristine = fs::read(p_a2).unwrap();
    let check = |what: &str, expect_log: &str| {
        let _ = fs::remove_file(&v.log);
        let m = v.mount_from_store_only();
        let e = fs::read(v.path("a"));
        assert_eq!(errno_of(e), libc::EIO, "{what}: reading a must fail with EIO");
        assert!(fs::read(v.path("b")).unwrap() == b, "{what}: b must stay readable");
        drop(m);
        let log = v.log_text();
        assert!(log.contains("/a (inode") && log.contains("chunk"), "{what}: log names file and chunk:\n{log}");
        assert!(log.contains(expect_log), "{what}: log says {expect_log:?}:\n{log}");
    };
    // 1. A flipped bit inside chunk 2's ciphertext.
    let mut t = pristine.clone();
    t[2 * CS + 1000] ^= 0x10;
    fs::write(p_a2, &t).unwrap();
    check("bit flip", "modified");
    // 2. Chunk 1 of a replaced by chunk 1 of b (another file).
    let bb = fs::read(p_b).unwrap();
    let mut t = pristine.clone();
    t[CS..2 * CS].copy_from_slice(&bb[CS..2 * CS]);
    fs::write(p_a2, &t).unwrap();
    check("swap between files", "replaced or replayed");
    // 3. Chunk 0 swapped with chunk 3 of the same file.
    let mut t = pristine.clone();
    t[..CS].copy_from_slice(&pristine[3 * CS..4 * CS]);
    fs::write(p_a2, &t).unwrap();
    check("swap within file", "replaced or replayed");
    // 4. The older version of chunk 0 put back.
    let old = fs::read(p_a1).unwrap();
    let mut t = pristine.clone();
    t[..CS].copy_from_slice(&old[..CS]);
    fs::write(p_a2, &t).unwrap();
    check("replayed old version", "replaced or replayed");
    // 5. The pack deleted.
    fs::remove_file(p_a2).unwrap();
    check("deleted pack", "does not exist");
    fs::write(p_a2, &pristine).unwrap();
    {
        let _m = v.mount_from_store_only();
        assert!(fs::read(v.path("a")).unwrap() == a2);
    }
    // 6. Metadata: a flipped bit in the newest segment refuses the mount, clearly.
    let mut segs: Vec<_> = fs::read_dir(v.store.join("meta")).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    let last = segs.last().unwrap();
    let orig = fs::read(last).unwrap();
    let mut t = orig.clone();
    let n = t.len();
    t[n - 30] ^= 1;
    fs::write(last, &t).unwrap();
    let o = run(&mut v.mount_cmd(&["--read-only"]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("tampered") && stderr(&o).contains("failed authentication"), "{}", stderr(&o));
    assert!(!is_mounted(&v.mnt));
    fs::write(last, &orig).unwrap();
    let _m = v.mount_from_store_only();
}

/// No plaintext content or name in the store or the cache, during the mount and after.
#[test]
#[serial]
fn store_and_cache_hold_no_plaintext() {
    let v = Vault::new();
    let marker = b"PLAINTEXT-MARKER-7f3a";
    let name_marker = "secret-table-name-91c2";
    {
        let m = v.mount(&[]);
        let mut body = Vec::new();
        for _ in 0..20_000 {
            body.extend_from_slice(marker);
        }
        fs::create_dir(v.path(name_marker)).unwrap();
        let mut f = File::create(v.path(&format!("{name_marker}/{name_marker}.dat"))).unwrap();
        f.write_all(&body).unwrap();
        f.sync_all().unwrap();
        std::os::unix::fs::symlink(name_marker, v.path("link")).unwrap();
        File::open(&v.mnt).unwrap().sync_all().unwrap();
        // While mounted, after fsync: the cache holds the data, sealed.
        assert_absent(&v.cache, marker);
        assert_absent(&v.cache, name_marker.as_bytes());
        drop(f);
        m.umount();
    }
    for needle in [&marker[..], name_marker.as_bytes()] {
        assert_absent(&v.store, needle);
        assert_absent(&v.cache, needle);
    }
}

/// Clear errors: wrong key, not a vault, non-empty init target, busy mountpoint, busy umount.
#[test]
#[serial]
fn clear_errors() {
    let v = Vault::new();
    let wrong = v.dir.path().join("wrong");
    fs::write(&wrong, "ab".repeat(32)).unwrap();
    let o = run(Command::new(BIN).arg("mount").arg(&v.store).arg(&v.mnt).arg("--key-file").arg(&wrong).args([
        "--key-transform",
        "hex",
        "--read-only",
    ]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("does not open any of the vault's 1 sodium slot (check the key and --key-transform)"), "{}", stderr(&o));
    assert!(!is_mounted(&v.mnt));
    let o = run(Command::new(BIN).arg("mount").arg(&v.store).arg(&v.mnt).args(v.key_args()).args(["--key-transform", "base64"]));
    assert!(!o.status.success());
    let not_vault = v.dir.path().join("notvault");
    fs::create_dir(&not_vault).unwrap();
    fs::write(not_vault.join("something"), b"x").unwrap();
    let o = run(Command::new(BIN).arg("mount").arg(&not_vault).arg(&v.mnt).args(v.key_args()).arg("--read-only"));
    assert!(stderr(&o).contains("is not a pgcryptfs vault"), "{}", stderr(&o));
    let o = run(Command::new(BIN).arg("init").arg(&not_vault).args(v.key_args()));
    assert!(!o.status.success() && stderr(&o).contains("not empty"), "{}", stderr(&o));
    let o = run(Command::new(BIN).arg("init").arg(&v.store).args(v.key_args()));
    assert!(!o.status.success() && stderr(&o).contains("already a pgcryptfs vault"), "{}", stderr(&o));
    let short = v.dir.path().join("short");
    fs::write(&short, "abc").unwrap();
    let o = run(Command::new(BIN).arg("init").arg(v.dir.path().join("v2")).arg("--key-file").arg(&short));
    assert!(stderr(&o).contains("at least 25 bytes"), "{}", stderr(&o));

    let m = v.mount(&[]);
    let o = run(&mut v.mount_cmd(&[]));
    assert!(!o.status.success() && stderr(&o).contains("already a mount point"), "{}", stderr(&o));
    // umount refuses while a file is open there, and the mount keeps serving.
    let f = File::create(v.path("held")).unwrap();
    let o = run(Command::new(BIN).arg("umount").arg(&v.mnt));
    assert!(!o.status.success() && stderr(&o).contains("busy"), "{}", stderr(&o));
    drop(f);
    assert!(is_mounted(&v.mnt));
    let status = must(Command::new(BIN).arg("status").arg(&v.mnt));
    assert!(String::from_utf8_lossy(&status.stdout).contains("staged_bytes="));
    m.umount();
    let o = run(Command::new(BIN).arg("umount").arg(&v.mnt));
    assert!(!o.status.success() && stderr(&o).contains("no pgcryptfs daemon"), "{}", stderr(&o));
}

/// Several writers at once on the multithreaded daemon, then a plain `umount` (the kernel
/// detaches at once; the daemon still drains everything).
#[test]
#[serial]
fn concurrent_writers_then_plain_umount_drains() {
    let v = Vault::new();
    let m = v.mount(&[]);
    let pid = m.pid();
    std::thread::scope(|s| {
        for t in 0..6u64 {
            let v = &v;
            s.spawn(move || {
                for i in 0..20u64 {
                    let data = pattern(t * 100 + i, ((t * 31 + i * 977) % 400_000) as usize + 1);
                    fs::write(v.path(&format!("t{t}-{i}")), &data).unwrap();
                }
            });
        }
    });
    std::mem::forget(m); // the plain umount below replaces the guard
    must(Command::new("umount").arg(&v.mnt));
    wait_gone(pid);
    assert!(v.log_text().contains("everything is in the store"), "{}", v.log_text());
    let _m = v.mount_from_store_only();
    for t in 0..6u64 {
        for i in 0..20u64 {
            let data = pattern(t * 100 + i, ((t * 31 + i * 977) % 400_000) as usize + 1);
            assert!(fs::read(v.path(&format!("t{t}-{i}"))).unwrap() == data, "t{t}-{i}");
        }
    }
}

/// A store that refuses writes at unmount: `pgcryptfs umount` exits non-zero and says so, the
/// data stays in the cache, and the next mount of that cache stores it.
#[test]
#[serial]
fn failed_drain_exits_nonzero_and_loses_nothing() {
    let v = Vault::new();
    let data = pattern(11, 3 << 20);
    let meta = v.store.join("meta");
    let m = v.mount(&[]);
    fs::write(v.path("precious"), &data).unwrap();
    // Root ignores modes; an immutable directory refuses new segments even to root.
    must(Command::new("chattr").arg("+i").arg(&meta));
    struct Unfreeze<'a>(&'a Path);
    impl Drop for Unfreeze<'_> {
        fn drop(&mut self) {
            let _ = Command::new("chattr").arg("-i").arg(self.0).output();
        }
    }
    let unfreeze = Unfreeze(&meta);
    std::mem::forget(m);
    let o = run(Command::new(BIN).arg("umount").arg(&v.mnt));
    assert!(!o.status.success(), "umount must fail when the store refuses the data");
    assert!(stderr(&o).contains("stays in the cache"), "{}", stderr(&o));
    assert!(!is_mounted(&v.mnt));
    drop(unfreeze);
    {
        let m = v.mount(&[]);
        assert!(fs::read(v.path("precious")).unwrap() == data);
        m.umount();
    }
    let _m = v.mount_from_store_only();
    assert!(fs::read(v.path("precious")).unwrap() == data);
}

/// The store contract, on a real S3 endpoint (s3s-fs on 127.0.0.1), and on a real cloud bucket
/// when PGCRYPTFS_TEST_STORE_URL (e.g. s3://bucket/prefix, gs://..., az://...) and that cloud's
/// credential variables are set.
#[test]
#[serial]
fn store_conformance_on_s3_and_clouds() {
    let s3 = common::s3::S3Server::start();
    for (k, v) in common::s3::S3Server::env() {
        // SAFETY: serial test; no other thread reads the environment while this runs.
        unsafe { std::env::set_var(k, v) };
    }
    let opts: Vec<(String, String)> = s3
        .store_args("conformance")
        .1
        .chunks(2)
        .map(|kv| pgcryptfs::store::parse_option(&kv[1]).unwrap())
        .collect();
    let store = pgcryptfs::store::open_store("s3://backups/conformance", &opts).unwrap();
    pgcryptfs::store::conformance::run(store.as_ref()).unwrap();
    if let Ok(url) = std::env::var("PGCRYPTFS_TEST_STORE_URL") {
        let url = format!("{}/conformance-{}", url.trim_end_matches('/'), std::process::id());
        let cloud = pgcryptfs::store::open_store(&url, &[]).unwrap();
        pgcryptfs::store::conformance::run(cloud.as_ref()).unwrap();
    } else {
        eprintln!("PGCRYPTFS_TEST_STORE_URL is not set: conformance ran on the local S3 endpoint only");
    }
}

/// One writer per vault: a second writable mount (other cache, other mount point) is refused
/// with a message naming the holder; read-only mounts may join; after a crash only the same
/// cache resumes the still-valid lease (`--break-lease` waits for expiry, tested in `lease`).
#[test]
#[serial]
fn second_writer_is_refused_and_the_same_cache_resumes() {
    let v = Vault::new();
    let mnt2 = v.dir.path().join("mnt2");
    let mnt3 = v.dir.path().join("mnt3");
    fs::create_dir(&mnt2).unwrap();
    fs::create_dir(&mnt3).unwrap();
    let other = |mnt: &Path, extra: &[&str]| run(&mut v.mount_cmd_at(mnt, &v.dir.path().join("cache2"), &v.dir.path().join("log2"), extra));
    let m = v.mount(&[]);
    let mut f = File::create(v.path("f")).unwrap();
    f.write_all(b"written by the first writer").unwrap();
    f.sync_all().unwrap();
    drop(f);
    let o = other(&mnt2, &[]);
    assert!(!o.status.success());
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        stderr(&o).contains("in use by a writable mount on") && stderr(&o).contains(host.trim()),
        "{}",
        stderr(&o)
    );
    assert!(!is_mounted(&mnt2));
    // A reader alongside the writer.
    let o = other(&mnt3, &["--read-only"]);
    assert!(o.status.success(), "read-only mount alongside a writer: {}", stderr(&o));
    must(Command::new(BIN).arg("umount").arg(&mnt3));
    // Crash: the lease stays valid, so another cache may not take it, even with --break-lease.
    m.kill9();
    let o = other(&mnt2, &["--break-lease"]);
    assert!(!o.status.success() && stderr(&o).contains("in use"), "{}", stderr(&o));
    // The crashed writer's own cache resumes at once and recovers.
    let m = v.mount(&[]);
    assert!(v.log_text().contains("resuming this cache's writer lease"), "{}", v.log_text());
    assert_eq!(fs::read(v.path("f")).unwrap(), b"written by the first writer");
    m.umount();
    // Released on a clean unmount: now the other cache may write.
    let o = other(&mnt2, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    must(Command::new(BIN).arg("umount").arg(&mnt2));
}

/// A store that refuses (403 on every PUT: revoked credentials) is a permanent error: `sync`
/// and `umount` fail within seconds naming the store's reason, `status` says so, nothing is
/// retried in a loop, and the data stays in the cache for the next mount of it, which uploads
/// it once the store accepts again.
#[test]
#[serial]
fn a_refusing_store_fails_sync_and_umount_promptly_and_loses_nothing() {
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::{Duration, Instant};
    let s3 = common::s3::S3Server::start();
    let v = Vault::on_s3(&s3, "refused");
    let m = v.mount(&["--pack-size", "1M", "--store-timeout", "120"]);
    s3.refuse_puts.store(true, SeqCst);
    let data = pattern(5, 3 << 20);
    fs::write(v.path("wal"), &data).unwrap();
    File::open(v.path("wal")).unwrap().sync_all().unwrap(); // durable in the cache: that is enough
    let t = Instant::now();
    let o = run(Command::new(BIN).arg("sync").arg(&v.mnt));
    assert!(!o.status.success(), "sync must fail while the store refuses");
    assert!(stderr(&o).contains("refuses") && stderr(&o).contains("AccessDenied"), "{}", stderr(&o));
    assert!(t.elapsed() < Duration::from_secs(60), "sync took {:?} (store timeout 120 s)", t.elapsed());
    let st = status(&v);
    assert!(st.contains("store_refuses=") && !st.contains("store_refuses=no"), "{st}");
    let retries = field(&st, "retries");
    std::thread::sleep(Duration::from_secs(3));
    assert!(field(&status(&v), "retries") <= retries + 2, "a refused upload is not retried in a loop");
    let t = Instant::now();
    let o = run(Command::new("timeout").arg("100").arg(BIN).arg("umount").arg(&v.mnt));
    assert!(!o.status.success(), "umount must report that the drain failed");
    assert!(stderr(&o).contains("refuses"), "{}", stderr(&o));
    assert!(t.elapsed() < Duration::from_secs(60), "umount took {:?}", t.elapsed());
    assert!(!is_mounted(&v.mnt));
    drop(m);
    // The same cache, the store accepting again: everything goes up, and reads back from the store.
    s3.refuse_puts.store(false, SeqCst);
    let m = v.mount(&[]);
    m.umount();
    let _m = v.mount_from_store_only();
    assert_eq!(fs::read(v.path("wal")).unwrap(), data);
}

/// A store outage in the middle of a backup: writes land in the cache up to the dirty bound,
/// then wait (no error, nothing dropped); uploads retry; when the store returns, everything
/// drains and reads back from an empty cache. The writer is a child process (`dd`), so no test
/// thread ever sits in a system call on the waiting mount.
#[test]
#[serial]
fn store_outage_blocks_at_the_dirty_bound_and_drains_after() {
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::{Duration, Instant};
    let s3 = common::s3::S3Server::start();
    let v = Vault::on_s3(&s3, "outage");
    let src = v.dir.path().join("source");
    fs::write(&src, pattern(2, 24 << 20)).unwrap();
    let m = v.mount(&["--pack-size", "1M", "--cache-dirty-max", "6M", "--upload-parallelism", "2"]);
    s3.outage.store(true, SeqCst);
    let mut dd = Command::new("dd")
        .arg(format!("if={}", src.display()))
        .arg(format!("of={}", v.path("during").display()))
        .args(["bs=1M", "conv=fsync", "status=none"])
        .spawn()
        .unwrap();
    // Wait for the cache to fill up to the bound; the writer must still be waiting then.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut st = status(&v);
    while field(&st, "staged_bytes") < 6 << 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        st = status(&v);
    }
    std::thread::sleep(Duration::from_secs(1));
    let waiting = dd.try_wait().unwrap().is_none();
    st = status(&v);
    s3.outage.store(false, SeqCst);
    assert!(waiting, "the writer must wait while the cache is at its bound: {st}");
    assert!(field(&st, "staged_bytes") >= 6 << 20 && field(&st, "staged_bytes") < 8 << 20, "bound holds: {st}");
    // object_store retries inside each PUT first, so `retries` may still be 0 here.
    assert!(field(&st, "uploads_in_flight") > 0 && field(&st, "puts") == 0, "nothing reached the store: {st}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        if let Some(s) = dd.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the writer did not finish after the store came back");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(done.success(), "dd (with fsync) succeeds once the store is back");
    m.umount();
    let _m = v.mount_from_store_only();
    assert!(fs::read(v.path("during")).unwrap() == fs::read(&src).unwrap());
}

/// A restore from S3 streams through the clean cache: readahead fetches whole blocks ahead of
/// the reader, the cache stays within --cache-size, a second read after the kernel dropped its
/// pages costs no GET, and a read-only mount's clean directory goes with it.
#[test]
#[serial]
fn restore_from_s3_reads_ahead_within_a_bounded_clean_cache() {
    use std::sync::atomic::Ordering::SeqCst;
    let s3 = common::s3::S3Server::start();
    let v = Vault::on_s3(&s3, "restore");
    let src = v.dir.path().join("source");
    fs::write(&src, pattern(7, 20 << 20)).unwrap();
    let m = v.mount(&["--pack-size", "4M"]);
    must(Command::new("cp").arg(&src).arg(v.path("base.tar")));
    m.umount();
    let cmp = |v: &Vault| must(Command::new("timeout").arg("60").arg("cmp").arg(&src).arg(v.path("base.tar")));

    fs::remove_dir_all(&v.cache).unwrap();
    let m = v.mount(&["--read-only", "--cache-size", "12M", "--readahead", "4M"]);
    let before = s3.gets.load(SeqCst);
    cmp(&v);
    let st = status(&v);
    let gets = s3.gets.load(SeqCst) - before;
    assert!(field(&st, "clean_bytes") <= 12 << 20, "the clean cache stays within --cache-size: {st}");
    assert!(field(&st, "evicted_blocks") > 0 && field(&st, "prefetched_blocks") >= 10, "{st}");
    // About every byte once: a prefetched block may be evicted before its reader comes (the
    // cache holds 12 of the 21 blocks, and the kernel reads ahead on several threads), so allow
    // two readahead windows of refetching.
    let sealed = fs::metadata(&src).unwrap().len() * 65552 / 65536;
    assert!(field(&st, "fetched_bytes") <= sealed + (8 << 20), "fetched too much: {st}");
    assert!(gets <= 20 + 8, "{gets} GETs for 20 MiB in 1 MiB blocks: {st}");
    let private: Vec<_> = walk(&v.cache).into_iter().filter(|p| p.to_string_lossy().contains("/ro-")).collect();
    assert!(!private.is_empty(), "the read-only mount keeps its clean blocks under the cache dir");
    m.umount();
    assert!(walk(&v.cache).iter().all(|p| !p.to_string_lossy().contains("/ro-")), "and removes them at unmount");

    let _m = v.mount(&["--read-only"]);
    cmp(&v);
    let after_first = s3.gets.load(SeqCst);
    fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    cmp(&v);
    let st = status(&v);
    assert_eq!(s3.gets.load(SeqCst), after_first, "a second read is served by the clean cache: {st}");
    assert!(field(&st, "clean_hits") >= 20, "{st}");
}

/// S3 credentials, region and endpoint from an AWS profile (`~/.aws/credentials` and
/// `~/.aws/config`, chosen by AWS_PROFILE) when the environment has none.
#[test]
#[serial]
fn s3_settings_from_an_aws_profile() {
    let s3 = common::s3::S3Server::start();
    let home = tempfile::tempdir().unwrap();
    fs::create_dir(home.path().join(".aws")).unwrap();
    fs::write(
        home.path().join(".aws/credentials"),
        format!("[backup]\naws_access_key_id = {}\naws_secret_access_key = {}\n", common::s3::ACCESS_KEY, common::s3::SECRET_KEY),
    )
    .unwrap();
    fs::write(
        home.path().join(".aws/config"),
        format!("[profile backup]\nregion = us-east-1\nendpoint_url = http://127.0.0.1:{}\n", s3.port),
    )
    .unwrap();
    let key = home.path().join("key");
    fs::write(&key, "ab".repeat(32)).unwrap();
    let init = |profile: &str| {
        let mut c = Command::new(BIN);
        c.args(["init", "s3://backups/profiled", "--store-opt", "allow_http=true", "--store-opt", "path_style=true"]);
        c.arg("--key-file").arg(&key).args(["--key-transform", "hex"]);
        for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"] {
            c.env_remove(var);
        }
        c.env("HOME", home.path()).env("AWS_PROFILE", profile);
        run(&mut c)
    };
    let o = init("nope");
    assert!(!o.status.success() && stderr(&o).contains("AWS_PROFILE=nope"), "{}", stderr(&o));
    let o = init("backup");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(s3.objects("profiled").join("pgcryptfs.vault").exists());
}

/// A slow store (every request held for seconds) does not slow fsync below the dirty bound:
/// `dd conv=fsync` returns while nothing is stored yet, `sync` then waits for the store, and
/// every byte reads back from the store alone. With `--sync-store`, fsync waits for the store.
#[test]
#[serial]
fn a_slow_store_delays_only_what_waits_for_it() {
    use std::sync::atomic::Ordering::SeqCst;
    let s3 = common::s3::S3Server::start();
    let v = Vault::on_s3(&s3, "slow");
    let src = v.dir.path().join("source");
    fs::write(&src, pattern(5, 6 << 20)).unwrap();
    let dd = |to: &str| {
        must(Command::new("timeout").arg("120").arg("dd").arg(format!("if={}", src.display())).arg(format!("of={}", v.path(to).display())).args([
            "bs=1M",
            "conv=fsync",
            "status=none",
        ]))
    };
    let m = v.mount(&["--pack-size", "1M"]);
    s3.delay_ms.store(2500, SeqCst);
    dd("fast-fsync");
    let st = status(&v);
    assert_eq!(field(&st, "puts"), 0, "fsync returned before the store had anything: {st}");
    assert!(field(&st, "staged_bytes") >= 6 << 20, "{st}");
    must(Command::new("timeout").arg("120").arg(BIN).arg("sync").arg(&v.mnt));
    let st = status(&v);
    assert!(field(&st, "staged_bytes") == 0 && field(&st, "puts") >= 6, "sync waited for the store: {st}");
    s3.delay_ms.store(0, SeqCst);
    m.umount();
    let m = v.mount(&["--pack-size", "1M", "--sync-store"]);
    s3.delay_ms.store(1000, SeqCst);
    dd("store-fsync");
    let st = status(&v);
    assert!(field(&st, "puts") >= 6 && field(&st, "staged_bytes") == 0, "--sync-store: fsync waited for the store: {st}");
    s3.delay_ms.store(0, SeqCst);
    m.umount();
    let _m = v.mount_from_store_only();
    let want = fs::read(&src).unwrap();
    assert!(fs::read(v.path("fast-fsync")).unwrap() == want && fs::read(v.path("store-fsync")).unwrap() == want);
}

fn receipt_of(out: &str) -> String {
    out.lines().find_map(|l| l.strip_prefix("receipt: ")).unwrap_or_else(|| panic!("no receipt in {out:?}")).to_string()
}

/// The host's pins and a restore's demands: `umount` prints a receipt; a store rolled back to
/// an older state is refused by the host that saw the newer one (writable and read-only) and by
/// any host given the newer receipt; another vault put at the same location is refused by the
/// pin and by `--expect-fingerprint`, which `key list` prints when given the key.
#[test]
#[serial]
fn receipts_and_pins_refuse_rollback_and_replaced_vaults() {
    let v = Vault::new();
    let host = v.dir.path().join("host-cache"); // pins of the operator commands
    // `ls` as seen from a host whose operator pins live in `pins`.
    let ls_on = |pins: &Path, extra: &[&str]| {
        run(v.cmd("ls").env("PGCRYPTFS_CACHE_DIR", pins).arg(&v.url).args(v.key_args()).args(extra))
    };
    let ls = |extra: &[&str]| ls_on(&host, extra);
    let listed = must(v.cmd("key").arg("list").arg(&v.url).args(v.key_args()));
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let fp = listed.lines().find_map(|l| l.strip_prefix("fingerprint: ")).expect("key list prints the fingerprint").to_string();
    let m = v.mount(&[]);
    fs::write(v.path("first"), b"1").unwrap();
    let r1 = receipt_of(&m.umount());
    let old = v.dir.path().join("store-at-r1");
    must(Command::new("cp").arg("-a").arg(&v.store).arg(&old));
    let m = v.mount(&[]);
    fs::write(v.path("second"), b"2").unwrap();
    let r2 = receipt_of(&m.umount());
    assert_ne!(r1, r2);
    assert!(r1.contains(&fp.replace('-', "")) && r2.contains(&fp.replace('-', "")), "{fp} {r1} {r2}");
    let o = ls(&["--expect-receipt", &r2, "--expect-fingerprint", &fp]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Roll the store back to r1.
    fs::remove_dir_all(&v.store).unwrap();
    must(Command::new("cp").arg("-a").arg(&old).arg(&v.store));
    for extra in [&[][..], &["--read-only"][..]] {
        let o = run(&mut v.mount_cmd(extra));
        assert!(!o.status.success() && stderr(&o).contains("rolled back"), "{extra:?}: {}", stderr(&o));
        assert!(!is_mounted(&v.mnt));
    }
    let o = ls(&["--expect-receipt", &r2]); // this host's operator pins saw r2 too
    assert!(!o.status.success() && stderr(&o).contains("rolled back"), "{}", stderr(&o));
    let fresh = v.dir.path().join("fresh-host");
    let o = ls_on(&fresh, &["--expect-receipt", &r2]);
    assert!(!o.status.success() && stderr(&o).contains("rolled back"), "a restore host given r2: {}", stderr(&o));
    let o = ls_on(&fresh, &["--expect-receipt", &r1]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("first"), "{}", stderr(&o));
    // Another vault (same key even) put at the same location by someone else (made on
    // another host: this host's pins never saw it made).
    fs::remove_dir_all(&v.store).unwrap();
    must(v.cmd("init").arg(&v.url).args(v.key_args()).env("PGCRYPTFS_CACHE_DIR", v.dir.path().join("other-host")));
    let o = run(&mut v.mount_cmd(&[]));
    assert!(!o.status.success() && stderr(&o).contains("not the vault"), "{}", stderr(&o));
    // This host's own `init` of a new vault there is what its operator commands pin from
    // then on, and the vault pinned before it, put back, is refused for good.
    fs::remove_dir_all(&v.store).unwrap();
    must(v.cmd("init").arg(&v.url).args(v.key_args()));
    let o = ls(&[]);
    assert!(o.status.success(), "a vault this host made at the location: {}", stderr(&o));
    let made_here = v.dir.path().join("made-here");
    fs::rename(&v.store, &made_here).unwrap();
    must(v.cmd("init").arg(&v.url).args(v.key_args()));
    assert!(ls(&[]).status.success());
    fs::remove_dir_all(&v.store).unwrap();
    fs::rename(&made_here, &v.store).unwrap();
    let o = ls(&[]);
    assert!(!o.status.success() && stderr(&o).contains("retired"), "{}", stderr(&o));
    let o = ls_on(&v.dir.path().join("third-host"), &["--expect-fingerprint", &fp]);
    assert!(!o.status.success() && stderr(&o).contains("fingerprint"), "{}", stderr(&o));
    let o = ls(&["--expect-fingerprint", "0000"]);
    assert!(!o.status.success() && stderr(&o).contains("not a vault fingerprint"), "{}", stderr(&o));
}

/// A writer whose lease another host broke never loses what it acknowledged: the other host
/// commits on, the returning cache is refused with the names of what it holds (nothing is
/// deleted), `pgcryptfs salvage` writes those files out, and with the cache moved aside the
/// vault mounts with the other host's data.
#[test]
#[serial]
fn a_broken_lease_never_discards_acknowledged_writes() {
    let v = Vault::new();
    let m = v.mount(&[]);
    fs::create_dir(v.path("wal")).unwrap();
    let seg = pattern(9, 300_000);
    {
        let mut f = File::create(v.path("wal/000000010000000000000001")).unwrap();
        f.write_all(&seg).unwrap();
        f.sync_all().unwrap(); // acknowledged: durable in this host's cache
    }
    m.kill9();
    // Another host takes the vault (the lease expired and was broken) and commits.
    fs::remove_file(v.store.join("lock")).unwrap();
    let other = v.dir.path().join("other-cache");
    must(&mut v.mount_cmd_at(&v.mnt, &other, &v.log, &[]));
    fs::write(v.path("from-the-other-host"), b"other").unwrap();
    must(Command::new(BIN).arg("umount").arg(&v.mnt));
    // The returning cache: refused, naming the file, deleting nothing.
    let o = run(&mut v.mount_cmd(&[]));
    assert!(!o.status.success(), "the returning cache must be refused");
    let e = stderr(&o);
    assert!(e.contains("never reached the store") && e.contains("/wal/000000010000000000000001") && e.contains("salvage"), "{e}");
    assert!(!is_mounted(&v.mnt));
    let journals = walk(&v.cache).into_iter().filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("journal-")).count();
    assert!(journals > 0, "the journal is kept");
    let dest = v.dir.path().join("salvaged");
    let o = must(v.cmd("salvage").arg(&v.url).arg(&dest).arg("--cache-dir").arg(&v.cache).args(v.key_args()));
    assert!(String::from_utf8_lossy(&o.stdout).contains("salvaged 1 files"), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(fs::read(dest.join("wal/000000010000000000000001")).unwrap(), seg);
    // Moved aside, the cache no longer stands in the way.
    fs::rename(&v.cache, v.dir.path().join("cache-aside")).unwrap();
    let _m = v.mount(&["--read-only"]);
    assert_eq!(fs::read(v.path("from-the-other-host")).unwrap(), b"other");
    assert!(!v.path("wal").exists());
}

/// Waiting is never silent: while another mount namespace holds a copy of the mount (the
/// kernel keeps the FUSE connection), `pgcryptfs umount` says so within seconds, naming the
/// holder, and finishes once the copy is gone.
#[test]
#[serial]
fn umount_says_why_it_waits_for_a_mount_held_in_another_namespace() {
    use std::time::{Duration, Instant};
    let v = Vault::new();
    let m = v.mount(&[]);
    fs::write(v.path("f"), b"data").unwrap();
    // A process in a new mount namespace with a copy of this one, the mount included; its copy
    // is made private so the unmount here does not propagate to it. (`--propagation private`
    // would remount / itself, which fails where / is no mount point, as in a chroot.)
    let script = format!("mount --make-private '{}' && exec sleep 8", v.mnt.display());
    let mut holder = Command::new("unshare").args(["--mount", "--propagation", "unchanged", "sh", "-c", &script]).spawn().unwrap();
    let want = v.mnt.to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = fs::read_to_string(format!("/proc/{}/mountinfo", holder.id())).unwrap_or_default();
        let private_copy = info.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()) && !l.contains("shared:"));
        let ns = |p: &str| fs::read_link(format!("/proc/{p}/ns/mnt")).ok();
        if private_copy && ns(&holder.id().to_string()) != ns("self") {
            break;
        }
        assert!(holder.try_wait().unwrap().is_none(), "unshare failed to hold a copy of the mount");
        assert!(Instant::now() < deadline, "the holder never had a private copy of the mount");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    let o = run(Command::new("timeout").arg("60").arg(BIN).arg("umount").arg(&v.mnt));
    let _ = holder.wait();
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("still waiting") && e.contains("another mount namespace") || e.contains("other mount namespaces"), "{e}");
    assert!(e.contains(&holder.id().to_string()) || e.contains("pids"), "{e}");
    assert!(t.elapsed() >= Duration::from_secs(5), "the drain waited for the copy: {:?}", t.elapsed());
    std::mem::forget(m); // unmounted above
    let _m = v.mount_from_store_only();
    assert_eq!(fs::read(v.path("f")).unwrap(), b"data");
}

/// After `pgcryptfs rekey`, the cache's pin refuses the new master key until the operator names
/// the fingerprint the rekey printed (`--accept-new-master-key` alone is refused up front, a
/// wrong fingerprint is refused); the accepted key is pinned and the old one retired, so the
/// old copy of the vault put back is refused for good, whatever the mount is given.
#[test]
#[serial]
fn a_rekeyed_vault_is_accepted_only_by_the_printed_fingerprint_and_an_old_copy_never() {
    let v = Vault::new();
    let fingerprint_in = |o: &std::process::Output| {
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.lines().find_map(|l| l.strip_prefix("fingerprint: ")).unwrap_or_else(|| panic!("no fingerprint in {out:?}")).to_string()
    };
    let old_fp = fingerprint_in(&must(v.cmd("key").arg("list").arg(&v.url).args(v.key_args())));
    let m = v.mount(&[]);
    fs::write(v.path("f"), b"before the rekey").unwrap();
    m.umount();
    let old = v.dir.path().join("store-before-rekey");
    must(Command::new("cp").arg("-a").arg(&v.store).arg(&old));
    let refused = |extra: &[&str]| {
        let o = run(&mut v.mount_cmd(extra));
        assert!(!o.status.success() && !is_mounted(&v.mnt), "{extra:?} mounted");
        stderr(&o)
    };
    let e = refused(&["--accept-new-master-key"]);
    assert!(e.contains("--accept-new-master-key needs --expect-fingerprint"), "{e}");
    let new_fp = fingerprint_in(&must(v.cmd("rekey").arg(&v.url).args(v.key_args())));
    assert_ne!(new_fp, old_fp);
    let e = refused(&[]);
    assert!(e.contains("it printed the new fingerprint") && e.contains("--expect-fingerprint <that fingerprint>"), "{e}");
    assert!(!e.contains(&new_fp) && !e.contains(&new_fp.replace('-', "")), "the refusal names no fingerprint to accept: {e}");
    let e = refused(&["--accept-new-master-key", "--expect-fingerprint", &old_fp]);
    assert!(e.contains("not the vault expected"), "{e}");
    let m = v.mount(&["--accept-new-master-key", "--expect-fingerprint", &new_fp]);
    assert_eq!(fs::read(v.path("f")).unwrap(), b"before the rekey");
    m.umount();
    v.mount(&[]).umount(); // the new key is pinned
    // The old copy put back (someone with write access to the store): refused for good.
    fs::remove_dir_all(&v.store).unwrap();
    must(Command::new("cp").arg("-a").arg(&old).arg(&v.store));
    for extra in [&[][..], &["--accept-new-master-key", "--expect-fingerprint", &old_fp][..]] {
        let e = refused(extra);
        assert!(e.contains("retired") && e.contains("no option accepts it"), "{extra:?}: {e}");
    }
}
