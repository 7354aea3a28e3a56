//! Thin, safe wrappers over the Linux syscalls the socket backend needs: `SO_REUSEPORT`
//! sockets, `recvmmsg`/`sendmmsg` batches, CPU pinning, a shutdown signal flag, and a
//! per-thread seccomp allow-list ([`SyscallFilter`]; which syscalls, per backend, is
//! `super::seccomp`'s concern).
//!
//! This is one of the two places `unsafe` is allowed (the other is AF_XDP). Every block
//! says why it is sound. Batches own fixed buffers allocated once; a receive or send call
//! only re-points the `iovec`s, so the per-packet path does not allocate.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

pub use crate::privileges::{drop_privileges, is_root, lookup_user};

/// Size of each datagram buffer (larger than any datagram the relay accepts).
pub const BUF_LEN: usize = 2048;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn sockaddr_from(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (AF_UNSPEC) value.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write(std::ptr::addr_of_mut!(ss).cast::<libc::sockaddr_in>(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write(std::ptr::addr_of_mut!(ss).cast::<libc::sockaddr_in6>(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// A destination in the kernel's `sockaddr` form, prepared once (per session, in the
/// worker's replica) so a `sendmmsg` batch copies it instead of converting a `SocketAddr`
/// for every datagram. 32 bytes: a `sockaddr_in6` is large enough for either family.
#[derive(Clone, Copy)]
pub struct SockAddr {
    raw: libc::sockaddr_in6,
    len: libc::socklen_t,
}

impl From<SocketAddr> for SockAddr {
    fn from(addr: SocketAddr) -> Self {
        let (ss, len) = sockaddr_from(addr);
        // SAFETY: sockaddr_storage is at least as large and as aligned as sockaddr_in6, and
        // all-zero bytes beyond a sockaddr_in are a valid sockaddr_in6 tail.
        let raw = unsafe { std::ptr::read(std::ptr::addr_of!(ss).cast::<libc::sockaddr_in6>()) };
        Self { raw, len }
    }
}

impl SockAddr {
    /// The address it was made from.
    pub fn addr(&self) -> Option<SocketAddr> {
        // SAFETY: all-zero is a valid sockaddr_storage; it is larger than sockaddr_in6.
        let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
        // SAFETY: sockaddr_storage is at least as large and as aligned as sockaddr_in6.
        unsafe { std::ptr::write(std::ptr::addr_of_mut!(ss).cast::<libc::sockaddr_in6>(), self.raw) };
        sockaddr_to(&ss)
    }
}

fn sockaddr_to(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in; storage is aligned for it.
            let sin = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6; storage is aligned for it.
            let sin6 = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn setsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: fd is an open socket; the option value points to a live c_int of the given size.
    cvt(unsafe {
        libc::setsockopt(fd, level, name, std::ptr::addr_of!(v).cast(), size_of::<libc::c_int>() as libc::socklen_t)
    })
    .map(drop)
}

/// Binds a non-blocking UDP socket with `SO_REUSEPORT`, so N workers can share `addr` and
/// the kernel spreads flows across them by 4-tuple hash.
pub fn bind_reuseport(addr: SocketAddr, buf_bytes: usize) -> io::Result<UdpSocket> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = cvt(unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let sock = unsafe { UdpSocket::from_raw_fd(fd) };
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    let size = libc::c_int::try_from(buf_bytes).unwrap_or(libc::c_int::MAX);
    // Buffer sizes are best effort: the kernel caps them at rmem_max/wmem_max.
    let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, size);
    let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, size);
    let (ss, len) = sockaddr_from(addr);
    // SAFETY: ss holds a valid sockaddr of length len for this family.
    cvt(unsafe { libc::bind(fd, std::ptr::addr_of!(ss).cast(), len) })?;
    Ok(sock)
}

/// Pins the calling thread to `core`.
pub fn pin_to_core(core: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain old data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { zeroed() };
    // SAFETY: CPU_SET writes a bit inside `set`; `core` is reduced below CPU_SETSIZE.
    unsafe { libc::CPU_SET(core % libc::CPU_SETSIZE as usize, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the given size.
    cvt(unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) }).map(drop)
}

/// The CPUs the calling thread may run on (its affinity mask, e.g. from `taskset`), ascending.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain old data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { zeroed() };
    // SAFETY: pid 0 is the calling thread; `set` is a valid, writable cpu_set_t of that size.
    cvt(unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) })?;
    // SAFETY: CPU_ISSET reads a bit inside `set` for every index below CPU_SETSIZE.
    Ok((0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect())
}

static SHUTDOWN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SHUTDOWN.store(true, Ordering::SeqCst);
}

/// Installs SIGINT/SIGTERM handlers that set a flag, and returns it. The handler only
/// stores to an atomic, which is async-signal-safe.
pub fn shutdown_flag() -> io::Result<&'static AtomicBool> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: sigaction is plain old data; all-zero is a valid starting value.
        let mut sa: libc::sigaction = unsafe { zeroed() };
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        // SAFETY: sa is a valid sigaction whose handler is async-signal-safe.
        cvt(unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) })?;
    }
    Ok(&SHUTDOWN)
}

static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_reload_signal(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

/// Installs a SIGHUP handler that sets a flag, and returns it: the control thread swaps it
/// back to false and reloads the config (without a handler SIGHUP would end the process).
/// The handler only stores to an atomic, which is async-signal-safe.
pub fn reload_flag() -> io::Result<&'static AtomicBool> {
    // SAFETY: sigaction is plain old data; all-zero is a valid starting value.
    let mut sa: libc::sigaction = unsafe { zeroed() };
    sa.sa_sigaction = on_reload_signal as extern "C" fn(libc::c_int) as usize;
    // Restart interrupted syscalls: a reload request must not fail another thread's read.
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: sa is a valid sigaction whose handler is async-signal-safe.
    cvt(unsafe { libc::sigaction(libc::SIGHUP, &sa, std::ptr::null_mut()) })?;
    Ok(&RELOAD)
}

/// Sends SIGHUP to process `pid`: asks a relayd to reload its config.
pub fn hangup(pid: u32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill has no memory-safety preconditions; the result is checked.
    cvt(unsafe { libc::kill(pid, libc::SIGHUP) }).map(drop)
}

/// Whether the effective user may create and remove entries in the directory `dir` (write
/// and search permission, checked by the kernel with `faccessat(AT_EACCESS)`, so root and
/// read-only file systems are judged as they would be at `bind` or `open`).
pub fn may_create_in(dir: &std::path::Path) -> io::Result<bool> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call; no other pointers.
    let r = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::W_OK | libc::X_OK, libc::AT_EACCESS) };
    match cvt(r) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EROFS | libc::EPERM)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The effective capability set of this process, from `/proc/self/status` (`CapEff`).
pub fn effective_capabilities() -> io::Result<u64> {
    let s = std::fs::read_to_string("/proc/self/status")?;
    s.lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no CapEff in /proc/self/status"))
}

/// Sends SIGTERM to process `pid` (tests and tools that stop a relayd they started).
pub fn terminate(pid: u32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill has no memory-safety preconditions; the result is checked.
    cvt(unsafe { libc::kill(pid, libc::SIGTERM) }).map(drop)
}

/// The uid of the process at the other end of a connected Unix socket (`SO_PEERCRED`).
pub fn peer_uid(sock: &impl AsRawFd) -> io::Result<u32> {
    // SAFETY: ucred is plain old data; all-zero is valid.
    let mut cred: libc::ucred = unsafe { zeroed() };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the fd is an open socket; cred and len are valid out-pointers of that size.
    cvt(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    })?;
    Ok(cred.uid)
}

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Makes sure a BPF filesystem is mounted at `dir` (normally `/sys/fs/bpf`), mounting one
/// if not: pinned maps need it, and some systems do not mount it by default.
pub fn ensure_bpffs(dir: &str) -> io::Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let c = std::ffi::CString::new(dir).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: statfs is plain old data; all-zero is a valid value to be overwritten.
    let mut st: libc::statfs = unsafe { zeroed() };
    // SAFETY: c is a valid C string and st a valid out-pointer.
    cvt(unsafe { libc::statfs(c.as_ptr(), &mut st) })?;
    if st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    let bpf = std::ffi::CString::new("bpf").expect("no NUL");
    // SAFETY: all pointers are valid C strings; no mount data.
    cvt(unsafe { libc::mount(bpf.as_ptr(), c.as_ptr(), bpf.as_ptr(), 0, std::ptr::null()) }).map(drop)
}

/// One datagram of a [`RecvBatch`].
#[derive(Debug)]
pub enum Received<'a> {
    /// Its source and bytes.
    Datagram(SocketAddr, &'a mut [u8]),
    /// Longer than [`BUF_LEN`]: only a prefix was read (`MSG_TRUNC`); `len` is its real
    /// length. The relay drops it (no datagram it serves is that long).
    Oversized {
        /// The datagram's length on the wire (UDP payload).
        len: usize,
    },
    /// A source address of a family the relay does not speak.
    UnknownFamily {
        /// The datagram's length.
        len: usize,
    },
}

/// A batch of datagram buffers for `recvmmsg(2)`.
pub struct RecvBatch {
    bufs: Box<[[u8; BUF_LEN]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iov: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    n: usize,
}

// SAFETY: the raw pointers inside iovec/mmsghdr only ever point into this struct's own
// boxed buffers and are rewritten before each use; nothing is shared across threads.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// A batch of `cap` buffers.
    pub fn new(cap: usize) -> Self {
        Self {
            bufs: vec![[0u8; BUF_LEN]; cap].into_boxed_slice(),
            // SAFETY: all-zero is a valid sockaddr_storage.
            addrs: vec![unsafe { zeroed::<libc::sockaddr_storage>() }; cap].into_boxed_slice(),
            iov: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; cap].into_boxed_slice(),
            // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
            hdrs: vec![unsafe { zeroed::<libc::mmsghdr>() }; cap].into_boxed_slice(),
            n: 0,
        }
    }

    /// Receives up to the batch size without blocking. Returns the count, or
    /// `WouldBlock` when nothing is queued.
    pub fn recv(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        for i in 0..self.bufs.len() {
            self.iov[i] = libc::iovec { iov_base: self.bufs[i].as_mut_ptr().cast(), iov_len: BUF_LEN };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = std::ptr::addr_of_mut!(self.addrs[i]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iov[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        // SAFETY: every header points at live buffers owned by self, sized as declared;
        // the kernel writes at most iov_len bytes and msg_namelen address bytes.
        let r = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                // MSG_TRUNC: a longer datagram's msg_len is its real length (udp(7)).
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        self.n = cvt(r)? as usize;
        Ok(self.n)
    }

    /// Datagram `i` of the last receive; `None` past the count.
    pub fn get(&mut self, i: usize) -> Option<Received<'_>> {
        if i >= self.n {
            return None;
        }
        let h = &self.hdrs[i];
        let len = h.msg_len as usize;
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > BUF_LEN {
            return Some(Received::Oversized { len });
        }
        Some(match sockaddr_to(&self.addrs[i]) {
            Some(src) => Received::Datagram(src, &mut self.bufs[i][..len]),
            None => Received::UnknownFamily { len },
        })
    }
}

/// A batch of outgoing datagrams for `sendmmsg(2)`.
pub struct SendBatch {
    bufs: Box<[[u8; BUF_LEN]]>,
    dsts: Box<[SockAddr]>,
    lens: Box<[usize]>,
    iov: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    n: usize,
}

// SAFETY: as for RecvBatch, the raw pointers only point into this struct's own buffers.
unsafe impl Send for SendBatch {}

/// What a flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Datagrams the kernel took.
    pub sent: usize,
    /// Bytes in them.
    pub bytes: usize,
    /// Datagrams dropped because the socket would block or the send failed.
    pub dropped: usize,
}

impl SendBatch {
    /// A batch of `cap` buffers.
    pub fn new(cap: usize) -> Self {
        Self {
            bufs: vec![[0u8; BUF_LEN]; cap].into_boxed_slice(),
            dsts: vec![SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0))); cap].into_boxed_slice(),
            lens: vec![0; cap].into_boxed_slice(),
            iov: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; cap].into_boxed_slice(),
            // SAFETY: all-zero is a valid mmsghdr.
            hdrs: vec![unsafe { zeroed::<libc::mmsghdr>() }; cap].into_boxed_slice(),
            n: 0,
        }
    }

    /// Queued datagrams.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// No free buffer left.
    pub fn is_full(&self) -> bool {
        self.n == self.bufs.len()
    }

    /// The next free buffer, or `None` when the batch is full.
    pub fn next_buffer(&mut self) -> Option<&mut [u8]> {
        self.bufs.get_mut(self.n).map(|b| &mut b[..])
    }

    /// Queues the first `len` bytes of the buffer [`next_buffer`](Self::next_buffer) gave.
    pub fn push(&mut self, dst: SocketAddr, len: usize) {
        self.push_to(&SockAddr::from(dst), len);
    }

    /// [`push`](Self::push) to a prepared destination: the per-packet form.
    pub fn push_to(&mut self, dst: &SockAddr, len: usize) {
        if self.n >= self.bufs.len() {
            return;
        }
        self.dsts[self.n] = *dst;
        self.lens[self.n] = len.min(BUF_LEN);
        self.n += 1;
    }

    /// Sends everything queued. A datagram the kernel would not take now is dropped and
    /// counted: a relay must not block on one slow path.
    pub fn flush(&mut self, sock: &impl AsRawFd) -> Flushed {
        let mut f = Flushed::default();
        let mut start = 0;
        for i in 0..self.n {
            self.iov[i] = libc::iovec { iov_base: self.bufs[i].as_mut_ptr().cast(), iov_len: self.lens[i] };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = std::ptr::addr_of_mut!(self.dsts[i].raw).cast();
            h.msg_namelen = self.dsts[i].len;
            h.msg_iov = &mut self.iov[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        while start < self.n {
            // SAFETY: headers start..n point at live buffers and addresses owned by self.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    self.hdrs[start..].as_mut_ptr(),
                    (self.n - start) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r <= 0 {
                let e = io::Error::last_os_error();
                if r == 0 || e.kind() == io::ErrorKind::WouldBlock {
                    // Back-pressure: the socket buffer is full. Drop the rest of the batch.
                    f.dropped += self.n - start;
                    break;
                }
                // A per-destination error (e.g. ECONNREFUSED from an earlier ICMP error):
                // skip the head datagram and carry on with the rest.
                f.dropped += 1;
                start += 1;
                continue;
            }
            let r = r as usize;
            f.sent += r;
            f.bytes += self.lens[start..start + r].iter().sum::<usize>();
            start += r;
        }
        self.n = 0;
        f
    }
}

/// `AUDIT_ARCH_X86_64` (`linux/audit.h`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
/// `AUDIT_ARCH_AARCH64` (`EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`).
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;
/// Syscall numbers of the x32 ABI have this bit set; they share `AUDIT_ARCH_X86_64`.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// What a [`SyscallFilter`] does with a syscall that is not on its list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Otherwise {
    /// `SECCOMP_RET_KILL_PROCESS`: the whole process dies of `SIGSYS` (core dump, audit record).
    KillProcess,
    /// `SECCOMP_RET_LOG`: allowed, and logged to the kernel's audit log (`type=1326`).
    Log,
    /// `SECCOMP_RET_ERRNO`: the call fails with this errno and has no effect.
    Errno(i32),
}

impl Otherwise {
    fn ret(self) -> u32 {
        match self {
            Otherwise::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
            Otherwise::Log => libc::SECCOMP_RET_LOG,
            Otherwise::Errno(e) => libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA),
        }
    }
}

/// A seccomp-BPF program that allows a list of syscalls (by number, any arguments) and
/// applies [`Otherwise`] to the rest. A foreign architecture (and, on x86_64, the x32 ABI,
/// whose numbers would bypass the list) always kills the process.
///
/// Installed per thread ([`SyscallFilter::install`], no `SECCOMP_FILTER_FLAG_TSYNC`): the
/// filter binds the calling thread and the threads it creates later, not its siblings.
pub struct SyscallFilter {
    prog: Vec<libc::sock_filter>,
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt: 0, jf: 0, k }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt, jf, k }
}

impl SyscallFilter {
    /// A linear list of comparisons: one per allowed syscall. At the few dozen syscalls a
    /// worker needs this costs about as much as a binary search and is easier to audit.
    pub fn allow(syscalls: &[libc::c_long], otherwise: Otherwise) -> Self {
        use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
        let arch = std::mem::offset_of!(libc::seccomp_data, arch) as u32;
        let nr = std::mem::offset_of!(libc::seccomp_data, nr) as u32;
        let mut prog = vec![
            stmt(BPF_LD | BPF_W | BPF_ABS, arch),
            jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH, 1, 0),
            stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_KILL_PROCESS),
            stmt(BPF_LD | BPF_W | BPF_ABS, nr),
        ];
        #[cfg(target_arch = "x86_64")]
        {
            // JGE (unsigned) X32_SYSCALL_BIT: an x32 call, killed.
            prog.push(jump(BPF_JMP | libc::BPF_JGE | BPF_K, X32_SYSCALL_BIT, 0, 1));
            prog.push(stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_KILL_PROCESS));
        }
        for &sc in syscalls {
            // Equal: fall through to the next instruction, ALLOW; else skip it.
            prog.push(jump(BPF_JMP | BPF_JEQ | BPF_K, sc as u32, 0, 1));
            prog.push(stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW));
        }
        prog.push(stmt(BPF_RET | BPF_K, otherwise.ret()));
        Self { prog }
    }

    /// Instructions in the program (the kernel accepts at most 4096).
    pub fn len(&self) -> usize {
        self.prog.len()
    }

    /// Whether the program is empty (never: it always checks the architecture).
    pub fn is_empty(&self) -> bool {
        self.prog.is_empty()
    }

    /// Sets `PR_SET_NO_NEW_PRIVS` and installs the filter on the calling thread, for good.
    /// Both are per thread: the process's other threads are unaffected.
    pub fn install(&self) -> io::Result<()> {
        let prog = libc::sock_fprog {
            len: u16::try_from(self.prog.len()).map_err(|_| io::Error::other("seccomp program too long"))?,
            filter: self.prog.as_ptr().cast_mut(),
        };
        // SAFETY: prctl with integer arguments only; the result is checked.
        cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
        // SAFETY: `prog` points to `self.prog`, which outlives the call (the kernel copies
        // the program); flags 0, so no TSYNC. The result is checked.
        let r = unsafe {
            libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0 as libc::c_uint, std::ptr::addr_of!(prog))
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The calling thread's id.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// The calling thread's seccomp mode from `/proc/thread-self/status` (0 none, 1 strict,
/// 2 filter).
pub fn seccomp_mode() -> io::Result<u8> {
    seccomp_mode_of(std::path::Path::new("/proc/thread-self/status"))
}

/// The seccomp mode in a `/proc/<pid>/task/<tid>/status` file.
pub fn seccomp_mode_of(status: &std::path::Path) -> io::Result<u8> {
    let text = std::fs::read_to_string(status)?;
    text.lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("{}: no Seccomp line", status.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_mask_reads_back_what_was_pinned() {
        let allowed = allowed_cpus().unwrap();
        assert!(!allowed.is_empty());
        let last = *allowed.last().unwrap();
        // In a thread of its own, so the test harness keeps its mask.
        let pinned = std::thread::spawn(move || {
            pin_to_core(last).unwrap();
            allowed_cpus().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(pinned, vec![last]);
    }

    #[test]
    fn users_resolve_by_name() {
        assert_eq!(lookup_user("root").unwrap(), Some((0, 0)));
        assert_eq!(lookup_user("no-such-user-edgerelay").unwrap(), None);
        assert!(lookup_user("nul\0byte").is_err());
    }

    #[test]
    fn sockaddr_round_trip() {
        for a in ["127.0.0.1:7000", "[::1]:9", "[fe80::1%2]:443", "198.18.0.1:65535"] {
            let a: SocketAddr = a.parse().unwrap();
            let (ss, _) = sockaddr_from(a);
            assert_eq!(sockaddr_to(&ss), Some(a));
            assert_eq!(SockAddr::from(a).addr(), Some(a), "the prepared form reads back");
        }
    }

    #[test]
    fn reuseport_batch_loopback() {
        let a = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let addr = a.local_addr().unwrap();
        let b = bind_reuseport(addr, 1 << 20).expect("a second socket shares the port");
        drop(b);
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut tx = SendBatch::new(4);
        for i in 0..3u8 {
            let buf = tx.next_buffer().unwrap();
            buf[..3].copy_from_slice(&[i, i, i]);
            tx.push(addr, 3);
        }
        let f = tx.flush(&sender);
        assert_eq!(f, Flushed { sent: 3, bytes: 9, dropped: 0 });
        let mut rx = RecvBatch::new(8);
        let mut got = 0;
        for _ in 0..100 {
            match rx.recv(&a) {
                Ok(n) => {
                    for i in 0..n {
                        let Some(Received::Datagram(src, data)) = rx.get(i) else { panic!("datagram {i}") };
                        assert_eq!(src, sender.local_addr().unwrap());
                        assert_eq!(data.len(), 3);
                        got += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("recvmmsg: {e}"),
            }
            if got == 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, 3);
        assert!(matches!(rx.recv(&a), Err(e) if e.kind() == io::ErrorKind::WouldBlock));

        // A datagram longer than the buffer is reported with its real length.
        sender.send_to(&[0x80; 3000], addr).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let n = loop {
            match rx.recv(&a) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("recvmmsg: {e}"),
            }
        };
        assert_eq!(n, 1);
        assert!(matches!(rx.get(0), Some(Received::Oversized { len: 3000 })), "{:?}", rx.get(0));
    }

    /// The calls the tests' filtered threads make besides the one under test: the test
    /// harness's thread exit and result hand-off.
    const THREAD_EXIT: &[libc::c_long] = &[
        libc::SYS_futex,
        libc::SYS_munmap,
        libc::SYS_madvise,
        libc::SYS_mmap,
        libc::SYS_mprotect,
        libc::SYS_brk,
        libc::SYS_sigaltstack,
        libc::SYS_rt_sigprocmask,
        libc::SYS_exit,
        libc::SYS_write,
        libc::SYS_close,
        libc::SYS_openat,
        libc::SYS_read,
        libc::SYS_fstat,
        libc::SYS_statx,
        libc::SYS_lseek,
    ];

    fn getppid_raw() -> (libc::c_long, i32) {
        // SAFETY: getppid takes no arguments; the raw syscall avoids any libc caching.
        let r = unsafe { libc::syscall(libc::SYS_getppid) };
        (r, io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    #[test]
    fn a_filtered_thread_gets_the_errno_and_its_siblings_do_not() {
        let (r, errno, mode) = std::thread::spawn(|| {
            SyscallFilter::allow(THREAD_EXIT, Otherwise::Errno(libc::EPERM)).install().unwrap();
            let (r, errno) = getppid_raw();
            (r, errno, seccomp_mode().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!((r, errno), (-1, libc::EPERM), "getppid is not on the list");
        assert_eq!(mode, 2, "the filtered thread is in filter mode");
        assert_eq!(seccomp_mode().unwrap(), 0, "no TSYNC: the test's own thread is unfiltered");
        assert!(getppid_raw().0 > 0);
    }

    /// Run in a child process by [`the_kill_action_kills_the_whole_process`].
    #[test]
    #[ignore = "run by the_kill_action_kills_the_whole_process in a child process"]
    fn kill_child() {
        if std::env::var_os("EDGERELAY_SECCOMP_KILL_CHILD").is_none() {
            return;
        }
        std::thread::spawn(|| {
            SyscallFilter::allow(THREAD_EXIT, Otherwise::KillProcess).install().unwrap();
            getppid_raw();
        })
        .join()
        .unwrap();
        // Not reached: getppid killed the process.
        std::process::exit(0);
    }

    #[test]
    fn the_kill_action_kills_the_whole_process() {
        use std::os::unix::process::ExitStatusExt as _;
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "io::sys::tests::kill_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env("EDGERELAY_SECCOMP_KILL_CHILD", "1")
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGSYS),
            "{:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
