#!/usr/bin/env bash
# Make sure the brokers the test suite talks to answer on loopback:
#   Redis     127.0.0.1:6379
#   RabbitMQ  127.0.0.1:5672 (guest/guest)
#   PostgreSQL 127.0.0.1:5432 (trust auth for local TCP, user postgres, database test)
# and installs the programs tests start privately on ports of their own: PgBouncer (its
# binary only; each test runs its own in front of the PostgreSQL above), and headless
# Chromium with its driver for the dashboard's browser tests.
# A service that already answers is left alone, so on a machine that runs both this is a
# fast no-op. Otherwise the missing server is installed from Debian's packages (only when
# its binary is missing) and started, and the script waits, bounded, until it answers.
set -euo pipefail

REDIS_WAIT=${REDIS_WAIT:-30}
RABBITMQ_WAIT=${RABBITMQ_WAIT:-120}
POSTGRES_WAIT=${POSTGRES_WAIT:-60}

log() { echo "services: $*" >&2; }
fail() {
    echo "services: ERROR: $*" >&2
    exit 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        fail "need root (or sudo) to run: $*"
    fi
}

apt_updated=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || fail "$* is missing and there is no apt-get to install it"
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    log "installing $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# A TCP connect through bash's /dev/tcp: no client tools needed.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

redis_ok() {
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]
    else
        port_open 6379
    fi
}

rabbitmq_ok() {
    port_open 5672 || return 1
    command -v rabbitmq-diagnostics >/dev/null 2>&1 || return 0
    # The port opens before the broker accepts logins, so ask the node itself. That needs
    # its Erlang cookie, which root can read; without root the open port has to do.
    if [ "$(id -u)" -eq 0 ]; then
        rabbitmq-diagnostics -q ping >/dev/null 2>&1
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n rabbitmq-diagnostics -q ping >/dev/null 2>&1
    fi
}

# wait_for NAME SECONDS CHECK: poll CHECK once a second (a server starting up has nothing
# to block on) until it passes or the time is up.
wait_for() {
    local name=$1 seconds=$2 check=$3 waited=0
    until "$check"; do
        if [ "$waited" -ge "$seconds" ]; then
            fail "$name did not answer within ${seconds} s; see its log (e.g. /var/log/$name/)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "$name is up (after ${waited} s)"
}

ensure_redis() {
    if redis_ok; then
        log "redis answers on 127.0.0.1:6379"
        return
    fi
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server
    log "starting redis-server"
    # Tests need no persistence: keep nothing on disk.
    # A failed start is reported by the wait below, with the time it waited.
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        >/dev/null || log "redis-server exited with $?"
    wait_for redis "$REDIS_WAIT" redis_ok
}

ensure_rabbitmq() {
    if rabbitmq_ok; then
        log "rabbitmq answers on 127.0.0.1:5672"
        return
    fi
    command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
    # The Debian package may have started it already; a second node would not start.
    if ! port_open 5672; then
        log "starting rabbitmq-server (this can take a while)"
        as_root rabbitmq-server -detached >/dev/null 2>&1 || log "rabbitmq-server exited with $?"
    fi
    wait_for rabbitmq "$RABBITMQ_WAIT" rabbitmq_ok
}

postgres_ok() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h 127.0.0.1 -p 5432 || return 1
    else
        port_open 5432 || return 1
    fi
    command -v psql >/dev/null 2>&1 || return 0
    psql -h 127.0.0.1 -U postgres -d test -Atqc 'SELECT 1' >/dev/null 2>&1
}

# The newest server installed from Debian's packages (postgresql-15 on bookworm).
postgres_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

ensure_postgres() {
    if postgres_ok; then
        log "postgresql answers on 127.0.0.1:5432 (database test)"
        return
    fi
    [ -n "$(postgres_bin)" ] || apt_install postgresql postgresql-client
    local bin data=/var/lib/postgresql/asyncq-tests
    bin=$(postgres_bin)
    if ! port_open 5432; then
        if command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql/*/main >/dev/null 2>&1; then
            log "starting the packaged cluster"
            local version
            version=$(basename "$(dirname "$bin")")
            as_root pg_ctlcluster "$version" main start || log "pg_ctlcluster exited with $?"
        else
            log "creating a cluster in $data"
            as_root install -d -o postgres -g postgres "$data"
            as_root runuser -u postgres -- "$bin/initdb" -D "$data" -A trust -U postgres >/dev/null
            as_root runuser -u postgres -- "$bin/pg_ctl" -D "$data" -l "$data/server.log" \
                -o "-c listen_addresses=127.0.0.1 -c port=5432" start >/dev/null
        fi
    fi
    wait_for postgresql "$POSTGRES_WAIT" pg_answers
    # The tests connect as postgres over TCP without a password, to the database test.
    local hba
    hba=$(as_root runuser -u postgres -- psql -Atqc 'SHOW hba_file' 2>/dev/null || true)
    if [ -n "$hba" ] && ! postgres_ok; then
        log "trusting local TCP connections in $hba"
        as_root sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
        as_root runuser -u postgres -- psql -Atqc 'SELECT pg_reload_conf()' >/dev/null
    fi
    if ! as_root runuser -u postgres -- psql -Atqc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
        log "creating the database test"
        as_root runuser -u postgres -- createdb test
    fi
    wait_for postgresql "$POSTGRES_WAIT" postgres_ok
}

# The server accepts connections (as its own user over the socket, before TCP is trusted).
pg_answers() {
    as_root runuser -u postgres -- psql -Atqc 'SELECT 1' >/dev/null 2>&1 || postgres_ok
}

# Only the binary: the tests start their own bouncers (Debian's package starts none here,
# and one it did start, on 6432, is left alone).
ensure_pgbouncer() {
    if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; then
        log "pgbouncer is installed"
        return
    fi
    apt_install pgbouncer
}

# Debian's Chromium, which the browser tests drive through Playwright (its own browser
# downloads are not needed, and users' closed networks may not allow them).
ensure_chromium() {
    if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
        log "chromium is installed"
        return
    fi
    apt_install chromium chromium-driver
}

ensure_redis
ensure_rabbitmq
ensure_postgres
ensure_pgbouncer
ensure_chromium
