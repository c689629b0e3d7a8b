//! A persistent copy-on-write B+tree of byte-string keys and values, kept as nodes through `NodeIo`.
//!
//! Format 2 keeps every metadata item of a vault in one such tree, and the dedup index in
//! another (docs/FORMAT2-DESIGN.md §3–4). A commit applies a batch of changes by path copying:
//! the nodes on the paths to changed keys are written anew, untouched subtrees are referenced
//! and never read, and every older root stays readable. Sealing nodes into packs is not this
//! module's business: it hands plaintext to a `NodeIo` and gets a `ChunkRef` back.
//!
//! Node plaintext (docs/FORMAT.md), integers little-endian: `level u8` (0 = leaf, at most
//! `MAX_LEVEL`) ‖ `0u8` ‖ `n u16` (≥ 1) ‖ n entries. A leaf entry is `klen u16 ‖ key ‖ vlen u32 ‖
//! value`; an internal entry is `klen u16 ‖ key ‖ child` (`ChunkRef`: pack 16 ‖ offset u64 ‖ len
//! u32 ‖ tag 16), its key being the smallest key of the child's subtree. Keys strictly increase
//! within a node, nothing follows the last entry, and a child sits exactly one level below its
//! parent with its keys in [its separator, the next separator); readers check all of it.
//!
//! Shape: a node whose encoding passes `SPLIT_TARGET` is cut (unless it did not grow past the
//! node it replaces). Where the batch appended after a node's last key, pieces are filled to the
//! target from the left, so sequential keys pack nodes full; otherwise the cut goes just after
//! the last entry the batch wrote, moved as little as needed to leave `MIN_FILL` on each side.
//! A cut never leaves a piece under `MIN_FILL`: such a remainder stays with the piece before
//! it, so nodes reach `MAX_FILL` at most. A changed node under `MIN_FILL` merges with a
//! neighbour (cut again if that is too big); one that is its parent's only child dissolves the
//! parent, and an ancestor joins its entries to the nearest node of its level in a neighbouring
//! subtree. An internal root with one child gives way to the child.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::format::{ChunkRef, Dec, FormatError, ID_LEN, Id, TAG_LEN};

/// Longest key.
pub const MAX_KEY: usize = 1024;
/// Longest value.
pub const MAX_VALUE: usize = 16 * 1024;
/// Largest node plaintext a reader accepts.
pub const MAX_NODE: usize = 64 * 1024;
/// A node whose encoding passes this is cut into pieces filled up to it.
pub const SPLIT_TARGET: usize = 32 * 1024;
/// A node (other than the root) holds at least this many bytes; one under it merges.
pub const MIN_FILL: usize = SPLIT_TARGET / 4;
/// Largest node a writer makes: a cut never leaves a piece under `MIN_FILL`.
pub const MAX_FILL: usize = SPLIT_TARGET + MIN_FILL;
/// Highest level (a leaf is level 0), so a path from the root has at most 13 nodes.
pub const MAX_LEVEL: u8 = 12;
/// Level, reserved byte, entry count.
pub const NODE_HEADER_LEN: usize = 4;
/// An encoded child reference: pack, offset, sealed length, tag.
pub const CHILD_REF_LEN: usize = ID_LEN + 8 + 4 + TAG_LEN;

const HDR: usize = NODE_HEADER_LEN;
/// What a cached node costs beyond its bytes and entry offsets (the node, the LRU's entry).
const NODE_OVERHEAD: usize = 128;

#[derive(Debug)]
pub enum TreeError {
    /// The `NodeIo` failed; its error is the source.
    Node(Box<dyn std::error::Error + Send + Sync>),
    /// A node read back is not a valid node where its parent points to it.
    Malformed { node: ChunkRef, what: &'static str },
    /// A key or value of a batch is over its bound.
    TooLarge { what: &'static str, len: usize, max: usize },
    /// The tree would grow past `MAX_LEVEL`.
    TooDeep,
}

impl TreeError {
    /// Wraps a `NodeIo` implementation's error, keeping it as the source.
    pub fn node(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> TreeError {
        TreeError::Node(e.into())
    }
}

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TreeError::Node(e) => write!(f, "metadata node I/O failed: {e}"),
            TreeError::Malformed { node, what } => write!(
                f,
                "metadata node in pack {} at offset {} is malformed: {what}",
                crate::format::hex(&node.pack),
                node.offset
            ),
            TreeError::TooLarge { what, len, max } => write!(f, "{what} of {len} bytes is over the bound of {max}"),
            TreeError::TooDeep => write!(f, "the tree would have more than {} levels", MAX_LEVEL as usize + 1),
        }
    }
}

impl std::error::Error for TreeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TreeError::Node(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, TreeError>;

/// Where nodes live. Implementations seal, append, open and authenticate them.
pub trait NodeIo {
    /// The authenticated plaintext of the node at `r` (the implementation opens and checks it).
    fn read_node(&self, r: &ChunkRef) -> Result<Vec<u8>>;
    /// Stores a node's plaintext (the implementation seals and appends it); returns where it went.
    fn write_node(&self, plain: &[u8]) -> Result<ChunkRef>;
}

// ---------------------------------------------------------------------------------------------
// Nodes

/// One entry of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    Leaf { key: &'a [u8], value: &'a [u8] },
    Child { key: &'a [u8], child: ChunkRef },
}

/// A decoded node: its encoding and where each entry starts, checked once when decoded.
#[derive(Debug)]
pub struct Node {
    level: u8,
    buf: Vec<u8>,
    starts: Vec<u32>,
}

/// Why bytes are not a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadNode(pub &'static str);

impl fmt::Display for BadNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a tree node: {}", self.0)
    }
}

impl std::error::Error for BadNode {}

/// Decodes a node's plaintext, checking everything that does not depend on its place in the
/// tree (bounds, counts, lengths, key order, no trailing bytes).
pub fn decode_node(bytes: &[u8]) -> std::result::Result<Node, BadNode> {
    if bytes.len() > MAX_NODE {
        return Err(BadNode("larger than 64 KiB"));
    }
    let cut = |_: FormatError| BadNode("truncated");
    let mut d = Dec::new(bytes);
    let level = d.u8("node").map_err(cut)?;
    if level > MAX_LEVEL {
        return Err(BadNode("level above 12"));
    }
    if d.u8("node").map_err(cut)? != 0 {
        return Err(BadNode("reserved byte is not zero"));
    }
    let n = d.u16("node").map_err(cut)? as usize;
    if n == 0 {
        return Err(BadNode("no entries"));
    }
    let mut starts = Vec::with_capacity(n);
    let mut prev: Option<&[u8]> = None;
    for _ in 0..n {
        starts.push(d.pos() as u32);
        let key = d.bytes16("node").map_err(cut)?;
        if key.len() > MAX_KEY {
            return Err(BadNode("key over 1024 bytes"));
        }
        if prev.is_some_and(|p| key <= p) {
            return Err(BadNode("keys are not in increasing order"));
        }
        prev = Some(key);
        if level == 0 {
            let vlen = d.u32("node").map_err(cut)? as usize;
            if vlen > MAX_VALUE {
                return Err(BadNode("value over 16 KiB"));
            }
            d.take(vlen, "node").map_err(cut)?;
        } else {
            d.take(CHILD_REF_LEN, "node").map_err(cut)?;
        }
    }
    if d.remaining() != 0 {
        return Err(BadNode("trailing bytes"));
    }
    Ok(Node { level, buf: bytes.to_vec(), starts })
}

/// Encodes a node of `level` (entries must be `Leaf` at level 0 and `Child` above, with
/// increasing keys): the writer's own encoding, for tests and the fuzz target.
pub fn encode_node(level: u8, entries: &[Entry<'_>]) -> Vec<u8> {
    let mut run = Run::new(level, 0);
    for e in entries {
        match *e {
            Entry::Leaf { key, value } => run.push_leaf(key, value),
            Entry::Child { key, child } => run.push_child(key, &child),
        }
    }
    run.node(0, run.len()).buf
}

impl Node {
    pub fn level(&self) -> u8 {
        self.level
    }
    pub fn len(&self) -> usize {
        self.starts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }
    /// The plaintext this node was decoded from.
    pub fn encoded(&self) -> &[u8] {
        &self.buf
    }
    /// Entry `i` (panics if `i >= len()`, as slices do).
    pub fn entry(&self, i: usize) -> Entry<'_> {
        entry_of(self.level, self.span(i))
    }
    pub fn key(&self, i: usize) -> &[u8] {
        entry_key(self.span(i))
    }
    fn span(&self, i: usize) -> &[u8] {
        let end = self.starts.get(i + 1).map_or(self.buf.len(), |&e| e as usize);
        &self.buf[self.starts[i] as usize..end]
    }
    fn value(&self, i: usize) -> &[u8] {
        let e = self.span(i);
        &e[2 + entry_key(e).len() + 4..]
    }
    fn child(&self, i: usize) -> ChunkRef {
        child_of(self.span(i))
    }
    /// The first entry whose key is not below `key`.
    fn lower_bound(&self, key: &[u8]) -> usize {
        self.starts.partition_point(|&s| entry_key(&self.buf[s as usize..]) < key)
    }
    /// The child whose subtree would hold `key` (None: below the node's first key).
    fn child_for(&self, key: &[u8]) -> Option<usize> {
        self.starts.partition_point(|&s| entry_key(&self.buf[s as usize..]) <= key).checked_sub(1)
    }
    /// Bytes it holds in a cache.
    fn cost(&self) -> usize {
        self.buf.len() + 4 * self.starts.len() + NODE_OVERHEAD
    }
}

fn entry_key(e: &[u8]) -> &[u8] {
    let k = u16::from_le_bytes([e[0], e[1]]) as usize;
    &e[2..2 + k]
}

fn entry_of(level: u8, e: &[u8]) -> Entry<'_> {
    let key = entry_key(e);
    if level == 0 {
        Entry::Leaf { key, value: &e[2 + key.len() + 4..] }
    } else {
        Entry::Child { key, child: child_of(e) }
    }
}

/// The child reference ending an internal entry.
fn child_of(e: &[u8]) -> ChunkRef {
    let b = &e[e.len() - CHILD_REF_LEN..];
    let mut pack: Id = [0; ID_LEN];
    pack.copy_from_slice(&b[..16]);
    let mut offset = [0; 8];
    offset.copy_from_slice(&b[16..24]);
    let mut len = [0; 4];
    len.copy_from_slice(&b[24..28]);
    let mut tag = [0; TAG_LEN];
    tag.copy_from_slice(&b[28..]);
    ChunkRef { pack, offset: u64::from_le_bytes(offset), len: u32::from_le_bytes(len), tag }
}

// ---------------------------------------------------------------------------------------------
// Runs: one level's entries in key order, encoded back to back, before they are cut into nodes

struct Run {
    level: u8,
    buf: Vec<u8>,
    starts: Vec<usize>,
    /// Entries before this index include the last one the batch wrote (where a cut goes).
    changed_end: Option<usize>,
    /// Encoded size of the node this run replaces (0 if none): a run that did not grow past it
    /// is not cut.
    old_size: usize,
}

impl Run {
    fn new(level: u8, old_size: usize) -> Run {
        Run { level, buf: Vec::new(), starts: Vec::new(), changed_end: None, old_size }
    }
    fn from_node(node: &Node) -> Run {
        Run {
            level: node.level,
            buf: node.buf[HDR..].to_vec(),
            starts: node.starts.iter().map(|&s| s as usize - HDR).collect(),
            changed_end: None,
            old_size: node.buf.len(),
        }
    }
    fn len(&self) -> usize {
        self.starts.len()
    }
    fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }
    fn node_size(&self) -> usize {
        HDR + self.buf.len()
    }
    /// Bytes before entry `i` (all of them for `i == len()`).
    fn at(&self, i: usize) -> usize {
        self.starts.get(i).copied().unwrap_or(self.buf.len())
    }
    fn span(&self, i: usize) -> &[u8] {
        &self.buf[self.starts[i]..self.at(i + 1)]
    }
    fn key(&self, i: usize) -> &[u8] {
        entry_key(self.span(i))
    }
    fn child(&self, i: usize) -> ChunkRef {
        child_of(self.span(i))
    }
    fn push_raw(&mut self, entry: &[u8]) {
        self.starts.push(self.buf.len());
        self.buf.extend_from_slice(entry);
    }
    fn push_leaf(&mut self, key: &[u8], value: &[u8]) {
        self.starts.push(self.buf.len());
        self.buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(value);
    }
    fn push_child(&mut self, key: &[u8], r: &ChunkRef) {
        self.starts.push(self.buf.len());
        self.buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(&r.pack);
        self.buf.extend_from_slice(&r.offset.to_le_bytes());
        self.buf.extend_from_slice(&r.len.to_le_bytes());
        self.buf.extend_from_slice(&r.tag);
    }
    fn mark_changed(&mut self) {
        self.changed_end = Some(self.len());
    }
    /// Appends `other`'s entries (all greater): a merge, cut in the middle if too big.
    fn append(&mut self, other: Run) {
        let base = self.buf.len();
        self.starts.extend(other.starts.iter().map(|s| s + base));
        self.buf.extend_from_slice(&other.buf);
        self.changed_end = None;
        self.old_size = 0;
    }

    /// Where each node starts: the shape rules of the module comment.
    fn cuts(&self) -> Vec<usize> {
        let (n, body) = (self.len(), self.buf.len());
        let size = self.node_size();
        if size <= SPLIT_TARGET || size <= self.old_size.min(MAX_FILL) {
            return vec![0];
        }
        if self.changed_end == Some(n) {
            return self.greedy(0, n);
        }
        let want = self.changed_end.unwrap_or_else(|| self.starts.partition_point(|&s| 2 * s < body));
        let lo = (1..n).find(|&c| HDR + self.at(c) >= MIN_FILL);
        let hi = (1..n).rev().find(|&c| HDR + body - self.at(c) >= MIN_FILL);
        match (lo, hi) {
            (Some(lo), Some(hi)) if lo <= hi => {
                let c = want.clamp(lo, hi);
                let mut cuts = self.greedy(0, c);
                cuts.extend(self.greedy(c, n));
                cuts
            }
            _ => self.greedy(0, n),
        }
    }

    /// Pieces of entries `a..b` filled up to the target; a last piece under `MIN_FILL` stays
    /// with the one before it.
    fn greedy(&self, a: usize, b: usize) -> Vec<usize> {
        let mut cuts = vec![a];
        let mut size = HDR;
        for i in a..b {
            let e = self.at(i + 1) - self.at(i);
            if size + e > SPLIT_TARGET && size > HDR {
                cuts.push(i);
                size = HDR;
            }
            size += e;
        }
        if cuts.len() > 1 && size < MIN_FILL {
            cuts.pop();
        }
        cuts
    }

    /// The node of entries `a..b`.
    fn node(&self, a: usize, b: usize) -> Node {
        let (from, to) = (self.at(a), self.at(b));
        let mut buf = Vec::with_capacity(HDR + to - from);
        buf.extend_from_slice(&[self.level, 0]);
        buf.extend_from_slice(&((b - a) as u16).to_le_bytes());
        buf.extend_from_slice(&self.buf[from..to]);
        let starts = self.starts[a..b].iter().map(|&s| (s - from + HDR) as u32).collect();
        Node { level: self.level, buf, starts }
    }
}

// ---------------------------------------------------------------------------------------------
// The node cache

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct NodeKey {
    pack: Id,
    offset: u64,
    len: u32,
    tag: [u8; TAG_LEN],
}

impl From<&ChunkRef> for NodeKey {
    fn from(r: &ChunkRef) -> Self {
        NodeKey { pack: r.pack, offset: r.offset, len: r.len, tag: r.tag }
    }
}

/// Decoded nodes by reference, least recently used dropped first, within a byte budget
/// (the sum of decoded sizes). Shared between threads.
pub struct NodeCache {
    state: Mutex<CacheState>,
    hits: AtomicU64,
    misses: AtomicU64,
}

struct CacheState {
    lru: lru::LruCache<NodeKey, Arc<Node>>,
    bytes: usize,
    budget: usize,
}

impl NodeCache {
    pub fn new(budget_bytes: usize) -> NodeCache {
        NodeCache {
            state: Mutex::new(CacheState { lru: lru::LruCache::unbounded(), bytes: 0, budget: budget_bytes }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
    /// Bytes held (never more than the budget).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
    /// Nodes held.
    pub fn len(&self) -> usize {
        self.lock().lru.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn lock(&self) -> MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn get(&self, r: &ChunkRef) -> Option<Arc<Node>> {
        let found = self.lock().lru.get(&NodeKey::from(r)).cloned();
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }
    fn insert(&self, r: &ChunkRef, node: Arc<Node>) {
        let cost = node.cost();
        let mut s = self.lock();
        if cost > s.budget {
            return;
        }
        if let Some(old) = s.lru.put(NodeKey::from(r), node) {
            s.bytes -= old.cost();
        }
        s.bytes += cost;
        while s.bytes > s.budget {
            match s.lru.pop_lru() {
                Some((_, old)) => s.bytes -= old.cost(),
                None => break,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tree

/// A tree by its root (None: empty). Cheap to copy; every version stays readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tree {
    root: Option<ChunkRef>,
}

type Change<'a> = (&'a [u8], Option<&'a [u8]>);

/// What `Tree::scan` calls with each key and value; `Break` stops the scan.
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> ControlFlow<()> + 'a;

impl Tree {
    pub fn new(root: Option<ChunkRef>) -> Tree {
        Tree { root }
    }
    pub fn root(&self) -> Option<ChunkRef> {
        self.root
    }

    pub fn get(&self, io: &dyn NodeIo, cache: &NodeCache, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match &self.root {
            None => Ok(None),
            Some(r) => Ctx { io, cache }.get(r, ROOT, key),
        }
    }

    /// Visits the entries with `start <= key < end` (`end` None: to the last) in key order; the
    /// visitor may stop early.
    pub fn scan(
        &self,
        io: &dyn NodeIo,
        cache: &NodeCache,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut Visitor<'_>,
    ) -> Result<()> {
        if let Some(r) = &self.root {
            let _stopped = Ctx { io, cache }.scan(r, ROOT, start, end, f)?;
        }
        Ok(())
    }

    /// Levels from the root to the leaves (0 for the empty tree).
    pub fn depth(&self, io: &dyn NodeIo, cache: &NodeCache) -> Result<usize> {
        match &self.root {
            None => Ok(0),
            Some(r) => Ok(Ctx { io, cache }.load(r, ROOT)?.level as usize + 1),
        }
    }

    /// Applies a batch (Some: insert or replace, None: delete; deleting an absent key does
    /// nothing), writing only the nodes on changed paths, and returns the new tree. This tree
    /// stays valid. A batch that changes nothing writes nothing and returns this tree.
    pub fn apply(
        &self,
        io: &dyn NodeIo,
        cache: &NodeCache,
        changes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) -> Result<Tree> {
        for (k, v) in changes {
            if k.len() > MAX_KEY {
                return Err(TreeError::TooLarge { what: "key", len: k.len(), max: MAX_KEY });
            }
            if let Some(v) = v.as_ref().filter(|v| v.len() > MAX_VALUE) {
                return Err(TreeError::TooLarge { what: "value", len: v.len(), max: MAX_VALUE });
            }
        }
        if changes.is_empty() {
            return Ok(*self);
        }
        let batch: Vec<Change<'_>> = changes.iter().map(|(k, v)| (k.as_slice(), v.as_deref())).collect();
        let cx = Ctx { io, cache };
        let outcome = match &self.root {
            None => cx.update_leaf(&Node { level: 0, buf: vec![0; HDR], starts: Vec::new() }, &batch),
            Some(r) => cx.update(&*cx.load(r, ROOT)?, None, &batch)?,
        };
        match outcome {
            Outcome::Same => Ok(*self),
            Outcome::Run(run) | Outcome::Lone(run) => cx.finish(run),
        }
    }

    /// Calls `f(node, level)` for every node reachable from the root, parents before children,
    /// leaves included (reported from their parent, not read); `Ok(false)` skips the node's
    /// subtree. For garbage collection's mark phase.
    pub fn walk_nodes(
        &self,
        io: &dyn NodeIo,
        cache: &NodeCache,
        f: &mut dyn FnMut(&ChunkRef, u8) -> Result<bool>,
    ) -> Result<()> {
        let Some(r) = &self.root else { return Ok(()) };
        let cx = Ctx { io, cache };
        let node = cx.load(r, ROOT)?;
        if f(r, node.level)? {
            cx.walk(&node, None, f)?;
        }
        Ok(())
    }
}

/// What a node must be where it is found: its level and the bounds its parent gives it.
#[derive(Clone, Copy)]
struct Place<'a> {
    level: Option<u8>,
    lo: Option<&'a [u8]>,
    hi: Option<&'a [u8]>,
}

const ROOT: Place<'static> = Place { level: None, lo: None, hi: None };

impl<'a> Place<'a> {
    /// The place of child `i` of `node`, whose own upper bound is `hi`.
    fn child(node: &'a Node, i: usize, hi: Option<&'a [u8]>) -> Place<'a> {
        let next = if i + 1 < node.len() { Some(node.key(i + 1)) } else { hi };
        Place { level: Some(node.level - 1), lo: Some(node.key(i)), hi: next }
    }
    fn child_of_run(run: &'a Run, i: usize, hi: Option<&'a [u8]>) -> Place<'a> {
        let next = if i + 1 < run.len() { Some(run.key(i + 1)) } else { hi };
        Place { level: Some(run.level - 1), lo: Some(run.key(i)), hi: next }
    }
}

/// A node's new contents after a batch.
enum Outcome {
    /// Nothing changed.
    Same,
    /// Its entries (at its own level), not yet cut into nodes.
    Run(Run),
    /// It dissolved: it was left with one child under `MIN_FILL`, whose entries (at a lower
    /// level) an ancestor merges into a neighbour.
    Lone(Run),
}

/// A child of the node being rebuilt: children `first..=last` of the old node, unchanged
/// (`run` None, then `first == last`) or replaced by `run`.
struct Part {
    first: usize,
    last: usize,
    run: Option<Run>,
}

struct Ctx<'a> {
    io: &'a dyn NodeIo,
    cache: &'a NodeCache,
}

impl Ctx<'_> {
    /// The node at `r`, checked against its place.
    fn load(&self, r: &ChunkRef, place: Place<'_>) -> Result<Arc<Node>> {
        let node = match self.cache.get(r) {
            Some(node) => node,
            None => {
                let bytes = self.io.read_node(r)?;
                let node = Arc::new(decode_node(&bytes).map_err(|e| TreeError::Malformed { node: *r, what: e.0 })?);
                self.cache.insert(r, node.clone());
                node
            }
        };
        let bad = |what| Err(TreeError::Malformed { node: *r, what });
        if place.level.is_some_and(|l| l != node.level) {
            return bad("its level is not one below its parent's");
        }
        if place.lo.is_some_and(|lo| node.key(0) != lo) {
            return bad("its first key is not its separator in the parent");
        }
        if place.hi.is_some_and(|hi| node.key(node.len() - 1) >= hi) {
            return bad("its keys reach the next separator in the parent");
        }
        Ok(node)
    }

    fn get(&self, r: &ChunkRef, place: Place<'_>, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let node = self.load(r, place)?;
        if node.level == 0 {
            let i = node.lower_bound(key);
            return Ok((i < node.len() && node.key(i) == key).then(|| node.value(i).to_vec()));
        }
        match node.child_for(key) {
            None => Ok(None),
            Some(i) => self.get(&node.child(i), Place::child(&node, i, place.hi), key),
        }
    }

    fn scan(
        &self,
        r: &ChunkRef,
        place: Place<'_>,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut Visitor<'_>,
    ) -> Result<ControlFlow<()>> {
        let node = self.load(r, place)?;
        let first = if node.level == 0 { node.lower_bound(start) } else { node.child_for(start).unwrap_or(0) };
        for i in first..node.len() {
            if end.is_some_and(|e| node.key(i) >= e) {
                return Ok(ControlFlow::Break(()));
            }
            let flow = if node.level == 0 {
                f(node.key(i), node.value(i))
            } else {
                self.scan(&node.child(i), Place::child(&node, i, place.hi), start, end, f)?
            };
            if flow.is_break() {
                return Ok(flow);
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    fn walk(&self, node: &Node, hi: Option<&[u8]>, f: &mut dyn FnMut(&ChunkRef, u8) -> Result<bool>) -> Result<()> {
        if node.level == 0 {
            return Ok(());
        }
        for i in 0..node.len() {
            let r = node.child(i);
            if f(&r, node.level - 1)? && node.level > 1 {
                let place = Place::child(node, i, hi);
                self.walk(&*self.load(&r, place)?, place.hi, f)?;
            }
        }
        Ok(())
    }

    /// The batch (all keys below `hi`) applied to the subtree of `node`.
    fn update(&self, node: &Node, hi: Option<&[u8]>, batch: &[Change<'_>]) -> Result<Outcome> {
        if node.level == 0 {
            return Ok(self.update_leaf(node, batch));
        }
        let mut parts = Vec::with_capacity(node.len());
        let mut rest = batch;
        let mut changed = false;
        for i in 0..node.len() {
            let place = Place::child(node, i, hi);
            let take = match place.hi {
                Some(h) => rest.partition_point(|(k, _)| *k < h),
                None => rest.len(),
            };
            let (mine, after) = rest.split_at(take);
            rest = after;
            let mut run = None;
            if !mine.is_empty() {
                let child = self.load(&node.child(i), place)?;
                if let Outcome::Run(r) | Outcome::Lone(r) = self.update(&child, place.hi, mine)? {
                    changed = true;
                    run = Some(r);
                }
            }
            parts.push(Part { first: i, last: i, run });
        }
        if !changed {
            return Ok(Outcome::Same);
        }
        self.rebuild(node, hi, parts)
    }

    fn update_leaf(&self, old: &Node, batch: &[Change<'_>]) -> Outcome {
        let mut run = Run::new(0, old.buf.len());
        let (n, mut i, mut changed) = (old.len(), 0, false);
        for &(key, value) in batch {
            while i < n && old.key(i) < key {
                run.push_raw(old.span(i));
                i += 1;
            }
            let present = i < n && old.key(i) == key;
            match value {
                Some(v) if present && old.value(i) == v => run.push_raw(old.span(i)),
                Some(v) => {
                    run.push_leaf(key, v);
                    run.mark_changed();
                    changed = true;
                }
                None => changed |= present,
            }
            i += present as usize;
        }
        for j in i..n {
            run.push_raw(old.span(j));
        }
        if changed { Outcome::Run(run) } else { Outcome::Same }
    }

    /// The entries of `node` (bound above by `hi`) once its changed children are merged where
    /// they fell under `MIN_FILL` and cut into nodes (written).
    fn rebuild(&self, node: &Node, hi: Option<&[u8]>, mut parts: Vec<Part>) -> Result<Outcome> {
        let below = node.level - 1;
        parts.retain(|p| p.run.as_ref().is_none_or(|r| !r.is_empty()));
        // A dissolved child (entries of a lower level) joins a neighbour first, then a changed
        // child under the underflow bound merges with one.
        let lone = |p: &Part| p.run.as_ref().is_some_and(|r| r.level < below);
        let small = |p: &Part| p.run.as_ref().is_some_and(|r| r.node_size() < MIN_FILL);
        while parts.len() > 1 {
            let Some(i) = parts.iter().position(lone).or_else(|| parts.iter().position(small)) else { break };
            let a = if i + 1 < parts.len() { i } else { i - 1 };
            let right = parts.remove(a + 1);
            let left = parts.remove(a);
            parts.insert(a, self.join(node, hi, left, right)?);
        }
        if parts.len() == 1 && (lone(&parts[0]) || small(&parts[0])) {
            if let Some(run) = parts.pop().and_then(|p| p.run) {
                return Ok(Outcome::Lone(run));
            }
        }
        let mut out = Run::new(node.level, node.buf.len());
        for p in parts {
            match p.run {
                None => out.push_raw(node.span(p.first)),
                Some(run) => {
                    for (key, r) in self.pack(&run)? {
                        out.push_child(&key, &r);
                        out.mark_changed();
                    }
                }
            }
        }
        Ok(Outcome::Run(out))
    }

    /// A part's entries: its run, or its unchanged child's entries.
    fn part_run(&self, node: &Node, hi: Option<&[u8]>, p: Part) -> Result<Run> {
        match p.run {
            Some(run) => Ok(run),
            None => Ok(Run::from_node(&*self.load(&node.child(p.first), Place::child(node, p.first, hi))?)),
        }
    }

    /// Two neighbouring parts as one: runs of one level end to end, or the lower one joined to
    /// the nearest node of its level in the other.
    fn join(&self, node: &Node, hi: Option<&[u8]>, left: Part, right: Part) -> Result<Part> {
        let (first, last, left_last) = (left.first, right.last, left.last);
        let (mut l, r) = (self.part_run(node, hi, left)?, self.part_run(node, hi, right)?);
        let run = match l.level.cmp(&r.level) {
            std::cmp::Ordering::Equal => {
                l.append(r);
                l
            }
            std::cmp::Ordering::Greater => self.absorb(&l, part_hi(node, hi, left_last), r, false)?,
            std::cmp::Ordering::Less => self.absorb(&r, part_hi(node, hi, last), l, true)?,
        };
        Ok(Part { first, last, run: Some(run) })
    }

    /// `target`'s entries after `lone` (entries of a lower level) joined the first (`front`)
    /// or last node of its level under it; the nodes on that edge are written anew.
    fn absorb(&self, target: &Run, hi: Option<&[u8]>, lone: Run, front: bool) -> Result<Run> {
        let c = if front { 0 } else { target.len() - 1 };
        let place = Place::child_of_run(target, c, hi);
        let child = Run::from_node(&*self.load(&target.child(c), place)?);
        let merged = if child.level > lone.level {
            self.absorb(&child, place.hi, lone, front)?
        } else if front {
            let mut lone = lone;
            lone.append(child);
            lone
        } else {
            let mut child = child;
            child.append(lone);
            child
        };
        let pieces = self.pack(&merged)?;
        let mut out = Run::new(target.level, target.old_size);
        for i in 0..target.len() {
            if i != c {
                out.push_raw(target.span(i));
            } else {
                pieces.iter().for_each(|(key, r)| out.push_child(key, r));
            }
        }
        Ok(out)
    }

    /// Cuts a run into nodes and writes them: (first key, reference) of each.
    fn pack(&self, run: &Run) -> Result<Vec<(Vec<u8>, ChunkRef)>> {
        let cuts = run.cuts();
        let mut out = Vec::with_capacity(cuts.len());
        for (x, &a) in cuts.iter().enumerate() {
            let b = cuts.get(x + 1).copied().unwrap_or(run.len());
            let node = run.node(a, b);
            let r = self.io.write_node(&node.buf)?;
            out.push((run.key(a).to_vec(), r));
            self.cache.insert(&r, Arc::new(node));
        }
        Ok(out)
    }

    /// The tree whose root level holds `run`: cut, with levels added above until one node
    /// remains, or collapsed while the root is an internal node with one child.
    fn finish(&self, mut run: Run) -> Result<Tree> {
        loop {
            if run.is_empty() {
                return Ok(Tree { root: None });
            }
            if run.level > 0 && run.len() == 1 {
                let (mut root, mut level) = (run.child(0), run.level - 1);
                while level > 0 {
                    let node = self.load(&root, Place { level: Some(level), lo: None, hi: None })?;
                    if node.len() > 1 {
                        break;
                    }
                    (root, level) = (node.child(0), level - 1);
                }
                return Ok(Tree { root: Some(root) });
            }
            let level = run.level;
            let pieces = self.pack(&run)?;
            if let [(_, r)] = pieces.as_slice() {
                return Ok(Tree { root: Some(*r) });
            }
            if level >= MAX_LEVEL {
                return Err(TreeError::TooDeep);
            }
            run = Run::new(level + 1, 0);
            for (key, r) in &pieces {
                run.push_child(key, r);
            }
            run.mark_changed();
        }
    }
}

/// The upper bound of the old children `..=last` of `node`.
fn part_hi<'a>(node: &'a Node, hi: Option<&'a [u8]>, last: usize) -> Option<&'a [u8]> {
    if last + 1 < node.len() { Some(node.key(last + 1)) } else { hi }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::sync::atomic::AtomicBool;

    type Batch = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

    /// Nodes in a map, counting reads and writes; `fail` makes reads fail.
    #[derive(Default)]
    struct MemIo {
        nodes: Mutex<HashMap<u64, Vec<u8>>>,
        next: AtomicU64,
        reads: AtomicU64,
        writes: AtomicU64,
        fail: AtomicBool,
    }

    impl MemIo {
        fn writes(&self) -> u64 {
            self.writes.load(Ordering::Relaxed)
        }
        fn raw(&self, r: &ChunkRef) -> Vec<u8> {
            self.nodes.lock().unwrap()[&r.offset].clone()
        }
        fn replace(&self, r: &ChunkRef, bytes: Vec<u8>) {
            self.nodes.lock().unwrap().insert(r.offset, bytes);
        }
    }

    impl NodeIo for MemIo {
        fn read_node(&self, r: &ChunkRef) -> Result<Vec<u8>> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            if self.fail.load(Ordering::Relaxed) {
                return Err(TreeError::node(std::io::Error::other("disk on fire")));
            }
            self.nodes.lock().unwrap().get(&r.offset).cloned().ok_or_else(|| TreeError::node("no such node"))
        }
        fn write_node(&self, plain: &[u8]) -> Result<ChunkRef> {
            assert!(decode_node(plain).is_ok(), "the writer made a node its reader refuses");
            let offset = self.next.fetch_add(1, Ordering::Relaxed);
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.nodes.lock().unwrap().insert(offset, plain.to_vec());
            Ok(ChunkRef { pack: [9; 16], offset, len: plain.len() as u32, tag: [offset as u8; 16] })
        }
    }

    fn contents(io: &MemIo, cache: &NodeCache, t: &Tree, start: &[u8], end: Option<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        t.scan(io, cache, start, end, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            ControlFlow::Continue(())
        })
        .unwrap();
        out
    }

    #[derive(Default)]
    struct Shape {
        depth: usize,
        nodes: Vec<ChunkRef>,
        leaf_sizes: Vec<usize>,
    }

    /// Walks the stored nodes themselves and checks every invariant of the module comment.
    fn check(io: &MemIo, t: &Tree) -> Shape {
        let mut s = Shape::default();
        if let Some(r) = t.root() {
            s.depth = check_node(io, &r, None, None, None, &mut s) as usize + 1;
        }
        s
    }

    fn check_node(
        io: &MemIo,
        r: &ChunkRef,
        level: Option<u8>,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
        s: &mut Shape,
    ) -> u8 {
        s.nodes.push(*r);
        let bytes = io.raw(r);
        let node = decode_node(&bytes).expect("every node decodes");
        assert!(bytes.len() <= MAX_FILL, "a node of {} bytes", bytes.len());
        match level {
            None => assert!(node.level() == 0 || node.len() >= 2, "an internal root with one child"),
            Some(l) => {
                assert_eq!(node.level(), l);
                assert!(bytes.len() >= MIN_FILL, "a node of {} bytes under the underflow bound", bytes.len());
            }
        }
        assert!(lo.is_none_or(|lo| node.key(0) == lo), "first key is not the separator");
        assert!(hi.is_none_or(|hi| node.key(node.len() - 1) < hi), "keys reach the next separator");
        if node.level() == 0 {
            s.leaf_sizes.push(bytes.len());
        }
        for i in 0..node.len() {
            if let Entry::Child { key, child } = node.entry(i) {
                let next = if i + 1 < node.len() { Some(node.key(i + 1)) } else { hi };
                check_node(io, &child, Some(node.level() - 1), Some(key), next, s);
            }
        }
        node.level()
    }

    fn be(i: u64) -> Vec<u8> {
        i.to_be_bytes().to_vec()
    }

    /// A chunk map entry's worth: 76 bytes.
    fn value76(i: u64, salt: u8) -> Vec<u8> {
        let mut v = vec![salt; 76];
        v[..8].copy_from_slice(&i.to_le_bytes());
        v
    }

    /// `n` entries with keys `be(i * step)`, in one batch.
    fn build(io: &MemIo, cache: &NodeCache, n: u64, step: u64) -> Tree {
        let batch: Batch = (0..n).map(|i| (be(i * step), Some(value76(i * step, 0)))).collect();
        Tree::new(None).apply(io, cache, &batch).unwrap()
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(Vec<u8>, Vec<u8>),
        Delete(Vec<u8>),
        DeleteNth(usize),
        DeleteRun(usize, usize),
    }

    fn arb_key() -> impl Strategy<Value = Vec<u8>> {
        (0usize..5, proptest::collection::vec(0u8..4, 0..24)).prop_map(|(p, suffix)| {
            let mut k = match p {
                0 => Vec::new(),
                1 => b"a".to_vec(),
                2 => vec![b'p'; 300],
                3 => vec![b'q'; 1000],
                _ => vec![b'z'; MAX_KEY],
            };
            k.extend(suffix);
            k.truncate(MAX_KEY);
            k
        })
    }

    fn arb_value() -> impl Strategy<Value = Vec<u8>> {
        let len = prop_oneof![4 => 0usize..80, 2 => 80usize..2000, 1 => 2000usize..=MAX_VALUE];
        (len, any::<u8>()).prop_map(|(n, b)| (0..n).map(|i| b.wrapping_add((i / 7) as u8)).collect())
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (arb_key(), arb_value()).prop_map(|(k, v)| Op::Put(k, v)),
            1 => arb_key().prop_map(Op::Delete),
            2 => any::<usize>().prop_map(Op::DeleteNth),
            1 => (any::<usize>(), 1usize..150).prop_map(|(i, n)| Op::DeleteRun(i, n)),
        ]
    }

    fn batch_of(ops: Vec<Op>, model: &BTreeMap<Vec<u8>, Vec<u8>>) -> Batch {
        let mut batch = Batch::new();
        let nth = |i: usize| model.keys().nth(i % model.len().max(1)).cloned();
        for op in ops {
            match op {
                Op::Put(k, v) => drop(batch.insert(k, Some(v))),
                Op::Delete(k) => drop(batch.insert(k, None)),
                Op::DeleteNth(i) => batch.extend(nth(i).map(|k| (k, None))),
                Op::DeleteRun(i, n) => {
                    let skip = i % model.len().max(1);
                    batch.extend(model.keys().skip(skip).take(n).map(|k| (k.clone(), None)));
                }
            }
        }
        batch
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        /// Random batches over several commits: scan and get agree with a BTreeMap, the tree
        /// keeps its invariants, walk_nodes reaches exactly its nodes, and every older root
        /// still reads what it held.
        #[test]
        fn agrees_with_a_model(
            commits in proptest::collection::vec(proptest::collection::vec(arb_op(), 0..60), 1..7),
            bounds in (arb_key(), arb_key()),
        ) {
            let io = MemIo::default();
            let cache = NodeCache::new(256 << 10);
            let (mut tree, mut model) = (Tree::new(None), BTreeMap::new());
            let mut history = vec![(tree, model.clone())];
            for ops in commits {
                let batch = batch_of(ops, &model);
                for (k, v) in &batch {
                    match v {
                        Some(v) => drop(model.insert(k.clone(), v.clone())),
                        None => drop(model.remove(k)),
                    }
                }
                tree = tree.apply(&io, &cache, &batch).unwrap();
                let shape = check(&io, &tree);
                let mut walked = Vec::new();
                tree.walk_nodes(&io, &cache, &mut |r, _| { walked.push(*r); Ok(true) }).unwrap();
                prop_assert_eq!(&walked, &shape.nodes);
                let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                prop_assert_eq!(contents(&io, &cache, &tree, b"", None), want);
                for k in batch.keys().chain(model.keys().take(20)) {
                    prop_assert_eq!(tree.get(&io, &cache, k).unwrap(), model.get(k).cloned());
                }
                let (lo, hi) = (&bounds.0, &bounds.1);
                let want: Vec<_> = model.iter().filter(|(k, _)| *k >= lo && *k < hi).map(|(k, v)| (k.clone(), v.clone())).collect();
                prop_assert_eq!(contents(&io, &cache, &tree, lo, Some(hi)), want);
                history.push((tree, model.clone()));
            }
            for (t, m) in &history {
                let want: Vec<_> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                prop_assert_eq!(contents(&io, &NodeCache::new(0), t, b"", None), want);
            }
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), level in 0u8..3) {
            let mut bytes = bytes;
            if bytes.len() >= 4 {
                bytes[0] = level;
                bytes[1] = 0;
            }
            if let Ok(node) = decode_node(&bytes) {
                let entries: Vec<_> = (0..node.len()).map(|i| node.entry(i)).collect();
                prop_assert_eq!(encode_node(node.level(), &entries), bytes);
            }
        }
    }

    /// Entries of up to 17 KiB and keys of 1000 bytes make a deep tree with few entries;
    /// commits grow it, then delete runs of it (whole subtrees, leaving lone nodes) until empty.
    #[test]
    fn deep_tree_grows_and_shrinks() {
        let (io, cache) = (MemIo::default(), NodeCache::new(1 << 20));
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut tree, mut model) = (Tree::new(None), BTreeMap::<Vec<u8>, Vec<u8>>::new());
        let key = |i: u64| [vec![b'k'; 992], be(i)].concat();
        let mut deepest = 0;
        for round in 0..40 {
            let mut batch = Batch::new();
            if round < 12 {
                for _ in 0..60 {
                    let i = rng.below(5000);
                    batch.insert(key(i), Some(vec![i as u8; 4000 + rng.below(12_384) as usize]));
                }
            } else if !model.is_empty() {
                for _ in 0..3 {
                    let skip = rng.below(model.len() as u64) as usize;
                    let n = 1 + rng.below(120) as usize;
                    batch.extend(model.keys().skip(skip).take(n).map(|k| (k.clone(), None)));
                }
            }
            if round == 39 {
                batch.extend(model.keys().map(|k| (k.clone(), None)));
            }
            for (k, v) in &batch {
                match v {
                    Some(v) => drop(model.insert(k.clone(), v.clone())),
                    None => drop(model.remove(k)),
                }
            }
            tree = tree.apply(&io, &cache, &batch).unwrap();
            deepest = deepest.max(check(&io, &tree).depth);
            let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            assert_eq!(contents(&io, &cache, &tree, b"", None), want, "round {round}");
        }
        assert!(deepest >= 3, "depth {deepest}");
        assert_eq!(tree.root(), None);
    }

    /// A subtree left with one small leaf dissolves: the leaf's entries join the nearest leaf
    /// of the neighbouring subtree (on its right, or on its left for the last subtree).
    #[test]
    fn dissolved_subtrees_join_their_neighbours() {
        let (io, cache) = (MemIo::default(), NodeCache::new(1 << 20));
        let key = |i: u64| [vec![b'k'; 992], be(i)].concat();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = (0..1500).map(|i| (key(i), vec![i as u8; 5000])).collect();
        let batch: Batch = model.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
        let mut tree = Tree::new(None).apply(&io, &cache, &batch).unwrap();
        assert_eq!(check(&io, &tree).depth, 3);
        for pick in [4, usize::MAX, 0] {
            // The level-1 subtrees' first keys; empty all of subtree `pick` but its first key.
            let mut firsts = Vec::new();
            tree.walk_nodes(&io, &cache, &mut |r, level| {
                if level == 1 {
                    firsts.push(decode_node(&io.raw(r)).unwrap().key(0).to_vec());
                }
                Ok(level > 1)
            })
            .unwrap();
            let x = pick.min(firsts.len() - 1);
            let end = firsts.get(x + 1).cloned();
            let doomed: Batch = model
                .range(firsts[x].clone()..)
                .skip(1)
                .take_while(|(k, _)| end.as_ref().is_none_or(|e| *k < e))
                .map(|(k, _)| (k.clone(), None))
                .collect();
            model.retain(|k, _| !doomed.contains_key(k));
            tree = tree.apply(&io, &cache, &doomed).unwrap();
            check(&io, &tree);
            let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            assert_eq!(contents(&io, &cache, &tree, b"", None), want);
        }
    }

    /// Cost follows the change: at 100,000 entries one change writes the nodes of one path
    /// (plus one when a leaf splits or merges), and an empty or no-op batch writes nothing.
    #[test]
    fn cost_follows_the_change() {
        let (io, cache) = (MemIo::default(), NodeCache::new(16 << 20));
        let base = build(&io, &cache, 100_000, 2);
        let depth = check(&io, &base).depth as u64;
        let mut rng = Rng(7);
        let mut tree = base;
        let cost = |tree: &mut Tree, batch: Batch| {
            let before = io.writes();
            *tree = tree.apply(&io, &cache, &batch).unwrap();
            io.writes() - before
        };
        assert_eq!(cost(&mut tree, Batch::new()), 0);
        assert_eq!(tree, base);
        let absent: Batch = (0..50).map(|i| (be(2 * i + 1), None)).collect();
        assert_eq!(cost(&mut tree, absent), 0);
        assert_eq!(cost(&mut tree, [(be(10), Some(value76(10, 0)))].into()), 0);
        assert_eq!(tree, base);

        let (mut replace, mut insert, mut delete) = (0, 0, 0);
        for _ in 0..100 {
            let i = rng.below(100_000) * 2;
            replace = replace.max(cost(&mut tree, [(be(i), Some(value76(i, 1)))].into()));
            let j = rng.below(100_000) * 2 + 1;
            insert = insert.max(cost(&mut tree, [(be(j), Some(value76(j, 2)))].into()));
            let k = rng.below(100_000) * 2;
            delete = delete.max(cost(&mut tree, [(be(k), None)].into()));
        }
        eprintln!(
            "100k entries, depth {depth}: one change writes at most {replace} (replace), {insert} (insert), {delete} (delete)"
        );
        assert_eq!(replace, depth);
        assert!(insert <= depth + 1 && delete <= depth + 1, "{insert} {delete}");

        let k = 64;
        let scattered: Batch = (0..k).map(|_| rng.below(100_000) * 2).map(|i| (be(i), Some(value76(i, 3)))).collect();
        let replaced = cost(&mut tree, scattered);
        let mixed: Batch = (0..k)
            .map(|x| {
                let i = rng.below(200_000);
                (be(i), (x % 3 != 0).then(|| value76(i, 4)))
            })
            .collect();
        let mixed = cost(&mut tree, mixed);
        eprintln!(
            "{k} scattered changes write {replaced} nodes (replacements), {mixed} (inserts, replacements, deletes)"
        );
        assert!(replaced <= k * depth);
        assert!(mixed <= k * (depth + 1));
        check(&io, &tree);
        assert_eq!(contents(&io, &cache, &base, b"", None).len(), 100_000);
        assert_eq!(base.get(&io, &cache, &be(10)).unwrap(), Some(value76(10, 0)));
    }

    /// Sequential appends (big-endian counters, 76-byte values), in batches of any size, fill
    /// every leaf but the last to 90% of the target or more.
    #[test]
    fn sequential_appends_fill_leaves() {
        let (io, cache) = (MemIo::default(), NodeCache::new(16 << 20));
        let mut rng = Rng(3);
        let (mut tree, mut next) = (Tree::new(None), 0u64);
        for commit in 0..600 {
            let n = if commit % 3 == 0 { 1 } else { 1 + rng.below(250) };
            let batch: Batch = (next..next + n).map(|i| (be(i), Some(value76(i, 0)))).collect();
            next += n;
            tree = tree.apply(&io, &cache, &batch).unwrap();
        }
        let shape = check(&io, &tree);
        let leaves = &shape.leaf_sizes[..shape.leaf_sizes.len() - 1];
        let min = *leaves.iter().min().unwrap() as f64 / SPLIT_TARGET as f64;
        let mean = leaves.iter().sum::<usize>() as f64 / leaves.len() as f64 / SPLIT_TARGET as f64;
        eprintln!(
            "{next} appended entries: {} leaves, fill min {:.1}% mean {:.1}%",
            leaves.len() + 1,
            min * 100.0,
            mean * 100.0
        );
        assert!(min >= 0.9);
        assert_eq!(contents(&io, &cache, &tree, b"", None).len() as u64, next);
    }

    /// Stores `bytes` in place of the node at `r` and checks that the tree never answers with
    /// a wrong value: each key reads right or fails as Malformed, and some key fails.
    fn tampered(io: &MemIo, tree: &Tree, r: &ChunkRef, bytes: Vec<u8>) {
        let good = io.raw(r);
        io.replace(r, bytes);
        let cache = NodeCache::new(0);
        let mut failed = 0;
        for i in 0..20_000 {
            match tree.get(io, &cache, &be(i)) {
                Ok(v) => assert_eq!(v, Some(value76(i, 0))),
                Err(TreeError::Malformed { node, .. }) => {
                    assert_eq!(node, *r);
                    failed += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(failed > 0);
        let scan = tree.scan(io, &cache, b"", None, &mut |_, _| ControlFlow::Continue(()));
        assert!(matches!(scan, Err(TreeError::Malformed { .. })));
        io.replace(r, good);
    }

    #[test]
    fn tampered_nodes_are_malformed() {
        let (io, cache) = (MemIo::default(), NodeCache::new(16 << 20));
        let tree = build(&io, &cache, 20_000, 1);
        let mut leaves = Vec::new();
        tree.walk_nodes(&io, &cache, &mut |r, level| {
            if level == 0 {
                leaves.push(*r);
            }
            Ok(true)
        })
        .unwrap();
        assert!(leaves.len() > 10 && check(&io, &tree).depth == 2);
        let (leaf, next) = (leaves[3], leaves[4]);
        let good = io.raw(&leaf);
        let node = decode_node(&good).unwrap();
        let entries: Vec<_> = (0..node.len()).map(|i| node.entry(i)).collect();

        tampered(&io, &tree, &leaf, good[..good.len() - 1].to_vec());
        let mut swapped = entries.clone();
        swapped.swap(5, 6);
        tampered(&io, &tree, &leaf, encode_node(0, &swapped));
        // Well-formed, in the wrong place: another leaf, an internal node, a leaf reaching into
        // its right neighbour's keys (whose values there it would contradict).
        tampered(&io, &tree, &leaf, io.raw(&next));
        let key = node.key(0);
        tampered(&io, &tree, &leaf, encode_node(1, &[Entry::Child { key, child: next }]));
        let next_key = decode_node(&io.raw(&next)).unwrap().key(0).to_vec();
        let mut reaching = entries.clone();
        reaching.push(Entry::Leaf { key: &next_key, value: b"evil" });
        tampered(&io, &tree, &leaf, encode_node(0, &reaching));
        for (bytes, what) in [
            (encode_node(0, &swapped), "keys are not in increasing order"),
            ([&good[..], b"x"].concat(), "trailing bytes"),
            ([&[13, 0][..], &good[2..]].concat(), "level above 12"),
            ([&[0, 1][..], &good[2..]].concat(), "reserved byte is not zero"),
            (vec![0, 0, 0, 0], "no entries"),
            (vec![0; MAX_NODE + 1], "larger than 64 KiB"),
        ] {
            assert_eq!(decode_node(&bytes).unwrap_err(), BadNode(what));
        }
    }

    #[test]
    fn io_errors_keep_their_cause() {
        let (io, cache) = (MemIo::default(), NodeCache::new(0));
        let tree = build(&io, &cache, 1000, 1);
        io.fail.store(true, Ordering::Relaxed);
        let e = tree.get(&io, &cache, &be(5)).unwrap_err();
        assert!(matches!(e, TreeError::Node(_)));
        assert_eq!(std::error::Error::source(&e).unwrap().to_string(), "disk on fire");
        let before = io.writes();
        let batch: Batch = [(vec![1; MAX_KEY + 1], None)].into();
        assert!(matches!(tree.apply(&io, &cache, &batch), Err(TreeError::TooLarge { what: "key", .. })));
        let batch: Batch = [(vec![1], Some(vec![0; MAX_VALUE + 1]))].into();
        assert!(matches!(tree.apply(&io, &cache, &batch), Err(TreeError::TooLarge { what: "value", .. })));
        assert_eq!(io.writes(), before);
    }

    #[test]
    fn cache_stays_within_budget_and_counts() {
        let io = MemIo::default();
        let tree = build(&io, &NodeCache::new(0), 20_000, 1);
        let small = NodeCache::new(100_000);
        for i in (0..20_000).step_by(97) {
            assert_eq!(tree.get(&io, &small, &be(i)).unwrap(), Some(value76(i, 0)));
            assert!(small.bytes() <= 100_000);
        }
        assert!(small.hits() > 0 && small.misses() > 0);
        let big = NodeCache::new(16 << 20);
        tree.get(&io, &big, &be(77)).unwrap();
        let (hits, misses) = (big.hits(), big.misses());
        tree.get(&io, &big, &be(77)).unwrap();
        assert_eq!((big.hits() - hits, big.misses()), (2, misses));
        assert_eq!(big.len(), 2);
    }

    /// Depth at a million 76-byte entries (run by hand: it holds about 200 MB).
    #[test]
    #[ignore]
    fn depth_at_a_million() {
        let (io, cache) = (MemIo::default(), NodeCache::new(16 << 20));
        for n in [100_000, 1_000_000] {
            let tree = build(&io, &cache, n, 1);
            let shape = check(&io, &tree);
            eprintln!(
                "{n} entries: depth {}, {} leaves, {} nodes",
                shape.depth,
                shape.leaf_sizes.len(),
                shape.nodes.len()
            );
        }
    }
}
