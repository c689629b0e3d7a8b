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

/// A slot message whose literal data sits in a compression layer of 50 MB of zeros (a few
/// hundred bytes of bzip2, or ~50 KiB of deflate): refused without expanding it.
#[test]
fn a_compressed_openpgp_message_is_refused_unexpanded() {
    use pgp::parse::Parse;
    use pgp::serialize::stream::{Compressor, Encryptor, LiteralWriter, Message};
    use std::io::Write;
    let master = Secret32::random();
    let (cert_bytes, tsk) = pgp_pair("Bomb <bomb@example.org>", None);
    let slot = make_slot(&header(), &master, &NewSlot::OpenPgp(cert_bytes.clone()), None, 1).ok().unwrap();
    let cert = pgp::Cert::from_bytes(&cert_bytes).unwrap();
    let p = pgp::policy::StandardPolicy::new();
    for algo in [pgp::types::CompressionAlgorithm::BZip2, pgp::types::CompressionAlgorithm::Zip] {
        let recipients: Vec<_> = cert.keys().with_policy(&p, None).for_storage_encryption().collect();
        let mut sink = Vec::new();
        let m = Message::new(&mut sink);
        let m = Encryptor::for_recipients(m, recipients).build().unwrap();
        let m = Compressor::new(m).algo(algo).level(pgp::types::CompressionLevel::best()).build().unwrap();
        let mut w = LiteralWriter::new(m).build().unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..50 {
            w.write_all(&zeros).unwrap();
        }
        w.finalize().unwrap();
        let mut bomb = slot.clone();
        let fp = cert.fingerprint();
        bomb.params = { let mut e = format::Enc::new(); e.bytes16(fp.as_bytes()).raw(&sink); e.buf };
        assert!(bomb.params.len() <= u16::MAX as usize, "{algo:?}: {} bytes", bomb.params.len());
        let t = std::time::Instant::now();
        let e = err(open_slots(&header(), &named(&[&bomb]), &pgp_unlock(&tsk, None)));
        eprintln!("compressed ({algo:?}, {} byte message) slot refused in {:?}", sink.len(), t.elapsed());
        assert!(e.contains("is corrupt: its OpenPGP message does not decrypt") && e.contains("compressed data packet"), "{e}");
    }
}

/// A planted message listing many PKESKs (each one a public-key decryption, and a passphrase
/// check for a protected key) is refused before any is tried.
#[test]
fn a_message_to_too_many_keys_is_refused() {
    use pgp::parse::Parse;
    use pgp::serialize::stream::{Encryptor, LiteralWriter, Message};
    use std::io::Write;
    let master = Secret32::random();
    let (cert_bytes, tsk) = pgp_pair("Many <many@example.org>", Some("pw"));
    let slot = make_slot(&header(), &master, &NewSlot::OpenPgp(cert_bytes.clone()), None, 1).ok().unwrap();
    let cert = pgp::Cert::from_bytes(&cert_bytes).unwrap();
    let p = pgp::policy::StandardPolicy::new();
    let one: Vec<_> = cert.keys().with_policy(&p, None).for_storage_encryption().collect();
    let recipients: Vec<_> = (0..17).flat_map(|_| one.iter().cloned()).collect();
    let mut sink = Vec::new();
    let m = Encryptor::for_recipients(Message::new(&mut sink), recipients).build().unwrap();
    let mut w = LiteralWriter::new(m).build().unwrap();
    w.write_all(&[0; 32]).unwrap();
    w.finalize().unwrap();
    let mut many = slot.clone();
    many.params = { let mut e = format::Enc::new(); e.bytes16(cert.fingerprint().as_bytes()).raw(&sink); e.buf };
    let e = err(open_slots(&header(), &named(&[&many]), &pgp_unlock(&tsk, Some("pw"))));
    assert!(e.contains("its OpenPGP message does not decrypt: it is encrypted to 17 keys, more than the 16"), "{e}");
}

/// `reseal_fresh` remakes a slot for a new master key under a fresh slot key (a protected
/// OpenPGP key: encrypted to its own certificate, opened with its passphrase), and refuses an
/// unlock of another method.
#[test]
fn reseal_fresh_makes_a_new_slot_key() {
    let (old_master, new_master) = (Secret32::random(), Secret32::random());
    let (cert, tsk) = pgp_pair("Backup <backup@example.org>", Some("pgp pass"));
    let slot = make_slot(&header(), &old_master, &NewSlot::OpenPgp(cert), Some("offsite"), 1).ok().unwrap();
    let unlock = pgp_unlock(&tsk, Some("pgp pass"));
    let opened = open_slots(&header(), &named(&[&slot]), &unlock).ok().unwrap();
    let fresh = reseal_fresh(&header(), &opened, &unlock, &new_master, 2).ok().unwrap();
    assert_eq!((fresh.method, &fresh.label[..], fresh.created), (slot.method, &b"offsite"[..], 2));
    assert_ne!(fresh.slot_id, slot.slot_id);
    assert_ne!(fresh.params, slot.params);
    assert_eq!(slot_description(&fresh), slot_description(&slot), "same certificate, same label");
    let o = open_slots(&header(), &named(&[&fresh]), &unlock).ok().unwrap();
    assert_eq!(o.master.expose(), new_master.expose());
    assert_ne!(o.slot_key.expose(), opened.slot_key.expose());
    let e = reseal_fresh(&header(), &opened, &pass_unlock("pw"), &new_master, 2).err().unwrap().to_string();
    assert_eq!(e, "the openpgp slot that opened cannot be remade with the passphrase from passphrase file p");
}
