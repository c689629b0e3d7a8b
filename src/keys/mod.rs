//! Key custody: what unlocks a vault (sodium, passphrase, openpgp, command), key slots that
//! wrap the master key under a per-slot key, and the subkeys derived from the master key.

mod openpgp;
pub mod passphrase;
mod source;
mod unlock;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;

pub use source::{KeySource, KeyTransform, SecretSource, apply_transform, load_user_key, prompt, prompt_new};
pub use unlock::{Opened, open_every_slot, open_slots};

use crate::crypto::{self, Secret32, SecretBytes};
use crate::format::{self, Enc, Slot, VaultHeader};

#[derive(Debug)]
pub enum KeyError {
    /// The key could not be obtained (file unreadable, env var unset, command failed).
    Source(String),
    /// The key bytes do not satisfy the transform.
    Transform(String),
    /// No slot of the vault opens with what was given; says which slots exist and why.
    Refused(String),
    /// A slot object is malformed or was altered (and no other slot opened).
    Corrupt { slot: String, reason: String, also: Option<String> },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Source(m) | KeyError::Transform(m) | KeyError::Refused(m) => write!(f, "{m}"),
            KeyError::Corrupt { slot, reason, also } => {
                write!(f, "key slot {slot} is corrupt: {reason}")?;
                match also {
                    Some(a) => write!(f, "; and {a}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for KeyError {}

/// The name `key list` and the audit log use for a slot method.
pub fn method_name(method: u8) -> &'static str {
    match method {
        format::SLOT_METHOD_SODIUM => "sodium",
        format::SLOT_METHOD_PASSPHRASE => "passphrase",
        format::SLOT_METHOD_OPENPGP => "openpgp",
        format::SLOT_METHOD_COMMAND => "command",
        _ => "unknown",
    }
}

/// How to unlock a vault: names sources, never holds secrets (safe to keep in a config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnlockSpec {
    /// A 32-byte key (sodium and command slots).
    Key { source: KeySource, transform: KeyTransform },
    Passphrase(SecretSource),
    OpenPgp { key_file: PathBuf, passphrase: Option<SecretSource> },
}

/// What unlocks a vault, read from its sources. No Debug/Clone; the secrets wipe on drop.
pub enum Unlock {
    Key { key: Secret32, source: String },
    Passphrase { pass: SecretBytes, source: String },
    OpenPgp { key: openpgp::SecretKey, passphrase: Option<SecretBytes>, source: String },
}

impl Unlock {
    /// In a forked daemon: lock the key's memory again (locks are not inherited by fork).
    pub fn relock(&mut self) {
        if let Unlock::Key { key, .. } = self {
            key.relock();
        }
    }
}

impl UnlockSpec {
    /// Reads the secrets (runs the key command, asks on the terminal).
    pub fn load(&self) -> Result<Unlock, KeyError> {
        // Every command that reads a key (mount, gc, export, rekey, key add…) dumps no core.
        crate::crypto::forbid_core_dumps();
        Ok(match self {
            UnlockSpec::Key { source, transform } => {
                Unlock::Key { key: load_user_key(source, *transform)?, source: source.describe() }
            }
            UnlockSpec::Passphrase(s) => Unlock::Passphrase { pass: s.read("passphrase")?, source: s.describe("passphrase") },
            UnlockSpec::OpenPgp { key_file, passphrase } => {
                let source = format!("OpenPGP key file {}", key_file.display());
                let bytes = source::read_file(key_file, "OpenPGP key file")?;
                let passphrase = passphrase.as_ref().map(|p| p.read("OpenPGP passphrase")).transpose()?;
                Unlock::openpgp(&bytes.0, passphrase, &source)?
            }
        })
    }

    /// Makes file paths absolute (a daemon changes directory to /).
    pub fn make_absolute(&mut self) {
        let abs = |p: &mut PathBuf| {
            if let Ok(a) = std::path::absolute(&*p) {
                *p = a;
            }
        };
        match self {
            UnlockSpec::Key { source: KeySource::File(p), .. } => abs(p),
            UnlockSpec::Passphrase(SecretSource::File(p)) => abs(p),
            UnlockSpec::OpenPgp { key_file, passphrase } => {
                abs(key_file);
                if let Some(SecretSource::File(p)) = passphrase {
                    abs(p);
                }
            }
            _ => {}
        }
    }
}

impl Unlock {
    /// A 32-byte key, for vault-level tests and library users.
    pub fn key(key: &Secret32) -> Self {
        Unlock::Key { key: key.duplicate(), source: "the key".into() }
    }

    /// An OpenPGP secret key (armored or binary) and its passphrase, if it has one; `source`
    /// names where it came from, for messages.
    pub fn openpgp(tsk: &[u8], passphrase: Option<SecretBytes>, source: &str) -> Result<Self, KeyError> {
        Ok(Unlock::OpenPgp { key: openpgp::SecretKey::parse(tsk, source)?, passphrase, source: source.to_string() })
    }
}

/// A new slot to make: names sources, never holds secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewSlotSpec {
    /// A sodium key from a file or env var.
    Sodium { source: KeySource, transform: KeyTransform },
    /// A key printed by a command, run again at every mount.
    Command { command: String, transform: KeyTransform },
    Passphrase { source: SecretSource, cost: passphrase::Cost },
    OpenPgp { cert_file: PathBuf },
}

/// A new slot's key material, read from its sources.
pub enum NewSlot {
    Sodium(Secret32),
    Command(Secret32),
    Passphrase(SecretBytes, passphrase::Cost),
    OpenPgp(Vec<u8>),
}

impl NewSlotSpec {
    pub fn load(&self) -> Result<NewSlot, KeyError> {
        crate::crypto::forbid_core_dumps();
        Ok(match self {
            NewSlotSpec::Sodium { source, transform } => NewSlot::Sodium(load_user_key(source, *transform)?),
            NewSlotSpec::Command { command, transform } => {
                NewSlot::Command(load_user_key(&KeySource::Command(command.clone()), *transform)?)
            }
            NewSlotSpec::Passphrase { source, cost } => {
                cost.check().map_err(KeyError::Source)?;
                let pass = match source {
                    SecretSource::Prompt => prompt_new("passphrase")?,
                    s => s.read("new passphrase")?,
                };
                NewSlot::Passphrase(pass, *cost)
            }
            NewSlotSpec::OpenPgp { cert_file } => NewSlot::OpenPgp(std::fs::read(cert_file).map_err(|e| {
                KeyError::Source(format!("cannot read OpenPGP certificate {}: {e}", cert_file.display()))
            })?),
        })
    }
}

/// Longest slot label accepted.
pub const MAX_LABEL: usize = 256;

/// Makes a slot wrapping `master`. The slot key is the user key (sodium, command),
/// Argon2id of the passphrase (passphrase) or a random key encrypted to the cert (openpgp);
/// the master key is sealed under it with AAD = 01 ‖ header ‖ the slot's clear prefix.
pub fn make_slot(header: &VaultHeader, master: &Secret32, new: &NewSlot, label: Option<&str>, now: i64) -> Result<Slot, KeyError> {
    if label.is_some_and(|l| l.len() > MAX_LABEL) {
        return Err(KeyError::Source(format!("a slot label is at most {MAX_LABEL} bytes")));
    }
    let (method, params, slot_key, default_label) = match new {
        NewSlot::Sodium(k) => (format::SLOT_METHOD_SODIUM, Vec::new(), k.duplicate(), "sodium".to_string()),
        NewSlot::Command(k) => {
            (format::SLOT_METHOD_COMMAND, Vec::new(), k.duplicate(), "command".to_string())
        }
        NewSlot::Passphrase(pass, cost) => {
            let p = passphrase::Params::new(*cost);
            let k = p.derive(&pass.0)?;
            (format::SLOT_METHOD_PASSPHRASE, p.encode(), k, "passphrase".to_string())
        }
        NewSlot::OpenPgp(cert) => {
            let k = Secret32::random();
            let (info, message) = openpgp::encrypt(cert, &k)?;
            let params = openpgp_params(&info, &message)?;
            let mut l = info.user_id.unwrap_or_else(|| "openpgp".into());
            while l.len() > MAX_LABEL {
                l.pop();
            }
            (format::SLOT_METHOD_OPENPGP, params, k, l)
        }
    };
    let mut slot = Slot {
        slot_id: crypto::random_id(),
        method,
        created: now,
        label: label.map_or(default_label, str::to_string).into_bytes(),
        params,
        sealed_key: Vec::new(),
    };
    slot.sealed_key = crypto::seal(&slot_key, &format::slot_aad(header, &slot.prefix()), master.expose());
    Ok(slot)
}

/// Makes the slot a rekey keeps: `master` (the new master key) sealed under a fresh slot key
/// wherever the method allows, opening with the same `unlock` that opened `opened`. Same method
/// and label; new slot id, creation time and nonce.
///
/// - passphrase: new Argon2id parameters with a fresh salt (at the old slot's cost), derived
///   from the passphrase in `unlock`;
/// - openpgp: a fresh random slot key encrypted again to the certificate of the secret key in
///   `unlock` (fingerprint and message rebuilt);
/// - sodium and command: the slot key *is* the user's key (what the user holds, or what the
///   command prints), so it cannot be fresh without a new user key; the new slot is a fresh
///   sealing of the new master key under it (new slot id, new nonce). To retire a leaked user
///   key, add a slot with a new one (`key add`) and remove the old slot.
///
/// The new slot is opened once with `unlock` before it is returned: a rekey never stores a
/// pending slot that what started it cannot open.
pub fn reseal_fresh(header: &VaultHeader, opened: &Opened, unlock: &Unlock, master: &Secret32, now: i64) -> Result<Slot, KeyError> {
    let old = &opened.slot;
    let mismatch = || KeyError::Source(format!("the {} slot that opened cannot be remade with {}", method_name(old.method), unlock.what()));
    let (params, slot_key) = match (old.method, unlock) {
        (format::SLOT_METHOD_SODIUM | format::SLOT_METHOD_COMMAND, Unlock::Key { key, .. }) => (Vec::new(), key.duplicate()),
        (format::SLOT_METHOD_PASSPHRASE, Unlock::Passphrase { pass, .. }) => {
            let cost = passphrase::Params::decode(&old.params).map_err(KeyError::Source)?.cost;
            let p = passphrase::Params::new(cost);
            let k = p.derive(&pass.0)?;
            (p.encode(), k)
        }
        (format::SLOT_METHOD_OPENPGP, Unlock::OpenPgp { key, .. }) => {
            let k = Secret32::random();
            let (info, message) = key.encrypt_to_own_cert(&k)?;
            (openpgp_params(&info, &message)?, k)
        }
        _ => return Err(mismatch()),
    };
    let mut slot =
        Slot { slot_id: crypto::random_id(), method: old.method, created: now, label: old.label.clone(), params, sealed_key: Vec::new() };
    slot.sealed_key = crypto::seal(&slot_key, &format::slot_aad(header, &slot.prefix()), master.expose());
    let remade = || format!("the new {} key slot does not open with {}", method_name(slot.method), unlock.what());
    let check = open_slots(header, &[(format::slot_name(&slot.slot_id), slot.encode())], unlock)
        .map_err(|e| KeyError::Source(format!("{}: {e}", remade())))?;
    if !crypto::ct_eq(check.master.expose(), master.expose()) {
        return Err(KeyError::Source(remade()));
    }
    Ok(slot)
}

/// An openpgp slot's params: the certificate's fingerprint, then the message.
fn openpgp_params(info: &openpgp::CertInfo, message: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut e = Enc::new();
    e.bytes16(&info.fingerprint).raw(message);
    if e.buf.len() > u16::MAX as usize {
        return Err(KeyError::Source(format!("the OpenPGP message is {} bytes, too large for a slot", e.buf.len())));
    }
    Ok(e.buf)
}

/// Makes a sodium key slot wrapping `master` under `user_key`.
pub fn make_sodium_slot(header: &VaultHeader, master: &Secret32, user_key: &Secret32, label: &str, now: i64) -> Slot {
    let new = NewSlot::Sodium(user_key.duplicate());
    make_slot(header, master, &new, Some(label), now).expect("a sodium slot with a short label cannot fail")
}

/// What `key list` shows after the method: the OpenPGP fingerprint and label, or the label.
pub fn slot_description(slot: &Slot) -> String {
    let label = String::from_utf8_lossy(&slot.label).replace(|c: char| c.is_control(), "?");
    if slot.method == format::SLOT_METHOD_OPENPGP
        && let Ok(fp) = format::Dec::new(&slot.params).bytes16("fingerprint")
    {
        return format!("{} {label}", openpgp::fingerprint_hex(fp));
    }
    label
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
