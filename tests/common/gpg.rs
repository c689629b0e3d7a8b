//! OpenPGP keys made by GnuPG (`gpg --batch --generate-key`) in a private GNUPGHOME, exported
//! as pgcryptfs users would: the armored certificate and the armored secret key.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::must;

/// A key pair made by gpg, exported to files in `dir`.
pub struct GpgKey {
    pub cert: PathBuf,
    pub secret: PathBuf,
    /// A file holding the passphrase (if the key has one).
    pub passphrase_file: Option<PathBuf>,
    pub fingerprint: String,
}

/// `kind` is "rsa3072" or "ed25519" (ed25519 primary, cv25519 encryption subkey).
pub fn generate(dir: &Path, name: &str, kind: &str, passphrase: Option<&str>) -> GpgKey {
    let home = dir.join(format!("gnupg-{name}"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let key_type = match kind {
        "rsa3072" => "Key-Type: RSA\nKey-Length: 3072\nSubkey-Type: RSA\nSubkey-Length: 3072\n",
        "ed25519" => "Key-Type: EDDSA\nKey-Curve: ed25519\nSubkey-Type: ECDH\nSubkey-Curve: cv25519\n",
        k => panic!("unknown key kind {k}"),
    };
    let protection = match passphrase {
        Some(p) => format!("Passphrase: {p}\n"),
        None => "%no-protection\n".into(),
    };
    let params = format!(
        "{key_type}Name-Real: {name}\nName-Email: {name}@example.org\nExpire-Date: 0\n{protection}%commit\n"
    );
    let pfile = dir.join(format!("{name}.params"));
    std::fs::write(&pfile, params).unwrap();
    let gpg = |args: &[&str]| {
        let mut c = Command::new("gpg");
        c.arg("--homedir").arg(&home).args(["--batch", "--pinentry-mode", "loopback"]);
        if let Some(p) = passphrase {
            c.args(["--passphrase", p]);
        }
        c.args(args);
        must(&mut c).stdout
    };
    gpg(&["--generate-key", pfile.to_str().unwrap()]);
    let colons = String::from_utf8(gpg(&["--with-colons", "--list-keys"])).unwrap();
    let fingerprint = colons.lines().find(|l| l.starts_with("fpr:")).unwrap().split(':').nth(9).unwrap().to_string();
    let cert = dir.join(format!("{name}.cert.asc"));
    std::fs::write(&cert, gpg(&["--armor", "--export", &fingerprint])).unwrap();
    let secret = dir.join(format!("{name}.secret.asc"));
    std::fs::write(&secret, gpg(&["--armor", "--export-secret-keys", &fingerprint])).unwrap();
    let passphrase_file = passphrase.map(|p| {
        let f = dir.join(format!("{name}.pass"));
        std::fs::write(&f, format!("{p}\n")).unwrap();
        f
    });
    let _ = Command::new("gpgconf").arg("--homedir").arg(&home).args(["--kill", "gpg-agent"]).output();
    GpgKey { cert, secret, passphrase_file, fingerprint }
}

impl GpgKey {
    /// `--pgp-cert CERT` for init / key add.
    pub fn cert_args(&self) -> Vec<String> {
        vec!["--pgp-cert".into(), self.cert.to_string_lossy().into()]
    }

    /// `--pgp-key-file K [--pgp-passphrase-file P]` for mount and key commands.
    pub fn unlock_args(&self) -> Vec<String> {
        let mut a = vec!["--pgp-key-file".into(), self.secret.to_string_lossy().into()];
        if let Some(p) = &self.passphrase_file {
            a.extend(["--pgp-passphrase-file".into(), p.to_string_lossy().into()]);
        }
        a
    }
}
