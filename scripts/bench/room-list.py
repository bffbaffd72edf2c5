#!/usr/bin/env python3
"""The latency of GET /api/rooms for a user behind in ROOMS rooms.

The user creates ROOMS public rooms (so is a member of each); other users
post three messages in each, one mentioning the user; then the user asks
for the room list GETS times, and the script checks every count (3 unread,
1 mention) and prints the median, p90 and minimum in milliseconds as JSON.
Needs a node whose JWT secret is SECRET (tokens are minted here, HS256).

usage: scripts/bench/room-list.py BASE_URL SECRET ROOMS [GETS]
       (docs/benchmarks.md, "The room list of a user behind in 300 rooms")
"""
import base64, hashlib, hmac, json, statistics, sys, time, urllib.request

base, secret, rooms = sys.argv[1], sys.argv[2], int(sys.argv[3])
gets = int(sys.argv[4]) if len(sys.argv) > 4 else 40
run = str(int(time.time()))[-6:]

def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def token(user):
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": user, "exp": int(time.time()) + 3600}).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"

def call(method, path, tok, body=None):
    req = urllib.request.Request(base + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"authorization": f"Bearer {tok}", "content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")

reader = f"reader{run}"
rt = token(reader)
names = [f"u{run}-{i}" for i in range(rooms)]
for n in names:
    call("POST", "/api/rooms", rt, {"room": n})
# Three messages from others in every room, one mentioning the reader;
# 25 posts per writer stay inside the send burst.
posts = [(n, k) for n in names for k in range(3)]
for w in range(0, len(posts), 25):
    wt = token(f"writer{run}-{w // 25}")
    for n, k in posts[w:w + 25]:
        text = f"hello @{reader}" if k == 0 else f"message {k}"
        call("POST", f"/api/rooms/{n}/messages", wt, {"text": text})
lat = []
for _ in range(gets):
    t = time.perf_counter()
    listed = call("GET", "/api/rooms", rt)
    lat.append((time.perf_counter() - t) * 1000)
mine = [r for r in listed if r["room"] in set(names)]
assert len(mine) == rooms and all(r["unread"] == 3 and r["mentions"] == 1 for r in mine), mine[:3]
lat.sort()
print(json.dumps({"rooms": rooms, "gets": gets, "median_ms": round(statistics.median(lat), 1),
                  "p90_ms": round(lat[int(0.9 * len(lat)) - 1], 1), "min_ms": round(lat[0], 1)}))
