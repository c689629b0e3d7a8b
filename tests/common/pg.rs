//! A throwaway PostgreSQL for the end-to-end tests: initdb as the `postgres` user under a
//! vault's temp dir, a cluster on a free port and a private socket directory, and the round
//! trip every store gets (`backup_verify_restore`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// The newest PostgreSQL (15 or later) installed the Debian way.
pub fn pg_bin() -> PathBuf {
    let mut versions: Vec<u32> = fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (/usr/lib/postgresql); .ci/run installs it")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|v| *v >= 15)
        .collect();
    versions.sort_unstable();
    let v = versions.last().expect("no PostgreSQL 15+ under /usr/lib/postgresql");
    PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"))
}

/// Runs a PostgreSQL tool as the `postgres` OS user (initdb refuses root).
pub fn as_postgres(bin: &Path, tool: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
    c
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn chown_postgres(p: &Path) {
    must(Command::new("chown").args(["-R", "postgres:postgres"]).arg(p));
}

/// A cluster directory made by initdb under the vault's temp dir: `work/{data,sock}`, owned by
/// `postgres`; the binaries of the newest PostgreSQL.
pub struct PgWork {
    pub bin: PathBuf,
    pub work: PathBuf,
    pub data: PathBuf,
    pub sock: PathBuf,
}

impl PgWork {
    pub fn init(v: &Vault) -> Self {
        let bin = pg_bin();
        fs::set_permissions(v.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let work = v.dir.path().join("pg");
        let (data, sock) = (work.join("data"), work.join("sock"));
        fs::create_dir_all(&sock).unwrap();
        chown_postgres(&work);
        must(as_postgres(&bin, "initdb").arg("-D").arg(&data).args(["-U", "postgres", "--auth=trust", "-N"]));
        PgWork { bin, work, data, sock }
    }
}

/// A running cluster; stopped on drop.
pub struct Cluster {
    pub bin: PathBuf,
    pub data: PathBuf,
    pub sock: PathBuf,
    pub port: u16,
}

impl Cluster {
    pub fn start(bin: &Path, data: &Path, sock: &Path) -> Self {
        let port = free_port();
        let log = data.parent().unwrap().join(format!("pg-{port}.log"));
        let opts = format!("-p {port} -k {} -c listen_addresses='' -c fsync=off", sock.display());
        let o = run(as_postgres(bin, "pg_ctl").arg("-D").arg(data).arg("-o").arg(&opts).arg("-l").arg(&log).args(["-w", "start"]));
        assert!(o.status.success(), "pg_ctl start failed: {}\n{}", stderr(&o), fs::read_to_string(&log).unwrap_or_default());
        Cluster { bin: bin.to_path_buf(), data: data.to_path_buf(), sock: sock.to_path_buf(), port }
    }

    pub fn conn(&self, c: &mut Command) {
        c.arg("-h").arg(&self.sock).arg("-p").arg(self.port.to_string());
    }

    pub fn query(&self, sql: &str) -> String {
        let mut c = as_postgres(&self.bin, "psql");
        self.conn(&mut c);
        c.args(["-X", "-A", "-t", "-d", "postgres", "-c", sql]);
        String::from_utf8(must(&mut c).stdout).unwrap().trim().to_string()
    }

    pub fn pgbench(&self, args: &[&str]) {
        let mut c = pg_timed(300, &self.bin, "pgbench");
        self.conn(&mut c);
        must(c.args(args).arg("postgres"));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin, "pg_ctl").arg("-D").arg(&self.data).args(["-m", "immediate", "-w", "stop"]).output();
    }
}

pub fn vm_hwm_kib(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A PostgreSQL tool run as `postgres` under `timeout` (so no step can hang the test).
pub fn pg_timed(secs: u32, bin: &Path, tool: &str) -> Command {
    let mut c = Command::new("timeout");
    c.arg(secs.to_string()).args(["runuser", "-u", "postgres", "--"]).arg(bin.join(tool));
    c
}

/// Backs up a fresh cluster into the vault's mount (-Fp and -Ft), unmounts, verifies both from a
/// read-only mount with an empty cache and starts a copy. Returns what `pgcryptfs umount` said.
pub fn backup_verify_restore(v: &Vault) -> String {
    let PgWork { bin, work, data, sock } = PgWork::init(v);
    let primary = Cluster::start(&bin, &data, &sock);
    primary.pgbench(&["-i", "-s", "10", "-q"]);
    let rows = primary.query("SELECT count(*) FROM pgbench_accounts");
    assert_eq!(rows, "1000000");
    let balance = primary.query("SELECT sum(abalance) + count(*) FROM pgbench_accounts");

    let m = v.mount(&["--allow-other"]);
    let pid = m.pid();
    fs::create_dir(v.path("base")).unwrap();
    chown_postgres(&v.path("base"));
    for (dir, format) in [("base/fp", "p"), ("base/ft", "t")] {
        let mut c = as_postgres(&bin, "pg_basebackup");
        primary.conn(&mut c);
        c.arg("-D").arg(v.path(dir)).args(["-F", format, "-X", "stream", "-c", "fast", "-U", "postgres"]);
        must(&mut c);
    }
    let rss_mib = vm_hwm_kib(pid) / 1024;
    eprintln!("pgcryptfs daemon peak RSS during the backups: {rss_mib} MiB");
    let out = m.umount();
    eprintln!("umount: {}", out.trim());
    assert!(walk(&v.cache).iter().all(|p| !p.to_string_lossy().contains("staging/")), "nothing left staged");
    drop(primary);

    // Restore side: read-only, no cache at all.
    fs::remove_dir_all(&v.cache).unwrap();
    let ro = v.mount(&["--read-only", "--allow-other"]);
    must(as_postgres(&bin, "pg_verifybackup").arg(v.path("base/fp")));
    // The tar backup: unpack, then verify against its manifest.
    let ft = work.join("ft");
    fs::create_dir_all(ft.join("pg_wal")).unwrap();
    must(Command::new("tar").arg("-xf").arg(v.path("base/ft/base.tar")).arg("-C").arg(&ft));
    must(Command::new("tar").arg("-xf").arg(v.path("base/ft/pg_wal.tar")).arg("-C").arg(ft.join("pg_wal")));
    fs::copy(v.path("base/ft/backup_manifest"), ft.join("backup_manifest")).unwrap();
    chown_postgres(&ft);
    must(as_postgres(&bin, "pg_verifybackup").arg(&ft));
    // A copy of the plain backup starts and holds the same rows.
    let restored = work.join("restored");
    must(Command::new("cp").arg("-a").arg(v.path("base/fp")).arg(&restored));
    drop(ro);
    chown_postgres(&restored);
    fs::set_permissions(&restored, fs::Permissions::from_mode(0o700)).unwrap();
    let copy = Cluster::start(&bin, &restored, &sock);
    assert_eq!(copy.query("SELECT count(*) FROM pgbench_accounts"), rows);
    assert_eq!(copy.query("SELECT sum(abalance) + count(*) FROM pgbench_accounts"), balance);
    assert!(rss_mib < 256, "daemon RSS {rss_mib} MiB");
    out
}

