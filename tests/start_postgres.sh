#!/usr/bin/env bash
# A throwaway PostgreSQL for the historian tests, called by `make test` before pytest.
#
# Installs Debian's postgresql package if needed (root only), starts a private cluster on 127.0.0.1 on a
# free port (its own data directory: the system's clusters are left alone), creates a test role and
# database, and writes the DSN to $BOILER_AI_PG_DSN_FILE (default /tmp/boiler-ai-test-pg.dsn), which the
# tests read. Idempotent: a cluster already running is reused. It never fails the suite: when PostgreSQL
# cannot be had (no root to install it, no apt-get), it removes the DSN file and the PostgreSQL tests
# skip with the reason, except under CI=true, where they fail.
# The server keeps running after the tests, so the next run starts at once.
set -u

DSN_FILE=${BOILER_AI_PG_DSN_FILE:-/tmp/boiler-ai-test-pg.dsn}
DATA=${BOILER_AI_PG_DATA:-/var/tmp/boiler-ai-pg-$(id -u)}
ROLE=boiler_ai
PASSWORD=boiler_ai_test
DB=boiler_ai_test

say() { echo "start_postgres: $*" >&2; }
give_up() {
    say "$*: the PostgreSQL tests will skip (and fail under CI=true)"
    rm -f "$DSN_FILE"
    exit 0
}

exec 9>"${DSN_FILE}.lock"   # two test runs at once take turns here (the server must not inherit it)
flock -w 120 9 2>/dev/null || say "could not take ${DSN_FILE}.lock within 120 s; going on"

usable() { [ -s "$DSN_FILE" ] && command -v psql >/dev/null && psql "$(cat "$DSN_FILE")" -qtAc 'SELECT 1' >/dev/null 2>&1; }
if usable; then
    say "reusing the running test cluster ($(sed 's/:[^:@]*@/:***@/' "$DSN_FILE"))"
    exit 0
fi

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
BIN=$(pg_bin)
if [ -z "$BIN" ]; then
    [ "$(id -u)" = 0 ] || give_up "PostgreSQL is not installed and installing it needs root"
    command -v apt-get >/dev/null || give_up "PostgreSQL is not installed and there is no apt-get"
    export DEBIAN_FRONTEND=noninteractive
    say "installing postgresql from the Debian packages"
    # Try without refreshing the package lists first; refresh only if that fails (a fresh image has none).
    if ! apt-get install -y -qq postgresql >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || give_up "apt-get update failed"
        apt-get install -y -qq postgresql >/dev/null 2>&1 || give_up "apt-get install postgresql failed"
    fi
    BIN=$(pg_bin)
    [ -n "$BIN" ] || give_up "postgresql installed but no server binaries under /usr/lib/postgresql"
fi

# initdb and the server refuse to run as root: as root, run them as the package's postgres user.
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || give_up "no postgres system user"
    as_pg() { runuser -u postgres -- "$@"; }
    OWNER=postgres
else
    as_pg() { "$@"; }
    OWNER=$(id -un)
fi

mkdir -p "$DATA" && chown "$OWNER" "$DATA" && chmod 700 "$DATA" || give_up "cannot create $DATA"
if [ ! -s "$DATA/PG_VERSION" ]; then
    say "creating a test cluster in $DATA"
    as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >/dev/null \
        || give_up "initdb failed"
fi

if [ -s "$DATA/boiler-ai.port" ]; then
    PORT=$(cat "$DATA/boiler-ai.port")
else
    PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    echo "$PORT" | as_pg tee "$DATA/boiler-ai.port" >/dev/null
fi

if ! as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    say "starting PostgreSQL on 127.0.0.1:$PORT"
    if ! as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DATA" start >/dev/null 9>&-; then
        # The remembered port may have been taken meanwhile: pick another once.
        PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        echo "$PORT" | as_pg tee "$DATA/boiler-ai.port" >/dev/null
        as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DATA" start >/dev/null 9>&- \
            || give_up "the server did not start (see $DATA/server.log)"
    fi
fi

psql_admin() { as_pg "$BIN/psql" -h "$DATA" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != 1 ]; then
    psql_admin -c "CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD'" >/dev/null || give_up "cannot create role $ROLE"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    psql_admin -c "CREATE DATABASE $DB OWNER $ROLE" >/dev/null || give_up "cannot create database $DB"
fi

echo "postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB" > "$DSN_FILE"
usable || give_up "the test cluster does not accept the test role"
say "PostgreSQL test database ready on 127.0.0.1:$PORT (DSN in $DSN_FILE)"
