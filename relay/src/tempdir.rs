//! The workspace's one temporary directory: a fresh directory under the system temp dir,
//! removed with everything in it on drop. relay-bench runs relayd, rtpengine and coturn
//! out of these; the tests and control's unit tests use it too.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A directory removed, with its contents, on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `edgerelay-{tag}-{pid}-{nanos}` under the temp dir.
    pub fn new(tag: &str) -> std::io::Result<Self> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("edgerelay-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside it.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
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
    fn is_fresh_and_removed_on_drop() {
        let (a, b) = (TempDir::new("t").expect("a"), TempDir::new("t").expect("b"));
        assert_ne!(a.path(), b.path());
        std::fs::write(a.join("f"), b"x").expect("write");
        let p = a.path().to_owned();
        drop(a);
        assert!(!p.exists());
        assert!(b.path().is_dir());
    }
}
