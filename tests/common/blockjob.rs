//! Block-job test helpers shared by the block-job test files: waiting on
//! `virsh blockjob --info` and reading vda's source from `domblklist`.

use super::{wait_until, Daemon, PATIENCE};

/// Waits until `blockjob --info` shows vda's job at 100 % (ready).
pub fn wait_ready(d: &Daemon, dom: &str) {
    wait_until(PATIENCE, || {
        d.virsh(&["blockjob", dom, "vda", "--info"])
            .stderr
            .contains("[100 %]")
    })
    .expect("the job never got ready");
}

/// Waits until vda has no block job any more.
pub fn wait_no_job(d: &Daemon, dom: &str) {
    wait_until(PATIENCE, || {
        d.virsh_loud(&["blockjob", dom, "vda", "--info"])
            .stdout
            .contains("No current block job for vda")
    })
    .expect("the job never ended");
}

/// vda's source as `domblklist` (or `domblklist --inactive`) prints it.
pub fn source_of(d: &Daemon, dom: &str, inactive: bool) -> String {
    let mut args = vec!["domblklist", dom];
    if inactive {
        args.push("--inactive");
    }
    let out = d.virsh(&args).ok().stdout;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("vda"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
