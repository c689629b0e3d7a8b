//! Catalog records, the plaintext of segments and journal batches: `decode_records`, then
//! applying them to a catalog (as a mount does).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgcryptfs::format::{decode_records, encode_records};

fuzz_target!(init: pgcryptfs_fuzz::seeds::write_if_asked(), |data: &[u8]| {
    if let Ok(recs) = decode_records(data) {
        // The encoding is canonical: what decodes re-encodes to the same bytes.
        assert_eq!(encode_records(&recs), data);
        let mut cat = pgcryptfs::catalog::Catalog::new(64 * 1024);
        for r in &recs {
            if cat.apply(r).is_err() {
                break;
            }
        }
    }
});
