"""Same client workload against libvirtd and virtbackupd, in one run.

Each of CONNS threads opens its own connection and loops over
lookupByName + XMLDesc for SECONDS; we print calls per second (one call =
one RPC round trip), the ratio, and each daemon's RSS idle and under load.
Run with Debian's /usr/bin/python3 (it has the libvirt module).
"""
import os
import sys
import threading
import time

import libvirt

CONNS = int(os.environ.get("CONNS", "4"))
SECONDS = float(os.environ.get("SECONDS", "5"))
DOMAIN = "bench-vm"
XML = """<domain type='qemu'><name>%s</name><memory unit='MiB'>64</memory>
<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='/var/tmp/bench-vm.qcow2'/><target dev='vda' bus='virtio'/></disk></devices>
</domain>""" % DOMAIN


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run(uri, pid):
    setup = libvirt.open(uri)
    try:
        setup.lookupByName(DOMAIN).undefine()
    except libvirt.libvirtError:
        pass
    setup.defineXML(XML)
    idle = rss_kib(pid)
    counts = [0] * CONNS
    peak = [idle]
    stop = time.monotonic() + SECONDS

    def worker(i):
        conn = libvirt.open(uri)
        n = 0
        while time.monotonic() < stop:
            conn.lookupByName(DOMAIN).XMLDesc(0)
            n += 2
        counts[i] = n
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONNS)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak[0] = max(peak[0], rss_kib(pid))
        time.sleep(0.2)
    for t in threads:
        t.join()
    setup.lookupByName(DOMAIN).undefine()
    setup.close()
    return sum(counts) / SECONDS, idle, peak[0]


def main():
    # The lookup before (re)defining the bench domain fails by design; keep
    # libvirt from printing that.
    libvirt.registerErrorHandler(lambda *args: None, None)
    targets = []
    for arg in sys.argv[1:]:
        name, uri, pid = arg.split(",", 2)
        targets.append((name, uri, int(pid)))
    results = {}
    print("workload: %d connections x lookupByName+XMLDesc for %.0f s" % (CONNS, SECONDS))
    for name, uri, pid in targets:
        rate, idle, peak = run(uri, pid)
        results[name] = rate
        print("%-12s %10.0f calls/s   RSS idle %7d KiB   loaded %7d KiB" % (name, rate, idle, peak))
    if "libvirtd" in results and "virtbackupd" in results:
        print("ratio virtbackupd/libvirtd: %.2fx" % (results["virtbackupd"] / results["libvirtd"]))


if __name__ == "__main__":
    main()
