//! The pgcryptfs command, and the mount(8)/umount(8) helpers when called by those names.

use clap::Parser;

fn main() {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let name = std::path::Path::new(&argv0).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let code = match name.as_str() {
        "mount.pgcryptfs" | "mount.fuse.pgcryptfs" => pgcryptfs::mount8::mount_main(args.collect()),
        "umount.pgcryptfs" | "umount.fuse.pgcryptfs" => pgcryptfs::mount8::umount_main(args.collect()),
        _ => pgcryptfs::cli::run(pgcryptfs::cli::Cli::parse()),
    };
    std::process::exit(code);
}
