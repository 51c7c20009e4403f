"""Many push backups at once, libvirtd against virtbackupd in one run.

For each daemon (name,uri arguments): VMS (8) running one-disk domains,
each on its own 2 GiB qcow2 holding DATA (256M), and one more, idle. Then
all VMS start a full push backup at the same moment (one connection and
thread each, released together), while another process loops over
`dominfo` (virDomainGetInfo, one RPC) of the idle domain. Prints each
job's time, the aggregate throughput (data of all disks / time until the
last job ended), and the dominfo latency p50/p99 before and while the
backups run, with the ratio (the issue asks for at most 2x).
Run with Debian's /usr/bin/python3 (it has the libvirt module).
"""
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

import libvirt

DIR = os.environ.get("BENCH_DIR", "/var/tmp/bench-conc")
VMS = int(os.environ.get("VMS", "8"))
DATA = os.environ.get("DATA", "256M")
IDLE = "bench-c-idle"
XML = """<domain type='qemu'><name>%s</name><memory unit='MiB'>64</memory>
<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='%s'/><target dev='vda' bus='virtio'/></disk></devices></domain>"""


def size_bytes(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def names():
    return ["bench-c%d" % i for i in range(VMS)]


def clean(conn):
    for name in names() + [IDLE]:
        try:
            old = conn.lookupByName(name)
            if old.isActive():
                old.destroy()
            old.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        except libvirt.libvirtError:
            pass


def setup(conn):
    clean(conn)
    shutil.rmtree(DIR, ignore_errors=True)
    os.makedirs(DIR)
    for name in names() + [IDLE]:
        image = os.path.join(DIR, name + ".qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "2G"], check=True)
        if name != IDLE:
            subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 %s" % DATA, image],
                           check=True, stdout=subprocess.DEVNULL)
        conn.defineXML(XML % (name, image)).create()
    time.sleep(float(os.environ.get("SETTLE", "3")))  # the firmware of 9 guests boots and halts


def latency_loop(uri, stop, out):
    """In its own process (no GIL shared with the backup threads)."""
    libvirt.registerErrorHandler(lambda *args: None, None)
    conn = libvirt.open(uri)
    dom = conn.lookupByName(IDLE)
    samples = []
    while not stop.is_set():
        start = time.perf_counter()
        dom.info()
        samples.append(time.perf_counter() - start)
    conn.close()
    out.put(samples)


def latencies(uri, seconds=None, during=None):
    ctx = multiprocessing.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=latency_loop, args=(uri, stop, out))
    proc.start()
    time.sleep(0.5)  # connected and looping
    if during:
        result = during()
    else:
        time.sleep(seconds)
        result = None
    stop.set()
    try:
        samples = sorted(out.get(timeout=30))
    except Exception:  # the loop died (its daemon went away): no figures
        samples = [float("nan")]
    proc.join()
    return result, samples


def pct(samples, p):
    return samples[min(len(samples) - 1, int(len(samples) * p))] * 1e6


def backups(uri):
    start_line = threading.Barrier(VMS + 1)
    times = [None] * VMS

    def one(i, name):
        conn = libvirt.open(uri)
        dom = conn.lookupByName(name)
        xml = ("<domainbackup mode='push'><disks><disk name='vda' type='file'>"
               "<target file='%s'/><driver type='qcow2'/></disk></disks></domainbackup>"
               % os.path.join(DIR, name + ".bak.qcow2"))
        start_line.wait()
        start = time.monotonic()
        dom.backupBegin(xml, None, 0)
        while dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
            time.sleep(0.01)
        times[i] = time.monotonic() - start
        if not dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED).get("success"):
            times[i] = float("nan")
        conn.close()

    threads = [threading.Thread(target=one, args=(i, n)) for i, n in enumerate(names())]
    for t in threads:
        t.start()
    start_line.wait()
    start = time.monotonic()
    for t in threads:
        t.join()
    return time.monotonic() - start, times


def run(uri):
    conn = libvirt.open(uri)
    setup(conn)
    _, before = latencies(uri, seconds=2)
    (wall, times), during = latencies(uri, during=lambda: backups(uri))
    clean(conn)
    conn.close()
    shutil.rmtree(DIR, ignore_errors=True)
    return wall, times, before, during


def main():
    libvirt.registerErrorHandler(lambda *args: None, None)
    total = VMS * size_bytes(DATA)
    print("%d domains, each a full push backup of %s of data at the same moment; "
          "dominfo loop on another domain" % (VMS, DATA))
    for arg in sys.argv[1:]:
        name, uri = arg.split(",", 1)
        wall, times, before, during = run(uri)
        failed = sum(1 for t in times if t != t)
        print("%-12s all done in %.2f s, %.0f MiB/s aggregate; jobs %s s (median %.2f)%s"
              % (name, wall, total / wall / (1 << 20), " ".join("%.2f" % t for t in times),
                 statistics.median(times), ", %d FAILED" % failed if failed else ""))
        print("%-12s dominfo p50/p99 idle %.0f/%.0f us, during backups %.0f/%.0f us (p99 %.2fx)"
              % (name, pct(before, 0.5), pct(before, 0.99), pct(during, 0.5), pct(during, 0.99),
                 pct(during, 0.99) / pct(before, 0.99)))


if __name__ == "__main__":
    main()
