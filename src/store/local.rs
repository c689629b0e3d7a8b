//! The local-directory store (the embedded default): one file per object under a root
//! directory, written to a temporary file, fsynced and renamed into place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Result, Store, StoreError};

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
        let f = std::sync::Arc::new(File::open(self.path(key)).map_err(Self::io(key))?);
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

    fn io(key: &str) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |source| {
            if source.kind() == io::ErrorKind::NotFound {
                StoreError::NotFound(key.to_string())
            } else {
                StoreError::Io { key: key.to_string(), source }
            }
        }
    }

    fn write_temp(&self, key: &str, fill: impl FnOnce(&mut File) -> io::Result<()>) -> Result<PathBuf> {
        let path = self.path(key);
        let dir = path.parent().expect("keys have a parent").to_path_buf();
        fs::create_dir_all(&dir).map_err(Self::io(key))?;
        let tmp = dir.join(format!(".tmp-{}", crate::format::hex(&crate::crypto::random_id())));
        let result = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            fill(&mut f)?;
            f.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(Self::io(key)(e));
        }
        Ok(tmp)
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
        let linked = fs::hard_link(&tmp, self.path(key));
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => self.sync_dir(key),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StoreError::AlreadyExists(key.to_string())),
            Err(e) => Err(Self::io(key)(e)),
        }
    }

    fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        self.forget_open(key);
        let tmp = self.write_temp(key, |f| {
            let mut src = File::open(path)?;
            io::copy(&mut src, f).map(|_| ())
        })?;
        fs::rename(&tmp, self.path(key)).map_err(Self::io(key))?;
        self.sync_dir(key)
    }

    fn put_moving(&self, key: &str, path: &Path) -> Result<()> {
        self.forget_open(key);
        let dest = self.path(key);
        fs::create_dir_all(dest.parent().expect("keys have a parent")).map_err(Self::io(key))?;
        File::open(path).and_then(|f| f.sync_all()).map_err(Self::io(key))?;
        match fs::rename(path, &dest) {
            Ok(()) => self.sync_dir(key),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                self.put_file(key, path)?;
                fs::remove_file(path).map_err(Self::io(key))
            }
            Err(e) => Err(Self::io(key)(e)),
        }
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        fs::read(self.path(key)).map_err(Self::io(key))
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
        match fs::remove_file(self.path(key)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io(key)(e)),
        }
    }

    fn is_empty(&self) -> Result<bool> {
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

