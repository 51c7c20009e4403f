"""Checkpoint scaling, libvirtd against virtbackupd in one run.

For N in SIZES: start a one-disk domain, create N checkpoints (each the
child of the previous, as backups make them), list them through the API
(listAllCheckpoints + getXMLDesc of each, what `virsh checkpoint-list`
does) and with `virsh checkpoint-list --tree`, then delete them newest
first. Prints seconds per phase for each daemon and the ratio.
Run with Debian's /usr/bin/python3 (it has the libvirt module).
"""
import os
import subprocess
import sys
import time

import libvirt

SIZES = [int(n) for n in os.environ.get("SIZES", "100,1000").split(",")]
IMAGE = "/var/tmp/bench-cp.qcow2"
XML = """<domain type='qemu'><name>bench-cp</name><memory unit='MiB'>64</memory>
<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='%s'/><target dev='vda' bus='virtio'/></disk></devices></domain>""" % IMAGE


def fresh_domain(conn):
    try:
        old = conn.lookupByName("bench-cp")
        if old.isActive():
            old.destroy()
        old.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
    except libvirt.libvirtError:
        pass
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", IMAGE, "64M"], check=True)
    dom = conn.defineXML(XML)
    dom.create()
    return dom


def timed(fn):
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def run(uri, n):
    conn = libvirt.open(uri)
    dom = fresh_domain(conn)
    names = ["cp%04d" % i for i in range(n)]
    create = timed(lambda: [
        dom.checkpointCreateXML("<domaincheckpoint><name>%s</name></domaincheckpoint>" % name)
        for name in names])

    def list_api():
        cps = dom.listAllCheckpoints()
        assert len(cps) == n, len(cps)
        for cp in cps:
            cp.getXMLDesc()

    list_api_s = timed(list_api)
    tree = timed(lambda: subprocess.run(
        ["virsh", "-q", "-c", uri, "checkpoint-list", "bench-cp", "--tree"],
        check=True, stdout=subprocess.DEVNULL))
    delete = timed(lambda: [dom.checkpointLookupByName(name).delete() for name in reversed(names)])
    dom.destroy()
    dom.undefine()
    conn.close()
    return {"create": create, "list": list_api_s, "tree": tree, "delete": delete}


def main():
    libvirt.registerErrorHandler(lambda *args: None, None)
    targets = [arg.split(",", 1) for arg in sys.argv[1:]]
    print("%-12s %6s %9s %9s %9s %9s   (seconds)" % ("daemon", "N", "create", "list", "tree", "delete"))
    results = {}
    for n in SIZES:
        for name, uri in targets:
            r = run(uri, n)
            results[(name, n)] = r
            print("%-12s %6d %9.2f %9.2f %9.2f %9.2f" % (name, n, r["create"], r["list"], r["tree"], r["delete"]))
    for n in SIZES:
        if ("libvirtd", n) in results and ("virtbackupd", n) in results:
            a, b = results[("libvirtd", n)], results[("virtbackupd", n)]
            print("N=%d libvirtd/virtbackupd time ratio: " % n + "  ".join(
                "%s %.1fx" % (k, a[k] / b[k]) for k in ("create", "list", "tree", "delete")))


if __name__ == "__main__":
    main()
