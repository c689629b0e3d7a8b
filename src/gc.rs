//! `pgcryptfs gc` and `pgcryptfs prune`: reclaiming the space of deleted and overwritten
//! chunks. Packs no file refers to are deleted; packs with much dead space are rewritten by
//! copying their live ciphertext into new packs (no decryption: a chunk's AAD binds its file and
//! index, not its pack), committed through the normal pipeline before anything is deleted.
//!
//! Crash safety, step by step: new packs are unreferenced until the metadata segment that moves
//! the chunks is stored (a crash before leaves garbage, which the next gc deletes, and staged
//! copies, which the cache's recovery drops); old packs are deleted only after that segment, and
//! only if the metadata no longer refers to them (a crash before leaves garbage, deleted by the
//! next run). A run takes the writer lease, so it never races a writable mount.

use std::collections::{HashMap, HashSet};

use crate::catalog::Catalog;
use crate::format::{self, ChunkRef, Id, Kind};
use crate::fs::Fs;
use crate::offline::{self, Progress};
use crate::vault::Vault;

/// Commit after this many copied bytes, so the cache never holds more.
const COMMIT_EVERY: u64 = 256 << 20;

/// What a gc run did (or, dry, would do).
#[derive(Default, Debug)]
pub struct GcReport {
    pub packs_before: usize,
    pub bytes_before: u64,
    /// Packs no file referred to.
    pub dead_packs: usize,
    /// Packs whose live chunks were copied into new packs (then deleted).
    pub rewritten_packs: usize,
    pub copied_bytes: u64,
    pub bytes_after: u64,
    /// Packs left alone because a live chunk in them did not authenticate (with the reason).
    pub damaged: Vec<(Id, String)>,
}

impl GcReport {
    pub fn summary(&self, dry_run: bool) -> String {
        let verb = if dry_run { "would reclaim" } else { "reclaimed" };
        format!(
            "{verb} {:.1} MB: of {} packs, {} were referenced by no file and {} were rewritten ({:.1} MB of live data copied); packs now hold {:.1} MB{}",
            self.bytes_before.saturating_sub(self.bytes_after) as f64 / 1e6,
            self.packs_before,
            self.dead_packs,
            self.rewritten_packs,
            self.copied_bytes as f64 / 1e6,
            self.bytes_after as f64 / 1e6,
            if dry_run { " (dry run: nothing changed)" } else { "" }
        )
    }
}

/// Where each pack's live chunks are: pack → (inode, chunk index, reference).
fn live_chunks(cat: &Catalog) -> HashMap<Id, Vec<(u64, u64, ChunkRef)>> {
    let mut out: HashMap<Id, Vec<(u64, u64, ChunkRef)>> = HashMap::new();
    for (ino, index, c) in cat.all_chunks() {
        out.entry(c.pack).or_default().push((ino, index, c));
    }
    out
}

/// How much of a pack its live chunks cover: the end of the furthest one (the metadata is
/// authenticated, so this bound is ours, not the store's).
fn referenced_len(chunks: &[(u64, u64, ChunkRef)]) -> usize {
    chunks.iter().map(|(_, _, c)| c.offset + u64::from(c.len)).max().unwrap_or(0) as usize
}

/// A crash injected by the tests (`PGCRYPTFS_TEST_GC_CRASH=copied|committed`), to prove a
/// killed gc loses nothing.
fn test_crash(at: &str) {
    if std::env::var("PGCRYPTFS_TEST_GC_CRASH").is_ok_and(|v| v == at) {
        eprintln!("pgcryptfs: gc: crashing on purpose after '{at}' (PGCRYPTFS_TEST_GC_CRASH)");
        std::process::abort();
    }
}

/// Runs gc on a vault opened as its writer. Packs whose dead share is at least `rewrite_min`
/// (0.0–1.0) are rewritten; packs with no live chunk are deleted.
pub fn gc(vault: &Vault, rewrite_min: f64, dry_run: bool) -> Result<GcReport, String> {
    let listed = offline::pack_sizes(vault)?;
    let live = live_chunks(&vault.catalog());
    if let Some(missing) = live.keys().find(|p| !listed.contains_key(*p)) {
        return Err(format!(
            "pack {} is referenced but missing from the store; run pgcryptfs verify before gc",
            format::hex(missing)
        ));
    }
    let mut r = GcReport { packs_before: listed.len(), bytes_before: listed.values().sum(), ..Default::default() };
    let mut rewrite: Vec<Id> = live
        .iter()
        .filter(|(id, chunks)| {
            let size = listed[*id];
            let used: u64 = chunks.iter().map(|(_, _, c)| c.len as u64).sum();
            size > 0 && (size.saturating_sub(used)) as f64 / size as f64 >= rewrite_min
        })
        .map(|(id, _)| *id)
        .collect();
    rewrite.sort();
    let dead: Vec<Id> = listed.keys().filter(|p| !live.contains_key(*p)).copied().collect();
    r.rewritten_packs = rewrite.len();
    r.copied_bytes = rewrite.iter().flat_map(|p| &live[p]).map(|(_, _, c)| c.len as u64).sum();
    r.dead_packs = dead.len();
    let freed: u64 = dead.iter().chain(&rewrite).map(|p| listed[p]).sum();
    r.bytes_after = r.bytes_before - freed + r.copied_bytes;
    if dry_run {
        return Ok(r);
    }

    let mut progress = Progress::new("gc copied", r.copied_bytes);
    let mut since_commit = 0u64;
    let mut copied: Vec<Id> = Vec::new();
    for pack in &rewrite {
        let mut chunks = live[pack].clone();
        chunks.sort_by_key(|(_, _, c)| c.offset);
        // Only the referenced prefix is read: a pack object replaced by a huge one (the listed
        // size is the store's word, untrusted) is never downloaded whole. Whatever lies past the
        // last live chunk is dead space, left behind with the old pack.
        let bytes = vault
            .store()
            .get_range_upto(&format::pack_name(pack), 0, referenced_len(&chunks))
            .map_err(|e| format!("reading pack {}: {e}", format::hex(pack)))?;
        // Every live chunk must authenticate (tag and AEAD, as a read would) before any of the
        // pack is copied: a damaged chunk copied on would be carried into the new pack and the
        // original, the only evidence, deleted. Such a pack is left as it is and reported.
        let file_ids: HashMap<u64, Id> = {
            let cat = vault.catalog();
            chunks.iter().filter_map(|(ino, _, _)| Some((*ino, cat.get(*ino).ok()?.file_id))).collect()
        };
        let check = chunks.iter().try_for_each(|(ino, index, c)| {
            let sealed = bytes
                .get(c.offset as usize..(c.offset + c.len as u64) as usize)
                .ok_or_else(|| format!("offset {}: the pack is shorter than its chunk", c.offset))?;
            let file_id = file_ids.get(ino).ok_or_else(|| format!("inode {ino} is gone"))?;
            vault.authenticate(file_id, *index, c, sealed).map_err(|e| e.to_string())
        });
        if let Err(e) = check {
            log::error!("gc: pack {} is damaged, left as it is: {e}", format::hex(pack));
            r.damaged.push((*pack, e));
            continue;
        }
        for (ino, index, c) in chunks {
            let sealed = &bytes[c.offset as usize..(c.offset + c.len as u64) as usize];
            let (new_pack, offset) = vault.append_sealed(sealed).map_err(|e| e.to_string())?;
            vault
                .catalog()
                .set_chunk(ino, index, ChunkRef { pack: new_pack, offset, len: c.len, tag: c.tag })
                .map_err(|e| e.to_string())?;
            since_commit += c.len as u64;
            progress.add(c.len as u64);
        }
        copied.push(*pack);
        if since_commit >= COMMIT_EVERY {
            vault.commit().map_err(|e| format!("committing the copies: {e}"))?;
            since_commit = 0;
        }
    }
    test_crash("copied");
    vault.commit().map_err(|e| format!("committing the copies: {e}"))?;
    progress.finish();
    test_crash("committed");

    // Delete what the stored metadata no longer refers to.
    let still_live: HashSet<Id> = vault.catalog().referenced_packs().into_keys().collect();
    for pack in dead.iter().chain(&copied) {
        if still_live.contains(pack) {
            return Err(format!("pack {} is still referenced after the commit; nothing more deleted", format::hex(pack)));
        }
        vault.store().delete(&format::pack_name(pack)).map_err(|e| format!("deleting pack {}: {e}", format::hex(pack)))?;
    }
    let after = offline::pack_sizes(vault)?;
    r.bytes_after = after.values().sum();
    if !r.damaged.is_empty() {
        let list: Vec<String> = r.damaged.iter().map(|(p, e)| format!("pack {}: {e}", format::hex(p))).collect();
        return Err(format!(
            "{}; but {} packs hold chunks that do not authenticate and were left as they are (nothing of them copied \
             or deleted; run pgcryptfs verify): {}",
            r.summary(false),
            r.damaged.len(),
            list.join("; ")
        ));
    }
    Ok(r)
}

/// One directory `prune` would delete (or deleted).
pub struct Pruned {
    pub path: String,
    pub bytes: u64,
}

/// Sort order for `prune`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PruneOrder {
    /// By name (backup directories named by date sort by age).
    Name,
    /// By modification time.
    Mtime,
}

/// The subdirectories of `path` beyond the newest `keep` (in `order`), oldest first.
pub fn prune_candidates(vault: &Vault, path: &str, keep: usize, order: PruneOrder) -> Result<Vec<Pruned>, String> {
    let cat = vault.catalog();
    let dir = offline::resolve(&cat, path)?;
    let d = cat.get(dir).map_err(|e| e.to_string())?;
    let entries = d.dir.as_ref().ok_or_else(|| format!("{path}: not a directory"))?;
    let mut dirs: Vec<(format::Time, Vec<u8>, u64)> = entries
        .after(0)
        .filter_map(|(_, name, ino)| {
            let i = cat.get(ino).ok()?;
            (i.attr.kind == Kind::Dir).then(|| (i.attr.mtime.clone(), name.to_vec(), ino))
        })
        .collect();
    match order {
        PruneOrder::Name => dirs.sort_by(|a, b| a.1.cmp(&b.1)),
        PruneOrder::Mtime => dirs.sort_by(|a, b| (a.0.secs, a.0.nanos, &a.1).cmp(&(b.0.secs, b.0.nanos, &b.1))),
    }
    let excess = dirs.len().saturating_sub(keep);
    Ok(dirs[..excess]
        .iter()
        .map(|(_, name, ino)| {
            let bytes = offline::walk(&cat, *ino)
                .iter()
                .filter(|e| e.kind == Kind::File)
                .filter_map(|e| cat.get(e.ino).ok().map(|i| i.attr.size))
                .sum();
            Pruned { path: format!("{}/{}", path.trim_end_matches('/'), String::from_utf8_lossy(name)), bytes }
        })
        .collect())
}

/// Deletes the trees `paths` through the file-system layer and commits.
pub fn remove_trees(fs: &Fs, paths: &[String]) -> Result<(), String> {
    for p in paths {
        let entries = {
            let cat = fs.vault().catalog();
            let ino = offline::resolve(&cat, p)?;
            offline::walk(&cat, ino).into_iter().map(|e| (e.rel, e.kind)).collect::<Vec<_>>()
        };
        // Children before their directory.
        for (rel, kind) in entries.iter().rev() {
            let full = std::path::Path::new(p).join(rel);
            let parent_path = full.parent().map(|x| x.to_string_lossy().into_owned()).unwrap_or_default();
            let name = full.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let parent = offline::resolve(&fs.vault().catalog(), &parent_path)?;
            let r = if *kind == Kind::Dir { fs.rmdir(parent, name.as_bytes()) } else { fs.unlink(parent, name.as_bytes()) };
            r.map_err(|e| format!("removing {}: errno {}", full.display(), e.0))?;
        }
    }
    fs.sync_to_store().map_err(|e| format!("committing the removal: {e}"))?;
    Ok(())
}

/// Test helpers shared with the rekey tests: a store that meters what it hands out of `packs/`,
/// and a vault with a few one-chunk files.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::format::{self, Kind};
    use crate::keys::Unlock;
    use crate::store::{MemStore, Result, Store, Version};
    use crate::vault::{OpenOptions, Vault};

    /// Wraps a MemStore; records the most bytes one read of a pack object returned.
    #[derive(Default)]
    pub struct ReadMeter {
        pub inner: MemStore,
        largest: AtomicU64,
    }

    impl ReadMeter {
        pub fn largest_pack_read(&self) -> u64 {
            self.largest.load(Ordering::SeqCst)
        }
        pub fn reset(&self) {
            self.largest.store(0, Ordering::SeqCst);
        }
        fn note(&self, key: &str, r: Result<Vec<u8>>) -> Result<Vec<u8>> {
            if key.starts_with(format::PACKS_PREFIX)
                && let Ok(b) = &r
            {
                self.largest.fetch_max(b.len() as u64, Ordering::SeqCst);
            }
            r
        }
    }

    impl Store for ReadMeter {
        fn describe(&self) -> String {
            "metered memory".into()
        }
        fn put(&self, key: &str, data: &[u8]) -> Result<()> {
            self.inner.put(key, data)
        }
        fn put_new(&self, key: &str, data: &[u8]) -> Result<()> {
            self.inner.put_new(key, data)
        }
        fn get(&self, key: &str) -> Result<Vec<u8>> {
            self.note(key, self.inner.get(key))
        }
        fn get_versioned(&self, key: &str, len: usize) -> Result<(Vec<u8>, Version)> {
            let r = self.inner.get_versioned(key, len);
            if key.starts_with(format::PACKS_PREFIX)
                && let Ok((b, _)) = &r
            {
                self.largest.fetch_max(b.len() as u64, Ordering::SeqCst);
            }
            r
        }
        fn put_replacing(&self, key: &str, data: &[u8], version: &Version) -> Result<()> {
            self.inner.put_replacing(key, data, version)
        }
        fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
            self.note(key, self.inner.get_range(key, offset, len))
        }
        fn get_range_upto(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
            self.note(key, self.inner.get_range_upto(key, offset, len))
        }
        fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
            self.inner.list(prefix)
        }
        fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key)
        }
        fn is_empty(&self) -> Result<bool> {
            self.inner.is_empty()
        }
    }

    pub fn writer(store: &Arc<ReadMeter>, unlock: &Unlock, cache: &Path) -> Vault {
        let opts = OpenOptions { read_only: false, cache_root: Some(cache), pack_target: 1 << 20, ..Default::default() };
        Vault::open_with(Box::new(store.clone()), unlock, &opts).map_err(|e| e.to_string()).unwrap()
    }

    /// Writes a one-chunk file in the root directory (not committed); returns its inode.
    pub fn write_file(v: &Vault, name: &[u8], data: &[u8]) -> u64 {
        let ino = v.catalog().create(crate::catalog::ROOT, name, Kind::File, 0o644, 0, 0, b"", format::Time::now()).unwrap();
        let fid = v.catalog().get(ino).unwrap().file_id;
        let c = v.seal_chunk(&fid, 0, data).unwrap();
        let mut cat = v.catalog();
        cat.set_chunk(ino, 0, c).unwrap();
        cat.note_write(ino, data.len() as u64, format::Time::now()).unwrap();
        ino
    }

    /// Writes one-chunk files in the root directory and commits.
    pub fn write_files(v: &Vault, files: &[(&[u8], &[u8])]) {
        for (name, data) in files {
            write_file(v, name, data);
        }
        v.commit().map_err(|e| e.to_string()).unwrap();
    }

    pub fn read_file(v: &Vault, name: &[u8]) -> Vec<u8> {
        let (fid, c) = {
            let cat = v.catalog();
            let i = cat.lookup(crate::catalog::ROOT, name).unwrap();
            (i.file_id, i.chunk(0).unwrap())
        };
        let mut out = Vec::new();
        v.read_chunk(&fid, 0, &c, &mut out).map_err(|e| e.to_string()).unwrap();
        out
    }

    /// The vault's only pack: its name and bytes.
    pub fn only_pack(store: &ReadMeter) -> (String, Vec<u8>) {
        let packs = store.inner.list(format::PACKS_PREFIX).unwrap();
        assert_eq!(packs.len(), 1, "{packs:?}");
        let name = packs[0].0.clone();
        let bytes = store.inner.get(&name).unwrap();
        (name, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::crypto::Secret32;
    use crate::keys::Unlock;
    use crate::store::Store;
    use std::sync::Arc;

    const JUNK: usize = 32 << 20;

    fn unlock() -> Unlock {
        Unlock::key(&Secret32::from_bytes([4; 32]))
    }

    /// A pack object replaced by a much larger one: gc reads only the referenced prefix. If the
    /// prefix is the real pack, its chunks are copied and the huge object deleted; if it is junk,
    /// the pack is named as damaged and left alone.
    #[test]
    fn an_oversized_pack_is_read_only_as_far_as_referenced() {
        for genuine_prefix in [true, false] {
            let store = Arc::new(ReadMeter::default());
            crate::vault::init(&store.inner, &Secret32::from_bytes([4; 32]), 65536, 0, 0).map_err(|e| e.to_string()).unwrap();
            let cache = tempfile::tempdir().unwrap();
            let v = writer(&store, &unlock(), cache.path());
            write_files(&v, &[(b"a", b"alpha"), (b"b", b"beta")]);
            let (name, pack) = only_pack(&store);
            let mut planted = if genuine_prefix { pack.clone() } else { Vec::new() };
            planted.resize(JUNK, 0x5a);
            store.inner.put(&name, &planted).unwrap();
            store.reset();
            let r = gc(&v, 0.25, false);
            assert!(store.largest_pack_read() <= pack.len() as u64, "read {} of a {}-byte pack", store.largest_pack_read(), pack.len());
            if genuine_prefix {
                let r = r.unwrap();
                assert_eq!(r.rewritten_packs, 1);
                assert!(store.inner.get(&name).is_err(), "the oversized object is deleted");
                assert_eq!(read_file(&v, b"a"), b"alpha");
                assert_eq!(read_file(&v, b"b"), b"beta");
            } else {
                let e = r.unwrap_err();
                let hex = name.strip_prefix(format::PACKS_PREFIX).unwrap();
                assert!(e.contains(&format!("pack {hex}")) && e.contains("do not authenticate"), "{e}");
                assert_eq!(store.inner.get(&name).unwrap().len(), JUNK, "a damaged pack is left as it is");
            }
            v.release_lease().unwrap();
        }
    }
}
