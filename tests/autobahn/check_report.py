#!/usr/bin/env python3
"""Judge an Autobahn fuzzingclient report (index.json).

wstest always exits 0, so the verdict has to come from the report. Exits 1
listing the offending cases unless every case's behavior and behaviorClose is
OK, NON-STRICT or INFORMATIONAL (and, with --expect, exactly that many cases
ran: wstest silently stops early if the server goes away). Prints one summary
line and, with --summary, writes a markdown table per case group.
"""
import argparse
import collections
import json
import sys

PASS = ("OK", "NON-STRICT", "INFORMATIONAL")
GROUPS = {1: "Framing", 2: "Pings/Pongs", 3: "Reserved bits", 4: "Opcodes",
          5: "Fragmentation", 6: "UTF-8 handling", 7: "Close handling",
          9: "Limits/performance", 10: "Misc (auto-fragmentation)"}


def case_key(case_id):
    return tuple(int(p) for p in case_id.split("."))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("index", help="path to index.json")
    ap.add_argument("--expect", type=int, help="exact number of cases expected")
    ap.add_argument("--summary", help="write a markdown summary table here")
    args = ap.parse_args()

    try:
        with open(args.index) as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"autobahn: cannot read report {args.index}: {e}")

    cases = [(agent, cid, r) for agent, rs in index.items() for cid, r in rs.items()]
    cases.sort(key=lambda c: (c[0], case_key(c[1])))
    totals = collections.Counter(r["behavior"] for _, _, r in cases)
    by_group = collections.defaultdict(collections.Counter)
    bad = []
    for agent, cid, r in cases:
        by_group[case_key(cid)[0]][r["behavior"]] += 1
        if r["behavior"] not in PASS or r["behaviorClose"] not in PASS:
            bad.append(f"  {agent} {cid}: behavior={r['behavior']} "
                       f"behaviorClose={r['behaviorClose']} "
                       f"closeCode={r.get('remoteCloseCode')} ({r.get('reportfile')})")

    counts = " ".join(f"{k}={v}" for k, v in sorted(totals.items()))
    print(f"autobahn: {len(cases)} cases: {counts or 'none'}")

    if args.summary:
        cols = list(PASS) + sorted(set(totals) - set(PASS))
        agents = ", ".join(sorted(index)) or "-"
        lines = [f"Autobahn TestSuite fuzzingclient, agent `{agents}`: "
                 f"{len(cases)} cases, {len(bad)} failing.", "",
                 "| Group | Area | Cases | " + " | ".join(cols) + " |",
                 "|---|---|--:|" + "--:|" * len(cols)]
        for g in sorted(by_group):
            c = by_group[g]
            lines.append(f"| {g} | {GROUPS.get(g, '?')} | {sum(c.values())} | "
                         + " | ".join(str(c[k]) for k in cols) + " |")
        lines.append(f"| **all** | | **{len(cases)}** | "
                     + " | ".join(f"**{totals[k]}**" for k in cols) + " |")
        if bad:
            lines += ["", "Failing cases:", ""] + [f"- `{b.strip()}`" for b in bad]
        with open(args.summary, "w") as f:
            f.write("\n".join(lines) + "\n")

    ok = True
    if not cases:
        print("autobahn: FAIL: report has no cases (server unreachable?)")
        ok = False
    if args.expect is not None and len(cases) != args.expect:
        print(f"autobahn: FAIL: expected {args.expect} cases, report has {len(cases)}")
        ok = False
    if bad:
        print(f"autobahn: FAIL: {len(bad)} case(s) not OK/NON-STRICT/INFORMATIONAL:")
        print("\n".join(bad))
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
