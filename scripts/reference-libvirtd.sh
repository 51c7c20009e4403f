#!/usr/bin/env bash
# Starts the real libvirtd 9.0 beside virtbackupd, as the yardstick for
# benchmarks and comparisons: root, no security driver, no cgroups.
# Idempotent; `reference-libvirtd.sh stop` stops it again.
set -euo pipefail

if [ "${1:-}" = stop ]; then
  pkill -x libvirtd 2>/dev/null || true
  pkill -x virtlogd 2>/dev/null || true
  exit 0
fi

[ "$(id -u)" = 0 ] || { echo "the reference libvirtd runs as root" >&2; exit 1; }
if ! command -v libvirtd >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    libvirt-daemon libvirt-daemon-driver-qemu >/dev/null
fi
id libvirt-qemu >/dev/null 2>&1 || useradd -r -M -s /usr/sbin/nologin libvirt-qemu
conf=/etc/libvirt/qemu.conf
want='user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"'
if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
  [ -f "$conf" ] && [ ! -f "$conf.orig" ] && cp "$conf" "$conf.orig"
  printf '%s\n' "$want" > "$conf"
fi
mkdir -p /var/log/libvirt/qemu /var/lib/libvirt /run/libvirt
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
for _ in $(seq 50); do [ -S /run/libvirt/libvirt-sock ] && break; sleep 0.1; done
[ -S /run/libvirt/libvirt-sock ] || { echo "libvirtd did not start" >&2; exit 1; }
