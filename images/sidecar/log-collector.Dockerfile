# log-collector: sidecar pattern, Fluentd Forward log collector with an HTTP view of what it received
#
# Built by `make images` (images/build.py), which puts the build context in build/docker/:
# the project wheel, the pinned requirements of this service's extras and an optional CA
# bundle. The base is a build argument so that machines which cannot pull
# python:3.12-slim use the Debian-packaged base from images/base/ instead.
ARG BASE_IMAGE=python:3.12-slim

# --- build: a virtualenv with only this service's dependencies ---------------------------
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Empty unless the builder sits behind a TLS-intercepting proxy; it stays in this stage.
COPY build/docker/pip-ca.crt /tmp/pip-ca.crt
COPY build/docker/requirements/json.txt /tmp/requirements.txt
# Dependencies first, in their own layer: a code change only rebuilds the layer below.
RUN python3 -m venv /opt/venv \
    && if [ -s /tmp/pip-ca.crt ]; then export PIP_CERT=/tmp/pip-ca.crt; fi \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt
ARG VERSION=0.1.0
COPY build/docker/wheels/podpatterns-${VERSION}-py3-none-any.whl /tmp/
# pip check proves the wheel's declared dependencies are all in the venv; pip itself is
# not needed at run time.
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps /tmp/podpatterns-${VERSION}-py3-none-any.whl \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

# --- runtime --------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /opt/venv /opt/venv
# Numeric, so that Kubernetes can verify runAsNonRoot without a passwd lookup.
USER 10001:10001
EXPOSE 24224 8081
ENTRYPOINT ["log-collector"]

ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="log-collector" \
      org.opencontainers.image.description="sidecar pattern, Fluentd Forward log collector with an HTTP view of what it received" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="podpatterns" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
