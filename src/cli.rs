//! Command-line interface (clap): parses arguments into `config` types and dispatches.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, InitConfig, KeyConfig, MountConfig};
use crate::daemon;
use crate::ops;
use crate::format;
use crate::keys::{KeySource, KeyTransform};

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

/// Where the key comes from. Exactly one source; the key itself is never an argument.
#[derive(Args, Clone)]
#[group(required = true, multiple = false)]
pub struct KeySourceArgs {
    /// Read the key from this file.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Read the key from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub key_env: Option<String>,
    /// Run this shell command and read the key from its standard output.
    #[arg(long, value_name = "CMD")]
    pub key_command: Option<String>,
}

#[derive(Args, Clone)]
pub struct KeyArgs {
    #[command(flatten)]
    pub source: KeySourceArgs,
    /// How the key bytes are read (WAL-G's meaning): hex = exactly 64 hex characters,
    /// base64 = exactly 32 bytes once decoded, none = raw bytes (at least 25; truncated or
    /// zero-padded to 32).
    #[arg(long, value_enum, default_value = "none")]
    pub key_transform: KeyTransform,
}

impl KeyArgs {
    fn to_config(&self) -> KeyConfig {
        let s = &self.source;
        let source = match (&s.key_file, &s.key_env, &s.key_command) {
            (Some(f), _, _) => KeySource::File(f.clone()),
            (_, Some(v), _) => KeySource::Env(v.clone()),
            (_, _, Some(c)) => KeySource::Command(c.clone()),
            _ => unreachable!("clap requires one key source"),
        };
        KeyConfig { source, transform: self.key_transform }
    }
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
        #[command(flatten)]
        key: KeyArgs,
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
        key: KeyArgs,
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
        /// Seconds a write waits for room in the cache, and a commit for the store, before failing.
        #[arg(long, default_value_t = 300, value_name = "SECS")]
        store_timeout: u64,
        /// fsync returns only once the data is in the store, not just in the local cache.
        #[arg(long)]
        sync_store: bool,
        /// FUSE worker threads.
        #[arg(long, default_value_t = config::DEFAULT_THREADS)]
        threads: usize,
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
        store: String,
        #[command(flatten)]
        store_args: StoreArgs,
        #[command(flatten)]
        key: KeyArgs,
        /// Only the files under this path of the vault.
        #[arg(long, default_value = "")]
        path: String,
        /// Check presence and sizes only; download no data.
        #[arg(long)]
        quick: bool,
    },
    /// Write the decrypted tree (or the part under --path) into DEST, without FUSE.
    Export {
        store: String,
        dest: PathBuf,
        #[command(flatten)]
        store_args: StoreArgs,
        #[command(flatten)]
        key: KeyArgs,
        /// Only this path of the vault (a directory or a file).
        #[arg(long, default_value = "")]
        path: String,
        /// Replace files that already exist in DEST.
        #[arg(long)]
        overwrite: bool,
    },
    /// List a directory of the vault.
    Ls {
        store: String,
        #[arg(default_value = "")]
        path: String,
        #[command(flatten)]
        store_args: StoreArgs,
        #[command(flatten)]
        key: KeyArgs,
        /// Type, mode, links, owner, size, modification time (UTC).
        #[arg(short, long)]
        long: bool,
    },
    /// Write a file of the vault to standard output.
    Cat {
        store: String,
        path: String,
        #[command(flatten)]
        store_args: StoreArgs,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Reclaim the space of deleted and overwritten data (takes the writer lease).
    Gc {
        store: String,
        #[command(flatten)]
        store_args: StoreArgs,
        #[command(flatten)]
        key: KeyArgs,
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
        store: String,
        #[command(flatten)]
        store_args: StoreArgs,
        #[command(flatten)]
        key: KeyArgs,
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
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    if !matches!(cli.command, Command::Mount { .. }) {
        crate::logging::init_cli();
    }
    let result = match cli.command {
        Command::Init { store, store_args, key, chunk_size } => {
            let chunk_size = match u32::try_from(chunk_size).map_err(|_| "chunk size too large".to_string()).and_then(|c| {
                format::validate_chunk_size(c).map(|_| c).map_err(|e| e.to_string())
            }) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            daemon::init(&InitConfig { store, store_options: store_args.options, key: key.to_config(), chunk_size })
        }
        Command::Mount {
            store,
            mountpoint,
            store_args,
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
            store_timeout,
            sync_store,
            break_lease,
            log_file,
            syslog,
            log_level,
        } => {
            let cache_dirty_max = match config::dirty_bound(cache_dirty_max, cache_size) {
                Ok(d) => d,
                Err(e) => return fail(&e),
            };
            let pack_size = pack_size.unwrap_or_else(|| config::default_pack_size(&store)).max(1 << 20);
            return daemon::mount(MountConfig {
                store,
                store_options: store_args.options,
                mountpoint,
                key: key.to_config(),
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
                noexec,
                noatime,
            });
        }
        Command::Umount { mountpoint } => {
            daemon::umount_command(&mountpoint, std::io::IsTerminal::is_terminal(&std::io::stderr()))
        }
        Command::Sync { mountpoint } => daemon::sync_command(&mountpoint),
        Command::Status { mountpoint } => daemon::status_command(&mountpoint),
        Command::Verify { store, store_args, key, path, quick } => {
            return ops::verify(&target(&store, &store_args, &key), &path, quick);
        }
        Command::Export { store, dest, store_args, key, path, overwrite } => {
            return ops::export(&target(&store, &store_args, &key), &path, &dest, overwrite);
        }
        Command::Ls { store, path, store_args, key, long } => ops::ls(&target(&store, &store_args, &key), &path, long),
        Command::Cat { store, path, store_args, key } => {
            return ops::cat(&target(&store, &store_args, &key), &path);
        }
        Command::Gc { store, store_args, key, cache_dir, rewrite_dead_percent, dry_run } => {
            let cache = cache_dir.unwrap_or_else(config::default_cache_dir);
            ops::gc(&target(&store, &store_args, &key), &cache, f64::from(rewrite_dead_percent) / 100.0, dry_run)
        }
        Command::Prune { store, store_args, key, path, keep_last, by, apply, cache_dir } => {
            let cache = cache_dir.unwrap_or_else(config::default_cache_dir);
            ops::prune(&target(&store, &store_args, &key), &cache, &path, keep_last, by, apply)
        }
    };
    match result {
        Ok(msg) => {
            println!("{msg}");
            0
        }
        Err(e) => fail(&e),
    }
}

/// The vault an operator command works on.
fn target(store: &str, store_args: &StoreArgs, key: &KeyArgs) -> crate::offline::Target {
    crate::offline::Target { store: store.to_string(), store_options: store_args.options.clone(), key: key.to_config() }
}

fn fail(msg: &str) -> i32 {
    eprintln!("pgcryptfs: {msg}");
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn key_source_is_required_and_exclusive() {
        assert!(Cli::try_parse_from(["pgcryptfs", "init", "/v"]).is_err());
        assert!(Cli::try_parse_from(["pgcryptfs", "init", "/v", "--key-file", "a", "--key-env", "B"]).is_err());
        let c = Cli::try_parse_from(["pgcryptfs", "init", "/v", "--key-env", "K", "--key-transform", "hex"]).unwrap();
        match c.command {
            Command::Init { key, chunk_size, .. } => {
                assert_eq!(key.to_config().source, KeySource::Env("K".into()));
                assert_eq!(key.key_transform, KeyTransform::Hex);
                assert_eq!(chunk_size, 65536);
            }
            _ => panic!(),
        }
    }
}
