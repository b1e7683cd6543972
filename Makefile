# hashiflex: two commands on a fresh machine.
#   make demo   installs what is missing, then trains, quantizes, exports, elaborates, co-simulates, reports
#   make test   installs what is missing, then runs every test (Python, ScalaTest, notebooks)
# Both are idempotent: installed tools are detected and skipped; unchanged demo steps are reused.

SHELL       := /bin/bash
PYTHON      ?= python3
WORK        ?= build
STAMPS      := .stamps
APT_TOOLS   := verilator iverilog yosys chromium sta:opensta
PYTEST_ARGS ?=

.PHONY: all demo test test-deps test-python test-scala vectors deps deps-apt deps-pip deps-mill clean help

all: demo

help:
	@echo "make demo   - run the whole flow on the embedded default (digits) and print the table"
	@echo "make test   - run Python tests, ScalaTest specs and the notebooks"
	@echo "make deps   - install what is missing (apt tools, the Python package, Mill + Chisel)"
	@echo "make clean  - remove build outputs"

deps: deps-apt deps-pip deps-mill

# Debian packages: verilator (co-simulation), iverilog (pyverilog), yosys (netlist counts, area), chromium (the
# browser test drives it with Playwright: no browser download), OpenSTA (`sta`: timing of the synthesized
# netlist). Each is command[:package]; skipped when the command is present.
deps-apt:
	@missing=""; for t in $(APT_TOOLS); do command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing Debian packages:$$missing"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing; \
	fi

# The Python package (editable) with its dev and notebook extras; redone when pyproject.toml changes.
deps-pip: $(STAMPS)/pip
$(STAMPS)/pip: pyproject.toml
	@mkdir -p $(STAMPS)
	@if $(PYTHON) -c "import hashiflex, torch, torchvision, scipy, IPython, pyverilator, hypothesis, nbmake, ipywidgets, vcd, pyverilog, playwright, deptry, numba, da4ml" 2>/dev/null \
	    && $(PYTHON) -m pip show hashiflex 2>/dev/null | grep -q "Editable project location: $(CURDIR)$$"; then \
	  echo "make deps: Python packages present"; \
	else \
	  $(PYTHON) -m pip install -q -e '.[dev,notebook]'; \
	fi
	@touch $@

# Mill (pinned in .mill-version, fetched by ./mill from Maven Central) and the Chisel/ScalaTest jars.
deps-mill: $(STAMPS)/mill
$(STAMPS)/mill: build.sc .mill-version
	@mkdir -p $(STAMPS)
	./mill --no-server --ticker false hashiflex.test.compile
	@touch $@

demo: deps
	$(PYTHON) -m hashiflex demo --work $(WORK)

test: deps test-deps test-python test-scala

# every third-party import in the package, tests, benchmarks and notebooks is declared in pyproject.toml
# (config: [tool.deptry]); an undeclared one fails the test run, as it would fail on a fresh machine
test-deps: deps-pip
	$(PYTHON) -m deptry hashiflex tests benchmarks notebooks

test-python:
	@mkdir -p $(WORK)/test-results
	$(PYTHON) -m pytest tests notebooks --nbmake --nbmake-timeout=1200 \
	  --junitxml=$(WORK)/test-results/pytest.xml $(PYTEST_ARGS)

# golden-model vectors the ChiselSim specs stream through the generated RTL (GoldenVectorSpec)
vectors: deps-pip
	$(PYTHON) -m hashiflex vectors build/vectors

test-scala: vectors
	@mkdir -p $(WORK)/test-results
	set -o pipefail; ./mill --no-server --ticker false hashiflex.test 2>&1 | tee $(WORK)/test-results/scalatest.log

clean:
	rm -rf $(WORK) out $(STAMPS) test_run_dir
