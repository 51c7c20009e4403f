"""Block jobs on 1 GiB, libvirtd against virtbackupd in one run.

For each daemon (name,uri arguments), on a one-disk domain:
  commit: a disk-only snapshot without metadata, 1 GiB of guest writes
          into the overlay (HMP qemu-io), then blockCommit --active timed
          until the job is ready and, with the pivot (blockJobAbort
          PIVOT, synchronous), until the domain runs on its image again;
  copy:   a disk holding 1 GiB, blockCopy (transient job) to a new qcow2
          timed until ready and through the pivot.
Readiness is polled through virDomainGetBlockJobInfo (cur == end), as
`virsh blockjob --info` reads it. Prints seconds and the ratios.
Run with Debian's /usr/bin/python3 (it has the libvirt module).
"""
import os
import shutil
import subprocess
import sys
import time

import libvirt
import libvirt_qemu

DIR = os.environ.get("BENCH_DIR", "/var/tmp/bench-bj")
IMAGE = os.path.join(DIR, "vda.qcow2")
DATA = os.environ.get("DATA", "1G")
XML = """<domain type='qemu'><name>bench-bj</name><memory unit='MiB'>64</memory>
<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='%s'/><target dev='vda' bus='virtio'/></disk></devices></domain>""" % IMAGE
SNAP = """<domainsnapshot><name>ov</name><disks>
<disk name='vda' snapshot='external'><source file='%s'/></disk></disks></domainsnapshot>"""


def fresh(conn, data):
    try:
        old = conn.lookupByName("bench-bj")
        if old.isActive():
            old.destroy()
        old.undefine()
    except libvirt.libvirtError:
        pass
    shutil.rmtree(DIR, ignore_errors=True)
    os.makedirs(DIR)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", IMAGE, "2G"], check=True)
    if data:
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 %s" % DATA, IMAGE],
                       check=True, stdout=subprocess.DEVNULL)
    dom = conn.defineXML(XML)
    dom.create()
    return dom


def wait_ready(dom):
    while True:
        info = dom.blockJobInfo("vda", 0)
        if info and info["end"] > 0 and info["cur"] == info["end"]:
            return
        time.sleep(0.005)


def commit(conn):
    dom = fresh(conn, False)
    overlay = os.path.join(DIR, "vda.ov")
    flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
             | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
             | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
    dom.snapshotCreateXML(SNAP % overlay, flags)
    libvirt_qemu.qemuMonitorCommand(
        dom, 'qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "write -P 0x33 0 %s"' % DATA,
        libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
    start = time.monotonic()
    dom.blockCommit("vda", None, None, 0, libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE)
    wait_ready(dom)
    ready = time.monotonic() - start
    dom.blockJobAbort("vda", libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
    total = time.monotonic() - start
    dom.destroy()
    dom.undefine()
    return ready, total


def copy(conn):
    dom = fresh(conn, True)
    dest = os.path.join(DIR, "copy.qcow2")
    start = time.monotonic()
    dom.blockCopy("vda", "<disk type='file'><source file='%s'/><driver type='qcow2'/></disk>" % dest,
                  None, libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB)
    wait_ready(dom)
    ready = time.monotonic() - start
    dom.blockJobAbort("vda", libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
    total = time.monotonic() - start
    dom.destroy()
    dom.undefine()
    return ready, total


def main():
    libvirt.registerErrorHandler(lambda *args: None, None)
    targets = [arg.split(",", 1) for arg in sys.argv[1:]]
    results = {}
    for name, uri in targets:
        conn = libvirt.open(uri)
        results[name] = {"commit": commit(conn), "copy": copy(conn)}
        conn.close()
    print("block jobs on %s, seconds (until ready / through the pivot):" % DATA)
    print("%-12s %18s %18s" % ("", "active commit", "copy"))
    for name, r in results.items():
        print("%-12s %8.2f / %7.2f %8.2f / %7.2f" % (name, r["commit"][0], r["commit"][1],
                                                   r["copy"][0], r["copy"][1]))
    if "libvirtd" in results and "virtbackupd" in results:
        lv, vb = results["libvirtd"], results["virtbackupd"]
        print("libvirtd/virtbackupd time ratio (through the pivot): commit %.2fx  copy %.2fx"
              % (lv["commit"][1] / vb["commit"][1], lv["copy"][1] / vb["copy"][1]))
    shutil.rmtree(DIR, ignore_errors=True)


if __name__ == "__main__":
    main()
