//! The operator commands against a real vault written through a mount: verify (full and
//! --quick) naming damaged files, export (tree, metadata, links, refusal to overwrite, a
//! tampered file failing alone), ls and cat, gc (space reclaimed, crash-safe at each step,
//! refused while a writer holds the lease) and prune (dry run by default).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use serial_test::serial;

use crate::common::*;

fn tool(v: &Vault, sub: &str, args: &[&str]) -> Output {
    let mut c = v.cmd(sub);
    c.arg(&v.url).args(args).args(&v.store_opts).args(v.key_args());
    run(&mut c)
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn pack_bytes(v: &Vault) -> u64 {
    fs::read_dir(v.store.join("packs")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

/// A vault with base/{b1,b2}/data (1 MiB each, distinct), a symlink, a hard link, modes, a
/// sparse file and an empty directory.
fn populate(v: &Vault) {
    let m = v.mount(&["--pack-size", "1M"]);
    for (i, b) in ["b1", "b2"].iter().enumerate() {
        fs::create_dir_all(v.path(&format!("base/{b}/sub"))).unwrap();
        fs::write(v.path(&format!("base/{b}/data")), pattern(i as u64 + 10, 1 << 20)).unwrap();
        fs::write(v.path(&format!("base/{b}/sub/small")), format!("small {b}")).unwrap();
        must(Command::new(BIN).arg("sync").arg(&v.mnt)); // each backup in packs of its own
    }
    std::os::unix::fs::symlink("data", v.path("base/b2/link")).unwrap();
    fs::hard_link(v.path("base/b2/data"), v.path("base/b2/hard")).unwrap();
    fs::set_permissions(v.path("base/b2/sub/small"), fs::Permissions::from_mode(0o640)).unwrap();
    {
        let f = fs::File::create(v.path("base/b2/sparse")).unwrap();
        f.set_len(300_000).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"tail", 299_996).unwrap();
    }
    fs::create_dir(v.path("base/b2/empty")).unwrap();
    m.umount();
}

#[test]
#[serial]
fn verify_export_ls_and_cat() {
    let v = Vault::new();
    populate(&v);
    // Reference copy through a mount.
    let want = v.dir.path().join("want");
    {
        let _m = v.mount_from_store_only();
        must(Command::new("cp").arg("-a").arg(v.path("base")).arg(&want));
    }
    let o = tool(&v, "verify", &[]);
    assert!(o.status.success() && out(&o).contains(": all authentic"), "{}{}", out(&o), stderr(&o));
    let o = tool(&v, "ls", &["base/b2", "-l"]);
    let listing = out(&o);
    assert!(listing.contains(" link -> data") && listing.lines().count() == 6, "{listing}");
    assert!(listing.lines().any(|l| l.starts_with("-rw-r--r--   2 ") && l.ends_with(" 1048576 ") || l.ends_with(" hard")), "{listing}");
    let o = tool(&v, "ls", &["base/b2/sub", "-l"]);
    assert!(out(&o).starts_with("-rw-r----- ") && out(&o).trim_end().ends_with(" small"), "{}", out(&o));
    let o = tool(&v, "cat", &["base/b2/sparse"]);
    assert!(o.stdout == fs::read(want.join("b2/sparse")).unwrap());

    // Export: the same tree, modes, times, symlinks and hard links.
    let dest = v.dir.path().join("export");
    let o = tool(&v, "export", &[dest.to_str().unwrap(), "--path", "base"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out(&o).contains("1 symlinks, 1 hard links"), "{}", out(&o));
    let tree = |root: &Path| {
        let mut t = Vec::new();
        for p in walk(root) {
            let m = fs::symlink_metadata(&p).unwrap();
            let body = if m.is_file() { fs::read(&p).unwrap() } else { fs::read_link(&p).map(|l| l.into_os_string().into_encoded_bytes()).unwrap_or_default() };
            t.push((p.strip_prefix(root).unwrap().to_path_buf(), m.mode(), m.mtime(), m.nlink(), body));
        }
        t
    };
    assert!(tree(&dest) == tree(&want), "export differs from the mounted tree");
    assert!(dest.join("b2/empty").is_dir());
    assert_eq!(fs::metadata(dest.join("b2")).unwrap().mtime(), fs::metadata(want.join("b2")).unwrap().mtime());
    // Existing files are refused unless --overwrite.
    let o = tool(&v, "export", &[dest.to_str().unwrap(), "--path", "base"]);
    assert!(!o.status.success() && stderr(&o).contains("export: b1/data: exists (pass --overwrite"), "{}", stderr(&o));
    // A single file lands under its own name.
    let o = tool(&v, "export", &[dest.join("one").to_str().unwrap(), "--path", "base/b2/sparse"]);
    assert!(o.status.success() && fs::read(dest.join("one/sparse")).unwrap() == fs::read(want.join("b2/sparse")).unwrap());
    fs::remove_dir_all(dest.join("one")).unwrap();
    let o = tool(&v, "export", &[dest.to_str().unwrap(), "--path", "base", "--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Damage one pack: verify names the file; export fails that file alone, leaving nothing of it.
    let data_b1 = fs::read(want.join("b1/data")).unwrap();
    let victim = walk(&v.store.join("packs"))
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().modified().unwrap())
        .unwrap(); // the newest pack holds b2's files (compressed: maybe only a few bytes)
    let mut bytes = fs::read(&victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    fs::write(&victim, &bytes).unwrap();
    let o = tool(&v, "verify", &[]);
    let report = out(&o);
    assert!(!o.status.success(), "{report}");
    assert!(report.contains("FAILED base/b2/") && report.contains("(the chunk was modified or moved)"), "{report}");
    assert!(!report.contains("FAILED base/b1/"), "only the damaged files are named: {report}");
    let o = tool(&v, "verify", &["--quick"]);
    assert!(o.status.success(), "--quick reads no data: {}", out(&o));
    let dest2 = v.dir.path().join("export2");
    let o = tool(&v, "export", &[dest2.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("export: base/b2/"), "{}", stderr(&o));
    assert_eq!(fs::read(dest2.join("base/b1/data")).unwrap(), data_b1, "undamaged files are exported");
    assert!(walk(&dest2).iter().all(|p| !p.to_string_lossy().contains("pgcryptfs-partial")), "no partial file is left");
    // A missing pack: --quick sees it without reading data.
    fs::remove_file(&victim).unwrap();
    let o = tool(&v, "verify", &["--quick"]);
    assert!(!o.status.success() && out(&o).contains("is missing"), "{}", out(&o));
}

#[test]
#[serial]
fn gc_reclaims_crash_safely_and_prune_is_dry_by_default() {
    let v = Vault::new();
    populate(&v);
    let cache = v.dir.path().join("gc-cache");
    let gc = |v: &Vault, env: Option<&str>| {
        let mut c = v.cmd("gc");
        c.arg(&v.url).args(v.key_args()).arg("--cache-dir").arg(&cache);
        if let Some(at) = env {
            c.env("PGCRYPTFS_TEST_GC_CRASH", at);
        }
        run(&mut c)
    };
    // Refused while a writer holds the lease.
    {
        let _m = v.mount(&[]);
        let o = gc(&v, None);
        assert!(!o.status.success() && stderr(&o).contains("in use by a writable mount"), "{}", stderr(&o));
    }
    // prune lists and changes nothing without --apply.
    let before = pack_bytes(&v);
    let o = tool(&v, "prune", &["--path", "base", "--keep-last", "1"]);
    assert!(o.status.success() && out(&o).contains("would delete base/b1") && !out(&o).contains("base/b2"), "{}", out(&o));
    assert_eq!(pack_bytes(&v), before);
    // Delete b1 and overwrite half of b2's data in place: dead packs and a partly-dead one.
    let b2_after;
    {
        let m = v.mount(&["--pack-size", "1M"]);
        must(Command::new("rm").arg("-rf").arg(v.path("base/b1")));
        let f = fs::OpenOptions::new().write(true).open(v.path("base/b2/data")).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, &pattern(99, 512 << 10), 0).unwrap();
        drop(f);
        b2_after = fs::read(v.path("base/b2/data")).unwrap();
        m.umount();
    }
    let before = pack_bytes(&v);
    let o = run(v.cmd("gc").arg(&v.url).args(v.key_args()).arg("--dry-run"));
    assert!(o.status.success() && out(&o).contains("would reclaim"), "{}", stderr(&o));
    assert_eq!(pack_bytes(&v), before, "a dry run changes nothing");
    // Killed after copying (nothing committed), then after committing (nothing deleted yet).
    for at in ["copied", "committed"] {
        let o = gc(&v, Some(at));
        assert!(!o.status.success(), "gc must have crashed at {at}");
        let _m = v.mount_from_store_only();
        assert!(fs::read(v.path("base/b2/data")).unwrap() == b2_after, "after a crash at {at}");
    }
    // The lease of the killed run is the cache's own: the rerun resumes it and finishes.
    let o = gc(&v, None);
    assert!(o.status.success() && out(&o).contains("reclaimed"), "{}{}", out(&o), stderr(&o));
    let after = pack_bytes(&v);
    // b1 (1 MiB) and the overwritten half of b2 (0.5 MiB) are gone; b2 and the rest remain.
    assert!(before - after >= (3 << 19) - (64 << 10) && after >= 1 << 20, "{before} -> {after}");
    let o = tool(&v, "verify", &[]);
    assert!(o.status.success() && out(&o).contains("all authentic") && !out(&o).contains("referenced by no file"), "{}", out(&o));
    {
        let _m = v.mount_from_store_only();
        assert!(fs::read(v.path("base/b2/data")).unwrap() == b2_after);
        assert_eq!(fs::read(v.path("base/b2/hard")).unwrap(), b2_after);
    }
    // prune --apply: keeps the newest by name, deletes the rest and collects.
    {
        let m = v.mount(&[]);
        fs::create_dir(v.path("base/b3")).unwrap();
        fs::write(v.path("base/b3/x"), b"newest").unwrap();
        m.umount();
    }
    let mut c = v.cmd("prune");
    c.arg(&v.url).args(v.key_args()).args(["--path", "base", "--keep-last", "1", "--apply", "--cache-dir"]).arg(&cache);
    let o = run(&mut c);
    assert!(o.status.success() && out(&o).contains("deleting base/b2"), "{}{}", out(&o), stderr(&o));
    let o = tool(&v, "ls", &["base"]);
    assert_eq!(out(&o).trim(), "b3");
    assert!(pack_bytes(&v) < 64 << 10, "only b3's bytes remain: {}", pack_bytes(&v));
}
