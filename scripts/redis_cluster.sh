#!/usr/bin/env bash
# A Redis Cluster of three masters and three replicas on loopback, for the tests and the
# benchmarks, beside the shared Redis of scripts/services.sh:
#
#   scripts/redis_cluster.sh start DIR BASEPORT    # nodes on BASEPORT .. BASEPORT+5
#   scripts/redis_cluster.sh stop DIR
#   scripts/redis_cluster.sh kill DIR PORT         # SIGKILL one node
#   scripts/redis_cluster.sh restart DIR PORT      # start it again: it rejoins the cluster
#   scripts/redis_cluster.sh wait DIR              # until the cluster is whole again
#
# Each node keeps its files in DIR/<port> (nodes.conf, its log) and persists nothing (the
# tests that need persistence start servers of their own). Nodes BASEPORT .. BASEPORT+2
# start as masters, the other three as their replicas. `start` returns once every node
# reports cluster_state:ok and sees all six nodes, and each master's replica is in
# sync (bounded by REDIS_CLUSTER_WAIT seconds,
# 60 by default), and prints how long that took; `wait` waits for the same (after a
# `kill` and `restart`, whichever nodes are masters by then); `stop` shuts every node
# down and waits until its port is closed.
#
# Two options for `start`, kept in DIR so that `restart` starts a node the same way:
#   REDIS_CLUSTER_PERSIST=1   every node appends each write to its AOF and fsyncs it
#                             before replying (appendfsync always), as the chaos soak's
#                             standalone Redis does; by default nothing is persisted.
#   REDIS_CLUSTER_ANNOUNCE="P1 .. P6"   the port each node (BASEPORT .. BASEPORT+5) gives
#                             clients and replicas (CLUSTER SLOTS, MOVED, replication) in
#                             place of its own: a proxy's, so that every client connection
#                             goes through it. The cluster bus stays on the real port +
#                             10000. By default each node announces its own port.
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
USAGE="usage: $0 start DIR BASEPORT | stop DIR | kill DIR PORT | restart DIR PORT | wait DIR"
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
    # Every master with its replica attached and in sync, so a failover test can begin;
    # whichever nodes are masters now (a failover swaps a master and its replica).
    local replication masters=0
    for port in $(ports); do
        replication=$("$CLI" -h 127.0.0.1 -p "$port" info replication 2>/dev/null) || return 1
        grep -q '^role:master' <<<"$replication" || continue
        masters=$((masters + 1))
        grep -q 'state=online' <<<"$replication" || return 1
    done
    [ "$masters" -eq 3 ]
}

start_node() {
    local port=$1 extra=() announce
    if [ "$(cat "$dir/persist" 2>/dev/null)" = 1 ]; then
        extra+=(--appendonly yes --appendfsync always)
    else
        extra+=(--appendonly no)
    fi
    announce=$(cat "$dir/$port/announce" 2>/dev/null || true)
    if [ -n "$announce" ]; then
        extra+=(--cluster-announce-port "$announce")
        extra+=(--cluster-announce-bus-port $((port + 10000)))
    fi
    "$SERVER" --port "$port" --bind 127.0.0.1 --dir "$dir/$port" \
        --cluster-enabled yes --cluster-config-file nodes.conf \
        --cluster-node-timeout 2000 --save "" "${extra[@]}" \
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
    echo "${REDIS_CLUSTER_PERSIST:-0}" >"$dir/persist"
    read -r -a announce <<<"${REDIS_CLUSTER_ANNOUNCE:-}"
    [ "${#announce[@]}" -eq 0 ] || [ "${#announce[@]}" -eq 6 ] ||
        fail "REDIS_CLUSTER_ANNOUNCE needs six ports, one per node"
    started=$SECONDS
    i=0
    for port in $(ports); do
        mkdir -p "$dir/$port"
        # A node left from an earlier run would rejoin with its old identity: start clean.
        rm -rf "$dir/$port/nodes.conf" "$dir/$port/appendonlydir"
        echo "${announce[$i]:-}" >"$dir/$port/announce"
        i=$((i + 1))
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
wait)
    [ -f "$dir/baseport" ] || fail "no cluster in $dir (start it first)"
    until_true "the cluster did not settle" ready
    ;;
*)
    fail "$USAGE"
    ;;
esac
