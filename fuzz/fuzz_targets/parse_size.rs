//! Size arguments (`--cache-size`, `-o cache_size=...` from fstab): `config::parse_size`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgcryptfs::config::parse_size;

fuzz_target!(init: pgcryptfs_fuzz::seeds::write_if_asked(), |data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(n) = parse_size(s) {
        assert_eq!(parse_size(&n.to_string()), Ok(n));
        if n % (1 << 20) == 0 {
            assert_eq!(parse_size(&format!("{}M", n >> 20)), Ok(n));
        }
    }
});
