# The two commands: `make run` and `make test`. Both set up a fresh machine first.
.PHONY: run test bench setup browser

.venv/.setup-done: pyproject.toml scripts/setup.sh
	./scripts/setup.sh
	touch $@

setup: .venv/.setup-done

browser:
	./scripts/install-browser.sh

run: setup
	.venv/bin/outlier-lab serve

test: setup browser
	.venv/bin/pytest -q

bench: setup
	.venv/bin/python bench/bench_scan.py
