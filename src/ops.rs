//! The operator commands as the CLI runs them: open the vault, call `verify`, `export` or `gc`,
//! print what happened, and choose the exit status (0 only if everything succeeded).

use std::path::Path;

use crate::export;
use crate::fs::Fs;
use crate::gc::{self, PruneOrder};
use crate::offline::{self, Target};
use crate::verify;

fn fail(msg: &str) -> i32 {
    eprintln!("pgcryptfs: {msg}");
    1
}

/// `verify`: failures per file on stdout, then the summary; exit 1 if anything failed.
pub fn verify(t: &Target, path: &str, quick: bool) -> i32 {
    let vault = match offline::open_read_only(t) {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    match verify::run(&vault, path, quick) {
        Err(e) => fail(&e),
        Ok(report) => {
            for (file, problems) in &report.failures {
                for p in problems.iter().take(5) {
                    println!("FAILED {file}: {p}");
                }
                if problems.len() > 5 {
                    println!("FAILED {file}: … and {} more", problems.len() - 5);
                }
            }
            println!("verify: metadata authentic; {}", report.summary(quick));
            i32::from(!report.ok())
        }
    }
}

pub fn ls(t: &Target, path: &str, long: bool) -> Result<String, String> {
    let vault = offline::open_read_only(t)?;
    export::ls(&vault, path, long).map(|s| s.trim_end().to_string())
}

pub fn cat(t: &Target, path: &str) -> i32 {
    let vault = match offline::open_read_only(t) {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    match export::cat(&vault, path, &mut out) {
        Ok(()) => 0,
        Err(e) => fail(&e),
    }
}

/// `gc` as the vault's writer; the lease is released afterwards.
pub fn gc(t: &Target, cache_root: &Path, rewrite_min: f64, dry_run: bool) -> Result<String, String> {
    let vault = if dry_run { offline::open_read_only(t)? } else { offline::open_writer(t, cache_root)? };
    let r = vault.with_lease_renewed(|| gc::gc(&vault, rewrite_min, dry_run));
    if !dry_run && let Err(e) = vault.release_lease() {
        eprintln!("pgcryptfs: warning: could not release the writer lease (it expires by itself): {e}");
    }
    r.map(|r| r.summary(dry_run))
}

/// `prune`: lists the backups beyond the newest `keep`; with `apply`, deletes them and runs gc.
pub fn prune(t: &Target, cache_root: &Path, path: &str, keep: usize, order: PruneOrder, apply: bool) -> Result<String, String> {
    let vault = if apply { offline::open_writer(t, cache_root)? } else { offline::open_read_only(t)? };
    let victims = gc::prune_candidates(&vault, path, keep, order)?;
    let verb = if apply { "deleting" } else { "would delete" };
    for v in &victims {
        println!("{verb} {} ({:.1} MB)", v.path, v.bytes as f64 / 1e6);
    }
    if !apply {
        return Ok(format!(
            "dry run: {} of the backups under {path} would be deleted, keeping the newest {keep}; pass --apply to delete them",
            victims.len()
        ));
    }
    let fs = Fs::new(vault);
    let paths: Vec<String> = victims.iter().map(|v| v.path.clone()).collect();
    let result = fs.vault().with_lease_renewed(|| gc::remove_trees(&fs, &paths).and_then(|_| gc::gc(fs.vault(), 0.25, false)));
    if let Err(e) = fs.vault().release_lease() {
        eprintln!("pgcryptfs: warning: could not release the writer lease (it expires by itself): {e}");
    }
    let r = result?;
    Ok(format!("deleted {} backups under {path}; {}", victims.len(), r.summary(false)))
}
