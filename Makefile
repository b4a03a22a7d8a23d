# The two commands of the README: `make sweep` (set up + run a node sweep) and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
SDC    := $(VENV)/bin/sdc
# The CPU build of PyTorch; on an accelerator node set TORCH_SPEC to the build you need.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: venv sweep test bench demo clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py sdc/digest/kernels/digest.c sdc/digest/kernels/magnitude.c
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

# The drill: a simulated fleet plus a real local sweep of virtual chips, one with an injected
# fault, analysed, and the quarantine report written as HTML. Everything lives under $(DEMO_DIR).
DEMO_DIR    ?= demo
DEMO_DB     := sqlite:///$(abspath $(DEMO_DIR))/sdc.db
DEMO_ENV    := SDC_DATA_DIR=$(abspath $(DEMO_DIR)) SDC_DATABASE_URL=$(DEMO_DB) SDC_CONFIG=/dev/null
DEMO_SIMULATE_ARGS ?= --chips 128 --chips-per-host 8 --sweeps 8 --faults persistent=1,intermittent=1,slow=1,nondeterministic=1
DEMO_SWEEP_ARGS    ?= --devices cpu:0,cpu:1,cpu:2,cpu:3 --inject cpu:2:bitflip:rate=1

demo: venv
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	$(DEMO_ENV) $(SDC) db upgrade
	$(DEMO_ENV) $(SDC) simulate $(DEMO_SIMULATE_ARGS) -o $(DEMO_DIR)/fleet.jsonl --truth $(DEMO_DIR)/truth.json
	$(DEMO_ENV) $(SDC) ingest $(DEMO_DIR)/fleet.jsonl
	# exit 1 (fault found) is the point of the drill; 2 (error) stops it
	$(DEMO_ENV) $(SDC) sweep $(DEMO_SWEEP_ARGS) || [ $$? -eq 1 ]
	$(DEMO_ENV) $(SDC) analyze || [ $$? -eq 1 ]
	$(DEMO_ENV) $(SDC) report --format html -o $(DEMO_DIR)/report.html || [ $$? -eq 1 ]
	$(DEMO_ENV) $(SDC) report || [ $$? -eq 1 ]
	@echo "quarantine report: $(abspath $(DEMO_DIR))/report.html"

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
