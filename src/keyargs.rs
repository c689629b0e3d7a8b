//! Clap argument groups for key custody: the unlock options shared by mount, key add/remove
//! and rekey, and the new-slot options of key add and init.

use std::path::PathBuf;

use clap::Args;

use crate::config::{self, KeyConfig};
use crate::keys::passphrase::Cost;
use crate::keys::{KeySource, KeyTransform, NewSlotSpec, SecretSource, UnlockSpec};

/// What unlocks the vault: at most one source (none, with stdin a terminal: a passphrase
/// prompt). The secret itself is never an argument.
#[derive(Args, Clone, Default)]
#[group(id = "unlock_source", multiple = false)]
pub struct UnlockSourceArgs {
    /// Read the key (sodium slots) from this file.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Read the key (sodium slots) from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub key_env: Option<String>,
    /// Run this shell command and read the key from its standard output (command and sodium slots).
    #[arg(long, value_name = "CMD")]
    pub key_command: Option<String>,
    /// Read the passphrase (passphrase slots) from this file (one trailing line break is dropped).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Read the passphrase (passphrase slots) from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
    /// Unlock an openpgp slot with this armored secret key (gpg --armor --export-secret-keys).
    #[arg(long, value_name = "FILE")]
    pub pgp_key_file: Option<PathBuf>,
}

/// Unlock options shared by mount, key add, key remove and rekey.
#[derive(Args, Clone, Default)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub source: UnlockSourceArgs,
    /// How the key bytes are read (WAL-G's meaning): hex = exactly 64 hex characters,
    /// base64 = exactly 32 bytes once decoded, none = raw bytes (at least 25; truncated or
    /// zero-padded to 32).
    #[arg(long, value_enum, default_value = "none")]
    pub key_transform: KeyTransform,
    /// The passphrase of the --pgp-key-file secret key, from this file.
    #[arg(long, value_name = "FILE", requires = "pgp_key_file", conflicts_with = "pgp_passphrase_env")]
    pub pgp_passphrase_file: Option<PathBuf>,
    /// The passphrase of the --pgp-key-file secret key, from this environment variable.
    #[arg(long, value_name = "VAR", requires = "pgp_key_file")]
    pub pgp_passphrase_env: Option<String>,
}

const NO_KEY: &str = "no key given: use --key-file, --key-env, --key-command, --passphrase-file, \
                      --passphrase-env or --pgp-key-file (or run on a terminal to be asked for a passphrase)";

fn stdin_is_tty() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdin())
}

impl UnlockArgs {
    pub fn given(&self) -> bool {
        let s = &self.source;
        s.key_file.is_some()
            || s.key_env.is_some()
            || s.key_command.is_some()
            || s.passphrase_file.is_some()
            || s.passphrase_env.is_some()
            || s.pgp_key_file.is_some()
    }

    /// The unlock method; with nothing given, a passphrase prompt on a terminal.
    pub fn to_spec(&self) -> Result<KeyConfig, String> {
        let s = &self.source;
        let key = |source| Ok(UnlockSpec::Key { source, transform: self.key_transform });
        if let Some(f) = &s.key_file {
            return key(KeySource::File(f.clone()));
        }
        if let Some(v) = &s.key_env {
            return key(KeySource::Env(v.clone()));
        }
        if let Some(c) = &s.key_command {
            return key(KeySource::Command(c.clone()));
        }
        if let Some(f) = &s.passphrase_file {
            return Ok(UnlockSpec::Passphrase(SecretSource::File(f.clone())));
        }
        if let Some(v) = &s.passphrase_env {
            return Ok(UnlockSpec::Passphrase(SecretSource::Env(v.clone())));
        }
        if let Some(f) = &s.pgp_key_file {
            let passphrase = match (&self.pgp_passphrase_file, &self.pgp_passphrase_env) {
                (Some(f), _) => Some(SecretSource::File(f.clone())),
                (_, Some(v)) => Some(SecretSource::Env(v.clone())),
                _ => None,
            };
            return Ok(UnlockSpec::OpenPgp { key_file: f.clone(), passphrase });
        }
        if stdin_is_tty() {
            return Ok(UnlockSpec::Passphrase(SecretSource::Prompt));
        }
        Err(NO_KEY.into())
    }
}

/// The key of a new slot (key add, or init's first slot): at most one source.
#[derive(Args, Clone, Default)]
#[group(id = "new_slot_source", multiple = false)]
pub struct NewSlotSourceArgs {
    /// New sodium slot: the key is read from this file.
    #[arg(long, value_name = "FILE")]
    pub new_key_file: Option<PathBuf>,
    /// New sodium slot: the key is read from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub new_key_env: Option<String>,
    /// New command slot: this shell command prints the key (run now, and at every mount).
    #[arg(long, value_name = "CMD")]
    pub new_key_command: Option<String>,
    /// New openpgp slot: encrypt to this armored OpenPGP certificate (public key).
    #[arg(long, value_name = "CERT")]
    pub pgp_cert: Option<PathBuf>,
    /// New passphrase slot: the passphrase is read from this file.
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
    /// New passphrase slot: the passphrase is read from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub new_passphrase_env: Option<String>,
    /// New passphrase slot: ask for the passphrase (twice) on the terminal.
    #[arg(long)]
    pub new_passphrase_prompt: bool,
}

#[derive(Args, Clone, Default)]
pub struct NewSlotArgs {
    #[command(flatten)]
    pub source: NewSlotSourceArgs,
    /// How the new key's bytes are read (hex, base64, none), as --key-transform.
    #[arg(long, value_enum, default_value = "none")]
    pub new_key_transform: KeyTransform,
    /// A label shown by `key list` (never secret; default: the method, or the certificate's user id).
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// Argon2id passes of a new passphrase slot (tests; default libsodium's MODERATE, 3).
    #[arg(long, hide = true)]
    pub pwhash_opslimit: Option<u64>,
    /// Argon2id memory of a new passphrase slot (tests; default libsodium's MODERATE, 256M).
    #[arg(long, hide = true, value_parser = config::parse_size)]
    pub pwhash_memlimit: Option<u64>,
}

impl NewSlotArgs {
    fn cost(&self) -> Cost {
        let d = Cost::default();
        Cost { opslimit: self.pwhash_opslimit.unwrap_or(d.opslimit), memlimit: self.pwhash_memlimit.unwrap_or(d.memlimit) }
    }

    /// The new slot, if one was named.
    pub fn to_spec(&self) -> Option<NewSlotSpec> {
        let s = &self.source;
        let transform = self.new_key_transform;
        let pass = |source| Some(NewSlotSpec::Passphrase { source, cost: self.cost() });
        if let Some(f) = &s.new_key_file {
            return Some(NewSlotSpec::Sodium { source: KeySource::File(f.clone()), transform });
        }
        if let Some(v) = &s.new_key_env {
            return Some(NewSlotSpec::Sodium { source: KeySource::Env(v.clone()), transform });
        }
        if let Some(c) = &s.new_key_command {
            return Some(NewSlotSpec::Command { command: c.clone(), transform });
        }
        if let Some(c) = &s.pgp_cert {
            return Some(NewSlotSpec::OpenPgp { cert_file: c.clone() });
        }
        if let Some(f) = &s.new_passphrase_file {
            return pass(SecretSource::File(f.clone()));
        }
        if let Some(v) = &s.new_passphrase_env {
            return pass(SecretSource::Env(v.clone()));
        }
        if s.new_passphrase_prompt {
            return pass(SecretSource::Prompt);
        }
        None
    }

    /// init's first slot: a new-slot option, or the unlock options read as "make this slot".
    pub fn first_slot(&self, unlock: &UnlockArgs) -> Result<NewSlotSpec, String> {
        let new = self.to_spec();
        if new.is_some() && unlock.given() {
            return Err("init makes one key slot: give either a --new-* / --pgp-cert option or a key option, not both".into());
        }
        if let Some(n) = new {
            return Ok(n);
        }
        let u = &unlock.source;
        let transform = unlock.key_transform;
        let pass = |source| Ok(NewSlotSpec::Passphrase { source, cost: self.cost() });
        match () {
            _ if u.key_file.is_some() => Ok(NewSlotSpec::Sodium { source: KeySource::File(u.key_file.clone().unwrap()), transform }),
            _ if u.key_env.is_some() => Ok(NewSlotSpec::Sodium { source: KeySource::Env(u.key_env.clone().unwrap()), transform }),
            _ if u.key_command.is_some() => Ok(NewSlotSpec::Command { command: u.key_command.clone().unwrap(), transform }),
            _ if u.passphrase_file.is_some() => pass(SecretSource::File(u.passphrase_file.clone().unwrap())),
            _ if u.passphrase_env.is_some() => pass(SecretSource::Env(u.passphrase_env.clone().unwrap())),
            _ if u.pgp_key_file.is_some() => {
                Err("init encrypts to a certificate, not a secret key: use --pgp-cert CERT.asc".into())
            }
            _ if stdin_is_tty() => pass(SecretSource::Prompt),
            _ => Err(NO_KEY.replace("no key given", "no key given for the first slot").replace(
                "--pgp-key-file",
                "--pgp-cert",
            )),
        }
    }
}

