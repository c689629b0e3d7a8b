//! `pgcryptfs verify`: checks that every pack the vault's files (or those under a path) refer to
//! exists and is long enough, reads and authenticates every chunk (unless `--quick`), and
//! reports per file what failed. The metadata was authenticated when the vault was opened.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::format::{self, ChunkRef, Id, Kind};
use crate::offline::{self, Progress};
use crate::vault::Vault;

/// Chunks closer than this in a pack are fetched with one ranged read.
const GAP: u64 = 256 << 10;
/// Largest ranged read (one per thread in memory at a time).
const RUN_MAX: u64 = 8 << 20;
const THREADS: usize = 4;

/// What `verify` found.
#[derive(Default)]
pub struct Report {
    pub files: usize,
    pub chunks: usize,
    pub bytes: u64,
    pub packs: usize,
    /// Per file path: what failed (at most a few messages each, then a count).
    pub failures: BTreeMap<String, Vec<String>>,
    /// Pack objects no file refers to (whole vault only). Left by deleted files, or written by
    /// commits the metadata no longer reaches (a truncated chain): only a receipt tells which.
    pub unreferenced: Option<(usize, u64)>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    fn fail(&mut self, path: &str, msg: String) {
        let v = self.failures.entry(path.to_string()).or_default();
        v.push(msg);
    }

    /// The summary line.
    pub fn summary(&self, quick: bool) -> String {
        let what = if quick { "present with the right sizes (--quick: not read)" } else { "authentic" };
        let mut s = format!(
            "{} files, {} chunks, {:.1} MB in {} packs",
            self.files,
            self.chunks,
            self.bytes as f64 / 1e6,
            self.packs
        );
        if self.ok() {
            s.push_str(&format!(": all {what}"));
        } else {
            let bad: usize = self.failures.values().map(Vec::len).sum();
            s.push_str(&format!(": {} files FAILED ({bad} problems)", self.failures.len()));
        }
        if let Some((n, b)) = self.unreferenced
            && n > 0
        {
            s.push_str(&format!(
                "; {n} packs ({:.1} MB) are referenced by no file: left by deleted or rewritten files, or the \
                 metadata was truncated and they hold newer data. Check the vault against the last receipt \
                 (--expect-receipt) before `pgcryptfs gc` deletes them",
                b as f64 / 1e6
            ));
        }
        s
    }
}

struct Item {
    file: usize,
    index: u64,
    c: ChunkRef,
}

/// Verifies the files under `path` ("" for the whole vault).
pub fn run(vault: &Vault, path: &str, quick: bool) -> Result<Report, String> {
    let mut report = Report::default();
    let mut files: Vec<(String, Id)> = Vec::new();
    let mut items = Vec::new();
    let all_packs: HashSet<Id>;
    {
        let cat = vault.catalog();
        let start = offline::resolve(&cat, path)?;
        let mut seen = HashSet::new();
        for e in offline::walk(&cat, start) {
            if e.kind != Kind::File || !seen.insert(e.ino) {
                continue;
            }
            let i = cat.get(e.ino).map_err(|e| e.to_string())?;
            let shown = if path.trim_matches('/').is_empty() { e.rel.display().to_string() } else { format!("{}/{}", path.trim_matches('/'), e.rel.display()) };
            files.push((shown.trim_end_matches('/').to_string(), i.file_id));
            for (index, c) in i.chunks() {
                items.push(Item { file: files.len() - 1, index, c });
            }
        }
        all_packs = cat.referenced_packs().into_keys().collect();
    }
    report.files = files.len();
    report.chunks = items.len();
    report.bytes = items.iter().map(|i| i.c.len as u64).sum();
    let listed = offline::pack_sizes(vault)?;
    report.packs = items.iter().map(|i| i.c.pack).collect::<HashSet<_>>().len();
    if path.trim_matches('/').is_empty() {
        let stray: Vec<u64> = listed.iter().filter(|(id, _)| !all_packs.contains(*id)).map(|(_, s)| *s).collect();
        report.unreferenced = Some((stray.len(), stray.iter().sum()));
    }

    // Presence and sizes, from one listing.
    let mut present = Vec::new();
    for it in items {
        let end = it.c.offset + it.c.len as u64;
        match listed.get(&it.c.pack) {
            None => report.fail(&files[it.file].0, format!("chunk {}: pack {} is missing", it.index, format::hex(&it.c.pack))),
            Some(&size) if size < end => report.fail(
                &files[it.file].0,
                format!("chunk {}: pack {} is {size} bytes, the chunk ends at {end}", it.index, format::hex(&it.c.pack)),
            ),
            Some(_) => present.push(it),
        }
    }
    if quick {
        return Ok(report);
    }

    // Read and authenticate, pack by pack, in runs.
    present.sort_by_key(|i| (i.c.pack, i.c.offset));
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start = 0;
    for k in 1..=present.len() {
        let split = k == present.len() || {
            let (first, prev, next) = (&present[start].c, &present[k - 1].c, &present[k].c);
            next.pack != first.pack
                || next.offset > prev.offset + prev.len as u64 + GAP
                || next.offset + next.len as u64 - first.offset > RUN_MAX
        };
        if split {
            if k > start {
                runs.push(start..k);
            }
            start = k;
        }
    }
    let progress = Mutex::new(Progress::new("verified", report.bytes));
    let failures = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..THREADS.min(runs.len()) {
            scope.spawn(|| {
                loop {
                    let r = next.fetch_add(1, Ordering::Relaxed);
                    let Some(run) = runs.get(r) else { break };
                    let run = &present[run.clone()];
                    let first = run[0].c;
                    let last = run[run.len() - 1].c;
                    let len = (last.offset + last.len as u64 - first.offset) as usize;
                    let mut bad = Vec::new();
                    match vault.store().get_range(&format::pack_name(&first.pack), first.offset, len) {
                        Err(e) => bad.extend(run.iter().map(|it| (it.file, format!("chunk {}: {e}", it.index)))),
                        Ok(bytes) => {
                            for it in run {
                                let at = (it.c.offset - first.offset) as usize;
                                if let Err(e) = vault.authenticate(&files[it.file].1, it.index, &it.c, &bytes[at..at + it.c.len as usize]) {
                                    bad.push((it.file, format!("chunk {}: {e}", it.index)));
                                }
                            }
                        }
                    }
                    progress.lock().unwrap().add(run.iter().map(|i| i.c.len as u64).sum());
                    failures.lock().unwrap().extend(bad);
                }
            });
        }
    });
    progress.into_inner().unwrap().finish();
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    for (file, msg) in failures {
        report.fail(&files[file].0, msg);
    }
    Ok(report)
}
