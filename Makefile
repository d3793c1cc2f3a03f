# The two commands: `make run` and `make test`. Both set up a fresh machine first.
.PHONY: run test bench setup

DEMO_TEXT ?= The old lighthouse keeper walked down to the harbour every morning before sunrise.

.venv/.setup-done: pyproject.toml scripts/setup.sh
	./scripts/setup.sh
	touch $@

setup: .venv/.setup-done

run: setup
	.venv/bin/outlier-lab scan --text "$(DEMO_TEXT)"

test: setup
	.venv/bin/pytest -q

bench: setup
	.venv/bin/python bench/bench_scan.py
