//! Cache journal files (`<cache>/<vault>/journal-<seq>`): `split_journal`'s framing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgcryptfs::format::{JOURNAL_HEADER_LEN, journal_header, split_journal};

fuzz_target!(init: pgcryptfs_fuzz::seeds::write_if_asked(), |data: &[u8]| {
    if let Ok((seq, batches)) = split_journal(data) {
        // Re-framing the batches gives the input up to its torn tail (reserved bytes 10-11 zero).
        let mut again = journal_header(seq);
        for b in &batches {
            again.extend_from_slice(&(b.len() as u32).to_le_bytes());
            again.extend_from_slice(b);
        }
        let mut want = data[..again.len()].to_vec();
        want[10] = 0;
        want[11] = 0;
        assert_eq!(again, want);
        assert!(again.len() >= JOURNAL_HEADER_LEN);
    }
});
