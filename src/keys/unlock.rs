//! Opening a vault's key slots with what the user gave, and saying clearly why none opened.

use std::collections::BTreeMap;

use super::{KeyError, Unlock, method_name, openpgp, passphrase};
use crate::crypto::{self, Secret32, SecretBytes};
use crate::format::{self, Dec, Slot, VaultHeader};

/// The slot that opened, its slot key, and the master key it holds.
pub struct Opened {
    pub slot: Slot,
    /// The key that seals this slot's master key. A rekey does not reuse it (it makes a fresh
    /// one where the method allows, see `reseal_fresh`).
    pub slot_key: Secret32,
    pub master: Secret32,
}

impl Unlock {
    fn methods(&self) -> &'static [u8] {
        match self {
            Unlock::Key { .. } => &[format::SLOT_METHOD_SODIUM, format::SLOT_METHOD_COMMAND],
            Unlock::Passphrase { .. } => &[format::SLOT_METHOD_PASSPHRASE],
            Unlock::OpenPgp { .. } => &[format::SLOT_METHOD_OPENPGP],
        }
    }

    pub(super) fn what(&self) -> String {
        match self {
            Unlock::Key { source, .. } => format!("the key from {source}"),
            Unlock::Passphrase { source, .. } => format!("the passphrase from {source}"),
            Unlock::OpenPgp { key, .. } => format!("the OpenPGP key {}", key.fingerprint()),
        }
    }
}

/// "1 sodium and 2 command slots" from per-method counts (only methods in `only`, if given).
fn count_phrase(counts: &BTreeMap<u8, usize>, only: Option<&[u8]>) -> String {
    let mut parts = Vec::new();
    let mut total = 0;
    for (m, n) in counts {
        if only.is_none_or(|o| o.contains(m)) {
            parts.push(format!("{n} {}", method_name(*m)));
            total += n;
        }
    }
    if parts.is_empty() {
        return "no slots".into();
    }
    format!("{} slot{}", parts.join(" and "), if total == 1 { "" } else { "s" })
}

/// Per-slot outcome for an OpenPGP unlock, to explain a refusal.
#[derive(Default)]
struct PgpOutcome {
    recipients: Vec<String>,
    need_passphrase: Option<String>,
    wrong_passphrase: Option<String>,
}

fn slot_key(unlock: &Unlock, slot: &Slot, pgp: &mut PgpOutcome) -> Result<Option<Secret32>, String> {
    match unlock {
        Unlock::Key { key, .. } => Ok(Some(key.duplicate())),
        Unlock::Passphrase { pass, .. } => {
            let p = passphrase::Params::decode(&slot.params)?;
            p.derive(&pass.0).map(Some).map_err(|e| e.to_string())
        }
        Unlock::OpenPgp { key, passphrase, .. } => {
            let mut d = Dec::new(&slot.params);
            let fp = d.bytes16("fingerprint").map_err(|e| e.to_string())?;
            let message = d.take(d.remaining(), "message").map_err(|e| e.to_string())?;
            let id = format::hex(&slot.slot_id);
            pgp.recipients.push(openpgp::fingerprint_hex(fp));
            match openpgp::decrypt(key, passphrase.as_ref().map(|p: &SecretBytes| &p.0[..]), message) {
                Ok(k) => Ok(Some(k)),
                Err(openpgp::Failure::NotRecipient) => Ok(None),
                Err(openpgp::Failure::NeedPassphrase) => {
                    pgp.need_passphrase.get_or_insert(id);
                    Ok(None)
                }
                Err(openpgp::Failure::WrongPassphrase) => {
                    pgp.wrong_passphrase.get_or_insert(id);
                    Ok(None)
                }
                Err(openpgp::Failure::Corrupt(m)) => Err(format!("its OpenPGP message does not decrypt: {m}")),
            }
        }
    }
}

/// Tries every slot of a matching method; returns the first that opens. A slot that cannot be
/// parsed is skipped (another may open the vault); if none opens, the error names it and says
/// which slots the vault has.
pub fn open_slots(header: &VaultHeader, slots: &[(String, Vec<u8>)], unlock: &Unlock) -> Result<Opened, KeyError> {
    let mut corrupt: Option<(String, String)> = None;
    let mut counts = BTreeMap::new();
    let mut pgp = PgpOutcome::default();
    // Cheapest passphrase slots first: a costly slot planted in the store is tried last.
    let cost = |bytes: &[u8]| match Slot::decode(bytes) {
        Ok(s) if s.method == format::SLOT_METHOD_PASSPHRASE => passphrase::Params::decode(&s.params)
            .map_or(u128::MAX, |p| u128::from(p.cost.opslimit) * u128::from(p.cost.memlimit)),
        _ => 0,
    };
    let mut ordered: Vec<&(String, Vec<u8>)> = slots.iter().collect();
    ordered.sort_by_key(|(_, b)| cost(b));
    for (name, bytes) in ordered {
        let slot = match Slot::decode(bytes) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("key slot {name} is unreadable: {e}");
                corrupt.get_or_insert((name.clone(), e.to_string()));
                continue;
            }
        };
        *counts.entry(slot.method).or_insert(0usize) += 1;
        if !unlock.methods().contains(&slot.method) {
            continue;
        }
        let key = match slot_key(unlock, &slot, &mut pgp) {
            Ok(Some(k)) => k,
            Ok(None) => continue,
            Err(reason) => {
                log::warn!("key slot {name} is corrupt: {reason}");
                corrupt.get_or_insert((name.clone(), reason));
                continue;
            }
        };
        let aad = format::slot_aad(header, &slot.prefix());
        match crypto::open(&key, &aad, &slot.sealed_key) {
            Ok(plain) => {
                let plain = SecretBytes(plain);
                let mut k = [0u8; 32];
                k.copy_from_slice(&plain.0);
                return Ok(Opened { slot, slot_key: key, master: Secret32::take(&mut k) });
            }
            // The OpenPGP layer authenticated the slot key, so the slot itself was altered.
            Err(_) if matches!(unlock, Unlock::OpenPgp { .. }) => {
                corrupt.get_or_insert((name.clone(), "its sealed master key does not open (the slot was altered)".into()));
            }
            Err(_) => {}
        }
    }
    let refusal = refusal(unlock, &counts, &pgp);
    Err(match corrupt {
        Some((slot, reason)) => KeyError::Corrupt { slot, reason, also: Some(refusal) },
        None => KeyError::Refused(refusal),
    })
}

fn refusal(unlock: &Unlock, counts: &BTreeMap<u8, usize>, pgp: &PgpOutcome) -> String {
    let matching: usize = unlock.methods().iter().map(|m| counts.get(m).copied().unwrap_or(0)).sum();
    if matching == 0 {
        let kinds: Vec<_> = unlock.methods().iter().map(|m| method_name(*m)).collect();
        return format!(
            "this vault has no {} slot, so {} cannot open it (the vault has {})",
            kinds.join(" or "),
            unlock.what(),
            count_phrase(counts, None)
        );
    }
    let theirs = count_phrase(counts, Some(unlock.methods()));
    match unlock {
        Unlock::OpenPgp { key, .. } => {
            let fp = key.fingerprint();
            if let Some(id) = &pgp.wrong_passphrase {
                return format!("the passphrase of OpenPGP key {fp} is wrong (it is the recipient of key slot {id})");
            }
            if let Some(id) = &pgp.need_passphrase {
                return format!(
                    "OpenPGP key {fp} is protected by a passphrase (it is the recipient of key slot {id}): \
                     give --pgp-passphrase-file or --pgp-passphrase-env"
                );
            }
            format!(
                "the OpenPGP key {fp} is not a recipient of any of the vault's {theirs} (they are encrypted to {})",
                pgp.recipients.join(", ")
            )
        }
        Unlock::Key { .. } => format!("{} does not open any of the vault's {theirs} (check the key and --key-transform)", unlock.what()),
        Unlock::Passphrase { .. } => format!("{} does not open any of the vault's {theirs}", unlock.what()),
    }
}
