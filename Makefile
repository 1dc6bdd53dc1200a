# lc — see README.md. Every target uses the project's own virtualenv in .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROTO_SRC := proto/lc.proto

.PHONY: install test lint format demo bench proto proto-check clean

# The project's own modules are compiled to bytecode here too: with
# PYTHONDONTWRITEBYTECODE set (as on some machines) Python never writes it, and every
# `lc` start would compile them all again (0.45 against 0.32 s for `lc hunt dns --help`).
install: $(BIN)/lc
	@$(BIN)/python -m compileall -q lc common hunter processor proto link >/dev/null

$(BIN)/lc: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

# Installs the tools the tests drive (tshark, tcpdump, sipp) when missing, checks that the
# generated gRPC code is current and the code is lint-clean, then runs pytest.
test: install
	@scripts/test-deps.sh
	@scripts/gen-proto.sh check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: install
	@scripts/demo.sh

bench: install
	@scripts/test-deps.sh
	$(BIN)/python bench/wire_bench.py
	$(BIN)/python bench/filter_bench.py
	$(BIN)/python bench/filter_push_bench.py
	$(BIN)/python bench/spool_bench.py
	$(BIN)/python bench/drain_bench.py
	$(BIN)/python bench/voip_bench.py
	$(BIN)/python bench/tls_bench.py
	$(BIN)/python bench/dns_bench.py
	$(BIN)/python bench/email_bench.py
	$(BIN)/python bench/http_bench.py
	$(BIN)/python bench/processor_bench.py
	$(BIN)/python bench/live_bench.py
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Regenerates the checked-in gRPC code from proto/ (see scripts/gen-proto.sh).
proto: install
	@scripts/gen-proto.sh proto

# Fails when the checked-in generated code differs from what proto/ generates.
proto-check: install
	@scripts/gen-proto.sh check

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
