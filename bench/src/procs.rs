//! The processes a baseline runs: spawning them pinned to a CPU, killing them on drop, reading
//! their CPU time from `/proc/PID/stat`, and installing the Debian packages they come from.
//!
//! Invariants: every child process the bench starts is owned by a [`Guard`], which kills and
//! reaps it on drop, and every load thread by a [`Threads`], which stops and joins it on
//! drop, so an early return or a panic leaves nothing running. CPU time is
//! `utime + stime` of the whole process (all threads, fields 14 and 15 of `/proc/PID/stat`)
//! in clock ticks; [`clock_ticks_per_sec`] converts it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Guard {
    child: Child,
    what: &'static str,
}

impl Guard {
    /// Spawns `cmd` and guards it.
    pub fn spawn(mut cmd: Command, what: &'static str) -> Result<Self> {
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        Ok(Self { child, what })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            Some(st) => bail!("{} exited with {st}", self.what),
            None => Ok(()),
        }
    }

    /// Mutable access to the child (its pipes).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Threads that run until their stop flags are set: on drop every flag is set and every
/// thread joined (its result dropped), so no early return leaves one running.
pub struct Threads<T> {
    stops: Vec<Arc<AtomicBool>>,
    handles: Vec<JoinHandle<T>>,
}

impl<T> Threads<T> {
    /// Guards `handles`, which stop once all of `stops` are set.
    pub fn new(stops: Vec<Arc<AtomicBool>>, handles: Vec<JoinHandle<T>>) -> Self {
        Self { stops, handles }
    }

    /// Sets every stop flag and joins every thread, in order; fails if one panicked.
    pub fn join(mut self) -> Result<Vec<T>> {
        self.stop();
        let handles = std::mem::take(&mut self.handles);
        handles.into_iter().map(|t| t.join().map_err(|_| anyhow::anyhow!("a load thread panicked"))).collect()
    }

    fn stop(&self) {
        for s in &self.stops {
            s.store(true, Ordering::Relaxed);
        }
    }
}

impl<T> Drop for Threads<T> {
    fn drop(&mut self) {
        self.stop();
        for t in self.handles.drain(..) {
            let _ = t.join();
        }
    }
}

static INTERRUPT: OnceLock<&'static AtomicBool> = OnceLock::new();

/// Catches SIGINT and SIGTERM from now on, so [`check_interrupted`] can turn them into an
/// error: the error unwinds through the [`Guard`]s and namespace guards, which tear down
/// what the bench started (the default action would kill the bench and orphan them).
pub fn catch_interrupts() -> Result<()> {
    let flag = relay::io::sys::shutdown_flag().context("installing the SIGINT/SIGTERM handler")?;
    let _ = INTERRUPT.set(flag);
    Ok(())
}

/// Fails once SIGINT or SIGTERM has arrived (after [`catch_interrupts`]).
pub fn check_interrupted() -> Result<()> {
    match INTERRUPT.get() {
        Some(f) if f.load(Ordering::Relaxed) => bail!("interrupted"),
        _ => Ok(()),
    }
}

/// Where the bench runs its own threads and where the process under test runs. On a machine
/// with a single CPU both are CPU 0 and nothing is pinned.
#[derive(Clone, Copy, Debug)]
pub struct Cpus {
    /// The relay under test (rtpengine, turnserver, relayd).
    pub relay: usize,
    /// The load tools: the bench's sender and receiver threads, turnutils_uclient.
    pub load: usize,
    /// Whether pinning is on.
    pub pinned: bool,
}

impl Cpus {
    /// Relay on the last CPU, load on CPU 0; no pinning on a single CPU.
    pub fn detect() -> Self {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self { relay: n - 1, load: 0, pinned: n > 1 }
    }

    /// `cmd` run under `taskset` on `cpu` (taskset execs, so the pid is the program's).
    pub fn command(&self, cpu: usize, program: &Path) -> Command {
        if self.pinned {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    /// Pins the calling thread to the load CPU.
    pub fn pin_load_thread(&self) {
        if self.pinned {
            // Best effort: an unpinned load thread only makes the figures noisier.
            let _ = relay::io::sys::pin_to_core(self.load);
        }
    }
}

/// `utime + stime` of a process, in clock ticks, parsed from the text of `/proc/PID/stat`.
///
/// The command name (field 2) is in parentheses and may contain spaces or parentheses, so the
/// fields are counted after the *last* `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Result<u64> {
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("no ')' after the command name")?;
    // After ')' come field 3 (state) onwards; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .with_context(|| format!("/proc stat has no field {n}"))?
            .parse::<u64>()
            .with_context(|| format!("/proc stat field {n} is not a number"))
    };
    Ok(field(14)? + field(15)?)
}

/// CPU time used so far by process `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    Ok(parse_stat_cpu_ticks(&stat)? as f64 / clock_ticks_per_sec() as f64)
}

/// Per-CPU time counters from `/proc/stat`, in clock ticks: `(busy, total)` for `cpu0`,
/// `cpu1`, ... in order. Busy is everything but idle and iowait (so it includes the softirq
/// and NAPI work the kernel does on that CPU for any process).
pub fn cpu_ticks() -> Result<Vec<(u64, u64)>> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    Ok(parse_cpu_ticks(&stat))
}

fn parse_cpu_ticks(stat: &str) -> Vec<(u64, u64)> {
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l.split_ascii_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total - idle.min(total), total)
        })
        .collect()
}

/// Each CPU's busy fraction between two [`cpu_ticks`] readings (0 where no time passed).
pub fn cpu_busy(before: &[(u64, u64)], after: &[(u64, u64)]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(&(b0, t0), &(b1, t1))| {
            let dt = t1.saturating_sub(t0);
            if dt == 0 {
                0.0
            } else {
                b1.saturating_sub(b0) as f64 / dt as f64
            }
        })
        .collect()
}

/// `sysconf(_SC_CLK_TCK)` through `getconf` (this crate has no unsafe code); 100 if unknown,
/// which is what Linux uses on every architecture the bench runs on.
pub fn clock_ticks_per_sec() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// The full path of `program` on `PATH` (and the sbin directories, which root's PATH may lack).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The exact command that installs `package` without starting services on its own.
pub fn install_command(package: &str) -> String {
    format!("apt-get install -y --no-install-recommends {package}")
}

/// Finds `program`; if it is missing and `install` is set (and we are root), installs
/// `package` with apt-get, otherwise fails naming the exact command.
pub fn require(program: &str, package: &str, install: bool) -> Result<PathBuf> {
    if let Some(p) = find_program(program) {
        return Ok(p);
    }
    let cmd = install_command(package);
    if !install {
        bail!("{program} is missing; install it with `{cmd}` (as root), or pass --install");
    }
    if !relay::io::sys::is_root() {
        bail!("{program} is missing and --install needs root; run `{cmd}` as root");
    }
    eprintln!("installing {package}: {cmd}");
    let apt = |args: &[&str]| -> Result<bool> {
        Ok(Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive").status()?.success())
    };
    let install_args = ["install", "-y", "--no-install-recommends", package];
    // A stale package list is the usual reason for a failure: refresh it once and retry.
    let installed = apt(&install_args)? || (apt(&["update"])? && apt(&install_args)?);
    if !installed {
        bail!("`{cmd}` failed");
    }
    find_program(program).with_context(|| format!("{package} is installed but {program} is still not found"))
}

/// The last `lines` lines of the log at `path` (empty if unreadable), for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {

    #[test]
    fn per_cpu_busy_from_proc_stat() {
        let a = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 40 0 0 0 0 0 0\nintr 1\n";
        let b = "cpu  0\ncpu0 55 0 5 40 0 0 0 0 0 0\ncpu1 5 0 15 70 10 0 10 0 0 0\n";
        let (t0, t1) = (parse_cpu_ticks(a), parse_cpu_ticks(b));
        assert_eq!(t0, vec![(10, 50), (10, 50)]);
        let busy = cpu_busy(&t0, &t1);
        assert!((busy[0] - 1.0).abs() < 1e-9, "{busy:?}");
        assert!((busy[1] - 20.0 / 60.0).abs() < 1e-9, "softirq counts as busy, iowait as idle: {busy:?}");
        assert_eq!(
            cpu_ticks().expect("this machine has /proc/stat").len(),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
    }
    use super::*;

    /// Captured from rtpengine 10.5.3.5 on this kind of machine.
    const RTPENGINE_STAT: &str = include_str!("../testdata/proc_stat_rtpengine.txt");

    #[test]
    fn stat_of_rtpengine() {
        // utime 7, stime 2.
        assert_eq!(parse_stat_cpu_ticks(RTPENGINE_STAT).unwrap(), 9);
    }

    #[test]
    fn stat_with_parentheses_and_spaces_in_the_name() {
        let s = "42 (a) b (c)) R 1 2 3 0 -1 0 0 0 0 0 1234 56 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(s).unwrap(), 1290);
    }

    #[test]
    fn truncated_or_garbled_stat_is_an_error() {
        assert!(parse_stat_cpu_ticks("42 (x) S 1 2 3").is_err());
        assert!(parse_stat_cpu_ticks("no parenthesis").is_err());
        assert!(parse_stat_cpu_ticks("42 (x) S 1 2 3 0 -1 0 0 0 0 0 x 5 0").is_err());
    }

    #[test]
    fn own_cpu_time_advances() {
        let pid = std::process::id();
        let a = cpu_seconds(pid).unwrap();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 100 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        assert!(cpu_seconds(pid).unwrap() > a, "100 ms of spinning shows in /proc stat");
    }

    #[test]
    fn install_hint_is_the_exact_command() {
        assert_eq!(install_command("rtpengine-daemon"), "apt-get install -y --no-install-recommends rtpengine-daemon");
        let e = require("surely-not-a-program-xyz", "pkg-xyz", false).unwrap_err().to_string();
        assert!(e.contains("apt-get install -y --no-install-recommends pkg-xyz"), "{e}");
    }

    #[test]
    fn threads_are_stopped_and_joined_on_join_and_on_drop() {
        let spin = |stop: Arc<AtomicBool>| {
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    std::thread::yield_now();
                }
                n
            })
        };
        let stop = Arc::new(AtomicBool::new(false));
        let t = Threads::new(vec![stop.clone()], vec![spin(stop.clone()), spin(stop.clone())]);
        assert_eq!(t.join().unwrap().len(), 2, "both threads ran to their end");
        let stop = Arc::new(AtomicBool::new(false));
        let t = Threads::new(vec![stop.clone()], vec![spin(stop.clone())]);
        drop(t);
        assert!(stop.load(Ordering::Relaxed), "dropping the guard stops its threads");
        let panics = Threads::new(vec![], vec![std::thread::spawn(|| panic!("on purpose"))]);
        assert!(panics.join().is_err());
    }
}
