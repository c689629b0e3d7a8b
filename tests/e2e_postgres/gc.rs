//! gc with real backups: two pg_basebackups, the first deleted through the mount, gc; the store
//! shrinks by about the first backup and the second still passes pg_verifybackup from an empty
//! cache. Then prune keeps the newest backup.

use std::fs;
use std::process::Command;

use serial_test::serial;

use super::{Cluster, as_postgres, chown_postgres};
use crate::common::*;

fn pack_bytes(v: &Vault) -> u64 {
    walk(&v.store.join("packs")).iter().map(|p| fs::metadata(p).unwrap().len()).sum()
}

#[test]
#[serial]
fn gc_after_deleting_a_backup_keeps_the_other_verifiable() {
    let v = Vault::new();
    let super::PgWork { bin, data, sock, .. } = super::PgWork::init(&v);
    let primary = Cluster::start(&bin, &data, &sock);
    primary.pgbench(&["-i", "-s", "4", "-q"]);

    let m = v.mount(&["--allow-other"]);
    fs::create_dir(v.path("base")).unwrap();
    chown_postgres(&v.path("base"));
    let backup = |dir: &str| {
        let mut c = as_postgres(&bin, "pg_basebackup");
        primary.conn(&mut c);
        must(c.arg("-D").arg(v.path(dir)).args(["-F", "p", "-X", "stream", "-c", "fast", "-U", "postgres"]));
    };
    backup("base/2026-11-01");
    primary.pgbench(&["-t", "200", "-n"]);
    backup("base/2026-11-02");
    m.umount();
    drop(primary);
    let two = pack_bytes(&v);

    let m = v.mount(&[]);
    must(Command::new("rm").arg("-rf").arg(v.path("base/2026-11-01")));
    m.umount();
    let o = must(v.cmd("gc").arg(&v.url).args(v.key_args()).arg("--cache-dir").arg(&v.cache));
    let one = pack_bytes(&v);
    eprintln!("gc: {} ({two} -> {one} bytes of packs)", String::from_utf8_lossy(&o.stdout).trim());
    // About half: the second backup is about as large as the first.
    assert!(one < two * 6 / 10 && one > two * 4 / 10, "{two} -> {one}");

    fs::remove_dir_all(&v.cache).unwrap();
    {
        let _ro = v.mount(&["--read-only", "--allow-other"]);
        must(as_postgres(&bin, "pg_verifybackup").arg(v.path("base/2026-11-02")));
    }
    let o = must(v.cmd("verify").arg(&v.url).args(v.key_args()));
    assert!(String::from_utf8_lossy(&o.stdout).contains("all authentic"));
}
