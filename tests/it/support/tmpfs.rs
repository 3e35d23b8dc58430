//! A tmpfs mounted on a scratch directory: a small disk that fills, under the audit trail of the
//! disk-full tests and the soak. Mounting needs root; unmounted (lazily: a proxy may still hold
//! files there) on drop.

use std::path::Path;
use std::process::{Command, Stdio};

use super::Scratch;

/// A mounted tmpfs.
#[derive(Debug)]
pub struct Tmpfs(Scratch);

impl Tmpfs {
    /// Mounts one of `size` bytes (RAM is used only for what is written); `None` when mounting
    /// is not allowed (not root).
    pub fn mount(size: u64) -> Option<Self> {
        let dir = Scratch::new("tmpfs");
        std::fs::create_dir_all(dir.path()).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        mounted.success().then_some(Self(dir))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Changes its size; false when refused (tmpfs refuses a size under its use).
    pub fn resize(&self, size: u64) -> bool {
        Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Bytes in use (`stat -f`: block size, blocks, free blocks).
    pub fn used(&self) -> u64 {
        let out = Command::new("stat").args(["-f", "-c", "%S %b %f"]).arg(self.path()).output();
        let out = String::from_utf8(out.expect("stat -f").stdout).unwrap();
        let n: Vec<u64> = out.split_whitespace().map(|w| w.parse().unwrap()).collect();
        n[0] * (n[1] - n[2])
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}
