//! The pgcryptfs command.

use clap::Parser;

fn main() {
    let cli = pgcryptfs::cli::Cli::parse();
    std::process::exit(pgcryptfs::cli::run(cli));
}
