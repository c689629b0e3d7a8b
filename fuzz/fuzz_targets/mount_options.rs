//! mount(8)'s arguments to `mount.pgcryptfs` (fstab `-o` strings; a `user` mount lets any
//! local user choose them): NUL-separated argv, translated for `pgcryptfs mount`; whatever
//! is accepted must parse with the CLI's definition or be refused with a message, and no
//! option value may smuggle in a refused flag (`--foreground`).
#![no_main]
use clap::Parser;
use libfuzzer_sys::fuzz_target;
use pgcryptfs::cli::{Cli, Command};

fuzz_target!(init: pgcryptfs_fuzz::seeds::write_if_asked(), |data: &[u8]| {
    let args = pgcryptfs_fuzz::args(data);
    let Ok(argv) = pgcryptfs::mount8::mount_argv(&args) else { return };
    assert_eq!(&argv[..2], ["pgcryptfs", "mount"]);
    if let Ok(cli) = Cli::try_parse_from(&argv) {
        let Command::Mount { foreground, .. } = cli.command else { panic!("{argv:?} is not a mount") };
        assert!(!foreground, "{argv:?}");
    }
});
