# flusso-pg container image: a static binary on distroless, running as nonroot.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t flusso-pg .
#   docker run --rm -v $PWD/flusso.yaml:/etc/flusso-pg/flusso.yaml:ro \
#     -v flusso-state:/var/lib/flusso-pg -e FLUSSO_SOURCE_DSN=postgres://... flusso-pg
#
# The config is mounted at /etc/flusso-pg/flusso.yaml; progress is kept in the
# /var/lib/flusso-pg volume (FLUSSO_STATE_DIR overrides the file's state.dir),
# and large transactions spill to /var/lib/flusso-pg/spill (a read-only root
# file system is fine).
# NDJSON goes to stdout, logs to stderr. See docs/deployment.md.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=none
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/flusso-pg ./cmd/flusso-pg \
 && mkdir -p /out/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/flusso-pg /usr/local/bin/flusso-pg
COPY --from=build --chown=65532:65532 /out/state /var/lib/flusso-pg
ENV FLUSSO_STATE_DIR=/var/lib/flusso-pg
VOLUME /var/lib/flusso-pg
USER 65532:65532
# /healthz, /readyz and /metrics: the default command serves them on :9187.
EXPOSE 9187
# distroless has no curl: the binary probes itself (docs/deployment.md).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD ["/usr/local/bin/flusso-pg", "health", "--addr", "127.0.0.1:9187"]
ENTRYPOINT ["/usr/local/bin/flusso-pg"]
CMD ["follow", "--config", "/etc/flusso-pg/flusso.yaml", "--listen", ":9187"]
