# Tandem's image from release binaries built on the host, for machines with no registry (the
# compose tests build it this way, through scripts/compose-env). The image is the `Dockerfile`'s
# runtime stage with other sources: the binaries from `cargo build --release`, ONNX Runtime from
# .tandem/lib (scripts/setup's pinned copy), on a base image given as TANDEM_BASE_IMAGE (by
# default the Dockerfile's own debian:bookworm-slim; scripts/compose-env builds one from Debian
# packages with the machine's apt configuration). tests/compose/ checks that the two runtime
# stages say the same.
#
# The build context is a staging folder scripts/compose-env fills:
#   bin/   tandem-gateway, tandem-model-server, tandem-slow-worker
#   lib/   .tandem/lib/ (libonnxruntime.so.<version> and its links)
#   http-ok
# The binaries link against the host's glibc: the base must be the host's Debian release or newer.

ARG TANDEM_BASE_IMAGE=debian:bookworm-slim
ARG ORT_VERSION=1.32.0

FROM ${TANDEM_BASE_IMAGE} AS runtime
ARG ORT_VERSION

RUN useradd --system --user-group --uid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin tandem

COPY lib/ /usr/local/lib/onnxruntime/
COPY bin/ /usr/local/bin/
COPY --chmod=0755 http-ok /usr/local/bin/http-ok

# Fails the build if ONNX Runtime needs a library the slim image lacks (it needs libstdc++,
# which bookworm-slim has).
RUN out=$(ldd "/usr/local/lib/onnxruntime/libonnxruntime.so.${ORT_VERSION}") \
    && echo "$out" \
    && case "$out" in *"not found"*) exit 1 ;; esac
# Built elsewhere: fails the build if a binary needs a newer glibc than the base has.
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
