//! The bench's one temporary directory type: a private directory for a child process's
//! config, sockets and logs, removed when the owner drops it (also on an error path).
//!
//! Every scenario, baseline and the demo uses this one; the lead moves it into the `relay`
//! crate later, and the bench will then use that one instead.

use std::path::PathBuf;

/// A private temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `relay-bench-{tag}-{pid}-{nanos}` under the temp dir.
    pub fn new(tag: &str) -> std::io::Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("relay-bench-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_created_unique_and_removed_on_drop() {
        let a = TempDir::new("t").unwrap();
        let b = TempDir::new("t").unwrap();
        assert_ne!(a.0, b.0, "two directories with the same tag are distinct");
        std::fs::write(a.0.join("f"), "x").unwrap();
        let p = a.0.clone();
        drop(a);
        assert!(!p.exists(), "the directory and its contents are gone after drop");
        assert!(b.0.is_dir());
    }
}
