//! What the reports record about the machine they were measured on: the CPU model, the load
//! average, and the first line a tool prints (its version, the kernel release, the date).
//!
//! These are best effort: a report from a machine without `/proc/cpuinfo` or without a tool
//! says so with an empty string instead of failing the run it describes.

use std::process::Command;

/// The first `model name` in `/proc/cpuinfo`, or empty.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default()
}

/// `/proc/loadavg`, trimmed, or empty.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned()
}

/// The first non-empty line `cmd args` prints on stdout (on stderr if stdout is empty, as some
/// tools print their version there), trimmed; empty if it cannot run.
pub fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let s = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&s).lines().find(|l| !l.trim().is_empty()).unwrap_or_default().trim().to_string()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_is_the_first_non_empty_one_or_nothing() {
        assert_eq!(first_line("sh", &["-c", "echo; echo '  a b '; echo c"]), "a b");
        assert_eq!(first_line("sh", &["-c", "echo v1 >&2"]), "v1", "stderr when stdout is empty");
        assert_eq!(first_line("surely-not-a-program-xyz", &[]), "");
    }

    #[test]
    fn loadavg_has_three_averages() {
        let l = loadavg();
        assert!(l.split_whitespace().take(3).all(|x| x.parse::<f64>().is_ok()), "{l}");
    }
}
