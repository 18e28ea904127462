//! A disk that can fill: a small tmpfs for the disk-full tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `mib` MiB mounted at a folder for one test (a disk that can
/// fill), unmounted when dropped. Needs root, as `.ci/run` has.
pub struct SmallDisk {
    /// Where it is mounted.
    pub path: PathBuf,
}

impl SmallDisk {
    /// Mounts a fresh tmpfs of `mib` MiB at `path` (created if missing).
    pub fn mount(path: &Path, mib: u32) -> SmallDisk {
        std::fs::create_dir_all(path).expect("the mount point is created");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a {mib} MiB tmpfs at {} failed: the disk-full tests need root (as .ci/run has)",
            path.display()
        );
        SmallDisk {
            path: path.to_path_buf(),
        }
    }

    /// Fills the disk but for about `free_kib` KiB with a ballast file.
    pub fn fill_leaving(&self, free_kib: u64) {
        use std::io::Write;
        let ballast = self.path.join("ballast");
        let mut f = std::fs::File::create(&ballast).expect("the ballast file is created");
        let chunk = vec![0xA5u8; 64 * 1024];
        while self.free_kib() > free_kib + 64 {
            f.write_all(&chunk).expect("the ballast is written");
        }
        f.sync_all().expect("the ballast is synced");
    }

    /// Deletes the ballast: the space comes back.
    pub fn free(&self) {
        std::fs::remove_file(self.path.join("ballast")).expect("the ballast is removed");
    }

    /// Free space in KiB.
    pub fn free_kib(&self) -> u64 {
        let out = Command::new("df")
            .args(["-k", "--output=avail"])
            .arg(&self.path)
            .output()
            .expect("df runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
