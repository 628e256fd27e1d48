# syntax=docker/dockerfile:1
# The Keyward manager image, built entirely inside the builder (for CI systems
# with a registry: it pulls golang and distroless). Where nothing can be
# pulled, `make image` packs the same layout from scratch with podman
# (hack/image/Containerfile); docs/image.md says which to use when. Both give:
# /manager as entrypoint, user 65532:65532 (nonroot), no shell, no package
# manager, the same OCI labels. test/image checks the two files agree.
#
#   docker build --build-arg VERSION=v0.3.0 --build-arg REVISION=$(git rev-parse HEAD) -t keyward/manager:v0.3.0 .
FROM golang:1.26 AS builder
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG VERSION=dev
ARG REVISION=unknown
WORKDIR /workspace

# Dependencies first, so source edits reuse the module-download layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download

COPY *.go ./
COPY api/ api/
COPY controllers/ controllers/
COPY internal/ internal/
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w -X keyward.dev/keyward/internal/version.Version=${VERSION} -X keyward.dev/keyward/internal/version.Revision=${REVISION}" -o /out/manager .

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://keyward.dev/keyward
ARG LICENSES=Apache-2.0
WORKDIR /
COPY --from=builder /out/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]
LABEL org.opencontainers.image.title="keyward-manager" \
      org.opencontainers.image.description="Keyward: a Kubernetes operator for API access keys" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="${LICENSES}"
