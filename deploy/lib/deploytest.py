#!/usr/bin/env python3
"""Checks behind deploy/test.sh. Each subcommand is one check: it prints what
it found and exits 0 (pass) or 1 (fail). test.sh prints the PASS/FAIL lines.

Run with the venv's Python (PyYAML, kubernetes-validate, websockets)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import fnmatch
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

# --------------------------------------------------------------------- helpers


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def find(docs, kind, name=None, prefix=False):
    out = []
    for d in docs:
        if d.get("kind") != kind:
            continue
        n = d["metadata"]["name"]
        if name is None or n == name or (prefix and n.startswith(name + "-")):
            out.append(d)
    return out


def one(docs, kind, name, prefix=False):
    found = find(docs, kind, name, prefix)
    if len(found) != 1:
        raise SystemExit(f"expected exactly one {kind} {name!r}, found {len(found)}")
    return found[0]


def parley_container(deploy):
    for c in deploy["spec"]["template"]["spec"]["containers"]:
        if c["name"] == "parley":
            return c
    raise SystemExit(f"Deployment {deploy['metadata']['name']} has no container 'parley'")


def config_of(docs, container):
    """The data of every ConfigMap the container's envFrom names."""
    data = {}
    for ref in container.get("envFrom", []):
        if "configMapRef" in ref:
            data.update(one(docs, "ConfigMap", ref["configMapRef"]["name"])["data"])
    return data


def parse_duration(text):
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|m|h|d)?\s*", str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    mult = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return float(m.group(1)) * mult


def help_vars(help_file):
    return set(re.findall(r"\bPARLEY_[A-Z0-9_]+\b", Path(help_file).read_text()))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=3, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, ConnectionError, socket.timeout, OSError) as e:
        return None, str(e)


def fail(msg):
    print(f"  ✗ {msg}")
    return 1


def ok(msg):
    print(f"  ✓ {msg}")
    return 0


# ------------------------------------------------------------ 2. validation

# Custom resources have no schema in kubernetes-validate's bundle. They are
# skipped here, with the reason, and checked by `crd-refs` instead.
CRD_SKIPS = {
    "monitoring.coreos.com/v1": "Prometheus Operator CRD (ServiceMonitor, PrometheusRule): "
    "no schema in kubernetes-validate; selector/port checked by crd-refs",
    # The operator publishes its CRDs only on GitHub and in its images; no
    # package of crates.io, PyPI, npm or Debian carries them, so they cannot
    # be vendored on this machine (docs/operations.md says so).
    "postgresql.cnpg.io/v1": "CloudNativePG CRD (Cluster): its schema is not on a registry reachable here; "
    "the fields Parley relies on are checked by `cnpg`",
}


def cmd_validate(args):
    import kubernetes_validate

    bad = 0
    for path in args.files:
        for d in load_docs(path):
            what = f"{Path(path).stem}: {d['kind']}/{d['metadata'].get('namespace', '-')}/{d['metadata']['name']}"
            if d["apiVersion"] in CRD_SKIPS:
                print(f"  - skipped {what}: {CRD_SKIPS[d['apiVersion']]}")
                continue
            try:
                kubernetes_validate.validate(d, args.version, strict=True)
            except Exception as e:  # ValidationError, SchemaNotFoundError, …
                msg = getattr(e, "message", str(e))
                path_ = "/".join(str(p) for p in getattr(e, "path", []) or [])
                bad += fail(f"{what}: {msg} {('at ' + path_) if path_ else ''}")
                continue
            if args.verbose:
                ok(what)
    print(f"  kubernetes {args.version}: {'all valid' if not bad else f'{bad} invalid'} (strict)")
    return 1 if bad else 0


# ---------------------------------------------------------------- 3. checkov


def cmd_checkov_gate(args):
    skips = yaml.safe_load(Path(args.skips).read_text())["skips"]
    for s in skips:
        if not s.get("reason", "").strip():
            return fail(f"skip {s['check']} has no reason")
    def failed_checks(path):
        raw = json.loads(Path(path).read_text() or "[]")
        passed, failed = 0, []
        for r in raw if isinstance(raw, list) else [raw]:
            if isinstance(r, dict):
                res = r.get("results", {})
                passed += len(res.get("passed_checks", []))
                failed += res.get("failed_checks", [])
        return passed, failed

    def matching(cid, rid):
        return next((i for i, s in enumerate(skips)
                     if s["check"] == cid and any(fnmatch.fnmatch(rid, g) for g in s["resources"])), None)

    passed, failed = failed_checks(args.report)
    used = [0] * len(skips)
    # Reports gated elsewhere (an earlier step): they only keep their skips from looking stale.
    for other in args.usage_from:
        for f in failed_checks(other)[1]:
            i = matching(f["check_id"], f["resource"])
            if i is not None:
                used[i] += 1
    unexpected = []
    accepted = {}  # skip index -> resource ids
    for f in failed:
        cid, rid = f["check_id"], f["resource"]
        hit = matching(cid, rid)
        if hit is None:
            unexpected.append(f"{cid} {rid}: {f.get('check_name', '')} ({f.get('file_path', '')})")
        else:
            used[hit] += 1
            accepted.setdefault(hit, set()).add(rid)
    for i, rids in sorted(accepted.items()):
        reason = skips[i]["reason"].split(". ")[0].rstrip(".")
        print(f"  - skipped {skips[i]['check']} on {', '.join(sorted(rids))}: {reason}.")
    for i, s in enumerate(skips):
        if not used[i] and not args.no_stale:
            print(f"  ! stale skip (matches nothing now, remove it): {s['check']} {s['resources']}")
    for u in unexpected:
        fail(u)
    print(f"  checkov: {passed} passed, {len(failed) - len(unexpected)} skipped with a reason, {len(unexpected)} failed")
    return 1 if unexpected or not passed else 0


# ------------------------------------------------- 4. manifests vs. binary


def cmd_config_vars(args):
    known = help_vars(args.help)
    if len(known) < 5:
        return fail(f"`parley serve --help` lists only {sorted(known)}: cannot check")
    bad = 0
    covered = set()
    for path in args.files:
        docs = load_docs(path)
        for dep in find(docs, "Deployment", "parley"):
            c = parley_container(dep)
            cfg = config_of(docs, c)
            env = {e["name"] for e in c.get("env", [])}
            for k in sorted(cfg):
                if k.startswith("PARLEY_"):
                    covered.add(k)
                    if k not in known:
                        bad += fail(f"{Path(path).stem}: ConfigMap key {k} is not a setting of `parley serve`")
                else:
                    bad += fail(f"{Path(path).stem}: ConfigMap key {k} is not a PARLEY_* setting")
            for k in sorted(env):
                if k.startswith("PARLEY_"):
                    covered.add(k)
                    if k not in known:
                        bad += fail(f"{Path(path).stem}: Deployment env {k} is not a setting of `parley serve`")
    if not covered:
        return fail("no PARLEY_* setting found in the rendered manifests")
    missing = sorted(known - covered)
    if not bad:
        print(f"  {len(covered)} PARLEY_* settings in the manifests, all known to `parley serve --help` ({len(known)} settings)")
    if missing:
        print(f"  ! settings of the binary the manifests leave at their default: {', '.join(missing)}")
    return 1 if bad else 0


def resolve_port(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise SystemExit(f"port name {port!r} not declared by container {container['name']}")


def cmd_ports(args):
    bad = 0
    for path in args.files:
        docs = load_docs(path)
        name = Path(path).stem
        for dep in find(docs, "Deployment", "parley"):
            before = bad
            c = parley_container(dep)
            cfg = config_of(docs, c)
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            listen = env.get("PARLEY_LISTEN") or cfg.get("PARLEY_LISTEN") or "0.0.0.0:8080"
            port = int(listen.rsplit(":", 1)[1])
            host = listen.rsplit(":", 1)[0]
            http = resolve_port(c, "http")
            if http != port:
                bad += fail(f"{name}: containerPort {http} != PARLEY_LISTEN port {port}")
            if host not in ("0.0.0.0", "[::]", "::"):
                bad += fail(f"{name}: PARLEY_LISTEN {listen} does not listen on all interfaces: the kubelet and Services cannot reach it")
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                p = c.get(probe)
                if not p:
                    bad += fail(f"{name}: no {probe}")
                    continue
                pport = resolve_port(c, p["httpGet"]["port"])
                if pport != port:
                    bad += fail(f"{name}: {probe} port {pport} != {port}")
            ann = dep["spec"]["template"]["metadata"].get("annotations", {})
            if ann.get("prometheus.io/port") and int(ann["prometheus.io/port"]) != port:
                bad += fail(f"{name}: prometheus.io/port {ann['prometheus.io/port']} != {port}")
            sel = dep["spec"]["selector"]["matchLabels"]
            svcs = [s for s in find(docs, "Service")
                    if s["spec"].get("selector") and all(sel.get(k) == v for k, v in s["spec"]["selector"].items())]
            if not svcs:
                bad += fail(f"{name}: no Service selects the Parley pods")
            for s in svcs:
                for sp in s["spec"]["ports"]:
                    if resolve_port(c, sp["targetPort"]) != port:
                        bad += fail(f"{name}: Service {s['metadata']['name']} targets {sp['targetPort']}, not {port}")
            labels = dep["spec"]["template"]["metadata"]["labels"]
            if not all(labels.get(k) == v for k, v in sel.items()):
                bad += fail(f"{name}: the Deployment's selector does not match its pod labels")
            for kind in ("PodDisruptionBudget",):
                for o in find(docs, kind):
                    if o["spec"]["selector"]["matchLabels"] != sel:
                        bad += fail(f"{name}: {kind} {o['metadata']['name']} selects {o['spec']['selector']['matchLabels']}, not the Parley pods")
            for hpa in find(docs, "HorizontalPodAutoscaler"):
                if hpa["spec"]["scaleTargetRef"]["name"] != dep["metadata"]["name"]:
                    bad += fail(f"{name}: HPA targets {hpa['spec']['scaleTargetRef']['name']}")
            for ing in find(docs, "Ingress"):
                for rule in ing["spec"]["rules"]:
                    for p in rule["http"]["paths"]:
                        b = p["backend"]["service"]
                        svc = [s for s in svcs if s["metadata"]["name"] == b["name"]]
                        if not svc or not any(sp.get("name") == b["port"].get("name") or sp.get("port") == b["port"].get("number") for sp in svc[0]["spec"]["ports"]):
                            bad += fail(f"{name}: Ingress backend {b} is not a port of a Parley Service")
            if bad == before:
                print(f"  {name}: PARLEY_LISTEN={listen}, containerPort {http}, probes, Services, PDB, HPA{', Ingress' if find(docs, 'Ingress') else ''} agree")
    return 1 if bad else 0


def cmd_drain(args):
    bad = 0
    for path in args.files:
        docs = load_docs(path)
        name = Path(path).stem
        for dep in find(docs, "Deployment", "parley"):
            spec = dep["spec"]["template"]["spec"]
            c = parley_container(dep)
            cfg = config_of(docs, c)
            grace = parse_duration(cfg.get("PARLEY_DRAIN_GRACE", "3s"))
            spread = parse_duration(cfg.get("PARLEY_DRAIN_SPREAD", "5s"))
            timeout = parse_duration(cfg.get("PARLEY_DRAIN_TIMEOUT", "20s"))
            pre = c.get("lifecycle", {}).get("preStop", {})
            sleep = pre.get("sleep", {}).get("seconds", 0)
            tgps = spec.get("terminationGracePeriodSeconds", 30)
            need = sleep + timeout + args.margin
            print(f"  {name}: preStop {sleep}s + drain timeout {timeout:g}s + margin {args.margin}s = {need:g}s "
                  f"vs terminationGracePeriodSeconds {tgps}s; grace {grace:g}s + spread {spread:g}s vs timeout {timeout:g}s")
            if not sleep:
                bad += fail(f"{name}: no preStop sleep (kube-proxy/ingress need time to drop the pod)")
            if tgps < need:
                bad += fail(f"{name}: terminationGracePeriodSeconds {tgps} < {need:g}: the kubelet would SIGKILL mid-drain")
            if grace + spread > timeout:
                bad += fail(f"{name}: PARLEY_DRAIN_GRACE + PARLEY_DRAIN_SPREAD ({grace + spread:g}s) > PARLEY_DRAIN_TIMEOUT ({timeout:g}s)")
            ru = dep["spec"].get("strategy", {}).get("rollingUpdate", {})
            if str(ru.get("maxUnavailable", "25%")) not in ("0", "0%"):
                bad += fail(f"{name}: rollingUpdate.maxUnavailable should be 0 (start a new pod before draining an old one)")
    return 1 if bad else 0


def cmd_db_capacity(args):
    """Every node at its pool size, at the HPA's maximum, fits into
    PostgreSQL's max_connections (with room for admin and backups)."""
    bad = 0
    for path in args.files:
        docs = load_docs(path)
        name = Path(path).stem
        dep = one(docs, "Deployment", "parley")
        cfg = config_of(docs, parley_container(dep))
        pool = int(cfg.get("PARLEY_DATABASE_POOL", args.default_pool))
        pg = find(docs, "StatefulSet", "parley-postgres")
        if not pg:
            print(f"  {name}: no in-cluster PostgreSQL (external: size its max_connections for the nodes x pool {pool})")
            continue
        hpas = find(docs, "HorizontalPodAutoscaler", "parley")
        hpa = hpas[0] if hpas else {"spec": {"maxReplicas": dep["spec"].get("replicas", 1)}}
        pargs = pg[0]["spec"]["template"]["spec"]["containers"][0].get("args", [])
        maxc = 100
        for a in pargs:
            m = re.fullmatch(r"max_connections=(\d+)", str(a))
            if m:
                maxc = int(m.group(1))
        need = hpa["spec"]["maxReplicas"] * pool + args.reserve
        print(f"  {name}: {hpa['spec']['maxReplicas']} nodes x pool {pool} + {args.reserve} reserved = {need} <= max_connections {maxc}")
        if need > maxc:
            bad += fail(f"{name}: PostgreSQL would refuse connections at full scale")
    return 1 if bad else 0


def cmd_crd_refs(args):
    """ServiceMonitor → exactly one Service, with the named port; the HPA
    variant's metric is the one the adapter rule serves."""
    base = load_docs(args.base)
    mon = load_docs(args.monitoring)
    bad = 0
    for sm in find(mon, "ServiceMonitor"):
        sel = sm["spec"]["selector"]["matchLabels"]
        svcs = [s for s in find(base, "Service") if all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
        if len(svcs) != 1:
            bad += fail(f"ServiceMonitor {sm['metadata']['name']} selects {len(svcs)} Services (want exactly 1: each pod scraped once)")
            continue
        ports = {p.get("name") for p in svcs[0]["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            if ep["port"] not in ports:
                bad += fail(f"ServiceMonitor port {ep['port']} not on Service {svcs[0]['metadata']['name']}")
        ns = sm["spec"].get("namespaceSelector", {}).get("matchNames", [])
        if ns and svcs[0]["metadata"]["namespace"] not in ns:
            bad += fail(f"ServiceMonitor watches {ns}, the Service is in {svcs[0]['metadata']['namespace']}")
        ok(f"ServiceMonitor {sm['metadata']['name']} -> Service {svcs[0]['metadata']['name']} port {[e['port'] for e in sm['spec']['endpoints']]} path {[e.get('path') for e in sm['spec']['endpoints']]}")
    adapter = [c for c in find(mon, "ConfigMap") if "config.yaml" in c.get("data", {})]
    served = set()
    for c in adapter:
        for rule in yaml.safe_load(c["data"]["config.yaml"])["rules"]:
            served.add(rule["name"]["as"])
    if args.hpa:
        hpa = one(load_docs(args.hpa), "HorizontalPodAutoscaler", "parley")
        pods = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
        kinds = [m["type"] for m in hpa["spec"]["metrics"]]
        if not pods:
            bad += fail("the hpa-connections component added no Pods metric")
        for p in pods:
            if p not in served:
                bad += fail(f"HPA scales on {p}, which the prometheus-adapter rules do not serve ({served})")
            else:
                ok(f"HPA metric {p} is served by the prometheus-adapter rule; HPA metrics: {kinds}")
    return 1 if bad else 0


def cmd_cnpg(args):
    """The CloudNativePG addon: a Cluster that keeps an acked message through
    the loss of its primary (3+ instances, synchronous replication with
    dataDurability required, one instance per Kubernetes node), and nodes
    whose PARLEY_DATABASE_URL is the operator's `uri` of that Cluster (its
    -rw Service), with the base's single PostgreSQL gone."""
    bad = 0
    clusters = [d for d in load_docs(args.cluster) if d["kind"] == "Cluster" and d["apiVersion"] == "postgresql.cnpg.io/v1"]
    if len(clusters) != 1:
        return fail(f"want one CloudNativePG Cluster, found {len(clusters)}")
    c = clusters[0]
    name, spec = c["metadata"]["name"], c["spec"]
    sync = spec.get("postgresql", {}).get("synchronous", {})
    instances = spec.get("instances", 1)
    if instances < 3:
        bad += fail(f"Cluster {name}: {instances} instances; want 3 (a primary and two standbys)")
    if sync.get("method") not in ("any", "first") or int(sync.get("number", 0)) < 1:
        bad += fail(f"Cluster {name}: no synchronous standby (spec.postgresql.synchronous = {sync})")
    elif int(sync["number"]) >= instances:
        bad += fail(f"Cluster {name}: {sync['number']} synchronous standbys of {instances} instances: one lost instance stops all commits")
    if sync.get("dataDurability", "required") != "required":
        bad += fail(f"Cluster {name}: dataDurability {sync.get('dataDurability')}: acks without a standby (document it if intended)")
    if spec.get("affinity", {}).get("podAntiAffinityType") != "required":
        bad += fail(f"Cluster {name}: instances may share a Kubernetes node (affinity.podAntiAffinityType != required)")
    if not spec.get("storage", {}).get("size"):
        bad += fail(f"Cluster {name}: no storage size (PVCs)")
    for k in ("database", "owner"):
        if not spec.get("bootstrap", {}).get("initdb", {}).get(k):
            bad += fail(f"Cluster {name}: bootstrap.initdb.{k} missing")
    nodes = load_docs(args.nodes)
    dep = one(nodes, "Deployment", "parley")
    env = {e["name"]: e for e in parley_container(dep).get("env", [])}
    url = env.get("PARLEY_DATABASE_URL", {})
    ref = url.get("valueFrom", {}).get("secretKeyRef", {})
    if "value" in url or ref != {"name": f"{name}-app", "key": "uri"}:
        bad += fail(f"nodes: PARLEY_DATABASE_URL = {url}; want the uri of Secret {name}-app (the -rw Service)")
    left = [f"{d['kind']}/{d['metadata']['name']}" for d in nodes
            if d["metadata"]["name"].startswith("parley-postgres") or d["metadata"]["name"] == "postgres-from-parley"]
    if left:
        bad += fail(f"nodes: the base's PostgreSQL is still there: {left}")
    pols = [p for p in find(load_docs(args.cluster), "NetworkPolicy")
            if p["spec"]["podSelector"].get("matchLabels", {}).get("cnpg.io/cluster") == name]
    if not pols:
        bad += fail(f"no NetworkPolicy admits the nodes to Cluster {name} (the base denies all ingress)")
    if not bad:
        ok(f"Cluster {name}: {instances} instances, synchronous {sync.get('method').upper()} {sync.get('number')}, "
           f"dataDurability {sync.get('dataDurability', 'required')}, one per node; "
           f"nodes use Secret {name}-app/uri (-rw Service); base StatefulSet removed")
    return 1 if bad else 0


METRIC_RE = re.compile(r"\b(parley_[a-z0-9_]+)\b")


def metric_names_in(paths):
    names = {}
    for p in paths:
        for m in METRIC_RE.findall(Path(p).read_text()):
            base = re.sub(r"_(bucket|sum|count)$", "", m)
            names.setdefault(base, set()).add(Path(p).name)
    return names


def cmd_metric_names(args):
    blob = Path(args.binary).read_bytes()
    names = metric_names_in(args.files)
    bad = 0
    for n in sorted(names):
        if n.encode() not in blob:
            bad += fail(f"{n} (used in {', '.join(sorted(names[n]))}) does not occur in the binary")
    for req in args.require:
        if req not in names:
            bad += fail(f"{req} is not used by the dashboard/rules")
    print(f"  {len(names)} metric names used by dashboard, alerts and adapter; all found in the binary: {', '.join(sorted(names))}")
    return 1 if bad else 0


def cmd_dockerfiles(args):
    def block(p):
        text = Path(p).read_text()
        m = re.search(r"# final-stage: begin.*?\n(.*)# final-stage: end", text, re.S)
        if not m:
            raise SystemExit(f"{p}: no final-stage markers")
        return m.group(1)
    a, b = block(args.dockerfile), block(args.local)
    if a != b:
        import difflib
        sys.stdout.writelines(difflib.unified_diff(a.splitlines(True), b.splitlines(True), "Dockerfile", "Dockerfile.local"))
        return fail("the final stages of Dockerfile and Dockerfile.local differ")
    text = Path(args.dockerfile).read_text()
    need = {
        "multi-stage": len(re.findall(r"^FROM ", text, re.M)) >= 2,
        "final FROM scratch/distroless": bool(re.search(r"^FROM (scratch|gcr\.io/distroless/\S+)\s*$", text, re.M)),
        "numeric non-root USER": bool(re.search(r"^USER [1-9][0-9]{3,}(:[0-9]+)?\s*$", a, re.M)),
        "VOLUME /data": "VOLUME" in a and "/data" in a,
        "SQLite on /data": "sqlite:///data/" in a,
        "OCI labels": a.count("org.opencontainers.image.") >= 5,
        "musl target": "musl" in text,
    }
    bad = sum(fail(k) for k, v in need.items() if not v)
    ok("final stages identical; " + ", ".join(k for k, v in need.items() if v))
    return 1 if bad else 0


def cmd_promql(args):
    """PromQL of the dashboard and the alerts, parsed by promtool."""
    exprs = []
    dash = json.loads(Path(args.dashboard).read_text())

    def walk(o):
        if isinstance(o, dict):
            if "expr" in o and (o.get("datasource", {}) or {}).get("type") != "loki":
                exprs.append(o["expr"])
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(dash)
    for d in load_docs(args.rules):
        if d["kind"] == "PrometheusRule":
            for g in d["spec"]["groups"]:
                exprs += [r["expr"] for r in g["rules"]]
    rules = []
    for i, e in enumerate(exprs):
        e = e.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$namespace", "parley")
        rules.append({"record": f"check:expr_{i}", "expr": e})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "syntax", "rules": rules}]}, f)
    r = subprocess.run([args.promtool, "check", "rules", f.name], capture_output=True, text=True)
    os.unlink(f.name)
    print("  " + (r.stdout + r.stderr).strip().replace("\n", "\n  "))
    if r.returncode:
        return fail("promtool rejected an expression")
    return ok(f"{len(exprs)} PromQL expressions (dashboard + alerts) parse")


def cmd_compose(args):
    known = help_vars(args.help)
    c = yaml.safe_load(Path(args.compose).read_text())
    svcs = c["services"]
    bad = 0
    nodes = [n for n, s in svcs.items() if "PARLEY_DATABASE_URL" in (s.get("environment") or {})]
    if len(nodes) < 3:
        bad += fail(f"compose runs {len(nodes)} Parley nodes, want 3")
    for n in nodes:
        s = svcs[n]
        for k in s["environment"]:
            if k.startswith("PARLEY_") and k not in known:
                bad += fail(f"{n}: {k} is not a setting of `parley serve`")
        if not s.get("read_only"):
            bad += fail(f"{n}: not read_only")
        if not str(s.get("user", "")).split(":")[0].isdigit() or s.get("user", "").startswith("0"):
            bad += fail(f"{n}: no numeric non-root user")
        g = parse_duration(s.get("stop_grace_period", "10s"))
        t = parse_duration(s["environment"].get("PARLEY_DRAIN_TIMEOUT", "20s"))
        if g < t:
            bad += fail(f"{n}: stop_grace_period {g:g}s < PARLEY_DRAIN_TIMEOUT {t:g}s")
        if not str(s["environment"]["PARLEY_DATABASE_URL"]).startswith("postgres://"):
            bad += fail(f"{n}: not on PostgreSQL")
        if "PARLEY_REDIS_URL" not in s["environment"]:
            bad += fail(f"{n}: no Redis bus")
    for need in ("postgres", "redis"):
        s = svcs.get(need)
        if not s:
            bad += fail(f"no {need} service")
            continue
        if "healthcheck" not in s:
            bad += fail(f"{need}: no healthcheck")
        if not any(":" in str(v) for v in s.get("volumes", [])):
            bad += fail(f"{need}: no volume")
    ng = [n for n, s in svcs.items() if "nginx" in str(s.get("image", ""))]
    if not ng:
        bad += fail("no nginx service")
    conf = Path(args.nginx).read_text()
    upstream = set(re.findall(r"^\s*server\s+([\w.-]+):8080", conf, re.M))
    if upstream != set(nodes):
        bad += fail(f"nginx upstream {sorted(upstream)} != compose nodes {sorted(nodes)}")
    for must in ("ip_hash", "proxy_set_header Upgrade $http_upgrade", "proxy_set_header Connection $connection_upgrade",
                 "proxy_http_version 1.1", "proxy_read_timeout"):
        if must not in conf:
            bad += fail(f"nginx.conf lacks {must}")
    if not bad:
        ok(f"compose: nginx + nodes {', '.join(nodes)} + postgres + redis; nginx upstream matches; env known to the binary")
    return 1 if bad else 0


# -------------------------------------------- 4. a real node answers probes


def cmd_probe_node(args):
    """Runs the binary with the rendered ConfigMap's settings (SQLite instead
    of PostgreSQL/Redis, which do not run here) and asks every path the
    manifests point at (probes, metrics) for a 200."""
    docs = load_docs(args.rendered)
    dep = one(docs, "Deployment", "parley")
    c = parley_container(dep)
    cfg = config_of(docs, c)
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        paths[probe] = c[probe]["httpGet"]["path"]
    ann = dep["spec"]["template"]["metadata"].get("annotations", {})
    if "prometheus.io/path" in ann:
        paths["prometheus.io/path"] = ann["prometheus.io/path"]
    for p in args.extra_path:
        paths[p] = p
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="parley-probe-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(cfg)
    env.update({
        "PARLEY_LISTEN": f"127.0.0.1:{port}",
        "PARLEY_DATABASE_URL": f"sqlite://{tmp}/parley.db",
        "PARLEY_JWT_SECRET": "probe-test-secret",
        "PARLEY_NODE_ID": "probe-node",
    })
    env.pop("PARLEY_REDIS_URL", None)
    log = open(os.path.join(tmp, "node.log"), "w+")
    proc = subprocess.Popen([args.binary, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    bad = 0
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            code, _ = http_get(base + paths["startupProbe"], timeout=1)
            if code == 200 or proc.poll() is not None:
                break
            time.sleep(0.2)
        for what, p in paths.items():
            code, body = http_get(base + p)
            if code == 200:
                ok(f"{what} GET {p} -> 200 {body.strip()[:60]!r}")
            else:
                bad += fail(f"{what} GET {p} -> {code} {body.strip()[:200]!r}")
        code, body = http_get(base + paths.get("prometheus.io/path", "/metrics"))
        if code == 200 and "# TYPE" not in body and "parley_" not in body:
            bad += fail("/metrics is not Prometheus text")
        # SIGTERM: readiness must turn 503 at once, then the node exits 0.
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        code, _ = http_get(base + paths["readinessProbe"], timeout=1)
        if code == 503:
            ok(f"after SIGTERM {paths['readinessProbe']} -> 503 (draining)")
        else:
            bad += fail(f"after SIGTERM {paths['readinessProbe']} -> {code}, want 503")
        limit = parse_duration(cfg.get("PARLEY_DRAIN_TIMEOUT", "20s")) + 5
        try:
            rc = proc.wait(timeout=limit)
            if rc == 0:
                ok(f"node exited 0 after its drain (within PARLEY_DRAIN_TIMEOUT + 5 s)")
            else:
                bad += fail(f"node exited {rc} after SIGTERM")
        except subprocess.TimeoutExpired:
            bad += fail(f"node still running {limit:g}s after SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.seek(0)
        lines = log.read().splitlines()
        if bad:
            print("  node log:\n    " + "\n    ".join(lines[-20:]))
        else:
            try:
                json.loads(lines[0])
                ok("logs are JSON lines (PARLEY_LOG_FORMAT=json), what the log shipper parses")
            except (ValueError, IndexError):
                bad += fail(f"first log line is not JSON: {lines[:1]}")
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if bad else 0


# ------------------------------------------------------------ 3b. Helm chart
#
# The chart (deploy/helm/parley) is rendered and linted by Helm's own engine:
# helm-python-sdk binds Helm v4's Go SDK (libhelm_c) with ctypes, so
# `Chart.render` is `helm template` and `lint` is `helm lint`, offline.


def helm_sdk():
    import helm_python

    return helm_python


def helm_value_sets(args_sets):
    """NAME=FILE arguments (FILE empty: the chart's defaults) -> [(name, values dict or None, file)]."""
    helm = helm_sdk()
    out = []
    for spec in args_sets:
        name, _, path = spec.partition("=")
        values = helm.values_from_yaml(Path(path).read_text()) if path else None
        out.append((name, values, path))
    return out


def is_hook(d):
    return "helm.sh/hook" in (d.get("metadata", {}).get("annotations") or {})


def cmd_helm_render(args):
    """`helm template RELEASE CHART -n NS -f FILE` for every value set, into
    OUT/NAME.yaml (every manifest, tests included, as helm template prints
    them) and OUT/NAME.NOTES.txt."""
    helm = helm_sdk()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bad = 0
    with helm.Chart.load(args.chart) as chart:
        print(f"  chart {chart.name} {chart.version} (appVersion {chart.metadata.get('appVersion')}); "
              f"Helm SDK {helm.helm_sdk_version()} via libhelm_c {helm.helm_c_version()}")
        for name, values, path in helm_value_sets(args.set):
            try:
                rendered = chart.render(values, name=args.release, namespace=args.namespace, is_install=True)
            except helm.HelmError as e:
                bad += fail(f"{name}: {type(e).__name__}: {e}")
                continue
            parts, notes = [], ""
            for tpl in sorted(rendered):
                text = rendered[tpl]
                if tpl.endswith("NOTES.txt"):
                    notes = text
                elif text.strip():
                    parts.append(f"# Source: {tpl}\n{text.strip()}\n")
            (out / f"{name}.yaml").write_text("---\n".join(parts))
            (out / f"{name}.NOTES.txt").write_text(notes)
            docs = load_docs(out / f"{name}.yaml")
            kinds = {}
            for d in docs:
                k = d["kind"] + (" (helm test hook)" if is_hook(d) else "")
                kinds[k] = kinds.get(k, 0) + 1
            src = path or "the chart's defaults"
            print(f"  {name} ({src}): {len(docs)} objects: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
            if not notes.strip():
                bad += fail(f"{name}: NOTES.txt rendered empty")
    return 1 if bad else 0


def cargo_version(cargo_toml):
    text = Path(cargo_toml).read_text()
    m = re.search(r"^\[workspace\.package\][^\[]*?^version\s*=\s*\"([^\"]+)\"", text, re.S | re.M)
    if not m:
        raise SystemExit(f"{cargo_toml}: no [workspace.package] version")
    return m.group(1)


def cmd_helm_lint(args):
    """`helm lint --strict --kube-version V` on the chart with every value
    set; any warning or error fails. Plus the chart's metadata: apiVersion
    v2, appVersion = the crate version."""
    helm = helm_sdk()
    bad = 0
    with helm.Chart.load(args.chart) as chart:
        meta = chart.metadata
    want = cargo_version(args.cargo)
    if meta.get("apiVersion") != "v2":
        bad += fail(f"Chart.yaml apiVersion {meta.get('apiVersion')!r}, want v2")
    if str(meta.get("appVersion")) != want:
        bad += fail(f"Chart.yaml appVersion {meta.get('appVersion')!r} != crate version {want} (Cargo.toml)")
    else:
        ok(f"Chart.yaml: apiVersion v2, appVersion {want} = the crate version, kubeVersion {meta.get('kubeVersion')!r}")
    names = {0: "unknown", 1: "info", 2: "warning", 3: "error"}
    infos = set()
    for name, values, _ in helm_value_sets(args.set):
        for kv in args.kube_version:
            v = kv if kv.startswith("v") else "v" + kv
            report = helm.lint(args.chart, values, strict=True, kube_version=v)
            worst = [m for m in report["messages"] if m["severity"] >= 2 or m["severity"] == 0]
            for m in report["messages"]:
                if m["severity"] == 1:
                    infos.add(f"{m['path']}: {m['error']}")
            if worst or report.get("errors"):
                for m in worst:
                    bad += fail(f"{name} @ {v}: [{names.get(m['severity'])}] {m['path']}: {m['error'].strip()}")
                for e in report.get("errors", []):
                    if not any(e.strip() == m["error"].strip() for m in worst):
                        bad += fail(f"{name} @ {v}: {e.strip()}")
            else:
                print(f"  ✓ helm lint --strict --kube-version {v}: {name}: {report['total_charts_linted']} chart, no warning or error")
    for i in sorted(infos):
        print(f"  - info (allowed): {i}")
    return 1 if bad else 0


def schema_node(schema, path):
    """The schema node for a key path, or None."""
    node = schema
    for key in path:
        props = node.get("properties", {})
        if key in props:
            node = props[key]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return node


# Values the chart must refuse, each with (part of) the message Helm gives.
HELM_REFUSALS = [
    ("a misspelt top-level value", {"replicas": 3}, "additional properties"),
    ("a misspelt setting", {"config": {"PARLEY_DRAIN_TIMOUT": "20s"}}, "additional properties"),
    ("a setting the chart owns (secret URL)", {"config": {"PARLEY_DATABASE_URL": "postgres://x"}}, "additional properties"),
    ("a duration parley serve cannot parse", {"config": {"PARLEY_DRAIN_TIMEOUT": "soon"}}, "PARLEY_DRAIN_TIMEOUT"),
    ("a number where an integer belongs", {"replicaCount": "two"}, "replicaCount"),
    ("a grace period shorter than preStop + drain timeout + 5 s",
     {"terminationGracePeriodSeconds": 20}, "terminationGracePeriodSeconds"),
    ("grace + spread longer than the drain timeout",
     {"config": {"PARLEY_DRAIN_SPREAD": "30s"}}, "PARLEY_DRAIN_SPREAD"),
    ("no PostgreSQL at all", {"postgresql": {"enabled": False}}, "externalDatabase"),
    ("bundled and external PostgreSQL at once",
     {"externalDatabase": {"url": "postgres://parley:x@db:5432/parley"}}, "postgresql.enabled"),
    ("no Redis at all", {"redis": {"enabled": False}}, "externalRedis"),
    ("more connections at full scale than PostgreSQL's max_connections",
     {"autoscaling": {"maxReplicas": 20}}, "maxConnections"),
    ("minReplicas above maxReplicas", {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}}, "minReplicas"),
    ("a password that would break the URL", {"secrets": {"databasePassword": "p@ss/word"}}, "databasePassword"),
]


def cmd_helm_values(args):
    """values.schema.json covers values.yaml (every value typed and
    described), its settings are the binary's, and Helm refuses bad values."""
    helm = helm_sdk()
    bad = 0
    schema = json.loads(Path(args.chart, "values.schema.json").read_text())
    defaults = yaml.safe_load(Path(args.chart, "values.yaml").read_text())

    def walk_values(v, path):
        nonlocal bad
        node = schema_node(schema, path)
        if node is None:
            bad += fail(f"values.yaml {'.'.join(path)}: not in values.schema.json")
            return
        if path and (not node.get("type") or not node.get("description")):
            bad += fail(f"values.schema.json {'.'.join(path)}: needs a type and a description")
        if isinstance(v, dict) and "properties" in node:
            for k, sub in v.items():
                walk_values(sub, path + [k])

    def walk_schema(node, path):
        nonlocal bad
        if path and (not node.get("type") or not node.get("description")):
            bad += fail(f"values.schema.json {'.'.join(path)}: needs a type and a description")
        if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
            bad += fail(f"values.schema.json {'.'.join(path) or '(top)'}: objects with properties must set additionalProperties: false (typos must fail)")
        for k, sub in node.get("properties", {}).items():
            walk_schema(sub, path + [k])

    walk_values(defaults, [])
    walk_schema(schema, [])
    counted = []

    def count(node):
        for sub in node.get("properties", {}).values():
            counted.append(1)
            count(sub)
    count(schema)
    if not bad:
        ok(f"values.yaml: every value is in values.schema.json; its {len(counted)} properties all have a type and a description; objects refuse unknown keys")
    # The settings: the binary's, minus the four the chart sets itself.
    owned = {"PARLEY_NODE_ID", "PARLEY_JWT_SECRET", "PARLEY_DATABASE_URL", "PARLEY_REDIS_URL"}
    known = help_vars(args.help)
    in_schema = set(schema["properties"]["config"]["properties"])
    unknown = sorted(in_schema - known)
    for k in unknown:
        bad += fail(f"values.schema.json config.{k} is not a setting of `parley serve`")
    if owned & in_schema:
        bad += fail(f"config allows {sorted(owned & in_schema)}, which the chart sets from the pod/Secret")
    missing = sorted(known - in_schema - owned)
    if not unknown:
        ok(f"config: {len(in_schema)} settings, all known to `parley serve --help`; the chart sets {', '.join(sorted(owned))} itself")
    if missing:
        print(f"  ! settings of the binary the chart's schema does not offer yet (extraEnv can set them): {', '.join(missing)}")
    not_default = sorted(in_schema - set(defaults["config"]))
    if not_default:
        print(f"  - settable but left at the binary's default (as in deploy/k8s/base/parley.env): {', '.join(not_default)}")
    # Refusals: Helm's schema validation or the chart's own checks (fail).
    with helm.Chart.load(args.chart) as chart:
        for what, values, needle in HELM_REFUSALS:
            try:
                chart.render(values, name="parley", namespace="parley", is_install=True)
            except helm.HelmError as e:
                msg = str(e)
                first = next((l.strip() for l in msg.splitlines() if needle in l), msg.strip().splitlines()[-1].strip())
                if needle in msg:
                    ok(f"refused {what}: {first[:150]}")
                else:
                    bad += fail(f"{what}: refused, but the message does not name {needle!r}: {msg[:300]}")
                continue
            bad += fail(f"{what} ({json.dumps(values)}) renders: Helm should refuse it")
    return 1 if bad else 0


# --- parity with the kustomize manifests

# Labels that differ by construction: kustomize selects on name + component,
# the chart adds the release (instance) so that two releases can share a
# namespace; managed-by, chart and version are bookkeeping.
PARITY_DROP_LABELS = {"app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart",
                      "app.kubernetes.io/version"}
# metadata.labels are compared where something selects by them.
PARITY_LABEL_KINDS = {"Service", "ServiceMonitor", "PrometheusRule"}
# kustomize generators' hash suffixes (the chart rolls pods with a checksum annotation instead).
KUSTOMIZE_HASHED = re.compile(r"^(.+-(?:config|secrets))-[a-z0-9]{10}$")
PARITY_SKIP_KINDS = {
    "Namespace": "Helm installs into a namespace it does not own (`--create-namespace`); "
                 "docs/deployment.md labels it for Pod Security Admission",
}


def parity_norm(o, kustomize):
    if isinstance(o, dict):
        out = {}
        for k, v in o.items():
            if k in ("labels", "matchLabels") and isinstance(v, dict):
                v = {lk: lv for lk, lv in v.items() if lk not in PARITY_DROP_LABELS}
            if k == "selector" and isinstance(v, dict) and all(isinstance(x, str) for x in v.values()):
                v = {lk: lv for lk, lv in v.items() if lk not in PARITY_DROP_LABELS}
            if k == "annotations" and isinstance(v, dict):
                v = {ak: av for ak, av in v.items()
                     if not ak.startswith(("checksum/", "helm.sh/", "meta.helm.sh/"))}
                if not v:
                    continue
            v = parity_norm(v, kustomize)
            if k in ("podSelector", "labelSelector") and v == {"matchLabels": {}}:
                v = {}
            out[k] = v
        return out
    if isinstance(o, list):
        return [parity_norm(x, kustomize) for x in o]
    if kustomize and isinstance(o, str):
        m = KUSTOMIZE_HASHED.match(o)
        if m:
            return m.group(1)
    return o


def parity_view(d, kustomize):
    """What is compared of one object: everything but bookkeeping metadata."""
    d = parity_norm(d, kustomize)
    md = d.get("metadata", {})
    view = {k: v for k, v in d.items() if k != "metadata"}
    view["metadata"] = {"name": md.get("name"), "namespace": md.get("namespace")}
    if d["kind"] in PARITY_LABEL_KINDS or (d["kind"] == "ConfigMap" and "grafana_dashboard" in md.get("labels", {})):
        view["metadata"]["labels"] = md.get("labels", {})
    if d["kind"] in ("Ingress", "ConfigMap") and md.get("annotations"):
        view["metadata"]["annotations"] = md["annotations"]
    if d["kind"] == "Secret":
        view["data"] = sorted((d.get("data") or {}).keys()) + sorted((d.get("stringData") or {}).keys())
        view.pop("stringData", None)
    if d["kind"] == "NetworkPolicy":
        view["metadata"].pop("name")  # compared by what they admit
    return view


def deep_diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            p = f"{path}.{k}" if path else str(k)
            if k not in b:
                out.append(f"{p}: only in kustomize ({json.dumps(a[k], default=str)[:120]})")
            elif k not in a:
                out.append(f"{p}: only in the chart ({json.dumps(b[k], default=str)[:120]})")
            else:
                out += deep_diff(a[k], b[k], p)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += deep_diff(x, y, f"{path}[{i}]")
        return out
    if isinstance(a, str) and isinstance(b, str) and a != b and max(len(a), len(b)) > 120:
        i = next((n for n, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        line = a.count("\n", 0, i) + 1
        return [f"{path}: differs from line {line} on ({len(a)} vs {len(b)} characters): "
                f"kustomize {json.dumps(a[max(0, i - 40):i + 60])} != chart {json.dumps(b[max(0, i - 40):i + 60])}"]
    if a != b:
        return [f"{path}: kustomize {json.dumps(a, default=str)[:160]} != chart {json.dumps(b, default=str)[:160]}"]
    return []


def essentials(docs, name):
    """One line per essential setting of the server, for the record."""
    dep = one(docs, "Deployment", name)
    spec = dep["spec"]["template"]["spec"]
    c = parley_container(dep)
    cfg = config_of(docs, c)
    lines = []
    pr = []
    for p in ("startupProbe", "livenessProbe", "readinessProbe"):
        x = c[p]
        pr.append(f"{p[:-5]} {x['httpGet']['path']} every {x['periodSeconds']}s x{x['failureThreshold']} (timeout {x['timeoutSeconds']}s)")
    lines.append("probes: " + "; ".join(pr))
    sc, psc = c["securityContext"], spec["securityContext"]
    lines.append(f"security: pod runAsUser {psc.get('runAsUser')} fsGroup {psc.get('fsGroup')} seccomp {psc.get('seccompProfile', {}).get('type')}; "
                 f"container readOnlyRootFilesystem {sc.get('readOnlyRootFilesystem')} allowPrivilegeEscalation {sc.get('allowPrivilegeEscalation')} drop {sc.get('capabilities', {}).get('drop')}")
    r = c["resources"]
    lines.append(f"resources: requests {r['requests']} limits {r['limits']}")
    svc = one(docs, "Service", name)
    lines.append(f"Service: {svc['spec'].get('type')} sessionAffinity {svc['spec'].get('sessionAffinity')} "
                 f"({svc['spec'].get('sessionAffinityConfig', {}).get('clientIP', {}).get('timeoutSeconds')} s)")
    hpa = find(docs, "HorizontalPodAutoscaler", name)
    if hpa:
        h = hpa[0]["spec"]
        ms = [m.get("resource", {}).get("name") or m.get("pods", {}).get("metric", {}).get("name") for m in h["metrics"]]
        lines.append(f"HPA: {h['minReplicas']}–{h['maxReplicas']} replicas on {', '.join(ms)}")
    pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    lines.append(f"drain: preStop {pre}s + PARLEY_DRAIN_TIMEOUT {cfg.get('PARLEY_DRAIN_TIMEOUT', '20s')} + 5s margin <= "
                 f"terminationGracePeriodSeconds {tgps}s; grace {cfg.get('PARLEY_DRAIN_GRACE', '3s')} + spread {cfg.get('PARLEY_DRAIN_SPREAD', '5s')}")
    lines.append(f"image: {c['image']}; topologySpread: {[t['topologyKey'] for t in spec.get('topologySpreadConstraints', [])]}")
    return lines


def cmd_helm_parity(args):
    """The chart's rendering says what the kustomize rendering says: the same
    objects (kinds, names) with the same content, after normalising what
    differs by construction (listed)."""
    kust = []
    for path in args.kustomize:
        for d in load_docs(path):
            key = (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
            kust = [k for k in kust if (k["kind"], k["metadata"].get("namespace"), k["metadata"]["name"]) != key]
            kust.append(d)
    chart_all = load_docs(args.chart)
    hooks = [d for d in chart_all if is_hook(d)]
    chart = [d for d in chart_all if not is_hook(d)]
    bad = 0
    skipped = {}
    kv = []
    for d in kust:
        if d["kind"] in PARITY_SKIP_KINDS:
            skipped.setdefault(d["kind"], []).append(d["metadata"]["name"])
        else:
            kv.append(parity_view(d, True))
    cv = [parity_view(d, False) for d in chart]

    def label(v):
        return f"{v['kind']}/{v['metadata'].get('name') or '(by content)'}"

    def count(vs):
        out = {}
        for v in vs:
            out[v["kind"]] = out.get(v["kind"], 0) + 1
        return out
    kc, cc = count(kv), count(cv)
    if kc != cc:
        bad += fail(f"kinds differ: kustomize {dict(sorted(kc.items()))} vs chart {dict(sorted(cc.items()))}")
    else:
        print(f"  same kinds and counts: {', '.join(f'{n} {k}' for k, n in sorted(kc.items()))}")
    unmatched_chart = list(cv)
    compared = 0
    for k in kv:
        if k["kind"] == "NetworkPolicy":
            match = next((c for c in unmatched_chart if c["kind"] == "NetworkPolicy" and c == k), None)
            if match is None:
                cands = [c for c in unmatched_chart if c["kind"] == "NetworkPolicy"
                         and c["spec"].get("podSelector") == k["spec"].get("podSelector")]
                detail = deep_diff(k, cands[0]) if cands else ["no chart NetworkPolicy selects the same pods"]
                bad += fail(f"NetworkPolicy selecting {k['spec'].get('podSelector')} has no equal in the chart: " + "; ".join(detail[:6]))
                continue
        else:
            match = next((c for c in unmatched_chart if c["kind"] == k["kind"]
                          and c["metadata"]["name"] == k["metadata"]["name"]), None)
            if match is None:
                bad += fail(f"{label(k)}: not in the chart's rendering")
                continue
            # metadata.labels: the chart may add labels, not drop or change one.
            kl, cl = k["metadata"].get("labels"), match["metadata"].get("labels")
            if kl is not None and cl is not None:
                match = dict(match, metadata=dict(match["metadata"], labels={lk: lv for lk, lv in cl.items() if lk in kl}))
            diffs = deep_diff(k, match)
            match = next(c for c in unmatched_chart if c["kind"] == k["kind"] and c["metadata"]["name"] == k["metadata"]["name"])
            if diffs:
                for line in diffs:
                    bad += fail(f"{label(k)}: {line}")
                unmatched_chart.remove(match)
                continue
        unmatched_chart.remove(match)
        compared += 1
    for c in unmatched_chart:
        bad += fail(f"{label(c)}: only in the chart's rendering")
    if not bad:
        ok(f"{compared} objects identical after normalisation (specs, data, container settings, "
           f"Ingress/ConfigMap annotations; the labels of Services, ServiceMonitor, PrometheusRule and "
           f"the dashboard ConfigMap are kept by the chart)")
        for line in essentials([d for d in chart], args.name):
            print(f"    {line}")
    print("  normalised (differ by construction): labels app.kubernetes.io/instance (the chart also selects on the "
          "release), managed-by, helm.sh/chart, version; kustomize's hash suffixes on parley-config/parley-secrets "
          "(the chart rolls pods with checksum/* annotations); Secret values (keys compared); NetworkPolicies "
          "matched by content, not name (the chart prefixes the release)")
    for kind, names in skipped.items():
        print(f"  - not compared: {kind} {names}: {PARITY_SKIP_KINDS[kind]}")
    if hooks:
        print(f"  - not compared: helm test hooks {[d['kind'] + '/' + d['metadata']['name'] for d in hooks]} (chart only)")
    return 1 if bad else 0


# --- the values reference in docs/deployment.md

DOC_BEGIN = "<!-- helm-values:begin (generated from deploy/helm/parley/values.schema.json: deploy/lib/deploytest.py helm-values-doc --write) -->"
DOC_END = "<!-- helm-values:end -->"


def values_table(schema, defaults):
    rows = ["| value | type | default | description |", "|---|---|---|---|"]

    def fmt_default(v):
        if v is None:
            return "`null`"
        if isinstance(v, (dict, list)):
            if not v:
                return "`{}`" if isinstance(v, dict) else "`[]`"
            return "see values.yaml" if len(json.dumps(v)) > 60 else f"`{json.dumps(v)}`"
        if isinstance(v, bool):
            return f"`{str(v).lower()}`"
        if v == "":
            return '`""`'
        return f"`{v}`"

    def walk(node, path, dflt, present):
        for k, sub in node.get("properties", {}).items():
            p = path + [k]
            has = isinstance(dflt, dict) and k in dflt
            d = dflt.get(k) if has else None
            if sub.get("type") == "object" and "properties" in sub:
                walk(sub, p, d if isinstance(d, dict) else {}, has)
                continue
            t = sub["type"] if isinstance(sub["type"], str) else " or ".join(sub["type"])
            if "enum" in sub:
                t += ": " + ", ".join(f"`{e}`" for e in sub["enum"])
            desc = sub["description"].replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
            rows.append(f"| `{'.'.join(p)}` | {t} | {fmt_default(d) if has else '(unset)'} | {desc} |")
    walk(schema, [], defaults, True)
    return "\n".join(rows)


def cmd_helm_values_doc(args):
    schema = json.loads(Path(args.chart, "values.schema.json").read_text())
    defaults = yaml.safe_load(Path(args.chart, "values.yaml").read_text())
    table = values_table(schema, defaults)
    doc = Path(args.doc).read_text()
    m = re.search(re.escape(DOC_BEGIN) + r"\n(.*?)" + re.escape(DOC_END), doc, re.S)
    if not m:
        return fail(f"{args.doc} has no block between {DOC_BEGIN!r} and {DOC_END!r}")
    if m.group(1).strip() == table.strip():
        return ok(f"{args.doc}: the values reference ({table.count(chr(10)) - 1} values) matches values.schema.json and values.yaml")
    if args.write:
        Path(args.doc).write_text(doc[:m.start(1)] + table + "\n" + doc[m.end(1):])
        return ok(f"{args.doc}: values reference rewritten ({table.count(chr(10)) - 1} values)")
    import difflib
    sys.stdout.writelines(difflib.unified_diff(m.group(1).strip().splitlines(True), table.strip().splitlines(True),
                                               "docs", "values.schema.json", n=0))
    print()
    return fail(f"{args.doc}: the values reference is stale: run deploy/lib/deploytest.py helm-values-doc --write")


# --- `helm test`: its script against a real node


def cmd_helm_test_pod(args):
    """Runs the chart's `helm test` pod script (sh + wget) against a real
    node started with the rendered ConfigMap: exit 0 while the node is ready,
    non-zero once it drains."""
    docs = load_docs(args.rendered)
    pods = [d for d in docs if d["kind"] == "Pod" and is_hook(d) and d["metadata"]["annotations"]["helm.sh/hook"] == "test"]
    if len(pods) != 1:
        return fail(f"expected one helm test Pod, found {len(pods)}")
    pod = pods[0]
    ctr = pod["spec"]["containers"][0]
    script_argv = ctr["command"] + ctr.get("args", [])
    env0 = {e["name"]: e["value"] for e in ctr.get("env", [])}
    url = env0["URL"]
    svc = one(docs, "Service", args.name)
    if not re.match(rf"^http://{re.escape(args.name)}\.[a-z0-9-]+\.svc:{svc['spec']['ports'][0]['port']}/readyz$", url):
        return fail(f"test pod asks {url}, not the Service {args.name} on port {svc['spec']['ports'][0]['port']} /readyz")
    print(f"  test pod {pod['metadata']['name']} ({ctr['image']}) asks {url}")
    dep = one(docs, "Deployment", args.name)
    cfg = config_of(docs, parley_container(dep))
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="parley-helm-test-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(cfg)
    env.update({"PARLEY_LISTEN": f"127.0.0.1:{port}", "PARLEY_DATABASE_URL": f"sqlite://{tmp}/parley.db",
                "PARLEY_JWT_SECRET": "helm-test-secret", "PARLEY_NODE_ID": "helm-test-node"})
    log = open(os.path.join(tmp, "node.log"), "w+")
    proc = subprocess.Popen([args.binary, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    bad = 0
    local = f"http://127.0.0.1:{port}/readyz"
    try:
        run_env = dict(os.environ, URL=local, ATTEMPTS="30", DELAY="1")
        r = subprocess.run(script_argv, env=run_env, capture_output=True, text=True, timeout=60)
        out = (r.stdout + r.stderr).strip()
        if r.returncode == 0:
            ok(f"against a ready node ({local}): exit 0: {out.splitlines()[-1] if out else ''}")
        else:
            bad += fail(f"against a ready node: exit {r.returncode}: {out}")
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        run_env.update(ATTEMPTS="2", DELAY="1")
        r = subprocess.run(script_argv, env=run_env, capture_output=True, text=True, timeout=60)
        out = (r.stdout + r.stderr).strip()
        if r.returncode != 0:
            ok(f"against a draining node: exit {r.returncode}: {out.splitlines()[-1] if out else ''}")
        else:
            bad += fail(f"against a draining node: exit 0 ({out}): the test would pass on a node that is not ready")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=parse_duration(cfg.get("PARLEY_DRAIN_TIMEOUT", "20s")) + 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if bad:
            log.seek(0)
            print("  node log:\n    " + "\n    ".join(log.read().splitlines()[-20:]))
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if bad else 0


# ------------------------------------------------------------ 5. podman play


def cmd_podman_transform(args):
    """Rendered dev overlay -> what `podman kube play` (4.x) can run here.
    Prints every change it makes; the manifests themselves stay as they are."""
    docs = load_docs(args.rendered)
    dep = one(docs, "Deployment", "parley")
    c = parley_container(dep)
    spec = dep["spec"]["template"]["spec"]
    changes = []
    dep["spec"]["replicas"] = 1
    changes.append("replicas: 1 (one pod; the HPA has nothing to scale here)")
    c["image"] = args.image
    c["imagePullPolicy"] = "Never"
    changes.append(f"image -> {args.image}, imagePullPolicy: Never (no registry here)")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        if c.pop(probe, None):
            changes.append(f"dropped {probe} (podman runs HTTP probes with curl inside the container; "
                           "a scratch image has none: this script probes from outside)")
    if c.pop("lifecycle", None):
        changes.append("dropped lifecycle.preStop.sleep (not in podman 4.x's pod API)")
    for k in ("topologySpreadConstraints", "serviceAccountName", "automountServiceAccountToken", "enableServiceLinks"):
        if spec.pop(k, None) is not None:
            changes.append(f"dropped {k} (no scheduler/API server)")
    env = c.get("env", [])
    kept = []
    for e in env:
        if e["name"] == "PARLEY_DATABASE_URL":
            e.clear()
            e.update({"name": "PARLEY_DATABASE_URL", "value": "sqlite:///data/parley.db"})
            changes.append("PARLEY_DATABASE_URL -> sqlite:///data/parley.db (no PostgreSQL image can be pulled here)")
        elif e["name"] == "PARLEY_REDIS_URL":
            changes.append("dropped PARLEY_REDIS_URL (no Redis image here; one node needs no bus)")
            continue
        kept.append(e)
    c["env"] = kept
    leftover = [e["name"] for e in kept if "$(" in str(e.get("value", ""))]
    if leftover:
        raise SystemExit(f"podman does not expand $(VAR) in {leftover}")
    for p in c["ports"]:
        if p.get("name") == "http":
            p["hostPort"] = args.host_port
            p["hostIP"] = "127.0.0.1"
    changes.append(f"port http published on 127.0.0.1:{args.host_port}")
    # ConfigMaps go into the play file; Secrets become podman secrets (podman
    # 4.x resolves secretKeyRef against `podman secret` data: JSON of the
    # Secret's base64 `data` map).
    cms = [one(docs, "ConfigMap", r["configMapRef"]["name"]) for r in c.get("envFrom", []) if "configMapRef" in r]
    secret_names = sorted({e["valueFrom"]["secretKeyRef"]["name"] for e in kept if "secretKeyRef" in e.get("valueFrom", {})})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for s in secret_names:
        sec = one(docs, "Secret", s)
        (out / f"{s}.json").write_text(json.dumps(sec["data"]))
    (out / "secrets.txt").write_text("\n".join(secret_names) + "\n")
    with open(out / "play.yaml", "w") as f:
        yaml.safe_dump_all(cms + [dep], f, sort_keys=False)
    jwt = None
    for e in kept:
        if e["name"] == "PARLEY_JWT_SECRET":
            ref = e["valueFrom"]["secretKeyRef"]
            jwt = base64.b64decode(one(docs, "Secret", ref["name"])["data"][ref["key"]]).decode()
    (out / "jwt-secret").write_text(jwt or "")
    (out / "pod-name").write_text(dep["metadata"]["name"] + "-pod-0")
    for ch in changes:
        print(f"  - {ch}")
    print(f"  kept: ConfigMap {[m['metadata']['name'] for m in cms]}, Secrets {secret_names} (secretKeyRef), "
          f"fieldRef PARLEY_NODE_ID, securityContext, resources, /tmp and /data emptyDirs")
    return 0


async def chat(url, alice_token, bob_token, room, text):
    import websockets

    async def hello(ws, token, who):
        await ws.send(json.dumps({"type": "hello", "token": token, "client": "deploy-test/1"}))
        w = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if w.get("type") != "welcome":
            raise RuntimeError(f"{who}: expected welcome, got {w}")
        return w

    async def until(ws, pred, what):
        deadline = time.time() + 10
        while time.time() < deadline:
            f = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.time())))
            if pred(f):
                return f
        raise RuntimeError(f"timed out waiting for {what}")

    async with websockets.connect(url, open_timeout=10) as a, websockets.connect(url, open_timeout=10) as b:
        wa = await hello(a, alice_token, "alice")
        wb = await hello(b, bob_token, "bob")
        print(f"  ✓ welcome: {wa['user']} and {wb['user']} on node {wa.get('node')!r}")
        for ws, i in ((a, 1), (b, 1)):
            await ws.send(json.dumps({"type": "join", "id": i, "room": room}))
            await until(ws, lambda f: f.get("type") == "joined" and f.get("room") == room, "joined")
        await a.send(json.dumps({"type": "send", "id": 2, "room": room, "text": text, "nonce": "deploy-test-1"}))
        ack = await until(a, lambda f: f.get("type") == "ack" and f.get("re") == 2, "ack")
        print(f"  ✓ ack: seq {ack['seq']} (stored)")
        msg = await until(b, lambda f: f.get("type") == "message" and f.get("text") == text, "message at bob")
        print(f"  ✓ bob received {msg['from']}: {msg['text']!r} seq {msg['seq']}")
        return ack["seq"]


def cmd_ws_chat(args):
    alice = Path(args.alice_token_file).read_text().strip()
    bob = Path(args.bob_token_file).read_text().strip()
    try:
        seq = asyncio.run(chat(args.url, alice, bob, args.room, args.text))
    except Exception as e:
        return fail(f"{type(e).__name__}: {e}")
    base = args.url.replace("ws://", "http://").rsplit("/ws", 1)[0]
    code, body = http_get(f"{base}/api/rooms/{args.room}/messages?limit=10", headers={"Authorization": f"Bearer {bob}"})
    if code != 200:
        return fail(f"GET /api/rooms/{args.room}/messages -> {code} {body[:200]}")
    stored = [m for m in json.loads(body).get("messages", []) if m.get("seq") == seq and m.get("text") == args.text]
    if not stored:
        return fail(f"message seq {seq} not in the room's history: {body[:300]}")
    return ok(f"history (REST) has seq {seq}: persisted, not only fanned out")


def cmd_rootfs_tar(args):
    """The final image's filesystem besides the binary, with its owners: what
    the multi-stage Dockerfile's build stage assembles in /rootfs."""
    import io
    import tarfile

    def add(t, name, data=None, mode=0o644, uid=0):
        i = tarfile.TarInfo(name)
        i.uid = i.gid = uid
        i.mode = mode
        if data is None:
            i.type = tarfile.DIRTYPE
            t.addfile(i)
        else:
            i.size = len(data)
            t.addfile(i, io.BytesIO(data))

    with tarfile.open(args.out, "w") as t:
        for d in ("etc", "etc/ssl", "etc/ssl/certs"):
            add(t, d, mode=0o755)
        add(t, "etc/passwd", b"parley:x:10001:10001:parley:/data:/sbin/nologin\n")
        add(t, "etc/group", b"parley:x:10001:\n")
        add(t, "etc/ssl/certs/ca-certificates.crt", Path(args.ca).read_bytes())
        add(t, "data", mode=0o750, uid=10001)
        add(t, "tmp", mode=0o1777)
    return 0


def cmd_ws_hold(args):
    """Holds a joined session open and reports how the server closes it: a
    drain must close it with 1001 (going away) for the client to reconnect."""
    import websockets

    token = Path(args.token_file).read_text().strip()

    async def hold():
        async with websockets.connect(args.url, open_timeout=10) as ws:
            await ws.send(json.dumps({"type": "hello", "token": token, "client": "deploy-test/1"}))
            json.loads(await asyncio.wait_for(ws.recv(), 10))
            await ws.send(json.dumps({"type": "join", "id": 1, "room": "deploy-test"}))
            Path(args.ready_file).write_text("joined\n")
            t0 = time.time()
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), args.timeout)
            except websockets.ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd else None
                return code, time.time() - t0

    try:
        code, after = asyncio.run(hold())
    except Exception as e:
        return fail(f"{type(e).__name__}: {e}")
    if code != 1001:
        return fail(f"session closed with {code}, want 1001 (going away)")
    return ok(f"open session closed with 1001 (going away) {after:.1f} s into the hold, during the drain")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("validate"); p.add_argument("--version", required=True); p.add_argument("--verbose", action="store_true"); p.add_argument("files", nargs="+"); p.set_defaults(f=cmd_validate)
    p = sub.add_parser("checkov-gate"); p.add_argument("--no-stale", action="store_true", help="a partial report: do not list unused skips"); p.add_argument("--usage-from", action="append", default=[], help="another step's report: its findings count as uses of the skips"); p.add_argument("skips"); p.add_argument("report"); p.set_defaults(f=cmd_checkov_gate)
    p = sub.add_parser("config-vars"); p.add_argument("--help-file", dest="help", required=True); p.add_argument("files", nargs="+"); p.set_defaults(f=cmd_config_vars)
    p = sub.add_parser("ports"); p.add_argument("files", nargs="+"); p.set_defaults(f=cmd_ports)
    p = sub.add_parser("drain"); p.add_argument("--margin", type=int, default=5); p.add_argument("files", nargs="+"); p.set_defaults(f=cmd_drain)
    p = sub.add_parser("db-capacity"); p.add_argument("--default-pool", type=int, default=16); p.add_argument("--reserve", type=int, default=10); p.add_argument("files", nargs="+"); p.set_defaults(f=cmd_db_capacity)
    p = sub.add_parser("crd-refs"); p.add_argument("--base", required=True); p.add_argument("--monitoring", required=True); p.add_argument("--hpa"); p.set_defaults(f=cmd_crd_refs)
    p = sub.add_parser("cnpg"); p.add_argument("--cluster", required=True); p.add_argument("--nodes", required=True); p.set_defaults(f=cmd_cnpg)
    p = sub.add_parser("metric-names"); p.add_argument("--binary", required=True); p.add_argument("--require", nargs="*", default=[]); p.add_argument("files", nargs="+"); p.set_defaults(f=cmd_metric_names)
    p = sub.add_parser("dockerfiles"); p.add_argument("dockerfile"); p.add_argument("local"); p.set_defaults(f=cmd_dockerfiles)
    p = sub.add_parser("promql"); p.add_argument("--promtool", default="promtool"); p.add_argument("dashboard"); p.add_argument("rules"); p.set_defaults(f=cmd_promql)
    p = sub.add_parser("compose"); p.add_argument("--help-file", dest="help", required=True); p.add_argument("compose"); p.add_argument("nginx"); p.set_defaults(f=cmd_compose)
    p = sub.add_parser("probe-node"); p.add_argument("--binary", required=True); p.add_argument("--extra-path", action="append", default=[]); p.add_argument("rendered"); p.set_defaults(f=cmd_probe_node)
    p = sub.add_parser("podman-transform"); p.add_argument("--image", required=True); p.add_argument("--host-port", type=int, required=True); p.add_argument("--out", required=True); p.add_argument("rendered"); p.set_defaults(f=cmd_podman_transform)
    p = sub.add_parser("ws-chat"); p.add_argument("--url", required=True); p.add_argument("--alice-token-file", required=True); p.add_argument("--bob-token-file", required=True); p.add_argument("--room", default="deploy-test"); p.add_argument("--text", default="hello from deploy/test.sh"); p.set_defaults(f=cmd_ws_chat)
    p = sub.add_parser("rootfs-tar"); p.add_argument("--ca", default="/etc/ssl/certs/ca-certificates.crt"); p.add_argument("out"); p.set_defaults(f=cmd_rootfs_tar)
    p = sub.add_parser("ws-hold"); p.add_argument("--url", required=True); p.add_argument("--token-file", required=True); p.add_argument("--ready-file", required=True); p.add_argument("--timeout", type=float, default=60); p.set_defaults(f=cmd_ws_hold)
    p = sub.add_parser("helm-render"); p.add_argument("--chart", required=True); p.add_argument("--release", default="parley"); p.add_argument("--namespace", default="parley"); p.add_argument("--out", required=True); p.add_argument("set", nargs="+", help="NAME=VALUES_FILE (empty FILE: the defaults)"); p.set_defaults(f=cmd_helm_render)
    p = sub.add_parser("helm-lint"); p.add_argument("--chart", required=True); p.add_argument("--cargo", required=True); p.add_argument("--kube-version", nargs="+", required=True); p.add_argument("set", nargs="+", help="NAME=VALUES_FILE"); p.set_defaults(f=cmd_helm_lint)
    p = sub.add_parser("helm-values"); p.add_argument("--chart", required=True); p.add_argument("--help-file", dest="help", required=True); p.set_defaults(f=cmd_helm_values)
    p = sub.add_parser("helm-parity"); p.add_argument("--name", default="parley"); p.add_argument("--kustomize", nargs="+", required=True); p.add_argument("--chart", required=True); p.set_defaults(f=cmd_helm_parity)
    p = sub.add_parser("helm-values-doc"); p.add_argument("--chart", required=True); p.add_argument("--doc", required=True); p.add_argument("--write", action="store_true"); p.set_defaults(f=cmd_helm_values_doc)
    p = sub.add_parser("helm-test-pod"); p.add_argument("--binary", required=True); p.add_argument("--name", default="parley"); p.add_argument("rendered"); p.set_defaults(f=cmd_helm_test_pod)
    p = sub.add_parser("free-port"); p.set_defaults(f=lambda a: print(free_port()) or 0)
    args = ap.parse_args()
    sys.exit(args.f(args))


if __name__ == "__main__":
    main()
