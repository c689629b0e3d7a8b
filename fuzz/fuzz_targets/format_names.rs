//! Object names from store listings and cache directories: `parse_segment_name`,
//! `parse_pack_name`, `parse_hex_id`. A name parses only if it is the one the encoder
//! writes, so no two objects map to the same seq or id.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgcryptfs::format::{hex, pack_name, parse_hex_id, parse_pack_name, parse_segment_name, segment_name};

fuzz_target!(init: pgcryptfs_fuzz::seeds::write_if_asked(), |data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Some(seq) = parse_segment_name(s) {
        assert_eq!(segment_name(seq), s);
    }
    if let Some(id) = parse_pack_name(s) {
        assert_eq!(pack_name(&id), s);
    }
    if let Some(id) = parse_hex_id(s) {
        assert_eq!(hex(&id), s);
    }
});
