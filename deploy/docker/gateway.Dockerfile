# syntax=docker/dockerfile:1
#
# The gateway: `teegate gateway`, built without cgo (DESIGN §2: the verifier
# side needs none) into a static binary on an empty base (scratch: nothing
# but the binary and the CA bundle), as a non-root user. Build from the
# repository root:
#
#   docker build -f deploy/docker/gateway.Dockerfile -t teegate/gateway:0.1.0 .
#
# Pin the build image by digest for a release (docker buildx imagetools
# inspect IMAGE prints it): --build-arg GO_IMAGE=golang:1.26.8-bookworm@sha256:....
ARG GO_IMAGE=golang:1.26.8-bookworm

FROM ${GO_IMAGE} AS build
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The /ui page's in-browser verifier (not in git), then the static gateway.
RUN make wasm && \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/teegate ./cmd/teegate

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/teegate /usr/local/bin/teegate
# No user database in scratch: a numeric non-root user.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/teegate", "gateway"]
CMD ["--addr", ":8080"]
