//! Sealed objects opened before their contents are trusted: the rekey proof (`rekey/proof`),
//! segment bodies, journal batches: `crypto::open` never panics on any length, and opens
//! what `crypto::seal` made.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgcryptfs::crypto;

fuzz_target!(init: pgcryptfs_fuzz::seeds::write_if_asked(), |data: &[u8]| {
    let key = pgcryptfs_fuzz::key();
    let aad = pgcryptfs::format::rekey_proof_aad(&pgcryptfs_fuzz::header(), b"pending slot");
    let _ = crypto::open(key, &aad, data);
    let sealed = crypto::seal(key, &aad, data);
    assert_eq!(crypto::open(key, &aad, &sealed).unwrap(), data);
});
