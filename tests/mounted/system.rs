//! pgcryptfs as a native file system: the real mount(8) and umount(8) (util-linux) with the
//! helpers installed as /sbin/mount.pgcryptfs and /sbin/umount.fuse.pgcryptfs, a temporary
//! fstab, and the systemd notification protocol with a socket the test provides.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serial_test::serial;

use crate::common::*;

/// The helpers, installed by `mount-helpers/install.sh` into a temporary prefix with their
/// links in /sbin for the test's duration (files already there are moved aside and put back).
struct Helpers {
    prefix: tempfile::TempDir,
    saved: Vec<(PathBuf, PathBuf)>,
}

const INSTALL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/mount-helpers/install.sh");
const LINKS: [&str; 3] = ["mount.pgcryptfs", "mount.fuse.pgcryptfs", "umount.fuse.pgcryptfs"];

impl Helpers {
    fn install() -> Self {
        let mut saved = Vec::new();
        for name in LINKS {
            let link = Path::new("/sbin").join(name);
            if link.symlink_metadata().is_ok() {
                let aside = link.with_extension("pgcfs-test-saved");
                fs::rename(&link, &aside).unwrap();
                saved.push((link, aside));
            }
        }
        let prefix = tempfile::Builder::new().prefix("pgcfs-prefix").tempdir_in("/var/tmp").unwrap();
        let h = Helpers { prefix, saved };
        must(Command::new(INSTALL).arg("--prefix").arg(h.prefix.path()).args(["--binary", BIN]));
        for name in LINKS {
            let target = fs::read_link(Path::new("/sbin").join(name)).unwrap();
            assert_eq!(target, h.prefix.path().join("bin/pgcryptfs"), "{name}");
        }
        assert!(h.prefix.path().join("share/pgcryptfs/systemd/pgcryptfs@.service").exists());
        h
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        let o = run(Command::new(INSTALL).arg("--prefix").arg(self.prefix.path()).arg("--uninstall"));
        if !o.status.success() {
            eprintln!("install.sh --uninstall: {}", stderr(&o));
        }
        for name in LINKS {
            assert!(Path::new("/sbin").join(name).symlink_metadata().is_err() || std::thread::panicking(), "{name} left behind");
        }
        for (link, aside) in &self.saved {
            let _ = fs::rename(aside, link);
        }
    }
}

/// Unmounts what mount(8) mounted, even if the test failed half-way.
struct Unmount(Vec<PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        for m in &self.0 {
            if is_mounted(m) {
                let _ = run(Command::new("timeout").arg("60").arg(BIN).arg("umount").arg(m));
                force_unmount(m);
            }
        }
    }
}

fn findmnt(mnt: &Path) -> String {
    let o = must(Command::new("findmnt").args(["-n", "-o", "SOURCE,FSTYPE,OPTIONS"]).arg(mnt));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn mount8(args: &[&str]) -> std::process::Output {
    run(Command::new("timeout").arg("60").arg("mount").args(args))
}

/// fstab entries, `mount DIR`, `mount -a`, `umount DIR` (which drains), failing mounts with
/// their exit status and one-line reason, and option errors.
#[test]
#[serial]
fn mount8_fstab_and_umount8() {
    let _helpers = Helpers::install();
    let v = Vault::new();
    let mnt2 = v.dir.path().join("mnt2");
    fs::create_dir(&mnt2).unwrap();
    let _cleanup = Unmount(vec![v.mnt.clone(), mnt2.clone()]);
    let bad_key = v.dir.path().join("bad-key");
    fs::write(&bad_key, "cd".repeat(32)).unwrap();
    // 0600, as key files should be (a readable one adds a `chmod 600` warning line).
    for k in [&bad_key, &v.key] {
        fs::set_permissions(k, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    let opts = |key: &Path, cache: &str| {
        format!(
            "key_file={},key_transform=hex,cache_dir={},log_file={}",
            key.display(),
            v.dir.path().join(cache).display(),
            v.log.display()
        )
    };
    let fstab = v.dir.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "# test fstab\n{store} {mnt} pgcryptfs {o},_netdev,nofail,x-systemd.requires=network-online.target 0 0\n\
             {store} {mnt2} pgcryptfs {bad},noauto 0 0\n",
            store = v.store.display(),
            mnt = v.mnt.display(),
            mnt2 = mnt2.display(),
            o = opts(&v.key, "cache"),
            bad = opts(&bad_key, "cache2"),
        ),
    )
    .unwrap();
    let fstab = fstab.to_str().unwrap();

    // mount by mount point: serving when mount(8) returns; findmnt shows source and type.
    let o = mount8(&["-T", fstab, v.mnt.to_str().unwrap()]);
    assert!(o.status.success(), "mount: {}", stderr(&o));
    assert_eq!(findmnt(&v.mnt), format!("{} fuse.pgcryptfs rw,nosuid,nodev,relatime,user_id=0,group_id=0,default_permissions", v.store.display()));
    fs::write(v.path("via-fstab"), b"mounted by mount(8)").unwrap();
    // umount(8) runs umount.fuse.pgcryptfs: it drains to the store before it returns.
    let o = run(Command::new("timeout").arg("60").arg("umount").arg(&v.mnt));
    assert!(o.status.success(), "umount: {}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("everything is in the store"), "{o:?}");
    assert!(!is_mounted(&v.mnt));

    // mount -a mounts the auto entry and leaves the noauto one.
    let o = mount8(&["-a", "-T", fstab]);
    assert!(o.status.success(), "mount -a: {}", stderr(&o));
    assert!(is_mounted(&v.mnt) && !is_mounted(&mnt2));
    assert_eq!(fs::read(v.path("via-fstab")).unwrap(), b"mounted by mount(8)");

    // A second writable mount of the vault is refused: the lease names the holder.
    let o = mount8(&["-t", "pgcryptfs", "-o", &opts(&v.key, "cache3"), v.store.to_str().unwrap(), mnt2.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("in use by a writable mount"), "{}", stderr(&o));
    // A read-only mount alongside is fine, and says so in its options.
    let o = mount8(&["-t", "pgcryptfs", "-o", &format!("{},ro", opts(&v.key, "cache3")), v.store.to_str().unwrap(), mnt2.to_str().unwrap()]);
    assert!(o.status.success(), "ro mount: {}", stderr(&o));
    assert!(findmnt(&mnt2).contains(" ro,"), "{}", findmnt(&mnt2));
    assert!(run(Command::new("umount").arg(&mnt2)).status.success());
    assert!(run(Command::new("umount").arg(&v.mnt)).status.success());

    // Failures: non-zero status and one line that says why; nothing mounted.
    let o = mount8(&["-T", fstab, mnt2.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(32), "{err}");
    assert!(err.trim().lines().count() == 1 && err.contains("does not open any of the vault's 1 sodium slot"), "{err}");
    assert!(!is_mounted(&mnt2));
    let o = mount8(&["-t", "pgcryptfs", "-o", &format!("{},bogus=1", opts(&v.key, "cache")), v.store.to_str().unwrap(), mnt2.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("unknown option bogus"), "{}", stderr(&o));
    let missing = v.dir.path().join("no-such-vault");
    let o = mount8(&["-t", "pgcryptfs", "-o", &opts(&v.key, "cache"), missing.to_str().unwrap(), mnt2.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).trim().lines().count() == 1, "{}", stderr(&o));
    assert!(!is_mounted(&mnt2));
}

/// `pgcryptfs mount --foreground` under a service manager: READY=1 once serving, STATUS=
/// with the backlog, STOPPING=1 after SIGTERM while it drains, exit 0 with everything stored.
#[test]
#[serial]
fn systemd_notify_protocol() {
    let v = Vault::new();
    let sock_path = v.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut child = v.mount_cmd(&["--foreground", "--commit-interval", "600"]).env("NOTIFY_SOCKET", &sock_path).spawn().unwrap();
    let _cleanup = Unmount(vec![v.mnt.clone()]);
    let recv = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification within 30 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = recv();
    assert!(ready.starts_with("READY=1\nSTATUS=serving "), "{ready}");
    assert!(is_mounted(&v.mnt), "READY=1 only once serving");
    let src = v.dir.path().join("src");
    fs::write(&src, pattern(3, 3 << 20)).unwrap();
    must(Command::new("timeout").arg("60").arg("cp").arg(&src).arg(v.path("file")));
    let status = recv();
    assert!(status.starts_with("STATUS=serving ") && status.contains("bytes in"), "{status}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the daemon did not exit after SIGTERM");
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 512];
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    while let Ok(n) = sock.recv(&mut [0u8; 512]) {
        let _ = n;
    }
    assert!(code.success(), "exit status after the drain: {code}");
    assert!(seen.iter().any(|m| m.starts_with("STOPPING=1\nSTATUS=draining ")), "{seen:?}");
    let _m = v.mount_from_store_only();
    assert!(fs::read(v.path("file")).unwrap() == fs::read(&src).unwrap());
}

/// Without `--binary`, install.sh takes the binary from wherever cargo says its target
/// directory is (here a `cargo` on PATH that reports another directory, as CARGO_TARGET_DIR
/// or a cargo config's build.target-dir would), not from `./target`.
#[test]
fn install_finds_the_binary_in_cargos_target_directory() {
    let t = tempfile::Builder::new().prefix("pgcfs-install").tempdir_in("/var/tmp").unwrap();
    let target = t.path().join("elsewhere");
    fs::create_dir_all(target.join("release")).unwrap();
    fs::copy(BIN, target.join("release/pgcryptfs")).unwrap();
    let fake = t.path().join("fakebin");
    fs::create_dir(&fake).unwrap();
    let log = t.path().join("cargo.log");
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> {log}\ncase $1 in\n  build) exit 0 ;;\n  metadata) printf '{{\"packages\":[],\"target_directory\":\"%s\",\"version\":1}}\\n' {target} ;;\n  *) exit 3 ;;\nesac\n",
        log = log.display(),
        target = target.display()
    );
    fs::write(fake.join("cargo"), script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(fake.join("cargo"), fs::Permissions::from_mode(0o755)).unwrap();
    let (prefix, sbin) = (t.path().join("prefix"), t.path().join("sbin"));
    fs::create_dir(&sbin).unwrap();
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap());
    must(Command::new(INSTALL).arg("--prefix").arg(&prefix).env("PATH", path).env("SBIN", &sbin));
    let calls = fs::read_to_string(&log).unwrap();
    assert!(calls.lines().any(|l| l.starts_with("build --release")), "{calls}");
    assert!(calls.lines().any(|l| l.starts_with("metadata")), "{calls}");
    assert_eq!(fs::read(prefix.join("bin/pgcryptfs")).unwrap(), fs::read(BIN).unwrap());
    for name in LINKS {
        assert_eq!(fs::read_link(sbin.join(name)).unwrap(), prefix.join("bin/pgcryptfs"), "{name}");
    }
}
