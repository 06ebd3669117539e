#!/usr/bin/env bash
# A private three-node RabbitMQ cluster on loopback, for the tests that run asyncq on
# quorum queues and kill nodes under it, built from three scripts/rabbitmq_node.sh nodes:
#
#   scripts/rabbitmq_cluster.sh start DIR BASEPORT [CONF]
#   scripts/rabbitmq_cluster.sh stop DIR
#   scripts/rabbitmq_cluster.sh kill DIR N      # SIGKILL node N (1, 2 or 3): a crash
#   scripts/rabbitmq_cluster.sh restart DIR N   # start node N again; it rejoins
#
# Node N lives in DIR/N, is named asyncq-<BASEPORT+N-1>@localhost and takes AMQP port
# BASEPORT+N-1 (distribution port BASEPORT+N-1+20000, as rabbitmq_node.sh gives it). All
# three share the Erlang cookie in DIR/.erlang.cookie, without which they could not talk.
# CONF (rabbitmq.conf lines) goes to every node. `start` returns once every node accepts
# connections and node 1 sees three running nodes, and prints how long that took; `stop`
# stops the three and waits until they are gone. Needs what rabbitmq_node.sh needs.
set -euo pipefail

fail() {
    echo "rabbitmq_cluster: ERROR: $*" >&2
    exit 1
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NODE="$here/rabbitmq_node.sh"
BIN=${RABBITMQ_BIN:-/usr/lib/rabbitmq/bin}
WAIT=${RABBITMQ_NODE_WAIT:-120}
NODES=(1 2 3)

command=${1:-}
dir=${2:-}
usage="usage: $0 start DIR BASEPORT [CONF] | stop DIR | kill DIR N | restart DIR N"
[ -n "$command" ] && [ -n "$dir" ] || fail "$usage"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

name_of() {
    echo "asyncq-$(($(cat "$dir/baseport") + $1 - 1))@localhost"
}

# rabbitmqctl against node N, with the shared cookie (HOME is where Erlang looks for it).
ctl() {
    local n=$1
    shift
    HOME="$dir" ERL_EPMD_ADDRESS=127.0.0.1 \
        RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        "$BIN/rabbitmqctl" -q -n "$(name_of "$n")" "$@"
}

start_node() {
    local n=$1 port
    port=$(($(cat "$dir/baseport") + n - 1))
    mkdir -p "$dir/$n"
    # Each node reads the cookie from its own directory (rabbitmq_node.sh makes it HOME).
    install -m 400 "$dir/.erlang.cookie" "$dir/$n/.erlang.cookie"
    bash "$NODE" start "$dir/$n" "$port" "$(cat "$dir/conf")"
}

node_number() {
    [[ "${1:-}" =~ ^[123]$ ]] || fail "N must be 1, 2 or 3: $usage"
    [ -f "$dir/baseport" ] || fail "no cluster in $dir (start it first)"
}

case "$command" in
start)
    base=${3:-}
    [[ "$base" =~ ^[0-9]+$ ]] && [ "$base" -lt 45534 ] || fail "BASEPORT must be a number below 45534"
    began=$EPOCHREALTIME
    echo "$base" >"$dir/baseport"
    printf '%s\n' "${4:-}" >"$dir/conf"
    if [ ! -f "$dir/.erlang.cookie" ]; then
        (umask 077 && head -c 30 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$dir/.erlang.cookie")
    fi
    # The three boot at once (a boot is mostly waiting on the Erlang VM, not CPU), each
    # a cluster of its own; then nodes 2 and 3 join node 1.
    pids=()
    for n in "${NODES[@]}"; do
        start_node "$n" >"$dir/start-$n.out" 2>&1 &
        pids+=($!)
    done
    failed=0
    for i in "${!pids[@]}"; do
        if ! wait "${pids[$i]}"; then
            cat "$dir/start-$((i + 1)).out" >&2
            failed=1
        fi
    done
    if [ "$failed" = 1 ]; then
        "$0" stop "$dir" || true
        fail "a node did not start; see $dir/*/log"
    fi
    first=$(name_of 1)
    for n in 2 3; do
        # join_cluster resets the joining node: its application must be stopped for it.
        if ! { ctl "$n" stop_app && ctl "$n" join_cluster "$first" && ctl "$n" start_app; } \
            >"$dir/join-$n.out" 2>&1; then
            cat "$dir/join-$n.out" >&2
            "$0" stop "$dir" || true
            fail "node $(name_of "$n") could not join $first"
        fi
    done
    # start_app returns once the application is running; the cluster is formed once node
    # 1 counts all three as running.
    if ! ctl 1 await_online_nodes 3 --timeout "$((WAIT * 1000))" >"$dir/await.out" 2>&1; then
        cat "$dir/await.out" >&2
        "$0" stop "$dir" || true
        fail "the cluster did not reach three running nodes within $WAIT s"
    fi
    awk -v b="$base" -v t0="$began" -v t1="$EPOCHREALTIME" 'BEGIN {
        printf "rabbitmq_cluster: 3 nodes on 127.0.0.1:%d-%d, running in %.1f s\n", b, b + 2, t1 - t0
    }'
    ;;
stop)
    [ -f "$dir/baseport" ] || exit 0 # never started
    pids=()
    for n in "${NODES[@]}"; do
        bash "$NODE" stop "$dir/$n" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || true
    done
    ;;
kill)
    node_number "${3:-}"
    bash "$NODE" kill "$dir/$3"
    ;;
restart)
    node_number "${3:-}"
    # On its data: the node still knows its peers and rejoins them as it boots.
    start_node "$3"
    ctl 1 await_online_nodes 3 --timeout "$((WAIT * 1000))" >/dev/null ||
        fail "node $(name_of "$3") did not rejoin within $WAIT s"
    ;;
*)
    fail "unknown command '$command' ($usage)"
    ;;
esac
