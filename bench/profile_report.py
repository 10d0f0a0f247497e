#!/usr/bin/env python3
"""bench/profile_report.py PERF_DATA TOP NODE_PID... — the table bench/profile prints.

Reads `perf script` of a whole-machine recording, splits the samples into the p2pfs node
processes and the rest (the `cp`/`cat` driving the mount, whose kernel time includes FUSE's
copies), and sorts every sample into a category by its symbol: where the CPU went, in the
share of all samples taken while the machine was busy. Standard library only.
"""
import collections
import re
import subprocess
import sys

# First match wins: (category, regex on "dso symbol").
CATEGORIES = [
    ("transport cipher (Noise ChaCha20-Poly1305)", r"chacha20_poly1305|ChaCha20|chacha|poly1305|Poly1305"),
    ("chunk AEAD (AES-256-GCM)", r"aes_gcm|aes_hw|aesni|gcm_|ghash|GFp_|aes_|_aes"),
    ("blake3 (ids, convergent keys, checks)", r"blake3"),
    ("noise / yamux framing", r"noise|yamux|snow::"),
    ("user-space copies (memcpy/memmove)", r"memmove|memcpy|memset"),
    ("allocator", r"malloc|_int_free|cfree|free_perturb|__libc_free|realloc|tcache|arena_|sysmalloc"),
    ("kernel: copies to/from user", r"\[kernel\S*\] (copy_user|rep_movs|copy_page|_copy_to_iter|_copy_from_iter|copyin|copyout|copy_to_user|copy_from_user|__copy)"),
    ("kernel: FUSE", r"\[kernel\S*\] .*fuse"),
    ("kernel: TCP/loopback", r"\[kernel\S*\] .*(tcp|skb|sock|inet|ip_|loopback|netif|net_rx|napi|__dev_queue|sk_|_sys_send|_sys_recv|dst_)"),
    ("kernel: ext4 / page cache", r"\[kernel\S*\] .*(ext4|jbd2|filemap|folio|page_cache|pagecache|shmem|mpage|iomap|writeback|lru_|bio|blk_|clear_page|__alloc_pages|rmqueue|get_page|free_unref|xas_)"),
    ("kernel: scheduler / futex / epoll", r"\[kernel\S*\] .*(schedule|futex|epoll|switch|pick_next|enqueue|dequeue|update_curr|ttwu|wake|hrtimer|tick|idle)"),
    ("kernel: other", r"\[kernel"),
    ("tokio / async runtime", r"tokio|mio::|futures_util|parking_lot|crossbeam"),
    ("redb / serde / cbor", r"redb|ciborium|serde"),
]
COMPILED = [(name, re.compile(rx)) for name, rx in CATEGORIES]


def category(dso, sym):
    text = f"{dso} {sym}"
    for name, rx in COMPILED:
        if rx.search(text):
            return name
    return "other"


def main():
    path, top = sys.argv[1], int(sys.argv[2])
    nodes = set(sys.argv[3:])
    out = subprocess.run(
        ["perf", "script", "-i", path, "-F", "pid,ip,sym,dso", "--no-inline"],
        capture_output=True, text=True, check=True).stdout
    # Lines: "  PID  IP SYMBOL (DSO)"; idle samples (swapper, pid 0) are left out.
    line_rx = re.compile(r"^\s*(\d+)\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$")
    by_cat = collections.Counter()
    by_sym = collections.Counter()
    owner = collections.Counter()
    total = 0
    for line in out.splitlines():
        m = line_rx.match(line)
        if not m:
            continue
        pid, sym, dso = m.group(1), m.group(2), m.group(3)
        if pid == "0":
            continue
        sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
        who = "nodes" if pid in nodes else "cp/cat and the rest"
        dso_short = "[kernel]" if dso.startswith("[kernel") else dso.rsplit("/", 1)[-1]
        total += 1
        owner[who] += 1
        by_cat[(who, category(dso_short, sym))] += 1
        by_sym[(who, dso_short, sym)] += 1
    if not total:
        print("  no samples")
        return
    print(f"  {total} busy samples: " + ", ".join(
        f"{who} {100 * n / total:.1f}%" for who, n in owner.most_common()))
    print("  | where | share of busy CPU |")
    print("  |---|---|")
    for (who, cat), n in sorted(by_cat.items(), key=lambda kv: (-owner[kv[0][0]], -kv[1])):
        if 100 * n / total >= 0.5:
            print(f"  | {who}: {cat} | {100 * n / total:.1f}% |")
    print(f"  top {top} symbols:")
    for (who, dso, sym), n in by_sym.most_common(top):
        print(f"    {100 * n / total:5.1f}%  {who:5.5}  {dso:20.20}  {sym[:90]}")


if __name__ == "__main__":
    main()
