# Bounded ingest load: N threads post prebuilt batches of 1000 events over keep-alive
# connections for at most `secs` seconds or `total` events; prints events/s.
import http.client, json, sys, threading, time
host, port = sys.argv[1].split(":"); port = int(port)
threads, secs, total = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
def body(t, b):
    return json.dumps([{"event_type": "tool.called", "source": f"bench{t}", "task_id": f"t{b % 50}", "agent_id": f"a{t}",
                        "data": {"tool_name": "grep", "args": ["-r", "pattern", "src/"], "n": i}} for i in range(1000)]).encode()
bodies = [[body(t, b) for b in range(20)] for t in range(threads)]
done = [0] * threads
stop = time.time() + secs
def run(t):
    c = http.client.HTTPConnection(host, port)
    b = 0
    while time.time() < stop and sum(done) < total:
        c.request("POST", "/api/events", bodies[t][b % 20], {"content-type": "application/json"})
        r = c.getresponse(); r.read()
        if r.status == 201: done[t] += 1000
        b += 1
start = time.time()
ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
el = time.time() - start
print(json.dumps({"events": sum(done), "secs": round(el, 2), "events_per_sec": round(sum(done) / el)}))
