# Tandem's container image: one image for the three Tandem services; docker-compose.yml picks
# the binary with `command`.
#
#   /usr/local/bin/tandem-gateway, tandem-model-server, tandem-slow-worker
#   /usr/local/bin/http-ok              the gateway's healthcheck (the image has no curl)
#   /usr/local/lib/onnxruntime/         ONNX Runtime; ORT_DYLIB_PATH points at it
#
# Models are not baked in: docker-compose.yml mounts ./models read-only at /models.
#
#   docker build -t tandem:local .      (`docker compose up --build` does this for you)
#
# Stage 1 (the Rust image, Debian bookworm) builds the release binaries and fetches ONNX Runtime
# with scripts/setup: the same pinned PyPI wheel, checked against the same SHA-256 sums, as a
# local install. Stage 2 (debian:bookworm-slim: the same glibc) carries only what runs.
# Linux x86_64 only, like scripts/setup's pinned downloads (compose asks for linux/amd64).
# tests/it/compose/ checks this file against scripts/setup and docker-compose.yml.
#
# No `# syntax=` line: BuildKit's built-in frontend reads this file (RUN --mount, COPY --chmod),
# so nothing is pulled for it. Without a registry (no rust or debian image to pull), the same
# runtime stage is built from host-built binaries by docker/prebuilt.Dockerfile
# (scripts/compose-env; tests/compose/ checks that the two say the same).

# ONNX Runtime as scripts/setup pins it (version, wheel and library SHA-256). The build checks
# that scripts/setup says the same, so the two cannot drift apart unnoticed.
ARG ORT_VERSION=1.32.0
ARG ORT_WHEEL_SHA256=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
ARG ORT_LIB_SHA256=6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f

# ---- build ------------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
ARG ORT_VERSION
ARG ORT_WHEEL_SHA256
ARG ORT_LIB_SHA256

# scripts/setup downloads the wheel with pip and unpacks it with Python's zipfile.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# ONNX Runtime first, in a layer of its own: it changes only when scripts/setup does.
COPY scripts/setup scripts/setup
RUN { grep -qxF "ORT_VERSION=${ORT_VERSION}" scripts/setup \
        && grep -qxF "ORT_WHEEL_SHA256=${ORT_WHEEL_SHA256}" scripts/setup \
        && grep -qxF "ORT_LIB_SHA256=${ORT_LIB_SHA256}" scripts/setup; } \
    || { echo "Dockerfile: the ORT_* pins differ from scripts/setup's; make them agree" >&2; exit 1; }
# scripts/setup also installs nats-server, which this image does not need (compose runs the
# official nats image): TANDEM_NATS_SERVER naming an existing executable skips that download.
RUN TANDEM_NATS_SERVER=/bin/true scripts/setup >/dev/null \
    && echo "${ORT_LIB_SHA256}  .tandem/lib/libonnxruntime.so.${ORT_VERSION}" | sha256sum -c - \
    && mkdir -p /out/lib \
    && cp -a .tandem/lib/. /out/lib/

# The workspace (.dockerignore keeps target/, .tandem/, models/ and node_modules/ out).
COPY . .
# Cache mounts keep the crates and incremental build output between builds; the binaries are
# copied out of the cached target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --workspace --bins --locked \
    && mkdir -p /out/bin \
    && cp target/release/tandem-gateway target/release/tandem-model-server \
        target/release/tandem-slow-worker /out/bin/

# ---- runtime ----------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
ARG ORT_VERSION

RUN useradd --system --user-group --uid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin tandem

COPY --from=build /out/lib/ /usr/local/lib/onnxruntime/
COPY --from=build /out/bin/ /usr/local/bin/
COPY --chmod=0755 docker/http-ok /usr/local/bin/http-ok

# Fails the build if ONNX Runtime needs a library the slim image lacks (it needs libstdc++,
# which bookworm-slim has).
RUN out=$(ldd "/usr/local/lib/onnxruntime/libonnxruntime.so.${ORT_VERSION}") \
    && echo "$out" \
    && case "$out" in *"not found"*) exit 1 ;; esac

ENV ORT_DYLIB_PATH=/usr/local/lib/onnxruntime/libonnxruntime.so.${ORT_VERSION}

USER tandem
# 8000: the gateway (HTTP); 8001: the model server (gRPC). Each listens where its
# TANDEM_*_ADDR says; the defaults are loopback, so compose sets 0.0.0.0.
EXPOSE 8000 8001
CMD ["tandem-gateway"]
