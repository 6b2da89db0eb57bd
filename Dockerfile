# syntax=docker/dockerfile:1
# The mlcompute image: one static binary (operator, router, batch-driver, CLI) on an empty base.
#   docker build -t ghcr.io/mlcompute/mlcompute:dev .
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 (the builder cross-compiles
# nothing; each platform builds natively or under emulation).

FROM rust:1.95-bookworm AS build
ARG TARGETARCH
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
RUN case "${TARGETARCH:-amd64}" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported architecture ${TARGETARCH}" >&2; exit 1 ;; \
    esac >/rust-target \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
# Dependencies first, so source edits reuse the cached dependency layer.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src bench && echo 'fn main() {}' >src/main.rs && echo 'fn main() {}' >bench/loadgen.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --target "$(cat /rust-target)" --bin mlcompute || true
COPY . .
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --target "$(cat /rust-target)" --bin mlcompute \
 && cp "target/$(cat /rust-target)/release/mlcompute" /mlcompute

# A passwd entry, so tools that look the user up find one.
RUN echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' >/passwd \
 && echo 'nonroot:x:65532:' >/group

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /passwd /etc/passwd
COPY --from=build /group /etc/group
COPY --from=build /mlcompute /mlcompute
USER 65532:65532
ENTRYPOINT ["/mlcompute"]
CMD ["operator"]
LABEL org.opencontainers.image.source="https://github.com/mlcompute/mlcompute" \
      org.opencontainers.image.description="mlcompute: Azure-ML-style compute on any Kubernetes cluster" \
      org.opencontainers.image.licenses="Apache-2.0"
