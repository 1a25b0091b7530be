# Developer shortcuts. `make deps && make test` is the README's test command and what CI runs.
#
# Everything Python lives in a virtual environment of the checkout (.venv), never the machine's
# site-packages: a package left there by earlier work would hide an undeclared dependency.
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
# Tests and tools start `edgeaigc`, `helm` and friends by name: the environment's come first.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Root shells (containers, CI) have no sudo; a user's shell does.
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || command -v sudo)
# Debian packages: Prometheus for the tests and the demo; the container runtime, CNI plugins,
# image builder, arm64 emulation and the C compilers of the pause image for the real nodes.
DEBIAN_PACKAGES ?= python3-venv prometheus containerd runc containernetworking-plugins iptables ipset iproute2 buildah skopeo \
	debootstrap qemu-user-static binfmt-support gcc libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross

.PHONY: deps debian-packages install test lint unit deptry benchmark constraints images

deps: debian-packages install

debian-packages:
	@missing=; for package in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${db:Status-Status}' $$package 2>/dev/null | grep -qx installed || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

install:
	[ -x $(PYTHON) ] || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -c constraints.txt -e ".[all]"

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	# mypy reads the folders as the package they install as (edgeaigc.cli, edgeaigc.operator, ...)
	# through the committed links of edgeaigc/ (README, Layout), so calls across modules are checked.
	$(PYTHON) -m mypy

unit:
	$(PYTHON) -m pytest -q -rs

# Every top-level import of the sources comes from a declared distribution, and every declared
# distribution is used (deptry reads pyproject.toml; its settings are there).
deptry:
	$(PYTHON) -m deptry .

test: lint deptry unit

benchmark:
	$(VENV)/bin/edgeaigc benchmark --scenario traffic-city --output bench-out

# Pin the images' runtime dependencies to the versions of this (CI's) environment.
constraints:
	$(PYTHON) images/lock_constraints.py

# The images, from the same Dockerfiles either way (docs/images.md):
# - with Docker + buildx, multi-arch images pushed to a registry:
#     make images REGISTRY=ghcr.io/you VERSION=0.1.0 [PLATFORMS=linux/arm64] [PUSH=--load]
# - without Docker (our machines), built here with buildah on a Debian base, cached, exported for containerd
#   (localhost/edgeaigc/<name>:local); the host's platform unless PLATFORMS is given:
#     make images [PLATFORMS=linux/amd64,linux/arm64]
REGISTRY ?= ghcr.io/edgeaigc
VERSION ?= $(shell $(PYTHON) -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")
PLATFORMS ?= linux/amd64,linux/arm64
PUSH ?= --push
images:
# A docker client alone is not enough (our machines have one, without an engine).
ifeq ($(shell docker info >/dev/null 2>&1 && echo engine),engine)
	docker buildx build --platform $(PLATFORMS) -f images/operator.Dockerfile -t $(REGISTRY)/operator:$(VERSION) $(PUSH) .
	docker buildx build --platform $(PLATFORMS) -f images/inference.Dockerfile -t $(REGISTRY)/inference:$(VERSION) $(PUSH) .
else
	$(VENV)/bin/edgeaigc images build $(if $(filter command line,$(origin PLATFORMS)),--platform $(PLATFORMS))
endif

# kind, for people with Docker (the README's kind section): the cluster of kind-config.yaml, the
# images built for this machine's architecture from the same Dockerfiles and loaded into kind's
# nodes (no registry), the chart with those tags in a namespace enforcing Pod Security
# "restricted", and the traffic-city fleet. `make -n kind` prints the commands without running them.
KIND_CLUSTER ?= edgeaigc
KIND_NAMESPACE ?= traffic-city
KIND_IMAGES = localhost/edgeaigc/operator:local localhost/edgeaigc/inference:local
.PHONY: kind kind-images kind-down
kind-images:
	docker build -f images/operator.Dockerfile -t localhost/edgeaigc/operator:local .
	docker build -f images/inference.Dockerfile -t localhost/edgeaigc/inference:local .

kind: kind-images
	kind get clusters | grep -qx $(KIND_CLUSTER) || kind create cluster --name $(KIND_CLUSTER) --config kind-config.yaml
	kind load docker-image --name $(KIND_CLUSTER) $(KIND_IMAGES)
	kubectl create namespace $(KIND_NAMESPACE) --dry-run=client -o yaml | kubectl apply -f -
	kubectl label namespace $(KIND_NAMESPACE) pod-security.kubernetes.io/enforce=restricted --overwrite
	helm upgrade --install edgeaigc charts/edgeaigc -n $(KIND_NAMESPACE) -f charts/edgeaigc/ci/kind-values.yaml --wait
	kubectl apply --server-side -f examples/ -f examples/kind/
	kubectl patch pp traffic-city -n $(KIND_NAMESPACE) --type=merge \
	  -p '{"spec":{"actor":{"configMapName":"edgeaigc-actors","key":"traffic-city-td3.onnx"}}}'
	helm test edgeaigc -n $(KIND_NAMESPACE)

kind-down:
	kind delete cluster --name $(KIND_CLUSTER)
