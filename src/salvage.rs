//! `pgcryptfs salvage`: writes out the files a cache's uncommitted journals hold (acknowledged
//! writes of a mount whose lease another writer broke), decrypted, into a new directory. Reads
//! the vault and the cache only; changes neither.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::cache::Cache;
use crate::format::{self, Attr, ChunkRef, Id, Kind, Record};
use crate::offline::{self, Target};
use crate::vault::Vault;

/// What the journals say of one file.
#[derive(Default)]
struct Seen {
    file: Option<(Id, Attr)>,
    chunks: BTreeMap<u64, ChunkRef>,
}

/// Exports every regular file the uncommitted journals of `cache_root`'s cache of this vault
/// wrote into `dest` (which must not exist): under its path as far as the journals and the
/// committed tree name it (`_inode N_` for a part nothing names). Returns a summary; a file whose chunks do not open
/// is reported, not written.
pub fn run(t: &Target, cache_root: &Path, dest: &Path) -> Result<String, String> {
    let vault = offline::open_read_only(t)?;
    let cache = Cache::open(cache_root, &vault.header.vault_id, 1 << 20).map_err(|e| e.to_string())?;
    let journals = cache.journal_files().map_err(|e| e.to_string())?;
    if journals.is_empty() {
        return Ok(format!("the cache {} holds no journal: nothing to salvage", cache.dir().display()));
    }
    let mut seen: HashMap<u64, Seen> = HashMap::new();
    let mut all = Vec::new();
    for &seq in &journals {
        all.extend(vault.read_journal(&cache, seq).map_err(|e| e.to_string())?);
    }
    for rec in &all {
        match rec {
            Record::Inode { ino, file_id, attr, .. } if attr.kind == Kind::File => {
                let s = seen.entry(*ino).or_default();
                s.chunks.retain(|&i, _| i < format::chunk_count(attr.size, vault.chunk_size()));
                s.file = Some((*file_id, attr.clone()));
            }
            Record::Chunk { ino, index, chunk } => {
                seen.entry(*ino).or_default().chunks.insert(*index, *chunk);
            }
            _ => {}
        }
    }
    fs::create_dir(dest).map_err(|e| format!("cannot create {} (it must not exist): {e}", dest.display()))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
    let committed = vault.catalog();
    let paths = crate::vault::uncommitted_paths(&all, &committed);
    let (mut written, mut failed) = (Vec::new(), Vec::new());
    for (ino, path) in paths {
        let Some(s) = seen.get(&ino) else { continue };
        // The file id binds its chunks: from the journals, else from the committed tree.
        let (file_id, size) = match (&s.file, committed.get(ino)) {
            (Some((id, attr)), _) => (*id, attr.size),
            (None, Ok(i)) if i.attr.kind == Kind::File => (i.file_id, i.attr.size),
            _ => {
                failed.push(format!("inode {ino}: written, but its file id is in neither the journals nor the vault"));
                continue;
            }
        };
        let rel: PathBuf = path.split('/').filter(|c| !c.is_empty()).map(|c| safe_name(c.as_bytes())).collect();
        match write_file(&vault, &cache, &file_id, size, &s.chunks, &dest.join(&rel)) {
            Ok(()) => written.push(rel.display().to_string()),
            Err(e) => failed.push(format!("{}: {e}", rel.display())),
        }
    }
    let mut out = format!(
        "salvaged {} files from {} journals of {} into {}",
        written.len(),
        journals.len(),
        cache.dir().display(),
        dest.display()
    );
    for w in &written {
        out.push_str(&format!("\n  {w}"));
    }
    if failed.is_empty() {
        Ok(out)
    } else {
        Err(format!("{out}\nnot salvaged:\n  {}", failed.join("\n  ")))
    }
}

/// A name that stays one component inside DEST (names in the journals are authenticated, but
/// `..` or `.` must never climb out; `<inode N>` placeholders become `_inode N_`).
fn safe_name(name: &[u8]) -> String {
    let s = String::from_utf8_lossy(name).replace(['/', '<', '>'], "_");
    if s.is_empty() || s == "." || s == ".." { format!("_{s}") } else { s }
}

fn write_file(vault: &Vault, cache: &Cache, file_id: &Id, size: u64, chunks: &BTreeMap<u64, ChunkRef>, to: &Path) -> Result<(), String> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)
        .map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    let cs = vault.chunk_size() as u64;
    let mut plain = Vec::new();
    for (&index, c) in chunks {
        if index * cs >= size {
            continue;
        }
        let sealed = match cache.read_staging(&c.pack, c.offset, c.len as usize) {
            Ok(Some(b)) => b,
            _ => vault
                .store()
                .get_range(&format::pack_name(&c.pack), c.offset, c.len as usize)
                .map_err(|e| format!("chunk {index}: {e}"))?,
        };
        plain.clear();
        vault.open_sealed_chunk(file_id, index, c, &sealed, &mut plain).map_err(|e| format!("chunk {index}: {e}"))?;
        let keep = ((size - index * cs).min(cs) as usize).min(plain.len());
        std::os::unix::fs::FileExt::write_all_at(&f, &plain[..keep], index * cs).map_err(|e| e.to_string())?;
    }
    crate::crypto::wipe(&mut plain);
    f.set_len(size).map_err(|e| e.to_string())?;
    f.flush().map_err(|e| e.to_string())?;
    f.sync_all().map_err(|e| e.to_string())
}
