#!/usr/bin/env python3
"""bench/report.py — the table printer of bench/run.

Reads the results file bench/run writes (tab-separated: `result SYS.ROW VALUE`,
`qual SYS.ROW TEXT`, `detail N TEXT`, `skipped TEXT`, `meta KEY VALUE`), prints
the ratio table on stdout and, with `--md FILE`, replaces the generated section
of FILE (between the BEGIN/END markers; the file is created if missing).
Standard library only; what it shares with the other benches is in bench/p2pfs_bench.py.
"""
import sys

from p2pfs_bench import (binary_lines, fmt3, load_line, machine_line, md_table, read_text,
                         records, write_section)

BEGIN = "<!-- BEGIN bench/run: generated, replaced by every run -->"
END = "<!-- END bench/run -->"

SYSTEMS = ("fuser", "p2pfs", "base", "gluster", "tahoe")
NAMES = {"fuser": "fuser simple", "p2pfs": "p2pfs", "base": "p2pfs base", "gluster": "Gluster",
         "tahoe": "Tahoe"}
SHORT = {"fuser": "fuser", "base": "base", "gluster": "Gluster", "tahoe": "Tahoe"}

# Row kinds: "rate" (higher is better; targets are minimum ratios p2pfs / reference, and
# "min" an absolute floor), "cpu" (CPU-seconds per GiB, lower is better; targets are maximum
# ratios p2pfs / reference), "mem" (MiB; "max" is a ceiling).
# (row id, label, unit, kind, targets, what it measures)
ROWS = [
    ("write", "a. sequential write (`cp`)", "MB/s", "rate",
     {"fuser": 1.0, "gluster": 1.0, "tahoe": 8.0},
     "`cp src.bin MNT/big` on the writer (p2pfs node 1, Gluster: the writer mount, Tahoe: "
     "`PUT /uri` on the writer client until the cap returns), the whole command including "
     "the close; the source is in the page cache first. p2pfs's close returns once 3 holders "
     "store every chunk; Gluster's once its 3 bricks acknowledged every write."),
    ("read_cold", "b. cold remote read (`cat`)", "MB/s", "rate",
     {"fuser": 0.8, "gluster": 1.0, "tahoe": 8.0, "min": 600},
     "On the reader after a restart of the reader (p2pfs: the `--no-storage` node 4, "
     "SIGTERM and start again, which empties its chunk cache; fuser simple: umount and "
     "start again; Gluster: the reader mount unmounted and mounted again; Tahoe: the reader "
     "client) and `drop_caches`: `cat MNT/big > /dev/null` (Tahoe: `GET /uri/CAP` piped into "
     "sha256sum). p2pfs's reader holds no chunk, so every byte comes from the holders over "
     "loopback; Gluster's reader client reads from the bricks over loopback."),
    ("read_warm", "c. warm read (`cat` again)", "MB/s", "rate", {"fuser": 1.0, "gluster": 1.0},
     "The same read again at once, without dropping caches: each system gets the caches it "
     "has (fuser simple: the page cache of its data file; p2pfs: its 64 MiB chunk cache and "
     "whatever the kernel keeps; Gluster: its client's caches and the bricks' page cache; "
     "Tahoe: none). Then the data is verified by sha256."),
    ("small_create", "d. 4 KiB files: create (`cp -r`)", "files/s", "rate",
     {"fuser": 0.5, "gluster": 1.0},
     "`cp -r small-src MNT/small` on the writer, one process, source in the page cache "
     "(Tahoe: `PUT /uri/DIRCAP/NAME` per file, one curl process on one connection). "
     "Counts differ per system (n=...): fuser simple and Tahoe rewrite the whole directory "
     "on every create, so their rates fall as n grows and a smaller n flatters them."),
    ("small_read", "d. 4 KiB files: read on the reader, cold (`cat *`)", "files/s", "rate",
     {"fuser": 0.5, "gluster": 1.0},
     "Once the reader lists all the files (the wait is reported below, not timed) and after "
     "`drop_caches`: `cat MNT/small/* > /dev/null` on the reader (the glob's readdir is "
     "timed too; Tahoe: the `?t=json` listing, then a GET per file). Verified with `diff -r`."),
    ("dir_create", "e. directory: create entries (`touch`)", "entries/s", "rate", {"gluster": 1.0},
     "Empty files `touch`ed into one new directory on the writer (`xargs touch`). Tahoe: "
     "n/a, its directory is made in one `mkdir-with-children` request (time in the details)."),
    ("readdir", "e. directory: readdir on the reader, cold (`ls -f`)", "entries/s", "rate",
     {"gluster": 1.0},
     "After the reader lists every entry and `drop_caches`: `ls -f DIR | wc -l`. Tahoe: "
     "`GET /uri/DIRCAP?t=json` on the reader, which returns names and metadata at once and "
     "stands for both this row and the next."),
    ("stat", "e. directory: stat on the reader, cold (`ls -l`)", "entries/s", "rate",
     {"gluster": 1.0},
     "After `drop_caches`: `ls -l DIR`, a lookup and stat of every entry. Tahoe: the same "
     "`?t=json` listing as the row above."),
    ("repair", "f. repair after `kill -9` of a holder", "MB/s", "rate", {"gluster": 1.0},
     "p2pfs: a separate cluster of 4 holders, R=3, the file written on node 1; node 4 "
     "(holding ~3/4 of the chunks) is killed with `kill -9`; bytes it held / time from node 1 "
     "seeing it dead until the 3 survivors hold R copies of every chunk again with nothing "
     "queued (`status`; when `p2pfs-ctl health`, which proves every copy, exits 0 is in the "
     "details). Tahoe: a 4th storage node joins, "
     "storage1 is killed, bytes of the file's share it held / time of `POST ?t=check&repair=true`. "
     "fuser simple: n/a (one copy). Gluster: right after row c, brick 3's process is killed with "
     "`kill -9`, the brick replaced by an empty one (`replace-brick ... commit force`) and a full "
     "heal started; bytes brick 3 held / time from the kill until `heal statistics heal-count` "
     "shows no entry and the new brick holds every byte."),
    ("cpu_write", "h. CPU per GiB written", "CPU-s/GiB (lower is better)", "cpu", {"base": 0.5},
     "User + system CPU seconds (utime + stime of /proc/PID/stat, every thread) of every "
     "process of the system, read right before and right after row a's timed command, per "
     "GiB written. p2pfs: its 4 nodes; Gluster: glusterd, the 3 brick processes, the "
     "self-heal daemon and both clients; fuser simple: its one process; Tahoe: every node "
     "(its file is smaller, see row a). `cp` itself and the kernel's writeback threads are "
     "not counted (the same for every system). The per-process split is in the details."),
    ("cpu_read_cold", "h. CPU per GiB read cold", "CPU-s/GiB (lower is better)", "cpu",
     {"base": 0.5},
     "The same over row b's timed `cat` on the reader (p2pfs: the 4 nodes, with the "
     "restarted reader; Gluster: every process, with the remounted reader client)."),
    ("mem_write_peak", "g. memory: node 1 peak RSS, write (VmHWM)", "MiB", "mem", {"max": 256},
     "VmHWM of p2pfs node 1 read after the copy: its peak since it started. Gluster's "
     "processes: in the details."),
    ("mem_idle", "g. memory: idle RSS, largest node (VmRSS)", "MiB", "mem", {"max": 40},
     "VmRSS of each of the 4 nodes after the cluster formed and then idled; the largest."),
    ("mem_reader_peak", "g. memory: reader peak RSS after the cold read (VmHWM)", "MiB", "mem", {},
     "VmHWM of the reader node right after the cold read (before the warm one)."),
]


def load(path):
    res, qual, details, skipped, meta = {}, {}, [], [], {}
    for parts in records(path):
        kind = parts[0]
        if kind == "result":
            res[parts[1]] = float(parts[2])
        elif kind == "qual":
            qual[parts[1]] = parts[2]
        elif kind == "detail":
            details.append((int(parts[1]), parts[2]))
        elif kind == "skipped":
            skipped.append(parts[1])
        elif kind == "meta":
            meta[parts[1]] = parts[2]
    return res, qual, [d for _, d in sorted(details)], skipped, meta


def verdict(ok):
    return "met" if ok else "NOT met"


def table(res, qual):
    shown = [s for s in SYSTEMS if s != "base" or any(k.startswith("base.") for k in res)]
    others = [s for s in shown if s != "p2pfs"]
    hdr = (["workload", "unit"] + [NAMES[s] for s in shown]
           + [f"p2pfs / {SHORT[o]}" for o in others] + ["target", "result"])
    rows = []
    for rid, label, unit, kind, tgts, _ in ROWS:
        cells = []
        for sys_ in shown:
            v = res.get(f"{sys_}.{rid}")
            q = qual.get(f"{sys_}.{rid}")
            cells.append("n/a" if v is None else fmt3(v) + (f" ({q})" if q else ""))
        p = res.get(f"p2pfs.{rid}")
        ratios, targets, verdicts = [], [], []
        for other in others:
            o = res.get(f"{other}.{rid}")
            r = p / o if (p is not None and o and kind != "mem") else None
            ratios.append(f"{r:.2f}x" if r is not None else "n/a")
            tgt = tgts.get(other)
            if tgt is None:
                continue
            name = SHORT[other]
            if kind == "cpu":
                targets.append(f"<= {tgt:g}x {name}")
                ok = None if r is None else r <= tgt
            else:
                targets.append(f">= {tgt:g}x {name}")
                ok = None if r is None else r >= tgt
            verdicts.append(f"{name}: " + ("n/a" if ok is None else verdict(ok)))
        if "min" in tgts:
            targets.append(f">= {tgts['min']:g} {unit}")
            verdicts.append(f">= {tgts['min']:g}: " + ("n/a" if p is None else verdict(p >= tgts["min"])))
        if "max" in tgts:
            targets.append(f"<= {tgts['max']:g} {unit}")
            verdicts.append("n/a" if p is None else verdict(p <= tgts["max"]))
        if len(verdicts) == 1:
            verdicts = [verdicts[0].split(": ")[-1]]
        rows.append([label, unit] + cells + ratios
                    + ["; ".join(targets) or "none (report only)", "; ".join(verdicts) or "-"])
    return md_table(hdr, rows, aligned=True)


def header_lines(meta):
    wall = int(meta.get("wall", "0"))
    return [
        f"- Date: {meta.get('date')}; wall time of the run: {wall // 60} min {wall % 60} s",
        machine_line(meta),
        load_line(meta, " (the figures are noisy unless the machine is idle)"),
    ] + binary_lines(meta) + ([f"- p2pfs base: {meta['p2pfs_base']}"] if "p2pfs_base" in meta else [])


def legend(meta):
    return (f"Figures are rates (higher is better; MB/s = 10^6 bytes/s) except memory (MiB) and "
            f"CPU (CPU-seconds per GiB, lower is better: a ratio below 1 means p2pfs uses less). "
            f"The file is {meta.get('size_mib')} MiB unless a cell says otherwise; n = files or "
            f"entries. Ratios are p2pfs / reference. Targets are reported, not enforced.")


def main():
    args = sys.argv[1:]
    md = None
    if "--md" in args:
        i = args.index("--md")
        md = args[i + 1]
        del args[i:i + 2]
    res, qual, details, skipped, meta = load(args[0])
    tbl = table(res, qual)

    print()
    print("bench/run: p2pfs vs fuser simple (fuser 0.18.0 example) vs GlusterFS vs Tahoe-LAFS 1.20")
    for l in header_lines(meta):
        print(l)
    print(legend(meta))
    print()
    print(tbl)
    print()
    for s in skipped:
        print(f"- {s}")
    for d in details:
        print(f"- {d}")
    if md:
        print(f"\n(written to {md}, with notes on what each row measures)")

    if md:
        sect = [BEGIN, "## Latest run", ""]
        sect += header_lines(meta)
        sect += ["", legend(meta), "", tbl, ""]
        if skipped or details:
            sect += ["Details:", ""] + [f"- {s}" for s in skipped] + [f"- {d}" for d in details] + [""]
        sect += ["What each row measures:", ""]
        for rid, label, unit, _kind, _tgts, note in ROWS:
            sect.append(f"- **{label}** ({unit}): {note}")
        sect += ["",
                 "On one machine every p2pfs holder writes to the same disk: with R=3 each byte the "
                 "user writes is stored three times (whether close() waits for the disks is "
                 "`storage.sync_chunks`, shown in the details), while fuser simple writes it once; "
                 "every loopback transfer is also Noise-encrypted both ways. Gluster stores three "
                 "copies too (replica 3, three bricks on the same disk) but encrypts nothing, on "
                 "the wire or on disk. fuser simple looks a name up by reading its directory's whole entry "
                 "list (unbuffered), so its create, lookup and stat costs grow with the directory "
                 "size: its small-file and directory figures use fewer entries (see n) and would be "
                 "lower at p2pfs's n.",
                 "",
                 f"The p2pfs repair cluster runs with `network.repair_rate_mb = {meta.get('repair_rate_mb')}` "
                 f"in every node's config.toml (the default is 100 MB/s; 0 = unlimited) and "
                 f"`--dead-after {meta.get('dead_after')}`. All nodes of every system listen on "
                 f"127.0.0.1 only (p2pfs with `--no-mdns`). Each workload runs once.",
                 END]
        text = "\n".join(sect) + "\n"
        old = read_text(md, (
            "# Benchmarks\n\nFigures measured by `bench/run` (see bench/README.md for the "
            "workloads, knobs and how long a run takes). The section between the markers "
            "below is rewritten by every run; text outside it is kept.\n\n"
            "On a VM, `drop_caches` inside the VM does not reach the host's cache: a "
            "\"cold\" read of a file that was just written can be served at memory speed "
            "from below the VM. That flatters fuser simple's cold read most (one plain file "
            "on ext4); p2pfs's reader has no local copy and fetches every chunk from the "
            "holders over loopback.\n\n"))
        write_section(md, old, BEGIN, END, text)


if __name__ == "__main__":
    main()
