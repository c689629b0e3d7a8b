//! The parameters of a `passphrase` slot (clear, read before any key is tried; they set the
//! Argon2id cost): `passphrase::Params::decode` keeps the cost within bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgcryptfs::keys::passphrase::{MAX_MEMLIMIT, MAX_OPSLIMIT, Params};

fuzz_target!(init: pgcryptfs_fuzz::seeds::write_if_asked(), |data: &[u8]| {
    if let Ok(p) = Params::decode(data) {
        assert!(p.cost.memlimit <= MAX_MEMLIMIT && p.cost.opslimit <= MAX_OPSLIMIT);
        assert_eq!(p.encode(), data);
    }
});
