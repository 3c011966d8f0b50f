#!/usr/bin/env bash
# Ingest and fan-out of 1, 2 or 3 swarmfeed nodes on one PostgreSQL, or of one node on
# SQLite, on loopback. Bounded: a fixed number of events, every request and stream
# under a time limit; it cleans up after itself.
#
#   scripts/bench-nodes.sh NODES [EVENTS] [CLIENTS] [VIEWERS]
#
# NODES     1 to 3 nodes on PostgreSQL, or 0 for one node on SQLite (the baseline)
# EVENTS    events to post, in batches of 1 000 through POST /api/events (100 000)
# CLIENTS   concurrent posting clients, spread over the nodes round-robin (4)
# VIEWERS   SSE viewers per node, each reading every event from seq 0 (2)
#
# The PostgreSQL server is SWARMFEED_BENCH_POSTGRES (default the local one on 5432);
# the bench makes a database of its own and drops it. SWARMFEED_BENCH_BIN picks
# the binary (default target/release/swarmfeed). Needs a release build
# (cargo build --release), curl, psql and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${1:?usage: $0 NODES [EVENTS] [CLIENTS] [VIEWERS]}
EVENTS=${2:-100000}
CLIENTS=${3:-4}
VIEWERS=${4:-2}
BIN=${SWARMFEED_BENCH_BIN:-target/release/swarmfeed}
SERVER=${SWARMFEED_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}
BATCHES=$((EVENTS / 1000))
LIMIT_SECS=300

work=$(mktemp -d /tmp/swarmfeed-bench.XXXXXX)
db="sfbench$$"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$NODES" -gt 0 ]; then psql "$SERVER" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }

# CPU seconds used so far by the processes named $1 (all of them) or with pids $2….
cpu_secs() {
  python3 - "$@" <<'PY'
import os, sys
name, pids = sys.argv[1], sys.argv[2:]
if not pids:
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
ticks = 0
for p in pids:
    try:
        stat = open(f"/proc/{p}/stat").read()
    except OSError:
        continue
    comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
    if comm == name or sys.argv[2:]:
        ticks += int(rest[11]) + int(rest[12])
print(ticks / os.sysconf("SC_CLK_TCK"))
PY
}

database=()
if [ "$NODES" -gt 0 ]; then
  psql "$SERVER" -qc "CREATE DATABASE $db" >/dev/null
  database=(--database "${SERVER%/*}/$db")
fi

addrs=()
for n in $(seq 1 "$((NODES > 0 ? NODES : 1))"); do
  mkdir -p "$work/n$n"
  "$BIN" --log-format json serve --bind 127.0.0.1:0 --data-dir "$work/n$n" --max-frames-per-sec 0 \
    "${database[@]}" 2>"$work/n$n.log" >/dev/null &
  pids+=($!)
  addr=""
  for _ in $(seq 1 300); do
    addr=$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try: v = json.loads(line)
    except ValueError: continue
    if v.get("fields", {}).get("message") == "swarmfeed ready": print(v["fields"]["addr"]); break
' "$work/n$n.log")
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "node $n did not start"; cat "$work/n$n.log"; exit 1; }
  addrs+=("$addr")
done
token=$(cat "$work/n1/admin.token")

python3 -c '
import json
print(json.dumps([{"event_type": "tool.called", "source": "bench", "agent_id": "a%d" % (i % 8),
                   "data": {"tool_name": "grep", "n": i, "args": ["-r", "pattern", "./src"]}} for i in range(1000)]))
' >"$work/batch.json"

# Viewers first, from seq 0, so each one sees every event live.
v=0
for addr in "${addrs[@]}"; do
  for _ in $(seq 1 "$VIEWERS"); do
    v=$((v + 1))
    (curl -sN --max-time "$LIMIT_SECS" -H "Authorization: Bearer $token" "http://$addr/api/stream?since=0" |
      awk -v want="$EVENTS" -v done="$work/viewer$v.done" \
        '/^id: / { n++; if (n >= want) { system("date +%s.%N > " done); exit } }') &
    pids+=($!)
  done
done

node_pids=("${pids[@]}")
nodes_cpu0=$(cpu_secs swarmfeed "${node_pids[@]}")
pg_cpu0=$(cpu_secs postgres)
start=$(now)
for c in $(seq 1 "$CLIENTS"); do
  addr=${addrs[$(((c - 1) % ${#addrs[@]}))]}
  (
    for b in $(seq "$c" "$CLIENTS" "$BATCHES"); do
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 60 -H "Authorization: Bearer $token" \
        -H 'content-type: application/json' --data-binary "@$work/batch.json" "http://$addr/api/events")
      [ "$code" = 201 ] || echo "batch $b on $addr: HTTP $code" >&2
    done
  ) &
  posting+=($!)
done
wait "${posting[@]}"
ingested=$(now)

deadline=$(($(date +%s) + LIMIT_SECS))
while [ "$(ls "$work"/viewer*.done 2>/dev/null | wc -l)" -lt "$v" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "viewers did not get every event in time"; exit 1; }
  sleep 0.05
done
last_viewer=$ingested
if [ "$v" -gt 0 ]; then last_viewer=$(sort -n "$work"/viewer*.done | tail -1); fi
nodes_cpu=$(python3 -c "print($(cpu_secs swarmfeed "${node_pids[@]}") - $nodes_cpu0)")
pg_cpu=$(python3 -c "print($(cpu_secs postgres) - $pg_cpu0)")
head=$(curl -s -H "Authorization: Bearer $token" "http://${addrs[0]}/readyz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["head"])')

python3 - "$NODES" "$EVENTS" "$CLIENTS" "$v" "$start" "$ingested" "$last_viewer" "$head" "$nodes_cpu" "$pg_cpu" <<'EOF'
import sys
nodes, events, clients, viewers = map(int, sys.argv[1:5])
start, ingested, viewed = map(float, sys.argv[5:8])
head = int(sys.argv[8])
nodes_cpu, pg_cpu = map(float, sys.argv[9:11])
store = "sqlite, 1 node" if nodes == 0 else f"postgres, {nodes} node{'s' if nodes > 1 else ''}"
print(f"{store}: {events} events in batches of 1000 from {clients} clients, {viewers} SSE viewers")
print(f"  stored head {head}")
print(f"  ingest   {events / (ingested - start):10.0f} events/s ({ingested - start:.2f} s)")
if viewers:
    print(f"  fan-out  {events * viewers / (viewed - start):10.0f} events/s delivered to all viewers "
          f"(last viewer done {viewed - ingested:.2f} s after the last 201)")
print(f"  cpu      swarmfeed {nodes_cpu:.1f} s, postgres {pg_cpu:.1f} s, over {viewed - start:.1f} s on {__import__('os').cpu_count()} cores")
EOF
