//! `openpgp` key slots (sequoia-openpgp): a random slot key encrypted to a certificate, and
//! its recovery with the armored secret key and its optional passphrase.

use std::io::{Read, Write};

use sequoia_openpgp as openpgp;
use openpgp::cert::Cert;
use openpgp::crypto::{KeyPair, Password, SessionKey};
use openpgp::packet::{PKESK, SKESK, Tag};
use openpgp::parse::Parse;
use openpgp::parse::stream::{DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper};
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message};
use openpgp::types::SymmetricAlgorithm;
use openpgp::{Fingerprint, KeyHandle};

use super::KeyError;
use crate::crypto::{Secret32, SecretBytes};

/// A certificate's identity, for slot labels and `key list`.
pub struct CertInfo {
    pub fingerprint: Vec<u8>,
    pub user_id: Option<String>,
}

/// Renders raw fingerprint bytes the way gpg prints them (upper-case hex).
pub fn fingerprint_hex(fp: &[u8]) -> String {
    Fingerprint::from_bytes(4, fp).map(|f| f.to_hex()).unwrap_or_else(|_| crate::format::hex(fp).to_uppercase())
}

/// Encrypts `secret` to the certificate's encryption subkeys; returns the binary message.
pub fn encrypt(cert_bytes: &[u8], secret: &Secret32) -> Result<(CertInfo, Vec<u8>), KeyError> {
    let cert = Cert::from_bytes(cert_bytes)
        .map_err(|e| KeyError::Source(format!("the OpenPGP certificate is unreadable: {e}")))?;
    encrypt_to(&cert, secret)
}

/// Encrypts `secret` to a parsed certificate (only its public parts are used, so a secret key
/// serves as well as its certificate).
fn encrypt_to(cert: &Cert, secret: &Secret32) -> Result<(CertInfo, Vec<u8>), KeyError> {
    let p = StandardPolicy::new();
    let fp = cert.fingerprint();
    let recipients: Vec<_> = cert
        .keys()
        .with_policy(&p, None)
        .supported()
        .alive()
        .revoked(false)
        .for_storage_encryption()
        .for_transport_encryption()
        .collect();
    if recipients.is_empty() {
        return Err(KeyError::Source(format!(
            "the OpenPGP certificate {} has no valid, unexpired encryption subkey",
            fp.to_hex()
        )));
    }
    let mut sink = Vec::new();
    let pgp_err = |e: openpgp::anyhow::Error| KeyError::Source(format!("OpenPGP encryption to {} failed: {e}", fp.to_hex()));
    let message = Message::new(&mut sink);
    let message = Encryptor::for_recipients(message, recipients).build().map_err(pgp_err)?;
    let mut w = LiteralWriter::new(message).build().map_err(pgp_err)?;
    w.write_all(secret.expose()).map_err(|e| pgp_err(e.into()))?;
    w.finalize().map_err(pgp_err)?;
    let user_id = cert.userids().next().map(|u| String::from_utf8_lossy(u.userid().value()).into_owned());
    Ok((CertInfo { fingerprint: fp.as_bytes().to_vec(), user_id }, sink))
}

/// An armored (or binary) secret key, parsed; sequoia keeps its secret parts encrypted in memory.
pub struct SecretKey {
    cert: Cert,
}

impl SecretKey {
    pub fn parse(bytes: &[u8], source: &str) -> Result<Self, KeyError> {
        let cert = Cert::from_bytes(bytes)
            .map_err(|e| KeyError::Source(format!("the OpenPGP secret key in {source} is unreadable: {e}")))?;
        if !cert.is_tsk() {
            return Err(KeyError::Source(format!(
                "{source} holds only the public certificate {}; unlocking needs the secret key \
                 (gpg --armor --export-secret-keys)",
                cert.fingerprint().to_hex()
            )));
        }
        Ok(SecretKey { cert })
    }

    pub fn fingerprint(&self) -> String {
        self.cert.fingerprint().to_hex()
    }

    /// Encrypts `secret` to this key's own certificate (the public half of what it holds), as
    /// `encrypt` does to a certificate file: how a rekey makes a fresh OpenPGP slot key.
    pub fn encrypt_to_own_cert(&self, secret: &Secret32) -> Result<(CertInfo, Vec<u8>), KeyError> {
        encrypt_to(&self.cert, secret)
    }
}

/// Why a slot's message could not be decrypted with the secret key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// None of the message's recipients is a key of this secret key.
    NotRecipient,
    /// The matching key is passphrase-protected and no passphrase was given.
    NeedPassphrase,
    /// The passphrase does not decrypt the matching secret key.
    WrongPassphrase,
    /// The message is malformed, or its payload is not 32 bytes.
    Corrupt(String),
}

/// Most PKESK packets a slot's message may hold: ours has one per encryption subkey of one
/// certificate. Each is a public-key decryption (and may need the secret key's passphrase
/// checked), so a planted message must not list hundreds.
const MAX_PKESKS: usize = 16;

/// The packets a slot's message is made of (`encrypt` writes PKESKs, then a SEIP holding one
/// literal data packet, plus an MDC for SEIPv1). Anything else, above all a compressed data
/// packet (which a planted message could use to expand 64 KiB into gigabytes), is refused
/// before it is read.
fn allowed_packet(tag: Tag) -> bool {
    matches!(tag, Tag::PKESK | Tag::SEIP | Tag::Literal | Tag::MDC | Tag::Marker | Tag::Padding)
}

struct Helper<'a> {
    key: &'a SecretKey,
    passphrase: Option<&'a [u8]>,
    /// Why no key decrypted the message (the decryptor consumes the helper, so it lives outside).
    failure: &'a std::cell::RefCell<Option<Failure>>,
}

impl Helper<'_> {
    fn refuse(&self, f: Failure) -> openpgp::anyhow::Error {
        let m = match &f {
            Failure::Corrupt(m) => m.clone(),
            _ => "no key to decrypt the message".into(),
        };
        *self.failure.borrow_mut() = Some(f);
        openpgp::anyhow::anyhow!(m)
    }
}

impl VerificationHelper for Helper<'_> {
    fn inspect(&mut self, pp: &openpgp::parse::PacketParser) -> openpgp::Result<()> {
        let tag = pp.packet.tag();
        if allowed_packet(tag) {
            return Ok(());
        }
        let what = if tag == Tag::CompressedData {
            "it holds a compressed data packet, which pgcryptfs never writes (a decompression bomb?)".to_string()
        } else {
            format!("it holds a {tag} packet, which pgcryptfs never writes in a slot")
        };
        Err(self.refuse(Failure::Corrupt(what)))
    }
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }
    fn check(&mut self, _structure: MessageStructure) -> openpgp::Result<()> {
        Ok(())
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        if pkesks.len() > MAX_PKESKS {
            return Err(self.refuse(Failure::Corrupt(format!(
                "it is encrypted to {} keys, more than the {MAX_PKESKS} a slot's message is ever encrypted to",
                pkesks.len()
            ))));
        }
        let sk = self.key;
        let mut failure = Failure::NotRecipient;
        // Each secret key is unlocked at most once, however many PKESKs name it; a key that
        // cannot be unlocked keeps the reason (a missing or wrong passphrase).
        let mut unlocked: Vec<(Fingerprint, Result<KeyPair, Option<Failure>>)> = Vec::new();
        for pkesk in pkesks {
            let rcpt = pkesk.recipient();
            for ka in sk.cert.keys().secret() {
                if let Some(r) = &rcpt
                    && !r.aliases(ka.key().key_handle())
                {
                    continue;
                }
                let fp = ka.key().fingerprint();
                let i = match unlocked.iter().position(|(f, _)| *f == fp) {
                    Some(i) => i,
                    None => {
                        let key = ka.key().clone();
                        let key = if !key.secret().is_encrypted() {
                            Ok(key)
                        } else if let Some(pass) = self.passphrase {
                            // Check the passphrase first: sequoia's own error for a wrong one is
                            // "unexpected EOF".
                            key.decrypt_secret(&Password::from(pass)).map_err(|_| Some(Failure::WrongPassphrase))
                        } else {
                            Err(Some(Failure::NeedPassphrase))
                        };
                        unlocked.push((fp, key.and_then(|k| k.into_keypair().map_err(|_| None))));
                        unlocked.len() - 1
                    }
                };
                let pair = match &mut unlocked[i].1 {
                    Ok(pair) => pair,
                    Err(why) => {
                        if let Some(why) = why {
                            failure = why.clone();
                        }
                        continue;
                    }
                };
                if let Some((algo, session)) = pkesk.decrypt(pair, sym_algo)
                    && decrypt(algo, &session)
                {
                    return Ok(None);
                }
                failure = Failure::Corrupt("the session key does not decrypt the message".into());
            }
        }
        Err(self.refuse(failure))
    }
}

/// Decrypts a slot's message; it must hold exactly 32 bytes.
pub fn decrypt(key: &SecretKey, passphrase: Option<&[u8]>, message: &[u8]) -> Result<Secret32, Failure> {
    let p = StandardPolicy::new();
    let failure = std::cell::RefCell::new(None);
    let helper = Helper { key, passphrase, failure: &failure };
    // The smallest buffer sequoia takes (it raises anything below to 1 KiB): the decryptor
    // reads this much of the literal data ahead, and ours is 32 bytes.
    let builder = DecryptorBuilder::from_bytes(message).map_err(|e| Failure::Corrupt(e.to_string()))?.buffer_size(1024);
    let mut d = match builder.with_policy(&p, None, helper) {
        Ok(d) => d,
        // The helper recorded why it gave up; anything else is a malformed message.
        Err(e) => return Err(failure.take().unwrap_or_else(|| Failure::Corrupt(e.to_string()))),
    };
    let mut out = SecretBytes(Vec::with_capacity(33));
    // At most 33 bytes (a compressed packet, which could expand without bound, was refused).
    std::io::Read::take(&mut d, 33).read_to_end(&mut out.0).map_err(|e| Failure::Corrupt(e.to_string()))?;
    if out.0.len() != 32 {
        return Err(Failure::Corrupt(format!("the message holds {} bytes, expected 32", out.0.len())));
    }
    let mut k = [0u8; 32];
    k.copy_from_slice(&out.0);
    Ok(Secret32::take(&mut k))
}
