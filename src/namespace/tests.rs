//! The namespace against format 1's in-memory catalog, the reference: the same operations
//! must give the same answers and leave the same tree, across commits into a tree, working
//! sets dropped, and crashes (the committed tree plus the journal replayed).
use super::*;
use crate::catalog::Catalog;
use crate::format::ChunkRef;
use proptest::prelude::*;

const CS: u32 = 4096;

fn t(s: i64) -> Time {
    Time { secs: s, nanos: 0 }
}

fn loc(n: u64) -> ChunkRef {
    ChunkRef { pack: [n as u8; 16], offset: n, len: 40 + n as u32 % 7, tag: [(n >> 8) as u8; 16] }
}

fn id_of(c: &ChunkRef) -> [u8; 32] {
    let mut id = [0; 32];
    id[..16].copy_from_slice(&c.pack);
    id[16..24].copy_from_slice(&c.offset.to_le_bytes());
    id
}

fn apply_batch(base: &mut MapBase, batch: &Batch) {
    for (k, v) in batch {
        match v {
            Some(v) => {
                items::check_item(k, v).unwrap_or_else(|e| panic!("committed item {} is malformed: {e}", format::hex(k)));
                base.0.insert(k.clone(), v.clone());
            }
            None => {
                base.0.remove(k);
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create { dir: u8, name: u8, kind: u8 },
    Unlink { dir: u8, name: u8 },
    Rmdir { dir: u8, name: u8 },
    Rename { dir: u8, name: u8, to: u8, to_name: u8, noreplace: bool },
    Link { file: u8, dir: u8, name: u8 },
    Write { file: u8, index: u8, hold: bool },
    /// Every buffer held unsealed by a `Write { hold: true }` is sealed.
    Settle,
    Truncate { file: u8, size: u16 },
    Chmod { file: u8 },
    Open { file: u8 },
    Release { file: u8 },
    Remember { file: u8 },
    Forget { file: u8 },
    Journal,
    Commit,
    Evict,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let s = any::<u8>;
    prop_oneof![
        6 => (s(), 0..6u8, 0..4u8).prop_map(|(dir, name, kind)| Op::Create { dir, name, kind }),
        2 => (s(), 0..6u8).prop_map(|(dir, name)| Op::Unlink { dir, name }),
        1 => (s(), 0..6u8).prop_map(|(dir, name)| Op::Rmdir { dir, name }),
        2 => (s(), 0..6u8, s(), 0..6u8, any::<bool>()).prop_map(|(dir, name, to, to_name, noreplace)| Op::Rename { dir, name, to, to_name, noreplace }),
        1 => (s(), s(), 0..6u8).prop_map(|(file, dir, name)| Op::Link { file, dir, name }),
        6 => (s(), 0..12u8, any::<bool>()).prop_map(|(file, index, hold)| Op::Write { file, index, hold }),
        1 => Just(Op::Settle),
        2 => (s(), 0..50_000u16).prop_map(|(file, size)| Op::Truncate { file, size }),
        1 => s().prop_map(|file| Op::Chmod { file }),
        1 => s().prop_map(|file| Op::Open { file }),
        1 => s().prop_map(|file| Op::Release { file }),
        1 => s().prop_map(|file| Op::Remember { file }),
        1 => s().prop_map(|file| Op::Forget { file }),
        2 => Just(Op::Journal),
        2 => Just(Op::Commit),
        1 => Just(Op::Evict),
        1 => Just(Op::Crash),
    ]
}

/// Both sides, their journals and what the namespace committed.
struct Pair {
    c: Catalog,
    n: Namespace,
    /// Every record the catalog journaled (format 1 replays them all).
    jc: Vec<Record>,
    /// What the namespace journaled since its last commit.
    jn: Vec<Record>,
    base: MapBase,
    /// With a tree: commits go through `btree` into nodes held in memory, and the
    /// namespace reads the committed state from them (`base` is kept too, as the model).
    tree: Option<(crate::btree::Tree, Arc<MemNodes>, Arc<crate::btree::NodeCache>)>,
    counters: Counters,
    /// Inodes made, as (catalog's number, namespace's number).
    inos: Vec<(u64, u64)>,
    /// Files with a buffer held unsealed (their sizes wait to be logged).
    held: Vec<(u64, u64)>,
    now: i64,
}

fn same<T, U>(a: &std::result::Result<T, CatalogError>, b: &Result<U>) {
    match (a, b) {
        (Ok(_), Ok(_)) => {}
        (Err(x), Err(NsError::Op(y))) => assert_eq!(x, y),
        (a, b) => panic!("catalog {:?} but namespace {:?}", a.as_ref().err(), b.as_ref().err()),
    }
}

impl Pair {
    fn new() -> Pair {
        let mut c = Catalog::new(CS);
        let mut n = Namespace::empty(CS);
        let root = Catalog::root_records(0, 0, t(0));
        for r in &root {
            c.apply(r).unwrap();
            n.apply(r).unwrap();
        }
        let mut p = Pair { c, n, jc: root.clone(), jn: root, base: MapBase::default(), tree: None, counters: Counters { next_ino: 2, inodes: 0 }, inos: vec![(ROOT, ROOT)], held: Vec::new(), now: 1 };
        p.commit();
        p
    }

    fn with_tree() -> Pair {
        let mut p = Pair::new();
        let nodes = Arc::new(MemNodes::default());
        // A small cache, so that reads go to the nodes and evictions happen.
        let cache = Arc::new(crate::btree::NodeCache::new(48 * 1024));
        let tree = crate::btree::Tree::new(None).apply(&*nodes, &cache, &p.base.0.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect()).unwrap();
        p.tree = Some((tree, nodes, cache));
        p.n.committed(p.committed_base());
        p
    }

    fn committed_base(&self) -> Box<dyn Base> {
        match &self.tree {
            None => Box::new(self.base.clone()),
            Some((tree, io, cache)) => Box::new(TreeBase { tree: *tree, io: io.clone(), cache: cache.clone() }),
        }
    }

    fn pick(&self, sel: u8) -> (u64, u64) {
        self.inos[sel as usize % self.inos.len()]
    }

    fn journal(&mut self) {
        self.jc.extend(self.c.take_pending());
        self.jn.extend(self.n.take_pending().unwrap());
    }

    fn commit(&mut self) {
        self.journal();
        let batch = self.n.freeze();
        let mut base = self.base.clone();
        apply_batch(&mut base, &batch);
        self.base = base;
        if let Some((tree, io, cache)) = &mut self.tree {
            *tree = tree.apply(&**io, cache, &batch).unwrap();
        }
        self.counters = self.n.counters();
        self.n.committed(self.committed_base());
        self.jn.clear();
    }

    fn crash(&mut self) {
        let mut c = Catalog::new(CS);
        for r in &self.jc {
            c.apply(r).unwrap();
        }
        c.finish_load().unwrap();
        // What format 1 trims at load stays trimmed only once a checkpoint holds it; the
        // model takes that checkpoint at once (the namespace commits its trims).
        c.take_pending();
        self.jc = c.snapshot();
        let mut n = Namespace::new(CS, self.committed_base(), self.counters, Limits::default());
        for r in &self.jn {
            n.apply(r).unwrap_or_else(|e| panic!("replaying {r:?}: {e}"));
        }
        n.finish_load().unwrap();
        self.c = c;
        self.n = n;
        self.held.clear();
        // Format 1 numbers new inodes from the highest one replayed, so a dropped inode's
        // number comes back there: forget the pairs of inodes gone.
        let c = &self.c;
        self.inos.retain(|(ci, _)| c.get(*ci).is_ok());
        // Recovery commits what it replayed and cut before the mount goes on (as format 1
        // writes a checkpoint), so the journal it replayed is never replayed again.
        self.commit();
    }

    fn step(&mut self, op: &Op) {
        self.now += 1;
        let now = t(self.now);
        let name = |n: u8| format!("n{n}").into_bytes();
        match *op {
            Op::Create { dir, name: nm, kind } => {
                let (cd, nd) = self.pick(dir);
                let (kind, target): (Kind, &[u8]) = match kind {
                    0 | 1 => (Kind::File, b""),
                    2 => (Kind::Dir, b""),
                    _ => (Kind::Symlink, b"somewhere"),
                };
                let a = self.c.create(cd, &name(nm), kind, 0o644, 1, 2, target, now);
                let b = self.n.create(nd, &name(nm), kind, 0o644, 1, 2, target, now);
                same(&a, &b);
                if let (Ok(x), Ok(y)) = (a, b) {
                    self.inos.push((x, y));
                }
            }
            Op::Unlink { dir, name: nm } => {
                let (cd, nd) = self.pick(dir);
                same(&self.c.unlink(cd, &name(nm), now), &self.n.unlink(nd, &name(nm), now));
            }
            Op::Rmdir { dir, name: nm } => {
                let (cd, nd) = self.pick(dir);
                same(&self.c.rmdir(cd, &name(nm), now), &self.n.rmdir(nd, &name(nm), now));
            }
            Op::Rename { dir, name: nm, to, to_name, noreplace } => {
                let ((cd, nd), (ct, nt)) = (self.pick(dir), self.pick(to));
                let a = self.c.rename(cd, &name(nm), ct, &name(to_name), noreplace, now);
                let b = self.n.rename(nd, &name(nm), nt, &name(to_name), noreplace, now);
                same(&a, &b);
            }
            Op::Link { file, dir, name: nm } => {
                let ((cf, nf), (cd, nd)) = (self.pick(file), self.pick(dir));
                same(&self.c.link(cf, cd, &name(nm), now), &self.n.link(nf, nd, &name(nm), now));
            }
            Op::Settle => {
                for (cf, nf) in std::mem::take(&mut self.held) {
                    self.c.add_unsealed(cf, -1);
                    self.n.add_unsealed(nf, -1);
                }
            }
            Op::Write { file, index, hold } => {
                let (cf, nf) = self.pick(file);
                let is_file = self.c.get(cf).is_ok_and(|i| i.attr.kind == Kind::File);
                if !is_file {
                    return;
                }
                let end = (index as u64 + 1) * CS as u64 - 100;
                self.c.note_write(cf, end, now).unwrap();
                self.n.note_write(nf, end, now).unwrap();
                let l = loc(self.now as u64);
                self.c.set_chunk(cf, index as u64, l).unwrap();
                self.n.set_chunk(nf, index as u64, ChunkItem { id: id_of(&l), loc: l }).unwrap();
                if hold {
                    // Another buffer of the file is still unsealed: its size waits.
                    self.c.add_unsealed(cf, 1);
                    self.n.add_unsealed(nf, 1);
                    self.held.push((cf, nf));
                }
            }
            Op::Truncate { file, size } => {
                let (cf, nf) = self.pick(file);
                let s = SetAttr { size: Some(size as u64), ..Default::default() };
                same(&self.c.setattr(cf, &s, now), &self.n.setattr(nf, &s, now));
            }
            Op::Chmod { file } => {
                let (cf, nf) = self.pick(file);
                let s = SetAttr { mode: Some(0o600), ..Default::default() };
                same(&self.c.setattr(cf, &s, now), &self.n.setattr(nf, &s, now));
            }
            Op::Open { file } => {
                let (cf, nf) = self.pick(file);
                same(&self.c.open(cf), &self.n.open(nf));
            }
            Op::Release { file } => {
                let (cf, nf) = self.pick(file);
                // Only what was opened is released (the fs layer's handles guarantee it).
                if self.c.get(cf).is_ok_and(|i| i.open > 0) {
                    self.c.release(cf);
                    self.n.release(nf).unwrap();
                }
            }
            Op::Remember { file } => {
                let (cf, nf) = self.pick(file);
                if self.c.get(cf).is_ok() {
                    self.c.remember(cf);
                    self.n.get(nf).unwrap();
                    self.n.remember(nf);
                }
            }
            Op::Forget { file } => {
                let (cf, nf) = self.pick(file);
                if self.c.get(cf).is_ok_and(|i| i.lookups > 0) {
                    self.c.forget(cf, 1);
                    self.n.forget(nf, 1).unwrap();
                }
            }
            Op::Journal => self.journal(),
            Op::Commit => self.commit(),
            Op::Evict => self.n.shrink_working_set(0),
            Op::Crash => {
                self.journal();
                self.crash();
            }
        }
    }

    /// Both trees, walked from the root by name, must be the same.
    fn check(&mut self) {
        let mut todo = vec![(ROOT, ROOT, "/".to_string())];
        while let Some((cd, nd, path)) = todo.pop() {
            let ci = self.c.get(cd).unwrap();
            let ni = self.n.get(nd).unwrap();
            assert_eq!(ci.attr, ni.item.attr, "{path}");
            assert_eq!(ci.nlink(), ni.nlink(), "{path}");
            assert_eq!(ci.target, ni.item.target, "{path}");
            // File ids are random on each side; both have one exactly for files.
            assert_eq!(ci.file_id == [0; 16], ni.item.file_id == [0; 16], "{path}");
            if ci.attr.kind == Kind::File {
                let want: Vec<(u64, ChunkRef)> = ci.chunks().collect();
                let mut got = Vec::new();
                self.n
                    .chunks_in(nd, 0..=u64::MAX, &mut |i, c| {
                        assert_eq!(c.id, id_of(&c.loc));
                        got.push((i, c.loc));
                        ControlFlow::Continue(())
                    })
                    .unwrap();
                assert_eq!(want, got, "chunks of {path}");
            }
            if let Some(d) = &ci.dir {
                let want: Vec<(Vec<u8>, u64)> = d.after(0).map(|(_, n, i)| (n.to_vec(), i)).collect();
                let mut got = Vec::new();
                self.n
                    .readdir(nd, 0, &mut |_, n, i| {
                        got.push((n.to_vec(), i));
                        ControlFlow::Continue(())
                    })
                    .unwrap();
                assert_eq!(want.len(), got.len(), "entries of {path}: {want:?} vs {got:?}");
                assert_eq!(self.n.get(nd).unwrap().entries(), got.len() as u64, "{path}");
                for ((wn, wi), (gn, gi)) in want.into_iter().zip(got) {
                    assert_eq!(wn, gn, "entry order in {path}");
                    todo.push((wi, gi, format!("{path}{}/", String::from_utf8_lossy(&wn))));
                }
            }
        }
    }
}

/// Nodes in memory, as a vault's packs would hold them (sealing is the vault's part).
#[derive(Default)]
struct MemNodes(std::sync::Mutex<Vec<Vec<u8>>>);

impl crate::btree::NodeIo for MemNodes {
    fn read_node(&self, r: &ChunkRef) -> crate::btree::Result<Vec<u8>> {
        Ok(self.0.lock().unwrap()[r.offset as usize].clone())
    }
    fn write_node(&self, plain: &[u8]) -> crate::btree::Result<ChunkRef> {
        let mut v = self.0.lock().unwrap();
        v.push(plain.to_vec());
        Ok(ChunkRef { pack: [0; 16], offset: v.len() as u64 - 1, len: plain.len() as u32 + 40, tag: [0; 16] })
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn the_namespace_over_a_tree_behaves_as_the_in_memory_catalog(ops in proptest::collection::vec(op(), 1..160), real_tree in any::<bool>()) {
        let mut p = if real_tree { Pair::with_tree() } else { Pair::new() };
        for (n, op) in ops.iter().enumerate() {
            p.step(op);
            if n % 8 == 7 {
                p.check();
            }
        }
        p.check();
        p.commit();
        p.crash();
        p.check();
    }
}

#[test]
fn a_commit_holds_only_what_changed_and_reads_need_no_working_set() {
    let mut p = Pair::new();
    for n in 0..50u8 {
        p.step(&Op::Create { dir: 0, name: n % 6, kind: 0 });
    }
    let d = p.n.create(ROOT, b"big", Kind::Dir, 0o755, 0, 0, b"", t(9)).unwrap();
    for n in 0..500 {
        p.n.create(d, format!("f{n}").as_bytes(), Kind::File, 0o644, 0, 0, b"", t(9)).unwrap();
    }
    p.commit();
    p.n.shrink_working_set(0);
    assert!(p.n.working_set() <= 1, "only the root stays: {}", p.n.working_set());
    // One more file: the batch holds its items and its directory's, nothing else.
    let f = p.n.create(d, b"late", Kind::File, 0o644, 0, 0, b"", t(10)).unwrap();
    p.n.take_pending().unwrap();
    let batch = p.n.freeze();
    let keys: BTreeSet<Vec<u8>> = batch.keys().cloned().collect();
    let want: BTreeSet<Vec<u8>> =
        [items::inode_key(f), items::inode_key(d), items::dirent_key(d, b"late"), items::dirindex_key(d, FIRST_COOKIE + 500)].into_iter().collect();
    assert_eq!(keys, want);
    // Reading while the batch is frozen, and after it is committed.
    assert_eq!(p.n.lookup(d, b"late").unwrap().ino, f);
    let mut base = p.base.clone();
    apply_batch(&mut base, &batch);
    p.n.committed(Box::new(base));
    p.n.shrink_working_set(0);
    let mut names = 0;
    p.n.readdir(d, 0, &mut |_, _, _| {
        names += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(names, 501);
    // readdir resumes after a cookie.
    let mut first = Vec::new();
    p.n.readdir(d, FIRST_COOKIE + 498, &mut |c, n, _| {
        first.push((c, n.to_vec()));
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(first, vec![(FIRST_COOKIE + 499, b"f499".to_vec()), (FIRST_COOKIE + 500, b"late".to_vec())]);
}

#[test]
fn damaged_items_are_errors_naming_the_item() {
    let mut base = MapBase::default();
    let mut n = Namespace::empty(CS);
    for r in Catalog::root_records(0, 0, t(0)) {
        n.apply(&r).unwrap();
    }
    let f = n.create(ROOT, b"f", Kind::File, 0o644, 0, 0, b"", t(1)).unwrap();
    n.take_pending().unwrap();
    apply_batch(&mut base, &n.freeze());
    base.0.insert(items::inode_key(f), vec![1, 2, 3]);
    let mut n = Namespace::new(CS, Box::new(base), n.counters(), Limits::default());
    match n.lookup(ROOT, b"f") {
        Err(NsError::Damaged { key, .. }) => assert_eq!(key, items::inode_key(f)),
        other => panic!("{:?}", other.map(|i| i.ino)),
    }
}
