//! The local-directory store (the embedded default): one file per object under a root
//! directory, written to a temporary file, fsynced and renamed into place.
//!
//! It never follows a link: the root and the directories under it (`keys/`, `packs/`, ...)
//! are refused if they are symbolic links, objects are opened `O_NOFOLLOW`, new files are
//! `O_EXCL` temporaries renamed into place (replacing a link at the name, never writing
//! through it), and a staged file handed to `put_moving` must be a regular file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Result, Store, StoreError, Version};

/// A directory on a local (or network) file system. Puts go to a temporary file that is
/// fsynced and renamed into place, then the directory is fsynced.
pub struct LocalStore {
    root: PathBuf,
    /// Open handles of recently read objects (restores read packs chunk after chunk).
    open: Mutex<lru::LruCache<String, std::sync::Arc<File>>>,
}

const OPEN_FILES: usize = 64;

impl LocalStore {
    pub fn new(root: PathBuf) -> Self {
        let cap = std::num::NonZeroUsize::new(OPEN_FILES).expect("non-zero");
        Self { root, open: Mutex::new(lru::LruCache::new(cap)) }
    }

    fn forget_open(&self, key: &str) {
        self.open.lock().unwrap().pop(key);
    }

    fn open_for_read(&self, key: &str) -> Result<std::sync::Arc<File>> {
        if let Some(f) = self.open.lock().unwrap().get(key) {
            return Ok(f.clone());
        }
        let f = std::sync::Arc::new(self.open_object(key)?);
        self.open.lock().unwrap().put(key.to_string(), f.clone());
        Ok(f)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        debug_assert!(!key.contains("..") && !key.starts_with('/'));
        self.root.join(key)
    }

    /// Refuses a root or a directory on the way to `key` that is a symbolic link (or not a
    /// directory); missing ones are fine (they are created as directories).
    fn check_dirs(&self, key: &str) -> Result<()> {
        let mut dir = self.root.clone();
        let parts: Vec<&str> = key.split('/').collect();
        for i in 0..parts.len() {
            if i > 0 {
                dir.push(parts[i - 1]);
            }
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(StoreError::Io {
                        key: key.to_string(),
                        source: io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            format!("{} is a symbolic link: refused (a local store never follows links; give the real path)", dir.display()),
                        ),
                    });
                }
                Ok(m) if !m.is_dir() => {
                    return Err(StoreError::Io {
                        key: key.to_string(),
                        source: io::Error::new(io::ErrorKind::InvalidData, format!("{} is not a directory", dir.display())),
                    });
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Self::io(key)(e)),
            }
        }
        Ok(())
    }

    /// Opens an object for reading: never through a link, and only a regular file.
    fn open_object(&self, key: &str) -> Result<File> {
        self.check_dirs(key)?;
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(self.path(key))
            .map_err(Self::io(key))?;
        if !f.metadata().map_err(Self::io(key))?.is_file() {
            return Err(StoreError::Io { key: key.to_string(), source: io::Error::other("not a regular file") });
        }
        Ok(f)
    }

    /// Opens a local file to store (a staged pack): never through a link, a regular file only.
    fn open_source(key: &str, path: &Path) -> Result<File> {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(Self::io(key))?;
        if !f.metadata().map_err(Self::io(key))?.is_file() {
            return Err(StoreError::Io {
                key: key.to_string(),
                source: io::Error::other(format!("{} is not a regular file", path.display())),
            });
        }
        Ok(f)
    }

    fn io(key: &str) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |source| {
            if source.kind() == io::ErrorKind::NotFound {
                StoreError::NotFound(key.to_string())
            } else {
                StoreError::Io { key: key.to_string(), source }
            }
        }
    }

    /// Makes the directory `key` lives in (refusing links on the way, before and after) and
    /// returns it.
    fn make_dir_of(&self, key: &str) -> Result<PathBuf> {
        self.check_dirs(key)?;
        let dir = self.path(key).parent().expect("keys have a parent").to_path_buf();
        fs::create_dir_all(&dir).map_err(Self::io(key))?;
        self.check_dirs(key)?;
        Ok(dir)
    }

    fn write_temp(&self, key: &str, fill: impl FnOnce(&mut File) -> io::Result<()>) -> Result<PathBuf> {
        let dir = self.make_dir_of(key)?;
        let tmp = dir.join(format!(".tmp-{}", crate::format::hex(&crate::crypto::random_id())));
        let result = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_NOFOLLOW).mode(0o600).open(&tmp)?;
            fill(&mut f)?;
            f.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(Self::io(key)(e));
        }
        Ok(tmp)
    }

    /// Stores the rest of an open file under `key` (temporary, fsync, rename).
    fn put_from(&self, key: &str, src: &mut File) -> Result<()> {
        self.forget_open(key);
        let tmp = self.write_temp(key, |f| io::copy(src, f).map(|_| ()))?;
        fs::rename(&tmp, self.path(key)).map_err(Self::io(key))?;
        self.sync_dir(key)
    }

    /// Runs `f` holding an exclusive `flock` on the directory of `key`: conditional creates,
    /// conditional replaces and deletes of one directory are serialised between processes.
    fn locked<T>(&self, key: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let dir = self.make_dir_of(key)?;
        let d = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&dir)
            .map_err(Self::io(key))?;
        // SAFETY: flock on a descriptor we own; the lock goes with the descriptor.
        while unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&d), libc::LOCK_EX) } != 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Self::io(key)(e));
            }
        }
        f()
    }

    /// An object's version: its inode, size and change time (every put makes a new file).
    fn version_of(meta: &fs::Metadata) -> Version {
        Version::tag(format!("{}:{}:{}:{}.{}", meta.dev(), meta.ino(), meta.len(), meta.ctime(), meta.ctime_nsec()))
    }

    fn sync_dir(&self, key: &str) -> Result<()> {
        let dir = self.path(key).parent().expect("keys have a parent").to_path_buf();
        File::open(&dir).and_then(|d| d.sync_all()).map_err(Self::io(key))
    }
}

impl Store for LocalStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.forget_open(key);
        let tmp = self.write_temp(key, |f| f.write_all(data))?;
        fs::rename(&tmp, self.path(key)).map_err(Self::io(key))?;
        self.sync_dir(key)
    }

    fn put_new(&self, key: &str, data: &[u8]) -> Result<()> {
        let tmp = self.write_temp(key, |f| f.write_all(data))?;
        // link(2) fails with EEXIST atomically, unlike rename.
        let linked = self.locked(key, || Ok(fs::hard_link(&tmp, self.path(key))))?;
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => self.sync_dir(key),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StoreError::AlreadyExists(key.to_string())),
            Err(e) => Err(Self::io(key)(e)),
        }
    }

    fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        let mut src = Self::open_source(key, path)?;
        self.put_from(key, &mut src)
    }

    fn put_moving(&self, key: &str, path: &Path) -> Result<()> {
        self.forget_open(key);
        self.make_dir_of(key)?;
        let dest = self.path(key);
        let mut src = Self::open_source(key, path)?;
        src.sync_all().map_err(Self::io(key))?;
        let src_meta = src.metadata().map_err(Self::io(key))?;
        match fs::rename(path, &dest) {
            Ok(()) => {
                // What was renamed must be the file checked above (not a link swapped in since).
                let moved = fs::symlink_metadata(&dest).map_err(Self::io(key))?;
                if moved.dev() != src_meta.dev() || moved.ino() != src_meta.ino() {
                    let _ = fs::remove_file(&dest);
                    return Err(StoreError::Io {
                        key: key.to_string(),
                        source: io::Error::other(format!("{} changed while it was stored", path.display())),
                    });
                }
                self.sync_dir(key)
            }
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                self.put_from(key, &mut src)?;
                fs::remove_file(path).map_err(Self::io(key))
            }
            Err(e) => Err(Self::io(key)(e)),
        }
    }

    fn get_versioned(&self, key: &str, len: usize) -> Result<(Vec<u8>, Version)> {
        let f = self.open_object(key)?;
        let version = Self::version_of(&f.metadata().map_err(Self::io(key))?);
        let mut out = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(&f, len as u64), &mut out).map_err(Self::io(key))?;
        Ok((out, version))
    }

    fn put_replacing(&self, key: &str, data: &[u8], version: &Version) -> Result<()> {
        self.forget_open(key);
        let tmp = self.write_temp(key, |f| f.write_all(data))?;
        let done = self.locked(key, || {
            let now = match self.open_object(key) {
                Ok(f) => Some(Self::version_of(&f.metadata().map_err(Self::io(key))?)),
                Err(StoreError::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
            if now.as_ref() != Some(version) {
                return Err(StoreError::Changed(key.to_string()));
            }
            fs::rename(&tmp, self.path(key)).map_err(Self::io(key))
        });
        if done.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        done?;
        self.sync_dir(key)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        io::Read::read_to_end(&mut self.open_object(key)?, &mut out).map_err(Self::io(key))?;
        Ok(out)
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let buf = self.get_range_upto(key, offset, len)?;
        if buf.len() < len {
            let have = self.open_for_read(key)?.metadata().map(|m| m.len()).unwrap_or(0);
            return Err(StoreError::ShortObject { key: key.to_string(), want: offset + len as u64, have });
        }
        Ok(buf)
    }

    fn get_range_upto(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let f = self.open_for_read(key)?;
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let n = f.read_at(&mut buf[done..], offset + done as u64).map_err(Self::io(key))?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        // Prefixes used by pgcryptfs are "dir/" or a whole key; walk the directory part.
        let (dir_part, name_prefix) = match prefix.rfind('/') {
            Some(i) => (&prefix[..i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        let dir = if dir_part.is_empty() { self.root.clone() } else { self.path(dir_part) };
        let mut out = Vec::new();
        self.check_dirs(&format!("{dir_part}/x").trim_start_matches('/').to_string())?;
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Self::io(prefix)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(Self::io(prefix))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") || !name.starts_with(name_prefix) {
                continue;
            }
            let meta = entry.metadata().map_err(Self::io(prefix))?;
            if meta.is_file() {
                let key = if dir_part.is_empty() { name } else { format!("{dir_part}/{name}") };
                out.push((key, meta.len()));
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.forget_open(key);
        self.check_dirs(key)?;
        let removed = || match fs::remove_file(self.path(key)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io(key)(e)),
        };
        // Deleting from a directory that is not there needs no lock (and must not create it).
        match fs::symlink_metadata(self.path(key).parent().expect("keys have a parent")) {
            Ok(_) => self.locked(key, removed),
            Err(_) => removed(),
        }
    }

    fn is_empty(&self) -> Result<bool> {
        self.check_dirs("x")?;
        match fs::read_dir(&self.root) {
            Ok(mut e) => Ok(e.next().is_none()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(Self::io("")(e)),
        }
    }

    fn free_bytes(&self) -> Option<(u64, u64)> {
        let c = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes()).ok()?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: c is a valid C string, st a valid out-pointer.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return None;
        }
        Some((st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize))
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_are_refused_and_never_written_through() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let root = d.path().join("store");
        fs::create_dir(&root).unwrap();
        let s = LocalStore::new(root.clone());
        // A subdirectory that is a link: every operation under it is refused.
        symlink(outside.path(), root.join("packs")).unwrap();
        assert!(s.put("packs/a", b"x").is_err());
        assert!(s.put_new("packs/a", b"x").is_err());
        assert!(s.get("packs/victim").is_err());
        assert!(s.list("packs/").is_err());
        assert!(s.delete("packs/victim").is_err());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1, "nothing made or removed through the link");
        fs::remove_file(root.join("packs")).unwrap();
        // An object that is a link: not read, and a put replaces the link itself.
        fs::create_dir(root.join("packs")).unwrap();
        symlink(&victim, root.join("packs/b")).unwrap();
        assert!(s.get("packs/b").is_err());
        assert!(s.get_range("packs/b", 0, 2).is_err());
        assert!(s.list("packs/").unwrap().is_empty());
        s.put("packs/b", b"new").unwrap();
        assert_eq!(s.get("packs/b").unwrap(), b"new");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        // A staged file that is a link is not stored (its target is never read into the store).
        let staged = d.path().join("staged");
        symlink(&victim, &staged).unwrap();
        assert!(s.put_moving("packs/c", &staged).is_err());
        assert!(s.put_file("packs/c", &staged).is_err());
        assert!(s.get("packs/c").is_err());
        // The root itself a link: refused.
        let linked = d.path().join("linked-root");
        symlink(outside.path(), &linked).unwrap();
        let l = LocalStore::new(linked);
        assert!(l.put("pgcryptfs.vault", b"x").is_err());
        assert!(l.is_empty().is_err());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1);
    }
}
