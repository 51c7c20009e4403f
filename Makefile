# The two commands a new user runs: `make run` and `make test`.

CARGO ?= cargo
VAR   := $(CURDIR)/var
SOCK  := $(VAR)/run/libvirt-sock
BIN   := target/release/virtbackupd
URI   := qemu+unix:///system?socket=$(SOCK)

.PHONY: deps build run stop test crash-test check bench

deps:
	@scripts/install-deps.sh

build: deps
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
