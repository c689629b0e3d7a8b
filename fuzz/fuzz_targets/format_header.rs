//! `pgcryptfs.vault` (clear, read before anything is authenticated): `VaultHeader::decode`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgcryptfs::format::{HEADER_LEN, VaultHeader};

fuzz_target!(init: pgcryptfs_fuzz::seeds::write_if_asked(), |data: &[u8]| {
    if let Ok(h) = VaultHeader::decode(data) {
        // Only the reserved byte (offset 11) may differ from the re-encoding.
        let again = h.encode();
        let mut want = [0u8; HEADER_LEN];
        want.copy_from_slice(data);
        want[11] = 0;
        assert_eq!(again, want);
        assert_eq!(VaultHeader::decode(&again), Ok(h));
    }
});
