"""How long a guest write waits during a push backup to a slow target,
through virtbackupd, without and with --backup-cbw-timeout (issue 16,
item 3; scripts/bench_cbw_qemu.py measures the same in QEMU alone).

For each mode a daemon of its own (VIRTBACKUPD, default
target/debug/virtbackupd) is started in BENCH_DIR (default
/var/tmp/bench-cbw) and runs a one-disk domain whose 256 MiB qcow2 disk is
full of data. The backup target is slow: a raw image served by
qemu-storage-daemon through a `throttle` node (WRITE_BPS, default
8 MiB/s) and exported over FUSE as a file, which the backup writes into
with --reuse-external (FUSE needs root or fusermount3). While the full
push backup runs, GUEST_WRITES 4 KiB writes go through the disk's device
(HMP qemu-io through virDomainQemuMonitorCommand, as a guest's would),
each timed as the client sees it; then the job is aborted.

  plain  the daemon's default: QEMU's filter copies each old cluster into
         the slow target before the guest's write may go on;
  cbw    --backup-cbw-timeout CBW_TIMEOUT (default 1): the daemon's own
         filter copies into a local scratch image next to the disk.

Usage: /usr/bin/python3 scripts/bench_cbw.py [plain|cbw ...]
"""
import json
import os
import shutil
import subprocess
import sys
import time

import libvirt
import libvirt_qemu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAEMON = os.environ.get("VIRTBACKUPD", os.path.join(ROOT, "target/debug/virtbackupd"))
DIR = os.environ.get("BENCH_DIR", "/var/tmp/bench-cbw")
WRITE_BPS = int(os.environ.get("WRITE_BPS", str(8 << 20)))
GUEST_WRITES = int(os.environ.get("GUEST_WRITES", "40"))
CBW_TIMEOUT = os.environ.get("CBW_TIMEOUT", "1")
SIZE = 256 << 20
DEVICE = "/machine/peripheral/virtio-disk0/virtio-backend"


def domain_xml(image):
    return """<domain type='qemu'><name>bench-cbw</name><memory unit='MiB'>64</memory>
<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='%s'/><target dev='vda' bus='virtio'/></disk></devices></domain>""" % image


def slow_target(path):
    """A raw image behind a throttle node, exported over FUSE at `path`."""
    backing = path + ".img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", backing, str(SIZE)], check=True)
    open(path, "w").close()
    qsd = subprocess.Popen([
        "qemu-storage-daemon",
        "--object", "throttle-group,id=slow,x-bps-write=%d" % WRITE_BPS,
        "--blockdev", json.dumps({"driver": "file", "filename": backing, "node-name": "f"}),
        "--blockdev", json.dumps({"driver": "throttle", "throttle-group": "slow", "file": "f",
                                  "node-name": "t"}),
        "--export", "fuse,id=e,node-name=t,mountpoint=%s,writable=on" % path])
    for _ in range(100):
        if os.path.ismount(path) or os.path.getsize(path) == SIZE:
            return qsd
        time.sleep(0.05)
    qsd.kill()
    raise RuntimeError("the FUSE export did not come up")


def run(mode):
    shutil.rmtree(DIR, ignore_errors=True)
    os.makedirs(DIR)
    image = os.path.join(DIR, "vda.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, str(SIZE)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 %d" % SIZE, image],
                   check=True, stdout=subprocess.DEVNULL)
    sock = os.path.join(DIR, "sock")
    args = [DAEMON, "--listen", sock, "--listen-ro", sock + "-ro",
            "--state-dir", os.path.join(DIR, "state"), "--run-dir", os.path.join(DIR, "run")]
    if mode == "cbw":
        args += ["--backup-cbw-timeout", CBW_TIMEOUT]
    log = open(os.path.join(DIR, "daemon.log"), "w")
    daemon = subprocess.Popen(args, stdout=log, stderr=log, env=dict(os.environ, RUST_LOG="warn"))
    target = os.path.join(DIR, "target.raw")
    qsd = None
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        conn = libvirt.open("qemu+unix:///system?socket=" + sock)
        dom = conn.defineXML(domain_xml(image))
        dom.create()
        qsd = slow_target(target)
        dom.backupBegin("<domainbackup><disks><disk name='vda' type='file'><target file='%s'/>"
                        "<driver type='raw'/></disk></disks></domainbackup>" % target,
                        None, libvirt.VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL)
        waits = []
        for i in range(GUEST_WRITES):
            offset = (97 + i * 6151) % 4000 * 65536
            start = time.perf_counter()
            libvirt_qemu.qemuMonitorCommand(
                dom, 'qemu-io -d %s "write -P 0x77 %d 4k"' % (DEVICE, offset),
                libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
            waits.append(time.perf_counter() - start)
        waits.sort()
        stats = dom.jobStats()
        done = 100 * stats.get("data_processed", 0) // max(stats.get("data_total", 1), 1)
        print("%-5s guest 4 KiB write, ms: p50 %.1f  p90 %.1f  max %.1f   (job type %d, %d%% copied)"
              % (mode, waits[len(waits) // 2] * 1e3, waits[int(len(waits) * 0.9)] * 1e3,
                 waits[-1] * 1e3, stats.get("type", -1), done), flush=True)
        try:
            dom.abortJob()
        except libvirt.libvirtError:
            pass
        while dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
            time.sleep(0.05)
        dom.destroy()
        conn.close()
    finally:
        if qsd is not None:
            qsd.terminate()
            qsd.wait()
        daemon.terminate()
        daemon.wait()
    shutil.rmtree(DIR, ignore_errors=True)


if __name__ == "__main__":
    for m in sys.argv[1:] or ["plain", "cbw"]:
        run(m)
