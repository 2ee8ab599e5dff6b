#!/usr/bin/env python3
"""The README's view of a bench-qemu results file: one line per case
(content, method, channels, destination) with multifd's and each QEMU's
median GB/s and the ratio multifd / the newest QEMU, as Markdown.

Usage: summary.py RESULTS.jsonl [--channels N]   (default: every case)
"""
import json
import sys


def main():
    path = sys.argv[1]
    only = None
    if len(sys.argv) > 3 and sys.argv[2] == "--channels":
        only = int(sys.argv[3])
    cases, by = [], {}
    for line in open(path):
        r = json.loads(line)
        if "tool" not in r:
            continue
        k = (r["content"], r["method"], r["channels"], r["dest"])
        if only is not None and r["channels"] != only:
            continue
        if k not in by:
            cases.append(k)
            by[k] = {}
        by[k][r["tool"]] = r
    tools = []
    for k in cases:
        for t in by[k]:
            if t != "multifd" and t not in tools:
                tools.append(t)
    def version(name):
        v = name.split()[-1]
        return tuple(int(x) for x in v.split(".") if x.isdigit())
    tools.sort(key=version)  # oldest first; the ratio is against the newest
    newest = tools[-1] if tools else ""
    print("| content | method | channels | destination | multifd | "
          + " | ".join(tools) + f" | multifd / {newest} |")
    print("| --- | --- | ---: | --- | ---: | " + " | ".join("---:" for _ in tools)
          + " | ---: |")
    for k in cases:
        m = by[k].get("multifd")
        cells = [f"{m['gbs']:.2f}" if m and m["gbs"] else "failed"]
        ratio = "-"
        for t in tools:
            q = by[k].get(t)
            cells.append(f"{q['gbs']:.2f}" if q and q["gbs"] else "-")
            if q and q.get("ratio") and t == newest:
                ratio = f"{q['ratio']:.2f}"
        print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | " + " | ".join(cells)
              + f" | {ratio} |")


if __name__ == "__main__":
    main()
