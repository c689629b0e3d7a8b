//! A real S3 endpoint for tests: s3s-fs served in-process on 127.0.0.1 (ephemeral port,
//! TCP_NODELAY), objects kept as files under a temporary root.

use hyper_util::rt::{TokioExecutor, TokioIo};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "pgcryptfs-test-ak";
pub const SECRET_KEY: &str = "pgcryptfs-test-sk";
pub const BUCKET: &str = "backups";

pub struct S3Server {
    pub port: u16,
    /// While set, every request gets 503 Service Unavailable (a store outage).
    pub outage: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// While set, every PUT gets 403 AccessDenied (credentials the store no longer accepts).
    pub refuse_puts: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Milliseconds every request waits before it is served (a slow store).
    pub delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// GET requests served (object reads, ranged or whole).
    pub gets: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Where s3s-fs keeps the bucket's objects as files.
    pub root: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

impl S3Server {
    pub fn start() -> Self {
        let root = tempfile::Builder::new().prefix("pgcfs-s3").tempdir_in("/var/tmp").unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = b.build();
        let outage = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let down = outage.clone();
        let gets = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = gets.clone();
        let delay_ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let slow = delay_ms.clone();
        let refuse_puts = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refusing = refuse_puts.clone();
        rt.spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { continue };
                let _ = sock.set_nodelay(true);
                let (service, down, counted, slow, refusing) =
                    (service.clone(), down.clone(), counted.clone(), slow.clone(), refusing.clone());
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let service = service.clone();
                    // Object reads only: a GET of a key (a list is a GET of the bucket with a query).
                    if req.method() == http::Method::GET && req.uri().query().is_none_or(|q| !q.contains("list-type")) {
                        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    let unavailable = down.load(std::sync::atomic::Ordering::SeqCst);
                    let forbidden =
                        req.method() == http::Method::PUT && refusing.load(std::sync::atomic::Ordering::SeqCst);
                    let delay = std::time::Duration::from_millis(slow.load(std::sync::atomic::Ordering::SeqCst));
                    async move {
                        tokio::time::sleep(delay).await;
                        if forbidden {
                            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
                                        <Message>Access Denied</Message></Error>";
                            let mut r = http::Response::new(s3s::Body::from(body.to_string()));
                            *r.status_mut() = http::StatusCode::FORBIDDEN;
                            Ok::<_, s3s::HttpError>(r)
                        } else if unavailable {
                            let mut r = http::Response::new(s3s::Body::empty());
                            *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                            Ok::<_, s3s::HttpError>(r)
                        } else {
                            hyper::service::Service::call(&service, req).await
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        S3Server { port, outage, refuse_puts, delay_ms, gets, root, _rt: rt }
    }

    /// `s3://BUCKET/prefix` plus the store options that reach this server.
    pub fn store_args(&self, prefix: &str) -> (String, Vec<String>) {
        let opts = [
            format!("endpoint=http://127.0.0.1:{}", self.port),
            "allow_http=true".into(),
            "path_style=true".into(),
            "region=us-east-1".into(),
        ];
        (format!("s3://{BUCKET}/{prefix}"), opts.iter().flat_map(|o| ["--store-opt".to_string(), o.clone()]).collect())
    }

    /// Where the objects of `prefix` live on disk (for inspection and tampering).
    pub fn objects(&self, prefix: &str) -> std::path::PathBuf {
        self.root.path().join(BUCKET).join(prefix)
    }

    /// Credentials, the way a user provides them: the standard environment variables.
    pub fn env() -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ]
    }
}
