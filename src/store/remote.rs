//! Object stores through the `object_store` crate: S3 and S3-compatible servers, Google Cloud
//! Storage, Azure Blob Storage. One tokio runtime lives here, behind the synchronous seam.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path as ObjPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::{Result, Store, StoreError, Version};

/// Store options a command line may carry: none of them is a secret.
pub const OPTION_NAMES: &[&str] = &["endpoint", "region", "allow_http", "path_style", "credentials_file"];

/// A bucket (and prefix) in an object store.
pub struct RemoteStore {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    describe: String,
    rt: tokio::runtime::Runtime,
    /// Set once the store has been seen to refuse a conditional create of an existing object.
    create_checked: AtomicBool,
    /// Set once the store has been seen to refuse a replace conditional on a stale version.
    update_checked: AtomicBool,
}

/// Error classes: object_store turns 401/403 into `Unauthenticated`/`PermissionDenied`, and a
/// missing bucket into `NotFound`, which only a write (`missing_is_refusal`) can tell apart
/// from a missing object. Those are `Refused` (permanent); the rest may pass and is `Io`.
fn store_err_of(key: &str, e: object_store::Error, missing_is_refusal: bool) -> StoreError {
    let refused = |reason: String| StoreError::Refused { key: key.to_string(), reason };
    match e {
        object_store::Error::NotFound { source, .. } if missing_is_refusal => {
            refused(format!("the bucket or container does not exist ({source})"))
        }
        object_store::Error::NotFound { .. } => StoreError::NotFound(key.to_string()),
        object_store::Error::AlreadyExists { .. } => StoreError::AlreadyExists(key.to_string()),
        object_store::Error::Precondition { .. } => StoreError::Changed(key.to_string()),
        e @ (object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. }
        | object_store::Error::NotSupported { .. }
        | object_store::Error::NotImplemented { .. }
        | object_store::Error::InvalidPath { .. }
        | object_store::Error::UnknownConfigurationKey { .. }) => refused(e.to_string()),
        other => StoreError::Io { key: key.to_string(), source: std::io::Error::other(other.to_string()) },
    }
}

fn store_err(key: &str, e: object_store::Error) -> StoreError {
    store_err_of(key, e, false)
}

fn update_version(v: &Version) -> UpdateVersion {
    UpdateVersion { e_tag: v.e_tag.clone(), version: v.generation.clone() }
}

/// object_store's own retries, kept short: the upload workers retry for ever with their own
/// backoff and report each failure in `status`, and a lease renewal must give up well within
/// the lease's lifetime (the default would retry a request for up to three minutes).
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig { max_retries: 3, retry_timeout: std::time::Duration::from_secs(15), ..Default::default() }
}

/// Reads `KEY=VALUE` lines (blank lines and `#` comments allowed) of a credentials file.
fn read_credentials(path: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read credentials file {path}: {e}"))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("credentials file {path}, line {}: expected KEY=VALUE", n + 1))?;
        out.push((k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_string()));
    }
    Ok(out)
}

/// `AZURE_STORAGE_CONNECTION_STRING` (`Key=Value;...`, as the Azure portal, the Azure CLI and
/// Azurite's documentation give it) as object_store settings: `AccountName`, `AccountKey`,
/// `SharedAccessSignature`, `BlobEndpoint` (an `http://` one allows plain http),
/// `DefaultEndpointsProtocol` with `EndpointSuffix`, `UseDevelopmentStorage=true` (Azurite on
/// 127.0.0.1:10000). Other services' endpoints are ignored. Errors never quote the string: it
/// holds the key.
fn azure_connection_string(cs: &str) -> std::result::Result<Vec<(AzureConfigKey, String)>, String> {
    let what = "AZURE_STORAGE_CONNECTION_STRING";
    let mut fields: Vec<(String, String)> = Vec::new();
    for (n, part) in cs.split(';').map(str::trim).enumerate() {
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once('=').ok_or_else(|| format!("{what}: part {} is not Key=Value", n + 1))?;
        fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let get = |name: &str| fields.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut out = Vec::new();
    if get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        out.push((AzureConfigKey::UseEmulator, "true".to_string()));
    }
    let account = get("accountname");
    if let Some(a) = &account {
        out.push((AzureConfigKey::AccountName, a.clone()));
    }
    if let Some(k) = get("accountkey") {
        out.push((AzureConfigKey::AccessKey, k));
    }
    if let Some(sas) = get("sharedaccesssignature") {
        out.push((AzureConfigKey::SasKey, sas));
    }
    let protocol = get("defaultendpointsprotocol").unwrap_or_else(|| "https".to_string()).to_ascii_lowercase();
    if protocol != "https" && protocol != "http" {
        return Err(format!("{what}: DefaultEndpointsProtocol must be https or http, not {protocol}"));
    }
    let endpoint = match (get("blobendpoint"), get("endpointsuffix"), &account) {
        (Some(e), _, _) => Some(e.trim_end_matches('/').to_string()),
        (None, Some(suffix), Some(a)) => Some(format!("{protocol}://{a}.blob.{suffix}")),
        (None, None, Some(a)) if protocol == "http" => Some(format!("http://{a}.blob.core.windows.net")),
        _ => None,
    };
    if let Some(e) = endpoint {
        if e.starts_with("http://") {
            out.push((AzureConfigKey::Client(object_store::ClientConfigKey::AllowHttp), "true".to_string()));
        }
        out.push((AzureConfigKey::Endpoint, e));
    }
    if out.is_empty() {
        return Err(format!("{what} names no account, key, signature or endpoint"));
    }
    Ok(out)
}

impl RemoteStore {
    /// Opens `scheme://bucket/prefix`. Credentials come from the cloud's standard environment
    /// variables, or from `credentials_file=` (the same variables, one `KEY=VALUE` a line).
    pub fn open(url: &str, options: &[(String, String)]) -> std::result::Result<Self, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("{url}: not a URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url}: the URL names no bucket or container"));
        }
        let prefix = prefix.trim_matches('/').to_string();
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in options {
            match k.as_str() {
                "credentials_file" => pairs.extend(read_credentials(v)?),
                "path_style" => pairs.push(("virtual_hosted_style_request".into(), (v != "true").to_string())),
                k if OPTION_NAMES.contains(&k) => pairs.push((k.to_string(), v.clone())),
                other => return Err(format!("unknown store option {other:?} (known: {})", OPTION_NAMES.join(", "))),
            }
        }
        let bad = |k: &str| format!("{url}: option {k} does not apply to {scheme}:// stores");
        let inner: Arc<dyn ObjectStore> = match scheme {
            "s3" => {
                let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry());
                let profile = super::aws_profile::settings(&|k| std::env::var(k).ok())?;
                for (k, v) in profile.iter().chain(&pairs) {
                    let key = match k.as_str() {
                        "endpoint" => AmazonS3ConfigKey::Endpoint,
                        "region" => AmazonS3ConfigKey::Region,
                        "allow_http" => AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp),
                        other => other.parse().map_err(|_| bad(other))?,
                    };
                    b = b.with_config(key, v.clone());
                }
                Arc::new(b.build().map_err(|e| format!("{url}: {e}"))?)
            }
            "gs" => {
                let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket).with_retry(retry());
                for (k, v) in &pairs {
                    let key: GoogleConfigKey = match k.as_str() {
                        // A GCS emulator or a private endpoint: object_store's base URL (which
                        // a service-account JSON may also carry as `gcs_base_url`).
                        "endpoint" => GoogleConfigKey::BaseUrl,
                        "allow_http" => GoogleConfigKey::Client(object_store::ClientConfigKey::AllowHttp),
                        other => other.parse().map_err(|_| bad(other))?,
                    };
                    b = b.with_config(key, v.clone());
                }
                Arc::new(b.build().map_err(|e| format!("{url}: {e}"))?)
            }
            "az" | "azure" => {
                let mut b = MicrosoftAzureBuilder::from_env().with_container_name(bucket).with_retry(retry());
                // A connection string (the environment's, or a credentials file's) first, so
                // that explicit options below win over it.
                let from_file = pairs.iter().rev().find(|(k, _)| k == "azure_storage_connection_string").map(|(_, v)| v.clone());
                if let Some(cs) = from_file.or_else(|| std::env::var("AZURE_STORAGE_CONNECTION_STRING").ok()) {
                    for (k, v) in azure_connection_string(&cs).map_err(|e| format!("{url}: {e}"))? {
                        b = b.with_config(k, v);
                    }
                }
                for (k, v) in pairs.iter().filter(|(k, _)| k != "azure_storage_connection_string") {
                    let key: AzureConfigKey = match k.as_str() {
                        "endpoint" => AzureConfigKey::Endpoint,
                        "allow_http" => AzureConfigKey::Client(object_store::ClientConfigKey::AllowHttp),
                        other => other.parse().map_err(|_| bad(other))?,
                    };
                    b = b.with_config(key, v.clone());
                }
                Arc::new(b.build().map_err(|e| format!("{url}: {e}"))?)
            }
            other => return Err(format!("{url}: unknown store scheme {other}:// (use s3://, gs://, az:// or a path)")),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("store-io")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the store I/O runtime: {e}"))?;
        Ok(Self { inner, prefix, describe: url.to_string(), rt, create_checked: AtomicBool::new(false), update_checked: AtomicBool::new(false) })
    }

    fn path(&self, key: &str) -> ObjPath {
        if self.prefix.is_empty() { ObjPath::from(key) } else { ObjPath::from(format!("{}/{key}", self.prefix)) }
    }

    fn key_of(&self, p: &ObjPath) -> String {
        let s = p.as_ref();
        if self.prefix.is_empty() { s.to_string() } else { s.strip_prefix(&format!("{}/", self.prefix)).unwrap_or(s).to_string() }
    }

    /// Up to `len` bytes at `offset` (object_store clamps a range that runs past the end); empty
    /// if the object ends before `offset`.
    fn range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let p = self.path(key);
        let end = offset + len as u64;
        match self.rt.block_on(self.inner.get_range(&p, offset..end)) {
            Ok(bytes) => Ok(bytes.to_vec()),
            Err(object_store::Error::NotFound { .. }) => Err(StoreError::NotFound(key.to_string())),
            Err(other) => {
                // 416 Range Not Satisfiable: the object ends before `offset`. Some servers
                // (Azurite) answer a range that starts at the end with a 206 instead, which
                // object_store reports as its InvalidGetRange::StartTooLarge (not nameable).
                let msg = other.to_string();
                if msg.contains("416")
                    || msg.contains("Range Not Satisfiable")
                    || msg.contains("InvalidRange")
                    || msg.contains("Wanted range starting at")
                {
                    Ok(Vec::new())
                } else {
                    Err(store_err(key, other))
                }
            }
        }
    }

    /// The writer lease and the metadata segments rest on conditional creates (`If-None-Match:
    /// *` on S3 and Azure, `x-goog-if-generation-match: 0` on GCS). A store that ignores them
    /// (some emulators and S3-compatible servers, a proxy that drops the header) would let two
    /// writers each believe they hold the vault. So the first object this store creates is
    /// created a second time, with the same bytes: that must be refused. If it is not, the
    /// object (ours, just made) is removed and the write refused with a message naming the
    /// store. A request that fails for another reason leaves the check for the next create.
    fn check_conditional_create(&self, key: &str, data: &[u8]) -> Result<()> {
        match self.put_mode(key, PutPayload::from(data.to_vec()), PutMode::Create) {
            Err(StoreError::AlreadyExists(_)) => {
                self.create_checked.store(true, Ordering::SeqCst);
                Ok(())
            }
            Ok(()) => {
                let removed = match self.delete(key) {
                    Ok(()) => "it was removed again".to_string(),
                    Err(e) => format!("removing it again failed: {e}"),
                };
                Err(StoreError::Refused {
                    key: key.to_string(),
                    reason: format!(
                        "{} does not honour conditional creates: creating {key} a second time replaced it instead of \
                         failing ({removed}). pgcryptfs's writer lease needs them, so it does not write to this store",
                        self.describe
                    ),
                })
            }
            Err(e) => {
                log::warn!("{}: could not check that the store refuses a second create of {key}: {e}", self.describe);
                Ok(())
            }
        }
    }

    /// The writer lease is renewed with a replace conditional on the version read (`If-Match`
    /// on S3 and Azure, `x-goog-if-generation-match` on GCS). A store that ignores the
    /// condition would let a renewal overwrite a lease another host took meanwhile, so the
    /// first conditional replace is sent once with a version no object has: it must be
    /// refused. If it is not, the write (ours, and meant anyway) stays and pgcryptfs refuses
    /// to use the store, naming it.
    fn check_conditional_replace(&self, key: &str, data: &[u8]) -> Result<()> {
        let bogus = Version { e_tag: Some("\"00000000000000000000000000000000\"".into()), generation: Some("1".into()) };
        match self.put_mode(key, PutPayload::from(data.to_vec()), PutMode::Update(update_version(&bogus))) {
            Err(StoreError::Changed(_)) => {
                self.update_checked.store(true, Ordering::SeqCst);
                Ok(())
            }
            Ok(()) => Err(StoreError::Refused {
                key: key.to_string(),
                reason: format!(
                    "{} does not honour conditional replaces: a replace of {key} conditional on a version it never \
                     had succeeded. pgcryptfs's writer lease needs them, so it does not write to this store",
                    self.describe
                ),
            }),
            Err(e) => Err(e),
        }
    }

    fn put_mode(&self, key: &str, data: PutPayload, mode: PutMode) -> Result<()> {
        let opts = PutOptions { mode, ..Default::default() };
        self.rt.block_on(self.inner.put_opts(&self.path(key), data, opts)).map(|_| ()).map_err(|e| store_err_of(key, e, true))
    }
}

impl Store for RemoteStore {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.put_mode(key, PutPayload::from(data.to_vec()), PutMode::Overwrite)
    }

    fn put_new(&self, key: &str, data: &[u8]) -> Result<()> {
        self.put_mode(key, PutPayload::from(data.to_vec()), PutMode::Create)?;
        if !self.create_checked.load(Ordering::SeqCst) {
            self.check_conditional_create(key, data)?;
        }
        Ok(())
    }

    fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        // Mapped, not read: the pack's pages are shared with the page cache (where the staging
        // writes left them) instead of copied onto the heap, one pack per upload in flight.
        let io = |source| StoreError::Io { key: key.to_string(), source };
        // Never through a link, and only a regular file (the cache is untrusted; a FIFO there
        // must not block the upload).
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).map_err(io)?
        };
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(io(std::io::Error::other(format!("{} is not a regular file", path.display()))));
        }
        let payload = if meta.len() == 0 {
            PutPayload::new()
        } else {
            // SAFETY: staging packs are closed before upload and never written or truncated
            // again; the map lives until the request that reads it is done.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
            PutPayload::from(bytes::Bytes::from_owner(map))
        };
        self.put_mode(key, payload, PutMode::Overwrite)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let p = self.path(key);
        self.rt
            .block_on(async { self.inner.get(&p).await?.bytes().await })
            .map(|b| b.to_vec())
            .map_err(|e| store_err(key, e))
    }

    fn get_versioned(&self, key: &str, len: usize) -> Result<(Vec<u8>, Version)> {
        let p = self.path(key);
        let opts = GetOptions { range: Some(GetRange::Bounded(0..len as u64)), ..Default::default() };
        let (bytes, meta) = self
            .rt
            .block_on(async {
                let r = self.inner.get_opts(&p, opts).await?;
                let meta = r.meta.clone();
                Ok::<_, object_store::Error>((r.bytes().await?, meta))
            })
            .map_err(|e| store_err(key, e))?;
        if meta.e_tag.is_none() && meta.version.is_none() {
            return Err(StoreError::Refused {
                key: key.to_string(),
                reason: format!("{} answered without an ETag or generation, so it cannot replace {key} conditionally", self.describe),
            });
        }
        Ok((bytes.to_vec(), Version { e_tag: meta.e_tag, generation: meta.version }))
    }

    fn put_replacing(&self, key: &str, data: &[u8], version: &Version) -> Result<()> {
        if !self.update_checked.load(Ordering::SeqCst) {
            self.check_conditional_replace(key, data)?;
        }
        self.put_mode(key, PutPayload::from(data.to_vec()), PutMode::Update(update_version(version)))
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let bytes = self.range(key, offset, len)?;
        if bytes.len() != len {
            let have = if bytes.is_empty() { 0 } else { offset + bytes.len() as u64 };
            return Err(StoreError::ShortObject { key: key.to_string(), want: offset + len as u64, have });
        }
        Ok(bytes)
    }

    fn get_range_upto(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.range(key, offset, len)
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let dir = prefix.trim_end_matches('/');
        let p = self.path(dir);
        let metas: Vec<object_store::ObjectMeta> =
            self.rt.block_on(self.inner.list(Some(&p)).try_collect()).map_err(|e| store_err(prefix, e))?;
        let mut out: Vec<(String, u64)> = metas
            .iter()
            .map(|m| (self.key_of(&m.location), m.size))
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        match self.rt.block_on(self.inner.delete(&self.path(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err(key, e)),
        }
    }

    fn is_empty(&self) -> Result<bool> {
        let p = if self.prefix.is_empty() { None } else { Some(ObjPath::from(self.prefix.as_str())) };
        let first = self.rt.block_on(async { self.inner.list(p.as_ref()).try_next().await });
        first.map(|o| o.is_none()).map_err(|e| store_err("", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(cs: &str) -> Vec<(String, String)> {
        azure_connection_string(cs).unwrap().into_iter().map(|(k, v)| (k.as_ref().to_string(), v)).collect()
    }

    #[test]
    fn azure_connection_string_with_a_blob_endpoint() {
        // Azurite's documented development connection string (its well-known, public key).
        let cs = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;\
                  AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;\
                  BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;";
        let s = settings(cs);
        let get = |k: &str| s.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("azure_storage_account_name"), Some("devstoreaccount1"));
        assert!(get("azure_storage_account_key").unwrap().ends_with("GMGw=="), "the key keeps its '=' padding");
        assert_eq!(get("azure_storage_endpoint"), Some("http://127.0.0.1:10000/devstoreaccount1"));
        assert_eq!(get("allow_http"), Some("true"), "an http:// endpoint was asked for explicitly");
    }

    #[test]
    fn azure_connection_string_with_an_endpoint_suffix() {
        let s = settings("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.chinacloudapi.cn");
        assert!(s.contains(&("azure_storage_endpoint".into(), "https://acct.blob.core.chinacloudapi.cn".into())), "{s:?}");
        assert!(!s.iter().any(|(k, _)| k == "allow_http"));
        let s = settings("AccountName=acct;SharedAccessSignature=sv=2022&sig=x");
        assert!(s.contains(&("azure_storage_sas_key".into(), "sv=2022&sig=x".into())), "{s:?}");
        assert!(!s.iter().any(|(k, _)| k == "azure_storage_endpoint"), "the default endpoint: {s:?}");
        assert!(settings("UseDevelopmentStorage=true").contains(&("azure_storage_use_emulator".into(), "true".into())));
    }

    #[test]
    fn azure_connection_string_errors_never_quote_it() {
        let e = azure_connection_string("AccountName=a;AccountKeysecretsecret").unwrap_err();
        assert!(e.contains("part 2") && !e.contains("secret"), "{e}");
        assert!(azure_connection_string("DefaultEndpointsProtocol=ftp;AccountName=a").is_err());
        assert!(azure_connection_string(";;").is_err());
    }

    #[test]
    fn gs_takes_an_endpoint_and_a_service_account_from_a_credentials_file() {
        let dir = std::env::temp_dir().join(format!("pgcfs-gs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sa = dir.join("sa.json");
        std::fs::write(&sa, r#"{"private_key":"","private_key_id":"","client_email":"","disable_oauth":true}"#).unwrap();
        let env = dir.join("gcs.env");
        std::fs::write(&env, format!("GOOGLE_SERVICE_ACCOUNT={}\n", sa.display())).unwrap();
        let opts = [
            ("endpoint".to_string(), "http://127.0.0.1:4443".to_string()),
            ("allow_http".to_string(), "true".to_string()),
            ("credentials_file".to_string(), env.to_string_lossy().into_owned()),
        ];
        let s = RemoteStore::open("gs://bucket/prefix", &opts);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(s.is_ok(), "{:?}", s.err());
        let e = RemoteStore::open("gs://bucket/prefix", &[("path_style".to_string(), "true".to_string())]).err().unwrap();
        assert!(e.contains("does not apply to gs://"), "{e}");
    }
}
