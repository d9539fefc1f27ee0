"""Message mix for load tests: lab orders, HTML with a PDF, and STL scans, with planted
patient data whose values the load driver knows.

Trust boundary: everything here is synthetic. The "patients" are invented (a fixed pool
built from a seed, with NIRs whose key is valid so that detectors treat them as real),
and every message carries them in places a pseudonymising route must rewrite. The
verifying sink (sink.py) uses the same pool to check that none of the planted values
survives.

Invariants:
- Each message carries a unique `X-Load-Id: RUN.SEQ.KIND.PATIENT` header. It names the
  patient by its index in the pool, never by value, so the id itself leaks nothing.
- `patient_pool(seed)` is deterministic: a sink in another process rebuilds the same
  planted values from the seed alone.
- Messages are CRLF, lines at most 998 octets (RFC 5321 4.5.3.1.6), 7-bit headers.

Kinds (sizes are the issue's mix):
- `lab`: ~2 KB text/plain lab order (name, NIR, phone, e-mail, birth date in the body);
- `html`: ~30 KB multipart: an HTML order with the patient's details and a small PDF with
  clinical text only (a PDF with identifiers is held by design, which is not throughput);
- `stl`: ~5 MB binary STL scan whose 80-byte header carries the patient name.

Run as a script to write sample files (e.g. the file `smtp-source -F` sends) and the
roster of planted patients:
    python load-tests/messages.py --out DIR [--kind lab] [--roster-csv FILE]
"""

from __future__ import annotations

import argparse
import base64
import functools
import random
import struct
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

KINDS = ("lab", "html", "stl")
# Patients in the pool: enough to vary the content, small enough for a sample roster.
POOL_SIZE = 40
DEFAULT_SEED = 7
# Target payload sizes in bytes, from the message mix.
LAB_TARGET_SIZE = 2 * 1024
HTML_TARGET_SIZE = 30 * 1024
STL_TARGET_SIZE = 5 * 1024 * 1024
# Binary STL: 80-byte header, uint32 triangle count, 50 bytes per facet (paulbourke.net).
STL_HEADER_SIZE = 80
STL_FACET_SIZE = 50
# base64 lines of 76 characters (RFC 2045 6.8).
B64_LINE = 76

SENDER = "secretariat@cabinet-dentaire.test"
LAB_RECIPIENT = "commandes@labo.test"

FIRST_NAMES = (
    "Hélène", "Mathis", "Léa", "Noémie", "Timothée", "Gaëlle", "Anaïs", "Jérôme",
    "Céline", "François", "Maëlys", "Benoît", "Chloé", "Étienne", "Zoé", "Loïc",
    "Inès", "Raphaël", "Solène", "Aurélien",
)  # fmt: skip
LAST_NAMES = (
    "Lefèvre", "Moreau", "Garnier", "Rousseau", "Fontaine", "Chevalier", "Perrin",
    "Gauthier", "Mercier", "Bonnaud", "Lemaître", "Brunet", "Duchêne", "Marchand",
    "Carpentier", "Bérenger", "Vasseur", "Delacroix", "Poirier", "Tessier",
)  # fmt: skip
EMAIL_DOMAINS = ("orange.fr", "laposte.net", "free.fr", "gmail.com")


@dataclass(frozen=True)
class Patient:
    """One invented patient. `repr` masks the values: only the pool index shows."""

    index: int
    first_name: str
    last_name: str
    nir: str  # 15 characters: 13 digits and the 2-digit key
    phone: str  # French national format, "06 12 34 56 78"
    email: str
    birth_date: str  # dd/mm/yyyy

    def __repr__(self) -> str:
        return f"Patient(#{self.index})"

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    @property
    def nir_spaced(self) -> str:
        n = self.nir
        return f"{n[0]} {n[1:3]} {n[3:5]} {n[5:7]} {n[7:10]} {n[10:13]} {n[13:15]}"

    def planted(self) -> dict[str, tuple[str, ...]]:
        """Planted values by kind, as the sink searches for them (see `find_leaks`)."""
        return {
            "name": (self.first_name + " " + self.last_name, self.last_name),
            "nir": (self.nir,),
            "phone": (self.phone.replace(" ", ""),),
            "email": (self.email,),
            "birth_date": (self.birth_date,),
        }


def nir_key(first13: str) -> str:
    """NIR key: 97 - (N mod 97), two digits (CNAM NirKey; identifiers.md section 1)."""
    return f"{97 - int(first13) % 97:02d}"


def ascii_fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


@functools.lru_cache(maxsize=8)
def patient_pool(seed: int = DEFAULT_SEED, size: int = POOL_SIZE) -> tuple[Patient, ...]:
    rng = random.Random(seed)
    patients = []
    for index in range(size):
        first = FIRST_NAMES[(index + rng.randrange(len(FIRST_NAMES))) % len(FIRST_NAMES)]
        last = LAST_NAMES[(index * 7 + rng.randrange(len(LAST_NAMES))) % len(LAST_NAMES)]
        sex = rng.choice("12")
        year = rng.randrange(1940, 2015)
        month = rng.randrange(1, 13)
        day = rng.randrange(1, 29)
        dept = rng.choice(("75", "69", "13", "33", "59", "44", "2A", "31"))
        first13 = f"{sex}{year % 100:02d}{month:02d}{dept}{rng.randrange(1, 999):03d}{rng.randrange(1, 999):03d}"
        key_base = first13.replace("2A", "19").replace("2B", "18")
        nir = first13 + nir_key(key_base)
        phone = "0" + rng.choice("67") + "".join(str(rng.randrange(10)) for _ in range(8))
        phone_spaced = " ".join(phone[i : i + 2] for i in range(0, 10, 2))
        user = ascii_fold(f"{first}.{last}").lower().replace(" ", "")
        email = f"{user}{rng.randrange(10, 99)}@{rng.choice(EMAIL_DOMAINS)}"
        patients.append(
            Patient(
                index=index,
                first_name=first,
                last_name=last,
                nir=nir,
                phone=phone_spaced,
                email=email,
                birth_date=f"{day:02d}/{month:02d}/{year}",
            )
        )
    return tuple(patients)


# --- leak detection (used by the sink) ---------------------------------------------------


def _variants(value: str) -> set[bytes]:
    folded = ascii_fold(value)
    out = set()
    for v in {value, folded}:
        for form in (v, v.lower(), v.upper()):
            for enc in ("utf-8", "latin-1"):
                try:
                    out.add(form.encode(enc).lower())
                except UnicodeEncodeError:
                    continue
    return out


@functools.lru_cache(maxsize=4096)
def _needles(seed: int, index: int, kinds: tuple[str, ...]) -> tuple[tuple[str, bytes], ...]:
    patient = patient_pool(seed)[index]
    needles: list[tuple[str, bytes]] = []
    for kind, values in patient.planted().items():
        if kind in kinds:
            needles.extend((kind, v) for value in values for v in _variants(value))
    return tuple(needles)


CHECKED_KINDS = ("name", "nir", "phone", "email")


def find_leaks(
    decoded: bytes,
    patient_index: int,
    seed: int = DEFAULT_SEED,
    kinds: tuple[str, ...] = CHECKED_KINDS,
) -> tuple[str, ...]:
    """Kinds of planted values still present in `decoded` (the message's decoded parts).

    Matching is case-insensitive, with and without accents; NIR and phone are also
    looked for with separators (space, dot, dash) removed. Returns kinds, never values.
    """
    hay = decoded.lower()
    compact = hay.translate(None, b" .-\t\r\n")
    found = []
    for kind, needle in _needles(seed, patient_index, kinds):
        if kind in found:
            continue
        where = compact if kind in ("nir", "phone") else hay
        if needle in where:
            found.append(kind)
    return tuple(found)


# --- message building ----------------------------------------------------------------------


def load_id(run: str, seq: int, kind: str, patient_index: int) -> str:
    return f"{run}.{seq}.{kind}.{patient_index}"


# Kind in the X-Load-Id of a message read from a file (driver --file): no planted values
# are known for it, so it is counted but not checked for leaks.
FILE_KIND = "file"


def parse_load_id(value: str) -> tuple[str, int, str, int] | None:
    parts = value.strip().split(".")
    if len(parts) != 4 or parts[2] not in (*KINDS, FILE_KIND):
        return None
    try:
        return parts[0], int(parts[1]), parts[2], int(parts[3])
    except ValueError:
        return None


def _headers(lid: str, subject: str, extra: list[str]) -> list[str]:
    return [
        f"From: Cabinet dentaire du Parc <{SENDER}>",
        f"To: Laboratoire de prothese <{LAB_RECIPIENT}>",
        f"Subject: {subject}",
        f"Message-ID: <{lid}@load.portique.test>",
        "Date: Sun, 29 Nov 2026 08:00:00 +0100",
        f"X-Load-Id: {lid}",
        "MIME-Version: 1.0",
        *extra,
    ]


def lab_order_text(p: Patient, order_no: int) -> str:
    """A French lab order, padded to about LAB_TARGET_SIZE with clinical look-alikes."""
    lines = [
        "Bonjour,",
        "",
        f"Veuillez trouver ci-dessous le bon de commande n° CMD-{order_no:06d}.",
        "",
        f"Patient : {p.full_name}",
        f"Né(e) le : {p.birth_date}",
        f"N° de sécurité sociale : {p.nir_spaced}",
        f"Téléphone du patient : {p.phone}",
        f"Courriel du patient : {p.email}",
        "",
        "Travail demandé : couronne céramo-métallique sur 26, teinte A3 (Vita classical).",
        "Empreinte optique jointe au dossier, occlusion en intercuspidation maximale.",
        "Dents 25 et 27 : préparations pour inlay-core, limite cervicale congé.",
        "Date d'essayage souhaitée : dans 10 jours ouvrés.",
        "",
        f"Merci de rappeler Mme/M. {p.last_name} si le rendez-vous doit être déplacé.",
        "",
    ]
    filler = (
        "Remarque clinique : contrôle de l'occlusion, points de contact serrés en "
        "mésial, embrasures à respecter, état de surface glacé, pas de sur-contour."
    )
    text = "\n".join(lines)
    # Headers and quoted-printable add ~600 bytes; stop the body short of that.
    while len(text.encode("utf-8")) < LAB_TARGET_SIZE - 700:
        text += filler + "\n"
    return (
        text + "\nCordialement,\nDr Arnaud Vidal, chirurgien-dentiste\nCabinet dentaire du Parc\n"
    )


def _qp_lines(text: str) -> list[str]:
    import quopri

    encoded = quopri.encodestring(text.encode("utf-8")).decode("ascii")
    return encoded.replace("\r\n", "\n").split("\n")


def build_lab(run: str, seq: int, p: Patient) -> bytes:
    lid = load_id(run, seq, "lab", p.index)
    headers = _headers(
        lid,
        f"Bon de commande CMD-{seq:06d}",
        ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: quoted-printable"],
    )
    return _join(headers, _qp_lines(lab_order_text(p, seq)))


def minimal_pdf(text_lines: list[str]) -> bytes:
    """A one-page PDF with an uncompressed text stream (Helvetica, WinAnsi-ish latin-1)."""

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    ops = ["BT", "/F1 11 Tf", "50 780 Td", "14 TL"]
    ops += [f"({esc(line)}) '" for line in text_lines]
    ops.append("ET")
    stream = "\n".join(ops).encode("latin-1", "replace")
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _b64_lines(data: bytes) -> list[str]:
    enc = base64.b64encode(data).decode("ascii")
    return [enc[i : i + B64_LINE] for i in range(0, len(enc), B64_LINE)]


@functools.lru_cache(maxsize=64)
def _html_parts(p: Patient) -> tuple[tuple[str, ...], tuple[str, ...]]:
    rows = []
    for tooth in (11, 12, 13, 14, 15, 16, 17, 21, 22, 23, 24, 25, 26, 27):
        rows.append(
            f"<tr><td>{tooth}</td><td>zircone monolithique</td><td>A2</td>"
            f"<td>limite cervicale en cong&eacute;, contr&ocirc;le occlusal</td></tr>"
        )
    body = [
        "<!DOCTYPE html><html lang='fr'><head><meta charset='utf-8'><title>Commande</title>",
        "<style>td{border:1px solid #999;padding:2px 6px}table{border-collapse:collapse}</style>",
        "</head><body>",
        "<h1>Fiche de liaison cabinet / laboratoire</h1>",
        f"<p>Patient : <b>{p.full_name}</b>, n&eacute;(e) le {p.birth_date}</p>",
        f"<p>NIR : {p.nir_spaced} &middot; T&eacute;l. {p.phone} &middot; "
        f"<a href='mailto:{p.email}'>{p.email}</a></p>",
        "<table><tr><th>Dent</th><th>Mat&eacute;riau</th><th>Teinte</th><th>Remarque</th></tr>",
    ]
    html = "\n".join(body)
    while len(html) < HTML_TARGET_SIZE - 8 * 1024:
        html += "\n" + "\n".join(rows)
    html += f"\n</table><p>Rappeler {p.last_name} pour l'essayage.</p></body></html>\n"
    # The PDF carries clinical text only: Portique holds a PDF with patient identifiers
    # (it cannot rewrite one safely), and the throughput mix measures relaying, not holds.
    pdf = minimal_pdf(
        [f"Ordonnance de prothese, commande {p.index:04d}", "Couronne zircone sur 26, teinte A3."]
        + ["Controle occlusal et points de contact a verifier."] * 60
    )
    return tuple(_qp_lines(html)), tuple(_b64_lines(pdf))


def build_html(run: str, seq: int, p: Patient) -> bytes:
    lid = load_id(run, seq, "html", p.index)
    boundary = f"=_portique_load_{seq}"
    html_lines, pdf_lines = _html_parts(p)
    headers = _headers(
        lid, f"Fiche de liaison {seq}", [f'Content-Type: multipart/mixed; boundary="{boundary}"']
    )
    body = [
        "This is a multi-part message in MIME format.",
        f"--{boundary}",
        "Content-Type: text/html; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        "",
        *html_lines,
        f"--{boundary}",
        'Content-Type: application/pdf; name="ordonnance.pdf"',
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="ordonnance.pdf"',
        "",
        *pdf_lines,
        f"--{boundary}--",
        "",
    ]
    return _join(headers, body)


def binary_stl(p: Patient, target_size: int = STL_TARGET_SIZE) -> bytes:
    """A binary STL of about target_size bytes; the header names the patient, as exocad
    and scanner exports often do (identifiers.md section 3)."""
    header = f"Scan {ascii_fold(p.full_name)} UpperJaw".encode("ascii")[:STL_HEADER_SIZE]
    header = header.ljust(STL_HEADER_SIZE, b" ")
    count = max(1, (target_size - STL_HEADER_SIZE - 4) // STL_FACET_SIZE)
    rng = random.Random(p.index)
    # One random facet block repeated: geometry content does not matter for relaying, and
    # building 100k facets one by one would dominate the driver's start-up time.
    block = b"".join(
        struct.pack("<12fH", *(rng.uniform(-30.0, 30.0) for _ in range(12)), 0) for _ in range(256)
    )
    facets = (block * (count // 256 + 1))[: count * STL_FACET_SIZE]
    return header + struct.pack("<I", count) + facets


@functools.lru_cache(maxsize=4)
def _stl_lines(p: Patient) -> tuple[str, ...]:
    return tuple(_b64_lines(binary_stl(p)))


def build_stl(run: str, seq: int, p: Patient) -> bytes:
    lid = load_id(run, seq, "stl", p.index)
    boundary = f"=_portique_stl_{seq}"
    headers = _headers(
        lid, f"Empreinte optique {seq}", [f'Content-Type: multipart/mixed; boundary="{boundary}"']
    )
    body = [
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"Empreinte maxillaire pour la commande {seq}, patient {ascii_fold(p.full_name)}.",
        f"--{boundary}",
        'Content-Type: model/stl; name="UpperJaw.stl"',
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="UpperJaw.stl"',
        "",
        *_stl_lines(p),
        f"--{boundary}--",
        "",
    ]
    return _join(headers, body)


BUILDERS = {"lab": build_lab, "html": build_html, "stl": build_stl}


def _join(headers: list[str], body: list[str]) -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n" + "\r\n".join(body) + "\r\n").encode("utf-8")


def parse_mix(spec: str) -> list[tuple[str, int]]:
    """`lab` or `lab:90,html:9,stl:1` -> [(kind, weight)]; weights are integers."""
    mix = []
    for item in spec.split(","):
        kind, _, weight = item.strip().partition(":")
        if kind not in KINDS:
            raise ValueError(f"unknown message kind {kind!r}; expected one of {', '.join(KINDS)}")
        w = int(weight) if weight else 1
        if w < 0:
            raise ValueError(f"negative weight for {kind}")
        mix.append((kind, w))
    if not any(w for _, w in mix):
        raise ValueError("message mix has no positive weight")
    return mix


def generate(
    run: str, count: int, mix: str = "lab", seed: int = DEFAULT_SEED
) -> Iterator[tuple[str, int, bytes]]:
    """Yield (load_id, patient_index, message bytes) for `count` messages of the mix.

    Kinds are interleaved deterministically by weight (smooth weighted round robin), so a
    small run still covers every kind with a positive weight.
    """
    weights = parse_mix(mix)
    pool = patient_pool(seed)
    current = {k: 0 for k, _ in weights}
    total = sum(w for _, w in weights)
    for seq in range(count):
        for k, w in weights:
            current[k] += w
        kind = max(current, key=lambda k: current[k])
        current[kind] -= total
        p = pool[seq % len(pool)]
        yield load_id(run, seq, kind, p.index), p.index, BUILDERS[kind](run, seq, p)


def write_roster_csv(path: Path, seed: int = DEFAULT_SEED) -> None:
    """The planted patients as a CSV roster (last_name,first_name,birth_date,nir,phone,email)."""
    lines = ["last_name,first_name,birth_date,nir,phone,email"]
    for p in patient_pool(seed):
        lines.append(f"{p.last_name},{p.first_name},{p.birth_date},{p.nir},{p.phone},{p.email}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="directory for .eml files")
    ap.add_argument("--mix", default="lab", help="kinds and weights, e.g. lab:90,html:9,stl:1")
    ap.add_argument("--count", type=int, default=1, help="number of messages to write")
    ap.add_argument("--run", default="sample", help="run name in X-Load-Id")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--roster-csv", type=Path, help="also write the planted patients here")
    ap.add_argument(
        "--lf", action="store_true", help="write LF line ends (for smtp-source -F, which adds CRLF)"
    )
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for lid, _idx, data in generate(args.run, args.count, args.mix, args.seed):
        if args.lf:
            data = data.replace(b"\r\n", b"\n")
        (args.out / f"{lid}.eml").write_bytes(data)
    if args.roster_csv:
        write_roster_csv(args.roster_csv, args.seed)
    print(f"wrote {args.count} message(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
