# Posts 100 000 events (1 000 task lifecycles among filler) and reports how long a
# restart takes to rebuild the swarm projection, from the server's own log line.
import json, subprocess, sys, time, urllib.request, tempfile, re, os
binary = sys.argv[1]
data = tempfile.mkdtemp()
def start():
    p = subprocess.Popen([binary, "--log-format", "json", "serve", "--bind", "127.0.0.1:0", "--data-dir", data,
                          "--bid-window", "3600", "--no-auth", "--requests-per-ip-per-sec", "0", "--ingest-rate-per-token", "0"],
                         stderr=subprocess.PIPE, text=True)
    addr = None; rebuilt = None
    for line in p.stderr:
        v = json.loads(line)
        f = v.get("fields", {})
        if f.get("message") == "swarmfeed ready": addr = f["addr"]
        if f.get("message") == "swarm projection rebuilt": rebuilt = f["elapsed_ms"]
        if addr and rebuilt is not None: break
    return p, addr, rebuilt
p, addr, _ = start()
for b in range(100):
    batch = [{"event_type": "agent.joined", "source": "ext", "agent_id": f"ag{b}", "data": {"name": f"Agent {b}"}}]
    for k in range(10):
        t = f"t{b}-{k}"; a = f"ag{b}"
        batch += [{"event_type": "task.created", "source": "ext", "task_id": t, "data": {"description": "d"}},
                  {"event_type": "task.bidding", "source": "ext", "task_id": t},
                  {"event_type": "bid.submitted", "source": "ext", "task_id": t, "agent_id": a, "data": {"bid_sats": k + 1}},
                  {"event_type": "auction.closed", "source": "ext", "task_id": t},
                  {"event_type": "task.assigned", "source": "ext", "task_id": t, "agent_id": a, "data": {"bid_sats": k + 1}},
                  {"event_type": "task.completed", "source": "ext", "task_id": t, "agent_id": a, "data": {"result": "ok"}}]
    while len(batch) < 1000:
        batch.append({"event_type": "tool.called", "source": "ext", "agent_id": f"ag{b}", "data": {"tool_name": "grep", "args": ["-r", "x"]}})
    req = urllib.request.Request(f"http://{addr}/api/events", data=json.dumps(batch).encode(), headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()
p.kill(); p.wait()
times = []
for _ in range(3):
    p, addr, rebuilt = start(); times.append(rebuilt); p.kill(); p.wait()
print(json.dumps({"events": 100000, "rebuild_ms_runs": times, "median_ms": sorted(times)[1]}))
