#!/usr/bin/env python3
"""Reads an Autobahn TestSuite report (index.json) and decides pass or fail.

wstest exits 0 whatever the outcome, so this is the verdict:

* every case must be OK, NON-STRICT, INFORMATIONAL or UNIMPLEMENTED (its
  behaviour and its closing behaviour), except
* the cases whose message the server must refuse under its limits: larger
  than MAX_MESSAGE_BYTES, or fragmented into more than FRAGMENTS_MAX (1024)
  frames. Those must end with the server closing with 1009 (Autobahn then
  reports them FAILED: it expected an echo); an echo instead fails the run.

usage: autobahn_check.py INDEX_JSON --max-message-bytes N [--fragments-max N]
"""

import argparse
import json
import sys
from collections import Counter

KIB = 1 << 10
MIB = 1 << 20

# (message bytes, frames) of every case of sections 9.1-9.6, from the case
# definitions of autobahntestsuite (case/case9_*.py).
SIZES = [64 * KIB, 256 * KIB, 1 * MIB, 4 * MIB, 8 * MIB, 16 * MIB]
FRAGMENT_SIZES = [64, 256, 1 * KIB, 4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, 1 * MIB, 4 * MIB]
MESSAGES = {}
for section in (1, 2):  # 9.1 text, 9.2 binary: one frame
    for i, size in enumerate(SIZES, 1):
        MESSAGES[f"9.{section}.{i}"] = (size, 1)
for section in (3, 4):  # 9.3 text, 9.4 binary: 4 MiB in fragments
    for i, frag in enumerate(FRAGMENT_SIZES, 1):
        # autobahn's sendMessage sends len/frag full fragments and, as the
        # length is a multiple of the fragment size, then an empty final one
        # (autobahn/websocket/protocol.py, sendMessageHybi).
        frames = 4 * MIB // frag + 1 if 4 * MIB > frag else 1
        MESSAGES[f"9.{section}.{i}"] = (4 * MIB, frames)
for section in (5, 6):  # 9.5 text, 9.6 binary: one 1 MiB frame, sent in chops
    for i in range(1, 7):
        MESSAGES[f"9.{section}.{i}"] = (1 * MIB, 1)

ACCEPTABLE = {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}


def case_key(case_id):
    return tuple(int(part) for part in case_id.split("."))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("index")
    parser.add_argument("--max-message-bytes", type=int, required=True)
    parser.add_argument("--fragments-max", type=int, default=None)
    args = parser.parse_args()
    if args.fragments_max is None:
        args.fragments_max = max(16, args.max_message_bytes // 64)

    with open(args.index) as f:
        index = json.load(f)
    if len(index) != 1:
        sys.exit(f"expected one agent in {args.index}, found {list(index)}")
    (agent, cases), = index.items()

    def must_refuse(case_id):
        size, frames = MESSAGES.get(case_id, (0, 1))
        return size > args.max_message_bytes or frames > args.fragments_max

    counts = Counter()
    failures = []
    refused = []
    for case_id in sorted(cases, key=case_key):
        result = cases[case_id]
        behavior = result["behavior"]
        close = result["behaviorClose"]
        code = result.get("remoteCloseCode")
        counts[behavior] += 1
        if must_refuse(case_id):
            size, frames = MESSAGES[case_id]
            line = (f"{case_id}: {size} bytes in {frames} frame(s) -> "
                    f"{behavior} / close {close}, server close code {code}")
            refused.append(line)
            if code != 1009 or behavior == "OK":
                failures.append(f"{line}: expected the server to close with 1009")
        elif behavior not in ACCEPTABLE or close not in ACCEPTABLE:
            failures.append(f"{case_id}: {behavior} / close {close}, "
                            f"server close code {code}")

    order = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
    summary = ", ".join(f"{name} {counts[name]}" for name in order)
    others = {k: v for k, v in counts.items() if k not in order}
    if others:
        summary += ", " + ", ".join(f"{k} {v}" for k, v in sorted(others.items()))
    print(f"{agent}: {len(cases)} cases: {summary}")
    non_strict = [c for c in sorted(cases, key=case_key)
                  if cases[c]["behavior"] in ("NON-STRICT", "INFORMATIONAL")]
    if non_strict:
        print("  NON-STRICT / INFORMATIONAL: " + " ".join(
            f"{c}={cases[c]['behavior']}" for c in non_strict))
    if refused:
        print(f"  refused by the limits (MAX_MESSAGE_BYTES={args.max_message_bytes}, "
              f"FRAGMENTS_MAX={args.fragments_max}), expected close 1009:")
        for line in refused:
            print("    " + line)
    if failures:
        print(f"  {len(failures)} unexpected outcome(s):")
        for line in failures:
            print("    " + line)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
