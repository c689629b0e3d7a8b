//! The writer lease object (`lock`, read before it is authenticated): `lease::open`; and its
//! body, sealed with the fixed key so the parser behind the authentication is reached too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgcryptfs::lease;

fuzz_target!(init: pgcryptfs_fuzz::seeds::write_if_asked(), |data: &[u8]| {
    let header = pgcryptfs_fuzz::header();
    let key = pgcryptfs_fuzz::key();
    let _ = lease::open(&header, key, data);
    if let Ok(h) = lease::parse_body(data) {
        // What parses re-seals and opens to the same holder.
        assert_eq!(lease::open(&header, key, &lease::seal(&header, key, &h)).unwrap(), h);
    }
    let _ = lease::open(&header, key, &lease::seal_body(&header, key, data));
});
