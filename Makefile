# Lifeline: two commands do all the set-up on a fresh machine.
#   make run   — a collector (SQLite) and an agent on this machine, Ctrl-C stops both
#   make test  — installs the Debian and Python packages the tests need, then lint, types, tests
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Real peers the tests and the lab use; --no-install-recommends keeps kernels and GUIs out.
APT_PACKAGES := iproute2 nftables iptables fping wireguard-go wireguard-tools \
	prometheus prometheus-alertmanager prometheus-blackbox-exporter prometheus-pushgateway \
	victoria-metrics systemd procps openssl util-linux chromium postgresql libpq5
PYTEST_ARGS ?=

.PHONY: run test venv apt lint typecheck pytest bench fuzz screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.stamp-run: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[agent,collector]'
	touch $@

$(VENV)/.stamp-dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.stamp-dev

run: $(VENV)/.stamp-run
	$(BIN)/lifeline-collector quickstart

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.stamp-dev
	$(BIN)/mypy

pytest: $(VENV)/.stamp-dev
	$(BIN)/pytest $(PYTEST_ARGS)

test: apt $(VENV)/.stamp-dev lint typecheck pytest

bench: $(VENV)/.stamp-dev
	$(BIN)/python bench/run_all.py

# Ten thousand fuzz cases against a real collector: status counts and its RSS before and after.
fuzz: $(VENV)/.stamp-dev
	$(BIN)/python bench/fuzz.py

# The board and a position page as Debian's chromium renders them from a fed lab collector.
screenshots: apt $(VENV)/.stamp-dev
	$(BIN)/python -m lifeline_lab.screenshots docs/img

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
