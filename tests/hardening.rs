//! Hardening of what the root daemon and the operator commands touch (issue 11): the cache
//! directory's owner and mode, a daemon without core dumps and with a private log, the control
//! socket's peer check, a key command's environment, export's setid bits and long names, and gc
//! refusing to copy a damaged pack. The real binary, a real FUSE mount, a local store.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use serial_test::serial;

/// `mount` of the vault with `cache` as its cache directory.
fn mount_with_cache(v: &Vault, cache: &Path) -> std::process::Output {
    let mut c = v.cmd("mount");
    c.arg(&v.url).arg(&v.mnt).args(&v.store_opts).args(v.key_args());
    run(c.arg("--cache-dir").arg(cache).arg("--log-file").arg(&v.log))
}

fn mode(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

#[test]
#[serial]
fn a_cache_directory_others_can_write_or_own_is_refused() {
    let v = Vault::new();
    let open = v.dir.path().join("open-cache");
    fs::create_dir(&open).unwrap();
    mode(&open, 0o777);
    let o = mount_with_cache(&v, &open);
    let e = stderr(&o);
    assert!(!o.status.success() && !is_mounted(&v.mnt), "mode 0777 mounted: {e}");
    assert!(e.contains(&open.display().to_string()) && e.contains("0777") && e.contains("chmod 700"), "{e}");
    let theirs = v.dir.path().join("their-cache");
    fs::create_dir(&theirs).unwrap();
    mode(&theirs, 0o700);
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let o = mount_with_cache(&v, &theirs);
    assert!(!o.status.success() && stderr(&o).contains("owned by uid 65534"), "{}", stderr(&o));
    assert_eq!(fs::read_dir(&theirs).unwrap().count(), 0, "nothing was made in another user's directory");
    // The default layout works, and a missing cache root is made 0700.
    let m = v.mount(&[]);
    assert_eq!(fs::metadata(&v.cache).unwrap().mode() & 0o7777, 0o700);
    m.umount();
}

#[test]
#[serial]
fn the_daemon_writes_no_core_and_keeps_its_log_private() {
    let v = Vault::new();
    // Started with core dumps allowed (soft and hard limit unlimited): the daemon turns them off.
    let mut c = v.mount_cmd(&[]);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut c, || {
            let inf = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
            libc::setrlimit(libc::RLIMIT_CORE, &inf);
            Ok(())
        });
    }
    must(&mut c);
    let log = v.log_text();
    let line = log.lines().rev().find(|l| l.contains("mounted ")).expect("mount log line");
    let start = line.find("pgcryptfs[").unwrap() + "pgcryptfs[".len();
    let pid: u32 = line[start..start + line[start..].find(']').unwrap()].parse().unwrap();
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], &["0", "0"], "{core}");
    assert_eq!(fs::metadata(&v.log).unwrap().mode() & 0o777, 0o600, "log mode");
    must(std::process::Command::new(BIN).arg("umount").arg(&v.mnt));
}

/// Connects to `socket` as uid 65534 (a forked child: only raw system calls after the fork),
/// sends STATUS and returns the first bytes of the answer.
fn talk_as_nobody(socket: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(socket.as_os_str().as_bytes()) {
        *d = *s as libc::c_char;
    }
    let mut fds = [0; 2];
    // SAFETY: pipe into a valid array; fork's child only makes raw system calls and _exits.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        match libc::fork() {
            0 => {
                libc::close(fds[0]);
                if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                    libc::_exit(2);
                }
                let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
                if libc::connect(s, (&raw const addr).cast(), len) != 0 {
                    libc::write(fds[1], b"CONNECT-FAILED".as_ptr().cast(), 14);
                    libc::_exit(3);
                }
                libc::write(s, b"STATUS\n".as_ptr().cast(), 7);
                let mut buf = [0u8; 512];
                loop {
                    let n = libc::read(s, buf.as_mut_ptr().cast(), buf.len());
                    if n <= 0 {
                        break;
                    }
                    libc::write(fds[1], buf.as_ptr().cast(), n as usize);
                }
                libc::_exit(0);
            }
            -1 => panic!("fork failed"),
            child => {
                libc::close(fds[1]);
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut fs::File::from_raw_fd_owned(fds[0]), &mut out).unwrap();
                let mut status = 0;
                libc::waitpid(child, &mut status, 0);
                String::from_utf8_lossy(&out).into_owned()
            }
        }
    }
}

trait FromRawFdOwned {
    fn from_raw_fd_owned(fd: i32) -> fs::File;
}

impl FromRawFdOwned for fs::File {
    fn from_raw_fd_owned(fd: i32) -> fs::File {
        // SAFETY: the caller hands over an fd it owns.
        unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
    }
}

#[test]
#[serial]
fn the_control_socket_answers_only_its_user_and_root() {
    let v = Vault::new();
    let m = v.mount(&[]);
    let socket = pgcryptfs::control::socket_path(&fs::canonicalize(&v.mnt).unwrap());
    assert_eq!(fs::metadata(&socket).unwrap().mode() & 0o777, 0o600, "socket mode");
    // Even with the socket file opened up to everyone, the daemon checks its peer.
    mode(&socket, 0o666);
    let dir = socket.parent().unwrap();
    let dir_mode = fs::metadata(dir).unwrap().mode();
    mode(dir, 0o711);
    let answer = talk_as_nobody(&socket);
    mode(dir, dir_mode & 0o7777);
    assert!(answer.contains("ERR permission denied"), "a uid-65534 peer got: {answer:?}");
    assert!(!answer.contains("OK "), "{answer:?}");
    // Root still gets its answer.
    assert!(!status(&v).is_empty(), "root gets its status");
    m.umount();
}

#[test]
#[serial]
fn a_key_command_does_not_see_the_store_credentials() {
    let keys = tempfile::tempdir_in("/var/tmp").unwrap();
    let key = keys.path().join("key");
    fs::write(&key, "5".repeat(64)).unwrap();
    let seen = keys.path().join("env");
    let cmd = format!("env > {}; cat {}", seen.display(), key.display());
    let args: Vec<String> = ["--key-command".into(), cmd, "--key-transform".into(), "hex".into()].to_vec();
    let v = Vault::with_key(&args, &args);
    let mut c = v.mount_cmd(&[]);
    c.env("AWS_SECRET_ACCESS_KEY", "aws-secret").env("AZURE_STORAGE_ACCOUNT_KEY", "azure-secret");
    c.env("GOOGLE_APPLICATION_CREDENTIALS", "/gcs.json").env("PGCRYPTFS_OTHER_SECRET", "other-secret");
    must(&mut c);
    let env = fs::read_to_string(&seen).unwrap();
    force_unmount_cleanly(&v);
    for bad in ["AWS_", "AZURE_", "GOOGLE_", "secret", "/gcs.json"] {
        assert!(!env.contains(bad), "the key command saw {bad}: {env}");
    }
    assert!(env.contains("PATH="), "{env}");
}

fn force_unmount_cleanly(v: &Vault) {
    must(std::process::Command::new(BIN).arg("umount").arg(&v.mnt));
}

#[test]
#[serial]
fn export_clears_setid_bits_and_takes_255_byte_names() {
    let v = Vault::new();
    let long = "n".repeat(255);
    {
        let m = v.mount(&[]);
        fs::write(v.path("suid"), b"#!/bin/sh\n").unwrap();
        mode(&v.path("suid"), 0o4755);
        fs::write(v.path("sgid"), b"x").unwrap();
        mode(&v.path("sgid"), 0o2750);
        fs::write(v.path(&long), b"long name").unwrap();
        m.umount();
    }
    let export = |dest: &Path, extra: &[&str]| {
        let mut c = v.cmd("export");
        c.arg(&v.url).arg(dest).args(v.key_args()).args(extra);
        run(&mut c)
    };
    let dest = v.dir.path().join("export");
    let o = export(&dest, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::metadata(dest.join("suid")).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(fs::metadata(dest.join("sgid")).unwrap().mode() & 0o7777, 0o750);
    assert_eq!(fs::read(dest.join(&long)).unwrap(), b"long name");
    let kept = v.dir.path().join("export-kept");
    let o = export(&kept, &["--keep-setid"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::metadata(kept.join("suid")).unwrap().mode() & 0o7777, 0o4755);
    assert_eq!(fs::metadata(kept.join("sgid")).unwrap().mode() & 0o7777, 0o2750);
}

#[test]
#[serial]
fn gc_never_copies_a_chunk_that_does_not_authenticate() {
    let v = Vault::new();
    {
        let m = v.mount(&[]);
        // One pack: a live file first, then one that is deleted (the pack is half dead).
        fs::write(v.path("live"), pattern(1, 100_000)).unwrap();
        fs::write(v.path("dead"), pattern(2, 100_000)).unwrap();
        fs::remove_file(v.path("dead")).unwrap();
        m.umount();
    }
    let packs = walk(&v.store.join("packs"));
    assert_eq!(packs.len(), 1, "{packs:?}");
    // Flip a byte inside the live file's first chunk body (its tag, at the chunk's end, intact).
    let mut bytes = fs::read(&packs[0]).unwrap();
    bytes[100] ^= 1;
    fs::write(&packs[0], &bytes).unwrap();
    let cache = v.dir.path().join("gc-cache");
    let mut c = v.cmd("gc");
    c.arg(&v.url).args(v.key_args()).arg("--cache-dir").arg(&cache).args(["--rewrite-dead-percent", "10"]);
    let o = run(&mut c);
    let e = stderr(&o);
    assert!(!o.status.success(), "gc succeeded over a damaged pack: {e}");
    assert!(e.contains("do not authenticate") && e.contains("left as they are"), "{e}");
    assert_eq!(fs::read(&packs[0]).unwrap(), bytes, "the damaged original is kept as it was");
    assert_eq!(walk(&v.store.join("packs")).len(), 1, "no copy of the damaged pack was stored");
}
