#!/usr/bin/env bash
# A local N-node RabbitMQ cluster on this machine, for tests and for trying the platform
# against a cluster. It never touches another node (the shared one on 5672 included).
#
#   scripts/rabbitmq-cluster.sh start N     # fresh cluster (or the running one if it has N nodes)
#   scripts/rabbitmq-cluster.sh status [N]  # each node's state, the cluster's members
#   scripts/rabbitmq-cluster.sh stop [N]    # stops every node of the cluster
#   scripts/rabbitmq-cluster.sh start-node K  # starts node K again (after a kill), data kept
#   scripts/rabbitmq-cluster.sh ctl K ARGS... # rabbitmqctl ARGS against node K (its cookie)
#
# `start` prints the comma-separated AMQP_URL of its nodes on stdout (progress goes to
# stderr), so `export AMQP_URL=$(scripts/rabbitmq-cluster.sh start 3)` works.
#
# Node K (1..N) is NAME-K@<short hostname> (NAME = RABBITMQ_CLUSTER_NAME, `cluster`): AMQP
# on 127.0.0.1:$((BASE + K)) (BASE = RABBITMQ_CLUSTER_PORT_BASE, 5700: ports 5701, 5702, ...),
# Erlang distribution on AMQP port + 20000, guest/guest (loopback only), vhost /. Two
# clusters with distinct names and port bases run side by side (the cluster tests use
# `cluster` on 5701.., the fault suite `faults` on 5731.., scripts/bench-cluster.sh `bench`
# on 5741..). Everything lives under
# ${RABBITMQ_NODES_DIR:-/tmp/rabbitmq-nodes}/NAME-K (mnesia, logs, pid file, rabbitmq.conf,
# enabled_plugins), owned by the `rabbitmq` user that Debian's server runs as; `start`
# wipes it, `stop` leaves it for its logs. The nodes share an Erlang cookie of their own
# (NAME-home/.erlang.cookie there, new at each start), not the shared node's, so nothing
# else can join or drive them. No plugins by default (so no management ports collide);
# RABBITMQ_CLUSTER_MANAGEMENT=1 enables the management plugin on 127.0.0.1:$((BASE + 10000 + K)).
# RABBITMQ_CLUSTER_NET_TICKTIME (default 10 s) is Erlang's net_ticktime of nodes and rabbitmqctl:
# how soon the other nodes declare a node that stopped answering down.
# Nodes 2..N join node 1 with `join_cluster`. Needs root (or the rabbitmq user).
set -euo pipefail

usage() {
  echo "usage: $0 start N | status [N] | stop [N] | start-node K | ctl K ARGS...    (N, K: 1-9)" >&2
  exit 2
}
log() { printf '[rabbitmq-cluster] %s\n' "$*" >&2; }
die() { printf '[rabbitmq-cluster] error: %s\n' "$*" >&2; exit 1; }

[ $# -ge 1 ] || usage
action=$1
n=${2:-}
case "$action" in
  start | start-node) [ -n "$n" ] && [ $# -eq 2 ] || usage ;;
  stop | status) [ $# -le 2 ] || usage ;;
  ctl) [ $# -ge 3 ] || usage ;;
  *) usage ;;
esac
case "$n" in '' | [1-9]) ;; *) usage ;; esac

command -v rabbitmqctl >/dev/null || die "RabbitMQ is not installed (apt-get install rabbitmq-server)"
id -u rabbitmq >/dev/null 2>&1 || die "no rabbitmq user (apt-get install rabbitmq-server)"

nodes_dir=${RABBITMQ_NODES_DIR:-/tmp/rabbitmq-nodes}
port_base=${RABBITMQ_CLUSTER_PORT_BASE:-5700}
case "$port_base" in '' | *[!0-9]*) die "RABBITMQ_CLUSTER_PORT_BASE must be a number" ;; esac
name=${RABBITMQ_CLUSTER_NAME:-cluster}
case "$name" in '' | *[!a-z0-9]*) die "RABBITMQ_CLUSTER_NAME must be lowercase letters and digits" ;; esac
host=$(hostname -s)
# The cluster's own HOME for the rabbitmq user: its .erlang.cookie is the shared cookie.
cluster_home=$nodes_dir/$name-home
wait_secs=${RABBITMQ_CLUSTER_WAIT:-90}
# Erlang's net_ticktime (seconds), nodes and rabbitmqctl alike: a node that stops answering
# (paused, hung, cut off) is declared down by the others after 3/4 to 5/4 of it, and only
# then do its quorum queues elect a new leader. Erlang's default, 60 s, leaves the queues
# the node led without a leader for up to 75 s; 10 s bounds that near 12.5 s.
net_ticktime=${RABBITMQ_CLUSTER_NET_TICKTIME:-10}
case "$net_ticktime" in '' | *[!0-9]*) die "RABBITMQ_CLUSTER_NET_TICKTIME must be a number" ;; esac

node_name() { echo "$name-$1@$host"; }
node_dir() { echo "$nodes_dir/$name-$1"; }
amqp_port() { echo $((port_base + $1)); }

as_rabbitmq() {
  if [ "$(id -u)" = "$(id -u rabbitmq)" ]; then
    env HOME="$cluster_home" "$@"
  else
    runuser -u rabbitmq -- env HOME="$cluster_home" "$@"
  fi
}

# The node's environment (the same variables scripts/rabbitmq-node.sh sets), then CMD.
with_node() {
  local k=$1 dir
  shift
  dir=$(node_dir "$k")
  as_rabbitmq env \
    RABBITMQ_NODENAME="$(node_name "$k")" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$(amqp_port "$k")" \
    RABBITMQ_DIST_PORT=$(($(amqp_port "$k") + 20000)) \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" \
    RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_PID_FILE="$dir/rabbitmq.pid" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
    RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel net_ticktime $net_ticktime" \
    RABBITMQ_CTL_ERL_ARGS="-kernel net_ticktime $net_ticktime" \
    "$@"
}

# rabbitmqctl against node K (bounded: a node that does not answer fails the call).
ctl() {
  local k=$1
  shift
  with_node "$k" timeout 60 /usr/lib/rabbitmq/bin/rabbitmqctl -n "$(node_name "$k")" "$@" </dev/null
}

running() { [ -f "$cluster_home/.erlang.cookie" ] && ctl "$1" -q status >/dev/null 2>&1; }

# The node numbers that have a folder here (a cluster started before), ascending.
known_nodes() {
  local d
  for d in "$nodes_dir/$name"-[0-9]; do
    [ -d "$d" ] && echo "${d##*-}"
  done
}

# The running members of the cluster as node K sees them, one per line.
members() {
  ctl "$1" -q eval 'io:format("~s~n", [string:join([atom_to_list(N) || N <- rabbit_nodes:all_running()], "\n")]).' \
    2>/dev/null | grep '@' || true
}

urls() {
  local k out=
  for k in $(seq "$1"); do
    out+="${out:+,}amqp://guest:guest@127.0.0.1:$(amqp_port "$k")/%2f"
  done
  echo "$out"
}

# The node's OS pid, if its pid file names a live process.
node_pid() {
  local pid
  pid=$(cat "$(node_dir "$1")/rabbitmq.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

stop_node() {
  local k=$1 pid was=
  if running "$k"; then
    was=1
    ctl "$k" stop "$(node_dir "$k")/rabbitmq.pid" </dev/null >/dev/null 2>&1 || true
  fi
  # A node rabbitmqctl cannot reach (its cookie gone, say) is stopped through its pid file.
  if pid=$(node_pid "$k"); then
    was=1
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 30); do node_pid "$k" >/dev/null || break; sleep 1; done
    if node_pid "$k" >/dev/null; then die "$(node_name "$k") (pid $pid) did not stop within 30 s"; fi
  fi
  [ -z "$was" ] || log "$(node_name "$k") stopped"
}

stop_all() {
  local k
  # Not `| while read`: rabbitmqctl would read the rest of the list from stdin.
  for k in $( (known_nodes; [ -z "$n" ] || seq "$n") | sort -u); do
    stop_node "$k"
  done
}

# Waits (bounded) until node 1 reports $1 running members.
wait_members() {
  local want=$1 got=0
  for _ in $(seq "$wait_secs"); do
    got=$(members 1 | wc -l)
    [ "$got" = "$want" ] && return 0
    sleep 1
  done
  die "the cluster has $got running nodes, not $want, after ${wait_secs} s; see $nodes_dir/$name-*/log"
}

case "$action" in
  start)
    # Idempotent: a running cluster of exactly these N nodes is kept as it is.
    if running 1 && [ "$(members 1 | sort | tr '\n' ' ')" = "$(for k in $(seq "$n"); do node_name "$k"; done | sort | tr '\n' ' ')" ]; then
      log "the $n-node cluster is already running"
      urls "$n"
      exit 0
    fi
    stop_all
    # Nodes of a larger cluster before: gone, so that `status` shows this one.
    for k in $(known_nodes); do
      [ "$k" -le "$n" ] || rm -rf "$(node_dir "$k")"
    done
    for k in $(seq "$n"); do
      port=$(amqp_port "$k")
      for p in "$port" $((port + 20000)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
          die "port $p (node $(node_name "$k")) is taken by another process; set RABBITMQ_CLUSTER_PORT_BASE"
        fi
      done
    done
    began=$(date +%s)
    rm -rf "$cluster_home"
    mkdir -p "$cluster_home"
    # A fresh cookie shared by the nodes and by rabbitmqctl (all use this HOME).
    od -An -tx1 -N20 /dev/urandom | tr -d ' \n' | tr 'a-f' 'A-F' >"$cluster_home/.erlang.cookie"
    chmod 400 "$cluster_home/.erlang.cookie"
    chown -R rabbitmq:rabbitmq "$cluster_home"
    for k in $(seq "$n"); do
      dir=$(node_dir "$k")
      rm -rf "$dir"
      mkdir -p "$dir/mnesia" "$dir/log"
      {
        echo "listeners.tcp.default = 127.0.0.1:$(amqp_port "$k")"
        if [ "${RABBITMQ_CLUSTER_MANAGEMENT:-0}" = 1 ]; then
          echo "management.tcp.ip = 127.0.0.1"
          echo "management.tcp.port = $((port_base + 10000 + k))"
        fi
      } >"$dir/rabbitmq.conf"
      if [ "${RABBITMQ_CLUSTER_MANAGEMENT:-0}" = 1 ]; then
        echo '[rabbitmq_management].' >"$dir/enabled_plugins"
      else
        echo '[].' >"$dir/enabled_plugins"
      fi
      echo '[].' >"$dir/advanced.config"
      : >"$dir/rabbitmq-env.conf"
      chown -R rabbitmq:rabbitmq "$dir"
      # The nodes boot in parallel; node 1 is the seed the others join.
      with_node "$k" /usr/lib/rabbitmq/bin/rabbitmq-server -detached >"$dir/log/startup.out" 2>&1
    done
    for k in $(seq "$n"); do
      ctl "$k" wait --timeout "$wait_secs" "$(node_dir "$k")/rabbitmq.pid" >/dev/null 2>&1 \
        || die "node $(node_name "$k") did not start within ${wait_secs} s; see $(node_dir "$k")/log"
    done
    log "$n nodes up after $(($(date +%s) - began)) s"
    for k in $(seq 2 "$n"); do
      ctl "$k" stop_app >/dev/null
      ctl "$k" join_cluster "$(node_name 1)" >/dev/null 2>&1 \
        || die "$(node_name "$k") could not join $(node_name 1); see $(node_dir "$k")/log"
      ctl "$k" start_app >/dev/null
    done
    wait_members "$n"
    log "cluster of $n nodes formed after $(($(date +%s) - began)) s: $(members 1 | tr '\n' ' ')"
    urls "$n"
    ;;
  status)
    nodes=$(if [ -n "$n" ]; then seq "$n"; else known_nodes; fi)
    [ -n "$nodes" ] || { echo "no cluster node under $nodes_dir"; exit 3; }
    up=0 total=0
    for k in $nodes; do
      total=$((total + 1))
      if running "$k"; then
        up=$((up + 1))
        echo "$(node_name "$k") running amqp://guest:guest@127.0.0.1:$(amqp_port "$k")/%2f members: $(members "$k" | tr '\n' ' ')"
      elif pid=$(node_pid "$k"); then
        echo "$(node_name "$k") unreachable (pid $pid): stop it with $0 stop"
      else
        echo "$(node_name "$k") stopped"
      fi
    done
    # Exit 0 only when every node asked about runs.
    [ "$up" = "$total" ] || exit 3
    ;;
  stop)
    stop_all
    rm -rf "$cluster_home"
    ;;
  start-node)
    # A node of the running cluster killed or stopped before: it boots on its own data
    # and rejoins the others (its membership is in its mnesia folder).
    [ -d "$(node_dir "$n")/mnesia" ] || die "no node $(node_name "$n") under $nodes_dir: start the cluster first"
    if running "$n"; then
      log "$(node_name "$n") is already running"
      exit 0
    fi
    with_node "$n" /usr/lib/rabbitmq/bin/rabbitmq-server -detached >>"$(node_dir "$n")/log/startup.out" 2>&1
    ctl "$n" wait --timeout "$wait_secs" "$(node_dir "$n")/rabbitmq.pid" >/dev/null 2>&1 \
      || die "node $(node_name "$n") did not start within ${wait_secs} s; see $(node_dir "$n")/log"
    log "$(node_name "$n") started again"
    ;;
  ctl)
    shift 2
    ctl "$n" "$@"
    ;;
esac
