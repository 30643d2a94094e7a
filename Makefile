# diffusiond — see README.md.
#   make demo    build, start the daemon on the embedded defaults, run the example job, show the result
#   make test    the test suite (release build: the numeric tests sample)
#   make bench   benchmarks (OPENBLAS_CORETYPE unset)
#   make models  retrain every bundle in models/ and rewrite the fixtures (hours on a CPU)

SWIFT   ?= swift
PYTHON  ?= /usr/bin/python3
# Swift's default x86-64 target is baseline SSE2; the kernels want AVX2/AVX-512.
# (swiftc's clang importer takes CPU names, not the x86-64-v3/-v4 levels.)
CPU     ?= $(shell grep -q avx512f /proc/cpuinfo 2>/dev/null && echo skylake-avx512 || echo haswell)
SWIFTFLAGS ?= -c release -Xswiftc -target-cpu -Xswiftc $(CPU)

APT_BUILD = libopenblas-dev libdnnl-dev libpng-dev libjpeg-dev libsqlite3-dev
APT_PYTHON = python3-torch python3-numpy python3-scipy
APT_DATA = dataset-fashion-mnist

# Installs the Debian packages in $(1) that are missing (as root, or through sudo).
define apt_ensure
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

.PHONY: deps python-deps data-deps build test test-python models
deps:
	$(call apt_ensure,$(APT_BUILD))
python-deps:
	$(call apt_ensure,$(APT_PYTHON))
data-deps:
	$(call apt_ensure,$(APT_DATA))

build: deps
	$(SWIFT) build $(SWIFTFLAGS)

test: deps python-deps
	$(SWIFT) test $(SWIFTFLAGS)
	$(MAKE) test-python

test-python: python-deps
	cd training && $(PYTHON) -m unittest discover -s tests

# The whole training recipe (training/README.md): feature CNN, noisy classifier,
# diffusion UNet, Gamma table, bundles, fixtures, sample grids.
models: python-deps data-deps
	cd training && $(PYTHON) train_features.py
	cd training && $(PYTHON) train_classifier.py
	cd training && $(PYTHON) train_diffusion.py
	cd training && $(PYTHON) gamma.py
	cd training && $(PYTHON) export_bundles.py
	cd training && $(PYTHON) make_fixtures.py
	cd training && $(PYTHON) sample_grid.py --steps 100 --guidance 0
	cd training && $(PYTHON) sample_grid.py --steps 100 --guidance 1
	cd training && $(PYTHON) plot_losses.py
