//! `--nice`: the daemon's own threads ahead of the QEMUs it starts.
//!
//! While many backups copy, the daemon's thread waits for a core behind
//! the QEMUs that do (see README, "Many backups at once"); a lower nice
//! value lets it in sooner. Only the daemon's threads get it: each one
//! is marked reset-on-fork, so a QEMU, a qemu-img or a thread it starts
//! begins at the default priority, and guests are never raised above the
//! rest of the host. Threads the runtime starts later call [`apply`]
//! again from its start hook.

use std::io;

/// Sets the calling thread's nice value to `nice`, with reset-on-fork;
/// `0` leaves the thread as it is, as libvirtd does.
// rustix leaves sched_setscheduler out, and without reset-on-fork every
// QEMU would inherit the daemon's priority.
#[allow(unsafe_code)]
pub fn apply(nice: i8) -> io::Result<()> {
    if nice == 0 {
        return Ok(());
    }
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is an initialised sched_param that lives on this
    // stack frame for the whole call, and the kernel only reads it during
    // the call; pid 0 names the calling thread, so no other thread or
    // process is touched. SCHED_OTHER with priority 0 is a valid pair.
    let rc = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_OTHER | libc::SCHED_RESET_ON_FORK, &param)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // Linux keeps nice per thread: pid 0 (None) is this thread alone.
    rustix::process::setpriority_process(None, i32::from(nice)).map_err(io::Error::from)
}
