//! `meta/<seq>` objects: the clear prefix (`SegmentPrefix::decode`), read before the body is
//! authenticated.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgcryptfs::format::SegmentPrefix;

fuzz_target!(init: pgcryptfs_fuzz::seeds::write_if_asked(), |data: &[u8]| {
    if let Ok((p, body)) = SegmentPrefix::decode(data) {
        // Only the reserved byte (offset 11) may differ from the re-encoding.
        let mut again = p.encode();
        again.extend_from_slice(body);
        let mut want = data.to_vec();
        want[11] = 0;
        assert_eq!(again, want);
        let (p2, body2) = SegmentPrefix::decode(&again).unwrap();
        assert_eq!((p2, body2), (p, body));
    }
});
