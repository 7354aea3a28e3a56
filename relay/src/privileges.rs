//! Switching users: looking a user up by name, dropping root for it, and asking whether the
//! process is root. relayd and relay-control both start as root to bind and then run as
//! their own user; relay-control links the core without the data plane, so these live
//! outside `io` behind their own `privileges` feature (which `dataplane` includes).
//!
//! `unsafe` here is the libc calls only, each block with its `SAFETY` comment.

use std::io;
use std::mem::zeroed;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A user's uid and primary gid by name (`getpwnam_r`), `None` if there is no such user.
pub fn lookup_user(user: &str) -> io::Result<Option<(u32, u32)>> {
    let name = std::ffi::CString::new(user).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "user name"))?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: passwd is plain old data; all-zero is valid.
        let mut pw: libc::passwd = unsafe { zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: name is a valid C string; pw, buf (with its true length) and result are
        // valid out-pointers that outlive the call. The strings pw points to live in buf,
        // and only the integer ids are read from pw.
        let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
        match rc {
            0 if result.is_null() => return Ok(None),
            0 => return Ok(Some((pw.pw_uid, pw.pw_gid))),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Switches the process from root to `user` after setup: supplementary groups cleared,
/// group and user ids set (real, effective and saved), `PR_SET_NO_NEW_PRIVS` set. Going from
/// uid 0 to a non-zero uid clears every capability, which is what relayd wants: BPF maps,
/// AF_XDP sockets and links are already open and need no capability to use.
pub fn drop_privileges(user: &str) -> io::Result<()> {
    let (uid, gid) =
        lookup_user(user)?.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no such user {user:?}")))?;
    // SAFETY: plain syscalls with valid arguments; results are checked. Order matters:
    // groups and gid before uid, because after setresuid we may no longer change them.
    unsafe {
        cvt(libc::setgroups(0, std::ptr::null()))?;
        cvt(libc::setresgid(gid, gid, gid))?;
        cvt(libc::setresuid(uid, uid, uid))?;
        cvt(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
    }
    Ok(())
}

/// Whether the process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
