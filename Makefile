# The two commands a new user runs: `make run` and `make test`.

CARGO ?= cargo
VAR   := $(CURDIR)/var
SOCK  := $(VAR)/run/libvirt-sock
BIN   := target/release/virtbackupd
URI   := qemu+unix:///system?socket=$(SOCK)

.PHONY: deps build release run stop test crash-test check bench bench-tls install deb

deps:
	@scripts/install-deps.sh

build: deps
	$(CARGO) build --release --locked

## The release binary alone, without installing the test tools.
release:
	$(CARGO) build --release --locked

## Starts the daemon in the background with its state under ./var.
run: build stop
	@mkdir -p $(VAR)/run $(VAR)/lib
	@$(BIN) --listen $(SOCK) --listen-ro $(SOCK)-ro --state-dir $(VAR)/lib --run-dir $(VAR)/run \
		>>$(VAR)/virtbackupd.log 2>&1 & echo $$! > $(VAR)/virtbackupd.pid
	@for i in $$(seq 50); do [ -S $(SOCK) ] && break; sleep 0.1; done
	@[ -S $(SOCK) ] || { echo "virtbackupd did not start; see $(VAR)/virtbackupd.log"; exit 1; }
	@echo "virtbackupd is running (pid $$(cat $(VAR)/virtbackupd.pid), log $(VAR)/virtbackupd.log)."
	@echo "Use it with:"
	@echo "  virsh -c '$(URI)' list --all"
	@echo "Stop it with: make stop"

stop:
	@if [ -f $(VAR)/virtbackupd.pid ]; then kill $$(cat $(VAR)/virtbackupd.pid) 2>/dev/null || true; rm -f $(VAR)/virtbackupd.pid; fi

## Lints, unit tests and integration tests (real daemon, QEMU, virsh).
test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings
	$(CARGO) test --locked -- --test-threads=2

## Every long operation crashed at every step (daemon killed, QEMU killed,
## disk full), then the invariants checked; `make test` runs a part of it.
crash-test: deps
	$(CARGO) test --locked --test crash -- --include-ignored --test-threads=2 --nocapture

## libvirtd vs virtbackupd, same client workload (needs root for libvirtd).
bench: build
	scripts/bench.sh

## libvirtd vs virtbackupd over qemu+tls (calls/s and the ratio; root).
bench-tls: build
	scripts/bench-tls.sh

# --- Installing as a system service -------------------------------------

PREFIX     ?= /usr/local
DESTDIR    ?=
SBINDIR    := $(PREFIX)/sbin
UNITDIR    := $(PREFIX)/lib/systemd/system
DOCDIR     := $(PREFIX)/share/doc/virtbackupd
CONFDIR    := /etc/virtbackupd
VERSION    := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
ARCH       := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB        := target/virtbackupd_$(VERSION)_$(ARCH).deb

## The binary, the systemd unit, the configuration file (kept if it
## exists) and the README, under $(DESTDIR)$(PREFIX). Then, on the host:
## systemctl daemon-reload && systemctl enable --now virtbackupd
install: release
	install -D -m 0755 $(BIN) $(DESTDIR)$(SBINDIR)/virtbackupd
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|@SBINDIR@|$(SBINDIR)|g' packaging/virtbackupd.service.in > $(DESTDIR)$(UNITDIR)/virtbackupd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/virtbackupd.service
	@if [ -e $(DESTDIR)$(CONFDIR)/virtbackupd.conf ]; then \
		echo "keeping $(DESTDIR)$(CONFDIR)/virtbackupd.conf"; \
	else \
		install -D -m 0644 packaging/virtbackupd.conf $(DESTDIR)$(CONFDIR)/virtbackupd.conf; \
	fi
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md

## A Debian package under target/, built with dpkg-deb:
## apt-get install ./target/virtbackupd_*.deb
deb: release
	rm -rf target/deb
	$(MAKE) --no-print-directory install DESTDIR=$(CURDIR)/target/deb PREFIX=/usr
	strip --strip-debug target/deb/usr/sbin/virtbackupd
	install -d target/deb/DEBIAN
	install -m 0644 packaging/debian/conffiles target/deb/DEBIAN/conffiles
	install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm target/deb/DEBIAN/
	sed -e 's|@VERSION@|$(VERSION)|' -e 's|@ARCH@|$(ARCH)|' \
		-e "s|@SIZE@|$$(du -sk target/deb --exclude=DEBIAN | cut -f1)|" \
		packaging/debian/control.in > target/deb/DEBIAN/control
	dpkg-deb --root-owner-group -Zxz --build target/deb $(DEB)
	@echo "built $(DEB)"
