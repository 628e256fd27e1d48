# Keyward — developer entry points. `make help` lists them.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

include hack/controlplane/versions.env
export KUBERNETES_VERSION ETCD_VERSION

CONTROLPLANE_DIR ?= $(CURDIR)/bin/k8s/$(KUBERNETES_VERSION)
CONTROLLER_GEN := go tool controller-gen
GINKGO_FLAGS ?=

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: ## Generate CRDs and RBAC from controller-gen markers.
	$(CONTROLLER_GEN) rbac:roleName=keyward-manager crd paths="./..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: generate
generate: ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object paths="./api/..."

.PHONY: fmt
fmt: ## go fmt.
	go fmt ./...

.PHONY: vet
vet: ## go vet.
	go vet ./...

.PHONY: controlplane
controlplane: ## Build kube-apiserver, kube-controller-manager, kubectl and etcd from Go modules into bin/k8s (no-op when present).
	CONTROLPLANE_DIR=$(CONTROLPLANE_DIR) hack/controlplane/build.sh

.PHONY: test
test: manifests generate vet test-unit test-integration ## Everything: unit tests, then integration tests on a real API server.

.PHONY: test-unit
test-unit: ## Unit tests of pure logic (no cluster).
	go test ./internal/... ./api/...

.PHONY: test-integration
test-integration: controlplane ## Integration tests: envtest with the real kube-apiserver, etcd and garbage collector.
	KUBEBUILDER_ASSETS=$(CONTROLPLANE_DIR) go test ./controllers/... ./test/... -timeout 30m -v $(GINKGO_FLAGS) -ginkgo.v 2>&1 | tee bin/test-integration.log | grep -E '^(---|===|ok|FAIL|PASS|panic|\s+[a-z_]+_test.go|.*\[FAIL\]|Ran [0-9]+ of)' || true; test "$${PIPESTATUS[0]}" -eq 0

##@ Build

.PHONY: build
build: generate fmt vet ## Build the manager binary.
	go build -o bin/manager .

.PHONY: run
run: manifests generate ## Run the manager against the cluster in KUBECONFIG.
	go run . $(ARGS)

.PHONY: local
local: controlplane ## Run Keyward on an embedded local control plane (etcd, kube-apiserver, kube-controller-manager); kubeconfig in bin/local/kubeconfig.
	go run ./hack/local

.PHONY: docker-build
docker-build: ## Build the container image (needs a Docker engine).
	docker build -t keyward:dev .
