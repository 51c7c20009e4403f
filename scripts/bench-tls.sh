#!/usr/bin/env bash
# The client loop of scripts/bench.py (CONNS connections looping over
# lookupByName + XMLDesc) over qemu+tls://localhost, against libvirtd 9.0
# and virtbackupd in one run, with the same throw-away PKI
# (scripts/make-pki.sh): calls/s for each and the ratio.
#
# Needs root: libvirtd runs with --listen and a TLS configuration of its
# own, so the reference libvirtd (scripts/reference-libvirtd.sh) is
# stopped first and this one stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-tls needs root (libvirtd)" >&2; exit 1; }
cargo build --release --locked -q
qemu-img create -q -f qcow2 /var/tmp/bench-vm.qcow2 16M

dir=$(mktemp -d /tmp/vbd-bench-tls.XXXXXX)
scripts/make-pki.sh "$dir/pki"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

vbd_port=16614
lib_port=16613
./target/release/virtbackupd --listen "$dir/sock" --listen-ro "$dir/sock-ro" \
  --state-dir "$dir/state" --run-dir "$dir/run" \
  --listen-tls "127.0.0.1:$vbd_port" --tls-ca "$dir/pki/cacert.pem" \
  --tls-cert "$dir/pki/servercert.pem" --tls-key "$dir/pki/serverkey.pem" 2>"$dir/vbd.log" &
vbd=$!
pids+=("$vbd")
client="pkipath=$dir/pki/client"
targets=()

# libvirtd: the reference setup (qemu.conf), then our own instance with
# TLS on 127.0.0.1 (libvirtd's own checks: client certificate required).
if scripts/reference-libvirtd.sh >/dev/null; then
  scripts/reference-libvirtd.sh stop
  for _ in $(seq 50); do pgrep -x libvirtd >/dev/null || break; sleep 0.1; done
  cat > "$dir/libvirtd.conf" <<CONF
listen_tls = 1
listen_tcp = 0
listen_addr = "127.0.0.1"
tls_port = "$lib_port"
ca_file = "$dir/pki/cacert.pem"
cert_file = "$dir/pki/servercert.pem"
key_file = "$dir/pki/serverkey.pem"
CONF
  libvirtd --listen -f "$dir/libvirtd.conf" 2>"$dir/libvirtd.log" &
  lib=$!
  pids+=("$lib")
  for _ in $(seq 100); do
    virsh -q -c "qemu+tls://localhost:$lib_port/system?$client" uri >/dev/null 2>&1 && break
    sleep 0.1
  done
  targets+=("libvirtd,qemu+tls://localhost:$lib_port/system?$client,$lib")
else
  echo "libvirtd not available: measuring virtbackupd only" >&2
fi
for _ in $(seq 100); do
  virsh -q -c "qemu+tls://localhost:$vbd_port/system?$client" uri >/dev/null 2>&1 && break
  sleep 0.1
done
targets+=("virtbackupd,qemu+tls://localhost:$vbd_port/system?$client,$vbd")
echo "over qemu+tls://localhost (TLS 1.3 where both ends have it, client certificates)"
/usr/bin/python3 scripts/bench.py "${targets[@]}"
