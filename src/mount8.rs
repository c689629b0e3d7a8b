//! The mount(8) and umount(8) helpers: `mount.pgcryptfs SOURCE DIR [-sfnv] [-o OPTIONS]`,
//! whose `-o` options are translated into `pgcryptfs mount` arguments and parsed by the same
//! clap definition (one parser, one allowlist), and `umount.fuse.pgcryptfs DIR`, which drains
//! like `pgcryptfs umount`.

use std::ffi::OsString;

use clap::{CommandFactory, Parser};

use crate::cli::Cli;

/// mount(8)'s helper exit statuses.
const EX_USAGE: i32 = 1;
const EX_FAIL: i32 = 32;

/// Options mount(8), systemd or fstab conventions use that have no effect on pgcryptfs.
const IGNORED: &[&str] = &[
    "defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group", "nofail", "_netdev", "rw", "nosuid",
    "nodev", "exec", "atime", "relatime", "strictatime", "lazytime", "nodiratime", "diratime", "async", "loud", "silent",
    "default_permissions",
];

/// `pgcryptfs mount` flags that an `-o` option must not reach: the helper daemonizes, so the
/// caller gets its answer once the file system serves.
const REFUSED: &[&str] = &["foreground", "help", "version"];

/// What one `-o` option becomes.
#[derive(Debug, PartialEq, Eq)]
enum Translated {
    Args(Vec<String>),
    Ignored,
}

/// Translates one option (`name` or `name=value`) for `pgcryptfs mount`.
fn translate_one(opt: &str) -> Result<Translated, String> {
    let (name, value) = match opt.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (opt, None),
    };
    let bare = |args: &[&str]| -> Result<Translated, String> {
        match value {
            None => Ok(Translated::Args(args.iter().map(|s| s.to_string()).collect())),
            Some(_) => Err(format!("option {name} takes no value")),
        }
    };
    if IGNORED.contains(&name) || name.starts_with("x-") || name == "comment" {
        return Ok(Translated::Ignored);
    }
    match name {
        "ro" => return bare(&["--read-only"]),
        "sync" => {
            return match value {
                Some("store") => Ok(Translated::Args(vec!["--sync-store".into()])),
                Some("cache") => Ok(Translated::Ignored),
                _ => Err("option sync takes a value: sync=store (fsync waits for the store) or sync=cache (the default)".into()),
            };
        }
        "suid" | "dev" => return Err(format!("option {name} is not allowed: pgcryptfs always mounts nosuid,nodev")),
        _ => {}
    }
    if crate::store::STORE_OPTIONS.contains(&name) {
        let v = match (name, value) {
            ("allow_http" | "path_style", None) => "true",
            (_, Some(v)) => v,
            (_, None) => return Err(format!("option {name} needs a value ({name}=...)")),
        };
        return Ok(Translated::Args(vec!["--store-opt".into(), format!("{name}={v}")]));
    }
    let long = name.replace('_', "-");
    let cmd = Cli::command();
    let mount = cmd.find_subcommand("mount").expect("the mount subcommand exists");
    let arg = mount
        .get_arguments()
        .find(|a| a.get_long() == Some(long.as_str()) && !REFUSED.contains(&long.as_str()))
        .ok_or_else(|| format!("unknown option {name}"))?;
    let flag = format!("--{long}");
    if arg.get_action().takes_values() {
        match value {
            Some(v) if !v.is_empty() => Ok(Translated::Args(vec![flag, v.to_string()])),
            _ => Err(format!("option {name} needs a value ({name}=...)")),
        }
    } else {
        bare(&[&flag])
    }
}

/// mount(8)'s arguments for the helper, parsed.
#[derive(Debug, PartialEq, Eq)]
struct Invocation {
    source: String,
    dir: String,
    options: Vec<String>,
    sloppy: bool,
    fake: bool,
    verbose: bool,
}

fn parse_invocation(args: &[String]) -> Result<Invocation, String> {
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let (mut sloppy, mut fake, mut verbose) = (false, false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-o" {
            let v = it.next().ok_or("-o needs a value")?;
            options.extend(v.split(',').filter(|o| !o.is_empty()).map(String::from));
        } else if let Some(v) = a.strip_prefix("-o") {
            options.extend(v.split(',').filter(|o| !o.is_empty()).map(String::from));
        } else if a == "-t" {
            it.next(); // the type (pgcryptfs) is what brought us here
        } else if a.len() > 1 && a.starts_with('-') {
            for c in a[1..].chars() {
                match c {
                    's' => sloppy = true,
                    'f' => fake = true,
                    'v' => verbose = true,
                    'n' => {} // no mtab: there is none to write
                    other => return Err(format!("unknown flag -{other}")),
                }
            }
        } else {
            positional.push(a.clone());
        }
    }
    match <[String; 2]>::try_from(positional) {
        Ok([source, dir]) => Ok(Invocation { source, dir, options, sloppy, fake, verbose }),
        Err(_) => Err("usage: mount.pgcryptfs STORE DIR [-sfnv] [-o OPTIONS]".into()),
    }
}

/// `pgcryptfs mount` arguments for an invocation; unknown options are errors unless sloppy
/// (`-s`), which skips them with a warning.
fn to_mount_args(inv: &Invocation) -> Result<Vec<String>, String> {
    // As with mount(8), a later option overrides an earlier one of the same meaning.
    let mut chosen: Vec<(String, Vec<String>)> = Vec::new();
    for o in &inv.options {
        match translate_one(o) {
            Ok(Translated::Args(a)) => {
                let key = if a[0] == "--store-opt" { a[1].split('=').next().unwrap_or("").to_string() } else { a[0].clone() };
                chosen.retain(|(k, _)| *k != key);
                chosen.push((key, a));
            }
            Ok(Translated::Ignored) => {}
            Err(e) if inv.sloppy && e.starts_with("unknown option") => eprintln!("mount.pgcryptfs: ignoring {e}"),
            Err(e) => return Err(e),
        }
    }
    let mut args = vec!["pgcryptfs".to_string(), "mount".into(), inv.source.clone(), inv.dir.clone()];
    args.extend(chosen.into_iter().flat_map(|(_, a)| a));
    Ok(args)
}

/// The `pgcryptfs mount` argv for mount(8)'s arguments (pub for the fuzz target `mount_options`).
#[doc(hidden)]
pub fn mount_argv(args: &[String]) -> Result<Vec<String>, String> {
    to_mount_args(&parse_invocation(args)?)
}

fn strings(args: Vec<OsString>) -> Result<Vec<String>, String> {
    args.into_iter().map(|a| a.into_string().map_err(|a| format!("argument {a:?} is not UTF-8"))).collect()
}

/// `mount.pgcryptfs` (also as `mount.fuse.pgcryptfs`); `args` without argv[0].
pub fn mount_main(args: Vec<OsString>) -> i32 {
    let fail = |code: i32, msg: &str| {
        eprintln!("mount.pgcryptfs: {msg}");
        code
    };
    let inv = match strings(args).and_then(|a| parse_invocation(&a)) {
        Ok(i) => i,
        Err(e) => return fail(EX_USAGE, &e),
    };
    let argv = match to_mount_args(&inv) {
        Ok(a) => a,
        Err(e) => return fail(EX_USAGE, &e),
    };
    if inv.verbose {
        eprintln!("mount.pgcryptfs: running {}", argv.join(" "));
    }
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            let msg = e.to_string();
            let first = msg.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid options");
            return fail(EX_USAGE, first.trim_start_matches("error: "));
        }
    };
    if inv.fake {
        return 0;
    }
    match crate::cli::run(cli) {
        0 => 0,
        _ => EX_FAIL,
    }
}

/// `umount.fuse.pgcryptfs DIR [-flnrv]`: a lazy unmount (`-l`) detaches at once (the daemon
/// still drains); otherwise unmount, drain and wait like `pgcryptfs umount`.
pub fn umount_main(args: Vec<OsString>) -> i32 {
    let args = match strings(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("umount.pgcryptfs: {e}");
            return EX_USAGE;
        }
    };
    let lazy = args.iter().any(|a| a.starts_with('-') && !a.starts_with("--") && a.contains('l'));
    let Some(dir) = args.iter().find(|a| !a.starts_with('-')) else {
        eprintln!("umount.pgcryptfs: usage: umount.fuse.pgcryptfs DIR [-flnrv]");
        return EX_USAGE;
    };
    let dir = std::path::Path::new(dir);
    let result = if lazy {
        crate::daemon::unmount(dir, true).map(|_| String::new()).map_err(|e| format!("cannot unmount {}: {e}", dir.display()))
    } else {
        crate::daemon::umount_command(dir, std::io::IsTerminal::is_terminal(&std::io::stderr()))
    };
    match result {
        Ok(m) => {
            if !m.is_empty() {
                println!("{m}");
            }
            0
        }
        Err(e) => {
            eprintln!("umount.pgcryptfs: {e}");
            EX_FAIL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn inv(args: &[&str]) -> Result<Invocation, String> {
        parse_invocation(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn translate(opts: &str) -> Result<Vec<String>, String> {
        let i = inv(&["s3://b/p", "/mnt/enc", "-o", opts])?;
        Ok(to_mount_args(&i)?[4..].to_vec())
    }

    #[test]
    fn invocations() {
        let i = inv(&["/srv/v", "/mnt/enc", "-sv", "-o", "ro,key_file=/k", "-n", "-okey_transform=hex"]).unwrap();
        assert_eq!((i.source.as_str(), i.dir.as_str(), i.sloppy, i.fake, i.verbose), ("/srv/v", "/mnt/enc", true, false, true));
        assert_eq!(i.options, ["ro", "key_file=/k", "key_transform=hex"]);
        assert!(inv(&["/srv/v"]).unwrap_err().starts_with("usage"));
        assert!(inv(&["/srv/v", "/m", "-q"]).unwrap_err().contains("-q"));
        assert!(inv(&["/srv/v", "/m", "-o"]).unwrap_err().contains("-o needs"));
    }

    #[test]
    fn options_translate_through_the_cli_definition() {
        assert_eq!(
            translate("key_file=/etc/pgcryptfs/key,key_transform=hex,cache_dir=/var/cache/x,ro,allow_other,noatime").unwrap(),
            [
                "--key-file",
                "/etc/pgcryptfs/key",
                "--key-transform",
                "hex",
                "--cache-dir",
                "/var/cache/x",
                "--read-only",
                "--allow-other",
                "--noatime"
            ]
        );
        assert_eq!(
            translate("endpoint=http://127.0.0.1:9000,allow_http,region=us-east-1,sync=store").unwrap(),
            ["--store-opt", "endpoint=http://127.0.0.1:9000", "--store-opt", "allow_http=true", "--store-opt", "region=us-east-1", "--sync-store"]
        );
        // What mount(8), systemd and fstab add is ignored.
        assert!(translate("defaults,_netdev,nofail,noauto,user,x-systemd.requires=network-online.target,rw,nosuid,nodev").unwrap().is_empty());
        // Errors are exact.
        assert_eq!(translate("bogus=1").unwrap_err(), "unknown option bogus");
        assert_eq!(translate("foreground").unwrap_err(), "unknown option foreground");
        assert_eq!(translate("key_file").unwrap_err(), "option key_file needs a value (key_file=...)");
        assert_eq!(translate("ro=1").unwrap_err(), "option ro takes no value");
        assert!(translate("sync").unwrap_err().contains("sync=store"));
        assert!(translate("suid").unwrap_err().contains("nosuid,nodev"));
        // Sloppy skips what it does not know, and still refuses what is malformed.
        let s = inv(&["/v", "/m", "-s", "-o", "bogus,ro"]).unwrap();
        assert_eq!(to_mount_args(&s).unwrap()[4..], ["--read-only"]);
        let s = inv(&["/v", "/m", "-s", "-o", "key_file"]).unwrap();
        assert!(to_mount_args(&s).is_err());
    }

    #[test]
    fn translated_options_parse() {
        let i = inv(&["/srv/v", "/mnt/enc", "-o", "key_env=K,read_only,cache_size=4G,readahead=16M,threads=8"]).unwrap();
        let argv = to_mount_args(&i).unwrap();
        assert!(Cli::try_parse_from(&argv).is_ok(), "{argv:?}");
        // A later option of the same meaning wins, as with mount(8).
        let i = inv(&["/v", "/m", "-o", "key_file=/a,ro,read_only,key_file=/b,region=x,region=y"]).unwrap();
        assert_eq!(to_mount_args(&i).unwrap()[4..], ["--read-only", "--key-file", "/b", "--store-opt", "region=y"]);
    }

    proptest! {
        /// Any option string: translation never panics, and whatever it accepts, clap parses
        /// (the allowlist and the parser cannot disagree).
        #[test]
        fn translation_agrees_with_the_parser(names in proptest::collection::vec(
            prop_oneof![
                Just("ro"), Just("rw"), Just("allow_other"), Just("noexec"), Just("noatime"), Just("key_file=/k"),
                Just("key_env=K"), Just("key_transform=hex"), Just("key_transform=bogus"), Just("cache_size=1G"),
                Just("threads=x"), Just("sync=store"), Just("_netdev"), Just("x-systemd.automount"), Just("region=r"),
                Just("pack_size"), Just("nonsense=1"), Just("break_lease"), Just("commit_interval=5"),
            ], 0..8)) {
            let opts = names.join(",");
            let with_key = format!("key_file=/k,{opts}");
            let i = inv(&["/v", "/m", "-o", &with_key]).unwrap();
            if let Ok(argv) = to_mount_args(&i) {
                let parsed = Cli::try_parse_from(&argv);
                // Values clap checks itself (a bad transform or number) may still fail, with a message.
                let bad_value = opts.contains("bogus") || opts.contains("threads=x") || opts.contains("key_env");
                prop_assert!(parsed.is_ok() || bad_value, "{argv:?}");
            }
        }
    }
}
