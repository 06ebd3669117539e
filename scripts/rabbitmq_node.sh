#!/usr/bin/env bash
# A private RabbitMQ node for tests that must configure or break a broker of their own,
# beside the shared one of scripts/services.sh, on loopback only:
#
#   scripts/rabbitmq_node.sh start DIR PORT [CONF [ADVANCED]]
#   scripts/rabbitmq_node.sh stop DIR
#   scripts/rabbitmq_node.sh kill DIR
#
# DIR holds everything of the node (data, logs, its Erlang cookie, its settings); the
# node is named asyncq-<PORT>@localhost, takes AMQP port PORT and distribution port
# PORT + 20000, and reads CONF (rabbitmq.conf lines, e.g. "consumer_timeout = 3000") and
# ADVANCED (an advanced.config term, e.g. "[{rabbit, [{channel_tick_interval, 500}]}].").
# `start` returns once the node accepts connections (bounded by RABBITMQ_NODE_WAIT
# seconds, 120 by default); `stop` stops it and waits until it is gone; `kill` SIGKILLs
# its Erlang VM (a crash, for failover tests) and waits until it is gone; `start` on the
# same DIR and PORT starts it again on its data (a cluster member rejoins). Needs the
# rabbitmq-server package (scripts/services.sh installs it) and root or the rabbitmq user.
set -euo pipefail

fail() {
    echo "rabbitmq_node: ERROR: $*" >&2
    exit 1
}

BIN=${RABBITMQ_BIN:-/usr/lib/rabbitmq/bin}
[ -x "$BIN/rabbitmq-server" ] || fail "no $BIN/rabbitmq-server (apt-get install rabbitmq-server)"
WAIT=${RABBITMQ_NODE_WAIT:-120}

command=${1:-}
dir=${2:-}
[ -n "$command" ] && [ -n "$dir" ] || fail "usage: $0 start DIR PORT [CONF [ADVANCED]] | stop DIR | kill DIR"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# Everything the node and rabbitmqctl read comes from DIR: the shared node's files in
# /etc/rabbitmq (its listener, its env file) and its cookie are left alone.
node_env() {
    local port
    port=$(cat "$dir/port")
    export HOME="$dir"
    export RABBITMQ_NODENAME="asyncq-$port@localhost"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT="$port"
    export RABBITMQ_DIST_PORT=$((port + 20000))
    export RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
    export RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
    export RABBITMQ_MNESIA_BASE="$dir/mnesia"
    export RABBITMQ_LOG_BASE="$dir/log"
    export RABBITMQ_PID_FILE="$dir/node.pid"
    export ERL_EPMD_ADDRESS=127.0.0.1
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

ctl() {
    "$BIN/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" "$@"
}

case "$command" in
start)
    port=${3:-}
    [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -lt 45536 ] || fail "PORT must be a number below 45536"
    echo "$port" >"$dir/port"
    : >"$dir/rabbitmq-env.conf"
    {
        echo "listeners.tcp.default = 127.0.0.1:$port"
        echo "loopback_users = none"
        printf '%s\n' "${4:-}"
    } >"$dir/rabbitmq.conf"
    echo "${5:-[].}" >"$dir/advanced.config"
    echo "[]." >"$dir/enabled_plugins"
    node_env
    mkdir -p "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
    # A node killed before leaves its pid file behind: `rabbitmqctl wait` would watch
    # that dead pid instead of the new node's.
    rm -f "$RABBITMQ_PID_FILE"
    # In the background, its output in DIR. `rabbitmqctl wait` is the wait, bounded: it
    # waits for the node to write its pid file, then for RabbitMQ to be running.
    nohup "$BIN/rabbitmq-server" >"$dir/server.out" 2>&1 </dev/null &
    echo $! >"$dir/server.pid"
    if ! timeout "$WAIT" "$BIN/rabbitmqctl" -q -n "$RABBITMQ_NODENAME" wait \
        "$RABBITMQ_PID_FILE" --timeout "$WAIT" >"$dir/wait.out" 2>&1; then
        tail -n 20 "$dir/wait.out" "$dir/server.out" >&2 || true
        fail "node $RABBITMQ_NODENAME did not start within $WAIT s; see $dir/log"
    fi
    ;;
stop)
    [ -f "$dir/port" ] || exit 0 # never started
    node_env
    ctl stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1 || true
    pid=$(cat "$dir/server.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        # rabbitmqctl stop returned, or could not reach the node: make sure it is gone.
        kill "$pid" 2>/dev/null || true
        timeout 30 tail --pid="$pid" -f /dev/null || kill -9 "$pid" 2>/dev/null || true
    fi
    ;;
kill)
    [ -f "$dir/port" ] || exit 0 # never started
    node_env
    # The pid file holds the Erlang VM's own pid (server.pid is the launching script's).
    pid=$(cat "$RABBITMQ_PID_FILE" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid"
        timeout 30 tail --pid="$pid" -f /dev/null || fail "node $RABBITMQ_NODENAME survived SIGKILL"
    fi
    server=$(cat "$dir/server.pid" 2>/dev/null || true)
    if [ -n "$server" ]; then
        timeout 30 tail --pid="$server" -f /dev/null || kill -9 "$server" 2>/dev/null || true
    fi
    ;;
*)
    fail "unknown command '$command' (start, stop or kill)"
    ;;
esac
