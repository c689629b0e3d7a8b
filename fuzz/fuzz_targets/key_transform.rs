//! A key read from a file, an environment variable or a key command's output:
//! `keys::apply_transform` (hex, base64, none).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgcryptfs::keys::{KeyTransform, apply_transform};

fuzz_target!(init: pgcryptfs_fuzz::seeds::write_if_asked(), |data: &[u8]| {
    for t in [KeyTransform::Hex, KeyTransform::Base64, KeyTransform::None] {
        let _ = apply_transform(data, t);
    }
});
