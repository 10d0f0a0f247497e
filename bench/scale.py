#!/usr/bin/env python3
"""bench/scale.py — the measuring half of bench/scale (the shell script starts,
kills and cleans up the nodes; this polls and counts, so that a poll of 64
nodes costs 64 `p2pfs-ctl` calls and no shell or interpreter per node).

Subcommands (every one that measures appends `result KEY VALUE` lines to the
tab-separated file given by --results; `report` reads that file back):

  ports BASE N                    fail unless TCP ports BASE..BASE+N-1 on 127.0.0.1 are free
  mkfiles DIR COUNT MIN MAX SEED  COUNT files of MIN..MAX bytes of random data, and DIR/SHA256SUMS
  form                            poll every node until all are up and every one lists N-1 peers alive
  wait-files                      poll mounts until a file shows up there with the right sha256
  idle                            CPU, RSS and TCP traffic of every node over a quiet window
  wait-dead                       poll survivors until all see the killed nodes dead, and node 1's
                                  `p2pfs-ctl health` until it exits 0
  metric-sum NAME PORT...         sum of one Prometheus sample over the nodes' metrics endpoints
  logs DIR...                     WARN/ERROR/panic lines of the node logs, grouped
  report RESULTS [--md FILE]      print the table; with --md, replace the bench/scale section of FILE

Standard library only; what it shares with the other benches is in bench/p2pfs_bench.py.
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import random
import re
import socket
import statistics
import subprocess
import threading
import time

from p2pfs_bench import (CLK_TCK, alive_count, binary_lines, is_running, load_line, machine_line,
                         make_log, md_table, mounted_paths, proc_cpu_ticks, proc_status_kib,
                         read_text, records, scrape, section, status, write_section)

BEGIN = "<!-- BEGIN bench/scale -->"
END = "<!-- END bench/scale -->"
MIB = 1 << 20


log, die = make_log("scale")


class Results:
    def __init__(self, path):
        self.path = path

    def put(self, key, value):
        if isinstance(value, float):
            value = f"{value:.6g}"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"result\t{key}\t{value}\n")

    def detail(self, text):
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"detail\t{text}\n")


def summary(vals):
    """(min, median, max) of a non-empty list."""
    return min(vals), statistics.median(vals), max(vals)


def put_summary(res, key, vals):
    lo, med, hi = summary(vals)
    res.put(f"{key}.min", float(lo))
    res.put(f"{key}.med", float(med))
    res.put(f"{key}.max", float(hi))
    res.put(f"{key}.sum", float(sum(vals)))


# ---------------------------------------------------------------------------
# Status polls
# ---------------------------------------------------------------------------
POOL = concurrent.futures.ThreadPoolExecutor(max_workers=8)


def statuses(ctl, nodes, timeout=5):
    """[(node, status or None, seconds after epoch when it answered)] of every node, 8 at a
    time, so that a node that does not answer costs its timeout once per poll, not once per
    node behind it."""
    def one(node):
        s = status(ctl, node["data"], timeout)
        return node, s, time.time()
    return list(POOL.map(one, nodes))


def parse_nodes(specs):
    """NAME=PID:DATA_DIR:MOUNT ... -> list of dicts."""
    nodes = []
    for spec in specs:
        name, rest = spec.split("=", 1)
        pid, data, mnt = rest.split(":", 2)
        nodes.append({"name": name, "pid": int(pid), "data": data, "mnt": mnt})
    return nodes


def check_running(nodes):
    for n in nodes:
        if not is_running(n["pid"]):
            die(f"node {n['name']} (pid {n['pid']}) has exited", 3)


# ---------------------------------------------------------------------------
# ports, mkfiles
# ---------------------------------------------------------------------------
def cmd_ports(a):
    busy = []
    for port in range(a.base, a.base + a.n):
        s = socket.socket()
        # as the nodes' listener does (Rust's bind): TIME_WAIT leftovers of an earlier run's
        # scrapes do not block the port, a listener does
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            busy.append(port)
        finally:
            s.close()
    if busy:
        die(f"ports in use: {busy[:10]}{' ...' if len(busy) > 10 else ''}")


def cmd_mkfiles(a):
    rng = random.Random(a.seed)
    os.makedirs(a.dir, exist_ok=True)
    sums = []
    width = len(str(a.count))
    for i in range(1, a.count + 1):
        name = f"f{i:0{width}d}.bin"
        data = os.urandom(rng.randint(a.min, a.max))
        with open(os.path.join(a.dir, name), "wb") as f:
            f.write(data)
        sums.append(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    with open(os.path.join(a.dir, "SHA256SUMS"), "w", encoding="utf-8") as f:
        f.writelines(sums)


# ---------------------------------------------------------------------------
# form: every node up (mounted, a listen address) and every view complete
# ---------------------------------------------------------------------------
def cmd_form(a):
    res = Results(a.results)
    nodes = parse_nodes(a.nodes)
    n = len(nodes)
    t0 = a.t0
    ready = {}     # node -> when its status first answered with a listen address and it was mounted
    complete = {}  # node -> since when its view has shown n-1 peers alive (reset when it does not)
    t_alive = None
    last_log = 0.0
    rounds = 0
    slowest = 0.0
    log(f"{time.time() - t0:6.1f} s: polling the status of {n} nodes")
    res.put("form.first_poll_s", time.time() - t0)
    while True:
        start = time.time()
        rounds += 1
        check_running(nodes)
        mounts = mounted_paths()
        alive = []
        silent = []
        for node, s, t in statuses(a.ctl, nodes):
            t -= t0
            if s is None:
                silent.append(node["name"])
            if s is not None and s.get("listen_addrs") and node["mnt"] in mounts:
                ready.setdefault(node["name"], t)
            c = alive_count(s) if s is not None else -1
            alive.append(c)
            if c == n - 1:
                complete.setdefault(node["name"], t)
            else:
                complete.pop(node["name"], None)
        now = time.time()
        slowest = max(slowest, now - start)
        if len(complete) == n:
            # the last node whose view became (and stayed) complete, as first seen by a poll
            t_alive = max(complete.values())
        if now - last_log >= 5 or t_alive is not None:
            lo, med, hi = summary(alive)
            log(f"{now - t0:6.1f} s: {len(ready)}/{n} up; peers seen alive per node "
                f"min {lo} median {med:g} max {hi} (of {n - 1}); this poll of {n} nodes took "
                f"{now - start:.2f} s" + (f"; not answering: {' '.join(silent)}" if silent else ""))
            last_log = now
        if t_alive is not None:
            break
        if now - t0 > a.timeout:
            for node, c in zip(nodes, alive):
                if c != n - 1:
                    log(f"node {node['name']}: " + (f"{c} peers alive" if c >= 0 else
                                                     "does not answer p2pfs-ctl status"))
            if len(ready) == n:
                res.put("form.all_up_s", max(ready.values()))
            res.put("form.slowest_poll_s", slowest)
            if a.silent_file:
                with open(a.silent_file, "w", encoding="utf-8") as f:
                    f.write("".join(f"{x}\n" for x in silent))
            die(f"timed out after {a.timeout} s: not every node sees {n - 1} peers alive"
                + (f"; {len(silent)} do not answer status: {' '.join(silent)}" if silent else ""), 2)
        time.sleep(max(0.0, start + a.interval - time.time()))
    res.put("form.all_up_s", max(ready.values()))
    res.put("form.alive_s", t_alive)
    res.put("form.poll_rounds", rounds)
    res.put("form.slowest_poll_s", slowest)


# ---------------------------------------------------------------------------
# wait-files: time until NAME reads back with the right sha256 on each mount
# ---------------------------------------------------------------------------
def cmd_wait_files(a):
    res = Results(a.results)
    found = {}

    def watch(key, mnt):
        deadline = a.t0 + a.timeout
        while time.time() < deadline:
            try:
                if a.name in os.listdir(mnt):
                    h = hashlib.sha256()
                    with open(os.path.join(mnt, a.name), "rb") as f:
                        for block in iter(lambda: f.read(MIB), b""):
                            h.update(block)
                    if h.hexdigest() == a.sha256:
                        found[key] = time.time() - a.t0
                        return
                    log(f"{mnt}/{a.name}: sha256 differs (yet); retrying")
            except OSError as e:
                log(f"{mnt}: {e}; retrying")
            time.sleep(a.interval)

    threads = []
    for spec in a.mounts:
        key, mnt = spec.split("=", 1)
        t = threading.Thread(target=watch, args=(key, mnt))
        t.start()
        threads.append((key, mnt, t))
    for key, mnt, t in threads:
        t.join()
        if key not in found:
            die(f"{a.name} did not read back with the right sha256 in {mnt} within {a.timeout} s", 2)
        res.put(f"{a.key}.{key}_s", found[key])
        log(f"{a.name} read back with the right sha256 in {mnt} {found[key]:.2f} s after the close")


# ---------------------------------------------------------------------------
# idle: CPU, RSS, TCP traffic per node over a quiet window
# ---------------------------------------------------------------------------
SS_NUM = {k: re.compile(rf"\b{k}:(\d+)") for k in
          ("bytes_sent", "bytes_received", "data_segs_out", "data_segs_in")}


def tcp_sockets():
    """{(local, peer): {pid, bytes_sent, ...}} of every established TCP socket, from
    `ss -tinpH`: the kernel's tcp_info counters (payload bytes and data segments,
    every protocol on the connection, Noise and yamux framing included)."""
    out = subprocess.run(["ss", "-tinpH", "state", "established"], capture_output=True,
                         text=True, check=True).stdout
    socks = {}
    cur = None
    for line in out.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            f = line.split()
            m = re.search(r"pid=(\d+)", line)
            cur = {"pid": int(m.group(1)) if m else None, "local": f[2], "peer": f[3]}
            socks[(f[2], f[3])] = cur
        elif cur is not None:
            for k, rx in SS_NUM.items():
                m = rx.search(line)
                if m:
                    cur[k] = int(m.group(1))
    return socks


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def sync_bytes(m):
    return sum(v for k, v in m.items()
               if k.startswith("p2pfs_rpc_bytes_total{") and 'protocol="sync"' in k)


def gossip(m, name, direction):
    """Sum over topics of p2pfs_gossip_<name>_total{...,direction=...}; None if not served."""
    keys = [k for k in m if k.startswith(f"p2pfs_gossip_{name}_total{{") and f'direction="{direction}"' in k]
    return sum(m[k] for k in keys) if keys else None


def snapshot(pids, exclude_ports):
    t = time.time()
    cpu = {p: proc_cpu_ticks(p) for p in pids}
    socks = {k: v for k, v in tcp_sockets().items()
             if v["pid"] in pids and port_of(k[0]) not in exclude_ports
             and port_of(k[1]) not in exclude_ports}
    return t, cpu, socks


def cmd_idle(a):
    res = Results(a.results)
    nodes = parse_nodes(a.nodes)
    pids = {n["pid"] for n in nodes}
    ports = [int(p) for p in a.metrics_ports.split(",")]
    m1 = [scrape(p) for p in ports]
    t1, cpu1, s1 = snapshot(pids, set(ports))
    log(f"idle window: {a.secs} s, nothing but the nodes' own traffic")
    time.sleep(a.secs)
    t2, cpu2, s2 = snapshot(pids, set(ports))
    m2 = [scrape(p) for p in ports]
    check_running(nodes)
    dt = t2 - t1
    cpu_pct, rss, tx, rx, segs_out, segs_in, conns = [], [], [], [], [], [], []
    owner = {v["local"]: v["pid"] for v in s2.values()}
    pairs = {}
    for p in sorted(pids):
        cpu_pct.append((cpu2[p] - cpu1[p]) / CLK_TCK / dt * 100)
        rss.append(proc_status_kib(p, "VmRSS") / 1024)
        d = {k: 0 for k in SS_NUM}
        n_conn = 0
        for key, v in s2.items():
            if v["pid"] != p:
                continue
            n_conn += 1
            before = s1.get(key, {})
            for k in SS_NUM:
                d[k] += v.get(k, 0) - before.get(k, 0)
            other = owner.get(v["peer"])
            if other is not None:
                pair = (min(p, other), max(p, other))
                pairs[pair] = pairs.get(pair, 0) + 1
        tx.append(d["bytes_sent"] / dt)
        rx.append(d["bytes_received"] / dt)
        segs_out.append(d["data_segs_out"] / dt)
        segs_in.append(d["data_segs_in"] / dt)
        conns.append(n_conn)
    res.put("idle.secs", dt)
    put_summary(res, "idle.cpu_pct", cpu_pct)
    put_summary(res, "idle.rss_mib", rss)
    put_summary(res, "idle.tx_Bps", tx)
    put_summary(res, "idle.rx_Bps", rx)
    put_summary(res, "idle.segs_out_ps", segs_out)
    put_summary(res, "idle.segs_in_ps", segs_in)
    put_summary(res, "idle.conns", conns)
    # every pair's connections are seen from both ends: halve
    per_pair = [c // 2 for c in pairs.values()]
    res.put("idle.peer_pairs", len(per_pair))
    res.put("idle.pairs_multi", sum(1 for c in per_pair if c > 1))
    res.put("idle.conns_opened", sum(1 for k in s2 if k not in s1))
    res.put("idle.conns_closed", sum(1 for k in s1 if k not in s2))
    sync = [(sync_bytes(b) - sync_bytes(a_)) / dt for a_, b in zip(m1, m2) if a_ and b]
    if sync:
        put_summary(res, "idle.sync_Bps", sync)
    for key, name, direction in (("idle.gossip_in_mps", "messages", "in"),
                                 ("idle.gossip_in_Bps", "bytes", "in"),
                                 ("idle.gossip_out_mps", "messages", "out")):
        vals = []
        for a_, b in zip(m1, m2):
            if a_ and b and gossip(a_, name, direction) is not None and gossip(b, name, direction) is not None:
                vals.append((gossip(b, name, direction) - gossip(a_, name, direction)) / dt)
        if vals:
            put_summary(res, key, vals)
    pc = [b["p2pfs_peers_connected"] for b in m2 if b and "p2pfs_peers_connected" in b]
    if pc:
        put_summary(res, "idle.peers_connected", pc)
    log(f"idle: CPU per node median {statistics.median(cpu_pct):.2f}% of a core (all nodes "
        f"{sum(cpu_pct):.1f}%), RSS median {statistics.median(rss):.1f} MiB, TCP sent median "
        f"{statistics.median(tx) / 1e3:.1f} kB/s, {statistics.median(conns):g} connections per node")


# ---------------------------------------------------------------------------
# wait-dead: survivors see the killed nodes dead; node 1's health exits 0
# ---------------------------------------------------------------------------
def health(ctl, data_dir):
    t = time.time()
    try:
        p = subprocess.run([ctl, "--data-dir", data_dir, "health", "--json"],
                           capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        return None, "timed out after 120 s", time.time() - t
    return p.returncode, (p.stdout or p.stderr).strip(), time.time() - t


def cmd_wait_dead(a):
    res = Results(a.results)
    nodes = parse_nodes(a.nodes)  # the survivors; the first is node 1
    killed = set(a.killed.split(","))
    t0 = a.t0
    t_first = t_all = t_n1 = t_health = None
    n1_first_seen = None
    dead_at = {}  # survivor -> when it was first seen to list every killed node dead
    false_views = set()  # (observer, peer id, state): a survivor seen not alive
    health_calls = 0
    last_log = 0.0
    last_health = ""
    while True:
        start = time.time()
        check_running(nodes)
        ok = []
        for i, (node, s, t) in enumerate(statuses(a.ctl, nodes)):
            t -= t0
            if s is None:
                ok.append(False)
                continue
            states = {p["peer_id"]: p["state"] for p in s["peers"]}
            dead = sum(1 for k in killed if states.get(k) == "dead")
            ok.append(dead == len(killed))
            if dead == len(killed):
                dead_at.setdefault(node["name"], t)
            if dead and t_first is None:
                t_first = t
            if i == 0 and dead == len(killed) and t_n1 is None:
                t_n1 = t
                n1_first_seen = t_n1
            for pid_, st in states.items():
                if pid_ not in killed and st != "alive":
                    false_views.add((node["name"], pid_, st))
        now = time.time()
        if t_all is None and all(ok):
            # the last survivor to see them all dead, as first seen by a poll
            t_all = max(dead_at.values())
            log(f"every survivor sees the {len(killed)} killed nodes dead, {t_all:.1f} s after the kill")
        if t_n1 is not None and t_health is None:
            rc, out, took = health(a.ctl, nodes[0]["data"])
            health_calls += 1
            last_health = out
            if rc == 0:
                t_health = time.time() - t0
                res.put("kill.health_call_s", took)
                try:
                    h = json.loads(out)
                    res.put("kill.health_nodes", h.get("nodes"))
                    res.put("kill.health_chunks", h.get("chunks"))
                except ValueError:
                    pass
                log(f"node 1: p2pfs-ctl health exits 0, {t_health:.1f} s after the kill")
            elif rc not in (5, None):
                log(f"node 1: p2pfs-ctl health exited {rc}: {out[:200]}")
        if now - last_log >= 5:
            log(f"{now - t0:6.1f} s after the kill: {sum(ok)}/{len(nodes)} survivors see all "
                f"{len(killed)} dead; node 1 health {'ok' if t_health else 'not yet'}")
            last_log = now
        if t_all is not None and t_health is not None:
            break
        if now - t0 > a.timeout:
            log(f"last health output: {last_health[:500]}")
            die(f"timed out after {a.timeout} s (every survivor sees them dead: "
                f"{t_all is not None}; node 1 health ok: {t_health is not None})", 2)
        time.sleep(max(0.0, start + a.interval - time.time()))
    res.put("kill.first_dead_s", t_first)
    res.put("kill.all_dead_s", t_all)
    res.put("kill.node1_dead_s", n1_first_seen)
    res.put("kill.health_ok_s", t_health)
    res.put("kill.health_calls", health_calls)
    res.put("kill.false_views", len(false_views))
    if false_views:
        states = {}
        for _, _, st in false_views:
            states[st] = states.get(st, 0) + 1
        res.detail("while the killed nodes were being declared dead, survivors were seen not "
                   "alive by other survivors: " + ", ".join(f"{v} x {k}" for k, v in states.items())
                   + f" (observer, peer) pairs, {len({o for o, _, _ in false_views})} observers")


# ---------------------------------------------------------------------------
# metric-sum, logs
# ---------------------------------------------------------------------------
def cmd_metric_sum(a):
    total = 0.0
    for p in a.ports:
        m = scrape(int(p))
        if m is not None:
            total += m.get(a.name, 0.0)
    print(f"{total:.0f}")


def cmd_logs(a):
    """WARN/ERROR/panic lines of every node log, grouped by level, target and message (cut at
    the first field, numbers replaced), with C tools: a log can be gigabytes."""
    import shlex
    res = Results(a.results)
    counts = {"WARN": 0, "ERROR": 0, "panic": 0}
    groups = {}  # (level, message) -> [lines, nodes]
    files_with = 0
    for path in a.files:
        pipe = (f"grep -aE '^[^ ]+ +(WARN|ERROR) |panicked' {shlex.quote(path)} | "
                "sed -E 's/^[^ ]+ +//; s/=.*//; s/\\b[0-9]+\\b/N/g' | cut -c1-200 | sort | uniq -c")
        out = subprocess.run(["sh", "-c", pipe], capture_output=True, text=True, errors="replace",
                             check=False, env=dict(os.environ, LC_ALL="C")).stdout
        seen = False
        for line in out.splitlines():
            n, _, msg = line.strip().partition(" ")
            level = msg.split(" ", 1)[0]
            if level not in ("WARN", "ERROR"):
                level = "panic"
            counts[level] += int(n)
            g = groups.setdefault((level, msg), [0, 0])
            g[0] += int(n)
            g[1] += 1
            seen = True
        files_with += seen
    res.put("logs.warn", counts["WARN"])
    res.put("logs.error", counts["ERROR"])
    res.put("logs.panic", counts["panic"])
    res.put("logs.nodes_with", files_with)
    order = sorted(groups.items(), key=lambda kv: -kv[1][0])
    for (lvl, msg), (n, nodes) in order[:a.top]:
        res.detail(f"node logs: {n} x on {nodes} node(s): `{msg}`")
    if len(order) > a.top:
        res.detail(f"node logs: {len(order) - a.top} more kinds of WARN/ERROR line (see the logs)")


# ---------------------------------------------------------------------------
# logtimes: the same moments from the nodes' own log lines (to the microsecond)
# ---------------------------------------------------------------------------
LOG_EVENT = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+)Z\s+\w+\s+\S+ (.*)$")
RX_MOUNTED = re.compile(r"^mounted mount=")
RX_JOINED = re.compile(r"^peer joined peer=(\S+)")
RX_CHANGED = re.compile(r'^peer state changed peer=(\S+) from="(\w+)" to="(\w+)"')


def log_events(path):
    """[(epoch, kind, peer, from, to)] of one node log: mounted, joined, state changes.
    (grep first: a log can be gigabytes of gossipsub warnings when peers stop reading.)"""
    from datetime import datetime, timezone
    out = []
    lines = subprocess.run(["grep", "-aE", "mounted mount=|peer joined|peer state changed", path],
                           capture_output=True, text=True, errors="replace", check=False,
                           env=dict(os.environ, LC_ALL="C")).stdout.splitlines()
    for line in lines:
        m = LOG_EVENT.match(line)
        if not m:
            continue
        msg = m.group(2)
        kind = None
        if RX_MOUNTED.match(msg):
            kind = ("mounted", None, None, None)
        elif (j := RX_JOINED.match(msg)):
            kind = ("state", j.group(1), None, "alive")
        elif (c := RX_CHANGED.match(msg)):
            kind = ("state", c.group(1), c.group(2), c.group(3))
        if kind:
            t = datetime.fromisoformat(m.group(1)).replace(tzinfo=timezone.utc).timestamp()
            out.append((t,) + kind)
    return out


def cmd_logtimes(a):
    res = Results(a.results)
    killed = set(a.killed.split(",")) if a.killed else set()
    killed_nodes = set(a.killed_nodes.split(",")) if a.killed_nodes else set()
    mounted, complete, dead_all, dead_any, suspect_first = [], [], [], [], []
    flaps_before = flaps_after = 0
    flap_observers = set()
    never = []  # nodes whose log never shows n-1 peers alive
    for spec in a.files:
        name, path = spec.split("=", 1)
        states = {}
        t_mounted = t_complete = None
        events = log_events(path)
        for t, kind, peer, frm, to in events:
            if kind == "mounted":
                t_mounted = t_mounted or t
                continue
            states[peer] = to
            before_kill = a.t_kill is None or t < a.t_kill
            alive = sum(1 for st in states.values() if st == "alive")
            if before_kill and to == "alive" and alive == a.n - 1:
                t_complete = t
            if peer not in killed and frm == "alive" and to != "alive":
                flap_observers.add(name)
                if before_kill:
                    flaps_before += 1
                else:
                    flaps_after += 1
        if t_mounted is not None:
            mounted.append(t_mounted - a.t0)
        if t_complete is not None:
            complete.append(t_complete - a.t0)
        else:
            never.append(name)
        if a.t_kill is not None and name not in killed_nodes:
            evs = [(t, peer, to) for t, kind, peer, _f, to in events
                   if kind == "state" and peer in killed and t >= a.t_kill]
            dead_t = {}
            for t, peer, to in evs:
                if to == "dead":
                    dead_t.setdefault(peer, t)
                if to == "suspect":
                    suspect_first.append(t - a.t_kill)
            if dead_t:
                dead_any.append(min(dead_t.values()) - a.t_kill)
            if len(dead_t) == len(killed):
                dead_all.append(max(dead_t.values()) - a.t_kill)
            else:
                log(f"node {name}: its log shows {len(dead_t)} of {len(killed)} killed nodes dead")
    if len(mounted) == len(a.files):
        res.put("log.all_mounted_s", max(mounted))
    if never:
        res.put("log.never_complete", len(never))
        res.detail(f"{len(never)} of {len(a.files)} node logs never show {a.n - 1} peers alive "
                   f"at once: nodes {' '.join(never)}")
    else:
        res.put("log.alive_s", max(complete))
    res.put("log.flaps_before_kill", flaps_before)
    res.put("log.flaps_after_kill", flaps_after)
    res.put("log.flap_observers", len(flap_observers))
    if dead_all:
        res.put("log.kill_suspect_first_s", min(suspect_first) if suspect_first else "")
        res.put("log.kill_dead_first_s", min(dead_any))
        res.put("log.kill_dead_all_s", max(dead_all))
        res.put("log.kill_dead_survivors", len(dead_all))


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------
def load(path):
    r, meta, details = {}, {}, []
    for parts in records(path):
        if parts[0] == "result":
            r[parts[1]] = parts[2]
        elif parts[0] == "meta":
            meta[parts[1]] = parts[2]
        elif parts[0] == "detail":
            details.append(parts[1])
    return r, meta, details


def rows(r, meta):
    def f(key, nd=1, scale=1.0):
        if key not in r or r[key] in ("", "None"):
            return "—"
        return f"{float(r[key]) * scale:.{nd}f}"

    def mmm(key, nd=1, scale=1.0):
        return f"{f(key + '.min', nd, scale)} / {f(key + '.med', nd, scale)} / {f(key + '.max', nd, scale)}"

    n = int(meta["nodes"])
    mid, far = meta["mid_node"], meta["far_node"]
    idle = f("idle.secs", 0)
    for key, a_, b_ in (("form.alive_after_spawn_s", "log.alive_s", "start.spawn_end_s"),
                        ("kill.health_after_dead_s", "kill.health_ok_s", "kill.node1_dead_s")):
        try:
            r[key] = str(float(r[a_]) - float(r[b_]))
        except (KeyError, ValueError):
            pass
    out = [
        ("Start: node 1 up (mounted, listen address reported)", f("start.node1_s", 2), "s"),
        (f"Start: spawn nodes 2..{n} (each bootstraps to node 1; " +
         ("all at once)" if meta.get("spawn_batch", "0") == "0" else
          f"{meta['spawn_batch']} at a time, each batch once node 1 sees the previous ones alive)"),
         f("start.spawn_s", 2), "s"),
        (f"Start: all {n} nodes mounted (node logs)", f("log.all_mounted_s", 2), "s from node 1's start"),
        (f"Start: all {n} nodes answering `status` (polls)", f("form.all_up_s"),
         f"s from node 1's start (the first poll began at {f('form.first_poll_s')} s)"),
        (f"Membership: every node's view shows {n - 1} peers alive (node logs)", f("log.alive_s", 2), "s from node 1's start"),
        ("Membership: the same, after the last node was spawned", f("form.alive_after_spawn_s", 2), "s"),
        ("Membership: the same, confirmed by `status --json` on every node", f("form.alive_s"),
         f"s from node 1's start (slowest poll of all {n}: {f('form.slowest_poll_s')} s)"),
        (f"Propagation: `cp` of {meta['probe_mib']} MiB into node 1's mount (incl. close)", f("probe.cp_s", 2), "s"),
        (f"Propagation: reads back (sha256 ok) on node {mid}", f("probe.mid_s", 2), "s after the close"),
        (f"Propagation: reads back (sha256 ok) on node {far} (the farthest mount)", f("probe.far_s", 2), "s after the close"),
        ("Idle: gossip messages received per node (new to it, all topics)", mmm("idle.gossip_in_mps", 2), "messages/s min / median / max"),
        ("Idle: gossip payload received per node", mmm("idle.gossip_in_Bps", 2, 1e-3), "kB/s min / median / max"),
        ("Idle: gossip messages published per node", mmm("idle.gossip_out_mps", 3), "messages/s min / median / max"),
        (f"Idle ({idle} s): TCP payload sent per node, all protocols", mmm("idle.tx_Bps", 2, 1e-3), "kB/s min / median / max"),
        ("Idle: TCP payload received per node, all protocols", mmm("idle.rx_Bps", 2, 1e-3), "kB/s min / median / max"),
        ("Idle: TCP data segments sent per node", mmm("idle.segs_out_ps", 1), "segments/s min / median / max"),
        ("Idle: of which anti-entropy sync RPC, in + out, per node", mmm("idle.sync_Bps", 2, 1e-3), "kB/s min / median / max"),
        ("Idle: TCP connections per node", mmm("idle.conns", 0), f"min / median / max ({n - 1} peers)"),
        ("Idle: node pairs with more than one connection", f"{f('idle.pairs_multi', 0)} of {f('idle.peer_pairs', 0)}", "pairs"),
        ("Idle: CPU per node", mmm("idle.cpu_pct", 2), "% of one core min / median / max"),
        (f"Idle: CPU of all {n} nodes together", f("idle.cpu_pct.sum", 1), "% of one core"),
        ("Idle: RSS per node", mmm("idle.rss_mib", 1), "MiB min / median / max"),
        (f"Idle: RSS of all {n} nodes together", f("idle.rss_mib.sum", 0), "MiB"),
        ("Membership: live peers marked suspect or dead before the kill (node logs)", f("log.flaps_before_kill", 0), "state changes"),
        (f"Files: `cp` of {meta['files']} files ({f('files.mib', 1)} MiB) into node 1", f("files.cp_s", 2), "s"),
        ("Files: until node 1's `health` exits 0 (every chunk on R=3 nodes)", f("files.healthy_s", 1), "s after the copy"),
        (f"Kill: `kill -9` of {meta.get('killed_n') or '—'} nodes ({meta.get('killed') or '—'})",
         f"{f('kill.held_chunks', 0)} chunk copies, {f('kill.held_mib', 1)} MiB", "held by them"),
        ("Kill: a first survivor marks a killed node suspect (node logs)", f("log.kill_suspect_first_s"), "s after the kill"),
        ("Kill: a first survivor marks a killed node dead (node logs)", f("log.kill_dead_first_s"), f"s after the kill (--dead-after {meta['dead_after']})"),
        ("Kill: every survivor has marked all of them dead (node logs)", f("log.kill_dead_all_s"), "s after the kill"),
        ("Kill: the same, confirmed by `status --json` on every survivor", f("kill.all_dead_s"), "s after the kill"),
        ("Kill: node 1's `p2pfs-ctl health` exits 0 (repair complete)", f("kill.health_ok_s"), "s after the kill"),
        ("Kill: the same, after node 1's status showed them all dead", f("kill.health_after_dead_s"), "s"),
        ("Kill: repair pushes by the survivors (repair_pushed_bytes_total)", f("kill.repair_mib", 1), "MiB"),
        ("Kill: survivors marked suspect or dead by another survivor after the kill (node logs)", f("log.flaps_after_kill", 0), "state changes"),
        (f"Verify: files read back on node {far} after the repair, sha256", f"{meta.get('verified', '—')}", "files"),
        ("Node logs: WARN / ERROR / panic lines (all nodes)",
         f"{f('logs.warn', 0)} / {f('logs.error', 0)} / {f('logs.panic', 0)}", f"lines, on {f('logs.nodes_with', 0)} nodes"),
        ("Wall time of the run", meta.get("wall", "?"), "s"),
    ]
    return out


def table(rws):
    return md_table(["measurement", "value", "unit"], [list(r) for r in rws],
                    sep="| --- | ---: | --- |")


def header_lines(meta):
    failed = [f"- **Run incomplete**: {meta['failed']} (— marks what was not measured)"] \
        if meta.get("failed") else []
    return failed + [
        f"- Date: {meta.get('date')}; wall time: {meta.get('wall')} s; nodes: {meta.get('nodes')} "
        f"(every node has a FUSE mount: `p2pfs run` requires `--mount`; the measurements use nodes "
        f"1, {meta.get('mid_node')} and {meta.get('far_node')})",
        machine_line(meta),
        load_line(meta),
    ] + binary_lines(meta)


NOTES = [
    "Every node runs `p2pfs run --listen /ip4/127.0.0.1/tcp/0 --no-mdns --replicas 3 "
    "--dead-after D --metrics 127.0.0.1:PORT`, nodes 2..N with `--bootstrap` node 1's first "
    "listen address; all data dirs share one network key. Times marked (node logs) come from "
    "the timestamps of the nodes' own log lines (`mounted`, `peer joined`, `peer state changed`): "
    "the moment the last node's view reached N-1 alive peers, or marked the last killed node "
    "dead. The same conditions are confirmed through the status contract by polling "
    "`p2pfs-ctl status --json` on every node once a second (those times are good to a second "
    "plus one poll). File reads are polled every 50 ms (`readdir` until the name shows, then "
    "open and sha256 of the whole file).",
    "Gossip rows come from the metrics endpoint (`p2pfs_gossip_messages_total` and "
    "`p2pfs_gossip_bytes_total`, summed over topics): messages new to the node and their "
    "payloads, before gossipsub's duplicates and control traffic. The TCP rows are every byte "
    "of each node (gossip with its duplicates, ping, identify, Kademlia, "
    "anti-entropy sync, with Noise and yamux framing), from the kernel's per-socket `tcp_info` "
    "counters (`ss -tinp`: bytes_sent, bytes_received, data_segs_out) at the start and end of the "
    "window, summed per process; on loopback every byte one node sends another receives. "
    "`/proc/PID/io` rchar/wchar are not used: they count read()/write() but not the "
    "send()/recv() calls Rust's TcpStream makes, so a node that received 4 MiB over TCP shows "
    "only its file I/O there. Each node announces itself every max(2 s, N/8 s), so each node "
    "receives about min(N/2, 8) membership messages a second (before gossipsub duplicates).",
    "CPU is utime+stime from /proc/PID/stat over the idle window (all threads), as % of one "
    "core; RSS is VmRSS at its end. Nothing but the nodes runs during the window (no status "
    "polls; the metrics endpoints are scraped just before and after it).",
    "The killed nodes exclude node 1 and the mounts used for reading (the middle and the last "
    "node). Their FUSE mounts are detached with `umount -l` after the kill.",
    "A run whose nodes never all see each other (within 60 + 3N s) is reported as incomplete: "
    "the idle window is still measured on the cluster as it is, the nodes that stopped "
    "answering `status` are listed and the thread states and gdb backtraces of up to three of "
    "them are left in bench/work/scale-logs; the run exits 1.",
]


def cmd_report(a):
    r, meta, details = load(a.results)
    rws = rows(r, meta)
    tbl = table(rws)
    print()
    print(f"bench/scale: {meta.get('nodes')} p2pfs nodes on loopback")
    for line in header_lines(meta):
        print(line)
    print()
    print(tbl)
    print()
    for d in details:
        print(f"- {d}")
    if not a.md:
        return
    n = meta.get("nodes")
    block = [f"<!-- scale N={n} -->", f"### {n} nodes", ""]
    block += header_lines(meta) + ["", tbl, ""]
    if details:
        block += ["Details:", ""] + [f"- {d}" for d in details] + [""]
    block.append(f"<!-- /scale N={n} -->")
    old = read_text(a.md, "# Benchmarks\n")
    # The section keeps the latest run of each node count (e.g. the CI size and the full one).
    blocks = {}
    inner = section(old, BEGIN, END)
    if inner is not None:
        for m in re.finditer(r"<!-- scale N=(\d+) -->.*?<!-- /scale N=\1 -->", inner, re.S):
            blocks[int(m.group(1))] = m.group(0)
    blocks[int(n)] = "\n".join(block)
    sect = [BEGIN, "## Scale: many nodes on one machine (`bench/scale`)", "",
            "Generated by `bench/scale` (see bench/README.md): the latest run of each node count; "
            "a run replaces the block of its own count.", ""]
    for k in sorted(blocks):
        sect += [blocks[k], ""]
    sect += ["How it is measured:", ""] + [f"- {x}" for x in NOTES] + [END]
    write_section(a.md, old, BEGIN, END, "\n".join(sect) + "\n")
    print(f"\n(written to {a.md})")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("ports")
    s.add_argument("base", type=int)
    s.add_argument("n", type=int)
    s.set_defaults(fn=cmd_ports)

    s = sub.add_parser("mkfiles")
    s.add_argument("dir")
    s.add_argument("count", type=int)
    s.add_argument("min", type=int)
    s.add_argument("max", type=int)
    s.add_argument("seed", type=int)
    s.set_defaults(fn=cmd_mkfiles)

    s = sub.add_parser("form")
    s.add_argument("--results", required=True)
    s.add_argument("--ctl", required=True)
    s.add_argument("--t0", type=float, required=True)
    s.add_argument("--timeout", type=float, required=True)
    s.add_argument("--interval", type=float, default=1.0)
    s.add_argument("--silent-file", help="on a timeout, the nodes that did not answer go here")
    s.add_argument("nodes", nargs="+", help="NAME=PID:DATA_DIR:MOUNT")
    s.set_defaults(fn=cmd_form)

    s = sub.add_parser("wait-files")
    s.add_argument("--results", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--sha256", required=True)
    s.add_argument("--t0", type=float, required=True)
    s.add_argument("--timeout", type=float, required=True)
    s.add_argument("--interval", type=float, default=0.05)
    s.add_argument("mounts", nargs="+", help="KEY=MOUNT")
    s.set_defaults(fn=cmd_wait_files)

    s = sub.add_parser("idle")
    s.add_argument("--results", required=True)
    s.add_argument("--secs", type=float, required=True)
    s.add_argument("--metrics-ports", required=True)
    s.add_argument("nodes", nargs="+", help="NAME=PID:DATA_DIR:MOUNT")
    s.set_defaults(fn=cmd_idle)

    s = sub.add_parser("wait-dead")
    s.add_argument("--results", required=True)
    s.add_argument("--ctl", required=True)
    s.add_argument("--t0", type=float, required=True)
    s.add_argument("--timeout", type=float, required=True)
    s.add_argument("--interval", type=float, default=1.0)
    s.add_argument("--killed", required=True, help="peer ids, comma-separated")
    s.add_argument("nodes", nargs="+", help="survivors, node 1 first: NAME=PID:DATA_DIR:MOUNT")
    s.set_defaults(fn=cmd_wait_dead)

    s = sub.add_parser("metric-sum")
    s.add_argument("name")
    s.add_argument("ports", nargs="+")
    s.set_defaults(fn=cmd_metric_sum)

    s = sub.add_parser("logs")
    s.add_argument("--results", required=True)
    s.add_argument("--top", type=int, default=8)
    s.add_argument("files", nargs="*")
    s.set_defaults(fn=cmd_logs)

    s = sub.add_parser("logtimes")
    s.add_argument("--results", required=True)
    s.add_argument("--t0", type=float, required=True)
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--t-kill", type=float)
    s.add_argument("--killed", default="", help="peer ids of the killed nodes, comma-separated")
    s.add_argument("--killed-nodes", default="", help="their names, comma-separated")
    s.add_argument("files", nargs="+", help="NAME=LOG")
    s.set_defaults(fn=cmd_logtimes)

    s = sub.add_parser("report")
    s.add_argument("results")
    s.add_argument("--md")
    s.set_defaults(fn=cmd_report)

    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
