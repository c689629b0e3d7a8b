//! `keys/<id>` objects (planted by anyone who can write the store): `Slot::decode`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgcryptfs::format::Slot;

fuzz_target!(init: pgcryptfs_fuzz::seeds::write_if_asked(), |data: &[u8]| {
    if let Ok(s) = Slot::decode(data) {
        // Only the reserved byte (offset 11) may differ from the re-encoding.
        let mut want = data.to_vec();
        want[11] = 0;
        assert_eq!(s.encode(), want);
        assert_eq!(Slot::decode(&want), Ok(s));
    }
});
