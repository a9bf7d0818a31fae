# syntax=docker/dockerfile:1
# The promgate image: `promgate serve` as a non-root user, nothing but the installed wheel
# and its dependencies on top of the Python base.
#
#   docker build -t registry.example.com/promgate/promgate:0.1.0 .
#   docker run --rm -p 8480:8480 -e PROMGATE_LISTEN=0.0.0.0:8480 \
#     -v "$PWD/examples/policy.yaml:/etc/promgate/policy.yaml:ro" \
#     -e PROMGATE_POLICY=/etc/promgate/policy.yaml registry.example.com/promgate/promgate:0.1.0
#
# Then pin the pushed image by digest in the chart (image.digest=sha256:...).

# The base, pinned by the digest of python:3.11-slim's multi-arch image index (3.11.16 on
# Debian trixie, pushed 2026-08-16), as found in public Dockerfiles that pin the same tag;
# this machine has no registry access to check it. Before a release, resolve the current
# one and update it here (both stages use it):
#   docker buildx imagetools inspect python:3.11-slim --format '{{json .Manifest.Digest}}'
#   (or: crane digest python:3.11-slim)
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

# Builder: promgate's wheel and the wheels of all its dependencies.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime: the same base, the wheels installed from the builder without copying them into
# a layer, then pip, setuptools and wheel removed: nothing left that builds or fetches.
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="promgate" \
      org.opencontainers.image.description="A promotion gate: digest-pinned canary and blue-green releases judged on Prometheus SLOs" \
      org.opencontainers.image.source="https://github.com/promgate/promgate" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/promgate-*.whl \
    && pip uninstall --yes pip setuptools wheel \
    && groupadd --gid 65532 promgate \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin promgate
# The chart's runAsUser; numeric so that runAsNonRoot can check it without /etc/passwd.
USER 65532:65532
WORKDIR /tmp
# 8480: the API, /healthz, /readyz, /metrics. 8080: the built-in proxy's default listener.
EXPOSE 8480 8080
ENTRYPOINT ["promgate"]
CMD ["serve"]
