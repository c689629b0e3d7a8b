//! Format 2's metadata tree nodes (plaintext, after the node's seal opened): `btree::decode_node`
//! on arbitrary bytes; a node it accepts keeps its bounds and re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgcryptfs::btree::{self, Entry};

fuzz_target!(init: pgcryptfs_fuzz::seeds::write_if_asked(), |data: &[u8]| {
    let Ok(node) = btree::decode_node(data) else { return };
    assert!(data.len() <= btree::MAX_NODE && node.level() <= btree::MAX_LEVEL && !node.is_empty());
    let entries: Vec<Entry> = (0..node.len()).map(|i| node.entry(i)).collect();
    let mut prev: Option<&[u8]> = None;
    for e in &entries {
        let key = match *e {
            Entry::Leaf { key, value } => {
                assert!(node.level() == 0 && value.len() <= btree::MAX_VALUE);
                key
            }
            Entry::Child { key, .. } => {
                assert!(node.level() > 0);
                key
            }
        };
        assert!(key.len() <= btree::MAX_KEY && prev.is_none_or(|p| p < key));
        prev = Some(key);
    }
    assert_eq!(btree::encode_node(node.level(), &entries), data);
});
