#!/usr/bin/env python3
"""Summary of a latency-under-load run: the bench's ack and e2e latency, and
the per-stage histograms of the nodes' /metrics (docs/operations.md) as
bucket bounds: where a message waited between its send and its last delivery.

    stages.py OUT   # reads OUT.json, OUT.n1.metrics, OUT.n2.metrics, OUT.cpu
"""
import collections
import json
import re
import sys

STAGES = [
    "parley_commit_queue_seconds",  # waiting for the group committer
    "parley_store_append_seconds",  # the append transaction
    "parley_bus_publish_seconds",   # publish queue + Redis round trip
    "parley_hub_delivery_seconds",  # room task queue + reorder hold → outboxes
]


def main(prefix):
    buckets = {n: collections.defaultdict(float) for n in STAGES}
    count = collections.defaultdict(float)
    total = collections.defaultdict(float)
    for path in (prefix + ".n1.metrics", prefix + ".n2.metrics"):
        for line in open(path):
            for n in STAGES:
                m = re.match(n + r'_bucket\{le="([^"]+)"\} (\S+)', line)
                if m:
                    buckets[n][m.group(1)] += float(m.group(2))
                m = re.match(n + r"_(count|sum) (\S+)", line)
                if m:
                    (count if m.group(1) == "count" else total)[n] += float(m.group(2))

    def quantile(n, q):
        for le, c in sorted((float(k), v) for k, v in buckets[n].items()):
            if c >= q * count[n]:
                return f"{le * 1000:g}" if le != float("inf") else "inf"
        return "-"

    d = json.load(open(prefix + ".json"))
    a, e = d["latency_ms"]["ack"], d["latency_ms"]["e2e"]
    print(f"{prefix}: sent {d['sent']} acked {d['acked']} lost {d['lost']} dup {d['duplicates']}; "
          f"ack p50/p99 {a['p50']:.1f}/{a['p99']:.1f} ms; e2e p50/p99 {e['p50']:.1f}/{e['p99']:.1f} ms")
    for n in STAGES:
        if count[n]:
            print(f"  {n}: n={int(count[n])} mean {total[n] / count[n] * 1000:.2f} ms, "
                  f"p50 <= {quantile(n, 0.5)} ms, p99 <= {quantile(n, 0.99)} ms")
    print("  " + open(prefix + ".cpu").read().strip())


if __name__ == "__main__":
    main(sys.argv[1])
