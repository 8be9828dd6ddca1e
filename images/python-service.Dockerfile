# One recipe for every Python service of the suite: the service is a build argument.
#
# Built by `make images` (images/build.py), which passes, per service (its table
# PYTHON_SERVICES): SERVICE (the console script, also the image name), EXTRAS (the
# requirements set: core, or extras joined by "-"), PORTS, DESCRIPTION and APT_PACKAGES
# (Debian packages the runtime needs, usually none). The build context is build/docker/:
# the project wheel, the pinned requirements of each extras set and an optional CA bundle.
# The base is a build argument so that machines which cannot pull python:3.12-slim use the
# Debian-packaged base from images/base/ instead. Classic builder: no BuildKit syntax.
ARG BASE_IMAGE=python:3.12-slim

# --- build: a virtualenv with only this service's dependencies ---------------------------
# Nothing here depends on the service but its extras: services that share them share this
# stage and its cache.
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Empty unless the builder sits behind a TLS-intercepting proxy; it stays in this stage.
COPY build/docker/pip-ca.crt /tmp/pip-ca.crt
ARG EXTRAS=core
COPY build/docker/requirements/${EXTRAS}.txt /tmp/requirements.txt
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
# What a service needs besides Python (notes-app: psql, so that the lab guide connects to
# the ambassador from inside the app container as the app does). Empty: an empty layer.
ARG APT_PACKAGES=""
# hadolint ignore=DL3008,SC2086
RUN if [ -n "${APT_PACKAGES}" ]; then \
        apt-get update \
        && apt-get install --yes --no-install-recommends ${APT_PACKAGES} \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    fi
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /opt/venv /opt/venv
# An exec-form ENTRYPOINT cannot name a build argument, so one fixed name points at this
# image's console script: the service itself is PID 1 and gets SIGTERM (no shell between),
# and `docker run <image> ARGS` (or a pod's args:) reaches it.
ARG SERVICE
RUN ln -s "${SERVICE}" /opt/venv/bin/podpatterns-service \
    && test -x /opt/venv/bin/podpatterns-service
# Numeric, so that Kubernetes can verify runAsNonRoot without a passwd lookup.
USER 10001:10001
ARG PORTS
EXPOSE ${PORTS}
ENTRYPOINT ["/opt/venv/bin/podpatterns-service"]

ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG VCS_REF=unknown
ARG DESCRIPTION
LABEL org.opencontainers.image.title="${SERVICE}" \
      org.opencontainers.image.description="${DESCRIPTION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="podpatterns" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
