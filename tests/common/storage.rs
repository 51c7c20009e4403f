//! Host storage of a test's own, set up as root and gone when dropped (also
//! when the test fails): a small tmpfs to fill up, a loop device to use as
//! a block device.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{command, Run};

/// A small tmpfs, unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    #[track_caller]
    pub fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        fs::create_dir_all(&dir).unwrap();
        Run::of(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&dir),
        )
        .ok();
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A loop device over a sparse file, reached through a symlink so that
/// what clients print names the link, not whichever /dev/loopN was free;
/// detached when dropped (lazily, should QEMU still hold it).
pub struct LoopDevice {
    pub device: PathBuf,
}

impl LoopDevice {
    #[track_caller]
    pub fn attach(file: &Path, size: u64, link: &Path) -> LoopDevice {
        fs::File::create(file)
            .and_then(|f| f.set_len(size))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let run = command(
            "losetup",
            &["--find", "--show", file.to_str().expect("a UTF-8 path")],
        )
        .ok();
        let device = PathBuf::from(run.stdout.trim());
        std::os::unix::fs::symlink(&device, link).unwrap();
        LoopDevice { device }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}
