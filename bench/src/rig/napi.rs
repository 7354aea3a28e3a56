//! Where the veths' receive work runs (`--napi`): in softirq on the transmitting CPU (veth's
//! default), or in NAPI kernel threads pinned per side, optionally real-time.
//!
//! veth runs a receiver's NAPI (its XDP program, the copy into an AF_XDP socket, the UDP
//! stack) on whichever CPU transmitted, so by default relayd's input is processed on the load
//! CPU and its receivers' input inside relayd's TX syscalls. Threaded NAPI puts each side's
//! receive work where a NIC's would run. The modes move a few µs per packet between the CPUs.

use anyhow::{bail, Context, Result};
use relay::io::netns::NetNs;

use crate::procs;

/// Where the veths' receive work runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Napi {
    /// In softirq on the CPU that transmitted (veth's default).
    Softirq,
    /// In NAPI threads pinned per side.
    Threaded,
    /// In NAPI threads pinned per side, real-time (SCHED_FIFO 50) like a softirq.
    ThreadedRt,
}

/// Moves the receive path of `dev` (in namespace `ns`) into NAPI kernel threads pinned to
/// `cpu`, and returns their pids.
///
/// veth otherwise runs a receiver's NAPI (its XDP program, the copy into an AF_XDP socket,
/// the UDP stack) in softirq on whichever CPU transmitted: relayd's output would be received
/// on relayd's CPU, and its input processed on the generator's. Threaded NAPI puts each
/// side's receive work where a NIC's would run: relayd's on the relay CPU, the receivers' on
/// the load CPU. A veth without an XDP program has no NAPI unless GRO is on (`gro`), which
/// needs `ethtool`.
pub(crate) fn threaded_napi(ns: &NetNs, dev: &str, cpu: usize, gro: bool, rt: bool) -> Result<Vec<u32>> {
    // /sys/class/net shows the namespace sysfs was mounted in; `ip netns exec` remounts it.
    let exec = |args: &[&str]| -> Result<()> {
        let out = std::process::Command::new("ip").args(["netns", "exec", ns.name()]).args(args).output()?;
        if !out.status.success() {
            bail!("`{}` in {}: {}", args.join(" "), ns.name(), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    };
    if gro {
        procs::require("ethtool", "ethtool", false)?;
        exec(&["ethtool", "-K", dev, "gro", "on"])?;
    }
    // The threads are named `napi/DEV-ID`, cut to 15 bytes: the ones that appear with the
    // switch (and match the cut name) are this device's.
    let prefix: String = format!("napi/{dev}-").chars().take(15).collect();
    let napi_threads = || -> Result<Vec<u32>> {
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc")?.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end().starts_with(&prefix)) {
                pids.push(pid);
            }
        }
        Ok(pids)
    };
    let before = napi_threads()?;
    exec(&["sh", "-c", &format!("echo 1 > /sys/class/net/{dev}/threaded")])
        .with_context(|| format!("threaded NAPI on {dev}"))?;
    let pids: Vec<u32> = napi_threads()?.into_iter().filter(|p| !before.contains(p)).collect();
    if pids.is_empty() {
        bail!("no NAPI thread for {dev} after enabling threaded NAPI");
    }
    // Pinned, and with `rt` real-time like the softirq it replaces, so it preempts the busy
    // threads on its CPU (relayd's worker, the pacer) as soon as frames are waiting.
    for pid in &pids {
        let pid = pid.to_string();
        let cpu = cpu.to_string();
        let pin = ("taskset", &["-pc", &cpu, &pid][..]);
        let fifo = ("chrt", &["-f", "-p", "50", &pid][..]);
        for (tool, args) in std::iter::once(pin).chain(rt.then_some(fifo)) {
            let out = std::process::Command::new(tool).args(args).output()?;
            if !out.status.success() {
                bail!("`{tool} {}` for {prefix}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
            }
        }
    }
    Ok(pids)
}
