# postgres: ambassador pattern, the "outside world" PostgreSQL (primary or streaming standby)
#
# Debian's PostgreSQL packages on the suite's base, so that it builds where no registry
# can be pulled from (images/build.py passes the Debian-built base as BASE_IMAGE). The
# major version is the base release's, not pinned: `postgresql` is 15 on bookworm (the
# default below, and images/base/build.sh's base) and 17 on trixie (python:3.12-slim today,
# which images/build.py uses when it can pull it). Debian carries one major per release;
# another would need the PGDG apt repository, which an offline build cannot reach. The
# ambassador speaks protocol 3.0 to either, and a standby always runs the same image as
# its primary (pg_basebackup needs the same major). One image, two roles (PG_ROLE=primary
# or standby): see images/ambassador/postgres-entrypoint.sh.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends postgresql ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && set -- /usr/lib/postgresql/*/bin \
    && ln -s "$1" /usr/local/lib/pgbin \
    && groupadd --gid 10001 pgserver \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/pgdata \
        --shell /usr/sbin/nologin pgserver
COPY images/ambassador/postgres-entrypoint.sh /usr/local/bin/pg-entrypoint
ENV PATH=/usr/local/lib/pgbin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/pgdata/data \
    LANG=C.UTF-8
# Numeric, so that Kubernetes can verify runAsNonRoot; PGDATA is a volume it owns (fsGroup).
# initdb needs the uid to have a passwd entry: pgserver, created above.
USER 10001:10001
EXPOSE 5432
# Stopping the container (`docker stop`, `podman pod stop`, a Deployment scaled to zero) is
# a fast shutdown: sessions are ended at once, and the standby is sent the WAL up to the
# shutdown checkpoint before the server exits. SIGTERM is a smart shutdown, which waits
# for every client to disconnect: the ambassador's pooled connections never do, so the
# server was killed at the end of the grace period instead, and a standby promoted then
# lacked what had not been sent yet. The entrypoint execs postgres: the signal reaches it.
STOPSIGNAL SIGINT
ENTRYPOINT ["pg-entrypoint"]

ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="postgres" \
      org.opencontainers.image.description="ambassador pattern, PostgreSQL primary or streaming standby from Debian packages" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="podpatterns" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
