# Developer shortcuts. `make test` is the README's test command and what CI runs.
PYTHON ?= python3

.PHONY: install test lint unit benchmark constraints images

install:
	$(PYTHON) -m pip install -c constraints.txt -e ".[all]"

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	# mypy sees the folders as the package they install as (edgeaigc.cli, edgeaigc.operator, ...)
	# through a tree of links, so calls across modules are type-checked too (an editable install's
	# path mapping is invisible to mypy, which would take every edgeaigc import as Any).
	rm -rf build/typecheck && mkdir -p build/typecheck/edgeaigc
	for folder in cli policy inference cluster operator; do ln -s ../../../$$folder build/typecheck/edgeaigc/$$folder; done
	MYPYPATH=build/typecheck $(PYTHON) -m mypy -p edgeaigc

unit:
	$(PYTHON) -m pytest -q

test: lint unit

benchmark:
	edgeaigc benchmark --scenario traffic-city --output bench-out

# Pin the images' runtime dependencies to the versions of this (CI's) environment.
constraints:
	$(PYTHON) images/lock_constraints.py

# Multi-arch images for people with Docker + buildx (nothing here can build them on our machines):
#   make images REGISTRY=ghcr.io/you VERSION=0.1.0 [PLATFORMS=linux/arm64] [PUSH=--load]
REGISTRY ?= ghcr.io/edgeaigc
VERSION ?= $(shell $(PYTHON) -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")
PLATFORMS ?= linux/amd64,linux/arm64
PUSH ?= --push
images:
	docker buildx build --platform $(PLATFORMS) -f images/operator.Dockerfile -t $(REGISTRY)/operator:$(VERSION) $(PUSH) .
	docker buildx build --platform $(PLATFORMS) -f images/inference.Dockerfile -t $(REGISTRY)/inference:$(VERSION) $(PUSH) .
