# diffusiond — see README.md.
#   make demo    build, start the daemon on the embedded defaults, run the example job, show the result
#   make test    the test suite (release build: the numeric tests sample; the cluster fault tests
#                in it), then the systemd test; make test-cluster: the cluster fault tests alone
#   make install     the binaries, the systemd unit, /etc/diffusiond/config.yml, the bundles, the
#                    diffusiond user and the spool (docs/service.md); PREFIX, DESTDIR
#   make uninstall   removes what install put in place, except the config, the spool and the state
#   make bench   benchmarks -> BENCHMARKS.md, docs/bench/ (under 60 minutes; make bench-quick: under 10)
#   make models  retrain every bundle in models/ and rewrite the fixtures (hours on a CPU)
#   make train   continue training the UNet for TRAIN_SECONDS (resumable); make gamma: its Gamma tables
#   make reliability  crash campaign, load test and a 10-minute fuzzing run (about 40 minutes);
#                    their figures go to docs/reliability/ (README, "Reliability")

SWIFT   ?= swift
PYTHON  ?= /usr/bin/python3
# Swift's default x86-64 target is baseline SSE2; the kernels want AVX2/AVX-512.
# (swiftc's clang importer takes CPU names, not the x86-64-v3/-v4 levels.)
CPU     ?= $(shell grep -q avx512f /proc/cpuinfo 2>/dev/null && echo skylake-avx512 || echo haswell)
SWIFTFLAGS ?= -c release -Xswiftc -target-cpu -Xswiftc $(CPU)

APT_BUILD = libopenblas-dev libdnnl-dev libpng-dev libjpeg-dev libsqlite3-dev
APT_PYTHON = python3-torch python3-numpy python3-scipy
APT_DATA = dataset-fashion-mnist
APT_TOOLS = jq rsync ed e2fsprogs
# The PostgreSQL store's tests start a throwaway server of Debian's postgresql (initdb, pg_ctl);
# the cluster fault tests put it and three workers in network namespaces (ip netns).
APT_TEST = postgresql iproute2

# Installs the Debian packages in $(1) that are missing (as root, or through sudo).
define apt_ensure
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

.PHONY: deps python-deps data-deps tool-deps test-deps build test test-python test-systemd models install uninstall demo
deps:
	$(call apt_ensure,$(APT_BUILD))
python-deps:
	$(call apt_ensure,$(APT_PYTHON))
data-deps:
	$(call apt_ensure,$(APT_DATA))
tool-deps:
	$(call apt_ensure,$(APT_TOOLS))
test-deps:
	$(call apt_ensure,$(APT_TEST))

build: deps
	$(SWIFT) build $(SWIFTFLAGS)

# Serial: the end-to-end tests wait on real processes, and the watchdog tests time
# the daemon's pings; on two cores they must not starve each other.
# The in-process tests run OpenBLAS's kernels of this CPU's tier, as the daemon does (KernelSelection).
BLAS_CORE ?= $(shell scripts/openblas-core.sh)
test: deps python-deps data-deps tool-deps test-deps
	$(if $(BLAS_CORE),OPENBLAS_CORETYPE=$(BLAS_CORE)) $(SWIFT) test $(SWIFTFLAGS) --no-parallel
	@# An image's bits must not depend on its batch under any OpenBLAS kernel family (an AVX2
	@# machine runs Haswell's, whose products round a row by its place in the product).
	for core in Haswell Prescott; do OPENBLAS_CORETYPE=$$core $(SWIFT) test $(SWIFTFLAGS) --no-parallel --filter BatchInvarianceTests || exit 1; done
	$(MAKE) test-python
	$(MAKE) test-systemd

# The cluster fault tests alone (they also run in `make test`): three diffusiond workers and a
# PostgreSQL server as network namespaces (root and `ip netns`; reported as skipped otherwise),
# with SIGKILL, SIGSTOP past the lease, a cut link and a PostgreSQL restart (docs/scale-out.md).
.PHONY: test-cluster
test-cluster: deps test-deps
	$(if $(BLAS_CORE),OPENBLAS_CORETYPE=$(BLAS_CORE)) $(SWIFT) test $(SWIFTFLAGS) --no-parallel --filter ClusterFaultTests

# Installs and runs the service inside a throwaway systemd (Tests/systemd/service-test.sh);
# skips (successfully) where that cannot run: not root, no systemd, no unshare.
# It installs the binaries already built (by `swift test` above, or `make build`
# when there are none): `swift test` and `swift build` compile with different
# flags, and each would rebuild everything the other built.
test-systemd: tool-deps
	@[ -x "$$($(SWIFT) build $(SWIFTFLAGS) --show-bin-path)/diffusiond" ] || $(MAKE) build
	SWIFT="$(SWIFT)" SWIFTFLAGS="$(SWIFTFLAGS)" Tests/systemd/service-test.sh

test-python: python-deps
	cd training && $(PYTHON) -m unittest discover -s tests

# The training toolchain: PyPI's CPU-only PyTorch 2 wheel (no CUDA packages) in a venv;
# bf16 autocast trains the UNet 1.5-2x faster than Debian's torch 1.13 here
# (training/README.md). The tests keep Debian's torch (PYTHON).
TRAIN_VENV   = training/.venv
TRAIN_PYTHON = $(TRAIN_VENV)/bin/python
TORCH_WHEEL ?= torch==2.13.0+cpu
$(TRAIN_PYTHON):
	$(call apt_ensure,python3-venv)
	$(PYTHON) -m venv $(TRAIN_VENV)
	$(TRAIN_PYTHON) -m pip install -q "$(TORCH_WHEEL)" numpy scipy

# Trains (or continues) the UNet for TRAIN_SECONDS, then saves; run again to continue.
# Starts from the committed bundle when training/work/diffusion.pt is absent. EMA
# snapshots go to training/work/snapshots/step-N (evaluate them with scripts/evaluate_model.py).
# One thread: two OpenMP threads on two cores shared with other work stall at every barrier.
TRAIN_SECONDS ?= 3600
TRAIN_ARGS ?= --batch 128 --lr 2e-4 --bf16 --min-snr 5 --snapshot-every 1500 --threads 1
.PHONY: train gamma
train: $(TRAIN_PYTHON) data-deps
	cd training && nice -n 10 ../$(TRAIN_PYTHON) train_diffusion.py --time-limit $(TRAIN_SECONDS) $(TRAIN_ARGS) \
	  $$( [ -e work/diffusion.pt ] || echo --init-from ../models/fashion-mnist )

# Analytic-DPM's Gamma tables of models/fashion-mnist, computed by the engine (resumable:
# run again to continue; GAMMA_IMAGES training images per timestep, both tables).
GAMMA_IMAGES ?= 1024
gamma: build data-deps
	$$($(SWIFT) build $(SWIFTFLAGS) --show-bin-path)/diffusionctl gamma-table models/fashion-mnist --images $(GAMMA_IMAGES)

# The whole training recipe (training/README.md): feature CNN, noisy classifier,
# diffusion UNet, Gamma table, bundles, fixtures, sample grids.
models: python-deps data-deps $(TRAIN_PYTHON)
	cd training && $(PYTHON) train_features.py && cp work/features.pt work/features-10ep.pt
	cd training && $(PYTHON) train_features.py --continue-from work/features-10ep.pt --epochs 4 --lr 4e-4 --seed 1
	cd training && $(PYTHON) train_classifier.py
	cd training && ../$(TRAIN_PYTHON) train_diffusion.py --steps 20000 $(TRAIN_ARGS)
	cd training && $(PYTHON) export_bundles.py
	$(MAKE) gamma
	cd training && $(PYTHON) make_fixtures.py
	cd training && $(PYTHON) make_metrics_fixtures.py
	cd training && $(PYTHON) sample_grid.py --steps 100 --guidance 0
	cd training && $(PYTHON) sample_grid.py --steps 100 --guidance 1
	cd training && $(PYTHON) plot_losses.py

# --- installing as a system service (docs/service.md) -------------------------

PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
DATADIR    ?= $(PREFIX)/share/diffusiond
DOCDIR     ?= $(PREFIX)/share/doc/diffusiond
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
UNITDIR    ?= /etc/systemd/system
CONFDIR    ?= /etc/diffusiond
SPOOLDIR   ?= /var/spool/diffusiond
STATEDIR   ?= /var/lib/diffusiond
SERVICE_USER ?= diffusiond

# The files carry the default layout; other PREFIX/SPOOLDIR/STATEDIR values are
# substituted as they are installed.
INSTALL_SED = sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/usr/local/share/diffusiond|$(DATADIR)|g' \
	-e 's|/usr/local/share/doc/diffusiond|$(DOCDIR)|g' \
	-e 's|/etc/diffusiond/|$(CONFDIR)/|g' -e 's|/var/spool/diffusiond|$(SPOOLDIR)|g' \
	-e 's|/var/lib/diffusiond|$(STATEDIR)|g'

# Run as root. With DESTDIR (packaging) nothing outside DESTDIR is touched: no
# user, no ownership, no systemctl. NO_BUILD=1 installs the binaries as built.
install: $(if $(NO_BUILD),,build)
	@bin=$$($(SWIFT) build $(SWIFTFLAGS) --show-bin-path) && \
	install -d -m 0755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(CONFDIR) \
	  $(DESTDIR)$(DATADIR)/models $(DESTDIR)$(SYSUSERSDIR) && \
	install -m 0755 $$bin/diffusiond $$bin/diffusionctl $(DESTDIR)$(BINDIR)/ && \
	echo "installed $(DESTDIR)$(BINDIR)/diffusiond, $(DESTDIR)$(BINDIR)/diffusionctl"
	$(INSTALL_SED) systemd/diffusiond.service | install -m 0644 /dev/stdin $(DESTDIR)$(UNITDIR)/diffusiond.service
	$(INSTALL_SED) systemd/diffusiond.sysusers | install -m 0644 /dev/stdin $(DESTDIR)$(SYSUSERSDIR)/diffusiond.conf
	install -d -m 0755 $(DESTDIR)$(DOCDIR)
	install -m 0644 docs/service.md $(DESTDIR)$(DOCDIR)/service.md
	install -m 0644 spool/examples/README.md $(DESTDIR)$(DOCDIR)/job-files.md
	@if [ -e $(DESTDIR)$(CONFDIR)/config.yml ]; then \
	  echo "kept $(DESTDIR)$(CONFDIR)/config.yml (the new defaults are in systemd/config.yml)"; \
	else \
	  $(INSTALL_SED) systemd/config.yml | install -m 0644 /dev/stdin $(DESTDIR)$(CONFDIR)/config.yml && \
	  echo "installed $(DESTDIR)$(CONFDIR)/config.yml"; \
	fi
	@n=0; for m in models/*/; do \
	  [ -f "$$m/model.json" ] || continue; b=$$(basename "$$m"); \
	  rm -rf "$(DESTDIR)$(DATADIR)/models/$$b.new" && cp -R "$$m" "$(DESTDIR)$(DATADIR)/models/$$b.new" && \
	  chmod -R u=rwX,go=rX "$(DESTDIR)$(DATADIR)/models/$$b.new" && \
	  rm -rf "$(DESTDIR)$(DATADIR)/models/$$b" && mv "$(DESTDIR)$(DATADIR)/models/$$b.new" "$(DESTDIR)$(DATADIR)/models/$$b" && \
	  n=$$((n + 1)); \
	done; echo "installed $$n model bundle(s) into $(DESTDIR)$(DATADIR)/models"
	@if [ -z "$(DESTDIR)" ]; then \
	  if command -v systemd-sysusers >/dev/null; then systemd-sysusers $(SYSUSERSDIR)/diffusiond.conf; \
	  else getent group $(SERVICE_USER) >/dev/null || groupadd --system $(SERVICE_USER); \
	    getent passwd $(SERVICE_USER) >/dev/null || useradd --system --gid $(SERVICE_USER) --home-dir $(STATEDIR) \
	      --no-create-home --shell /usr/sbin/nologin --comment "diffusiond image generation daemon" $(SERVICE_USER); fi; \
	  id $(SERVICE_USER) >/dev/null; \
	fi
	@own=$$( [ -z "$(DESTDIR)" ] && echo "-o $(SERVICE_USER) -g $(SERVICE_USER)" ); \
	install -d -m 0750 $$own $(DESTDIR)$(SPOOLDIR) $(DESTDIR)$(SPOOLDIR)/active $(DESTDIR)$(SPOOLDIR)/done \
	  $(DESTDIR)$(SPOOLDIR)/failed $(DESTDIR)$(STATEDIR) && \
	install -d -m 3770 $$own $(DESTDIR)$(SPOOLDIR)/incoming && \
	echo "spool $(DESTDIR)$(SPOOLDIR) (incoming/ writable by group $(SERVICE_USER)), state $(DESTDIR)$(STATEDIR)"
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "start it with: systemctl enable --now diffusiond"

uninstall:
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
	  systemctl disable --now diffusiond 2>/dev/null || true; fi
	rm -f $(DESTDIR)$(BINDIR)/diffusiond $(DESTDIR)$(BINDIR)/diffusionctl
	rm -f $(DESTDIR)$(UNITDIR)/diffusiond.service $(DESTDIR)$(SYSUSERSDIR)/diffusiond.conf
	rm -rf $(DESTDIR)$(DATADIR) $(DESTDIR)$(DOCDIR)
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "kept $(CONFDIR), $(SPOOLDIR), $(STATEDIR) and the user $(SERVICE_USER); remove them by hand if wanted"

# Needs the model bundles in models/ (make models) and the engine; with
# DIFFUSIOND_TEST_GENERATOR=1 exported it runs on the test generator instead.
demo: build tool-deps
	BIN="$$($(SWIFT) build $(SWIFTFLAGS) --show-bin-path)" scripts/demo.sh

# ONNX Runtime comes from PyPI, in a venv that also sees Debian's torch. NumPy stays 1.x:
# onnxruntime would pull NumPy 2, under which Debian's torch 1.13 has no NumPy ("Numpy is not available").
BENCH_VENV = training/work/venv
$(BENCH_VENV)/bin/python:
	$(call apt_ensure,python3-venv)
	$(PYTHON) -m venv --system-site-packages $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q onnxruntime "numpy<2"

# torch.compile (PyTorch 2's rows of the throughput stage) builds C++ against Python's headers.
APT_BENCH = python3-matplotlib g++ python3-dev
BENCH_RESULTS = docs/bench/results.json

.PHONY: bench bench-quick bench-deps
bench-deps:
	$(call apt_ensure,$(APT_BENCH))

# BENCHMARKS.md and docs/bench/*.png from docs/bench/results.json, which diffusion-bench writes
# stage by stage (throughput, daemon, sampling, quality; see Sources/diffusion-bench/main.swift).
# It restarts itself with OpenBLAS's kernels of this CPU's tier (KernelSelection) and OMP_WAIT_POLICY=passive, and starts
# the diffusiond and diffusionctl built beside it. QUICK=1 (= make bench-quick): the quick
# variant; BENCH_ARGS: more options, e.g. BENCH_ARGS="--stages daemon". The report and the
# plots are rendered even when a stage fails (make still fails then).
bench: SHELL := /bin/bash
bench: build python-deps bench-deps $(BENCH_VENV)/bin/python $(TRAIN_PYTHON)
	@mkdir -p training/work; \
	bin=$$($(SWIFT) build $(SWIFTFLAGS) --show-bin-path); \
	"$$bin/diffusion-bench" $(if $(QUICK),--quick) --python $(BENCH_VENV)/bin/python --torch2-python $(TRAIN_PYTHON) --results $(BENCH_RESULTS) \
	  --invocation "make $(if $(QUICK),bench-quick,bench)$(if $(BENCH_ARGS), BENCH_ARGS='$(BENCH_ARGS)')" $(BENCH_ARGS) \
	  2>&1 | tee training/work/bench-latest.txt; status=$${PIPESTATUS[0]}; \
	$(PYTHON) scripts/bench_plots.py --results $(BENCH_RESULTS) --out docs/bench && \
	$(PYTHON) scripts/bench_report.py --results $(BENCH_RESULTS) --out BENCHMARKS.md && exit $$status

bench-quick:
	$(MAKE) bench QUICK=1

# --- reliability (README "Reliability"): the long runs; their latest figures are committed ---
# make test covers the fast parts: the bad-input corpus, kill-and-restart, two daemons,
# a full disk, a corrupt model, and the unit (test-systemd).
RELIABILITY_DIR ?= docs/reliability
FUZZ_SECONDS    ?= 600
LOAD_JOBS       ?= 2000
BIN_PATH = $$($(SWIFT) build $(SWIFTFLAGS) --show-bin-path)

.PHONY: reliability crash-campaign load-test fuzz
reliability: build
	$(MAKE) crash-campaign
	$(MAKE) load-test
	$(MAKE) fuzz

# 20 real-engine jobs, at least 30 SIGKILLs aimed at every phase, then every check (scripts/crash-campaign.py).
crash-campaign: build
	$(PYTHON) scripts/crash-campaign.py --bin "$(BIN_PATH)" --report $(RELIABILITY_DIR)/crash-campaign.txt

# LOAD_JOBS jobs dropped at once: real-engine jobs of one image and one step, then the
# queue machinery alone (test generator); memory and `diffusionctl status` latency throughout.
load-test: build
	$(PYTHON) scripts/load-test.py --bin "$(BIN_PATH)" --jobs $(LOAD_JOBS) --generator engine \
	  --report $(RELIABILITY_DIR)/load-engine.txt
	$(PYTHON) scripts/load-test.py --bin "$(BIN_PATH)" --jobs $(LOAD_JOBS) --generator test \
	  --report $(RELIABILITY_DIR)/load-queue.txt

# libFuzzer + AddressSanitizer on the job parser and validator for FUZZ_SECONDS (scripts/fuzz.sh).
fuzz: deps
	SWIFT="$(SWIFT)" scripts/fuzz.sh $(FUZZ_SECONDS) $(RELIABILITY_DIR)/fuzz.txt
