//! Format 2's metadata decoders: the first byte picks one. 0: a tree item (`u16 key length ‖
//! key ‖ value`) through `items::check_item` and the typed decoders; 1: a root segment's body
//! (`RootBody::decode`, canonical); 2: records (a journal batch) replayed into a namespace,
//! then its commit batch checked item by item (everything a namespace writes must decode).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgcryptfs::catalog::Catalog;
use pgcryptfs::format::{self, RootBody, Time};
use pgcryptfs::items;
use pgcryptfs::namespace::Namespace;

fuzz_target!(init: pgcryptfs_fuzz::seeds::write_if_asked(), |data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else { return };
    match mode % 3 {
        0 => {
            if data.len() < 2 {
                return;
            }
            let klen = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
            let (k, v) = data[2..].split_at(klen);
            if items::check_item(k, v).is_ok() {
                match items::parse_key(k).unwrap() {
                    items::Key::Inode(_) => assert_eq!(items::InodeItem::decode(v).unwrap().encode(), v),
                    items::Key::Dirent(..) => assert_eq!(items::Dirent::decode(v).unwrap().encode(), v),
                    items::Key::DirIndex(..) => assert_eq!(items::DirIndex::decode(v).unwrap().encode(), v),
                    items::Key::Chunk(..) => assert_eq!(items::ChunkItem::decode(v).unwrap().encode(), v),
                    items::Key::Orphan(_) | items::Key::Tail(_) => assert!(v.is_empty()),
                }
            }
        }
        1 => {
            if let Ok(r) = RootBody::decode(data) {
                assert_eq!(r.encode(), data);
            }
        }
        _ => {
            let Ok(recs) = format::decode_records(data) else { return };
            let mut ns = Namespace::empty(64 * 1024);
            for r in Catalog::root_records(0, 0, Time::default()) {
                ns.apply(&r).unwrap();
            }
            for r in &recs {
                if ns.apply(r).is_err() {
                    break;
                }
            }
            let _ = ns.finish_load();
            for (k, v) in ns.freeze().iter() {
                if let Some(v) = v {
                    items::check_item(k, v).expect("the namespace wrote an item it cannot read");
                }
            }
        }
    }
});
