#!/usr/bin/env python3
"""Ratios from a run of `cargo bench -p dogpile-tests --bench memory_hits` (its output on stdin).

Prints each subject's middle estimates for 1 thread, 2 threads on a hot key and on
distinct keys, its 1-thread time against its peer (the bare RwLock<HashMap> of the same
payload for hits, moka's insert for writes), and its scaling
(2 x t1 / t2) against the ceiling's (per-thread unshared maps), as in BENCHMARKS.md.
"""
import re
import sys

UNITS = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6}
times, name = {}, None
for line in sys.stdin:
    if "zipf" in line:
        print(line.strip())
    m = re.match(r"^(\S.*?)\s*(time:\s*\[.*)?$", line.rstrip("\n"))
    if m and not line.startswith(("Benchmarking", "Found", "  ", "zipf")):
        name = m.group(1).strip() or name
    t = re.search(r"time:\s*\[\S+ \S+ (\S+) (\S+)", line)
    if t and name:
        times[name] = float(t.group(1)) * UNITS[t.group(2)]
subjects = {}
for full, ns in times.items():
    subject, _, mode = full.rpartition("/")
    subjects.setdefault(subject, {})[mode] = ns
bare = subjects.get("bare RwLock<HashMap> get+clone", {}).get("1 thread")
ceiling = subjects.get("unshared RwLock<HashMap> per thread (ceiling)", {})
def scaling(s, mode):
    return 2 * s["1 thread"] / s[mode] if mode in s and "1 thread" in s else None
def peer_of(subject):
    """The subject a row's one-thread time is compared with: the bare map of the same
    payload for hits, moka's insert for writes."""
    if subject.startswith("write:"):
        return "write: moka insert"
    if subject.startswith("small struct:"):
        return "small struct: bare RwLock<HashMap> get+clone"
    return "bare RwLock<HashMap> get+clone"
def fmt(x, spec, suffix=""):
    return "" if x is None else f"{x:{spec}}{suffix}"
print("| what | 1 thread | vs its peer (bare map; moka for writes) | 2 thr hot | 2 thr distinct | scaling hot | scaling distinct | hot vs ceiling |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
ceil_hot = scaling(ceiling, "2 threads, hot key")
for subject, s in subjects.items():
    if "1 thread" not in s:
        for mode, ns in s.items():
            print(f"| {subject}/{mode} | {ns:.1f} ns | | | | | | |")
        continue
    hot, dist = scaling(s, "2 threads, hot key"), scaling(s, "2 threads, distinct keys")
    peer = subjects.get(peer_of(subject), {}).get("1 thread")
    vs = s["1 thread"] / peer if peer else None
    vs_ceiling = hot / ceil_hot if hot and ceil_hot else None
    print(f"| {subject} | {s['1 thread']:.1f} ns | {fmt(vs, '.2f')} | "
          f"{fmt(s.get('2 threads, hot key'), '.1f', ' ns')} | "
          f"{fmt(s.get('2 threads, distinct keys'), '.1f', ' ns')} | "
          f"{fmt(hot, '.2f', 'x')} | {fmt(dist, '.2f', 'x')} | {fmt(vs_ceiling, '.2f')} |")
