//! The control socket's request line (any local user may connect): `control::Session::accept`
//! reads one line from the stream and the daemon dispatches on it.
#![no_main]
use std::io::Write;
use std::os::unix::net::UnixStream;

use libfuzzer_sys::fuzz_target;
use pgcryptfs::control::Session;

fuzz_target!(init: pgcryptfs_fuzz::seeds::write_if_asked(), |data: &[u8]| {
    let (mut client, server) = UnixStream::pair().unwrap();
    // The kernel buffers more than libFuzzer's input limit (-max_len, 4 KiB by default).
    client.write_all(data).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    if let Some((session, cmd)) = Session::accept(server) {
        assert!(!cmd.contains('\n'));
        session.finish(Err(format!("unknown command {cmd:?}")));
    }
    drop(client);
});
