//! End to end with a real PostgreSQL started by the test: pg_basebackup -Fp -X stream and -Ft
//! into the mount, `pgcryptfs umount`, a read-only remount with an empty cache, pg_verifybackup,
//! and a restored copy that starts and holds the same rows; the WAL archive and point-in-time
//! recovery recipe of docs/WAL-ARCHIVE.md.

mod common;
#[path = "e2e_postgres/gc.rs"]
mod gc;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::pg::*;
use common::*;
use serial_test::serial;

#[test]
#[serial]
fn pg_basebackup_local_store() {
    backup_verify_restore(&Vault::new());
}

#[test]
#[serial]
fn pg_basebackup_s3_store() {
    let s3 = common::s3::S3Server::start();
    let v = Vault::on_s3(&s3, "cluster-a");
    let umount = backup_verify_restore(&v);
    // "everything is in the store (N objects written, B bytes of packs)"
    let nums: Vec<u64> = umount.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
    let (puts, bytes) = (nums[0], nums[1]);
    let packs = bytes.div_ceil(8 << 20);
    eprintln!("S3 backup: {puts} PUTs for {bytes} bytes of packs ({packs} packs of 8 MiB)");
    assert!(puts <= packs + 2 * 4 + 4, "{puts} PUTs: should be about one per pack plus a few segments");
    let stored = walk(&v.store);
    assert!(stored.iter().any(|p| p.to_string_lossy().contains("/packs/")), "packs are in the bucket");
    // Every chunk read back from the bucket and authenticated, without FUSE.
    let o = must(v.cmd("verify").arg(&v.url).args(&v.store_opts).args(v.key_args()));
    assert!(String::from_utf8_lossy(&o.stdout).contains(": all authentic"), "{}", String::from_utf8_lossy(&o.stdout));
}

/// The same backup into a vault whose only key slot is an OpenPGP one (a gpg-made ed25519 /
/// cv25519 key with a passphrase): init with the certificate, mount with the secret key.
#[test]
#[serial]
fn pg_basebackup_openpgp_only_vault() {
    let keys = tempfile::tempdir_in("/var/tmp").unwrap();
    let key = common::gpg::generate(keys.path(), "pgbackup", "ed25519", Some("backup pass phrase"));
    let v = Vault::with_key(&key.cert_args(), &key.unlock_args());
    let list = common::must(v.cmd("key").args(["list", &v.url]));
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(list.contains(" openpgp ") && list.contains(&key.fingerprint), "{list}");
    backup_verify_restore(&v);
    assert!(v.log_text().contains("audit: unlock") && v.log_text().contains("method=openpgp"), "{}", v.log_text());
}

// ---------------------------------------------------------------------------------------------
// WAL archive and point-in-time recovery (docs/WAL-ARCHIVE.md)
// ---------------------------------------------------------------------------------------------

/// A shell command run as `postgres` under `timeout`; every access to the mount from the test
/// goes through a child like this.
fn sh_postgres(secs: u32, script: &str) -> Command {
    let mut c = Command::new("timeout");
    c.arg(secs.to_string()).args(["runuser", "-u", "postgres", "--", "sh", "-c", script]);
    c
}

/// The recipe as documented: the archive script and the `name = value` settings lines.
struct WalDoc {
    text: String,
}

impl WalDoc {
    fn load() -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/WAL-ARCHIVE.md");
        WalDoc { text: fs::read_to_string(path).expect("docs/WAL-ARCHIVE.md") }
    }

    /// The fenced `sh` block that starts with `#!/bin/sh`.
    fn script(&self) -> String {
        let open = "```sh\n#!/bin/sh\n";
        let start = self.text.find(open).expect("archive script block in WAL-ARCHIVE.md") + "```sh\n".len();
        let end = start + self.text[start..].find("\n```").unwrap() + 1;
        self.text[start..end].to_string()
    }

    /// A line that must be in the document as it is.
    fn line(&self, line: &str) -> String {
        assert!(self.text.lines().any(|l| l == line), "no line `{line}` in WAL-ARCHIVE.md");
        line.to_string()
    }

    /// The first line that sets `name` (`name = ...`).
    fn setting(&self, name: &str) -> String {
        let prefix = format!("{name} = ");
        self.text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no `{name} = ` line in WAL-ARCHIVE.md")).to_string()
    }
}

impl Cluster {
    /// Switches to a new WAL segment and waits (bounded) until the one just closed is archived.
    fn switch_and_wait_archived(&self) -> String {
        let seg = self.query("SELECT pg_walfile_name(pg_switch_wal())");
        assert_eq!(seg.len(), 24, "segment name {seg:?}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let last = self.query("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
            if last.get(..24).is_some_and(|p| p >= seg.as_str()) {
                return seg;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "segment {seg} not archived within 120 s; pg_stat_archiver: {}",
                self.query("SELECT * FROM pg_stat_archiver")
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    fn stop_fast(&self) {
        must(pg_timed(120, &self.bin, "pg_ctl").arg("-D").arg(&self.data).args(["-m", "fast", "-w", "stop"]));
    }

    fn log(&self) -> String {
        fs::read_to_string(self.data.parent().unwrap().join(format!("pg-{}.log", self.port))).unwrap_or_default()
    }
}

/// Base backup into the mount with WAL archived there by the documented `archive_command`
/// while pgbench runs; a target time; more writes; then, from a read-only mount with an empty
/// cache, recovery to the target time through the documented `restore_command`. Also: the
/// archive script refuses to overwrite, accepts an identical retry, survives a leftover `.part`;
/// pg_verifybackup against the archive; pg_archivecleanup on the mount.
#[test]
#[serial]
fn wal_archive_and_point_in_time_recovery() {
    let t0 = std::time::Instant::now();
    let doc = WalDoc::load();
    let v = Vault::new();
    let PgWork { bin, work, data, sock } = PgWork::init(&v);
    let mnt = v.mnt.to_str().unwrap().to_string();
    let script = work.join("pgcryptfs-archive-wal");
    fs::write(&script, doc.script()).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let script = script.to_str().unwrap().to_string();
    let local = |line: String| line.replace("/usr/local/bin/pgcryptfs-archive-wal", &script).replace("/mnt/enc", &mnt);
    let wal = format!("{mnt}/wal");
    chown_postgres(&work);

    // The archive side: the mount first (archiving starts with the server).
    let m = v.mount(&["--allow-other", "--sync-store"]);
    must(Command::new("timeout").args(["20", "install", "-d", "-o", "postgres", "-g", "postgres"]).arg(&wal).arg(format!("{mnt}/base")));
    let settings = [doc.setting("wal_level"), doc.setting("archive_mode"), local(doc.setting("archive_command"))];
    eprintln!("primary settings: {settings:?}");
    let mut conf = fs::read_to_string(data.join("postgresql.conf")).unwrap();
    conf += &format!("\n{}\n", settings.join("\n"));
    fs::write(data.join("postgresql.conf"), conf).unwrap();
    let primary = Cluster::start(&bin, &data, &sock);
    primary.pgbench(&["-i", "-s", "5", "-q"]);
    primary.query("CREATE TABLE marker (tag text, at timestamptz DEFAULT clock_timestamp())");

    let mut bb = pg_timed(300, &bin, "pg_basebackup");
    primary.conn(&mut bb);
    must(bb.arg("-D").arg(format!("{mnt}/base/b1")).args(["-Fp", "-X", "none", "-c", "fast"]));
    eprintln!("[{:?}] base backup done", t0.elapsed());

    // Writes while archiving; then the point to recover to.
    primary.pgbench(&["-c", "2", "-j", "2", "-T", "6"]);
    primary.query("INSERT INTO marker (tag) VALUES ('before')");
    let history = primary.query("SELECT count(*) FROM pgbench_history");
    let balance = primary.query("SELECT sum(abalance) FROM pgbench_accounts");
    let seg_before = primary.switch_and_wait_archived();
    // --sync-store: what the archiver reported as archived is in the store, not only the cache.
    let st = status(&v);
    eprintln!("status once {seg_before} is archived: {}", st.trim());
    assert_eq!((field(&st, "staged_bytes"), field(&st, "packs_waiting")), (0, 0), "archived segments are in the store");
    let segments = field(&st, "segments");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let target = primary.query("SELECT now()");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    eprintln!("[{:?}] target {target}: {history} history rows, segment {seg_before} archived", t0.elapsed());

    // More writes after the target.
    primary.pgbench(&["-c", "2", "-j", "2", "-T", "3", "-n"]);
    primary.query("INSERT INTO marker (tag) SELECT 'after' FROM generate_series(1, 3)");
    let history_after = primary.query("SELECT count(*) FROM pgbench_history");
    assert!(history_after.parse::<u64>().unwrap() > history.parse::<u64>().unwrap(), "pgbench wrote after the target");
    let seg_after = primary.switch_and_wait_archived();
    let st = status(&v);
    eprintln!("status once {seg_after} is archived: {}", st.trim());
    assert_eq!((field(&st, "staged_bytes"), field(&st, "packs_waiting")), (0, 0), "archived segments are in the store");
    assert!(field(&st, "segments") >= segments + 2, "each archived segment was committed");
    let archiver = primary.query("SELECT archived_count, failed_count FROM pg_stat_archiver");
    eprintln!("[{:?}] after: {history_after} history rows, archived up to {seg_after}; archived|failed = {archiver}", t0.elapsed());
    primary.stop_fast();
    drop(primary);

    // The script by hand: an existing segment is never overwritten.
    let same = work.join("same");
    let other = work.join("other");
    must(&mut sh_postgres(60, &format!("cp {wal}/{seg_before} {} && echo not-a-wal-segment > {}", same.display(), other.display())));
    let o = run(&mut sh_postgres(60, &format!("{script} {} {seg_before} {wal}", other.display())));
    assert!(!o.status.success(), "archiving different content over {seg_before} must fail");
    assert!(stderr(&o).contains("already exists with different content"), "{}", stderr(&o));
    must(&mut sh_postgres(60, &format!("{script} {} {seg_before} {wal}", same.display())));
    must(&mut sh_postgres(60, &format!("cmp {} {wal}/{seg_before}", same.display())));
    // A retry after a crash that left a .part behind.
    let retry = format!("{mnt}/wal-retry");
    must(Command::new("timeout").args(["20", "install", "-d", "-o", "postgres", "-g", "postgres"]).arg(&retry));
    must(&mut sh_postgres(60, &format!("echo torn > {retry}/{seg_before}.part")));
    must(&mut sh_postgres(60, &format!("{script} {} {seg_before} {retry}", same.display())));
    must(&mut sh_postgres(60, &format!("cmp {} {retry}/{seg_before} && test ! -e {retry}/{seg_before}.part", same.display())));
    must(Command::new("timeout").args(["20", "rm", "-r"]).arg(&retry));
    let out = m.umount();
    eprintln!("[{:?}] umount: {}", t0.elapsed(), out.trim());

    // The restore side: read-only, from the store alone.
    fs::remove_dir_all(&v.cache).unwrap();
    let ro = v.mount(&["--read-only", "--allow-other"]);
    let mut verify = pg_timed(300, &bin, "pg_verifybackup");
    must(verify.arg("-w").arg(&wal).arg(format!("{mnt}/base/b1")));
    let pitr = work.join("pitr");
    must(Command::new("timeout").args(["300", "cp", "-a"]).arg(format!("{mnt}/base/b1")).arg(&pitr));
    chown_postgres(&pitr);
    fs::set_permissions(&pitr, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(pitr.join("recovery.signal"), "").unwrap();
    let recovery = [
        local(doc.setting("restore_command")),
        format!("recovery_target_time = '{target}'"),
        doc.setting("recovery_target_action"),
        doc.line("archive_mode = off"),
    ];
    eprintln!("recovery settings: {recovery:?}");
    let mut conf = fs::read_to_string(pitr.join("postgresql.conf")).unwrap();
    conf += &format!("\n{}\n", recovery.join("\n"));
    fs::write(pitr.join("postgresql.conf"), conf).unwrap();
    chown_postgres(&pitr);
    let copy = Cluster::start(&bin, &pitr, &sock);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while copy.query("SELECT pg_is_in_recovery()") != "f" {
        assert!(std::time::Instant::now() < deadline, "recovery did not finish within 180 s:\n{}", copy.log());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    eprintln!("[{:?}] recovered and promoted", t0.elapsed());
    let log = copy.log();
    assert!(log.contains("recovery stopping before "), "recovery stopped at the target:\n{log}");
    assert_eq!(copy.query("SELECT string_agg(tag, ',') FROM marker"), "before");
    assert_eq!(copy.query("SELECT count(*) FROM pgbench_history"), history);
    assert_eq!(copy.query("SELECT sum(abalance) FROM pgbench_accounts"), balance);
    copy.stop_fast();
    drop(copy);
    drop(ro);

    // Retention: pg_archivecleanup against the writable mount, up to the backup's start.
    let m = v.mount(&["--allow-other", "--sync-store"]);
    let list = || -> Vec<String> {
        let o = must(Command::new("timeout").args(["20", "ls", "-1"]).arg(&wal));
        String::from_utf8(o.stdout).unwrap().lines().map(str::to_string).collect()
    };
    let before = list();
    let backup_file = before.iter().find(|n| n.ends_with(".backup")).expect("a .backup file in the archive").clone();
    let start_seg = &backup_file[..24];
    assert!(before.iter().any(|n| n.len() == 24 && n.as_str() < start_seg), "segments older than the backup: {before:?}");
    must(pg_timed(60, &bin, "pg_archivecleanup").arg(&wal).arg(&backup_file));
    let after = list();
    assert!(after.iter().all(|n| n.as_str() >= start_seg), "older segments removed: {after:?}");
    assert!(after.iter().any(|n| n == start_seg) && after.contains(&seg_after), "the backup's segments stay: {after:?}");
    eprintln!("[{:?}] pg_archivecleanup: {} -> {} files", t0.elapsed(), before.len(), after.len());
    m.umount();
    let log = v.log_text();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR") || l.contains("WARN")).collect();
    eprintln!("daemon log warnings/errors: {errors:#?}");
    eprintln!("total {:?}", t0.elapsed());
}
