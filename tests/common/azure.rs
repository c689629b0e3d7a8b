//! A real Azure Blob endpoint for tests: Azurite (Microsoft's emulator, from npm) started as a
//! child process on 127.0.0.1 with a free port and a temporary workspace, one container made
//! with a Shared Key request, killed on drop. Installed by `scripts/install-deps.sh --test`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Azurite's single account and its key: public, documented, the same in every installation.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
pub const CONTAINER: &str = "backups";

/// Where the test looks for Azurite: `PGCRYPTFS_AZURITE`, else where the install script puts it.
pub fn binary() -> PathBuf {
    let p = PathBuf::from(std::env::var("PGCRYPTFS_AZURITE").unwrap_or_else(|_| "/opt/pgcryptfs-test/bin/azurite-blob".into()));
    assert!(
        p.exists(),
        "Azurite is not installed at {} (set PGCRYPTFS_AZURITE to its azurite-blob): run `sudo scripts/install-deps.sh --test`",
        p.display()
    );
    p
}

pub struct Azurite {
    pub port: u16,
    child: Child,
    /// Azurite's workspace (its blob metadata and extents), and its log.
    pub dir: tempfile::TempDir,
}

impl Azurite {
    pub fn start() -> Self {
        let bin = binary();
        let dir = tempfile::Builder::new().prefix("pgcfs-azurite").tempdir_in("/var/tmp").unwrap();
        let log = std::fs::File::create(dir.path().join("azurite.log")).unwrap();
        let port = super::pg::free_port();
        let child = Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--silent", "--disableTelemetry"])
            .arg("--location")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut a = Azurite { port, child, dir };
        a.wait_ready();
        a.create_container(CONTAINER);
        a
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("azurite.log")).unwrap_or_default()
    }

    /// Until the blob service answers HTTP (any status: an unsigned request is refused).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("Azurite exited at start ({status}):\n{}", self.log());
            }
            if super::gcs::http_status(self.port, "GET", &format!("/{ACCOUNT}?comp=list"), &[]).is_some() {
                return;
            }
            assert!(Instant::now() < deadline, "Azurite did not answer on 127.0.0.1:{} within 30 s:\n{}", self.port, self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Create Container, signed with Shared Key (Python's hmac: nothing in the test crate signs
    /// Azure requests, and object_store cannot create containers).
    fn create_container(&self, name: &str) {
        let script = r#"
import base64, datetime, hashlib, hmac, os, sys, urllib.request
account, key, port, container = os.environ["ACCT"], os.environ["ACCT_KEY"], os.environ["PORT"], os.environ["CONTAINER"]
date = datetime.datetime.now(datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
version = "2021-08-06"
resource = f"/{account}/{account}/{container}\nrestype:container"
to_sign = "PUT\n" + "\n" * 11 + f"x-ms-date:{date}\nx-ms-version:{version}\n" + resource
sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(f"http://127.0.0.1:{port}/{account}/{container}?restype=container", method="PUT", data=None,
    headers={"x-ms-date": date, "x-ms-version": version, "Authorization": f"SharedKey {account}:{sig}", "Content-Length": "0"})
try:
    print(urllib.request.urlopen(req).status)
except urllib.error.HTTPError as e:
    sys.exit(f"create container: {e.code} {e.read().decode(errors='replace')}")
"#;
        let o = Command::new("python3")
            .arg("-c")
            .arg(script)
            .env("ACCT", ACCOUNT)
            .env("ACCT_KEY", ACCOUNT_KEY)
            .env("PORT", self.port.to_string())
            .env("CONTAINER", name)
            .output()
            .expect("python3 (installed by scripts/install-deps.sh)");
        assert!(o.status.success(), "creating container {name}: {}\n{}", super::stderr(&o), self.log());
    }

    /// The blob endpoint of the account, as `--store-opt endpoint=` and `BlobEndpoint=` take it.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// `az://CONTAINER/prefix` and the store options that reach this server (no secret).
    pub fn store_args(&self, prefix: &str) -> (String, Vec<String>) {
        let opts = [format!("endpoint={}", self.endpoint()), "allow_http=true".to_string()];
        (format!("az://{CONTAINER}/{prefix}"), opts.iter().flat_map(|o| ["--store-opt".to_string(), o.clone()]).collect())
    }

    /// Credentials the way Azure users give them: the account variables.
    pub fn env() -> Vec<(String, String)> {
        vec![
            ("AZURE_STORAGE_ACCOUNT_NAME".into(), ACCOUNT.into()),
            ("AZURE_STORAGE_ACCOUNT_KEY".into(), ACCOUNT_KEY.into()),
        ]
    }

    /// The same as one connection string (`AZURE_STORAGE_CONNECTION_STRING`), Azurite's documented form.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};BlobEndpoint={};",
            self.endpoint()
        )
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
