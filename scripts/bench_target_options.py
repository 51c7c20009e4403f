"""QEMU alone (no daemon): how long `blockdev-backup` (sync full) of a disk
holding 1 GiB takes into a fresh qcow2 target created with various options,
next to `qemu-img convert` of the same image: the experiment behind
creating full push backup targets with `preallocation: metadata`
(issue 16). The source is made first:

    mkdir -p /var/tmp/xp && qemu-img create -f qcow2 /var/tmp/xp/src.qcow2 2G
    qemu-io -f qcow2 -c "write -P 0x5a 0 1G" /var/tmp/xp/src.qcow2

Run with /usr/bin/python3 scripts/bench_target_options.py (BENCH_DIR to
move it; REPS rounds, default 2).

CLOSE=1 measures instead the job plus the target's close (blockdev-del,
where QEMU flushes it), into a target with its metadata preallocated,
with and without an early write-back (a thread calling fdatasync on the
target while the job copies, as the daemon does: src/qemu/writeback.rs).
"""
import json, os, socket, subprocess, sys, time
D=os.environ.get("BENCH_DIR", "/var/tmp/xp")
def qmp_conn(path):
    s=socket.socket(socket.AF_UNIX)
    for _ in range(200):
        try: s.connect(path); break
        except OSError: time.sleep(0.05)
    f=s.makefile("rw"); json.loads(f.readline())
    def call(name,args=None):
        m={"execute":name}
        if args is not None: m["arguments"]=args
        f.write(json.dumps(m)+"\n"); f.flush()
        while True:
            r=json.loads(f.readline())
            if "event" in r:
                if r["event"]=="JOB_STATUS_CHANGE" and r["data"]["status"]=="concluded": call.done=True
                continue
            if "error" in r: raise RuntimeError(r)
            return r["return"]
    call.done=False
    def wait():
        while not call.done:
            r=json.loads(f.readline())
            if r.get("event")=="JOB_STATUS_CHANGE" and r["data"]["status"]=="concluded": call.done=True
    call.wait=wait
    call("qmp_capabilities"); return call
def start(create, target_opts={}):
    """A fresh target made with `create` options, and a paused QEMU with the
    source as f0 and the target as tf: (target path, process, qmp)."""
    tgt=os.path.join(D,"t.qcow2")
    if os.path.exists(tgt): os.unlink(tgt)
    subprocess.run(["qemu-img","create","-q","-f","qcow2"]+create+[tgt,"2G"],check=True)
    sock=os.path.join(D,"qmp.sock")
    if os.path.exists(sock): os.unlink(sock)
    p=subprocess.Popen(["qemu-system-x86_64","-S","-nodefaults","-display","none","-machine","pc","-accel","tcg","-m","64",
      "-blockdev",json.dumps({"driver":"file","filename":D+"/src.qcow2","node-name":"s0"}),
      "-blockdev",json.dumps({"driver":"qcow2","file":"s0","node-name":"f0"}),
      "-device","virtio-blk-pci,drive=f0,id=d0","-qmp","unix:%s,server=on,wait=off"%sock])
    q=qmp_conn(sock)
    fopts={"driver":"file","filename":tgt,"node-name":"ts"}; fopts.update(target_opts)
    q("blockdev-add",fopts)
    q("blockdev-add",{"driver":"qcow2","file":"ts","node-name":"tf"})
    return tgt, p, q
def run(label, xperf, target_opts={}, create=[]):
    _, p, q = start(create, target_opts)
    args={"device":"f0","target":"tf","sync":"full","job-id":"j","auto-dismiss":True}
    if xperf: args["x-perf"]=xperf
    t=time.time(); q("blockdev-backup",args); q.wait(); el=time.time()-t
    q("quit"); p.wait()
    print("%-40s %.3f s"%(label,el),flush=True)
def run_close(label, early):
    import threading
    tgt, p, q = start(["-o","preallocation=metadata"])
    stop=[]
    def sync_loop():
        fd=os.open(tgt,os.O_RDONLY)
        while not stop:
            began=time.monotonic(); os.fdatasync(fd)
            time.sleep(max(0.0, 0.02-(time.monotonic()-began)))
        os.close(fd)
    t=time.time()
    q("blockdev-backup",{"device":"f0","target":"tf","sync":"full","job-id":"j","auto-dismiss":True,
                         "x-perf":{"use-copy-range":True}})
    th=threading.Thread(target=sync_loop) if early else None
    if th: th.start()
    q.wait(); job=time.time()-t
    stop.append(1)
    if th: th.join()
    q("blockdev-del",{"node-name":"tf"}); q("blockdev-del",{"node-name":"ts"}); total=time.time()-t
    q("quit"); p.wait()
    print("%-40s job %.3f s, with the close %.3f s"%(label,job,total),flush=True)
if os.environ.get("CLOSE"):
    for rep in range(int(os.environ.get("REPS", "2"))):
        run_close("prealloc=metadata", False)
        run_close("prealloc=metadata, early write-back", True)
    sys.exit(0)
for rep in range(int(os.environ.get("REPS", "2"))):
    run("copy-range",{"use-copy-range":True})
    run("copy-range prealloc=metadata",{"use-copy-range":True},{},["-o","preallocation=metadata"])
    run("copy-range cluster 2M",{"use-copy-range":True},{},["-o","cluster_size=2M"])
    run("copy-range lazy_refcounts",{"use-copy-range":True},{},["-o","lazy_refcounts=on"])
    run("copy-range prealloc=falloc",{"use-copy-range":True},{},["-o","preallocation=falloc"])
    run("copy-range chunk64M cluster 2M",{"use-copy-range":True,"max-chunk":64<<20},{},["-o","cluster_size=2M"])
