//! Tests of the node store and the root chain over a real cache and an in-memory store.

use super::*;
use crate::btree::{NodeCache, Tree};
use crate::cache::Cache;
use crate::catalog::{Catalog, ROOT};
use crate::format::{Kind, Limits, Time};
use crate::items::ChunkItem;
use crate::namespace::{Counters, Namespace, NsError, TreeBase};
use crate::store::MemStore;
use std::time::Duration;

fn header() -> VaultHeader {
    VaultHeader { vault_id: [7; 16], aead: format::AEAD_XCHACHA20POLY1305, chunk_size: 65536, flags: format::FLAG_CHUNK_CODEC }
}

fn meta() -> Secret32 {
    Secret32::from_bytes([3; 32])
}

/// A writer: a cache, the packs over it, the nodes in them, a namespace over a tree.
struct Writer {
    store: Arc<MemStore>,
    _dir: tempfile::TempDir,
    io: Arc<NodeStore>,
    cache: Arc<NodeCache>,
    tree: Tree,
    ns: Namespace,
    seq: u64,
    prev: [u8; 32],
}

impl Writer {
    fn new(store: &Arc<MemStore>) -> Writer {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), &header().vault_id, 1 << 20).unwrap();
        let packs = Arc::new(Packs::new(store.clone(), Some(cache), None, 0, Duration::from_secs(1)));
        let io = Arc::new(NodeStore::new(packs, &header(), &meta(), Compression::DEFAULT));
        let nodes = Arc::new(NodeCache::new(1 << 20));
        let base = TreeBase { tree: Tree::new(None), io: io.clone(), cache: nodes.clone() };
        let mut ns = Namespace::new(65536, Box::new(base), Counters { next_ino: ROOT + 1, inodes: 0 }, Limits::default());
        for rec in Catalog::root_records(0, 0, Time { secs: 1, nanos: 0 }) {
            ns.apply(&rec).unwrap();
        }
        Writer { store: store.clone(), _dir: dir, io, cache: nodes, tree: Tree::new(None), ns, seq: 0, prev: [0; 32] }
    }

    /// One commit: the frozen batch into the tree, the packs into the store, then the root.
    /// Returns the sealed node bytes it wrote.
    fn commit(&mut self) -> u64 {
        let before = self.io.written_bytes();
        self.ns.take_pending().unwrap();
        let batch = self.ns.freeze();
        let tree = self.tree.apply(&*self.io, &self.cache, &batch).unwrap();
        let packs = self.io.packs.clone();
        let cache = packs.cache().unwrap();
        for id in cache.take_closed_packs(true).unwrap() {
            self.store.put_moving(&format::pack_name(&id), &cache.staging_file(&id)).unwrap();
        }
        self.seq += 1;
        let c = self.ns.counters();
        let body = RootBody { tree: tree.root(), index: None, next_ino: c.next_ino, inodes: c.inodes };
        let object = seal_root(&header(), &meta(), self.seq, self.prev, &body);
        self.store.put_new(&format::segment_name(self.seq), &object).unwrap();
        self.prev = crypto::hash32(&object);
        self.tree = tree;
        self.ns.committed(Box::new(TreeBase { tree, io: self.io.clone(), cache: self.cache.clone() }));
        self.io.written_bytes() - before
    }
}

fn chunk(n: u64) -> ChunkItem {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&n.to_le_bytes());
    ChunkItem { id, loc: ChunkRef { pack: [9; 16], offset: n * 100, len: 100, tag: [n as u8; 16] } }
}

fn now() -> Time {
    Time { secs: 2, nanos: 0 }
}

/// A read-only namespace over the newest root, from the store alone (no cache).
fn reader(store: &Arc<MemStore>) -> Result<Namespace, RootError> {
    let root = load_newest(store.as_ref(), &header(), &meta())?;
    let packs = Arc::new(Packs::new(store.clone(), None, None, 0, Duration::from_secs(1)));
    let io = Arc::new(NodeStore::new(packs, &header(), &meta(), Compression::DEFAULT));
    let base = TreeBase { tree: Tree::new(root.body.tree), io, cache: Arc::new(NodeCache::new(1 << 20)) };
    let counters = Counters { next_ino: root.body.next_ino, inodes: root.body.inodes };
    Ok(Namespace::new(65536, Box::new(base), counters, Limits::default()))
}

#[test]
fn a_committed_namespace_reads_back_from_the_store_alone() {
    let store = Arc::new(MemStore::new());
    let mut w = Writer::new(&store);
    let mut inos = Vec::new();
    for n in 0..300u64 {
        let ino = w.ns.create(ROOT, format!("f{n}").as_bytes(), Kind::File, 0o600, 0, 0, b"", now()).unwrap();
        w.ns.set_chunk(ino, 0, chunk(n)).unwrap();
        w.ns.note_write(ino, 10, now()).unwrap();
        inos.push(ino);
    }
    w.commit();
    // Readable from the staging packs before and the store after: here, the store alone.
    let mut r = reader(&store).unwrap();
    for (n, &ino) in inos.iter().enumerate() {
        let i = r.lookup(ROOT, format!("f{n}").as_bytes()).unwrap();
        assert_eq!((i.ino, i.attr().size), (ino, 10));
        assert_eq!(r.chunk(ino, 0).unwrap(), Some(chunk(n as u64)));
    }
    assert_eq!(r.counters(), w.ns.counters());
    // A second commit chains to the first; the reader sees the new state.
    let ino = w.ns.create(ROOT, b"late", Kind::File, 0o600, 0, 0, b"", now()).unwrap();
    w.commit();
    let mut r = reader(&store).unwrap();
    assert_eq!(r.lookup(ROOT, b"late").unwrap().ino, ino);
    let root = load_newest(store.as_ref(), &header(), &meta()).unwrap();
    assert_eq!((root.seq, root.hash), (2, w.prev));
}

#[test]
fn nodes_are_read_from_staging_before_they_are_stored() {
    let store = Arc::new(MemStore::new());
    let mut w = Writer::new(&store);
    let f = w.ns.create(ROOT, b"f", Kind::File, 0o600, 0, 0, b"", now()).unwrap();
    w.ns.take_pending().unwrap();
    let batch = w.ns.freeze();
    let tree = w.tree.apply(&*w.io, &w.cache, &batch).unwrap();
    assert!(store.list("packs/").unwrap().is_empty(), "nothing stored yet");
    let fresh = NodeCache::new(1 << 20);
    let key = crate::items::inode_key(f);
    assert!(tree.get(&*w.io, &fresh, &key).unwrap().is_some());
}

#[test]
fn a_commit_writes_nodes_in_proportion_to_the_change_not_the_vault() {
    let store = Arc::new(MemStore::new());
    let mut w = Writer::new(&store);
    let mut files = Vec::new();
    for n in 0..20_000u64 {
        let ino = w.ns.create(ROOT, format!("file-{n:06}").as_bytes(), Kind::File, 0o600, 0, 0, b"", now()).unwrap();
        w.ns.set_chunk(ino, 0, chunk(n)).unwrap();
        files.push(ino);
    }
    let first = w.commit();
    let depth = w.tree.depth(&*w.io, &w.cache).unwrap() as u64;
    assert!(depth >= 2, "a tree of several levels: {depth}");
    w.ns.shrink_working_set(0);
    // One chunk of one file changes: one leaf per changed item region and its ancestors.
    w.ns.set_chunk(files[12_345], 1, chunk(1)).unwrap();
    w.ns.note_write(files[12_345], 70_000, now()).unwrap();
    let second = w.commit();
    assert!(first > 20 * second, "the first commit wrote the whole tree ({first} bytes), the second {second}");
    assert!(second <= 2 * depth * 40 * 1024, "a one-file change wrote {second} bytes of nodes at depth {depth}");
}

#[test]
fn tampered_nodes_are_errors_naming_the_pack() {
    let store = Arc::new(MemStore::new());
    let mut w = Writer::new(&store);
    for n in 0..50u64 {
        w.ns.create(ROOT, format!("f{n}").as_bytes(), Kind::File, 0o600, 0, 0, b"", now()).unwrap();
    }
    w.commit();
    let packs = store.list("packs/").unwrap();
    assert_eq!(packs.len(), 1);
    let name = &packs[0].0;
    let good = store.get(name).unwrap();
    for at in [0, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 1;
        store.put(name, &bad).unwrap();
        let mut r = reader(&store).unwrap();
        match r.lookup(ROOT, b"f7") {
            Err(NsError::Base(e)) => {
                let msg = e.to_string();
                assert!(msg.contains(name.trim_start_matches("packs/")), "{msg}");
            }
            other => panic!("a damaged node read as {:?}", other.map(|i| i.ino)),
        }
    }
    // A missing pack is an error too, never an empty directory.
    store.delete(name).unwrap();
    assert!(matches!(reader(&store).unwrap().lookup(ROOT, b"f7"), Err(NsError::Base(_))));
}

#[test]
fn roots_are_refused_when_forged_moved_oversized_or_off_the_chain() {
    let store = Arc::new(MemStore::new());
    let mut w = Writer::new(&store);
    w.commit();
    w.ns.create(ROOT, b"a", Kind::File, 0o600, 0, 0, b"", now()).unwrap();
    w.commit();
    let one = store.get(&format::segment_name(1)).unwrap();
    let two = store.get(&format::segment_name(2)).unwrap();
    let err = |s: &Arc<MemStore>| load_newest(s.as_ref(), &header(), &meta()).unwrap_err();
    // Root 1 replayed as root 2.
    store.put(&format::segment_name(2), &one).unwrap();
    assert!(matches!(err(&store), RootError::WrongSeq { seq: 2, claimed: 1 }), "{}", err(&store));
    // Sealed under another key (or vault).
    let other = seal_root(&header(), &Secret32::from_bytes([4; 32]), 2, crypto::hash32(&one), &RootBody {
        tree: None,
        index: None,
        next_ino: 2,
        inodes: 1,
    });
    store.put(&format::segment_name(2), &other).unwrap();
    assert!(matches!(err(&store), RootError::Forged { seq: 2 }));
    let mut flipped = two.clone();
    flipped[format::SEGMENT_PREFIX_LEN + 3] ^= 1;
    store.put(&format::segment_name(2), &flipped).unwrap();
    assert!(matches!(err(&store), RootError::Forged { seq: 2 }));
    // A prefix changed: the AAD covers it.
    let mut moved = two.clone();
    moved[format::SEGMENT_PREFIX_LEN - 1] ^= 1; // the previous hash
    store.put(&format::segment_name(2), &moved).unwrap();
    assert!(matches!(err(&store), RootError::Forged { seq: 2 }));
    // A root that chains to another first root than the one present.
    let fork = seal_root(&header(), &meta(), 2, [1; 32], &RootBody { tree: None, index: None, next_ino: 2, inodes: 1 });
    store.put(&format::segment_name(2), &fork).unwrap();
    assert!(matches!(err(&store), RootError::Chain { seq: 2 }));
    // Planted huge: refused by its listed size, unread.
    store.put(&format::segment_name(3), &vec![0; 1 << 20]).unwrap();
    let reads = store.range_reads();
    assert!(matches!(err(&store), RootError::TooLarge { seq: 3, .. }));
    assert_eq!(store.range_reads(), reads);
    store.delete(&format::segment_name(3)).unwrap();
    // A format 1 segment where a root belongs.
    let prefix = SegmentPrefix { kind: format::SEGMENT_DELTA, seq: 2, prev_hash: [0; 32] }.encode();
    let mut delta = prefix.clone();
    crypto::seal_into(&meta(), &format::segment_aad(&header(), &prefix), b"", &mut delta);
    store.put(&format::segment_name(2), &delta).unwrap();
    assert!(matches!(err(&store), RootError::NotRoot { seq: 2, kind: format::SEGMENT_DELTA }));
    // Restored, it loads again; with the first root gone (cleaned up), the second still loads.
    store.put(&format::segment_name(2), &two).unwrap();
    assert_eq!(load_newest(store.as_ref(), &header(), &meta()).unwrap().seq, 2);
    store.delete(&format::segment_name(1)).unwrap();
    assert_eq!(load_newest(store.as_ref(), &header(), &meta()).unwrap().seq, 2);
    store.delete(&format::segment_name(2)).unwrap();
    assert!(matches!(err(&store), RootError::Empty));
}

#[test]
fn the_largest_root_fits_its_bound() {
    let r = ChunkRef { pack: [1; 16], offset: u64::MAX / 2, len: 1 << 20, tag: [2; 16] };
    let body = RootBody { tree: Some(r), index: Some(r), next_ino: u64::MAX - 1, inodes: 5 };
    let object = seal_root(&header(), &meta(), 9, [5; 32], &body);
    assert_eq!(object.len(), ROOT_MAX_OBJECT);
    assert_eq!(open_root(&header(), &meta(), 9, &object).unwrap().1, body);
}
