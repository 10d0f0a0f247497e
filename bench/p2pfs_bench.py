"""bench/p2pfs_bench.py — what the Python halves of the benches share (bench/report.py,
bench/scale.py, bench/namespace.py): log lines, processes and mounts from /proc,
`p2pfs-ctl status`, the nodes' metrics endpoints, the tab-separated results files, figure
formats, Markdown tables and the generated sections of BENCHMARKS.md. The shell half of the
same is bench/lib.sh. Standard library only.
"""
import json
import os
import re
import subprocess
import sys
import time


# ---------------------------------------------------------------------------
# Log lines, as bench/lib.sh writes them: [TAG HH:MM:SS] message
# ---------------------------------------------------------------------------
def make_log(tag):
    """(log, die) writing `[TAG HH:MM:SS] message` lines to stderr; die exits with its code."""
    def log(msg):
        print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def die(msg, code=1):
        log(f"ERROR: {msg}")
        sys.exit(code)
    return log, die


# ---------------------------------------------------------------------------
# Processes and mounts
# ---------------------------------------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")


def is_running(pid):
    """Is PID a live (non-zombie) process?"""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            st = f.read()
    except OSError:
        return False
    return st.rsplit(")", 1)[1].split()[0] != "Z"


def proc_cpu_ticks(pid):
    """utime + stime of PID (all threads), in clock ticks (CLK_TCK a second)."""
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15
    return int(fields[11]) + int(fields[12])


def proc_status_kib(pid, key):
    """A /proc/PID/status field (VmRSS, VmHWM) in KiB; 0 if it is missing."""
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def unescape_mount(s):
    """/proc/mounts escapes space, tab, newline and backslash as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mounted_paths():
    with open("/proc/mounts", encoding="utf-8") as f:
        return {unescape_mount(line.split()[1]) for line in f}


# ---------------------------------------------------------------------------
# p2pfs: status and metrics
# ---------------------------------------------------------------------------
def status(ctl, data_dir, timeout=10):
    """`p2pfs-ctl status --json` of the node of DATA_DIR, parsed; None if it does not answer."""
    try:
        p = subprocess.run([ctl, "--data-dir", data_dir, "status", "--json"],
                           capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None
    if p.returncode != 0:
        return None
    try:
        return json.loads(p.stdout)
    except ValueError:
        return None


def alive_count(s):
    """Peers a status reply lists alive."""
    return sum(1 for p in s["peers"] if p["state"] == "alive")


def scrape(port):
    """{sample (name and labels): value} of the metrics endpoint on 127.0.0.1:PORT; None if
    it does not answer."""
    import urllib.request  # (here: a poll of a starting cluster should start fast)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            text = r.read().decode()
    except OSError:
        return None
    vals = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, v = line.rpartition(" ")
            try:
                vals[name] = float(v)
            except ValueError:
                pass
    return vals


# ---------------------------------------------------------------------------
# Results files: one record a line, tab-separated, the first field its kind
# ---------------------------------------------------------------------------
def records(path, fields=3):
    """The lines of a results file, each split on its first FIELDS-1 tabs."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield line.rstrip("\n").split("\t", fields - 1)


# ---------------------------------------------------------------------------
# Figures and tables
# ---------------------------------------------------------------------------
def fmt3(v, grouping=False):
    """A figure to about three significant digits: 1234 (1,234 with grouping), 12.3, 1.23;
    None is "-"."""
    if v is None:
        return "-"
    sep = "," if grouping else ""
    if abs(v) >= 100:
        return f"{v:{sep}.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def md_table(head, rows, aligned=False, sep=None):
    """A Markdown table. ALIGNED pads every column to its widest cell; SEP is the line under
    the head (default: `|---|` per column, or dashes as wide as each column when aligned)."""
    if aligned:
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]

        def line(r):
            return "| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(r)) + " |"
        if sep is None:
            sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    else:
        def line(r):
            return "| " + " | ".join(r) + " |"
        if sep is None:
            sep = "|" + "---|" * len(head)
    return "\n".join([line(head), sep] + [line(r) for r in rows])


# ---------------------------------------------------------------------------
# Report headers: the lines bench/run's and bench/scale's reports share
# ---------------------------------------------------------------------------
def machine_line(meta):
    """- Machine: ... from bench/lib.sh's machine_meta (and the disk, when given)."""
    disk = f", bench/work on {meta.get('disk')}" if "disk" in meta else ""
    return (f"- Machine: {meta.get('cores')} cores ({meta.get('cpu')}), {meta.get('memory')} RAM, "
            f"kernel {meta.get('kernel')}{disk}")


def load_line(meta, note=""):
    return (f"- Load average (1, 5, 15 min): {meta.get('load_before')} before, "
            f"{meta.get('load_after')} after{note}")


def binary_lines(meta):
    """The p2pfs binary measured and the command that ran."""
    return [
        f"- p2pfs: {meta.get('p2pfs')}",
        f"- Command: `{meta.get('command')}` (as root, from the repository root)",
    ]


# ---------------------------------------------------------------------------
# Generated sections of BENCHMARKS.md: the text between a BEGIN and an END marker
# ---------------------------------------------------------------------------
def read_text(path, default):
    """PATH's text, or DEFAULT when it does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return default


def section(text, begin, end):
    """TEXT's section from BEGIN up to END (END excluded), or None."""
    if begin in text and end in text:
        return text[text.index(begin):text.index(end)]
    return None


def write_section(path, old, begin, end, sect):
    """Writes OLD (PATH's text) to PATH with SECT (from BEGIN to END included) in place of its
    section, or appended when OLD has none; the text around it is kept."""
    if begin in old and end in old:
        pre = old[:old.index(begin)]
        post = old[old.index(end) + len(end):].lstrip("\n")
        new = pre + sect + (("\n" + post) if post else "")
    else:
        new = old.rstrip("\n") + "\n\n" + sect
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)
