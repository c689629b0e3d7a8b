//! Wiring and lifetime of a mount: daemonizing behind a readiness pipe, vault → fs → FUSE,
//! the control socket, periodic commits, signals, and the drain to the store on unmount.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL};

use crate::config::{InitConfig, MountConfig};
use crate::control;
use crate::format;
use crate::fs::Fs;
use crate::fuse::FuseFs;
use crate::keys::Unlock;
use crate::kmount;
use crate::logging::{self, LogTarget};
use crate::notify::Notifier;
use crate::store;
use crate::vault::{self, OpenOptions, Vault};

/// Creates a vault (the `init` command).
pub fn init(cfg: &InitConfig) -> Result<String, String> {
    let store = store::open_store(&cfg.store, &cfg.store_options)?;
    let first = cfg.first_slot.load().map_err(|e| e.to_string())?;
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let (header, first) = vault::init_with(store.as_ref(), &first, cfg.label.as_deref(), cfg.chunk_size, uid, gid)
        .map_err(|e| e.to_string())?;
    // This host made what is at that location now: pin it, retiring a vault pinned there
    // before (the operator deleted it; a copy put back is refused).
    let pinned = crate::pins::Pins::open(&crate::config::default_cache_dir())
        .and_then(|p| p.initialised(&store.describe(), &first));
    if let Err(e) = pinned {
        log::warn!("could not record the new vault in this host's pins: {e}");
    }
    Ok(format!(
        "created vault {} in {} (chunk size {} bytes)\nfingerprint: {}\n\
         (keep the fingerprint apart from the store: restores check it with --expect-fingerprint)",
        format::hex(&header.vault_id),
        store.describe(),
        header.chunk_size,
        first.fingerprint
    ))
}

/// The mountinfo line of the file system mounted at `path`, if any (the last one wins).
fn mountinfo_line(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo_line_in(&info, path).map(String::from)
}

/// The last line of a mountinfo table whose mount point is `path`.
fn mountinfo_line_in<'a>(info: &'a str, path: &Path) -> Option<&'a str> {
    let want = path.as_os_str().as_bytes();
    info.lines().rev().find(|l| l.split(' ').nth(4).is_some_and(|mp| unescape_mount(mp).as_slice() == want))
}

/// True if `path` is the mount point of some mounted file system.
fn is_mountpoint(path: &Path) -> bool {
    mountinfo_line(path).is_some()
}

/// FUSE gives its mounts a 128 KiB readahead and 1% of the dirty-page budget. Raise both for
/// this mount (best effort, root only): restores stream and backups are not throttled.
/// Uses mountinfo, not stat, so it never waits on this not-yet-serving mount.
fn tune_bdi(mountpoint: &Path) {
    let Some(line) = mountinfo_line(mountpoint) else { return };
    let Some(dev) = line.split(' ').nth(2) else { return };
    let dir = PathBuf::from(format!("/sys/class/bdi/{dev}"));
    for (knob, value) in [("read_ahead_kb", "1024"), ("max_ratio", "40")] {
        if let Err(e) = std::fs::write(dir.join(knob), value) {
            log::debug!("cannot set {knob} of {}: {e}", dir.display());
        }
    }
}

fn unescape_mount(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn umount2(path: &Path, flags: i32) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: c is a valid C string.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Unmounts `path`: directly as root, else through fusermount3.
pub fn unmount(path: &Path, lazy: bool) -> std::io::Result<()> {
    match umount2(path, if lazy { libc::MNT_DETACH } else { 0 }) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            let mut cmd = std::process::Command::new("fusermount3");
            cmd.arg("-u").arg(path);
            if lazy {
                cmd.arg("-z");
            }
            let out = cmd.output()?;
            if out.status.success() {
                Ok(())
            } else {
                Err(std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()))
            }
        }
        r => r,
    }
}

/// What the main thread, the committer and control handlers share.
struct Shared {
    fs: Arc<Fs>,
    mountpoint: PathBuf,
    stop: Mutex<bool>,
    stop_cv: Condvar,
    drain: Mutex<Option<Result<String, String>>>,
    drain_cv: Condvar,
    /// UMOUNT clients still waiting for the drain's result, and its own condition variable.
    umount_waiters: Mutex<usize>,
    answered_cv: Condvar,
    mounted_at: std::time::Instant,
    /// The service manager, if one asked for notifications (systemd `Type=notify`).
    notifier: Option<Notifier>,
    /// Set once the kernel let go of the FUSE connection (the session ended).
    session_ended: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Why an unmount is still waiting, in words, if it is for a reason worth telling: the
    /// kernel holding the connection (another mount namespace keeps a copy of the mount, or
    /// files are open there), the store refusing or failing.
    fn waiting_reason(&self, unmounting: Option<std::time::Instant>) -> Option<String> {
        use std::sync::atomic::Ordering::SeqCst;
        if let Some(since) = unmounting
            && !self.session_ended.load(SeqCst)
            && since.elapsed() > Duration::from_secs(3)
        {
            let holders = other_namespace_holders(&self.mountpoint);
            return Some(format!(
                "the kernel has not released {} yet: {}",
                self.mountpoint.display(),
                if holders.is_empty() {
                    "files may still be open through a copy of the mount in another mount namespace".to_string()
                } else {
                    format!("processes in other mount namespaces hold a copy of the mount (pids {})", holders.join(", "))
                }
            ));
        }
        let u = self.fs.vault().upload_status();
        if let Some(r) = u.refused {
            return Some(format!("the store refuses uploads: {r}"));
        }
        if u.in_flight > 0
            && let Some(e) = u.last_error
        {
            return Some(format!("the store fails (retrying): {e}"));
        }
        None
    }

    /// The upload backlog in words, for the service manager's STATUS.
    fn backlog_status(&self, doing: &str) -> String {
        let (staged, packs) = self.fs.vault().backlog();
        let refused = self.fs.vault().upload_status().refused.map(|r| format!("; the store refuses uploads: {r}")).unwrap_or_default();
        format!("{doing} {}: {staged} bytes in {packs} packs not yet in the store{refused}", self.mountpoint.display())
    }
}

/// Pids (at most 5) of processes in another mount namespace than this one whose mount table
/// still has `mountpoint` (a copy made by unshare, a container, systemd's PrivateTmp ...),
/// which keeps the kernel from releasing the FUSE connection after the unmount here.
fn other_namespace_holders(mountpoint: &Path) -> Vec<String> {
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let mine = ns("self");
    let mut seen_ns = std::collections::HashSet::new();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return out };
    for e in procs.flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Some(theirs) = ns(&pid) else { continue };
        if Some(&theirs) == mine.as_ref() || !seen_ns.insert(theirs) {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
        if mountinfo_line_in(&info, mountpoint).is_some_and(|l| l.contains(" - fuse")) {
            out.push(pid);
            if out.len() == 5 {
                break;
            }
        }
    }
    out
}

/// The daemon holds keys and plaintext: no core dump of it is ever written (RLIMIT_CORE 0), and
/// it is not dumpable (PR_SET_DUMPABLE 0: no core, and no ptrace or /proc/PID/mem by its user).
/// Inherited by the forked daemon; a key command (exec) starts dumpable again, with the limit.
pub fn forbid_core_dumps() {
    crate::crypto::forbid_core_dumps();
}

/// The `mount` command. Returns the process exit code.
pub fn mount(mut cfg: MountConfig) -> i32 {
    forbid_core_dumps();
    let mountpoint = match crate::config::canonical_mountpoint(&cfg.mountpoint) {
        Ok(m) => m,
        Err(e) => return fail_early(&e),
    };
    if is_mountpoint(&mountpoint) {
        return fail_early(&format!("{} is already a mount point", mountpoint.display()));
    }
    cfg.mountpoint = mountpoint;
    if !cfg.store.contains("://") {
        // Make a relative store path survive the daemon's chdir("/").
        if let Ok(abs) = std::path::absolute(&cfg.store) {
            cfg.store = abs.to_string_lossy().into_owned();
        }
    }
    // The daemon runs in "/": every relative path must be made absolute now.
    if let Ok(abs) = std::path::absolute(&cfg.cache_dir) {
        cfg.cache_dir = abs;
    }
    if let Some(Ok(abs)) = cfg.log_file.as_ref().map(std::path::absolute) {
        cfg.log_file = Some(abs);
    }
    cfg.key.make_absolute();
    // Before any thread exists and before a key command runs: it unsets NOTIFY_SOCKET, so no
    // command this process starts talks to the service manager.
    let notifier = Notifier::from_env();
    // Secrets are read now, before the fork: a passphrase prompt needs the terminal, and a
    // failing key command or missing file fails the mount before anything happens.
    let unlock = match cfg.key.load() {
        Ok(u) => u,
        Err(e) => return fail_early(&e.to_string()),
    };
    if cfg.foreground {
        return serve(cfg, unlock, notifier, None);
    }
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return fail_early(&format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the fds were just created and are owned here.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no threads exist yet in this process (nothing before this point spawns any),
    // so the child may continue running ordinary Rust code.
    match unsafe { libc::fork() } {
        -1 => fail_early(&format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            drop(rd);
            // SAFETY: setsid has no preconditions in a fresh child.
            unsafe { libc::setsid() };
            let _ = std::env::set_current_dir("/");
            let mut unlock = unlock;
            unlock.relock();
            serve(cfg, unlock, notifier, Some(std::fs::File::from(wr)))
        }
        _child => {
            drop(wr);
            drop(unlock);
            let mut msg = String::new();
            let _ = std::fs::File::from(rd).read_to_string(&mut msg);
            match msg.trim() {
                "OK" => 0,
                "" => fail_early("the pgcryptfs daemon exited during start-up (see its log)"),
                m => fail_early(m.strip_prefix("ERR ").unwrap_or(m)),
            }
        }
    }
}

fn fail_early(msg: &str) -> i32 {
    eprintln!("pgcryptfs: {msg}");
    1
}

fn init_logging(cfg: &MountConfig, daemonized: bool) -> Result<(), String> {
    // Log lines name files, so the default log is never inside the (untrusted) cache.
    let target = match (&cfg.log_file, cfg.syslog, daemonized) {
        (Some(f), _, _) => LogTarget::File(f.clone()),
        (None, true, _) => LogTarget::Syslog,
        (None, false, true) => LogTarget::File(crate::config::default_log_file()),
        (None, false, false) => LogTarget::Stderr,
    };
    logging::init(&target, cfg.log_level.as_deref(), &cfg.mountpoint.display().to_string())
}

/// Runs the mount in this process until it is unmounted; reports readiness on `ready`.
fn serve(cfg: MountConfig, unlock: Unlock, notifier: std::io::Result<Option<Notifier>>, mut ready: Option<std::fs::File>) -> i32 {
    let report_err = |ready: &mut Option<std::fs::File>, msg: String| -> i32 {
        log::error!("{msg}");
        match ready.as_mut() {
            Some(f) => {
                let _ = writeln!(f, "ERR {msg}");
                1
            }
            None => fail_early(&msg),
        }
    };
    if let Err(e) = init_logging(&cfg, ready.is_some()) {
        return report_err(&mut ready, e);
    }
    let notifier = notifier.unwrap_or_else(|e| {
        log::warn!("NOTIFY_SOCKET is set but unusable: {e}");
        None
    });
    block_signals();
    let (fs, session, listener) = match start(&cfg, unlock) {
        Ok(x) => x,
        Err(e) => return report_err(&mut ready, e),
    };
    let shared = Arc::new(Shared {
        fs,
        mountpoint: cfg.mountpoint.clone(),
        stop: Mutex::new(false),
        stop_cv: Condvar::new(),
        drain: Mutex::new(None),
        drain_cv: Condvar::new(),
        umount_waiters: Mutex::new(0),
        answered_cv: Condvar::new(),
        mounted_at: std::time::Instant::now(),
        notifier,
        session_ended: std::sync::atomic::AtomicBool::new(false),
    });
    spawn_signal_thread(cfg.mountpoint.clone());
    let uploaders: Vec<_> = if cfg.read_only {
        Vec::new()
    } else {
        (0..cfg.upload_parallelism.max(1))
            .map(|i| {
                let v = shared.fs.vault_arc();
                std::thread::Builder::new().name(format!("upload-{i}")).spawn(move || v.run_uploader()).expect("spawn")
            })
            .collect()
    };
    {
        let s = shared.clone();
        std::thread::Builder::new().name("control".into()).spawn(move || control_loop(s, listener)).expect("spawn");
    }
    let committer = {
        let s = shared.clone();
        let every = cfg.commit_interval;
        std::thread::Builder::new().name("committer".into()).spawn(move || commit_loop(s, every)).expect("spawn")
    };
    log::info!(
        "mounted {} on {} ({}, {} FUSE threads, {} sealer threads)",
        cfg.store,
        cfg.mountpoint.display(),
        if cfg.read_only { "read-only" } else { "read-write" },
        cfg.threads,
        shared.fs.sealer_threads()
    );
    if let Some(mut f) = ready.take() {
        let _ = writeln!(f, "OK");
        drop(f);
        redirect_stdio_to_null();
    }
    if let Some(n) = &shared.notifier {
        n.ready(&shared.backlog_status("serving"));
    }
    // The lease is renewed on a thread of its own from here to the end of the drain: a commit
    // waiting for uploads (up to --store-timeout) never starves it.
    let result = shared.fs.vault().with_lease_renewed(|| {
        let run = session.run();
        shared.session_ended.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Err(e) = &run {
            log::error!("FUSE session ended with an error: {e}");
        }
        *shared.stop.lock().unwrap() = true;
        shared.stop_cv.notify_all();
        let _ = committer.join();
        match &shared.notifier {
            None => drain(&shared.fs),
            Some(n) => {
                n.stopping(&shared.backlog_status("draining"));
                // While the drain runs: progress, and more time from the service manager for as
                // long as it takes (systemd would otherwise kill a long drain at TimeoutStopSec).
                let extend =
                    || n.send(&format!("EXTEND_TIMEOUT_USEC=30000000\nSTATUS={}", shared.backlog_status("draining")));
                extend();
                crate::ticker::while_working(Duration::from_secs(2), extend, || drain(&shared.fs))
            }
        }
    });
    shared.fs.vault().stop_uploads();
    if let Some(rc) = shared.fs.vault().read_cache() {
        rc.close();
    }
    for u in uploaders {
        let _ = u.join();
    }
    match &result {
        Ok(m) => log::info!("unmounted: {m}"),
        Err(e) => log::error!("unmounted, but the drain to the store failed: {e}"),
    }
    let code = i32::from(result.is_err());
    *shared.drain.lock().unwrap() = Some(result);
    shared.drain_cv.notify_all();
    let _ = std::fs::remove_file(control::socket_path(&cfg.mountpoint));
    // Every `pgcryptfs umount` waiting on us gets its answer before the process goes (a client
    // may still be inside umount2(2) when the drain ends).
    let mut waiters = shared.umount_waiters.lock().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while *waiters > 0 && std::time::Instant::now() < deadline {
        waiters = shared.answered_cv.wait_timeout(waiters, Duration::from_millis(50)).unwrap().0;
    }
    code
}

/// The clean read cache's part of `status`.
fn clean_status(v: &Vault) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    match v.read_cache() {
        None => " clean_cache=off".into(),
        Some(rc) => {
            let s = rc.stats();
            format!(
                " clean_bytes={} clean_hits={} clean_misses={} fetched_bytes={} prefetched_blocks={} evicted_blocks={}",
                rc.bytes(),
                s.hits.load(Relaxed),
                s.misses.load(Relaxed),
                s.fetched_bytes.load(Relaxed),
                s.prefetched_blocks.load(Relaxed),
                s.evicted_blocks.load(Relaxed)
            )
        }
    }
}

/// Opens the vault, binds the control socket and mounts.
fn start(cfg: &MountConfig, key: Unlock) -> Result<(Arc<Fs>, fuser::Session<FuseFs>, UnixListener), String> {
    let store = store::open_store(&cfg.store, &cfg.store_options)?;
    let opts = OpenOptions {
        read_only: cfg.read_only,
        cache_root: Some(&cfg.cache_dir),
        pack_target: cfg.pack_size,
        break_lease: cfg.break_lease,
        dirty_max: cfg.cache_dirty_max,
        store_timeout: cfg.store_timeout,
        cache_size: cfg.cache_size,
        readahead: cfg.readahead,
        master_pin: true,
        accept_new_master_key: cfg.accept_new_master_key,
        pins: Some(&cfg.cache_dir),
        expect: cfg.expect,
        limits: Default::default(),
        compression: cfg.compression,
    };
    let vault = Vault::open_with(store, &key, &opts).map_err(|e| e.to_string())?;
    drop(key);
    // Sealing (compression, padding, AEAD, the append to the staging pack) runs on one
    // sealer thread per core, off the FUSE threads.
    let sealers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let fs = Arc::new(Fs::new(vault).with_sync_store(cfg.sync_store).with_sealers(sealers));
    let listener = bind_control(&cfg.mountpoint)?;
    let mut fcfg = Config::default();
    fcfg.mount_options = vec![
        MountOption::FSName(cfg.store.clone()),
        MountOption::Subtype("pgcryptfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        if cfg.read_only { MountOption::RO } else { MountOption::RW },
    ];
    fcfg.acl = if cfg.allow_other { SessionACL::All } else { SessionACL::Owner };
    fcfg.n_threads = Some(cfg.threads.max(1));
    fcfg.clone_fd = true;
    let fuse_fs = FuseFs::new(fs.clone(), cfg.writeback_cache, cfg.threads.max(1));
    let cannot = |e: std::io::Error| {
        let _ = std::fs::remove_file(control::socket_path(&cfg.mountpoint));
        format!("cannot mount on {}: {e}", cfg.mountpoint.display())
    };
    // SAFETY: geteuid has no preconditions.
    let session = if unsafe { libc::geteuid() } == 0 {
        // As root, mount(2) directly: type fuse.pgcryptfs, the store as source.
        let k = kmount::Options {
            source: &cfg.store,
            read_only: cfg.read_only,
            allow_other: cfg.allow_other,
            noexec: cfg.noexec,
            noatime: cfg.noatime,
        };
        let fd = kmount::mount(&cfg.mountpoint, &k).map_err(cannot)?;
        // The handshake reads the kernel's INIT, which the mount has just queued.
        fuser::Session::from_fd(fuse_fs, fd, fcfg.acl, fcfg).map_err(|e| {
            let _ = unmount(&cfg.mountpoint, true);
            cannot(e)
        })?
    } else {
        fuser::Session::new(fuse_fs, &cfg.mountpoint, &fcfg).map_err(cannot)?
    };
    tune_bdi(&cfg.mountpoint);
    Ok((fs, session, listener))
}


fn bind_control(mountpoint: &Path) -> Result<UnixListener, String> {
    control::bind(mountpoint)
}

fn control_loop(shared: Arc<Shared>, listener: UnixListener) {
    for stream in listener.incoming().flatten() {
        let s = shared.clone();
        let _ = std::thread::Builder::new().name("control-client".into()).spawn(move || {
            if let Some((session, cmd)) = control::Session::accept(stream) {
                handle(&s, session, &cmd);
            }
        });
    }
}

fn handle(shared: &Shared, mut session: control::Session, cmd: &str) {
    match cmd {
        "SYNC" => {
            // Commit in a helper thread; report the backlog every half second meanwhile.
            let (tx, rx) = std::sync::mpsc::channel();
            let fs = shared.fs.clone();
            std::thread::spawn(move || {
                let _ = tx.send(
                    fs.sync_to_store()
                        .map(|_| format!("everything written so far is in the store{RECEIPT_SEP}{}", fs.vault().receipt())),
                );
            });
            let mut told = None;
            loop {
                let (staged, packs) = shared.fs.vault().backlog();
                session.progress(staged, packs);
                let why = shared.waiting_reason(None);
                if why.is_some() && why != told {
                    session.send(&format!("WAIT {}", why.as_deref().unwrap_or_default().replace('\n', " ")));
                    told = why;
                }
                match rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(r) => return session.finish(r.map_err(|e| e.to_string())),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(_) => return session.finish(Err("sync failed".into())),
                }
            }
        }
        "STATUS" => {
            let v = shared.fs.vault();
            let (staged, packs) = v.backlog();
            let u = v.upload_status();
            use std::sync::atomic::Ordering::Relaxed;
            session.finish(Ok(format!(
                "staged_bytes={staged} packs_waiting={packs} uploads_queued={} uploads_in_flight={} puts={} \
                 uploaded_bytes={} upload_rate_bytes_per_s={} segments={} retries={} reads_waiting_for_store={} store_refuses={} last_error={}",
                u.queued,
                u.in_flight,
                v.stats.puts.load(Relaxed),
                v.stats.uploaded_bytes.load(Relaxed),
                (v.stats.uploaded_bytes.load(Relaxed) as f64 / shared.mounted_at.elapsed().as_secs_f64().max(1.0)) as u64,
                v.stats.segments.load(Relaxed),
                u.retries,
                v.reads_waiting(),
                u.refused.as_deref().unwrap_or("no").replace(' ', "_"),
                u.last_error.as_deref().unwrap_or("none").replace(' ', "_")
            ) + &clean_status(v)));
        }
        "UMOUNT" => {
            *shared.umount_waiters.lock().unwrap() += 1;
            let answered = |shared: &Shared| {
                *shared.umount_waiters.lock().unwrap() -= 1;
                shared.answered_cv.notify_all();
            };
            if let Err(e) = unmount(&shared.mountpoint, false) {
                let msg = if e.raw_os_error() == Some(libc::EBUSY) {
                    format!("{} is busy (files or directories are open there)", shared.mountpoint.display())
                } else {
                    format!("cannot unmount {}: {e}", shared.mountpoint.display())
                };
                session.finish(Err(msg));
                return answered(shared);
            }
            let since = std::time::Instant::now();
            let mut told = None;
            let mut g = shared.drain.lock().unwrap();
            loop {
                if let Some(r) = g.as_ref() {
                    session.finish(r.clone());
                    drop(g);
                    return answered(shared);
                }
                let (staged, packs) = shared.fs.vault().backlog();
                session.progress(staged, packs);
                // Waiting is never silent: a reason, once, whenever it changes.
                let why = shared.waiting_reason(Some(since));
                if why.is_some() && why != told {
                    session.send(&format!("WAIT {}", why.as_deref().unwrap_or_default().replace('\n', " ")));
                    told = why;
                }
                g = shared.drain_cv.wait_timeout(g, Duration::from_millis(500)).unwrap().0;
            }
        }
        other => session.finish(Err(format!("unknown command {other:?}"))),
    }
}

/// Commits every `every` (the lease is renewed elsewhere, on its own schedule), and early once
/// the cache journal holds half its bound (`format::Limits::max_journal_bytes`), looked at every
/// second: a burst of metadata between two commits then never fills the journal.
fn commit_loop(shared: Arc<Shared>, every: Duration) {
    let mut next_commit = std::time::Instant::now() + every;
    let status_every = Duration::from_secs(5);
    let mut next_status = std::time::Instant::now() + status_every;
    let journal_look = Duration::from_secs(1);
    let mut failed = false;
    let mut stop = shared.stop.lock().unwrap();
    loop {
        let mut wake_at = next_commit.min(std::time::Instant::now() + journal_look);
        if shared.notifier.is_some() {
            wake_at = wake_at.min(next_status);
        }
        let wake = wake_at.saturating_duration_since(std::time::Instant::now());
        stop = shared.stop_cv.wait_timeout(stop, wake).unwrap().0;
        if *stop {
            return;
        }
        drop(stop);
        let now = std::time::Instant::now();
        if let Some(n) = shared.notifier.as_ref().filter(|_| now >= next_status) {
            n.status(&shared.backlog_status("serving"));
            next_status = now + status_every;
        }
        // After a failed commit the next try waits for the interval, also when the journal fills.
        let vault = shared.fs.vault();
        let journal_half_full = !failed && vault.journal_bytes() >= vault.limits().max_journal_bytes / 2;
        if now >= next_commit || journal_half_full {
            failed = match shared.fs.sync_to_store() {
                Ok(_) => false,
                Err(e) => {
                    log::error!("periodic commit to the store failed (will retry): {e}");
                    true
                }
            };
            next_commit = std::time::Instant::now() + every;
        }
        stop = shared.stop.lock().unwrap();
    }
}

/// Between a drain's or sync's message and its receipt on the one-line control protocol; the
/// commands print the receipt on a line of its own (`receipt: pgcfs-receipt-v1:…`).
const RECEIPT_SEP: &str = "; receipt: ";

/// The reply text as printed: the receipt on its own line.
fn receipt_on_own_line(text: String) -> String {
    text.replacen(RECEIPT_SEP, "\nreceipt: ", 1)
}

/// Final drain after the kernel let go: seal, upload and commit everything, with retries.
fn drain(fs: &Fs) -> Result<String, String> {
    if fs.vault().read_only() {
        return Ok("read-only mount, nothing to store".into());
    }
    let mut last = String::new();
    for attempt in 0..5 {
        match fs.sync_to_store() {
            Ok(_) => {
                // Everything is stored: the next writer may come from anywhere.
                if let Err(e) = fs.vault().release_lease() {
                    log::warn!("could not release the writer lease (it expires by itself): {e}");
                }
                use std::sync::atomic::Ordering::Relaxed;
                let st = &fs.vault().stats;
                return Ok(format!(
                    "everything is in the store ({} objects written, {} bytes of packs){RECEIPT_SEP}{}",
                    st.puts.load(Relaxed),
                    st.uploaded_bytes.load(Relaxed),
                    fs.vault().receipt()
                ));
            }
            Err(e) => {
                last = e.to_string();
                log::warn!("drain attempt {} failed: {last}", attempt + 1);
                std::thread::sleep(Duration::from_millis(200 << attempt));
            }
        }
    }
    Err(format!("{last}; unstored data stays in the cache and is uploaded by the next mount of this cache"))
}

fn block_signals() {
    // SAFETY: plain signal-set manipulation on a local sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// SIGTERM/SIGINT/SIGHUP detach the mount; the session then ends and the daemon drains.
fn spawn_signal_thread(mountpoint: PathBuf) {
    let _ = std::thread::Builder::new().name("signals".into()).spawn(move || {
        // SAFETY: sigwait on a set of signals blocked in every thread.
        let sig = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::sigaddset(&mut set, s);
            }
            let mut sig = 0;
            libc::sigwait(&set, &mut sig);
            sig
        };
        log::info!("signal {sig}: unmounting and draining to the store");
        if let Err(e) = unmount(&mountpoint, true) {
            log::error!("unmount on signal failed: {e}");
        }
    });
}

fn redirect_stdio_to_null() {
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto the standard descriptors with a valid source fd.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
}

/// The `umount` command: ask the daemon to unmount and drain, wait for it to exit.
pub fn umount_command(mountpoint: &Path, show_progress: bool) -> Result<String, String> {
    let mp = crate::config::mountpoint_path(mountpoint)?;
    let reply = control::request(&mp, "UMOUNT", |staged, packs| {
        if show_progress {
            eprint!("\rpgcryptfs: draining to the store: {staged} bytes staged, {packs} packs queued   ");
        }
    })?;
    if show_progress {
        eprintln!();
    }
    if !reply.ok {
        return Err(reply.text);
    }
    if let Some(pid) = reply.pid
        && !control::wait_for_exit(pid, Duration::from_secs(120))
    {
        return Err(format!("the daemon (pid {pid}) did not exit after unmounting"));
    }
    Ok(receipt_on_own_line(reply.text))
}

/// The `sync` command.
pub fn sync_command(mountpoint: &Path) -> Result<String, String> {
    let mp = crate::config::mountpoint_path(mountpoint)?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let start = std::time::Instant::now();
    let mut first: Option<u64> = None;
    let reply = control::request(&mp, "SYNC", |staged, packs| {
        let first = *first.get_or_insert(staged);
        let secs = start.elapsed().as_secs_f64().max(0.001);
        let rate = first.saturating_sub(staged) as f64 / secs / 1e6;
        if tty {
            eprint!("\rpgcryptfs: {:.1} MB left to store, {packs} packs, {rate:.1} MB/s   ", staged as f64 / 1e6);
        }
    })?;
    if tty {
        eprintln!();
    }
    if reply.ok { Ok(receipt_on_own_line(reply.text)) } else { Err(reply.text) }
}

/// The `status` command.
pub fn status_command(mountpoint: &Path) -> Result<String, String> {
    let mp = crate::config::mountpoint_path(mountpoint)?;
    let reply = control::request(&mp, "STATUS", |_, _| {})?;
    if reply.ok { Ok(reply.text) } else { Err(reply.text) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_core_dumps() {
        forbid_core_dumps();
        // SAFETY: plain queries.
        let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
        let mut lim = libc::rlimit { rlim_cur: 1, rlim_max: 1 };
        unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut lim) };
        assert_eq!((dumpable, lim.rlim_cur, lim.rlim_max), (0, 0, 0));
    }

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mount("/mnt/a\\040b"), b"/mnt/a b");
        assert_eq!(unescape_mount("/plain"), b"/plain");
    }
}
