//! qemu-io: data written into images and read back while no QEMU writes
//! them, and guest writes through HMP `qemu-io` on a running domain's
//! device, which QEMU records in its dirty bitmaps as a guest's would be.

use std::path::Path;
use std::process::Command;

use super::{Daemon, Run};

/// `qemu-io -f FORMAT -c CMD IMAGE`; asserts that it worked.
#[track_caller]
pub fn write(image: &Path, format: &str, cmd: &str) {
    let run = Run::of(
        Command::new("qemu-io")
            .args(["-f", format, "-c", cmd])
            .arg(image),
    );
    assert!(
        run.code == 0 && !run.stdout.contains("failed"),
        "qemu-io {cmd} {}: {}{}",
        image.display(),
        run.stdout,
        run.stderr
    );
}

/// `qemu-io -r -U -c CMD IMAGE`: read-only, beside a QEMU if need be.
pub fn read_only(image: &Path, cmd: &str) -> Run {
    Run::of(
        Command::new("qemu-io")
            .args(["-r", "-U", "-c", cmd])
            .arg(image),
    )
}

/// Whether `image` reads `pattern` over the range (a read that fails
/// otherwise does not count against it).
pub fn holds(image: &Path, pattern: u8, offset: &str, len: &str) -> bool {
    let run = read_only(image, &format!("read -P 0x{pattern:02x} {offset} {len}"));
    run.code == 0 && !run.stdout.contains("Pattern verification failed")
}

/// Asserts that `image` reads `pattern` at `offset`..+`len`.
#[track_caller]
pub fn reads(image: &Path, pattern: u8, offset: &str, len: &str) {
    let run = read_only(image, &format!("read -P 0x{pattern:02x} {offset} {len}"));
    assert!(
        run.code == 0 && run.stdout.starts_with("read ") && !run.stdout.contains("failed"),
        "{} at {offset}: {}{}",
        image.display(),
        run.stdout,
        run.stderr
    );
}

impl Daemon {
    /// Writes through the guest's view of disk `index` (0 = vda) of a
    /// running domain: `what` is a qemu-io command.
    #[track_caller]
    pub fn guest_write(&self, dom: &str, index: u32, what: &str) {
        let cmd =
            format!("qemu-io -d /machine/peripheral/virtio-disk{index}/virtio-backend \"{what}\"");
        self.hmp_qemu_io(dom, &cmd);
    }

    /// Runs an HMP `qemu-io` command line; asserts that it printed nothing
    /// (qemu-io's errors come back as text).
    #[track_caller]
    pub fn hmp_qemu_io(&self, dom: &str, cmd: &str) {
        let run = self
            .virsh(&["qemu-monitor-command", dom, "--hmp", cmd])
            .ok();
        assert_eq!(run.stdout.trim(), "", "qemu-io said: {}", run.stdout);
    }
}
