//! A key slot object as an unlock reads it: `Slot::decode`, then the method's parameters
//! (`passphrase::Params::decode`, the OpenPGP fingerprint and message, parsed and decrypted
//! with the test key) and the sealed master key, through `keys::open_slots`.
//! Passphrase unlocks are not fuzzed here (each try is an Argon2id run); their parameter
//! decoder is `passphrase_params`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgcryptfs::keys::open_slots;

fuzz_target!(init: {
    pgcryptfs_fuzz::seeds::write_if_asked();
    let _ = pgcryptfs_fuzz::pgp_unlock();
}, |data: &[u8]| {
    let header = pgcryptfs_fuzz::header();
    let slots = vec![("keys/fuzz".to_string(), data.to_vec())];
    let _ = open_slots(&header, &slots, pgcryptfs_fuzz::key_unlock());
    let _ = open_slots(&header, &slots, pgcryptfs_fuzz::pgp_unlock());
});
