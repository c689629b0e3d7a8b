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

    /// What was given, for messages ("the key from …", "the OpenPGP key …").
    pub fn what(&self) -> String {
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
    Ok(try_slots(header, slots, unlock, false)?.swap_remove(0).1)
}

/// Every slot that opens with `unlock` (object name and what it holds), in the order they were
/// tried, for a caller that must choose between master keys when more than one opens (key
/// slots from before a rekey put back beside the new one). Sodium, command and OpenPGP slots
/// are all tried. After a passphrase slot opened, only passphrase slots of the same cost and
/// label are tried as well (what a rekey keeps when it remakes a slot): every other one would
/// cost an Argon2id derivation at every unlock. Errors as `open_slots` when none opens.
pub fn open_every_slot(header: &VaultHeader, slots: &[(String, Vec<u8>)], unlock: &Unlock) -> Result<Vec<(String, Opened)>, KeyError> {
    try_slots(header, slots, unlock, true)
}

/// The slots that open (never empty), stopping at the first unless `every`.
fn try_slots(header: &VaultHeader, slots: &[(String, Vec<u8>)], unlock: &Unlock, every: bool) -> Result<Vec<(String, Opened)>, KeyError> {
    let mut corrupt: Option<(String, String)> = None;
    let mut counts = BTreeMap::new();
    let mut pgp = PgpOutcome::default();
    let mut opened: Vec<(String, Opened)> = Vec::new();
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
        if let Some((_, first)) = opened.first()
            && slot.method == format::SLOT_METHOD_PASSPHRASE
            && !(same_cost(&first.slot, &slot) && first.slot.label == slot.label)
        {
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
                opened.push((name.clone(), Opened { slot, slot_key: key, master: Secret32::take(&mut k) }));
                if !every {
                    break;
                }
            }
            // The OpenPGP layer authenticated the slot key, so the slot itself was altered.
            Err(_) if matches!(unlock, Unlock::OpenPgp { .. }) => {
                corrupt.get_or_insert((name.clone(), "its sealed master key does not open (the slot was altered)".into()));
            }
            Err(_) => {}
        }
    }
    if !opened.is_empty() {
        return Ok(opened);
    }
    let refusal = refusal(unlock, &counts, &pgp);
    Err(match corrupt {
        Some((slot, reason)) => KeyError::Corrupt { slot, reason, also: Some(refusal) },
        None => KeyError::Refused(refusal),
    })
}

/// Whether two passphrase slots ask for the same Argon2id cost (parsed, as `slot_key` parses it).
fn same_cost(a: &Slot, b: &Slot) -> bool {
    match (passphrase::Params::decode(&a.params), passphrase::Params::decode(&b.params)) {
        (Ok(a), Ok(b)) => a.cost == b.cost,
        _ => false,
    }
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

#[cfg(test)]
mod every_slot_tests {
    use super::super::{NewSlot, make_slot, make_sodium_slot, passphrase::Cost};
    use super::*;

    fn header() -> VaultHeader {
        VaultHeader { vault_id: [1; 16], aead: 1, chunk_size: 65536, flags: 0 }
    }

    fn named(slots: &[&Slot]) -> Vec<(String, Vec<u8>)> {
        slots.iter().map(|s| (format::slot_name(&s.slot_id), s.encode())).collect()
    }

    /// Every sodium slot of the key opens (one per slot, even with the same master key); after a
    /// passphrase slot opened, only those of the same cost and label are tried.
    #[test]
    fn every_slot_that_opens_is_returned_within_the_passphrase_rule() {
        let (m1, m2, m3) = (Secret32::random(), Secret32::random(), Secret32::random());
        let key = Secret32::from_bytes([3; 32]);
        let a = make_sodium_slot(&header(), &m1, &key, "a", 1);
        let b = make_sodium_slot(&header(), &m2, &key, "b", 1);
        let c = make_sodium_slot(&header(), &m1, &key, "c", 1);
        let other = make_sodium_slot(&header(), &m3, &Secret32::from_bytes([4; 32]), "d", 1);
        let unlock = Unlock::Key { key: key.duplicate(), source: "k".into() };
        let got = open_every_slot(&header(), &named(&[&a, &b, &c, &other]), &unlock).ok().unwrap();
        let mut ids: Vec<_> = got.iter().map(|(_, o)| o.slot.slot_id).collect();
        ids.sort();
        let mut want = vec![a.slot_id, b.slot_id, c.slot_id];
        want.sort();
        assert_eq!(ids, want);
        assert_eq!(open_slots(&header(), &named(&[&a, &b]), &unlock).ok().unwrap().slot.slot_id, a.slot_id, "the first that opens");

        let cheap = Cost { opslimit: 1, memlimit: 8 << 20 };
        let dearer = Cost { opslimit: 2, memlimit: 8 << 20 };
        let pass = || NewSlot::Passphrase(SecretBytes(b"pw".to_vec()), cheap);
        let p1 = make_slot(&header(), &m1, &pass(), Some("ops"), 1).ok().unwrap();
        let p2 = make_slot(&header(), &m2, &pass(), Some("ops"), 1).ok().unwrap();
        let p3 = make_slot(&header(), &m3, &pass(), Some("someone else"), 1).ok().unwrap();
        let p4 = make_slot(&header(), &m3, &NewSlot::Passphrase(SecretBytes(b"pw".to_vec()), dearer), Some("ops"), 1).ok().unwrap();
        let unlock = Unlock::Passphrase { pass: SecretBytes(b"pw".to_vec()), source: "p".into() };
        let got = open_every_slot(&header(), &named(&[&p1, &p2, &p3, &p4]), &unlock).ok().unwrap();
        let first = &got[0].1.slot;
        assert!(got.iter().all(|(_, o)| o.slot.label == first.label), "only slots labelled as the first that opened");
        let expected = if first.label == b"ops" { 2 } else { 1 };
        assert_eq!(got.len(), expected);
        assert!(got.iter().all(|(_, o)| o.slot.slot_id != p4.slot_id), "a dearer slot is not tried after one opened");
    }
}
