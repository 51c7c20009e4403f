#!/usr/bin/env bash
# Pull-mode backups with virtnbdbackup, libvirtd against virtbackupd.
#
# For each daemon: a fresh 2 GiB qcow2 holding $DATA (1G) of data, a
# one-disk domain on it, then
#   full: virtnbdbackup -l full (pull backup over NBD, checkpoint virtnbdbackup.0)
#   inc:  after $WRITES (64M) of guest writes (HMP qemu-io), virtnbdbackup -l inc
# each timed from start to exit of virtnbdbackup (the whole client run:
# connect, backup-begin, NBD read, abort, saving its files). Prints seconds
# and the ratio libvirtd/virtbackupd (> 1: virtbackupd faster).
#
#   LIBVIRTD_URI     the real libvirtd (default qemu:///system)
#   VIRTBACKUPD_URI  virtbackupd, e.g. qemu+unix:///system?socket=/run/virtbackupd/libvirt-sock
#                    (optional: skipped with a message when unset or not answering)
#   BENCH_DIR (/var/tmp/bench-pull), DATA (1G), WRITES (64M), BENCH_DOM (prbench-pull)
#
# Needs virtnbdbackup (Debian package) and qemu-img/qemu-io. Root, like the
# reference libvirtd (scripts/reference-libvirtd.sh starts it).
set -euo pipefail

LIBVIRTD_URI=${LIBVIRTD_URI:-qemu:///system}
VIRTBACKUPD_URI=${VIRTBACKUPD_URI:-}
DIR=${BENCH_DIR:-/var/tmp/bench-pull}
DATA=${DATA:-1G}
WRITES=${WRITES:-64M}
DOM=${BENCH_DOM:-prbench-pull}

command -v virtnbdbackup >/dev/null || { echo "virtnbdbackup not installed" >&2; exit 1; }

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# virtnbdbackup insists on --user/--password for any qemu+... URI (it then
# uses openAuth; with auth none the credentials are never asked for).
auth_args() { case $1 in qemu+*) echo "--user bench --password bench" ;; esac; }

cleanup() { # cleanup URI
  if virsh -q -c "$1" domstate "$DOM" >/dev/null 2>&1; then
    virsh -q -c "$1" destroy "$DOM" >/dev/null 2>&1 || true
    virsh -q -c "$1" undefine "$DOM" --checkpoints-metadata >/dev/null 2>&1 || true
  fi
  rm -rf "$DIR"
}

run() { # run NAME URI: prints "NAME FULL INC" on stdout
  local name=$1 uri=$2 out t0 t1 t2 t3
  cleanup "$uri"
  mkdir -p "$DIR/scratch"
  qemu-img create -q -f qcow2 "$DIR/src.qcow2" 2G
  qemu-io -f qcow2 -c "write -P 0x5a 0 $DATA" "$DIR/src.qcow2" >/dev/null
  cat >"$DIR/dom.xml" <<EOF
<domain type='qemu'><name>$DOM</name><memory unit='MiB'>64</memory>
<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='$DIR/src.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>
EOF
  virsh -q -c "$uri" define "$DIR/dom.xml" >/dev/null
  virsh -q -c "$uri" start "$DOM" >/dev/null
  out=$DIR/out-$name
  # shellcheck disable=SC2046
  t0=$(now)
  virtnbdbackup -n -d "$DOM" -l full -o "$out" -U "$uri" $(auth_args "$uri") \
    -S "$DIR/scratch" -f "$DIR/nbd.sock" >"$DIR/$name-full.log" 2>&1 \
    || { echo "$name: full backup failed, see $DIR/$name-full.log" >&2; tail -5 "$DIR/$name-full.log" >&2; return 1; }
  t1=$(now)
  virsh -q -c "$uri" qemu-monitor-command "$DOM" --hmp \
    "qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"write -P 0x33 0 $WRITES\"" >/dev/null
  t2=$(now)
  # shellcheck disable=SC2046
  virtnbdbackup -n -d "$DOM" -l inc -o "$out" -U "$uri" $(auth_args "$uri") \
    -S "$DIR/scratch" -f "$DIR/nbd.sock" >"$DIR/$name-inc.log" 2>&1 \
    || { echo "$name: incremental backup failed, see $DIR/$name-inc.log" >&2; tail -5 "$DIR/$name-inc.log" >&2; return 1; }
  t3=$(now)
  echo "$name $(secs "$t0" "$t1") $(secs "$t2" "$t3")"
  cleanup "$uri"
}

answers() { virsh -q -c "$1" version >/dev/null 2>&1; }

# Alternating runs, best of $REPEAT each: single runs spread by a second.
REPEAT=${REPEAT:-3}
daemons=()
if answers "$LIBVIRTD_URI"; then
  daemons+=("libvirtd $LIBVIRTD_URI")
else
  echo "libvirtd at $LIBVIRTD_URI does not answer: skipped" >&2
fi
if [ -z "$VIRTBACKUPD_URI" ]; then
  echo "VIRTBACKUPD_URI not set: virtbackupd skipped" >&2
elif answers "$VIRTBACKUPD_URI"; then
  daemons+=("virtbackupd $VIRTBACKUPD_URI")
else
  echo "virtbackupd at $VIRTBACKUPD_URI does not answer: skipped" >&2
fi
runs=()
for _ in $(seq "$REPEAT"); do
  for d in "${daemons[@]}"; do
    # shellcheck disable=SC2086
    if r=$(run $d); then runs+=("$r"); fi
  done
done
best() { # best NAME: "NAME FULL INC", the minimum of each over the runs
  printf '%s\n' "${runs[@]}" | awk -v n="$1" '$1 == n {
      if (!seen || $2 < f) f = $2; if (!seen || $3 < i) i = $3; seen = 1 }
    END { if (seen) print n, f, i }'
}
results=()
for d in "${daemons[@]}"; do
  r=$(best "${d%% *}")
  [ -n "$r" ] && results+=("$r")
done

echo "pull backups with virtnbdbackup, $DATA of data in a 2 GiB qcow2, inc after $WRITES of writes, best of $REPEAT"
printf '%-12s %10s %10s\n' daemon full_s inc_s
for r in "${results[@]}"; do
  # shellcheck disable=SC2086
  printf '%-12s %10s %10s\n' $r
done
if [ "${#results[@]}" = 2 ]; then
  read -r _ lf li <<<"${results[0]}"
  read -r _ vf vi <<<"${results[1]}"
  awk -v lf="$lf" -v li="$li" -v vf="$vf" -v vi="$vi" \
    'BEGIN { printf "ratio libvirtd/virtbackupd: full %.2f, inc %.2f\n", lf / vf, li / vi }'
fi
