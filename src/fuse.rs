//! Thin `fuser::Filesystem` adapter: convert arguments, call `fs`, reply. No file-system logic
//! lives here, so the behaviour can be tested without FUSE in the loop.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BsdFileFlags, Errno as FErrno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};

use crate::catalog::SetAttr;
use crate::format::{Kind, Time};
use crate::fs::{Errno, Fs, Stat};

/// Largest write the kernel may send (it caps at max_pages_limit, 1 MiB by default).
pub const MAX_WRITE: u32 = 1 << 20;

thread_local! {
    /// Each FUSE thread's buffer for read replies (up to `MAX_WRITE`), all zeros between reads.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}
/// How long the kernel may keep entries and attributes of a writable mount.
const TTL: Duration = Duration::from_secs(1);
/// ... and of a read-only one, whose namespace never changes while it is mounted.
const TTL_READ_ONLY: Duration = Duration::from_secs(24 * 3600);

pub struct FuseFs {
    fs: Arc<Fs>,
    writeback_cache: bool,
    /// FUSE worker threads (bounds the kernel's background requests).
    threads: usize,
    /// Entry and attribute lifetime (`TTL`, or `TTL_READ_ONLY`).
    ttl: Duration,
    /// A read-only mount answers open, flush and opendir with ENOSYS, which the kernel takes as
    /// "not needed" and stops sending (there is nothing to seal and no handle to count), the
    /// same for getxattr and listxattr (extended attributes are not supported: the kernel
    /// answers EOPNOTSUPP itself), and lists directories with their entries' attributes
    /// (READDIRPLUS: no LOOKUP per file). A restore's `cp -a` then costs one request per read
    /// instead of seven or eight per file.
    read_only: bool,
}

impl FuseFs {
    pub fn new(fs: Arc<Fs>, writeback_cache: bool, threads: usize) -> Self {
        let read_only = fs.vault().read_only();
        let ttl = if read_only { TTL_READ_ONLY } else { TTL };
        Self { fs, writeback_cache, threads, ttl, read_only }
    }
}

fn ferr(e: Errno) -> FErrno {
    FErrno::from_i32(e.0)
}

fn to_system(t: Time) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs()) + Duration::from_nanos(t.nanos as u64)
    }
}

fn from_system(t: SystemTime) -> Time {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Time { secs: d.as_secs() as i64, nanos: d.subsec_nanos() },
        Err(e) => {
            let d = e.duration();
            let (mut secs, mut nanos) = (-(d.as_secs() as i64), d.subsec_nanos());
            if nanos > 0 {
                secs -= 1;
                nanos = 1_000_000_000 - nanos;
            }
            Time { secs, nanos }
        }
    }
}

fn time_or_now(t: TimeOrNow) -> Time {
    match t {
        TimeOrNow::SpecificTime(s) => from_system(s),
        TimeOrNow::Now => Time::now(),
    }
}

fn kind(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

fn attr(s: &Stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(s.ino),
        size: s.size,
        blocks: s.blocks,
        atime: to_system(s.atime),
        mtime: to_system(s.mtime),
        ctime: to_system(s.ctime),
        crtime: to_system(s.ctime),
        kind: kind(s.kind),
        perm: s.perm as u16,
        nlink: s.nlink,
        uid: s.uid,
        gid: s.gid,
        rdev: s.rdev,
        blksize: 4096,
        flags: 0,
    }
}

fn name(n: &OsStr) -> &[u8] {
    n.as_bytes()
}

fn entry(reply: ReplyEntry, ttl: &Duration, r: crate::fs::Result<Stat>) {
    match r {
        Ok(s) => reply.entry(ttl, &attr(&s), Generation(0)),
        Err(e) => reply.error(ferr(e)),
    }
}

fn empty(reply: ReplyEmpty, r: crate::fs::Result<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(ferr(e)),
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        // Write-back requests may wait for room in the cache (store outage); keep them below the
        // thread count so lookups, getattrs and reads always find a free thread.
        let background = self.threads.saturating_sub(2).max(1) as u16;
        let _ = config.set_max_background(background);
        let _ = config.set_congestion_threshold(background.saturating_sub(1).max(1));
        let mut wanted = InitFlags::FUSE_PARALLEL_DIROPS | InitFlags::FUSE_CACHE_SYMLINKS;
        if self.writeback_cache && !self.fs.vault().read_only() {
            wanted |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        if self.read_only {
            wanted |= InitFlags::FUSE_DO_READDIRPLUS;
        }
        if let Err(unsupported) = config.add_capabilities(wanted) {
            log::warn!("kernel does not offer FUSE capabilities {unsupported:?}");
            let _ = config.add_capabilities(wanted - unsupported);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEntry) {
        entry(reply, &self.ttl, self.fs.lookup(parent.0, name(n)));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.stat(ino.0) {
            Ok(s) => reply.attr(&self.ttl, &attr(&s)),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let s = SetAttr {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime: atime.map(time_or_now),
            mtime: mtime.map(time_or_now),
        };
        match self.fs.setattr(ino.0, &s) {
            Ok(st) => reply.attr(&self.ttl, &attr(&st)),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, n: &OsStr, mode: u32, _umask: u32, rdev: u32, reply: ReplyEntry) {
        entry(reply, &self.ttl, self.fs.mknod(parent.0, name(n), mode, rdev, req.uid(), req.gid()));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, n: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        entry(reply, &self.ttl, self.fs.mkdir(parent.0, name(n), mode, req.uid(), req.gid()));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.fs.unlink(parent.0, name(n)));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.fs.rmdir(parent.0, name(n)));
    }

    fn symlink(&self, req: &Request, parent: INodeNo, n: &OsStr, target: &Path, reply: ReplyEntry) {
        entry(reply, &self.ttl, self.fs.symlink(parent.0, name(n), target.as_os_str().as_bytes(), req.uid(), req.gid()));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        n: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.rename(parent.0, name(n), newparent.0, name(newname), flags.bits()));
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        entry(reply, &self.ttl, self.fs.link(ino.0, newparent.0, name(newname)));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.read_only {
            // Zero-message opens from now on (no OPEN, FLUSH or RELEASE per file).
            return reply.error(FErrno::ENOSYS);
        }
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        match self.fs.open(ino.0, write) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // The thread's reply buffer is all zeros between reads (the wipe after each reply
        // restores that), so a read fills it without zeroing it first.
        READ_BUF.with_borrow_mut(|buf| {
            let size = size as usize;
            let mut own = Vec::new();
            let buf = if size <= MAX_WRITE as usize {
                if buf.len() < size {
                    buf.resize(size, 0);
                }
                &mut buf[..size]
            } else {
                own.resize(size, 0);
                &mut own[..]
            };
            match self.fs.read_into(ino.0, offset, buf) {
                Ok(n) => {
                    reply.data(&buf[..n]);
                    crate::crypto::wipe(&mut buf[..n]);
                }
                Err(e) => reply.error(ferr(e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.fs.write(ino.0, offset, data) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn flush(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        if self.read_only {
            return reply.error(FErrno::ENOSYS); // nothing is ever written: no flush is sent again
        }
        empty(reply, self.fs.flush(ino.0));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.release(fh.0));
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        empty(reply, self.fs.fsync(ino.0));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.read_only {
            return reply.error(FErrno::ENOSYS); // zero-message opendir (the kernel checks the type)
        }
        match self.fs.stat(ino.0) {
            Ok(s) if s.kind == Kind::Dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(FErrno::ENOTDIR),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        match self.fs.readdir(ino.0, offset, 512) {
            Ok(entries) => {
                for e in entries {
                    if reply.add(INodeNo(e.ino), e.cookie, kind(e.kind), OsStr::from_bytes(&e.name)) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        match self.fs.readdir(ino.0, offset, 512) {
            Ok(entries) => {
                for e in entries {
                    let Ok(st) = self.fs.stat(e.ino) else { continue }; // gone since the listing
                    if reply.add(INodeNo(e.ino), e.cookie, OsStr::from_bytes(&e.name), &self.ttl, &attr(&st), Generation(0)) {
                        break;
                    }
                    // The kernel now holds a reference to each entry it was given, except "."
                    // and "..".
                    if e.name != b"." && e.name != b".." {
                        self.fs.remember(e.ino);
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        empty(reply, self.fs.fsyncdir(ino.0));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize);
    }

    // Extended attributes are not stored: setting one fails loudly, and there are none to list.
    fn setxattr(&self, _req: &Request, _ino: INodeNo, _n: &OsStr, _v: &[u8], _f: i32, _p: u32, reply: ReplyEmpty) {
        reply.error(FErrno::from_i32(libc::EOPNOTSUPP));
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _n: &OsStr, _size: u32, reply: ReplyXattr) {
        if self.read_only {
            return reply.error(FErrno::ENOSYS); // the kernel answers EOPNOTSUPP from now on
        }
        reply.error(FErrno::from_i32(libc::ENODATA));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if self.read_only {
            return reply.error(FErrno::ENOSYS); // the kernel answers EOPNOTSUPP from now on
        }
        if size == 0 { reply.size(0) } else { reply.data(&[]) }
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(FErrno::from_i32(libc::ENODATA));
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permission checks are the kernel's (default_permissions); this only checks existence.
        empty(reply, self.fs.stat(ino.0).map(|_| ()));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        n: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.fs.create(parent.0, name(n), mode, req.uid(), req.gid()) {
            Ok((s, fh)) => reply.created(&self.ttl, &attr(&s), Generation(0), FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(ferr(e)),
        }
    }

    fn fallocate(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, length: u64, mode: i32, reply: ReplyEmpty) {
        empty(reply, self.fs.fallocate(ino.0, offset, length, mode));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_roundtrip() {
        for t in [Time { secs: 0, nanos: 0 }, Time { secs: 1_700_000_000, nanos: 123 }, Time { secs: -5, nanos: 250 }] {
            assert_eq!(from_system(to_system(t)), t);
        }
    }
}
