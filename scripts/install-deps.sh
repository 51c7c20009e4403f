#!/usr/bin/env bash
# Installs the Debian 12 packages virtbackupd needs to build, run and test,
# skipping what is already there. Needs root (or sudo) only when something
# is missing.
set -euo pipefail

# The machine image may carry a newer qemu-utils from backports; QEMU 7.2
# (the reference) needs the matching bookworm one, so name the release.
packages=(qemu-system-x86 qemu-utils/bookworm qemu-block-extra/bookworm
          libvirt-clients python3-libvirt python3-libnbd virtnbdbackup openssl
          mount golang-go golang-github-digitalocean-go-libvirt-dev python3-venv
          openssh-server netcat-openbsd iproute2 libvirt-daemon)

need_install=0
command -v qemu-system-x86_64 >/dev/null || need_install=1
command -v virsh >/dev/null || need_install=1
command -v virtnbdbackup >/dev/null || need_install=1
command -v openssl >/dev/null || need_install=1
# The system-service tests: a real sshd, `nc -U` and virt-ssh-helper (in
# libvirt-daemon; its libvirtd is not started) on the ssh side, network
# namespaces (ip) for virtnbdbackup's remote mode.
command -v /usr/sbin/sshd >/dev/null || need_install=1
command -v nc >/dev/null || need_install=1
command -v ip >/dev/null || need_install=1
command -v virt-ssh-helper >/dev/null || need_install=1
# losetup: the tests put backup targets on loop devices.
command -v losetup >/dev/null || need_install=1
# tests/go_libvirt.rs builds a client with Debian's go-libvirt, offline.
command -v go >/dev/null || need_install=1
[ -d /usr/share/gocode/src/github.com/digitalocean/go-libvirt ] || need_install=1
/usr/bin/python3 -c 'import libvirt, nbd' 2>/dev/null || need_install=1
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need_install=1
case "$(qemu-img --version 2>/dev/null | head -n1)" in
  *"version 7.2"*) ;;
  *) need_install=1 ;;
esac

if [ "$need_install" = 1 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --allow-downgrades \
    --no-install-recommends "${packages[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "cargo is missing: install Rust (rustup) first" >&2; exit 1; }

# tests/blockjobs.rs runs virt-backup (PyPI) unchanged: a venv over
# Debian's python3 (for python3-libvirt), made once under target/.
venv="$(dirname "$0")/../target/virt-backup-venv"
if [ ! -x "$venv/bin/virt-backup" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install -q virt-backup==0.5.6
fi
