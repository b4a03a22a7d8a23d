# The two commands of the README: `make sweep` (set up + run a node sweep) and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
SDC    := $(VENV)/bin/sdc
# The CPU build of PyTorch; on an accelerator node set TORCH_SPEC to the build you need.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: venv sweep test bench demo clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned, so nothing below pulls a multi-GB CUDA build
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[test,postgres,report]'
	touch $@

sweep: venv
	$(SDC) db upgrade
	$(SDC) sweep

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: venv
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
