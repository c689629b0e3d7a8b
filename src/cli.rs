//! Command-line interface (clap): parses arguments into `config` types and dispatches.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, InitConfig, MountConfig};
use crate::daemon;
use crate::format;
use crate::keyadmin;
pub use crate::keyargs::{NewSlotArgs, UnlockArgs};
use crate::ops;

#[derive(Parser)]
#[command(
    name = "pgcryptfs",
    version,
    about = "An encrypting FUSE file system for PostgreSQL backups",
    long_about = "pgcryptfs mounts an encrypted vault so that unmodified tools (pg_basebackup, cp, tar, rsync) \
                  can write backups into it. Every chunk is sealed with XChaCha20-Poly1305 before it touches a \
                  disk; only ciphertext reaches the cache and the store.\n\n\
                  STORE is a local directory path, file:///path, s3://bucket/prefix, gs://bucket/prefix \
                  or az://container/prefix."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Options of the store named by STORE (object stores only; never credentials).
#[derive(Args, Clone)]
pub struct StoreArgs {
    /// Store option KEY=VALUE, repeatable: endpoint=URL, region=NAME, allow_http=true (for a
    /// loopback test server), path_style=true (S3-compatible servers), credentials_file=FILE
    /// (KEY=VALUE lines with the cloud's standard variables, e.g. AWS_ACCESS_KEY_ID).
    #[arg(long = "store-opt", value_name = "KEY=VALUE", value_parser = crate::store::parse_option)]
    pub options: Vec<(String, String)>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a new vault in an empty STORE.
    Init {
        /// Where the vault lives: a local directory (or file:///path), s3://bucket/prefix,
        /// gs://bucket/prefix or az://container/prefix; must be empty or absent.
        store: String,
        #[command(flatten)]
        store_args: StoreArgs,
        /// The first slot's key, as mount would read it (--key-file, --key-env: sodium;
        /// --key-command: command; --passphrase-*: passphrase) ...
        #[command(flatten)]
        key: UnlockArgs,
        /// ... or as key add names a new slot (--pgp-cert for an openpgp slot).
        #[command(flatten)]
        new_slot: NewSlotArgs,
        /// Plaintext chunk size (power of two, 4K to 4M).
        #[arg(long, default_value = "64K", value_parser = config::parse_size)]
        chunk_size: u64,
    },
    /// Mount a vault. Returns once the file system is serving (unless --foreground).
    Mount {
        store: String,
        mountpoint: PathBuf,
        #[command(flatten)]
        store_args: StoreArgs,
        #[command(flatten)]
        trust: TrustArgs,
        #[command(flatten)]
        key: UnlockArgs,
        /// Cache directory for staged ciphertext and the local journal
        /// [default: /var/cache/pgcryptfs as root, else ~/.cache/pgcryptfs].
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Mount read-only (no cache needed; several read-only mounts may coexist).
        #[arg(long)]
        read_only: bool,
        /// Stay in the foreground and log to stderr.
        #[arg(long)]
        foreground: bool,
        /// Let other users (e.g. postgres) use the mount; the kernel checks modes and owners.
        #[arg(long)]
        allow_other: bool,
        /// Mount flag: executing files from the mount is not allowed.
        #[arg(long)]
        noexec: bool,
        /// Mount flag: the kernel does not update access times.
        #[arg(long)]
        noatime: bool,
        /// Disable the kernel's write-back page cache (slower; for debugging).
        #[arg(long)]
        no_writeback_cache: bool,
        /// Commit staged data to the store this often, in seconds.
        #[arg(long, default_value_t = config::DEFAULT_COMMIT_SECS, value_name = "SECS")]
        commit_interval: u64,
        /// Target size of pack objects [default: 16M for a local directory, 8M for an object
        /// store, where each upload in flight holds a whole pack in memory].
        #[arg(long, value_parser = config::parse_size)]
        pack_size: Option<u64>,
        /// Pack uploads running at once.
        #[arg(long, default_value_t = 4)]
        upload_parallelism: usize,
        /// Most ciphertext the cache holds that is not yet in the store; beyond it writes wait
        /// for uploads (back-pressure), and fail with ENOSPC only after --store-timeout
        /// [default: 1G, or --cache-size if that is smaller].
        #[arg(long, value_parser = config::parse_size)]
        cache_dirty_max: Option<u64>,
        /// Bound of the whole cache: staged (unstored) bytes plus clean copies of stored packs
        /// kept for reads of a remote store, evicted least-recently-used. At least
        /// --cache-dirty-max; 0 keeps no clean data.
        #[arg(long, default_value = "2G", value_parser = config::parse_size)]
        cache_size: u64,
        /// How far ahead of a sequential reader pack data is fetched from a remote store (0: off).
        #[arg(long, default_value = "8M", value_parser = config::parse_size)]
        readahead: u64,
        /// How new chunks are compressed before they are sealed: a zstd level from 1 (fastest)
        /// to 19, or `off`. A chunk that does not shrink is stored as it is. Reading needs no
        /// setting. Vaults made before compression existed store chunks as they are.
        #[arg(long, default_value = "1", value_parser = crate::codec::Compression::parse, value_name = "LEVEL|off")]
        compression: crate::codec::Compression,
        /// Seconds a write waits for room in the cache, and a commit for the store, before failing.
        #[arg(long, default_value_t = 300, value_name = "SECS")]
        store_timeout: u64,
        /// fsync returns only once the data is in the store, not just in the local cache.
        #[arg(long)]
        sync_store: bool,
        /// FUSE worker threads.
        #[arg(long, default_value_t = config::DEFAULT_THREADS)]
        threads: usize,
        /// Accept a vault master key other than the one this cache (and this host's pin of the
        /// location) pinned, once, after `pgcryptfs rekey`: only together with
        /// --expect-fingerprint naming the fingerprint the rekey printed, and only if the vault
        /// has it. A key a rekey retired is never accepted.
        #[arg(long)]
        accept_new_master_key: bool,
        /// Take over the writer lease of another mount once it has expired (that mount must be
        /// gone: two writers would corrupt the vault).
        #[arg(long)]
        break_lease: bool,
        /// Log file of the background daemon [default: /var/log/pgcryptfs.log as root,
        /// else ~/.local/state/pgcryptfs.log].
        #[arg(long, value_name = "FILE")]
        log_file: Option<PathBuf>,
        /// Log to syslog/journald (/dev/log) instead of a file when in the background.
        #[arg(long, conflicts_with = "log_file")]
        syslog: bool,
        /// Log level: error, warn, info, debug, trace or off [default: RUST_LOG, else info].
        #[arg(long, value_name = "LEVEL", value_parser = crate::logging::parse_level)]
        log_level: Option<String>,
    },
    /// Drain everything to the store, unmount, and wait for the daemon to exit.
    /// Exits non-zero if anything could not be stored.
    Umount { mountpoint: PathBuf },
    /// Block until everything written so far is in the store.
    Sync { mountpoint: PathBuf },
    /// Print the daemon's staged bytes and upload counters.
    Status { mountpoint: PathBuf },
    /// Check that every object the vault refers to exists and authenticates; exit 0 only if all do.
    Verify {
        #[command(flatten)]
        vault: VaultArgs,
        /// Only the files under this path of the vault.
        #[arg(long, default_value = "")]
        path: String,
        /// Check presence and sizes only; download no data.
        #[arg(long)]
        quick: bool,
    },
    /// Write the files a cache holds that never reached the store (a mount refused with "the
    /// vault went on without them", after another writer broke its lease) into DEST, decrypted.
    /// Changes neither the cache nor the store.
    Salvage {
        #[command(flatten)]
        vault: VaultArgs,
        /// A new directory for the salvaged files.
        dest: PathBuf,
        /// The cache directory of the refused mount
        /// [default: /var/cache/pgcryptfs as root, else ~/.cache/pgcryptfs].
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Write the decrypted tree (or the part under --path) into DEST, without FUSE.
    Export {
        #[command(flatten)]
        vault: VaultArgs,
        dest: PathBuf,
        /// Only this path of the vault (a directory or a file).
        #[arg(long, default_value = "")]
        path: String,
        /// Replace files that already exist in DEST.
        #[arg(long)]
        overwrite: bool,
        /// Keep setuid and setgid bits and make device nodes (by default the bits are cleared
        /// and device nodes skipped).
        #[arg(long)]
        keep_setid: bool,
    },
    /// List a directory of the vault.
    Ls {
        #[command(flatten)]
        vault: VaultArgs,
        #[arg(default_value = "")]
        path: String,
        /// Type, mode, links, owner, size, modification time (UTC).
        #[arg(short, long)]
        long: bool,
    },
    /// Write a file of the vault to standard output.
    Cat {
        #[command(flatten)]
        vault: VaultArgs,
        path: String,
    },
    /// Reclaim the space of deleted and overwritten data (takes the writer lease).
    Gc {
        #[command(flatten)]
        vault: VaultArgs,
        /// Cache directory (as for mount) for the copies being made.
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Rewrite packs whose dead share is at least this many percent.
        #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u8).range(1..=100))]
        rewrite_dead_percent: u8,
        /// Report what would be reclaimed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete all but the newest N backup directories under --path, then gc. Dry run unless --apply.
    Prune {
        #[command(flatten)]
        vault: VaultArgs,
        /// The directory holding one subdirectory per backup.
        #[arg(long)]
        path: String,
        /// How many backups to keep.
        #[arg(long)]
        keep_last: usize,
        /// Which are the newest: by name (dated names) or modification time.
        #[arg(long, value_enum, default_value = "name")]
        by: crate::gc::PruneOrder,
        /// Really delete (the default only lists what would go).
        #[arg(long)]
        apply: bool,
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Re-encrypt every chunk and the metadata under a new master key (after a leak of the
    /// master key). Takes the writer lease; resumable (run it again with the same key); keeps
    /// only the slot that unlocked it.
    Rekey {
        store: String,
        #[command(flatten)]
        store_args: StoreArgs,
        #[command(flatten)]
        key: UnlockArgs,
        /// Take over an expired writer lease (its mount must be gone).
        #[arg(long)]
        break_lease: bool,
        /// Stop after this many packs, as if interrupted (tests).
        #[arg(long, hide = true)]
        stop_after_packs: Option<usize>,
    },
    /// Manage the vault's key slots (any one slot opens the vault).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Add a key slot: the new key (--new-key-file, --new-key-env, --new-key-command, --pgp-cert,
    /// --new-passphrase-file, --new-passphrase-env, --new-passphrase-prompt) and one that opens
    /// the vault now (the options mount takes). No data is re-encrypted.
    Add {
        store: String,
        #[command(flatten)]
        store_args: StoreArgs,
        #[command(flatten)]
        new_slot: NewSlotArgs,
        #[command(flatten)]
        key: UnlockArgs,
    },
    /// List the key slots: id, method, fingerprint or label, creation time. Needs no key.
    List {
        store: String,
        #[command(flatten)]
        store_args: StoreArgs,
        /// Optional: with a key the vault's fingerprint is computed and printed too.
        #[command(flatten)]
        key: UnlockArgs,
    },
    /// Remove a key slot (by its id, or a unique prefix of it); refuses to remove the last one.
    Remove {
        store: String,
        slot: String,
        #[command(flatten)]
        store_args: StoreArgs,
        #[command(flatten)]
        key: UnlockArgs,
    },
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    if !matches!(cli.command, Command::Mount { .. }) {
        crate::logging::init_cli();
    }
    let result = match cli.command {
        Command::Init { store, store_args, key, new_slot, chunk_size } => {
            let chunk_size = match u32::try_from(chunk_size).map_err(|_| "chunk size too large".to_string()).and_then(|c| {
                format::validate_chunk_size(c).map(|_| c).map_err(|e| e.to_string())
            }) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let first_slot = match new_slot.first_slot(&key) {
                Ok(f) => f,
                Err(e) => return fail(&e),
            };
            daemon::init(&InitConfig {
                store,
                store_options: store_args.options,
                first_slot,
                label: new_slot.label,
                chunk_size,
            })
        }
        Command::Mount {
            store,
            mountpoint,
            store_args,
            trust,
            key,
            cache_dir,
            read_only,
            foreground,
            allow_other,
            noexec,
            noatime,
            no_writeback_cache,
            commit_interval,
            pack_size,
            threads,
            upload_parallelism,
            cache_dirty_max,
            cache_size,
            readahead,
            compression,
            store_timeout,
            sync_store,
            break_lease,
            accept_new_master_key,
            log_file,
            syslog,
            log_level,
        } => {
            let key = match key.to_spec() {
                Ok(k) => k,
                Err(e) => return fail(&e),
            };
            let cache_dirty_max = match config::dirty_bound(cache_dirty_max, cache_size) {
                Ok(d) => d,
                Err(e) => return fail(&e),
            };
            let pack_size = pack_size.unwrap_or_else(|| config::default_pack_size(&store)).max(1 << 20);
            let expect = match trust.to_expect() {
                Ok(e) => e,
                Err(e) => return fail(&e),
            };
            // Up front: a new master key is accepted only as the fingerprint the rekey printed.
            if let Err(e) = expect.accepting(accept_new_master_key) {
                return fail(&e.to_string());
            }
            return daemon::mount(MountConfig {
                expect,
                store,
                store_options: store_args.options,
                mountpoint,
                key,
                cache_dir: cache_dir.unwrap_or_else(config::default_cache_dir),
                read_only,
                foreground,
                allow_other,
                writeback_cache: !no_writeback_cache,
                threads,
                commit_interval: Duration::from_secs(commit_interval.max(1)),
                pack_size,
                log_file,
                syslog,
                log_level,
                break_lease,
                upload_parallelism,
                cache_dirty_max,
                store_timeout: Duration::from_secs(store_timeout.max(1)),
                sync_store,
                cache_size,
                readahead,
                compression,
                noexec,
                noatime,
                accept_new_master_key,
            });
        }
        Command::Umount { mountpoint } => {
            daemon::umount_command(&mountpoint, std::io::IsTerminal::is_terminal(&std::io::stderr()))
        }
        Command::Sync { mountpoint } => daemon::sync_command(&mountpoint),
        Command::Status { mountpoint } => daemon::status_command(&mountpoint),
        Command::Rekey { store, store_args, key, break_lease, stop_after_packs } => {
            let opts = crate::rekey::RekeyOptions {
                break_lease,
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                stop_after_packs,
            };
            key.to_spec().and_then(|unlock| crate::rekey::rekey_command(&store, &store_args.options, &unlock, &opts))
        }
        Command::Key { command } => {
            match command {
                KeyCommand::List { store, store_args, key } => match key.given().then(|| key.to_spec()).transpose() {
                    Ok(unlock) => keyadmin::list_command(&store, &store_args.options, unlock.as_ref()),
                    Err(e) => Err(e),
                },
                KeyCommand::Add { store, store_args, new_slot, key } => match (new_slot.to_spec(), key.to_spec()) {
                    (None, _) => Err("key add needs the new slot's key: --new-key-file, --new-key-env, \
                                      --new-key-command, --pgp-cert, --new-passphrase-file, --new-passphrase-env \
                                      or --new-passphrase-prompt"
                        .into()),
                    (_, Err(e)) => Err(e),
                    (Some(new), Ok(unlock)) => {
                        keyadmin::add_command(&store, &store_args.options, &unlock, &new, new_slot.label.as_deref())
                    }
                },
                KeyCommand::Remove { store, slot, store_args, key } => key
                    .to_spec()
                    .and_then(|unlock| keyadmin::remove_command(&store, &store_args.options, &unlock, &slot)),
            }
        }
        Command::Verify { vault, path, quick } => return with_target(&vault, |t| ops::verify(t, &path, quick)),
        Command::Export { vault, dest, path, overwrite, keep_setid } => {
            let opts = crate::export::ExportOptions { overwrite, keep_setid };
            return with_target(&vault, |t| crate::export::run(t, &path, &dest, opts));
        }
        Command::Ls { vault, path, long } => return with_target(&vault, |t| finish(ops::ls(t, &path, long))),
        Command::Salvage { vault, dest, cache_dir } => {
            let cache = cache_dir.unwrap_or_else(config::default_cache_dir);
            return with_target(&vault, |t| finish(crate::salvage::run(t, &cache, &dest)));
        }
        Command::Cat { vault, path } => return with_target(&vault, |t| ops::cat(t, &path)),
        Command::Gc { vault, cache_dir, rewrite_dead_percent, dry_run } => {
            let cache = cache_dir.unwrap_or_else(config::default_cache_dir);
            return with_target(&vault, |t| finish(ops::gc(t, &cache, f64::from(rewrite_dead_percent) / 100.0, dry_run)));
        }
        Command::Prune { vault, path, keep_last, by, apply, cache_dir } => {
            let cache = cache_dir.unwrap_or_else(config::default_cache_dir);
            return with_target(&vault, |t| finish(ops::prune(t, &cache, &path, keep_last, by, apply)));
        }
    };
    finish(result)
}

/// A command's message on stdout (exit 0), or its error on stderr (exit 1).
fn finish(result: Result<String, String>) -> i32 {
    match result {
        Ok(msg) => {
            println!("{msg}");
            0
        }
        Err(e) => fail(&e),
    }
}

/// The vault an operator command works on: STORE, its store options, and how to unlock it.
#[derive(Args, Clone)]
pub struct VaultArgs {
    store: String,
    #[command(flatten)]
    store_args: StoreArgs,
    #[command(flatten)]
    key: UnlockArgs,
    #[command(flatten)]
    trust: TrustArgs,
}

/// What a restore demands of the vault it opens; without either, this host's pins still refuse
/// an older or forked state of a vault it has seen, or another vault at the same location.
#[derive(Args, Clone, Default)]
pub struct TrustArgs {
    /// Refuse the vault unless its fingerprint is FP (as `init` and `key list` print it): a vault
    /// forged with an OpenPGP certificate, which the secret key would open too, has another.
    #[arg(long, value_name = "FP")]
    expect_fingerprint: Option<String>,
    /// Refuse the vault unless it holds the state RECEIPT names or a later one (as `umount` and
    /// `sync` print it): refuses another vault, a rollback and a fork.
    #[arg(long, value_name = "RECEIPT")]
    expect_receipt: Option<String>,
}

impl TrustArgs {
    fn to_expect(&self) -> Result<crate::pins::Expect, String> {
        Ok(crate::pins::Expect {
            fingerprint: self.expect_fingerprint.as_deref().map(crate::pins::Fingerprint::parse).transpose()?,
            receipt: self.expect_receipt.as_deref().map(crate::pins::Receipt::parse).transpose()?,
        })
    }
}

/// Runs `op` on the vault `v` names, or fails with why it cannot be named.
fn with_target(v: &VaultArgs, op: impl FnOnce(&crate::offline::Target) -> i32) -> i32 {
    let key = match v.key.to_spec() {
        Ok(k) => k,
        Err(e) => return fail(&e),
    };
    let expect = match v.trust.to_expect() {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    op(&crate::offline::Target { store: v.store.clone(), store_options: v.store_args.options.clone(), key, expect })
}

fn fail(msg: &str) -> i32 {
    eprintln!("pgcryptfs: {msg}");
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::passphrase::Cost;
    use crate::keys::{KeySource, KeyTransform, NewSlotSpec, SecretSource, UnlockSpec};
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn key_source_is_exclusive_and_maps_to_slots() {
        let init = |args: &[&str]| match Cli::try_parse_from([&["pgcryptfs", "init", "/v"], args].concat()) {
            Ok(Cli { command: Command::Init { key, new_slot, chunk_size, .. } }) => {
                assert_eq!(chunk_size, 65536);
                new_slot.first_slot(&key)
            }
            Ok(_) => panic!(),
            Err(e) => Err(e.kind().to_string()),
        };
        // No key (stdin is not a terminal under cargo test).
        assert!(init(&[]).unwrap_err().starts_with("no key given for the first slot"));
        assert!(init(&["--key-file", "a", "--key-env", "B"]).is_err());
        assert!(init(&["--key-file", "a", "--pgp-cert", "c"]).unwrap_err().contains("not both"));
        assert_eq!(
            init(&["--key-env", "K", "--key-transform", "hex"]).unwrap(),
            NewSlotSpec::Sodium { source: KeySource::Env("K".into()), transform: KeyTransform::Hex }
        );
        assert_eq!(
            init(&["--key-command", "vault read"]).unwrap(),
            NewSlotSpec::Command { command: "vault read".into(), transform: KeyTransform::None }
        );
        assert_eq!(init(&["--pgp-cert", "c.asc"]).unwrap(), NewSlotSpec::OpenPgp { cert_file: "c.asc".into() });
        assert_eq!(
            init(&["--passphrase-file", "p", "--pwhash-opslimit", "1", "--pwhash-memlimit", "8M"]).unwrap(),
            NewSlotSpec::Passphrase { source: SecretSource::File("p".into()), cost: Cost { opslimit: 1, memlimit: 8 << 20 } }
        );
        assert!(init(&["--pgp-key-file", "k"]).unwrap_err().contains("--pgp-cert"));
    }

    #[test]
    fn unlock_options_are_shared() {
        let c = Cli::try_parse_from([
            "pgcryptfs", "key", "remove", "/v", "abcd", "--pgp-key-file", "k.asc", "--pgp-passphrase-env", "P",
            "--store-opt", "region=x",
        ])
        .unwrap();
        let Command::Key { command: KeyCommand::Remove { key, slot, store_args, .. } } = c.command else { panic!() };
        assert_eq!(slot, "abcd");
        assert_eq!(store_args.options, vec![("region".to_string(), "x".to_string())]);
        assert_eq!(
            key.to_spec().unwrap(),
            UnlockSpec::OpenPgp { key_file: "k.asc".into(), passphrase: Some(SecretSource::Env("P".into())) }
        );
        // A PGP passphrase needs a PGP key; two unlock sources are refused.
        assert!(Cli::try_parse_from(["pgcryptfs", "key", "list", "/v", "--pgp-passphrase-env", "P"]).is_err());
        assert!(
            Cli::try_parse_from(["pgcryptfs", "mount", "/v", "/m", "--passphrase-env", "P", "--key-file", "k"]).is_err()
        );
        let c = Cli::try_parse_from(["pgcryptfs", "mount", "/v", "/m", "--passphrase-file", "p"]).unwrap();
        let Command::Mount { key, .. } = c.command else { panic!() };
        assert_eq!(key.to_spec().unwrap(), UnlockSpec::Passphrase(SecretSource::File("p".into())));
        let c = Cli::try_parse_from(["pgcryptfs", "key", "add", "/v", "--new-key-command", "c", "--key-env", "K"]).unwrap();
        let Command::Key { command: KeyCommand::Add { new_slot, .. } } = c.command else { panic!() };
        assert_eq!(new_slot.to_spec(), Some(NewSlotSpec::Command { command: "c".into(), transform: KeyTransform::None }));
    }
}
