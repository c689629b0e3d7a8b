//! Key custody: where a user key comes from (file, env, command), WAL-G's key transforms,
//! key slots that wrap the vault master key, and the subkeys derived from it.

use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::crypto::{self, Secret32, SecretBytes};
use crate::format::{self, Id, Slot, VaultHeader};

#[derive(Debug)]
pub enum KeyError {
    /// The key could not be obtained (file unreadable, env var unset, command failed).
    Source(String),
    /// The key bytes do not satisfy the transform.
    Transform(String),
    /// No slot of the vault opens with this key.
    WrongKey,
    /// A slot object is malformed.
    Corrupt { slot: String, reason: String },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Source(m) | KeyError::Transform(m) => write!(f, "{m}"),
            KeyError::WrongKey => write!(
                f,
                "the key does not open this vault (no key slot accepts it; check the key and --key-transform)"
            ),
            KeyError::Corrupt { slot, reason } => write!(f, "key slot {slot} is corrupt: {reason}"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Where the user's key comes from. Never the key itself: argv is visible to every user.
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

impl KeySource {
    fn read(&self) -> Result<SecretBytes, KeyError> {
        match self {
            KeySource::File(p) => std::fs::read(p)
                .map(SecretBytes)
                .map_err(|e| KeyError::Source(format!("cannot read key file {}: {e}", p.display()))),
            KeySource::Env(var) => std::env::var_os(var)
                .map(|v| SecretBytes(std::os::unix::ffi::OsStringExt::into_vec(v)))
                .ok_or_else(|| KeyError::Source(format!("environment variable {var} is not set"))),
            KeySource::Command(cmd) => {
                let out = Command::new("/bin/sh")
                    .arg("-c")
                    .arg(cmd)
                    .stdin(Stdio::null())
                    .stderr(Stdio::piped())
                    .output()
                    .map_err(|e| KeyError::Source(format!("cannot run key command: {e}")))?;
                let stdout = SecretBytes(out.stdout);
                if !out.status.success() {
                    let err = String::from_utf8_lossy(&out.stderr);
                    let err = err.trim();
                    return Err(KeyError::Source(format!(
                        "key command failed ({}){}{}",
                        out.status,
                        if err.is_empty() { "" } else { ": " },
                        err.lines().last().unwrap_or("")
                    )));
                }
                Ok(stdout)
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            KeySource::File(p) => format!("key file {}", p.display()),
            KeySource::Env(v) => format!("environment variable {v}"),
            KeySource::Command(_) => "key command output".to_string(),
        }
    }
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

/// The vault's subkeys, derived from the master key with crypto_kdf.
pub struct VaultKeys {
    pub data: Secret32,
    pub meta: Secret32,
}

const KDF_CONTEXT: &[u8; 8] = b"pgcfs-v1";
const SUBKEY_DATA: u64 = 1;
const SUBKEY_META: u64 = 2;

impl VaultKeys {
    pub fn derive(master: &Secret32) -> Self {
        Self { data: crypto::derive(master, SUBKEY_DATA, KDF_CONTEXT), meta: crypto::derive(master, SUBKEY_META, KDF_CONTEXT) }
    }
}

/// Makes a sodium key slot wrapping `master` under `user_key`.
pub fn make_sodium_slot(header: &VaultHeader, master: &Secret32, user_key: &Secret32, label: &str, now: i64) -> Slot {
    let mut slot = Slot {
        slot_id: crypto::random_id(),
        method: format::SLOT_METHOD_SODIUM,
        created: now,
        label: label.as_bytes().to_vec(),
        params: Vec::new(),
        sealed_key: Vec::new(),
    };
    let aad = format::slot_aad(header, &slot.prefix());
    slot.sealed_key = crypto::seal(user_key, &aad, master.expose());
    slot
}

/// Tries every slot; returns the master key from the first one the user key opens.
/// A slot that cannot be parsed is skipped (another may open the vault); if none opens, the
/// error names it.
pub fn open_slots(header: &VaultHeader, slots: &[(String, Vec<u8>)], user_key: &Secret32) -> Result<(Id, Secret32), KeyError> {
    let mut corrupt = None;
    for (name, bytes) in slots {
        let slot = match Slot::decode(bytes) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("key slot {name} is unreadable: {e}");
                corrupt.get_or_insert(KeyError::Corrupt { slot: name.clone(), reason: e.to_string() });
                continue;
            }
        };
        if slot.method != format::SLOT_METHOD_SODIUM {
            continue;
        }
        let aad = format::slot_aad(header, &slot.prefix());
        if let Ok(plain) = crypto::open(user_key, &aad, &slot.sealed_key) {
            let plain = SecretBytes(plain);
            let mut k = [0u8; 32];
            k.copy_from_slice(&plain.0);
            return Ok((slot.slot_id, Secret32::take(&mut k)));
        }
    }
    Err(corrupt.unwrap_or(KeyError::WrongKey))
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
        let unset = load_user_key(&KeySource::Env("PGCRYPTFS_TEST_UNSET_VAR".into()), KeyTransform::Hex).err().unwrap();
        assert_eq!(unset.to_string(), "environment variable PGCRYPTFS_TEST_UNSET_VAR is not set");
    }

    #[test]
    fn slots_open_only_with_their_key_and_header() {
        let header = VaultHeader { vault_id: [1; 16], aead: 1, chunk_size: 65536, flags: 0 };
        let master = Secret32::random();
        let user = Secret32::from_bytes([3; 32]);
        let slot = make_sodium_slot(&header, &master, &user, "primary", 100);
        let slots = vec![("keys/a".to_string(), slot.encode())];
        let (id, opened) = open_slots(&header, &slots, &user).ok().unwrap();
        assert_eq!(id, slot.slot_id);
        assert_eq!(opened.expose(), master.expose());
        assert!(matches!(open_slots(&header, &slots, &Secret32::from_bytes([4; 32])), Err(KeyError::WrongKey)));
        let other = VaultHeader { vault_id: [2; 16], ..header };
        assert!(matches!(open_slots(&other, &slots, &user), Err(KeyError::WrongKey)));
        // A changed clear field (the label) breaks the slot too.
        let mut tampered = slot.encode();
        tampered[8 + 2 + 1 + 1 + 16 + 8 + 2] ^= 1;
        assert!(matches!(open_slots(&header, &[("k".into(), tampered)], &user), Err(KeyError::WrongKey)));
        let corrupt = open_slots(&header, &[("keys/b".into(), vec![1, 2, 3])], &user).err().unwrap();
        assert!(corrupt.to_string().starts_with("key slot keys/b is corrupt"));
    }
}
