//! The control socket between `pgcryptfs umount|sync|status` and a running daemon: where the
//! socket lives and the line protocol spoken over it.
//!
//! The client sends one command line (`SYNC`, `STATUS`, `UMOUNT`). The daemon answers with
//! `PID <n>`, any number of `PROGRESS <staged-bytes> <packs-waiting>` lines, and one final
//! `OK <text>` or `ERR <text>` line.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config;
use crate::crypto;
use crate::format;

/// The socket that serves `mountpoint` (canonical path).
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    let h = crypto::hash32(mountpoint.as_os_str().as_encoded_bytes());
    config::runtime_dir().join(format!("{}.sock", format::hex(&h[..12])))
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The uid of the process at the other end of a Unix socket (SO_PEERCRED).
pub fn peer_uid(stream: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: valid fd; cred and len are valid out-pointers of the right size.
    let rc = unsafe {
        libc::getsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut cred).cast(), &mut len)
    };
    (rc == 0).then_some(cred.uid)
}

/// Who may talk to a daemon, and which daemon a client trusts: the same user, or root.
fn trusted_uid(uid: u32) -> bool {
    uid == 0 || uid == euid()
}

/// Checks the socket directory: a real directory (not a link), owned by this user, writable by
/// nobody else. Otherwise someone else could remove the daemon's socket or plant their own (the
/// fallback `/tmp/pgcryptfs-<uid>` may have been made by anyone).
fn check_dir(dir: &Path) -> Result<(), String> {
    let m = std::fs::symlink_metadata(dir).map_err(|e| format!("control socket directory {}: {e}", dir.display()))?;
    if !m.file_type().is_dir() {
        return Err(format!("control socket directory {} is a symbolic link or not a directory: refused", dir.display()));
    }
    if m.uid() != euid() {
        return Err(format!(
            "control socket directory {} is owned by uid {}, not by uid {}: refused (remove it, or set PGCRYPTFS_RUNTIME_DIR)",
            dir.display(),
            m.uid(),
            euid()
        ));
    }
    if m.mode() & 0o022 != 0 {
        return Err(format!(
            "control socket directory {} is writable by group or others (mode {:04o}): refused; run chmod 700 {}",
            dir.display(),
            m.mode() & 0o7777,
            dir.display()
        ));
    }
    Ok(())
}

/// Binds the daemon's control socket for `mountpoint`: its directory is made (0700) or checked,
/// a socket another daemon still answers on is refused, and the socket is 0600.
pub fn bind(mountpoint: &Path) -> Result<UnixListener, String> {
    let path = socket_path(mountpoint);
    let dir = path.parent().expect("socket has a directory");
    if std::fs::symlink_metadata(dir).is_err() {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    }
    check_dir(dir)?;
    if UnixStream::connect(&path).is_ok() {
        return Err(format!("another pgcryptfs daemon already serves {}", mountpoint.display()));
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| format!("cannot bind control socket {}: {e}", path.display()))?;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    Ok(listener)
}

/// What the client saw.
#[derive(Debug)]
pub struct Reply {
    pub pid: Option<u32>,
    pub ok: bool,
    pub text: String,
}

/// Sends `command` to the daemon serving `mountpoint`; `progress(staged, packs)` is called for
/// each progress line.
pub fn request(mountpoint: &Path, command: &str, mut progress: impl FnMut(u64, u64)) -> Result<Reply, String> {
    let path = socket_path(mountpoint);
    let dir = path.parent().expect("socket has a directory");
    if std::fs::symlink_metadata(dir).is_ok() {
        check_dir(dir)?;
    }
    let stream = UnixStream::connect(&path).map_err(|e| {
        format!("no pgcryptfs daemon is serving {} (control socket {}: {e})", mountpoint.display(), path.display())
    })?;
    match peer_uid(&stream) {
        Some(uid) if trusted_uid(uid) => {}
        uid => {
            return Err(format!(
                "the control socket {} is served by uid {}, not by this user or root: refused",
                path.display(),
                uid.map_or("?".into(), |u| u.to_string())
            ));
        }
    }
    let mut w = stream.try_clone().map_err(|e| e.to_string())?;
    writeln!(w, "{command}").map_err(|e| format!("control socket: {e}"))?;
    let mut pid = None;
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(|e| format!("control socket: {e}"))?;
        let (word, rest) = line.split_once(' ').unwrap_or((&line, ""));
        match word {
            "PID" => pid = rest.parse().ok(),
            "PROGRESS" => {
                let mut it = rest.split(' ').filter_map(|x| x.parse().ok());
                progress(it.next().unwrap_or(0), it.next().unwrap_or(0));
            }
            // Why the daemon is still waiting (a store that refuses, a mount held elsewhere).
            "WAIT" => eprintln!("pgcryptfs: still waiting: {rest}"),
            "OK" => return Ok(Reply { pid, ok: true, text: rest.to_string() }),
            "ERR" => return Ok(Reply { pid, ok: false, text: rest.to_string() }),
            _ => {}
        }
    }
    Err("the daemon closed the control connection without an answer".into())
}

/// True while `pid` runs; a zombie (exited, not yet reaped by its parent) counts as gone.
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself hold spaces.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()).is_some_and(|s| s != 'Z' && s != 'X'),
        Err(_) => false,
    }
}

/// Waits until process `pid` has exited (or the timeout passes); true if it exited.
pub fn wait_for_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if !running(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A connected client, from the daemon's side.
pub struct Session {
    stream: UnixStream,
}

impl Session {
    /// Reads the command line of a new connection. A peer that is neither the daemon's user
    /// nor root is answered `ERR` and dropped (whatever the socket file's mode allows).
    pub fn accept(mut stream: UnixStream) -> Option<(Self, String)> {
        match peer_uid(&stream) {
            Some(uid) if trusted_uid(uid) => {}
            uid => {
                log::warn!("control socket: refused a connection from uid {}", uid.map_or("?".into(), |u| u.to_string()));
                let _ = writeln!(stream, "ERR permission denied: only uid {} or root may control this mount", euid());
                return None;
            }
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut line = String::new();
        // One short command word: a peer cannot make the daemon buffer an endless line.
        std::io::Read::take(BufReader::new(stream.try_clone().ok()?), 256).read_line(&mut line).ok()?;
        let mut s = Session { stream };
        s.send(&format!("PID {}", std::process::id()));
        Some((s, line.trim().to_string()))
    }

    pub fn send(&mut self, line: &str) {
        let _ = writeln!(self.stream, "{line}");
    }

    pub fn progress(&mut self, staged: u64, packs: usize) {
        self.send(&format!("PROGRESS {staged} {packs}"));
    }

    pub fn finish(mut self, result: Result<String, String>) {
        match result {
            Ok(t) => self.send(&format!("OK {t}")),
            Err(e) => self.send(&format!("ERR {}", e.replace('\n', " "))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_directory_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let ok = d.path().join("ok");
        std::fs::create_dir(&ok).unwrap();
        check_dir(&ok).unwrap();
        std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_dir(&ok).unwrap_err().contains("writable by group or others"));
        let link = d.path().join("link");
        std::os::unix::fs::symlink(d.path(), &link).unwrap();
        assert!(check_dir(&link).unwrap_err().contains("symbolic link"));
        if euid() == 0 {
            let theirs = d.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
            assert!(check_dir(&theirs).unwrap_err().contains("owned by uid 65534"));
        }
    }
}
