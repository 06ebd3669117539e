#!/usr/bin/env bash
# A Redis Cluster of three masters and three replicas on loopback, for the tests and the
# benchmarks, beside the shared Redis of scripts/services.sh:
#
#   scripts/redis_cluster.sh start DIR BASEPORT    # nodes on BASEPORT .. BASEPORT+5
#   scripts/redis_cluster.sh stop DIR
#   scripts/redis_cluster.sh kill DIR PORT         # SIGKILL one node
#   scripts/redis_cluster.sh restart DIR PORT      # start it again: it rejoins the cluster
#
# Each node keeps its files in DIR/<port> (nodes.conf, its log) and persists nothing (the
# tests that need persistence start servers of their own). Nodes BASEPORT .. BASEPORT+2
# start as masters, the other three as their replicas. `start` returns once every node
# reports cluster_state:ok and sees all six nodes, and each master's replica is in
# sync (bounded by REDIS_CLUSTER_WAIT seconds,
# 60 by default), and prints how long that took; `stop` shuts every node down and waits
# until its port is closed.
set -euo pipefail

fail() {
    echo "redis_cluster: ERROR: $*" >&2
    exit 1
}

SERVER=${REDIS_SERVER:-redis-server}
CLI=${REDIS_CLI:-redis-cli}
command -v "$SERVER" >/dev/null || fail "no $SERVER (apt-get install redis-server)"
command -v "$CLI" >/dev/null || fail "no $CLI (apt-get install redis-tools)"
WAIT=${REDIS_CLUSTER_WAIT:-60}

command=${1:-}
dir=${2:-}
USAGE="usage: $0 start DIR BASEPORT | stop DIR | kill DIR PORT | restart DIR PORT"
[ -n "$command" ] && [ -n "$dir" ] || fail "$USAGE"

ports() {
    local base
    base=$(cat "$dir/baseport")
    seq "$base" $((base + 5))
}

answers() { "$CLI" -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }

ready() {
    local port info
    for port in $(ports); do
        info=$("$CLI" -h 127.0.0.1 -p "$port" cluster info 2>/dev/null) || return 1
        grep -q '^cluster_state:ok' <<<"$info" || return 1
        grep -q '^cluster_known_nodes:6' <<<"$info" || return 1
    done
    # Every master with its replica attached and in sync, so a failover test can begin.
    local base online
    base=$(cat "$dir/baseport")
    for port in $base $((base + 1)) $((base + 2)); do
        online=$("$CLI" -h 127.0.0.1 -p "$port" info replication 2>/dev/null | grep -c 'state=online') || return 1
        [ "$online" -ge 1 ] || return 1
    done
}

start_node() {
    local port=$1
    "$SERVER" --port "$port" --bind 127.0.0.1 --dir "$dir/$port" \
        --cluster-enabled yes --cluster-config-file nodes.conf \
        --cluster-node-timeout 2000 --save "" --appendonly no \
        --daemonize yes --logfile "$dir/$port/log" --pidfile "$dir/$port/pid"
}

closed() { ! answers "$1"; }

until_true() {
    local what=$1
    shift
    local deadline=$((SECONDS + WAIT))
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || fail "$what within ${WAIT}s (logs in $dir/*/log)"
        sleep 0.1
    done
}

case "$command" in
start)
    base=${3:-}
    [[ "$base" =~ ^[0-9]+$ ]] || fail "start needs a numeric BASEPORT"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    echo "$base" >"$dir/baseport"
    started=$SECONDS
    for port in $(ports); do
        mkdir -p "$dir/$port"
        # A node left from an earlier run would rejoin with its old identity: start clean.
        rm -f "$dir/$port/nodes.conf"
        start_node "$port"
    done
    for port in $(ports); do
        until_true "node $port did not answer" answers "$port"
    done
    nodes=()
    for port in $(ports); do nodes+=("127.0.0.1:$port"); done
    "$CLI" --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" \
        || fail "redis-cli --cluster create failed: $(tail -5 "$dir/create.log")"
    until_true "the cluster did not settle" ready
    echo "redis_cluster: 3 masters + 3 replicas on 127.0.0.1:$base-$((base + 5)) in $((SECONDS - started))s"
    ;;
stop)
    [ -f "$dir/baseport" ] || exit 0
    for port in $(ports); do
        "$CLI" -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
    for port in $(ports); do
        deadline=$((SECONDS + WAIT))
        while answers "$port"; do
            [ "$SECONDS" -lt "$deadline" ] || fail "node $port still answers"
            sleep 0.1
        done
    done
    ;;
kill)
    port=${3:-}
    [ -f "$dir/$port/pid" ] || fail "no node $port in $dir"
    kill -9 "$(cat "$dir/$port/pid")"
    until_true "node $port did not die" closed "$port"
    ;;
restart)
    port=${3:-}
    [ -d "$dir/$port" ] || fail "no node $port in $dir"
    # With its nodes.conf kept, the node knows the cluster and rejoins it; a master that
    # was replaced meanwhile comes back as a replica of its successor.
    start_node "$port"
    until_true "node $port did not answer" answers "$port"
    ;;
*)
    fail "$USAGE"
    ;;
esac
