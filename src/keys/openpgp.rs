//! `openpgp` key slots (sequoia-openpgp): a random slot key encrypted to a certificate, and
//! its recovery with the armored secret key and its optional passphrase.

use std::io::{Read, Write};

use sequoia_openpgp as openpgp;
use openpgp::cert::Cert;
use openpgp::crypto::{Password, SessionKey};
use openpgp::packet::{PKESK, SKESK};
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
}

/// Why a slot's message could not be decrypted with the secret key.
#[derive(Debug, PartialEq, Eq)]
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

struct Helper<'a> {
    key: &'a SecretKey,
    passphrase: Option<&'a [u8]>,
    /// Why no key decrypted the message (the decryptor consumes the helper, so it lives outside).
    failure: &'a std::cell::RefCell<Option<Failure>>,
}

impl VerificationHelper for Helper<'_> {
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
        let sk = self.key;
        let mut failure = Failure::NotRecipient;
        for pkesk in pkesks {
            let rcpt = pkesk.recipient();
            for ka in sk.cert.keys().secret() {
                if let Some(r) = &rcpt
                    && !r.aliases(ka.key().key_handle())
                {
                    continue;
                }
                let mut key = ka.key().clone();
                if key.secret().is_encrypted() {
                    let Some(pass) = self.passphrase else {
                        failure = Failure::NeedPassphrase;
                        continue;
                    };
                    // Check the passphrase first: sequoia's own error for a wrong one is "unexpected EOF".
                    match key.decrypt_secret(&Password::from(pass)) {
                        Ok(k) => key = k,
                        Err(_) => {
                            failure = Failure::WrongPassphrase;
                            continue;
                        }
                    }
                }
                let Ok(mut pair) = key.into_keypair() else { continue };
                if let Some((algo, session)) = pkesk.decrypt(&mut pair, sym_algo)
                    && decrypt(algo, &session)
                {
                    return Ok(None);
                }
                failure = Failure::Corrupt("the session key does not decrypt the message".into());
            }
        }
        *self.failure.borrow_mut() = Some(failure);
        Err(openpgp::anyhow::anyhow!("no key to decrypt the message"))
    }
}

/// Decrypts a slot's message; it must hold exactly 32 bytes.
pub fn decrypt(key: &SecretKey, passphrase: Option<&[u8]>, message: &[u8]) -> Result<Secret32, Failure> {
    let p = StandardPolicy::new();
    let failure = std::cell::RefCell::new(None);
    let helper = Helper { key, passphrase, failure: &failure };
    let builder = DecryptorBuilder::from_bytes(message).map_err(|e| Failure::Corrupt(e.to_string()))?;
    let mut d = match builder.with_policy(&p, None, helper) {
        Ok(d) => d,
        // The helper recorded why it gave up; anything else is a malformed message.
        Err(e) => return Err(failure.take().unwrap_or_else(|| Failure::Corrupt(e.to_string()))),
    };
    let mut out = SecretBytes(Vec::with_capacity(33));
    // At most 33 bytes: a planted message that decompresses to gigabytes stops here.
    std::io::Read::take(&mut d, 33).read_to_end(&mut out.0).map_err(|e| Failure::Corrupt(e.to_string()))?;
    if out.0.len() != 32 {
        return Err(Failure::Corrupt(format!("the message holds {} bytes, expected 32", out.0.len())));
    }
    let mut k = [0u8; 32];
    k.copy_from_slice(&out.0);
    Ok(Secret32::take(&mut k))
}
