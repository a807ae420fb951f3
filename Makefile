# `make run` and `make test` install whatever is missing (Debian packages for R and lme4, .venv,
# the package), then run the main job or the whole test suite.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
APT_PACKAGES := r-base-core r-base-dev r-cran-lme4 r-cran-glmmtmb r-cran-mlmrev libsuitesparse-dev chromium
SUDO  := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# One BLAS thread per process: the factors are small and many, threads only oversubscribe the
# cores (a vector-term fit took 20 s with them, 4 s without), and sweeps run one process per core.
export OPENBLAS_NUM_THREADS ?= 1
# pytest processes of `make test` (pytest-xdist; each embeds its own R), one per core
TEST_WORKERS ?= 2

.PHONY: run test bench bench-harness setup r-packages clean

run: setup
	$(VENV)/bin/crosscheck run

# pytest's exit 5 (no tests collected) fails like any non-zero exit; then the numerical CI gate,
# on this machine and again on a simulated other one (workers with numpy's AVX-512 kernels off, a
# no-op on a CPU without them; OPENBLAS_CORETYPE is never set: some machines set it themselves)
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup
	$(VENV)/bin/crosscheck gate --baseline tests/corpus/baseline.json
	$(VENV)/bin/crosscheck gate --baseline tests/corpus/baseline.json --simulate-cpu --out .crosscheck/gate-simulated-cpu

bench: setup
	$(PY) benchmarks/run.py

# the reference beside glmer at harness sizes: generated cases, per-fit time ratios (issue 15)
bench-harness: setup
	$(PY) benchmarks/harness_size.py

setup: r-packages $(VENV)/.installed

# Installs the Debian packages only when lme4 (or glmmTMB) cannot be loaded, CHOLMOD's headers
# or chromium (the report tests render HTML in it, headless) are missing.
r-packages:
	@if ! Rscript -e 'library(lme4); library(glmmTMB)' >/dev/null 2>&1 || [ ! -e /usr/include/suitesparse/cholmod.h ] || [ ! -x /usr/bin/chromium ]; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	@[ -x $(PY) ] || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,mixedlm]'
	@touch $@

clean:
	rm -rf $(VENV) .crosscheck .pytest_cache
