"""Everything the scan engine outputs, dumped to one JSON file, to show that a speed change
changed nothing else.

For both matchers ("hyperscan", "re"), two rosters (none; `--roster` synthetic patients
plus the messages' own) and three policies (pseudonymise, redact, generalise), over N
bench_scan dense orders and N corpus messages (tests/scan/corpus.py), it records each
message's findings (kind, field, span, digest, patient), `scan_spans`, and per policy the
rewritten texts and vault entries. Two checkouts that give the same file give the same
outputs on all of it. The messages and patients are synthetic (generated from seeds).

Usage:
    .venv/bin/python load-tests/scan_outputs.py [--code DIR] [-n N] [--roster R] --out FILE
        [--compare OTHER]
`--code DIR` dumps another checkout (a `git worktree` with its compiled modules built), with
this checkout's interpreter; `--compare` then says whether OTHER (an earlier dump) holds the
same, and where the first difference is (configuration and message index, no text).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SEED = 9  # corpus messages (bench_scan's dense orders have their own)


def dump(code: Path, count: int, roster_size: int) -> dict[str, list[dict[str, Any]]]:
    sys.path[:0] = [str(code), str(code / "load-tests"), str(code / "tests" / "scan")]
    import bench_scan
    import corpus

    from gateway.scan import TransformPolicy, TypeAction, build_engine
    from gateway.scan import engine as engine_module

    print(f"scan core: {engine_module.__file__}", file=sys.stderr)
    dense = bench_scan.dense_messages(count)
    messages, corpus_patients = corpus.make_corpus(count, seed=SEED)
    rosters = {
        "no roster": [],
        "roster": bench_scan.synthetic_roster(roster_size) + list(dense.patients) + corpus_patients,
    }
    policies = {
        "pseudonymise": TransformPolicy(audience="labo.example"),
        "redact": TransformPolicy(audience="labo.example", default=TypeAction.REDACT),
        "generalise": TransformPolicy(audience="other.example", default=TypeAction.GENERALISE),
    }
    inputs = list(dense.messages) + [message.fields for message in messages]
    out: dict[str, list[dict[str, Any]]] = {}
    for matcher in ("hyperscan", "re"):
        for roster_name, roster in rosters.items():
            engine = build_engine(
                patients=roster,
                practice=corpus.PRACTICE,
                digest_key=bench_scan.DIGEST_KEY,
                pseudonym_key=bench_scan.PSEUDONYM_KEY,
                engine=matcher,
            )
            rows = []
            for fields in inputs:
                findings = engine.scan_fields(fields)
                row: dict[str, Any] = {
                    "findings": [
                        [f.kind.value, f.field, f.start, f.end, f.digest, f.patient]
                        for f in findings
                    ],
                    "spans": [[k.value, i, s, e] for k, i, s, e in engine.scan_spans(fields)],
                }
                for policy_name, policy in policies.items():
                    result = engine.rewrite_fields(fields, findings, policy)
                    vault = sorted(
                        [v.token, v.audience, v.patient, v.identity] for v in result.vault_entries
                    )
                    row[policy_name] = {"texts": result.texts, "vault": vault}
                rows.append(row)
            out[f"{matcher}, {roster_name}"] = rows
    return out


def first_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    if old.keys() != new.keys():
        return "the configurations differ"
    for config, rows in new.items():
        if len(rows) != len(old[config]):
            return f"{config}: {len(old[config])} messages against {len(rows)}"
        for index, (before, after) in enumerate(zip(old[config], rows, strict=True)):
            for part in after:
                if before.get(part) != after[part]:
                    return f"{config}: message {index}, {part}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=HERE.parent, help="checkout dumped")
    parser.add_argument("-n", type=int, default=600, help="dense orders, and corpus messages")
    parser.add_argument("--roster", type=int, default=10_000, help="synthetic patients")
    parser.add_argument("--out", type=Path, required=True, help="JSON file written")
    parser.add_argument("--compare", type=Path, help="an earlier dump to compare with")
    args = parser.parse_args(argv)
    outputs = dump(args.code.resolve(), args.n, args.roster)
    text = json.dumps(outputs, sort_keys=True)
    args.out.write_text(text)
    for config, rows in outputs.items():
        print(f"{config}: {len(rows)} messages, {sum(len(r['findings']) for r in rows)} findings")
    print(f"sha256 {hashlib.sha256(text.encode()).hexdigest()}")
    if args.compare is not None:
        difference = first_difference(json.loads(args.compare.read_text()), outputs)
        print("identical" if difference is None else f"different: {difference}")
        return 0 if difference is None else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
