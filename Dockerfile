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
# Where the binaries come from is the build argument TANDEM_BINARIES:
#   source    (the default) stage `binaries-source`: the Rust image (Debian bookworm) builds the
#             release binaries and fetches ONNX Runtime with scripts/setup: the same pinned PyPI
#             wheel, checked against the same SHA-256 sums, as a local install.
#   prebuilt  stage `binaries-prebuilt`: release binaries built on the host and its .tandem/lib,
#             from docker/prebuilt/ (bin/, lib/), which scripts/compose-env fills (and empties
#             again) for machines with no registry. The binaries link against the host's glibc.
# `FROM binaries-${TANDEM_BINARIES}` names the one used; BuildKit builds only that one (a
# prebuilt build pulls no rust image). The runtime stage, the same for both, runs on
# TANDEM_BASE_IMAGE (default debian:bookworm-slim: the builder's glibc); scripts/compose-env
# gives it a minimal Debian of the host's release that it makes without a registry.
#
#   docker build --build-arg TANDEM_BINARIES=prebuilt --build-arg TANDEM_BASE_IMAGE=... .
#
# Linux x86_64 only, like scripts/setup's pinned downloads (compose asks for linux/amd64).
# tests/it/compose/ checks this file against scripts/setup, scripts/compose-env and the compose
# files.
#
# No `# syntax=` line: BuildKit's built-in frontend reads this file (RUN --mount, COPY --chmod),
# so nothing is pulled for it.

# ONNX Runtime as scripts/setup pins it (version, wheel and library SHA-256). The build checks
# that scripts/setup says the same, so the two cannot drift apart unnoticed.
ARG ORT_VERSION=1.32.0
ARG ORT_WHEEL_SHA256=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
ARG ORT_LIB_SHA256=6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f
# source | prebuilt: which stage below provides /out/bin and /out/lib.
ARG TANDEM_BINARIES=source
# What the runtime stage runs on.
ARG TANDEM_BASE_IMAGE=debian:bookworm-slim

# ---- binaries-source: built here ------------------------------------------------------------
FROM rust:1.95-bookworm AS binaries-source
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

# The workspace (.dockerignore keeps target/, .tandem/, models/ and node_modules/ out;
# docker/prebuilt/ exists only while scripts/compose-env builds, and is not used here).
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

# ---- binaries-prebuilt: built on the host (scripts/compose-env) -----------------------------
# docker/prebuilt/bin: the three binaries of `cargo build --release`; docker/prebuilt/lib:
# .tandem/lib (libonnxruntime.so.<version> and its links, scripts/setup's pinned copy).
FROM scratch AS binaries-prebuilt
COPY docker/prebuilt/lib/ /out/lib/
COPY docker/prebuilt/bin/ /out/bin/

# ---- binaries: the one TANDEM_BINARIES names ------------------------------------------------
FROM binaries-${TANDEM_BINARIES} AS binaries

# ---- runtime: the same for both ---------------------------------------------------------------
FROM ${TANDEM_BASE_IMAGE} AS runtime
ARG ORT_VERSION

RUN useradd --system --user-group --uid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin tandem

COPY --from=binaries /out/lib/ /usr/local/lib/onnxruntime/
COPY --from=binaries /out/bin/ /usr/local/bin/
COPY --chmod=0755 docker/http-ok /usr/local/bin/http-ok

# Fails the build if ONNX Runtime needs a library the base image lacks (it needs libstdc++,
# which bookworm-slim has).
RUN out=$(ldd "/usr/local/lib/onnxruntime/libonnxruntime.so.${ORT_VERSION}") \
    && echo "$out" \
    && case "$out" in *"not found"*) exit 1 ;; esac
# Fails the build if a binary needs a library (or a newer glibc) the base image lacks: binaries
# built elsewhere (prebuilt), or a TANDEM_BASE_IMAGE other than the builder's release.
RUN for bin in tandem-gateway tandem-model-server tandem-slow-worker; do \
        out=$(ldd "/usr/local/bin/$bin" 2>&1); \
        case "$out" in *"not found"*) echo "$bin: $out" >&2; exit 1 ;; esac; \
    done

ENV ORT_DYLIB_PATH=/usr/local/lib/onnxruntime/libonnxruntime.so.${ORT_VERSION}

USER tandem
# 8000: the gateway (HTTP); 8001: the model server (gRPC). Each listens where its
# TANDEM_*_ADDR says; the defaults are loopback, so compose sets 0.0.0.0.
EXPOSE 8000 8001
CMD ["tandem-gateway"]
