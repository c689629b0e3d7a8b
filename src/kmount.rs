//! The kernel mount as root: /dev/fuse mounted with mount(2) as type `fuse.pgcryptfs` with the
//! store as its source, so findmnt, /proc/mounts and umount(8) (which then runs the
//! `umount.fuse.pgcryptfs` helper) see what it is. Without root, fuser's fusermount3 path is used.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The file system type pgcryptfs mounts carry ("fuse." + subtype).
pub const FSTYPE: &str = "fuse.pgcryptfs";

/// What the kernel needs to know about one mount.
pub struct Options<'a> {
    /// Shown as the mount's source (the store URL or path).
    pub source: &'a str,
    pub read_only: bool,
    pub allow_other: bool,
    pub noexec: bool,
    pub noatime: bool,
}

/// The mount(2) data string and flags for `o`, given the /dev/fuse fd and the mount point's mode.
fn data_and_flags(o: &Options, fd: i32, rootmode: u32, uid: u32, gid: u32) -> (String, libc::c_ulong) {
    let mut data = format!("fd={fd},rootmode={:o},user_id={uid},group_id={gid},default_permissions", rootmode & libc::S_IFMT);
    if o.allow_other {
        data.push_str(",allow_other");
    }
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    for (on, flag) in [(o.read_only, libc::MS_RDONLY), (o.noexec, libc::MS_NOEXEC), (o.noatime, libc::MS_NOATIME)] {
        if on {
            flags |= flag;
        }
    }
    (data, flags)
}

/// Opens /dev/fuse and mounts it on `mountpoint`; returns the device fd for the FUSE session.
pub fn mount(mountpoint: &Path, o: &Options) -> io::Result<OwnedFd> {
    let dev = OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open("/dev/fuse").map_err(|e| {
        io::Error::new(e.kind(), format!("cannot open /dev/fuse ({e}); is the fuse module loaded (modprobe fuse)?"))
    })?;
    let rootmode = std::fs::metadata(mountpoint)?.mode();
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let (data, flags) = data_and_flags(o, dev.as_raw_fd(), rootmode, uid, gid);
    let c = |s: &[u8]| CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a mount argument"));
    let (source, target, fstype, data) =
        (c(o.source.as_bytes())?, c(mountpoint.as_os_str().as_bytes())?, c(FSTYPE.as_bytes())?, c(data.as_bytes())?);
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let r = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), flags, data.as_ptr().cast()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(dev))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_data() {
        let o = Options { source: "s3://b/p", read_only: true, allow_other: true, noexec: false, noatime: true };
        let (data, flags) = data_and_flags(&o, 7, libc::S_IFDIR | 0o755, 0, 26);
        assert_eq!(data, "fd=7,rootmode=40000,user_id=0,group_id=26,default_permissions,allow_other");
        assert_eq!(flags, libc::MS_NOSUID | libc::MS_NODEV | libc::MS_RDONLY | libc::MS_NOATIME);
        let o = Options { source: "/v", read_only: false, allow_other: false, noexec: true, noatime: false };
        let (data, flags) = data_and_flags(&o, 3, libc::S_IFDIR | 0o700, 1000, 1000);
        assert!(!data.contains("allow_other"));
        assert_eq!(flags, libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC);
    }
}
