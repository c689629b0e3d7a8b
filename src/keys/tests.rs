//! Unit tests of key slots: every method opens only with its own secret, and every refusal
//! says which slots exist and why none opened.

use sequoia_openpgp as pgp;
use pgp::cert::CertBuilder;
use pgp::serialize::SerializeInto;

use super::passphrase::Cost;
use super::*;
use crate::format::SLOT_METHOD_PASSPHRASE;

const CHEAP: Cost = Cost { opslimit: 1, memlimit: 8 << 20 };

fn header() -> VaultHeader {
    VaultHeader { vault_id: [1; 16], aead: 1, chunk_size: 65536, flags: 0 }
}

fn named(slots: &[&Slot]) -> Vec<(String, Vec<u8>)> {
    slots.iter().map(|s| (format::slot_name(&s.slot_id), s.encode())).collect()
}

fn key_unlock(b: u8) -> Unlock {
    Unlock::Key { key: Secret32::from_bytes([b; 32]), source: format!("key file k{b}") }
}

fn pass_unlock(p: &str) -> Unlock {
    Unlock::Passphrase { pass: SecretBytes(p.as_bytes().to_vec()), source: "passphrase file p".into() }
}

fn err(r: Result<Opened, KeyError>) -> String {
    match r {
        Ok(_) => panic!("opened"),
        Err(e) => e.to_string(),
    }
}

/// A Cv25519 cert whose messages GnuPG 2.2 can read too (SEIPDv1 only); armored public and secret.
fn pgp_pair(user: &str, password: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let (cert, _) = CertBuilder::general_purpose([user])
        .set_features(pgp::types::Features::empty().set_seipdv1())
        .unwrap()
        .set_password(password.map(Into::into))
        .generate()
        .unwrap();
    (cert.armored().to_vec().unwrap(), cert.as_tsk().armored().to_vec().unwrap())
}

fn pgp_unlock(tsk: &[u8], pass: Option<&str>) -> Unlock {
    Unlock::OpenPgp {
        key: openpgp::SecretKey::parse(tsk, "test key").ok().unwrap(),
        passphrase: pass.map(|p| SecretBytes(p.as_bytes().to_vec())),
        source: "test key".into(),
    }
}

#[test]
fn sodium_slots_open_only_with_their_key_and_header() {
    let master = Secret32::random();
    let slot = make_sodium_slot(&header(), &master, &Secret32::from_bytes([3; 32]), "primary", 100);
    let slots = named(&[&slot]);
    let opened = open_slots(&header(), &slots, &key_unlock(3)).ok().unwrap();
    assert_eq!(opened.slot.slot_id, slot.slot_id);
    assert_eq!(opened.master.expose(), master.expose());
    assert_eq!(
        err(open_slots(&header(), &slots, &key_unlock(4))),
        "the key from key file k4 does not open any of the vault's 1 sodium slot (check the key and --key-transform)"
    );
    let other = VaultHeader { vault_id: [2; 16], ..header() };
    assert!(open_slots(&other, &slots, &key_unlock(3)).is_err());
    // A changed clear field (the label) breaks the slot too.
    let mut tampered = slot.encode();
    tampered[8 + 2 + 1 + 1 + 16 + 8 + 2] ^= 1;
    assert!(open_slots(&header(), &[("k".into(), tampered)], &key_unlock(3)).is_err());
    let corrupt = err(open_slots(&header(), &[("keys/b".into(), vec![1, 2, 3])], &key_unlock(3)));
    assert!(corrupt.starts_with("key slot keys/b is corrupt: "), "{corrupt}");
}

#[test]
fn command_slots_open_with_the_key_and_are_named_apart() {
    let master = Secret32::random();
    let cmd = make_slot(&header(), &master, &NewSlot::Command(Secret32::from_bytes([5; 32])), None, 1).ok().unwrap();
    let sod = make_slot(&header(), &master, &NewSlot::Sodium(Secret32::from_bytes([6; 32])), None, 1).ok().unwrap();
    assert_eq!(method_name(cmd.method), "command");
    assert_eq!(slot_description(&cmd), "command");
    let slots = named(&[&cmd, &sod]);
    assert_eq!(open_slots(&header(), &slots, &key_unlock(5)).ok().unwrap().slot.slot_id, cmd.slot_id);
    assert_eq!(open_slots(&header(), &slots, &key_unlock(6)).ok().unwrap().slot.slot_id, sod.slot_id);
    assert_eq!(
        err(open_slots(&header(), &slots, &key_unlock(7))),
        "the key from key file k7 does not open any of the vault's 1 sodium and 1 command slots \
         (check the key and --key-transform)"
    );
}

#[test]
fn passphrase_slots() {
    let master = Secret32::random();
    let new = |p: &str| NewSlot::Passphrase(SecretBytes(p.as_bytes().to_vec()), CHEAP);
    let a = make_slot(&header(), &master, &new("alpha"), Some("ops team"), 1).ok().unwrap();
    let b = make_slot(&header(), &master, &new("beta"), None, 1).ok().unwrap();
    assert_eq!(a.params.len(), passphrase::PARAMS_LEN);
    assert_eq!(slot_description(&a), "ops team");
    let slots = named(&[&a, &b]);
    let o = open_slots(&header(), &slots, &pass_unlock("beta")).ok().unwrap();
    assert_eq!((o.slot.slot_id, o.master.expose()), (b.slot_id, master.expose()));
    assert_eq!(
        err(open_slots(&header(), &slots, &pass_unlock("gamma"))),
        "the passphrase from passphrase file p does not open any of the vault's 2 passphrase slots"
    );
    // A key cannot open a passphrase-only vault, and is told what the vault has.
    assert_eq!(
        err(open_slots(&header(), &slots, &key_unlock(1))),
        "this vault has no sodium or command slot, so the key from key file k1 cannot open it \
         (the vault has 2 passphrase slots)"
    );
    // Absurd Argon2id costs in a slot are refused before any work is done.
    let mut greedy = a.clone();
    greedy.params = passphrase::Params { cost: Cost { opslimit: 1, memlimit: 1 << 40 }, salt: [0; 16] }.encode();
    let e = err(open_slots(&header(), &named(&[&greedy]), &pass_unlock("alpha")));
    assert!(e.starts_with(&format!("key slot keys/{} is corrupt: Argon2id memlimit", format::hex(&a.slot_id))), "{e}");
    assert!(e.ends_with("does not open any of the vault's 1 passphrase slot"), "{e}");
    assert_eq!(greedy.method, SLOT_METHOD_PASSPHRASE);
}

#[test]
fn openpgp_slots() {
    let master = Secret32::random();
    let (cert, tsk) = pgp_pair("Backup <backup@example.org>", Some("pgp pass"));
    let (other_cert, other_tsk) = pgp_pair("Other <other@example.org>", None);
    let slot = make_slot(&header(), &master, &NewSlot::OpenPgp(cert.clone()), None, 1).ok().unwrap();
    let fp = openpgp::SecretKey::parse(&tsk, "t").ok().unwrap().fingerprint();
    assert_eq!(slot_description(&slot), format!("{fp} Backup <backup@example.org>"));
    let slots = named(&[&slot]);
    let o = open_slots(&header(), &slots, &pgp_unlock(&tsk, Some("pgp pass"))).ok().unwrap();
    assert_eq!(o.master.expose(), master.expose());
    let id = format::hex(&slot.slot_id);
    assert_eq!(
        err(open_slots(&header(), &slots, &pgp_unlock(&tsk, Some("wrong")))),
        format!("the passphrase of OpenPGP key {fp} is wrong (it is the recipient of key slot {id})")
    );
    assert_eq!(
        err(open_slots(&header(), &slots, &pgp_unlock(&tsk, None))),
        format!(
            "OpenPGP key {fp} is protected by a passphrase (it is the recipient of key slot {id}): \
             give --pgp-passphrase-file or --pgp-passphrase-env"
        )
    );
    let other_fp = openpgp::SecretKey::parse(&other_tsk, "t").ok().unwrap().fingerprint();
    assert_eq!(
        err(open_slots(&header(), &slots, &pgp_unlock(&other_tsk, None))),
        format!("the OpenPGP key {other_fp} is not a recipient of any of the vault's 1 openpgp slot (they are encrypted to {fp})")
    );
    // The public certificate alone cannot unlock.
    let public_only = openpgp::SecretKey::parse(&other_cert, "cert.asc").err().unwrap().to_string();
    assert!(public_only.starts_with("cert.asc holds only the public certificate"), "{public_only}");
    // The PGP message is in the clear prefix, so the AAD binds it: swapping one breaks the slot.
    let mut swapped = slot.clone();
    let other_slot = make_slot(&header(), &master, &NewSlot::OpenPgp(cert), None, 1).ok().unwrap();
    swapped.params = other_slot.params.clone();
    let e = err(open_slots(&header(), &named(&[&swapped]), &pgp_unlock(&tsk, Some("pgp pass"))));
    assert!(e.contains("its sealed master key does not open (the slot was altered)"), "{e}");
    // Garbage instead of a message.
    let mut junk = slot.clone();
    junk.params = { let mut e = format::Enc::new(); e.bytes16(&[1; 20]).raw(b"not pgp"); e.buf };
    let e = err(open_slots(&header(), &named(&[&junk]), &pgp_unlock(&tsk, Some("pgp pass"))));
    assert!(e.contains("is corrupt: its OpenPGP message does not decrypt"), "{e}");
}

#[test]
fn any_of_several_methods_opens() {
    let master = Secret32::random();
    let (cert, tsk) = pgp_pair("A <a@example.org>", None);
    let slots = [
        make_slot(&header(), &master, &NewSlot::Sodium(Secret32::from_bytes([1; 32])), None, 1).ok().unwrap(),
        make_slot(&header(), &master, &NewSlot::Passphrase(SecretBytes(b"pw".to_vec()), CHEAP), None, 2).ok().unwrap(),
        make_slot(&header(), &master, &NewSlot::OpenPgp(cert), None, 3).ok().unwrap(),
    ];
    let slots = named(&slots.iter().collect::<Vec<_>>());
    for u in [key_unlock(1), pass_unlock("pw"), pgp_unlock(&tsk, None)] {
        assert_eq!(open_slots(&header(), &slots, &u).ok().unwrap().master.expose(), master.expose());
    }
    assert_eq!(
        err(open_slots(&header(), &slots[..1], &pass_unlock("pw"))),
        "this vault has no passphrase slot, so the passphrase from passphrase file p cannot open it \
         (the vault has 1 sodium slot)"
    );
}
