#!/usr/bin/env python3
"""bench/namespace's table: results.tsv (N, key, value) -> one row per figure, one column per
N, then per-entry figures where they mean something, and the ratio of the largest N to the
smallest (a flat figure has ratio ~1; a per-entry cost that stays flat has its total grow
with N). Standard library only; what it shares with the other benches is in
bench/p2pfs_bench.py."""

import sys
from collections import defaultdict

from p2pfs_bench import fmt3, md_table, records

# key -> (label, unit, per-entry scale: multiply value/N by this, per-entry unit) or no scale.
ROWS = [
    ("load_avg_1min_start", "machine load average, start of N", "", None),
    ("load_avg_1min_end", "machine load average, end of N", "", None),
    ("store_entries", "entries in the store", "", None),
    ("entry_bytes", "encoded file entry", "B", None),
    ("fill_secs", "filler (seal, sign, commit)", "s", (1e6, "µs")),
    ("disk_mib", "namespace.redb size", "MiB", (1048576, "B")),
    ("disk_alloc_mib", "namespace.redb allocated", "MiB", (1048576, "B")),
    ("load_secs", "store: load into the tree (decode, open, insert)", "s", (1e6, "µs")),
    ("rss_with_tree_mib", "store: RSS after that load (redb cache + tree)", "MiB", (1048576, "B")),
    ("load_all_secs", "store: load_all (decode every entry)", "s", (1e6, "µs")),
    ("digest_secs", "store: one anti-entropy digest", "s", (1e6, "µs")),
    ("bucket_pages_secs", "store: all 256 buckets in pages", "s", (1e6, "µs")),
    ("a_start_secs", "A: start until mounted + status", "s", (1e6, "µs")),
    ("a_start_cpu_secs", "A: CPU used by the start", "s", (1e6, "µs")),
    ("a_rss_mib", "A: RSS idle after start", "MiB", (1048576, "B")),
    ("a_hwm_mib", "A: peak RSS (start)", "MiB", (1048576, "B")),
    ("a_ls_f_cold_ms", "A: ls -f 10k dir, first", "ms", None),
    ("a_create_ms", "A: touch (median of 5)", "ms", None),
    ("b_start_secs", "B: start (empty) until mounted", "s", None),
    ("join_secs", "B: join until it holds all", "s", (1e6, "µs")),
    ("join_a_cpu_secs", "A: CPU during the join", "s", (1e6, "µs")),
    ("join_b_cpu_secs", "B: CPU during the join", "s", (1e6, "µs")),
    ("join_b_sync_in_mib", "B: sync bytes in", "MiB", (1048576, "B")),
    ("join_b_sync_out_mib", "B: sync bytes out", "MiB", (1048576, "B")),
    ("b_hwm_join_mib", "B: peak RSS (join)", "MiB", (1048576, "B")),
    ("b_rss_mib", "B: RSS after the join", "MiB", (1048576, "B")),
    ("b_ls_f_cold_ms", "B: ls -f 10k dir, first", "ms", None),
    ("b_ls_f_warm_ms", "B: ls -f 10k dir, again", "ms", None),
    ("b_ls_l_cold_ms", "B: ls -l 10k dir, first", "ms", None),
    ("b_ls_l_warm_ms", "B: ls -l 10k dir, again", "ms", None),
    ("b_ls_entries", "B: entries listed", "", None),
    ("b_stat_cold_ms", "B: stat one file, first", "ms", None),
    ("b_stat_warm_ms", "B: stat one file, again", "ms", None),
    ("b_create_ms", "B: touch (median of 5)", "ms", None),
    ("idle_a_cpu_pct", "idle in sync: A CPU", "% core", (1e6 * 10 / 100, "µs/10 s")),
    ("idle_b_cpu_pct", "idle in sync: B CPU", "% core", (1e6 * 10 / 100, "µs/10 s")),
    ("idle_sync_kib_per_min", "idle in sync: sync bytes A<->B", "KiB/min", None),
    ("b_restart_secs", "B: restart (holding N) until mounted", "s", (1e6, "µs")),
    ("b_restart_cpu_secs", "B: CPU used by the restart", "s", (1e6, "µs")),
    ("catchup_secs", "catch-up of 1 entry: restart until held", "s", None),
    ("catchup_b_sync_in_kib", "catch-up of 1 entry: B sync bytes in", "KiB", None),
    ("catchup_b_sync_out_kib", "catch-up of 1 entry: B sync bytes out", "KiB", None),
    ("a_rss_end_mib", "A: RSS at the end", "MiB", (1048576, "B")),
    ("b_rss_end_mib", "B: RSS at the end", "MiB", (1048576, "B")),
]


def fmt(v):
    return fmt3(v, grouping=True)


def main(path):
    data = defaultdict(dict)
    for parts in records(path):
        if len(parts) == 3:
            try:
                data[int(parts[0])][parts[1]] = float(parts[2])
            except ValueError:
                pass
    sizes = sorted(data)
    if not sizes:
        print("no results")
        return
    head = ["figure", "unit"] + [f"N={n:,}" for n in sizes]
    head += [f"per entry, N={n:,}" for n in sizes]
    if len(sizes) > 1:
        head.append(f"ratio {sizes[-1] // sizes[0]}x N")
    rows = []
    for key, label, unit, per in ROWS:
        vals = [data[n].get(key) for n in sizes]
        if all(v is None for v in vals):
            continue
        row = [label, unit] + [fmt(v) for v in vals]
        for n, v in zip(sizes, vals):
            if per and v is not None:
                scale, u = per
                row.append(f"{fmt(v * scale / n)} {u}")
            else:
                row.append("")
        if len(sizes) > 1:
            a, b = vals[0], vals[-1]
            row.append(f"{b / a:.2f}" if a and b is not None else "-")
        rows.append(row)
    print(md_table(head, rows))


if __name__ == "__main__":
    main(sys.argv[1])
