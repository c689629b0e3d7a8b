//! Test harness: a vault on a temp directory, the real `pgcryptfs` binary mounting it, and
//! teardown that always unmounts (also when a test panics).
#![allow(dead_code)]

pub mod azure;
pub mod gcs;
pub mod gpg;
pub mod pg;
pub mod s3;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_pgcryptfs");

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn must(cmd: &mut Command) -> Output {
    let o = run(cmd);
    assert!(o.status.success(), "{cmd:?} failed: {}\n{}", stderr(&o), String::from_utf8_lossy(&o.stdout));
    o
}

pub fn is_mounted(p: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = p.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&want))
}

/// One vault, its key, a mount point, and the cache/log locations the mount uses.
pub struct Vault {
    pub dir: tempfile::TempDir,
    /// Where the vault's objects are, as files (the local store, or the S3 server's disk).
    pub store: PathBuf,
    /// The STORE argument and the store options that go with it.
    pub url: String,
    pub store_opts: Vec<String>,
    /// Environment for pgcryptfs commands (credentials).
    pub env: Vec<(String, String)>,
    pub key: PathBuf,
    /// The unlock options mount and key commands get (default: the hex key file).
    pub unlock: Vec<String>,
    pub mnt: PathBuf,
    pub cache: PathBuf,
    pub log: PathBuf,
}

impl Vault {
    /// Creates a vault with a random hex key.
    pub fn new() -> Self {
        Self::with_init_args(&[])
    }

    pub fn with_init_args(extra: &[&str]) -> Self {
        Self::create(None, extra)
    }

    /// A vault whose only slot is made by `init_key` (e.g. `--pgp-cert C`) and opened with
    /// `unlock` (e.g. `--pgp-key-file K --pgp-passphrase-file P`).
    pub fn with_key(init_key: &[String], unlock: &[String]) -> Self {
        let mut v = Self::bare();
        v.unlock = unlock.to_vec();
        must(v.cmd("init").arg(&v.url).args(init_key));
        v
    }

    /// Directories and a random hex key file, no vault yet.
    fn bare() -> Self {
        let dir = tempfile::Builder::new().prefix("pgcfs-test").tempdir_in("/var/tmp").unwrap();
        let key = dir.path().join("key");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mut k = [0u8; 32];
        getrandom(&mut k);
        std::fs::write(&key, k.iter().map(|b| format!("{b:02x}")).collect::<String>()).unwrap();
        let store = dir.path().join("store");
        let unlock = vec!["--key-file".into(), key.to_string_lossy().into(), "--key-transform".into(), "hex".into()];
        Vault {
            cache: dir.path().join("cache"),
            log: dir.path().join("daemon.log"),
            url: store.to_string_lossy().into_owned(),
            store,
            store_opts: Vec::new(),
            env: Vec::new(),
            dir,
            key,
            unlock,
            mnt,
        }
    }

    /// A vault in a bucket of the test S3 server.
    pub fn on_s3(server: &s3::S3Server, prefix: &str) -> Self {
        Self::create(Some((server, prefix)), &[])
    }

    /// A vault in the container of the test Azurite; the account name and key in the
    /// environment (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`), the endpoint as
    /// a store option. `store` is Azurite's workspace (its files are not named by key).
    pub fn on_azure(server: &azure::Azurite, prefix: &str) -> Self {
        let (url, opts) = server.store_args(prefix);
        Self::on_remote(url, opts, azure::Azurite::env(), server.dir.path().to_path_buf())
    }

    /// A vault in the bucket of the test GCS server; a service-account JSON (no OAuth, as for
    /// any emulator) named by `GOOGLE_SERVICE_ACCOUNT`, the endpoint as a store option. The
    /// emulator keeps objects in memory: `store` is its directory, not the objects.
    pub fn on_gcs(server: &gcs::GcsServer, prefix: &str) -> Self {
        let (url, opts) = server.store_args(prefix);
        let sa = server.service_account(server.dir.path(), false);
        let env = vec![("GOOGLE_SERVICE_ACCOUNT".to_string(), sa.to_string_lossy().into_owned())];
        Self::on_remote(url, opts, env, server.dir.path().to_path_buf())
    }

    /// A vault at `url` with these store options and credential variables. The commands get a
    /// cache root of their own (`PGCRYPTFS_CACHE_DIR`): the host pins kept there are per
    /// location, and these URLs are the same in every run while the vault behind them is new.
    pub fn on_remote(url: String, store_opts: Vec<String>, mut env: Vec<(String, String)>, store: PathBuf) -> Self {
        let mut v = Self::bare();
        env.push(("PGCRYPTFS_CACHE_DIR".into(), v.dir.path().join("host-cache").to_string_lossy().into_owned()));
        (v.url, v.store_opts, v.env, v.store) = (url, store_opts, env, store);
        must(v.cmd("init").arg(&v.url).args(&v.store_opts).args(v.key_args()));
        v
    }

    fn create(s3: Option<(&s3::S3Server, &str)>, extra: &[&str]) -> Self {
        let mut v = Self::bare();
        if let Some((server, prefix)) = s3 {
            (v.url, v.store_opts) = server.store_args(prefix);
            v.store = server.objects(prefix);
            v.env = s3::S3Server::env();
        }
        must(v.cmd("init").arg(&v.url).args(&v.store_opts).args(v.key_args()).args(extra));
        v
    }

    /// A pgcryptfs command with this vault's environment. Its host pins (operator commands)
    /// live in this vault's own default cache root: store URLs repeat from run to run (the S3
    /// and cloud emulators' buckets), and a pin left by an earlier run would refuse the new vault.
    pub fn cmd(&self, sub: &str) -> Command {
        let mut c = Command::new(BIN);
        c.arg(sub).env("PGCRYPTFS_CACHE_DIR", self.dir.path().join("host-cache")).envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn key_args(&self) -> Vec<String> {
        self.unlock.clone()
    }

    /// `pgcryptfs mount` with the vault's key, cache and log, plus `extra`.
    pub fn mount_cmd(&self, extra: &[&str]) -> Command {
        self.mount_cmd_at(&self.mnt, &self.cache, &self.log, extra)
    }

    /// A mount of this vault as another mount (another host) would make it: its own mount
    /// point, cache directory and log.
    pub fn mount_cmd_at(&self, mnt: &Path, cache: &Path, log: &Path, extra: &[&str]) -> Command {
        let mut c = self.cmd("mount");
        c.arg(&self.url).arg(mnt).args(&self.store_opts).args(self.key_args());
        c.arg("--cache-dir").arg(cache).arg("--log-file").arg(log).args(extra);
        c
    }

    pub fn mount(&self, extra: &[&str]) -> Mounted<'_> {
        must(&mut self.mount_cmd(extra));
        assert!(is_mounted(&self.mnt), "mount returned but {} is not mounted", self.mnt.display());
        Mounted { v: self, done: false }
    }

    /// Drops the cache directory and mounts read-only: whatever is read then comes from the
    /// store alone, as on a new machine.
    pub fn mount_from_store_only(&self) -> Mounted<'_> {
        match std::fs::remove_dir_all(&self.cache) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing the cache {}: {e}", self.cache.display()),
        }
        self.mount(&["--read-only"])
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
}

/// A live mount; dropping it unmounts (drain via `pgcryptfs umount`, else forcibly).
pub struct Mounted<'a> {
    pub v: &'a Vault,
    done: bool,
}

impl Mounted<'_> {
    /// `pgcryptfs umount`, asserting success.
    pub fn umount(mut self) -> String {
        self.done = true;
        let o = must(Command::new(BIN).arg("umount").arg(&self.v.mnt));
        assert!(!is_mounted(&self.v.mnt));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The daemon's pid, from the control socket.
    pub fn pid(&self) -> u32 {
        let log = self.v.log_text();
        let line = log.lines().rev().find(|l| l.contains("mounted ")).expect("mount log line");
        let start = line.find("pgcryptfs[").unwrap() + "pgcryptfs[".len();
        let end = start + line[start..].find(']').unwrap();
        line[start..end].parse().unwrap()
    }

    /// Simulates a crash: SIGKILL the daemon, then detach the dead mount.
    pub fn kill9(mut self) {
        self.done = true;
        let pid = self.pid();
        // SAFETY: sending a signal to a child daemon we started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        wait_gone(pid);
        force_unmount(&self.v.mnt);
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let o = run(Command::new(BIN).arg("umount").arg(&self.v.mnt));
        if !o.status.success() {
            eprintln!("teardown: pgcryptfs umount failed: {}", stderr(&o));
            force_unmount(&self.v.mnt);
        }
    }
}

pub fn force_unmount(mnt: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_mounted(mnt) && Instant::now() < deadline {
        let _ = Command::new("umount").arg("-l").arg(mnt).output();
        let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(mnt).output();
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    // SAFETY: signal 0 only probes for existence.
    while unsafe { libc::kill(pid as i32, 0) } == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom").unwrap().read_exact(buf).unwrap();
}

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `pgcryptfs status` of the vault's mount (bounded: it must never hang).
pub fn status(v: &Vault) -> String {
    let o = run(Command::new("timeout").arg("10").arg(BIN).arg("status").arg(&v.mnt));
    assert!(o.status.success(), "status: {}", stderr(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// One numeric `name=value` field of a status line.
pub fn field(status: &str, name: &str) -> u64 {
    status
        .split_whitespace()
        .find_map(|f| f.strip_prefix(&format!("{name}="))?.parse().ok())
        .unwrap_or_else(|| panic!("no numeric field {name} in: {status}"))
}

/// Every file under `dir`, recursively (not following symlinks).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Asserts that no file under `dir` contains `needle` (plaintext content or names).
pub fn assert_absent(dir: &Path, needle: &[u8]) {
    for f in walk(dir) {
        let name = f.to_string_lossy();
        assert!(!name.as_bytes().windows(needle.len()).any(|w| w == needle), "{name} has the marker in its name");
        if std::fs::symlink_metadata(&f).unwrap().file_type().is_file() {
            let data = std::fs::read(&f).unwrap();
            assert!(!data.windows(needle.len()).any(|w| w == needle), "{name} contains plaintext marker");
        }
    }
}
