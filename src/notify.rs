//! systemd's service notification protocol (sd_notify): `READY=1` once the mount serves,
//! `STATUS=` with the upload backlog, `STOPPING=1` while draining. A datagram to the socket
//! named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace); without it,
//! nothing is sent.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where notifications go, if a service manager asked for them.
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; `None` when it is unset or empty. The variable is removed so that
    /// commands this process runs (a key command) do not talk to the service manager.
    pub fn from_env() -> io::Result<Option<Self>> {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET").filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        // SAFETY: called during start-up, before this process starts any thread.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let name = name.to_string_lossy().into_owned();
        let addr = match name.strip_prefix('@') {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name.as_bytes())?
            }
            None => SocketAddr::from_pathname(&name)?,
        };
        Ok(Some(Notifier { sock: UnixDatagram::unbound()?, addr }))
    }

    /// Sends `KEY=VALUE` lines; a failure is logged, never fatal.
    pub fn send(&self, state: &str) {
        if let Err(e) = self.sock.send_to_addr(state.as_bytes(), &self.addr) {
            log::warn!("cannot notify the service manager ({state}): {e}");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_a_path_socket() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier { sock: UnixDatagram::unbound().unwrap(), addr: SocketAddr::from_pathname(&path).unwrap() };
        n.ready("serving\nnow");
        n.stopping("draining");
        let mut buf = [0u8; 256];
        let k = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"READY=1\nSTATUS=serving now");
        let k = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"STOPPING=1\nSTATUS=draining");
    }
}
