//! The control socket between `pgcryptfs umount|sync|status` and a running daemon: where the
//! socket lives and the line protocol spoken over it.
//!
//! The client sends one command line (`SYNC`, `STATUS`, `UMOUNT`). The daemon answers with
//! `PID <n>`, any number of `PROGRESS <staged-bytes> <packs-waiting>` lines, and one final
//! `OK <text>` or `ERR <text>` line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
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
    let stream = UnixStream::connect(&path).map_err(|e| {
        format!("no pgcryptfs daemon is serving {} (control socket {}: {e})", mountpoint.display(), path.display())
    })?;
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
    /// Reads the command line of a new connection.
    pub fn accept(stream: UnixStream) -> Option<(Self, String)> {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut line = String::new();
        BufReader::new(stream.try_clone().ok()?).read_line(&mut line).ok()?;
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
