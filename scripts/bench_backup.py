"""Push backups of a disk holding 1 GiB, libvirtd against virtbackupd in one run.

For each daemon (name,uri arguments): a fresh 2 GiB qcow2 with DATA (1G)
of data written into it, a one-disk domain on it, then
  full:         backup-begin to a new qcow2 target, creating checkpoint "full"
  incremental:  after WRITES (64M) of guest writes (HMP qemu-io), backup-begin
                incremental since "full" to a new qcow2 target
each timed from the call until the job is over (polled through the job
stats, as `virsh domjobinfo` reads them), with the CPU time QEMU spent
meanwhile. The full target is checked against the disk (`qemu-img
compare`). The floors, timed on the same image in the same run:
`qemu-img convert` and `cp` of the whole image for the full backup, and
of an image holding only the WRITES clusters for the incremental one;
and `qemu-img convert` followed by `sync -d` of its output, the durable
floor (a daemon's backup is flushed to the disk before its job ends, as
QEMU flushes a target when it closes it; convert alone does not flush).

The machine is shared, so each figure is the median of REPS (3) rounds,
the daemons and floors interleaved within each round (the order of the
daemons alternates), with the spread (min-max) beside it.
Run with Debian's /usr/bin/python3 (it has the libvirt module).
"""
import os
import shutil
import statistics
import subprocess
import sys
import time

import libvirt
import libvirt_qemu

DIR = os.environ.get("BENCH_DIR", "/var/tmp/bench-bk")
IMAGE = os.path.join(DIR, "src.qcow2")
DIRTY = os.path.join(DIR, "dirty.qcow2")
DATA = os.environ.get("DATA", "1G")
WRITES = os.environ.get("WRITES", "64M")
REPS = int(os.environ.get("REPS", "3"))
DOM = "bench-bk"
XML = """<domain type='qemu'><name>%s</name><memory unit='MiB'>64</memory>
<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='%s'/><target dev='vda' bus='virtio'/></disk></devices></domain>""" % (DOM, IMAGE)
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process, all its threads."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def qemu_pid(name):
    """The QEMU process of domain `name` (guest=NAME on its command line)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and b"qemu-system" in argv[0] and any(
                a == name.encode() or a.startswith(b"guest=%s," % name.encode()) for a in argv):
            return int(entry)
    return None


def qemu_io(args):
    subprocess.run(["qemu-io"] + args, check=True, stdout=subprocess.DEVNULL)


def fresh_images():
    shutil.rmtree(DIR, ignore_errors=True)
    os.makedirs(DIR)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", IMAGE, "2G"], check=True)
    qemu_io(["-f", "qcow2", "-c", "write -P 0x5a 0 %s" % DATA, IMAGE])
    # What an incremental backup has to copy, alone in an image.
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", DIRTY, "2G"], check=True)
    qemu_io(["-f", "qcow2", "-c", "write -P 0x33 0 %s" % WRITES, DIRTY])


def settle(pid, limit=10.0):
    """Waits until the guest (no OS: the firmware finds nothing to boot and
    halts) stops using the CPU, so that QEMU's CPU time is the backup's."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(0.2)
        if cpu_seconds(pid) - before <= 0.02:
            return


def fresh_domain(conn):
    try:
        old = conn.lookupByName(DOM)
        if old.isActive():
            old.destroy()
        old.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
    except libvirt.libvirtError:
        pass
    fresh_images()
    dom = conn.defineXML(XML)
    dom.create()
    return dom


def wait_job(dom):
    while dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
        time.sleep(0.005)
    stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    if not stats.get("success"):
        raise SystemExit("backup failed: %r" % stats)


def backup(dom, qemu, target, incremental=None, checkpoint=None):
    inc = "<incremental>%s</incremental>" % incremental if incremental else ""
    xml = ("<domainbackup mode='push'>%s<disks><disk name='vda' type='file'>"
           "<target file='%s'/><driver type='qcow2'/></disk></disks></domainbackup>"
           % (inc, target))
    cp = "<domaincheckpoint><name>%s</name></domaincheckpoint>" % checkpoint if checkpoint else None
    cpu = cpu_seconds(qemu)
    start = time.monotonic()
    dom.backupBegin(xml, cp, 0)
    wait_job(dom)
    return time.monotonic() - start, cpu_seconds(qemu) - cpu


def run(uri):
    conn = libvirt.open(uri)
    dom = fresh_domain(conn)
    qemu = qemu_pid(DOM)
    settle(qemu)
    full_target = os.path.join(DIR, "full.qcow2")
    full, full_cpu = backup(dom, qemu, full_target, checkpoint="full")
    # The disk's data went in before QEMU started: the file is up to date.
    same = subprocess.run(["qemu-img", "compare", "-q", "-U", IMAGE, full_target]).returncode == 0
    libvirt_qemu.qemuMonitorCommand(
        dom, 'qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "write -P 0x33 0 %s"' % WRITES,
        libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
    inc, inc_cpu = backup(dom, qemu, os.path.join(DIR, "inc.qcow2"), incremental="full")
    dom.destroy()
    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
    conn.close()
    if not same:
        raise SystemExit("%s: the full backup differs from the disk" % uri)
    return {"full": full, "full_cpu": full_cpu, "inc": inc, "inc_cpu": inc_cpu}


def timed(argv):
    before = os.times()
    start = time.monotonic()
    subprocess.run(argv, check=True)
    after = os.times()
    cpu = (after.children_user + after.children_system) - (before.children_user + before.children_system)
    return time.monotonic() - start, cpu


def floors():
    fresh_images()
    out = {}
    for key, image in (("full", IMAGE), ("inc", DIRTY)):
        convert = os.path.join(DIR, "convert.qcow2")
        out[key], out[key + "_cpu"] = timed(["qemu-img", "convert", "-O", "qcow2", image, convert])
        os.unlink(convert)
        # The durable floor: a backup is on the disk when the job ends
        # (QEMU flushes the target as it closes it); convert does not flush.
        out[key + "_sync"], _ = timed(["sh", "-c", 'qemu-img convert -O qcow2 "$0" "$1" && sync -d "$1"',
                                       image, convert])
        copy = os.path.join(DIR, "cp.qcow2")
        out[key + "_cp"], _ = timed(["cp", image, copy])
        os.unlink(convert)
        os.unlink(copy)
    return out


def med(values):
    return "%6.3f (%5.3f-%5.3f)" % (statistics.median(values), min(values), max(values))


def main():
    libvirt.registerErrorHandler(lambda *args: None, None)
    targets = [arg.split(",", 1) for arg in sys.argv[1:]]
    rounds = {name: [] for name, _ in targets}
    rounds["floor"] = []
    for rep in range(REPS):
        order = targets if rep % 2 == 0 else list(reversed(targets))
        for name, uri in order:
            rounds[name].append(run(uri))
        rounds["floor"].append(floors())
    shutil.rmtree(DIR, ignore_errors=True)

    def col(name, key):
        return [r[key] for r in rounds[name]]

    print("push backup of %s of data (incremental after %s of writes); median (min-max) of %d rounds"
          % (DATA, WRITES, REPS))
    print("%-18s %-22s %-22s %-22s %-22s" % ("", "full s", "full QEMU CPU s", "incremental s",
                                             "incr. QEMU CPU s"))
    for name, _ in targets:
        print("%-18s %-22s %-22s %-22s %-22s" % (name, med(col(name, "full")), med(col(name, "full_cpu")),
                                                 med(col(name, "inc")), med(col(name, "inc_cpu"))))
    print("%-18s %-22s %-22s %-22s %-22s" % ("qemu-img convert", med(col("floor", "full")),
                                             med(col("floor", "full_cpu")), med(col("floor", "inc")),
                                             med(col("floor", "inc_cpu"))))
    print("%-18s %-22s %-22s %-22s" % ("convert + fsync", med(col("floor", "full_sync")), "",
                                       med(col("floor", "inc_sync"))))
    print("%-18s %-22s %-22s %-22s" % ("cp", med(col("floor", "full_cp")), "", med(col("floor", "inc_cp"))))
    convert_full = statistics.median(col("floor", "full"))
    convert_inc = statistics.median(col("floor", "inc"))
    sync_full = statistics.median(col("floor", "full_sync"))
    sync_inc = statistics.median(col("floor", "inc_sync"))
    for name, _ in targets:
        print("%s / qemu-img convert: full %.2fx (QEMU CPU %.2fx), incremental %.2fx"
              % (name, statistics.median(col(name, "full")) / convert_full,
                 statistics.median(col(name, "full_cpu")) / max(statistics.median(col("floor", "full_cpu")), 1e-9),
                 statistics.median(col(name, "inc")) / convert_inc))
        print("%s / convert + fsync: full %.2fx, incremental %.2fx"
              % (name, statistics.median(col(name, "full")) / sync_full,
                 statistics.median(col(name, "inc")) / sync_inc))
    names = [name for name, _ in targets]
    if "libvirtd" in names and "virtbackupd" in names:
        lv = {k: statistics.median(col("libvirtd", k)) for k in ("full", "inc")}
        vb = {k: statistics.median(col("virtbackupd", k)) for k in ("full", "inc")}
        print("libvirtd/virtbackupd time ratio: full %.2fx  incremental %.2fx"
              % (lv["full"] / vb["full"], lv["inc"] / vb["inc"]))


if __name__ == "__main__":
    main()
