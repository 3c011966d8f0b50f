#!/usr/bin/env bash
# How long `GET /api/swarm?at=<seq>` takes on a log of 10 000 000 events (SQLite).
#
#   scripts/bench/time_travel_10m.sh target/release/swarmfeed [workdir]
#
# Writes the log straight into a fresh store with sqlite3 (task lifecycles of ten
# events: created, bidding, two bids, closed, assigned, started, a tool call and its
# result, then completed or, one in seven, failed; 10 ms apart), marks the board and
# the search index as caught up (this measures the swarm's past, not their backfill),
# starts the server, waits until the swarm history has stored its snapshots up to the
# head, then asks for moments: the worst (one seq before a snapshot: 9 999 events
# folded after it), a snapshot's own seq, early and late in the log, and times early,
# mid-log and near the head, each the commit time of a seq one before a snapshot.
# Prints the median of 5 requests for each. Needs sqlite3 and curl.
set -euo pipefail
bin=$(realpath "$1")
work=${2:-$(mktemp -d)}
events=10000000
data="$work/data"
rm -rf "$data" && mkdir -p "$data"

# The schema: what the server makes on its first start.
env -u SWARMFEED_DATABASE "$bin" --log-format json serve --bind 127.0.0.1:0 --data-dir "$data" >"$work/first.log" 2>&1 &
pid=$!
until grep -q 'swarmfeed ready' "$work/first.log"; do sleep 0.2; done
kill "$pid"; wait "$pid" || true

elapsed() { awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
start=$(date +%s.%N)
sqlite3 "$data/swarmfeed.db" >/dev/null <<SQL
PRAGMA journal_mode=WAL;
PRAGMA synchronous=OFF;
PRAGMA cache_size=-400000;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $events)
INSERT INTO events (seq, id, event_type, source, task_id, agent_id, ts_ms, data)
SELECT i, 'bench-' || i,
  CASE i % 10 WHEN 0 THEN 'task.created' WHEN 1 THEN 'task.bidding' WHEN 2 THEN 'bid.submitted'
    WHEN 3 THEN 'bid.submitted' WHEN 4 THEN 'auction.closed' WHEN 5 THEN 'task.assigned'
    WHEN 6 THEN 'task.started' WHEN 7 THEN 'tool.called' WHEN 8 THEN 'tool.completed'
    ELSE CASE WHEN (i / 10) % 7 = 0 THEN 'task.failed' ELSE 'task.completed' END END,
  'bench',
  't' || (i / 10),
  CASE WHEN i % 10 IN (2, 5, 6, 7, 8, 9) THEN 'a' || ((i / 10) % 50)
       WHEN i % 10 = 3 THEN 'a' || ((i / 10 + 1) % 50) ELSE NULL END,
  1764000000000 + i * 10,
  CASE i % 10 WHEN 0 THEN '{"description":"bench task ' || (i / 10) || '"}'
    WHEN 2 THEN '{"bid_sats":' || (10 + (i / 10) % 7) || '}'
    WHEN 3 THEN '{"bid_sats":' || (20 + (i / 10) % 5) || '}'
    WHEN 5 THEN '{"bid_sats":' || (10 + (i / 10) % 7) || '}'
    WHEN 7 THEN '{"tool_name":"grep"}' WHEN 8 THEN '{"tool_name":"grep"}'
    WHEN 9 THEN CASE WHEN (i / 10) % 7 = 0 THEN '{"reason":"disk full"}' ELSE '{}' END
    ELSE '{}' END
FROM n;
UPDATE log_head SET head = $events;
UPDATE board_head SET seq = $events;
COMMIT;
SQL
sqlite3 "$data/search.db" "UPDATE search_position SET seq = $events;"
echo "log of $events events written in $(elapsed) s ($(du -sh "$data" | cut -f1))"

env -u SWARMFEED_DATABASE "$bin" --log-format json serve --bind 127.0.0.1:0 --data-dir "$data" >"$work/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
until grep -q 'swarmfeed ready' "$work/serve.log"; do sleep 0.2; done
addr=$(grep -o '"addr":"[^"]*"' "$work/serve.log" | head -1 | cut -d'"' -f4)
token=$(cat "$data/admin.token")
ask() { curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -H "Authorization: Bearer $token" "http://$addr/api/swarm?at=$1"; }

start=$(date +%s.%N)
until [ "$(ask $events | cut -d' ' -f1)" = 200 ]; do sleep 1; done
echo "swarm history folded and stored its snapshots up to the head in $(elapsed) s"

for at in 9999999 9990000 5009999 10009 $events 2025-11-24T16:01:39.990Z 2025-11-25T06:01:39.990Z 2025-11-25T19:41:39.990Z; do
  times=$(for _ in 1 2 3 4 5; do ask "$at"; done)
  codes=$(echo "$times" | cut -d' ' -f1 | sort -u | tr '\n' ' ')
  median=$(echo "$times" | cut -d' ' -f2 | sort -n | sed -n 3p)
  echo "at=$at: HTTP $codes median ${median} s"
done
