//! A standalone S3 endpoint for benchmarks and manual trials: s3s-fs (the server the tests
//! use) serving path-style S3 on 127.0.0.1, objects kept as files under `--root`.
//!
//! ```sh
//! cargo run --release --example s3_endpoint -- --root /var/tmp/s3 --port 9000 \
//!     --access-key AK --secret-key SK [--bucket backups]
//! ```
//!
//! Prints `listening on 127.0.0.1:PORT` once it accepts connections; runs until killed.

use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// Directory holding the buckets (one subdirectory per bucket).
    #[arg(long)]
    root: PathBuf,
    /// TCP port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long)]
    access_key: String,
    #[arg(long)]
    secret_key: String,
    /// Bucket created (as a directory under --root) if missing.
    #[arg(long, default_value = "backups")]
    bucket: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    std::fs::create_dir_all(args.root.join(&args.bucket))?;
    let fs = s3s_fs::FileSystem::new(&args.root).map_err(|e| format!("{}: {e:?}", args.root.display()))?;
    let mut b = S3ServiceBuilder::new(fs);
    b.set_auth(SimpleAuth::from_single(args.access_key, args.secret_key));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    loop {
        let Ok((sock, _)) = listener.accept().await else { continue };
        let _ = sock.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(sock), service)
                .await;
        });
    }
}
