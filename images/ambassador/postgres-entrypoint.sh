#!/bin/sh
# Start PostgreSQL as a primary or as a streaming standby of one, initialising PGDATA on
# first start. Runs as a non-root uid on a read-only root filesystem: PGDATA is a volume,
# the socket goes to /tmp.
#
#   PG_ROLE               primary (default) | standby
#   POSTGRES_PASSWORD_FILE  the superuser's (postgres) password, e.g. a mounted Secret
#                         (or POSTGRES_PASSWORD)
#   PG_TLS_CERT_FILE, PG_TLS_KEY_FILE   server certificate and key: TLS on when both set
#   PG_PRIMARY_HOST, PG_PRIMARY_PORT    standby only: where to replicate from
#   PG_CLUSTER_NAME       shown by the notes app's /db (default: the role)
set -eu

role=${PG_ROLE:-primary}
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE")
fi
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD_FILE or POSTGRES_PASSWORD}"
say() { echo "pg-entrypoint ($role): $*" >&2; }

configure() {
    {
        echo "# pg-entrypoint"
        echo "listen_addresses = '*'"
        echo "unix_socket_directories = '/tmp'"
        echo "cluster_name = '${PG_CLUSTER_NAME:-$role}'"
        echo "password_encryption = 'scram-sha-256'"
        echo "wal_level = replica"
        echo "max_wal_senders = 5"
        echo "hot_standby = on"
        echo "log_connections = on"
    } >> "$PGDATA/postgresql.conf"
    if [ -n "${PG_TLS_CERT_FILE:-}" ] && [ -n "${PG_TLS_KEY_FILE:-}" ]; then
        # PostgreSQL wants its key owned by itself and 0600: copy it out of the mount.
        install -m 0600 "$PG_TLS_CERT_FILE" "$PGDATA/server.crt"
        install -m 0600 "$PG_TLS_KEY_FILE" "$PGDATA/server.key"
        printf "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n" \
            >> "$PGDATA/postgresql.conf"
    fi
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    chmod 0700 "$PGDATA"
    if [ "$role" = standby ]; then
        : "${PG_PRIMARY_HOST:?standby needs PG_PRIMARY_HOST}"
        say "base backup from $PG_PRIMARY_HOST:${PG_PRIMARY_PORT:-5432}"
        tries=0
        until PGPASSWORD=$POSTGRES_PASSWORD pg_basebackup -h "$PG_PRIMARY_HOST" \
                -p "${PG_PRIMARY_PORT:-5432}" -U postgres -D "$PGDATA" -R -X stream -c fast; do
            tries=$((tries + 1))
            [ "$tries" -lt 60 ] || { say "primary unreachable, giving up"; exit 1; }
            rm -rf "${PGDATA:?}"/*
            sleep 2
        done
    else
        pwfile=$(mktemp)
        printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
        initdb -D "$PGDATA" -U postgres --auth-local=scram-sha-256 --auth-host=scram-sha-256 \
            --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 >&2
        rm -f "$pwfile"
        {
            echo "host all all 0.0.0.0/0 scram-sha-256"
            echo "host all all ::/0 scram-sha-256"
            echo "host replication postgres 0.0.0.0/0 scram-sha-256"
            echo "host replication postgres ::/0 scram-sha-256"
        } >> "$PGDATA/pg_hba.conf"
    fi
    configure
fi
say "starting $(postgres --version)"
exec postgres -D "$PGDATA"
