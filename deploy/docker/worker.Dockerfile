# syntax=docker/dockerfile:1
#
# The worker for a TDX or SEV-SNP confidential VM beside an NVIDIA driver.
# teegate-worker is built with cgo: the GPU evidence comes from NVML, which
# go-nvml loads at run time from the driver's libnvidia-ml.so.1 (the driver on
# the VM, or the NVIDIA container toolkit / the Kata guest's CDI spec mounts
# it into the container). The image itself carries no driver.
#
# Two targets, from the repository root:
#
#   # the worker alone (systemd on a CVM runs it beside vLLM; see deploy/systemd)
#   docker build -f deploy/docker/worker.Dockerfile --target worker -t teegate/worker:0.1.0 .
#   # vLLM and the worker in one container: one confidential pod, one GPU (deploy/k8s/workers)
#   docker build -f deploy/docker/worker.Dockerfile --target worker-vllm -t teegate/worker-vllm:0.1.0 .
#
# The runtime bases are glibc based on purpose: the Kata NVIDIA GPU guest
# injects the driver's libraries into the container, which Alpine (musl) and
# distroless images cannot load. Pin the bases by digest for a release.
ARG GO_IMAGE=golang:1.26.8-bookworm
ARG RUNTIME_IMAGE=debian:12.12-slim
ARG VLLM_IMAGE=vllm/vllm-openai:v0.11.0

FROM ${GO_IMAGE} AS build
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=1 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/teegate-worker ./cmd/teegate-worker

FROM ${RUNTIME_IMAGE} AS worker
RUN apt-get update && \
    apt-get install -y --no-install-recommends ca-certificates && \
    rm -rf /var/lib/apt/lists/* && \
    useradd --system --uid 10001 --home-dir /var/lib/teegate --create-home teegate
COPY --from=build /out/teegate-worker /usr/local/bin/teegate-worker
# The quote interfaces (/dev/tdx_guest, /dev/sev-guest, configfs-tsm) and
# /dev/nvidia* must be readable by this user: grant them by group
# (docker run --group-add, a pod's supplementalGroups) rather than running as root.
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/teegate-worker"]
CMD ["--tee", "auto", "--gpu", "require"]

FROM ${VLLM_IMAGE} AS worker-vllm
RUN useradd --system --uid 10001 --home-dir /var/lib/teegate --create-home teegate
COPY --from=build /out/teegate-worker /usr/local/bin/teegate-worker
COPY deploy/docker/worker-vllm-entrypoint.sh /usr/local/bin/teegate-worker-vllm
ENV HF_HOME=/var/lib/teegate/hf
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/teegate-worker-vllm"]
CMD ["--tee", "auto", "--gpu", "require", "--engine", "openai", "--engine-url", "http://127.0.0.1:8000"]
