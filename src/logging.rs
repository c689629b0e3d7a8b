//! Where a mount's log lines go: stderr in the foreground; when daemonized, a log file or
//! syslog/journald (`/dev/log`). Every line names the mount point; levels come from
//! `--log-level`, else `RUST_LOG`, else `info`.

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use crate::format;

/// The destination of a mount's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stderr,
    File(PathBuf),
    Syslog,
}

/// One datagram per record to the local syslog socket (journald listens there too).
struct Syslog(UnixDatagram);

/// Where syslog listens.
const DEV_LOG: &str = "/dev/log";

impl Write for Syslog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let line = buf.strip_suffix(b"\n").unwrap_or(buf);
        // After a restart of journald or rsyslog the old socket is dead: connect again once.
        if self.0.send(line).is_err()
            && let Ok(s) = UnixDatagram::unbound().and_then(|s| s.connect(DEV_LOG).map(|_| s))
        {
            self.0 = s;
            // A lost log line must not fail the file system; syslog drops under pressure too.
            let _ = self.0.send(line);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// syslog severity (RFC 5424) of a log level, with facility `daemon` (3).
fn priority(level: log::Level) -> u8 {
    let severity = match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    };
    3 * 8 + severity
}

/// Installs the logger for the mount at `mountpoint` and a panic hook that logs.
pub fn init(target: &LogTarget, level: Option<&str>, mountpoint: &str) -> Result<(), String> {
    let mp = mountpoint.to_string();
    let mut b = env_logger::Builder::new();
    let filters = match level {
        Some(l) => format!("{l},fuser=error"),
        None => std::env::var("RUST_LOG").unwrap_or_else(|_| "info,fuser=error".into()),
    };
    b.parse_filters(&filters);
    match target {
        LogTarget::Syslog => {
            let sock = UnixDatagram::unbound().and_then(|s| s.connect(DEV_LOG).map(|_| s));
            let sock = sock.map_err(|e| format!("cannot log to syslog (/dev/log): {e}"))?;
            b.format(move |buf, rec| {
                writeln!(buf, "<{}>pgcryptfs[{}]: {}: {}", priority(rec.level()), std::process::id(), mp, rec.args())
            });
            b.target(env_logger::Target::Pipe(Box::new(Syslog(sock))));
        }
        LogTarget::Stderr | LogTarget::File(_) => {
            b.format(move |buf, rec| {
                let ts = format::Time::now();
                writeln!(buf, "{}.{:03} {} pgcryptfs[{}] {}: {}", ts.secs, ts.nanos / 1_000_000, rec.level(), std::process::id(), mp, rec.args())
            });
            if let LogTarget::File(path) = target {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                let f = open_log_file(path)?;
                b.target(env_logger::Target::Pipe(Box::new(f)));
            }
        }
    }
    let _ = b.try_init();
    // A daemon's stderr is /dev/null: panics must reach the log.
    std::panic::set_hook(Box::new(|info| {
        log::error!("panic in thread {:?}: {info}", std::thread::current().name().unwrap_or("?"));
    }));
    Ok(())
}

/// Opens the daemon's log for appending. Log lines name files, so the log is private: made
/// 0600, an existing one tightened to 0600; a symbolic link or anything but a regular file
/// there is refused (the daemon runs as root and must not append to whatever a link names).
pub fn open_log_file(path: &std::path::Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => format!("log file {} is a symbolic link: refused", path.display()),
            _ => format!("cannot open log file {}: {e}", path.display()),
        })?;
    let m = f.metadata().map_err(|e| format!("log file {}: {e}", path.display()))?;
    if !m.is_file() {
        return Err(format!("log file {} is not a regular file: refused", path.display()));
    }
    if m.mode() & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot make log file {} private (chmod 600): {e}", path.display()))?;
    }
    Ok(f)
}

/// Logging for the commands that are not a mount: warnings, errors and audit lines to stderr
/// (`RUST_LOG` changes it), as `pgcryptfs: LEVEL: message`.
pub fn init_cli() {
    let mut b = env_logger::Builder::new();
    // Key custody commands print their audit lines (SECURITY.md §5).
    b.parse_filters(&std::env::var("RUST_LOG").unwrap_or_else(|_| format!("warn,{}=info", crate::audit::TARGET)));
    b.format(|buf, rec| writeln!(buf, "pgcryptfs: {}: {}", rec.level().as_str().to_ascii_lowercase(), rec.args()));
    let _ = b.try_init();
}

/// Checks a `--log-level` value.
pub fn parse_level(s: &str) -> Result<String, String> {
    let l = s.to_ascii_lowercase();
    match l.as_str() {
        "error" | "warn" | "info" | "debug" | "trace" | "off" => Ok(l),
        _ => Err(format!("invalid log level {s:?} (error, warn, info, debug, trace or off)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_priorities() {
        assert_eq!(parse_level("DEBUG"), Ok("debug".into()));
        assert!(parse_level("loud").unwrap_err().contains("invalid log level"));
        assert_eq!(priority(log::Level::Error), 27);
        assert_eq!(priority(log::Level::Info), 30);
    }

    #[test]
    fn syslog_lines_are_one_datagram_each() {
        let d = tempfile::tempdir().unwrap();
        let server = UnixDatagram::bind(d.path().join("log")).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        client.connect(d.path().join("log")).unwrap();
        let mut w = Syslog(client);
        w.write_all(b"<30>pgcryptfs[1]: /mnt: hello\n").unwrap();
        let mut buf = [0u8; 128];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<30>pgcryptfs[1]: /mnt: hello");
    }

    #[test]
    fn the_log_file_is_private_and_never_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        open_log_file(&log).unwrap();
        assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
        open_log_file(&log).unwrap();
        assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"x").unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join("link")).unwrap();
        assert!(open_log_file(&d.path().join("link")).unwrap_err().contains("symbolic link"));
    }
}
