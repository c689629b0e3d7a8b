//! AWS shared config and credentials files (`~/.aws/credentials`, `~/.aws/config`):
//! the INI reader, for every profile name the file mentions and for `default`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgcryptfs::store::aws_profile::section;

fuzz_target!(init: pgcryptfs_fuzz::seeds::write_if_asked(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = section(text, "default");
    if let Some(name) = text.lines().find_map(|l| l.trim().strip_prefix('[')?.strip_suffix(']')) {
        if let Ok(Some(pairs)) = section(text, name.trim()) {
            assert!(pairs.iter().all(|(k, _)| *k == k.to_ascii_lowercase()));
        }
    }
});
