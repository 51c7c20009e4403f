"""How long a guest write waits during a push backup to a slow target, in QEMU
alone (no daemon): groundwork for a daemon option with copy-before-write's
`on-cbw-error` / `cbw-timeout` (issue 16, item 3), which virtbackupd does
not have yet.

A QEMU 7.2 started paused (-S) with a 256 MiB qcow2 disk full of data, and a
qcow2 target behind a `throttle` node (WRITE_BPS, 8 MiB/s). While a full
push backup runs, GUEST_WRITES 4 KiB writes go through the disk's device
(HMP qemu-io, as a guest's would), each timed as the monitor sees it:

  plain   blockdev-backup from the disk, as libvirtd and virtbackupd do
          now: the filter QEMU puts over the disk copies each old cluster
          into the slow target before the guest's write may go on;
  fleece  an explicit copy-before-write node over the disk (the device
          moved onto it with qom-set), whose target is a local scratch
          image, with on-cbw-error=break-snapshot and cbw-timeout=CBW_TIMEOUT;
          a snapshot-access node over it, and blockdev-backup from that to
          the slow target. The guest waits only for the scratch; a stall
          longer than the timeout breaks the snapshot (the backup fails)
          instead of holding the guest.

Usage: python3 scripts/bench_cbw_qemu.py [plain|fleece ...]  (images in
BENCH_DIR, default /dev/shm/bench-cbw). Beware: in QEMU 7.2, qom-set of a
device's drive to the node it already has aborts QEMU
(bdrv_replace_child_noperm: old_bs != new_bs).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

DIR = os.environ.get("BENCH_DIR", "/dev/shm/bench-cbw")
WRITE_BPS = int(os.environ.get("WRITE_BPS", str(8 << 20)))
GUEST_WRITES = int(os.environ.get("GUEST_WRITES", "40"))
CBW_TIMEOUT = int(os.environ.get("CBW_TIMEOUT", "1"))
DEVICE = "/machine/peripheral/virtio-disk0/virtio-backend"


class Qmp:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        for _ in range(200):
            try:
                self.sock.connect(path)
                break
            except OSError:
                time.sleep(0.05)
        self.file = self.sock.makefile("rw")
        json.loads(self.file.readline())
        self("qmp_capabilities")

    def __call__(self, name, args=None):
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        self.file.write(json.dumps(msg) + "\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "event" in reply:
                continue
            if "error" in reply:
                raise RuntimeError("%s: %s" % (name, reply["error"]))
            return reply["return"]


def img(*args):
    subprocess.run(["qemu-img"] + list(args), check=True)


def run(mode):
    shutil.rmtree(DIR, ignore_errors=True)
    os.makedirs(DIR)
    src, scratch, target = (os.path.join(DIR, n) for n in ("src.qcow2", "scratch.qcow2", "target.qcow2"))
    img("create", "-q", "-f", "qcow2", src, "256M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 256M", src],
                   check=True, stdout=subprocess.DEVNULL)
    img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", src, scratch)
    img("create", "-q", "-f", "qcow2", target, "256M")
    qmp_path = os.path.join(DIR, "qmp")
    qemu = subprocess.Popen([
        "qemu-system-x86_64", "-S", "-nodefaults", "-display", "none", "-machine", "pc,accel=tcg",
        "-m", "64", "-qmp", "unix:%s,server=on,wait=off" % qmp_path,
        "-object", "throttle-group,id=slow,x-bps-write=%d" % WRITE_BPS,
        "-blockdev", json.dumps({"driver": "file", "filename": src, "node-name": "disk-file"}),
        "-blockdev", json.dumps({"driver": "qcow2", "file": "disk-file", "node-name": "disk"}),
        "-device", "virtio-blk-pci,drive=disk,id=virtio-disk0"], stdout=subprocess.DEVNULL)
    try:
        qmp = Qmp(qmp_path)
        qmp("blockdev-add", {"driver": "file", "filename": target, "node-name": "target-file"})
        qmp("blockdev-add", {"driver": "throttle", "throttle-group": "slow", "file": "target-file",
                             "node-name": "target-slow"})
        qmp("blockdev-add", {"driver": "qcow2", "file": "target-slow", "node-name": "target"})
        source = "disk"
        if mode == "fleece":
            qmp("blockdev-add", {"driver": "file", "filename": scratch, "node-name": "scratch-file"})
            qmp("blockdev-add", {"driver": "qcow2", "file": "scratch-file", "node-name": "scratch",
                                 "backing": "disk"})
            qmp("blockdev-add", {"driver": "copy-before-write", "node-name": "cbw", "file": "disk",
                                 "target": "scratch", "on-cbw-error": "break-snapshot",
                                 "cbw-timeout": CBW_TIMEOUT})
            qmp("qom-set", {"path": DEVICE, "property": "drive", "value": "cbw"})
            qmp("blockdev-add", {"driver": "snapshot-access", "node-name": "frozen", "file": "cbw"})
            source = "frozen"
        qmp("blockdev-backup", {"device": source, "target": "target", "sync": "full", "job-id": "bk",
                                "auto-dismiss": False, "x-perf": {"use-copy-range": True}})
        waits = []
        for i in range(GUEST_WRITES):
            offset = (97 + i * 6151) % 4000 * 65536
            start = time.perf_counter()
            qmp("human-monitor-command",
                {"command-line": 'qemu-io -d %s "write -P 0x77 %d 4k"' % (DEVICE, offset)})
            waits.append(time.perf_counter() - start)
        waits.sort()
        job = qmp("query-jobs")[0]
        print("%-7s guest 4 KiB write, ms: p50 %.1f  p90 %.1f  max %.1f   (job %s, %d%% copied)"
              % (mode, waits[len(waits) // 2] * 1e3, waits[int(len(waits) * 0.9)] * 1e3,
                 waits[-1] * 1e3, job["status"],
                 100 * job["current-progress"] // max(job["total-progress"], 1)))
        qmp("quit")
    finally:
        try:
            qemu.wait(timeout=10)
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait()
    shutil.rmtree(DIR, ignore_errors=True)


if __name__ == "__main__":
    for m in sys.argv[1:] or ["plain", "fleece"]:
        run(m)
