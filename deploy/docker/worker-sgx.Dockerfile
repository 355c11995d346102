# syntax=docker/dockerfile:1
#
# The worker in an SGX enclave, built and signed with EGo (deploy/ego/README.md
# explains the enclave). The EGo images' version must be the one go.mod pins
# for github.com/edgelesssys/ego, and its ego-go must bundle a Go at least as
# new as go.mod's go line; move both together. The signing key is the
# enclave's MRSIGNER: pass it as a build secret, never in the context:
#
#   docker build -f deploy/docker/worker-sgx.Dockerfile \
#     --secret id=signingkey,src=private.pem -t teegate/worker-sgx:0.1.0 .
#
# Run it with the SGX devices and a DCAP quote provider reachable:
#   docker run --device /dev/sgx_enclave --device /dev/sgx_provision \
#     --group-add "$(getent group sgx | cut -d: -f3)" -e TEEGATE_NATS_URL=nats://nats.example:4222 teegate/worker-sgx:0.1.0
ARG EGO_VERSION=1.8.0

FROM ghcr.io/edgelesssys/ego-dev:v${EGO_VERSION} AS build
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN ego-go mod download
COPY . .
RUN ego-go build -tags ego -trimpath -ldflags="-X main.version=${VERSION}" -o deploy/ego/teegate-worker ./cmd/teegate-worker
WORKDIR /src/deploy/ego
RUN --mount=type=secret,id=signingkey,dst=/src/deploy/ego/private.pem,required=true \
    ego sign && ego uniqueid teegate-worker && ego signerid teegate-worker

FROM ghcr.io/edgelesssys/ego-deploy:v${EGO_VERSION}
RUN useradd --system --uid 10001 teegate
COPY --from=build /src/deploy/ego/teegate-worker /opt/teegate/teegate-worker
USER 10001:10001
# enclave.json passes TEEGATE_NATS_URL from the host; everything else is
# decided inside the enclave.
ENTRYPOINT ["ego", "run", "/opt/teegate/teegate-worker", "--tee", "sgx"]
