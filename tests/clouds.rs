//! Azure Blob Storage and Google Cloud Storage end to end, against protocol servers the tests
//! start on 127.0.0.1: Azurite (tests/common/azure.rs) and fake-gcs-server
//! (tests/common/gcs.rs), both installed by `scripts/install-deps.sh --test`. For each: the
//! store contract, the writer lease (a second writer refused, a reader alongside), and a
//! pg_basebackup round trip read back from a read-only mount with an empty cache. Credentials
//! reach pgcryptfs as their users give them (environment, connection string, service-account
//! JSON), never in argv.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::azure::Azurite;
use common::gcs::GcsServer;
use common::pg::backup_verify_restore;
use common::*;
use serial_test::serial;

/// A root-only `KEY=VALUE` credentials file, as the docs recommend.
fn credentials_file(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn conformance(url: &str, credentials: &Path) {
    let opts = [("credentials_file".to_string(), credentials.to_string_lossy().into_owned())];
    let store = pgcryptfs::store::open_store(url, &opts).unwrap_or_else(|e| panic!("opening {url}: {e}"));
    if let Err(e) = pgcryptfs::store::conformance::run(store.as_ref()) {
        panic!("{url}: {e}");
    }
}

/// The store contract on Azurite, credentials from one `AZURE_STORAGE_CONNECTION_STRING`
/// (account, key and blob endpoint) in a credentials file.
#[test]
fn store_conformance_on_azurite() {
    let az = Azurite::start();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let creds = credentials_file(dir.path(), "azure.env", &[format!("AZURE_STORAGE_CONNECTION_STRING={}", az.connection_string())]);
    conformance("az://backups/conformance", &creds);
}

/// The store contract on fake-gcs-server, with a service-account JSON (no OAuth, the endpoint
/// as `gcs_base_url`) named in a credentials file.
#[test]
fn store_conformance_on_fake_gcs_server() {
    let gcs = GcsServer::start();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let sa = gcs.service_account(dir.path(), true);
    let creds = credentials_file(dir.path(), "gcs.env", &[format!("GOOGLE_SERVICE_ACCOUNT={}", sa.display())]);
    conformance("gs://backups/conformance", &creds);
}

/// A store that does not refuse a second conditional create (here: a front that drops
/// `x-goog-if-generation-match`, as a proxy unaware of it would) gets no vault: `init` fails
/// naming the store, and leaves nothing behind.
#[test]
fn a_store_that_ignores_conditional_creates_is_refused() {
    let gcs = GcsServer::start_dropping_preconditions();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let sa = gcs.service_account(dir.path(), false);
    let key = dir.path().join("key");
    fs::write(&key, "ab".repeat(32)).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let (url, opts) = gcs.store_args("unsafe");
    let o = run(Command::new(BIN)
        .arg("init")
        .arg(&url)
        .args(&opts)
        .arg("--key-file")
        .arg(&key)
        .args(["--key-transform", "hex"])
        .env("GOOGLE_SERVICE_ACCOUNT", &sa)
        .env("PGCRYPTFS_CACHE_DIR", dir.path().join("host-cache")));
    assert!(!o.status.success(), "init must be refused on a store without conditional creates");
    let err = stderr(&o);
    eprintln!("init on a store that ignores conditional creates: {}", err.trim());
    assert!(err.contains("gs://backups/unsafe") && err.contains("does not honour conditional creates"), "{err}");
    let creds = credentials_file(dir.path(), "gcs.env", &[format!("GOOGLE_SERVICE_ACCOUNT={}", sa.display())]);
    let o = [
        ("credentials_file".to_string(), creds.to_string_lossy().into_owned()),
        ("endpoint".to_string(), gcs.endpoint()),
    ];
    let store = pgcryptfs::store::open_store(&url, &o).unwrap();
    assert!(store.is_empty().unwrap(), "the refused init left objects: {:?}", store.list(""));
    // The same store ignores `x-goog-if-generation-match` on replaces too: a lease renewal
    // (a replace conditional on the version read) is refused naming the store, not sent blind.
    store.put("lock", b"one").unwrap();
    let (_, version) = store.get_versioned("lock", 16).unwrap();
    let e = store.put_replacing("lock", b"two", &version).unwrap_err();
    eprintln!("a conditional replace on that store: {e}");
    assert!(e.is_permanent() && e.to_string().contains("does not honour conditional replaces"), "{e}");
    store.delete("lock").unwrap();
}

/// One writer per vault on this store: a second writable mount (another cache) is refused
/// naming the holder; a read-only mount alongside sees what the writer synced; once the
/// writer unmounts, the other cache may write.
fn one_writer(v: &Vault) {
    let (mnt2, mnt3) = (v.dir.path().join("mnt2"), v.dir.path().join("mnt3"));
    fs::create_dir(&mnt2).unwrap();
    fs::create_dir(&mnt3).unwrap();
    let other = |mnt: &Path, extra: &[&str]| run(&mut v.mount_cmd_at(mnt, &v.dir.path().join("cache2"), &v.dir.path().join("log2"), extra));
    let m = v.mount(&[]);
    let mut f = fs::File::create(v.path("f")).unwrap();
    f.write_all(b"written by the first writer").unwrap();
    f.sync_all().unwrap();
    drop(f);
    let o = other(&mnt2, &[]);
    assert!(!o.status.success(), "a second writable mount must be refused");
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(stderr(&o).contains("in use by a writable mount on") && stderr(&o).contains(host.trim()), "{}", stderr(&o));
    assert!(!is_mounted(&mnt2));
    must(Command::new("timeout").arg("60").arg(BIN).arg("sync").arg(&v.mnt));
    let o = other(&mnt3, &["--read-only"]);
    assert!(o.status.success(), "read-only mount alongside the writer: {}", stderr(&o));
    let seen = fs::read(mnt3.join("f"));
    must(Command::new(BIN).arg("umount").arg(&mnt3));
    assert_eq!(seen.unwrap(), b"written by the first writer", "the reader sees what the writer synced");
    m.umount();
    let o = other(&mnt2, &[]);
    assert!(o.status.success(), "after the writer's umount another cache may write: {}", stderr(&o));
    must(Command::new(BIN).arg("umount").arg(&mnt2));
}

#[test]
#[serial]
fn one_writer_on_azurite() {
    let az = Azurite::start();
    one_writer(&Vault::on_azure(&az, "lease"));
}

#[test]
#[serial]
fn one_writer_on_fake_gcs_server() {
    let gcs = GcsServer::start();
    one_writer(&Vault::on_gcs(&gcs, "lease"));
}

/// pg_basebackup (-Fp and -Ft) into a writable mount, `pgcryptfs umount`, pg_verifybackup from
/// a read-only mount with an empty cache, and a restored copy that starts.
#[test]
#[serial]
fn pg_basebackup_on_azurite() {
    let az = Azurite::start();
    let v = Vault::on_azure(&az, "cluster-a");
    let t = std::time::Instant::now();
    backup_verify_restore(&v);
    eprintln!("Azurite round trip: {:?}", t.elapsed());
    let o = must(v.cmd("verify").arg(&v.url).args(&v.store_opts).args(v.key_args()));
    assert!(String::from_utf8_lossy(&o.stdout).contains(": all authentic"), "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
#[serial]
fn pg_basebackup_on_fake_gcs_server() {
    let gcs = GcsServer::start();
    let v = Vault::on_gcs(&gcs, "cluster-a");
    let t = std::time::Instant::now();
    backup_verify_restore(&v);
    eprintln!("fake-gcs-server round trip: {:?}", t.elapsed());
    let o = must(v.cmd("verify").arg(&v.url).args(&v.store_opts).args(v.key_args()));
    assert!(String::from_utf8_lossy(&o.stdout).contains(": all authentic"), "{}", String::from_utf8_lossy(&o.stdout));
}
