# edgeprune: `make demo` and `make test` set everything up on a fresh Debian machine, then run.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_DIR := build/demo

.PHONY: setup apt venv demo test clean qemu-plugin

setup: apt venv

# Debian packages for the Cortex-M and arm64 toolchains and emulators; skipped when present.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(STAMP)

# The TCG plugin that counts instructions under QEMU (bench and device tests). Its header comes
# from Debian's qemu source package, fetched once into build/ (an install step, not run time).
QEMU_PLUGIN := build/qemu-plugin/libinsncount.so
qemu-plugin: $(QEMU_PLUGIN)
$(QEMU_PLUGIN): bench/qemu_plugin/insn_count.c | apt
	bench/qemu_plugin/fetch_header.sh build/qemu-plugin
	gcc -O2 -shared -fPIC -Wall -Wextra -Werror -I build/qemu-plugin $< -o $@

# Re-runs only when pyproject.toml changes. torch==2.13.0 resolves to the CPU wheel on disk.
$(STAMP): pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

# Train the digits CNN, prune it to 80% and compile it (C + firmware) for the Cortex-M7, flash it
# to QEMU, run the test split through the emulated device (bit-exact with TFLite Micro), measure it.
demo: setup $(QEMU_PLUGIN)
	$(VENV)/bin/edgeprune example digits --out $(DEMO_DIR)/model.pt
	$(VENV)/bin/edgeprune compile $(DEMO_DIR)/model.pt --target cortex-m7 --data digits --sparsity 0.8 --out $(DEMO_DIR)/build
	$(VENV)/bin/edgeprune flash $(DEMO_DIR)/build
	$(VENV)/bin/edgeprune run $(DEMO_DIR)/build --data digits
	$(VENV)/bin/edgeprune bench $(DEMO_DIR)/build
	$(VENV)/bin/edgeprune shifted-digits --shift severe --out $(DEMO_DIR)/shift
	$(VENV)/bin/edgeprune adapt $(DEMO_DIR)/build --data $(DEMO_DIR)/shift/severe_adapt.npz \
	  --eval-data $(DEMO_DIR)/shift/severe_eval.npz --budget-ram 10% --selector neq-explore --neq-history int8 \
	  --epochs 10 --seed 0 --device qemu

test: setup $(QEMU_PLUGIN)
	$(PY) -m pytest -q

# Exact instruction counts of the kernels on five reference layers under QEMU (bench/README.md);
# pass options with BENCH_ARGS, e.g. make bench-kernels BENCH_ARGS="--quick --layers a,d".
.PHONY: bench-kernels
bench-kernels: setup $(QEMU_PLUGIN)
	$(PY) bench/kernels/run.py $(BENCH_ARGS)

# The four MLPerf Tiny models through edgeprune, dense and at 50/70/90% sparsity, against TFLite
# Micro's minimal arena (bench/README.md); cached under build/bench-models/, e.g.
# make bench-models BENCH_ARGS="--models ad,kws --sparsities 0,0.9".
.PHONY: bench-models
bench-models: setup
	$(PY) bench/models/run.py $(BENCH_ARGS)

# Budgeted on-device adaptation (issue 6 item 5): every selector at 5-40% of full's training RAM on
# two shifts of the digits held-out split, 20 seeds (bench/README.md); cached under build/bench-adapt/,
# e.g. make bench-adapt BENCH_ARGS="--quick".
.PHONY: bench-adapt
bench-adapt: setup
	$(PY) bench/adapt/run.py $(BENCH_ARGS)

clean:
	rm -rf build .pytest_cache
