"""Push backups of a disk holding 1 GiB, libvirtd against virtbackupd in one run.

For each daemon (name,uri arguments): a fresh 2 GiB qcow2 with 1 GiB of
data written into it, a one-disk domain on it, then
  full:         backup-begin to a new qcow2 target, creating checkpoint "full"
  incremental:  after 64 MiB of guest writes (HMP qemu-io), backup-begin
                incremental since "full" to a new qcow2 target
each timed from the call until the job is over (polled through the job
stats, as `virsh domjobinfo` reads them). The floor is `qemu-img convert`
of the same image. Prints seconds and ratios.
Run with Debian's /usr/bin/python3 (it has the libvirt module).
"""
import os
import shutil
import subprocess
import sys
import time

import libvirt
import libvirt_qemu

DIR = os.environ.get("BENCH_DIR", "/var/tmp/bench-bk")
IMAGE = os.path.join(DIR, "src.qcow2")
DATA = os.environ.get("DATA", "1G")
WRITES = os.environ.get("WRITES", "64M")
XML = """<domain type='qemu'><name>bench-bk</name><memory unit='MiB'>64</memory>
<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='%s'/><target dev='vda' bus='virtio'/></disk></devices></domain>""" % IMAGE


def fresh_image():
    shutil.rmtree(DIR, ignore_errors=True)
    os.makedirs(DIR)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", IMAGE, "2G"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 %s" % DATA, IMAGE],
                   check=True, stdout=subprocess.DEVNULL)


def fresh_domain(conn):
    try:
        old = conn.lookupByName("bench-bk")
        if old.isActive():
            old.destroy()
        old.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
    except libvirt.libvirtError:
        pass
    fresh_image()
    dom = conn.defineXML(XML)
    dom.create()
    return dom


def wait_job(dom):
    while dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
        time.sleep(0.005)
    stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    if not stats.get("success"):
        raise SystemExit("backup failed: %r" % stats)


def backup(dom, target, incremental=None, checkpoint=None):
    inc = "<incremental>%s</incremental>" % incremental if incremental else ""
    xml = ("<domainbackup mode='push'>%s<disks><disk name='vda' type='file'>"
           "<target file='%s'/><driver type='qcow2'/></disk></disks></domainbackup>"
           % (inc, target))
    cp = "<domaincheckpoint><name>%s</name></domaincheckpoint>" % checkpoint if checkpoint else None
    start = time.monotonic()
    dom.backupBegin(xml, cp, 0)
    wait_job(dom)
    return time.monotonic() - start


def run(uri):
    conn = libvirt.open(uri)
    dom = fresh_domain(conn)
    full = backup(dom, os.path.join(DIR, "full.qcow2"), checkpoint="full")
    libvirt_qemu.qemuMonitorCommand(
        dom, 'qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "write -P 0x33 0 %s"' % WRITES,
        libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
    inc = backup(dom, os.path.join(DIR, "inc.qcow2"), incremental="full")
    dom.destroy()
    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
    conn.close()
    return {"full": full, "incremental": inc}


def floor():
    fresh_image()
    start = time.monotonic()
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", IMAGE, os.path.join(DIR, "convert.qcow2")],
                   check=True)
    return time.monotonic() - start


def main():
    libvirt.registerErrorHandler(lambda *args: None, None)
    targets = [arg.split(",", 1) for arg in sys.argv[1:]]
    results = {name: run(uri) for name, uri in targets}
    convert = floor()
    print("push backup of %s of data (incremental after %s of writes), seconds:" % (DATA, WRITES))
    print("%-12s %10s %12s" % ("", "full", "incremental"))
    for name, r in results.items():
        print("%-12s %10.2f %12.2f" % (name, r["full"], r["incremental"]))
    print("%-12s %10.2f %12s" % ("qemu-img", convert, "-"))
    if "libvirtd" in results and "virtbackupd" in results:
        lv, vb = results["libvirtd"], results["virtbackupd"]
        print("libvirtd/virtbackupd time ratio: full %.2fx  incremental %.2fx"
              % (lv["full"] / vb["full"], lv["incremental"] / vb["incremental"]))
    for name, r in results.items():
        print("%s/qemu-img convert (full): %.2fx" % (name, r["full"] / convert))
    shutil.rmtree(DIR, ignore_errors=True)


if __name__ == "__main__":
    main()
