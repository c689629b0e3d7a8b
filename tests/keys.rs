//! Key custody through the real binary: every slot method (keys made by gpg and by pgcryptfs),
//! several slots per vault, rotation without re-encryption, and every unlock error.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use common::*;
use serial_test::serial;

/// Cheap Argon2id for tests (the default is libsodium's MODERATE).
const CHEAP: [&str; 4] = ["--pwhash-opslimit", "1", "--pwhash-memlimit", "8M"];

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs a command that must fail; returns its stderr.
fn fails(cmd: &mut std::process::Command) -> String {
    let o = run(cmd);
    assert!(!o.status.success(), "{cmd:?} succeeded: {}", out(&o));
    stderr(&o)
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `key list` as (slot id, method, rest of the line).
fn slots(v: &Vault) -> Vec<(String, String, String)> {
    let o = must(v.cmd("key").arg("list").arg(&v.url).args(&v.store_opts));
    out(&o)
        .lines()
        .map(|l| {
            let mut it = l.split_whitespace();
            let id = it.next().unwrap().to_string();
            let method = it.next().unwrap().to_string();
            (id, method, it.collect::<Vec<_>>().join(" "))
        })
        .collect()
}

/// `key add` with `new` (the new slot) and `unlock`.
fn key_add(v: &Vault, new: &[String], unlock: &[String]) -> Output {
    run(v.cmd("key").arg("add").arg(&v.url).args(&v.store_opts).args(new).args(unlock))
}

fn key_remove(v: &Vault, id: &str, unlock: &[String]) -> Output {
    run(v.cmd("key").arg("remove").arg(&v.url).arg(id).args(&v.store_opts).args(unlock))
}

/// Proves `unlock` opens the vault without mounting: adding a throwaway slot needs an unlock.
fn opens(v: &Vault, unlock: &[String]) -> Result<(), String> {
    let extra = v.dir.path().join("extra.key");
    std::fs::write(&extra, "x".repeat(32)).unwrap();
    let o = key_add(v, &s(&["--new-key-file", &p(&extra), "--label", "probe"]), unlock);
    if !o.status.success() {
        return Err(stderr(&o));
    }
    let id = out(&o).split_whitespace().nth(3).unwrap().to_string();
    let o = key_remove(v, &id, unlock);
    assert!(o.status.success(), "{}", stderr(&o));
    Ok(())
}

fn object_hashes(store: &Path) -> BTreeMap<String, Vec<u8>> {
    walk(store)
        .into_iter()
        .filter(|f| !f.to_string_lossy().contains("/keys/"))
        .map(|f| (f.strip_prefix(store).unwrap().to_string_lossy().into_owned(), std::fs::read(&f).unwrap()))
        .collect()
}

#[test]
fn openpgp_keys_made_by_gpg() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let rsa = gpg::generate(dir.path(), "rsa", "rsa3072", Some("rsa secret"));
    let ed = gpg::generate(dir.path(), "ed", "ed25519", None);
    let stranger = gpg::generate(dir.path(), "stranger", "ed25519", Some("x"));
    let v = Vault::with_key(&rsa.cert_args(), &rsa.unlock_args());
    let list = slots(&v);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].1, "openpgp");
    assert!(list[0].2.starts_with(&format!("{} rsa <rsa@example.org> created ", rsa.fingerprint)), "{list:?}");
    opens(&v, &rsa.unlock_args()).unwrap();

    // A second cert (Curve25519, no passphrase) opens the vault as well.
    let o = key_add(&v, &ed.cert_args(), &rsa.unlock_args());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("audit: slot added") && stderr(&o).contains("method=openpgp"), "{}", stderr(&o));
    opens(&v, &ed.unlock_args()).unwrap();

    // Errors: wrong passphrase, no passphrase, someone else's key, the public cert instead.
    let wrong = dir.path().join("wrong.pass");
    std::fs::write(&wrong, "not it\n").unwrap();
    let secret = p(&rsa.secret);
    let e = opens(&v, &s(&["--pgp-key-file", &secret, "--pgp-passphrase-file", &p(&wrong)])).unwrap_err();
    assert!(e.contains(&format!("the passphrase of OpenPGP key {} is wrong (it is the recipient of key slot ", rsa.fingerprint)), "{e}");
    let e = opens(&v, &s(&["--pgp-key-file", &secret])).unwrap_err();
    assert!(e.contains(&format!("OpenPGP key {} is protected by a passphrase", rsa.fingerprint)), "{e}");
    let e = opens(&v, &stranger.unlock_args()).unwrap_err();
    assert!(
        e.contains(&format!(
            "the OpenPGP key {} is not a recipient of any of the vault's 2 openpgp slots (they are encrypted to ",
            stranger.fingerprint
        )) && e.contains(&rsa.fingerprint) && e.contains(&ed.fingerprint),
        "{e}"
    );
    let e = opens(&v, &s(&["--pgp-key-file", &p(&rsa.cert)])).unwrap_err();
    assert!(e.contains("holds only the public certificate"), "{e}");
    // A sodium key is told what the vault has.
    let e = opens(&v, &s(&["--key-file", &p(&v.key), "--key-transform", "hex"])).unwrap_err();
    assert!(e.contains("this vault has no sodium or command slot") && e.contains("(the vault has 2 openpgp slots)"), "{e}");
}

#[test]
fn passphrase_slots() {
    let v = Vault::new();
    let pass = v.dir.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let o = key_add(&v, &[s(&["--new-passphrase-file", &p(&pass), "--label", "dba on call"]), s(&CHEAP)].concat(), &v.key_args());
    assert!(o.status.success(), "{}", stderr(&o));
    let mut list = slots(&v);
    list.sort_by_key(|l| l.1 != "sodium"); // same second: `key list` orders by creation, then id
    assert_eq!(list.iter().map(|l| l.1.as_str()).collect::<Vec<_>>(), ["sodium", "passphrase"]);
    assert!(list[1].2.starts_with("dba on call created "), "{list:?}");
    // From a file (trailing newline dropped) or an env var (taken as is).
    opens(&v, &s(&["--passphrase-file", &p(&pass)])).unwrap();
    let mut add = v.cmd("key");
    add.args(["add", &v.url, "--new-key-file", &p(&v.key), "--new-key-transform", "hex", "--passphrase-env", "PGCFS_PASS"]);
    let o = run(add.env("PGCFS_PASS", "correct horse battery staple"));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(v.cmd("key").args(["add", &v.url, "--new-key-file", &p(&v.key), "--passphrase-env", "PGCFS_PASS"]).env("PGCFS_PASS", "Tr0ub4dor"));
    assert!(!o.status.success());
    assert_eq!(
        stderr(&o).lines().last().unwrap(),
        "pgcryptfs: the passphrase from environment variable PGCFS_PASS does not open any of the vault's 1 passphrase slot"
    );
    // Two passphrase slots: the message counts both.
    let pass2 = v.dir.path().join("pass2");
    std::fs::write(&pass2, "second").unwrap();
    must(v.cmd("key").args(["add", &v.url, "--new-passphrase-file", &p(&pass2)]).args(CHEAP).args(v.key_args()));
    let e = opens(&v, &s(&["--passphrase-file", &p(&v.key)])).unwrap_err();
    assert!(e.contains("does not open any of the vault's 2 passphrase slots"), "{e}");
    // No stdin terminal and no option: a clear refusal, not a hang.
    let e = fails(v.cmd("key").args(["remove", &v.url, &list[1].0]));
    assert!(e.contains("no key given: use --key-file"), "{e}");
}

#[test]
fn command_slots_and_their_errors() {
    let v = Vault::new();
    let cmd = format!("cat {}", p(&v.key));
    let o = key_add(&v, &s(&["--new-key-command", &cmd, "--new-key-transform", "hex"]), &v.key_args());
    assert!(o.status.success(), "{}", stderr(&o));
    let list = slots(&v);
    let cmd_slot = list.iter().find(|l| l.1 == "command").unwrap_or_else(|| panic!("{list:?}"));
    assert!(cmd_slot.2.starts_with("command created "), "{list:?}");
    assert!(!cmd_slot.2.contains("cat "), "the command is not stored");
    opens(&v, &s(&["--key-command", &cmd, "--key-transform", "hex"])).unwrap();
    let e = opens(&v, &s(&["--key-command", "echo failing >&2; exit 7", "--key-transform", "hex"])).unwrap_err();
    assert!(e.contains("key command failed (exit status: 7): failing"), "{e}");
    let e = opens(&v, &s(&["--key-command", "echo abc", "--key-transform", "hex"])).unwrap_err();
    assert!(e.contains("key command output: a hex key must be exactly 64 hex characters, found 3"), "{e}");
    let e = opens(&v, &s(&["--key-command", "printf %032d 0"])).unwrap_err();
    assert!(e.contains("does not open any of the vault's 1 sodium and 1 command slots"), "{e}");
    // A failing command at key add makes no slot.
    let e = fails(v.cmd("key").args(["add", &v.url, "--new-key-command", "exit 3"]).args(v.key_args()));
    assert!(e.contains("key command failed"), "{e}");
    assert_eq!(slots(&v).len(), 2);
}

#[test]
fn remove_refuses_the_last_slot_and_unknown_ids() {
    let v = Vault::new();
    let only = slots(&v)[0].0.clone();
    let e = fails(v.cmd("key").args(["remove", &v.url, &only]).args(v.key_args()));
    assert!(e.contains(&format!("key slot {only} is the vault's last key slot; add another first")), "{e}");
    let e = fails(v.cmd("key").args(["remove", &v.url, "zz"]).args(v.key_args()));
    assert!(e.contains("'zz' is not a slot id"), "{e}");
    let other = if only.starts_with('0') { "1" } else { "0" };
    let e = fails(v.cmd("key").args(["remove", &v.url, other]).args(v.key_args()));
    assert!(e.contains(&format!("the vault has no key slot {other}")), "{e}");
    // A corrupt slot is listed, skipped at unlock, and can be removed by its object name.
    let junk = "00000000000000000000000000000000";
    std::fs::write(v.store.join("keys").join(junk), b"PGCFSKEY garbage").unwrap();
    let list = slots(&v);
    assert!(list.iter().any(|l| l.0 == junk && l.1 == "corrupt"), "{list:?}");
    opens(&v, &v.key_args()).unwrap();
    assert!(key_remove(&v, junk, &v.key_args()).status.success());
    // The corrupt slot does not count as a second slot.
    std::fs::write(v.store.join("keys").join(junk), b"PGCFSKEY garbage").unwrap();
    let e = fails(v.cmd("key").args(["remove", &v.url, &only]).args(v.key_args()));
    assert!(e.contains("last key slot"), "{e}");
    // With only a corrupt slot and a wrong key, the error names the corrupt slot too.
    let wrong = v.dir.path().join("wrong");
    std::fs::write(&wrong, "1".repeat(64)).unwrap();
    let e = opens(&v, &s(&["--key-file", &p(&wrong), "--key-transform", "hex"])).unwrap_err();
    assert!(e.contains(&format!("key slot keys/{junk} is corrupt: ")) && e.contains("does not open any of the vault's 1 sodium slot"), "{e}");
}

/// Rotation without re-encryption: a new key is added, the old one removed; every pack and
/// metadata object stays byte-identical, the old key stops working, the new one mounts.
#[test]
#[serial]
fn rotation_keeps_every_object_and_mount_errors_mount_nothing() {
    let v = Vault::new();
    {
        let m = v.mount(&[]);
        std::fs::write(m.v.path("base.tar"), pattern(7, 3 << 20)).unwrap();
        m.umount();
    }
    let before = object_hashes(&v.store);
    assert!(before.keys().any(|k| k.starts_with("packs/")), "{:?}", before.keys());
    let old = slots(&v)[0].0.clone();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let new = gpg::generate(dir.path(), "rotate", "ed25519", Some("new key pass"));
    must(v.cmd("key").arg("add").arg(&v.url).args(new.cert_args()).args(v.key_args()));
    let o = must(v.cmd("key").arg("remove").arg(&v.url).arg(&old).args(new.unlock_args()));
    assert_eq!(out(&o).trim(), format!("removed key slot {old}"));
    assert!(stderr(&o).contains(&format!("audit: slot removed vault=")) && stderr(&o).contains(&format!("slot={old} method=sodium")));
    assert_eq!(object_hashes(&v.store), before, "no object other than key slots changed");

    // The old key no longer opens the vault, and a failed mount leaves nothing mounted.
    let e = fails(&mut v.mount_cmd(&["--read-only"]));
    assert!(e.contains("this vault has no sodium or command slot") && e.contains("(the vault has 1 openpgp slot)"), "{e}");
    assert!(!is_mounted(&v.mnt));
    let bad = v.dir.path().join("bad.pass");
    std::fs::write(&bad, "nope").unwrap();
    let e = fails(
        v.cmd("mount").arg(&v.url).arg(&v.mnt).args(["--pgp-key-file", &p(&new.secret), "--pgp-passphrase-file", &p(&bad)]),
    );
    assert!(e.contains("the passphrase of OpenPGP key") && e.contains("is wrong"), "{e}");
    assert!(!is_mounted(&v.mnt));
    let e = fails(v.cmd("mount").arg(&v.url).arg(&v.mnt).args(["--key-command", "exit 9"]));
    assert!(e.contains("key command failed (exit status: 9)"), "{e}");
    assert!(!is_mounted(&v.mnt));

    // The new key mounts and reads the data written under the old one.
    let mut w = v;
    w.unlock = new.unlock_args();
    let m = w.mount(&["--read-only"]);
    assert_eq!(std::fs::read(m.v.path("base.tar")).unwrap(), pattern(7, 3 << 20));
    m.umount();
    assert!(w.log_text().contains("audit: unlock vault=") && w.log_text().contains("method=openpgp"));
}

/// `rekey`: interrupted after one pack, refused to mount meanwhile, resumed with the same key;
/// afterwards no object sealed under the old master key is left, the data reads back, and a
/// saved copy of an old slot (old master key) no longer opens the metadata.
#[test]
#[serial]
fn rekey_is_resumable_and_leaves_nothing_of_the_old_key() {
    let v = Vault::new();
    let pass = v.dir.path().join("pass");
    std::fs::write(&pass, "old passphrase").unwrap();
    must(v.cmd("key").args(["add", &v.url, "--new-passphrase-file", &p(&pass)]).args(CHEAP).args(v.key_args()));
    {
        let m = v.mount(&["--pack-size", "1M"]);
        for i in 0..3 {
            std::fs::write(m.v.path(&format!("f{i}")), pattern(i, 1_500_000)).unwrap();
        }
        std::fs::create_dir(m.v.path("dir")).unwrap();
        std::fs::write(m.v.path("dir/small"), b"small file").unwrap();
        m.umount();
    }
    let before = object_hashes(&v.store);
    let old_slots: Vec<_> = slots(&v);
    let pass_slot = old_slots.iter().find(|l| l.1 == "passphrase").unwrap().0.clone();
    let pass_slot_bytes = std::fs::read(v.store.join("keys").join(&pass_slot)).unwrap();
    let packs = before.keys().filter(|k| k.starts_with("packs/")).count();
    assert!(packs >= 3, "{packs} packs");

    let e = fails(v.cmd("rekey").arg(&v.url).args(v.key_args()).args(["--stop-after-packs", "1"]));
    assert!(e.contains(&format!("rekey stopped after 1 of {packs} packs")), "{e}");
    assert!(e.contains("audit: rekey started"), "{e}");
    let e = fails(&mut v.mount_cmd(&["--read-only"]));
    assert!(e.contains("a rekey of") && e.contains("run `pgcryptfs rekey` again"), "{e}");
    assert!(!is_mounted(&v.mnt));
    // Another key cannot take over the interrupted rekey.
    let e = fails(v.cmd("rekey").arg(&v.url).args(["--passphrase-file", &p(&pass)]));
    assert!(e.contains("a rekey of this vault was interrupted and its new key does not open"), "{e}");

    let o = must(v.cmd("rekey").arg(&v.url).args(v.key_args()));
    assert!(out(&o).starts_with("re-encrypted "), "{}", out(&o));
    assert!(stderr(&o).contains("audit: rekey finished"), "{}", stderr(&o));
    let after = object_hashes(&v.store);
    for (name, bytes) in &after {
        if name != "pgcryptfs.vault" {
            assert!(!before.contains_key(name), "{name} survived the rekey");
            assert!(!before.values().any(|b| b == bytes), "{name} has old content");
        }
    }
    let new_slots = slots(&v);
    assert_eq!(new_slots.len(), 1, "{new_slots:?}");
    assert_eq!(new_slots[0].1, "sodium");
    assert!(old_slots.iter().all(|o| o.0 != new_slots[0].0));

    let m = v.mount_from_store_only();
    for i in 0..3 {
        assert_eq!(std::fs::read(m.v.path(&format!("f{i}"))).unwrap(), pattern(i, 1_500_000));
    }
    assert_eq!(std::fs::read(m.v.path("dir/small")).unwrap(), b"small file");
    m.umount();

    // A copy of an old slot still yields the old master key, which opens nothing any more.
    std::fs::write(v.store.join("keys").join(&pass_slot), &pass_slot_bytes).unwrap();
    let e = fails(v.cmd("mount").arg(&v.url).arg(&v.mnt).args(["--read-only", "--passphrase-file", &p(&pass)]));
    assert!(e.contains("failed authentication"), "{e}");
    assert!(!is_mounted(&v.mnt));
}

/// mount(8) options for every unlock method map 1:1 to the flags (`pgp_key_file=` →
/// `--pgp-key-file`); an OpenPGP vault mounts through the `mount.pgcryptfs` helper.
#[test]
#[serial]
fn mount_helper_options_for_every_method() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let helper = dir.path().join("mount.pgcryptfs");
    std::os::unix::fs::symlink(BIN, &helper).unwrap();
    let fake = |opts: &str| {
        let o = run(std::process::Command::new(&helper).args(["/v", "/m", "-fv", "-o", opts]));
        assert!(o.status.success(), "{opts}: {}", stderr(&o));
        stderr(&o)
    };
    for (opt, flag) in [
        ("key_file=/k,key_transform=hex", "--key-file /k --key-transform hex"),
        ("key_env=K", "--key-env K"),
        ("key_command=/usr/bin/get-key", "--key-command /usr/bin/get-key"),
        ("passphrase_file=/p", "--passphrase-file /p"),
        ("passphrase_env=P", "--passphrase-env P"),
        ("pgp_key_file=/s.asc,pgp_passphrase_file=/pp", "--pgp-key-file /s.asc --pgp-passphrase-file /pp"),
        ("pgp_key_file=/s.asc,pgp_passphrase_env=PP", "--pgp-key-file /s.asc --pgp-passphrase-env PP"),
    ] {
        let e = fake(opt);
        assert!(e.contains(&format!("running pgcryptfs mount /v /m {flag}")), "{opt}: {e}");
    }
    let o = run(std::process::Command::new(&helper).args(["/v", "/m", "-f", "-o", "key_file=/k,pgp_key_file=/s"]));
    assert!(!o.status.success(), "two unlock sources are refused");

    let key = gpg::generate(dir.path(), "helper", "rsa3072", Some("helper pass"));
    let v = Vault::with_key(&key.cert_args(), &key.unlock_args());
    {
        let m = v.mount(&[]);
        std::fs::write(m.v.path("file"), b"through mount.pgcryptfs").unwrap();
        m.umount();
    }
    let opts = format!(
        "ro,pgp_key_file={},pgp_passphrase_file={},log_file={}",
        p(&key.secret),
        p(key.passphrase_file.as_ref().unwrap()),
        p(&v.log)
    );
    must(std::process::Command::new(&helper).arg(&v.url).arg(&v.mnt).args(["-o", &opts]));
    assert!(is_mounted(&v.mnt));
    let read = std::fs::read(v.path("file"));
    must(std::process::Command::new(BIN).arg("umount").arg(&v.mnt));
    assert_eq!(read.unwrap(), b"through mount.pgcryptfs");
}

/// The key commands and rekey take the store options: the same rotation and rekey on S3.
#[test]
#[serial]
fn key_commands_and_rekey_on_s3() {
    let s3 = common::s3::S3Server::start();
    let v = Vault::on_s3(&s3, "keys-on-s3");
    {
        let m = v.mount(&[]);
        std::fs::write(m.v.path("f"), pattern(3, 2 << 20)).unwrap();
        m.umount();
    }
    let pass = v.dir.path().join("pass");
    std::fs::write(&pass, "s3 passphrase").unwrap();
    let o = key_add(&v, &[s(&["--new-passphrase-file", &p(&pass)]), s(&CHEAP)].concat(), &v.key_args());
    assert!(o.status.success(), "{}", stderr(&o));
    let list = slots(&v);
    assert_eq!(list.len(), 2, "{list:?}");
    let old = list.iter().find(|l| l.1 == "sodium").unwrap().0.clone();
    let before = object_hashes(&v.store);
    let o = key_remove(&v, &old, &s(&["--passphrase-file", &p(&pass)]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(object_hashes(&v.store), before);
    assert!(opens(&v, &v.key_args()).unwrap_err().contains("this vault has no sodium or command slot"));

    let o = run(v.cmd("rekey").arg(&v.url).args(&v.store_opts).args(["--passphrase-file", &p(&pass)]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(object_hashes(&v.store).keys().all(|k| k == "pgcryptfs.vault" || !before.contains_key(k)));
    let mut w = v;
    w.unlock = s(&["--passphrase-file", &p(&pass)]);
    let m = w.mount_from_store_only();
    assert_eq!(std::fs::read(m.v.path("f")).unwrap(), pattern(3, 2 << 20));
    m.umount();
}

/// Runs `pgcryptfs ARGS` on a pseudo-terminal (util-linux `script`), typing `lines` after a
/// second; returns (success, everything the terminal showed).
fn on_tty(args: &[String], lines: &str) -> (bool, String) {
    let cmd = std::iter::once(BIN.to_string())
        .chain(args.iter().map(|a| format!("'{a}'")))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = std::process::Command::new("timeout")
        .args(["30", "script", "-q", "-e", "-c", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in lines.lines() {
        std::thread::sleep(std::time::Duration::from_millis(700));
        std::io::Write::write_all(&mut stdin, format!("{line}\n").as_bytes()).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    drop(stdin);
    (o.status.success(), format!("{}{}", out(&o), stderr(&o)))
}

/// With no unlock option on a terminal, the passphrase is asked without echo; a new
/// passphrase is asked twice.
#[test]
fn passphrase_prompt_on_a_terminal() {
    let v = Vault::new();
    let (ok, shown) = on_tty(
        &[s(&["key", "add", &v.url, "--new-passphrase-prompt"]), s(&CHEAP), v.key_args()].concat(),
        "typed secret one\ntyped secret one",
    );
    assert!(ok, "{shown}");
    assert!(shown.contains("new passphrase: ") && shown.contains("repeat the new passphrase: "), "{shown}");
    assert!(!shown.contains("typed secret"), "the passphrase was echoed: {shown}");
    let (ok, shown) = on_tty(&s(&["key", "add", &v.url, "--new-key-file", &p(&v.key), "--new-key-transform", "hex"]), "typed secret one");
    assert!(ok && shown.contains("passphrase: ") && shown.contains("added key slot"), "{shown}");
    assert!(!shown.contains("typed secret"), "{shown}");
    let (ok, shown) = on_tty(&s(&["key", "add", &v.url, "--new-key-file", &p(&v.key), "--new-key-transform", "hex"]), "wrong one");
    assert!(!ok && shown.contains("the passphrase from the terminal does not open any of the vault's 1 passphrase slot"), "{shown}");
    let (ok, shown) = on_tty(&[s(&["key", "add", &v.url, "--new-passphrase-prompt"]), v.key_args()].concat(), "aaa\nbbb");
    assert!(!ok && shown.contains("the two passphrases differ"), "{shown}");
}
