"""Same client workload against libvirtd and virtbackupd, in one run.

Each of CONNS threads opens its own connection and loops over
lookupByName + XMLDesc for SECONDS; we print calls per second (one call =
one RPC round trip), the daemon's CPU time per call (utime + stime of the
whole process over the run, divided by the calls; it counts the kernel's
work for the daemon's sockets and wake-ups too), the latency p50/p99 of a
call as the client sees it, the ratio, and each daemon's RSS idle and
under load.
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


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(uri, pid):
    setup = libvirt.open(uri)
    try:
        setup.lookupByName(DOMAIN).undefine()
    except libvirt.libvirtError:
        pass
    setup.defineXML(XML)
    idle = rss_kib(pid)
    counts = [0] * CONNS
    samples = [[] for _ in range(CONNS)]
    peak = [idle]
    conns = [libvirt.open(uri) for _ in range(CONNS)]
    stop = time.monotonic() + SECONDS
    cpu = cpu_seconds(pid)

    def worker(i):
        conn = conns[i]
        n = 0
        lat = samples[i]
        clock = time.perf_counter
        while time.monotonic() < stop:
            t0 = clock()
            dom = conn.lookupByName(DOMAIN)
            t1 = clock()
            dom.XMLDesc(0)
            lat.append(t1 - t0)
            lat.append(clock() - t1)
            n += 2
        counts[i] = n

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONNS)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak[0] = max(peak[0], rss_kib(pid))
        time.sleep(0.2)
    for t in threads:
        t.join()
    cpu = cpu_seconds(pid) - cpu
    for conn in conns:
        conn.close()
    setup.lookupByName(DOMAIN).undefine()
    setup.close()
    lat = sorted(x for per in samples for x in per)
    calls = sum(counts)
    return {"rate": calls / SECONDS, "idle": idle, "peak": peak[0],
            "cpu_us": cpu / calls * 1e6, "p50": lat[len(lat) // 2] * 1e6,
            "p99": lat[int(len(lat) * 0.99)] * 1e6}


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
        r = run(uri, pid)
        results[name] = r
        print("%-12s %8.0f calls/s  CPU %5.1f us/call  p50 %5.0f us  p99 %6.0f us   "
              "RSS idle %7d KiB  loaded %7d KiB"
              % (name, r["rate"], r["cpu_us"], r["p50"], r["p99"], r["idle"], r["peak"]))
    if "libvirtd" in results and "virtbackupd" in results:
        lv, vb = results["libvirtd"], results["virtbackupd"]
        print("ratio virtbackupd/libvirtd: %.2fx calls/s, %.2fx less CPU per call"
              % (vb["rate"] / lv["rate"], lv["cpu_us"] / vb["cpu_us"]))


if __name__ == "__main__":
    main()
