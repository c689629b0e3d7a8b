//! Where secrets come from: key files, env vars, commands, passphrase files and the tty prompt,
//! and WAL-G's key transforms. Never from argv.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::KeyError;
use crate::crypto::{self, Secret32, SecretBytes};

/// Where the user's 32-byte key comes from. Never the key itself: argv is visible to every user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Env(String),
    Command(String),
}

/// WAL-G's `WALG_LIBSODIUM_KEY_TRANSFORM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KeyTransform {
    /// Exactly 64 hexadecimal characters.
    Hex,
    /// Base64 that decodes to exactly 32 bytes.
    Base64,
    /// Raw bytes, at least 25; truncated or zero-padded to 32.
    #[default]
    None,
}

/// Where a passphrase (or other variable-length secret) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
    /// Asked on the controlling terminal, without echo.
    Prompt,
}

/// Largest secret read from a file, a command or the terminal (an armored RSA-4096 secret key
/// is about 7 KiB).
const SECRET_MAX: usize = 1 << 20;

/// Reads a secret into one buffer allocated up front, so no reallocation leaves an unwiped
/// copy behind; stops at end of input (or after a newline, for a terminal).
fn read_secret(r: &mut impl std::io::Read, line: bool) -> std::io::Result<SecretBytes> {
    let mut buf = SecretBytes(vec![0u8; SECRET_MAX]);
    let mut n = 0;
    loop {
        if n == SECRET_MAX {
            return Err(std::io::Error::other(format!("longer than {SECRET_MAX} bytes")));
        }
        let k = match r.read(&mut buf.0[n..]) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        n += k;
        if k == 0 || (line && buf.0[..n].contains(&b'\n')) {
            break;
        }
    }
    buf.0.truncate(n); // keeps the capacity, which the drop wipes
    Ok(buf)
}

/// The only variables a key command inherits: enough to find programs and run them in the
/// user's locale. Never the store's credentials (AWS_*, AZURE_*, GOOGLE_*, ...), a key or
/// passphrase variable, or anything else of this process's environment; a command that needs
/// more sets it itself (e.g. `VAULT_ADDR=… vault kv get …`).
const COMMAND_ENV: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "TMPDIR"];
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn run_command(cmd: &str) -> Result<SecretBytes, KeyError> {
    let mut command = Command::new("/bin/sh");
    command.env_clear().env("PATH", DEFAULT_PATH);
    for var in COMMAND_ENV {
        if let Some(v) = std::env::var_os(var) {
            command.env(var, v);
        }
    }
    let mut child = command
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| KeyError::Source(format!("cannot run key command: {e}")))?;
    // stderr (not secret) drains on a thread, so a chatty command cannot block on it.
    let mut err_pipe = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut e = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err_pipe, &mut e);
        e
    });
    let stdout = read_secret(child.stdout.as_mut().expect("piped"), false);
    let status = child.wait().map_err(|e| KeyError::Source(format!("cannot run key command: {e}")))?;
    let stderr = errors.join().unwrap_or_default();
    let stdout = stdout.map_err(|e| KeyError::Source(format!("reading the key command's output: {e}")))?;
    if !status.success() {
        let err = String::from_utf8_lossy(&stderr);
        let err = err.trim();
        return Err(KeyError::Source(format!(
            "key command failed ({}){}{}",
            status,
            if err.is_empty() { "" } else { ": " },
            err.lines().last().unwrap_or("")
        )));
    }
    Ok(stdout)
}

fn read_env(var: &str) -> Result<SecretBytes, KeyError> {
    std::env::var_os(var)
        .map(|v| SecretBytes(std::os::unix::ffi::OsStringExt::into_vec(v)))
        .ok_or_else(|| KeyError::Source(format!("environment variable {var} is not set")))
}

pub(super) fn read_file(p: &std::path::Path, what: &str) -> Result<SecretBytes, KeyError> {
    let cannot = |e: std::io::Error| KeyError::Source(format!("cannot read {what} {}: {e}", p.display()));
    let mut f = std::fs::File::open(p).map_err(cannot)?;
    check_private_file(&f, p, what)?;
    read_secret(&mut f, false).map_err(cannot)
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// True if some directory on the way to `p` lets no one but its owner (this user or root) in:
/// then the file's own group and other bits give nobody access.
fn enclosed(p: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(abs) = std::path::absolute(p) else { return false };
    let Some(parent) = abs.parent().and_then(|d| std::fs::canonicalize(d).ok()) else { return false };
    parent.ancestors().any(|d| {
        std::fs::metadata(d).is_ok_and(|m| m.mode() & 0o011 == 0 && (m.uid() == 0 || m.uid() == euid()))
    })
}

/// Checks a secret file (key, passphrase, OpenPGP secret key) as ssh checks a private key:
/// refused if another user could replace it (owned by someone other than this user or root, or
/// writable by group or others); a warning (`chmod 600`) if group or others may read it, unless
/// a directory on its path already shuts everyone else out.
fn check_private_file(f: &std::fs::File, p: &std::path::Path, what: &str) -> Result<(), KeyError> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata().map_err(|e| KeyError::Source(format!("cannot read {what} {}: {e}", p.display())))?;
    let mode = m.mode() & 0o7777;
    if m.uid() != 0 && m.uid() != euid() {
        return Err(KeyError::Source(format!(
            "{what} {} is owned by uid {}, not by uid {} or root: refused (another user could replace it)",
            p.display(),
            m.uid(),
            euid()
        )));
    }
    if mode & 0o022 != 0 {
        return Err(KeyError::Source(format!(
            "{what} {} is writable by group or others (mode {mode:04o}): refused; run chmod 600 {}",
            p.display(),
            p.display()
        )));
    }
    if mode & 0o077 != 0 && !enclosed(p) {
        eprintln!(
            "pgcryptfs: warning: {what} {} is readable by group or others (mode {mode:04o}); run chmod 600 {}",
            p.display(),
            p.display()
        );
    }
    Ok(())
}

impl KeySource {
    fn read(&self) -> Result<SecretBytes, KeyError> {
        match self {
            KeySource::File(p) => read_file(p, "key file"),
            KeySource::Env(var) => read_env(var),
            KeySource::Command(cmd) => run_command(cmd),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            KeySource::File(p) => format!("key file {}", p.display()),
            KeySource::Env(v) => format!("environment variable {v}"),
            KeySource::Command(_) => "key command output".to_string(),
        }
    }
}

impl SecretSource {
    pub fn describe(&self, what: &str) -> String {
        match self {
            SecretSource::File(p) => format!("{what} file {}", p.display()),
            SecretSource::Env(v) => format!("environment variable {v}"),
            SecretSource::Prompt => "the terminal".to_string(),
        }
    }

    /// Reads the secret; a file's trailing line breaks are dropped. Empty is an error.
    pub fn read(&self, what: &str) -> Result<SecretBytes, KeyError> {
        let mut s = match self {
            SecretSource::File(p) => read_file(p, &format!("{what} file"))?,
            SecretSource::Env(v) => read_env(v)?,
            SecretSource::Prompt => prompt(&format!("{what}: "))?,
        };
        if !matches!(self, SecretSource::Env(_)) {
            while matches!(s.0.last(), Some(b'\n' | b'\r')) {
                s.0.pop();
            }
        }
        if s.0.is_empty() {
            return Err(KeyError::Source(match self {
                SecretSource::Prompt => format!("the {what} typed at the terminal is empty"),
                _ => format!("the {} is empty", self.describe(what)),
            }));
        }
        Ok(s)
    }
}

/// Reads one line from the controlling terminal with echo off.
pub fn prompt(text: &str) -> Result<SecretBytes, KeyError> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| KeyError::Source(format!("cannot open the terminal to ask for a passphrase: {e}")))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tty);
    // SAFETY: termios is plain data; tcgetattr fills it for a valid fd.
    let mut old: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is an open terminal; `old` is a valid termios.
    if unsafe { libc::tcgetattr(fd, &mut old) } != 0 {
        return Err(KeyError::Source(format!("cannot configure the terminal: {}", std::io::Error::last_os_error())));
    }
    let mut quiet = old;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    let mut w = &tty;
    let _ = w.write_all(text.as_bytes());
    // SAFETY: as above; the old settings are restored below on every path.
    unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &quiet) };
    let read = read_secret(&mut &tty, true);
    // SAFETY: restores the settings read above.
    unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &old) };
    read.map_err(|e| KeyError::Source(format!("cannot read the passphrase from the terminal: {e}")))
}

/// Asks twice for a new passphrase; they must match.
pub fn prompt_new(what: &str) -> Result<SecretBytes, KeyError> {
    let a = SecretSource::Prompt.read(&format!("new {what}"))?;
    let b = SecretSource::Prompt.read(&format!("repeat the new {what}"))?;
    if !crypto::ct_eq(&a.0, &b.0) {
        return Err(KeyError::Source(format!("the two {what}s differ")));
    }
    Ok(a)
}

/// Reads the user's 32-byte key and applies the transform (WAL-G semantics).
pub fn load_user_key(source: &KeySource, transform: KeyTransform) -> Result<Secret32, KeyError> {
    let raw = source.read()?;
    // WAL-G trims a key read from a file; a command's trailing newline goes the same way.
    let bytes = match source {
        KeySource::Env(_) => &raw.0[..],
        _ => trim(&raw.0),
    };
    apply_transform(bytes, transform).map_err(|m| KeyError::Transform(format!("{}: {m}", source.describe())))
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &b[start..end]
}

/// Applies a transform to key bytes (already trimmed where the source calls for it).
pub fn apply_transform(t: &[u8], transform: KeyTransform) -> Result<Secret32, String> {
    let mut key = [0u8; 32];
    match transform {
        KeyTransform::Hex => {
            if t.len() != 64 {
                return Err(format!("a hex key must be exactly 64 hex characters, found {}", t.len()));
            }
            let bytes = SecretBytes(crypto::hex_decode(t).ok_or("the key is not valid hex")?);
            key.copy_from_slice(&bytes.0);
        }
        KeyTransform::Base64 => {
            let bytes = SecretBytes(crypto::base64_decode(t).ok_or("the key is not valid base64")?);
            if bytes.0.len() != 32 {
                return Err(format!("a base64 key must decode to exactly 32 bytes, found {}", bytes.0.len()));
            }
            key.copy_from_slice(&bytes.0);
        }
        KeyTransform::None => {
            if t.len() < 25 {
                return Err(format!(
                    "a key with transform 'none' must be at least 25 bytes, found {} \
                     (use --key-transform hex for a 64-character hex key)",
                    t.len()
                ));
            }
            let n = t.len().min(32);
            key[..n].copy_from_slice(&t[..n]);
        }
    }
    Ok(Secret32::take(&mut key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_follow_walg() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let k = apply_transform(hex.as_bytes(), KeyTransform::Hex).ok().unwrap();
        assert_eq!(k.expose()[1], 0x11);
        assert!(apply_transform(&hex.as_bytes()[..62], KeyTransform::Hex).err().unwrap().contains("exactly 64"));
        assert!(apply_transform(&[b'z'; 64], KeyTransform::Hex).err().unwrap().contains("not valid hex"));

        let b64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // bytes 0..32
        let k = apply_transform(b64.as_bytes(), KeyTransform::Base64).ok().unwrap();
        assert_eq!(k.expose()[31], 31);
        assert!(apply_transform(b"AAEC", KeyTransform::Base64).err().unwrap().contains("exactly 32"));

        let short = apply_transform(&[b'a'; 24], KeyTransform::None).err().unwrap();
        assert!(short.contains("at least 25"), "{short}");
        let k = apply_transform(&[b'a'; 25], KeyTransform::None).unwrap();
        assert_eq!(&k.expose()[..25], &[b'a'; 25]);
        assert_eq!(&k.expose()[25..], &[0u8; 7]);
        let k = apply_transform(&[b'b'; 40], KeyTransform::None).unwrap();
        assert_eq!(k.expose(), &[b'b'; 32]);
    }

    #[test]
    fn sources() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, format!("{}\n", "x".repeat(32))).unwrap();
        assert_eq!(load_user_key(&KeySource::File(f), KeyTransform::None).ok().unwrap().expose(), &[b'x'; 32]);
        let missing = load_user_key(&KeySource::File(dir.path().join("nope")), KeyTransform::None).err().unwrap();
        assert!(missing.to_string().starts_with("cannot read key file"));
        let cmd = KeySource::Command("printf %s 0000000000000000000000000000000000000000000000000000000000000001".into());
        assert_eq!(load_user_key(&cmd, KeyTransform::Hex).ok().unwrap().expose()[31], 1);
        let bad = load_user_key(&KeySource::Command("echo nope >&2; exit 3".into()), KeyTransform::Hex).err().unwrap();
        assert!(bad.to_string().contains("key command failed") && bad.to_string().contains("nope"), "{bad}");
        let short = load_user_key(&KeySource::Command("echo abcd".into()), KeyTransform::Hex).err().unwrap();
        assert_eq!(short.to_string(), "key command output: a hex key must be exactly 64 hex characters, found 4");
        let unset = load_user_key(&KeySource::Env("PGCRYPTFS_TEST_UNSET_VAR".into()), KeyTransform::Hex).err().unwrap();
        assert_eq!(unset.to_string(), "environment variable PGCRYPTFS_TEST_UNSET_VAR is not set");
    }

    #[test]
    fn passphrase_files_lose_their_line_break() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p");
        std::fs::write(&f, "correct horse\r\n").unwrap();
        assert_eq!(SecretSource::File(f.clone()).read("passphrase").ok().unwrap().0, b"correct horse");
        std::fs::write(&f, "\n").unwrap();
        let e = SecretSource::File(f.clone()).read("passphrase").err().unwrap().to_string();
        assert_eq!(e, format!("the passphrase file {} is empty", f.display()));
    }

    #[test]
    fn secret_files_others_can_change_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        mode(dir.path(), 0o755);
        let f = dir.path().join("k");
        std::fs::write(&f, "x".repeat(32)).unwrap();
        for m in [0o666, 0o620, 0o602] {
            mode(&f, m);
            let e = load_user_key(&KeySource::File(f.clone()), KeyTransform::None).err().unwrap().to_string();
            assert!(e.contains("writable by group or others") && e.contains(&format!("chmod 600 {}", f.display())), "{e}");
            let e = SecretSource::File(f.clone()).read("passphrase").err().unwrap().to_string();
            assert!(e.contains("chmod 600"), "{e}");
        }
        // Readable only: a warning, and the key is used.
        mode(&f, 0o644);
        load_user_key(&KeySource::File(f.clone()), KeyTransform::None).ok().unwrap();
        mode(&f, 0o600);
        load_user_key(&KeySource::File(f.clone()), KeyTransform::None).ok().unwrap();
        assert!(!enclosed(&f), "a 0755 directory in /tmp shuts no one out");
        mode(dir.path(), 0o700);
        assert!(enclosed(&f), "a 0700 directory of root's does");
        if euid() == 0 {
            std::os::unix::fs::chown(&f, Some(65534), None).unwrap();
            let e = load_user_key(&KeySource::File(f.clone()), KeyTransform::None).err().unwrap().to_string();
            assert!(e.contains("owned by uid 65534"), "{e}");
        }
    }

    #[test]
    fn a_key_command_gets_a_minimal_environment() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("env");
        // SAFETY: test-only variables no other test reads.
        unsafe {
            std::env::set_var("AWS_SECRET_ACCESS_KEY_PGCFS_TEST", "store secret");
            std::env::set_var("GOOGLE_PGCFS_TEST", "store secret");
        }
        let cmd = format!("env > {}; printf %s {}", seen.display(), "1".repeat(64));
        load_user_key(&KeySource::Command(cmd), KeyTransform::Hex).ok().unwrap();
        let env = std::fs::read_to_string(&seen).unwrap();
        assert!(!env.contains("store secret") && !env.contains("AWS_") && !env.contains("GOOGLE_"), "{env}");
        assert!(env.lines().all(|l| COMMAND_ENV.iter().any(|v| l.starts_with(&format!("{v}="))) || l.starts_with("PWD=") || l.starts_with("SHLVL=") || l.starts_with("_=")), "{env}");
    }
}
