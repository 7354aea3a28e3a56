//! The workers' seccomp allow-lists, one per backend, and their installation: each worker
//! thread installs its own filter ([`SyscallFilter`], no `TSYNC`) after its setup and
//! before its loop, so the control thread, the state writer and start-up keep every syscall.
//!
//! The lists are what `strace -f` saw each backend's workers make under load, start to
//! exit, plus the rare paths a short trace can miss (a heap that grows, a first `HashMap`,
//! a clock without vDSO, a log line, the `SIGSETXID` broadcast of relayd's user switch);
//! docs/ARCHITECTURE.md ("Worker seccomp") says why each syscall is there. The action for
//! anything else is [`WorkerSeccomp`]'s: by default the process is killed, since a worker
//! making an unlisted call is either compromised or running a path nobody reviewed.
//!
//! Below the workers ([`super::socket`], [`super::xdp_worker`]) in the module order; it
//! imports only [`super::sys`], the config and the counters.
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering::Relaxed;

use libc::c_long;

use super::sys::{Otherwise, SyscallFilter};
use crate::config::{Backend, WorkerSeccomp};
use crate::stats::WorkerCounters;

/// What every worker makes, whatever its backend.
const COMMON: &[c_long] = &[
    // The loop's wait (mio). aarch64 has no epoll_wait; glibc may use epoll_pwait anywhere.
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    // Waking the control thread (mio's eventfd `Waker`), and log lines on stderr. `read`:
    // the waker resets a saturated eventfd by reading it.
    libc::SYS_write,
    libc::SYS_read,
    // Channels and locks (crossbeam, std, the stderr lock): blocking and backoff.
    libc::SYS_futex,
    libc::SYS_sched_yield,
    // The allocator: a replica, a room or a batch that grows; freed memory handed back.
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_brk,
    // A thread's first `HashMap` seeds its `RandomState`.
    libc::SYS_getrandom,
    // `Instant::now` and `SystemTime::now` when the clock source has no vDSO.
    libc::SYS_clock_gettime,
    libc::SYS_gettimeofday,
    // Thread exit: sockets and polls closed, the alternate signal stack removed, signals
    // blocked, the stack released.
    libc::SYS_close,
    // Debug builds only: std checks that a descriptor is open before closing it (F_GETFD).
    #[cfg(debug_assertions)]
    libc::SYS_fcntl,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigprocmask,
    libc::SYS_exit,
    // relayd switches user after the workers started (`user = "..."`): glibc makes every
    // thread repeat the call in a `SIGSETXID` handler, which checks the signal came from
    // its own process (getpid) and returns with rt_sigreturn.
    libc::SYS_rt_sigreturn,
    libc::SYS_getpid,
    libc::SYS_setgroups,
    libc::SYS_setresgid,
    libc::SYS_setresuid,
];

/// The socket backend's packet path.
const SOCKET: &[c_long] = &[libc::SYS_recvmmsg, libc::SYS_sendmmsg];

/// The XDP backend's: the TX kick (`sendto` with no data) and the `XDP_STATISTICS` sample
/// (`getsockopt`, every 100 ms). RX needs no syscall: the rings are shared memory and the
/// fill-ring wakeup is the poll.
const XDP: &[c_long] = &[libc::SYS_sendto, libc::SYS_getsockopt];

/// The allow-list of a backend's workers.
pub fn allow_list(backend: Backend) -> Vec<c_long> {
    let own = match backend {
        Backend::Socket => SOCKET,
        Backend::Xdp => XDP,
    };
    COMMON.iter().chain(own).copied().collect()
}

/// Installs worker `index`'s filter on the calling thread as `mode` says, counts it in
/// `counters` and logs the outcome once. A filter the kernel refuses is logged and
/// the worker runs without one (the count says so), rather than not at all.
pub fn install_worker_filter(index: usize, backend: Backend, mode: WorkerSeccomp, counters: &WorkerCounters) {
    let otherwise = match mode {
        WorkerSeccomp::Off => {
            tracing::info!(worker = index, "worker seccomp filter off ([security] worker_seccomp = \"off\")");
            return;
        }
        WorkerSeccomp::Kill => Otherwise::KillProcess,
        WorkerSeccomp::Log => Otherwise::Log,
    };
    let list = allow_list(backend);
    match SyscallFilter::allow(&list, otherwise).install() {
        Ok(()) => {
            counters.seccomp.store(1, Relaxed);
            tracing::info!(worker = index, syscalls = list.len(), action = ?mode, "worker seccomp filter installed");
        }
        Err(e) => tracing::error!(worker = index, error = %e, "cannot install the worker seccomp filter"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::sys;

    #[test]
    fn lists_have_no_duplicates_and_fit_the_kernel() {
        for b in [Backend::Socket, Backend::Xdp] {
            let mut l = allow_list(b);
            let n = l.len();
            l.sort_unstable();
            l.dedup();
            assert_eq!(l.len(), n, "{b:?}: a syscall listed twice");
            assert!(SyscallFilter::allow(&l, Otherwise::KillProcess).len() < 4096);
        }
    }

    #[test]
    fn an_installed_worker_filter_is_counted_and_keeps_the_packet_path() {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            // Setup first, as a worker does: nothing here may open or bind once filtered.
            let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let dst = b.local_addr().unwrap();
            let mut tx = sys::SendBatch::new(1);
            let tid = sys::gettid();
            let c = WorkerCounters::default();
            install_worker_filter(0, Backend::Socket, WorkerSeccomp::Kill, &c);
            // The socket backend's packet path still works under the filter.
            tx.next_buffer().unwrap()[..1].copy_from_slice(&[7]);
            tx.push(dst, 1);
            let f = tx.flush(&a);
            tid_tx.send(tid).unwrap();
            done_rx.recv().unwrap();
            (c.seccomp.load(Relaxed), f.sent)
        });
        let tid = tid_rx.recv().unwrap();
        let status = format!("/proc/self/task/{tid}/status");
        let mode = sys::seccomp_mode_of(std::path::Path::new(&status)).unwrap();
        done_tx.send(()).unwrap();
        let (counted, sent) = worker.join().unwrap();
        assert_eq!((mode, counted, sent), (2, 1, 1));
    }
}
