//! The object-store seam: a small trait, the local-directory store (the embedded default)
//! and an in-memory store for tests. Keys are '/'-separated relative names.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug)]
pub enum StoreError {
    NotFound(String),
    /// A conditional create found the object already there.
    AlreadyExists(String),
    Io { key: String, source: io::Error },
    /// A ranged read asked for bytes past the end of the object.
    ShortObject { key: String, want: u64, have: u64 },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound(k) => write!(f, "object {k} does not exist"),
            StoreError::AlreadyExists(k) => write!(f, "object {k} already exists"),
            StoreError::Io { key, source } => write!(f, "store I/O error on {key}: {source}"),
            StoreError::ShortObject { key, want, have } => {
                write!(f, "object {key} is {have} bytes, a read needed {want}")
            }
        }
    }
}

impl std::error::Error for StoreError {}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What pgcryptfs needs from an object store. Every put is atomic: readers see the whole
/// object or nothing.
pub trait Store: Send + Sync {
    /// A human-readable location for messages.
    fn describe(&self) -> String;
    /// Creates or replaces `key`.
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;
    /// Creates `key` only if it does not exist (conditional create).
    fn put_new(&self, key: &str, data: &[u8]) -> Result<()>;
    /// Uploads a local file as `key`.
    fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        let data = fs::read(path).map_err(|source| StoreError::Io { key: key.to_string(), source })?;
        self.put(key, &data)
    }
    /// Stores a local file as `key` and removes the local file: for a local store on the same
    /// file system this is a rename, elsewhere an upload.
    fn put_moving(&self, key: &str, path: &Path) -> Result<()> {
        self.put_file(key, path)?;
        fs::remove_file(path).map_err(|source| StoreError::Io { key: key.to_string(), source })
    }
    fn get(&self, key: &str) -> Result<Vec<u8>>;
    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// Names and sizes of all objects whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>>;
    /// Deletes `key`; deleting a missing key is not an error.
    fn delete(&self, key: &str) -> Result<()>;
    /// True if the store holds no object at all (init refuses anything else).
    fn is_empty(&self) -> Result<bool>;
    /// Bytes free for new data, if the store knows.
    fn free_bytes(&self) -> Option<(u64, u64)> {
        None
    }
}

/// Opens the store named by a STORE argument: a plain path or `file:///path`.
pub fn open_store(url: &str) -> std::result::Result<Box<dyn Store>, String> {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(format!("{url}: a file:// URL needs an absolute path (file:///path)"));
        }
        return Ok(Box::new(LocalStore::new(PathBuf::from(path))));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        return Err(format!(
            "{url}: the {scheme}:// store is not available in this build; use a local path or file:///path"
        ));
    }
    Ok(Box::new(LocalStore::new(PathBuf::from(url))))
}

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
        let f = self.open_for_read(key)?;
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let n = f.read_at(&mut buf[done..], offset + done as u64).map_err(Self::io(key))?;
            if n == 0 {
                let have = f.metadata().map(|m| m.len()).unwrap_or(0);
                return Err(StoreError::ShortObject { key: key.to_string(), want: offset + len as u64, have });
            }
            done += n;
        }
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

/// An in-memory store, for tests of the layers above the seam.
#[derive(Default)]
pub struct MemStore {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemStore {
    fn describe(&self) -> String {
        "memory".into()
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.objects.lock().unwrap().insert(key.to_string(), data.to_vec());
        Ok(())
    }
    fn put_new(&self, key: &str, data: &[u8]) -> Result<()> {
        let mut o = self.objects.lock().unwrap();
        if o.contains_key(key) {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        o.insert(key.to_string(), data.to_vec());
        Ok(())
    }
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.objects.lock().unwrap().get(key).cloned().ok_or_else(|| StoreError::NotFound(key.to_string()))
    }
    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let o = self.objects.lock().unwrap();
        let v = o.get(key).ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        let end = offset as usize + len;
        if end > v.len() {
            return Err(StoreError::ShortObject { key: key.to_string(), want: end as u64, have: v.len() as u64 });
        }
        Ok(v[offset as usize..end].to_vec())
    }
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let o = self.objects.lock().unwrap();
        Ok(o.range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.len() as u64))
            .collect())
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
    fn is_empty(&self) -> Result<bool> {
        Ok(self.objects.lock().unwrap().is_empty())
    }
}

/// Reads a whole local file (used for cache files, which are small or streamed elsewhere).
pub fn read_file_range(path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract every store must meet; run on each backend.
    fn conformance(s: &dyn Store) {
        assert!(s.is_empty().unwrap());
        assert!(matches!(s.get("packs/a"), Err(StoreError::NotFound(_))));
        s.put("packs/a", b"hello world").unwrap();
        assert!(!s.is_empty().unwrap());
        assert_eq!(s.get("packs/a").unwrap(), b"hello world");
        assert_eq!(s.get_range("packs/a", 6, 5).unwrap(), b"world");
        assert!(matches!(s.get_range("packs/a", 6, 6), Err(StoreError::ShortObject { .. })));
        s.put("packs/a", b"replaced").unwrap();
        assert_eq!(s.get("packs/a").unwrap(), b"replaced");
        s.put_new("meta/1", b"one").unwrap();
        assert!(matches!(s.put_new("meta/1", b"two"), Err(StoreError::AlreadyExists(_))));
        assert_eq!(s.get("meta/1").unwrap(), b"one");
        s.put("top", b"t").unwrap();
        assert_eq!(s.list("packs/").unwrap(), vec![("packs/a".to_string(), 8)]);
        assert_eq!(s.list("meta/").unwrap(), vec![("meta/1".to_string(), 3)]);
        assert_eq!(s.list("nothing/").unwrap(), vec![]);
        s.delete("packs/a").unwrap();
        s.delete("packs/a").unwrap();
        assert!(matches!(s.get("packs/a"), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn local_store_conforms() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::new(d.path().to_path_buf());
        conformance(&s);
        let src = d.path().join("src");
        fs::write(&src, b"file body").unwrap();
        s.put_file("packs/f", &src).unwrap();
        assert_eq!(s.get("packs/f").unwrap(), b"file body");
        s.put_moving("packs/g", &src).unwrap();
        assert_eq!(s.get("packs/g").unwrap(), b"file body");
        assert!(!src.exists());
        assert!(s.free_bytes().is_some());
    }

    #[test]
    fn mem_store_conforms() {
        conformance(&MemStore::new());
    }

    #[test]
    fn urls() {
        assert!(open_store("/tmp/x").is_ok());
        assert!(open_store("file:///tmp/x").is_ok());
        assert!(open_store("file://rel").err().unwrap().contains("absolute"));
        assert!(open_store("s3://b/p").err().unwrap().contains("not available"));
    }
}
