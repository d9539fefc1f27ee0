"""Synthetic French dental mail with planted identifiers and look-alike traps.

Used by the corpus tests (leak rate, trap loss, engine agreement) and by
load-tests/bench_scan.py. Everything is generated from a seed: no real person.

A `Message` lists its fields (subject, body, attachment file name), the identifier
values planted in it (`planted`: kind -> value as written) and the traps (`traps`:
strings that must survive unchanged: tooth numbers, shades, order numbers,
practitioner RPPS, prices, appointment dates).
"""

from __future__ import annotations

import random
import re
import sys
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from stdnum import iban as stdnum_iban
from stdnum.fr import nir as stdnum_nir

from gateway.config import PracticeConfig, Practitioner
from gateway.scan import FieldKind, RosterPatient, TextField

SURNAMES = """Dupont Durand Lefebvre Moreau Fournier Girard Bonnet Lambert Fontaine Rousseau
Mercier Guerin Boyer Garnier Chevalier Francois Legrand Gauthier Perrin Robin Clement
Morin Nicolas Henry Roussel Mathieu Gautier Masson Marchand Duval Denis Dumont Marie
Lemaire Noel Meyer Dufour Meunier Brun Blanchard Giraud Joly Riviere Lucas Brunet Gaillard
Barbier Arnaud Martinez Gerard Roche Renard Schmitt Roy Leroux Colin Vidal Caron Picard
Roger Fabre Aubert Lemoine Renaud Dumas Lacroix Olivier Philippe Bourgeois Pierre Benoit
Rey Leclerc Payet Rolland Leclercq Guillaume Lecomte Lopez Jean Dupuy Guillot Hubert Berger
Carpentier Sanchez Dupuis Moulin Louis Deschamps Huet Vasseur Perez Boucher Fleury Royer
Klein Jacquet Adam Paris Poirier Marty Aubry Guyot Carre Charles Renault Charpentier
Menard Maillard Baron Bertin Bailly Herve Schneider Fernandez Le-Gall Collet Leger Bouvier
Julien Prevost Millet Perrot Daniel Le-Roux Cousin Germain Breton Besson Langlois Remy
Le-Goff Pelletier Leveque Perrier Leblanc Barre Lebrun Marchal Weber Mallet Hamon Boulanger
Jacob Monnier Michaud Rodriguez Guichard Gillet Etienne Grondin Poulain Tessier Chevallier
Collin Chauvin Da-Silva Bouchet Gay Lemaitre Benard Marechal Humbert Reynaud Antoine Hoarau
Perret Barthelemy Cordier Pichon Lejeune Gilbert Lamy Delaunay Pasquier Carlier Laporte
Lefèvre Béranger Hébert Ménard Bréchet Lévêque Gérard Théron Jégou Féraud Cléret
Martin-Dubois De-La-Fontaine N'Diaye Ben-Ahmed Nguyen Tran Haddad Kowalski Okafor""".split()

FIRST_NAMES = """Marie Jean Pierre Michel Nathalie Isabelle Sylvie Catherine Françoise Philippe
Nicolas Christophe Stéphane Sandrine Valérie Céline Julie Aurélie Émilie Sébastien Frédéric
Laurent Olivier Thierry Patrick Éric Pascal David Camille Léa Manon Chloé Inès Jade Louise
Zoé Lucas Théo Nathan Enzo Louis Raphaël Arthur Gabriel Jules Adam Noah Paul Alice
Lina Rose Anna Mila Ambre Agathe Margaux Clémence Mathilde Pauline Hélène Gisèle Josiane
Jean-Pierre Jean-Luc Marie-Claire Anne-Sophie Pierre-Yves Marie-Hélène Jean-François
Ophélie Anaïs Maëlle Noémie Loïc Gaëtan Joël Benoît Jérôme Hervé Régis Aymeric Ghislaine
Yasmine Karim Mehdi Fatou Aminata Chidi Linh Tomasz""".split()

STREET_TYPES = [
    "rue",
    "avenue",
    "boulevard",
    "impasse",
    "allée",
    "chemin",
    "place",
    "route",
    "quai",
]
STREET_NAMES = """des Lilas|Victor Hugo|de la République|Jean Jaurès|des Acacias|du Moulin|Pasteur|
de la Gare|des Tilleuls|du Général de Gaulle|Émile Zola|des Roses|de Verdun|Saint-Exupéry|
des Peupliers|de Bretagne|Jules Ferry|des Écoles|du Stade|Gambetta""".replace("\n", "").split("|")
TOWNS = [
    ("75012", "Paris"),
    ("69003", "Lyon"),
    ("13008", "Marseille"),
    ("31000", "Toulouse"),
    ("33000", "Bordeaux"),
    ("44000", "Nantes"),
    ("67000", "Strasbourg"),
    ("59000", "Lille"),
    ("35000", "Rennes"),
    ("06000", "Nice"),
    ("34000", "Montpellier"),
    ("21000", "Dijon"),
    ("29200", "Brest"),
    ("74000", "Annecy"),
    ("97400", "Saint-Denis"),
    ("2A004", "Ajaccio"),
]
MAIL_DOMAINS = ["gmail.com", "orange.fr", "free.fr", "laposte.net", "hotmail.fr", "yahoo.fr"]
MONTHS = (
    "janvier février mars avril mai juin juillet août septembre octobre novembre décembre".split()
)

PRACTICE = PracticeConfig(
    name="Cabinet Dentaire des Tilleuls",
    addresses=("8 avenue des Tilleuls, 38000 Grenoble",),
    phones=("04 76 12 34 56", "04 76 12 34 57"),
    emails=("accueil@cabinet-tilleuls.fr", "dr.vernet@cabinet-tilleuls.fr"),
    practitioners=(
        Practitioner("Claire Vernet", "10005173140"),
        Practitioner("Hugo Sarrazin", "10003461033"),
    ),
)
PRACTITIONER_SIGNATURES = [
    "Dr Claire Vernet, RPPS 10005173140",
    "Docteur Hugo Sarrazin (RPPS 10003461033)",
    "Dr Claire VERNET, chirurgien-dentiste, RPPS 10005173140",
]
SIGNATURE_BLOCK = (
    "Cabinet Dentaire des Tilleuls\n8 avenue des Tilleuls, 38000 Grenoble\n"
    "Tél. 04 76 12 34 56 - accueil@cabinet-tilleuls.fr"
)


@dataclass
class SyntheticPatient:
    last_name: str
    first_name: str
    birth_date: date
    nir: str  # 15 digits, key-valid
    phone: str  # 10 digits, national
    email: str
    street: str
    postcode: str
    town: str
    iban: str  # compact

    def roster_entry(self, key: str) -> RosterPatient:
        return RosterPatient(
            key=key,
            last_name=self.last_name,
            first_name=self.first_name,
            birth_date=self.birth_date,
            nir=self.nir,
            phone=self.phone,
            email=self.email,
            address=f"{self.street}, {self.postcode} {self.town}",
        )


@dataclass
class Message:
    template: str
    fields: list[TextField]
    planted: list[tuple[str, str]] = field(default_factory=list)  # (kind, value as written)
    traps: list[str] = field(default_factory=list)


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFD", text).encode("ascii", "ignore").decode()


def make_nir(rng: random.Random, born: date) -> str:
    sex = rng.choice("12")
    dept = rng.choice(["75", "69", "13", "2A", "2B", "33", "99", "59", "971"[:2]])
    body = f"{sex}{born.year % 100:02d}{born.month:02d}{dept}{rng.randint(1, 990):03d}{rng.randint(1, 999):03d}"
    return body + stdnum_nir.calc_check_digits(body)


def make_iban(rng: random.Random, country: str = "FR") -> str:
    if country == "FR":
        bban = "".join(rng.choice("0123456789") for _ in range(23))
    else:  # DE: 18 digits
        bban = "".join(rng.choice("0123456789") for _ in range(18))
    return country + stdnum_iban.calc_check_digits(country + "00" + bban) + bban


def make_patient(rng: random.Random) -> SyntheticPatient:
    last = rng.choice(SURNAMES).replace("-", " " if rng.random() < 0.3 else "-")
    if last in ("De La Fontaine", "De-La-Fontaine"):
        last = "de la Fontaine"
    first = rng.choice(FIRST_NAMES)
    born = date(1935, 1, 1) + timedelta(days=rng.randint(0, 365 * 80))
    postcode, town = rng.choice(TOWNS)
    local = _ascii(f"{first}.{last}").lower().replace(" ", "").replace("'", "")
    if rng.random() < 0.3:
        local = _ascii(f"{first[0]}{last}").lower().replace(" ", "").replace("'", "") + str(
            rng.randint(1, 99)
        )
    return SyntheticPatient(
        last_name=last,
        first_name=first,
        birth_date=born,
        nir=make_nir(rng, born),
        phone="0" + rng.choice("67") + "".join(rng.choice("0123456789") for _ in range(8)),
        email=f"{local}@{rng.choice(MAIL_DOMAINS)}",
        street=f"{rng.randint(1, 180)} {rng.choice(STREET_TYPES)} {rng.choice(STREET_NAMES)}",
        postcode=postcode if postcode != "2A004" else "20000",
        town=town,
        iban=make_iban(rng, "FR" if rng.random() < 0.8 else "DE"),
    )


# -- written forms -------------------------------------------------------------------


def write_phone(rng: random.Random, phone: str) -> str:
    pairs = [phone[i : i + 2] for i in range(0, 10, 2)]
    form = rng.randrange(7)
    if form == 0:
        return " ".join(pairs)
    if form == 1:
        return ".".join(pairs)
    if form == 2:
        return "-".join(pairs)
    if form == 3:
        return phone
    if form == 4:
        return "+33 " + phone[1] + " " + " ".join(pairs[1:])
    if form == 5:
        return "+33 (0)" + phone[1] + " " + " ".join(pairs[1:])
    return "0033" + phone[1:]


def write_nir(rng: random.Random, nir: str) -> str:
    parts = [nir[0], nir[1:3], nir[3:5], nir[5:7], nir[7:10], nir[10:13], nir[13:15]]
    form = rng.randrange(3)
    if form == 0:
        return nir
    if form == 1:
        return " ".join(parts)
    return ".".join(parts)


def write_iban(rng: random.Random, iban: str) -> str:
    if rng.random() < 0.5:
        return iban
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


def write_date(rng: random.Random, day: date) -> str:
    form = rng.randrange(4)
    if form == 0:
        return f"{day:%d/%m/%Y}"
    if form == 1:
        return f"{day:%d.%m.%Y}"
    if form == 2:
        return f"{day.day} {MONTHS[day.month - 1]} {day.year}"
    return day.isoformat()


def write_full_name(rng: random.Random, p: SyntheticPatient) -> str:
    form = rng.randrange(6)
    if form == 0:
        return f"{p.last_name.upper()} {p.first_name}"
    if form == 1:
        return f"{p.first_name} {p.last_name.upper()}"
    if form == 2:
        return f"Mme {p.first_name} {p.last_name}"
    if form == 3:
        return f"M. {p.last_name.upper()} {p.first_name}"
    if form == 4:
        return f"Madame {p.last_name}"
    return f"Monsieur {p.first_name} {p.last_name}"


def _name_values(written: str, p: SyntheticPatient) -> list[tuple[str, str]]:
    values = [("name", p.last_name)]
    if _ascii(p.first_name).lower() in _ascii(written).lower():
        values.append(("name", p.first_name))
    return values


# -- traps ---------------------------------------------------------------------------


def make_traps(rng: random.Random, today: date) -> dict[str, str]:
    tooth = rng.choice(
        [11, 12, 13, 14, 15, 16, 17, 21, 22, 23, 24, 25, 26, 27, 31, 36, 37, 46, 47, 48]
    )
    appointment = today + timedelta(days=rng.randint(3, 60))
    return {
        "tooth": str(tooth),
        "span": f"{tooth}-{tooth + 1}",
        "shade": rng.choice(["A1", "A2", "A3", "A3.5", "B1", "B2", "C2", "D3", "A4", "B3"]),
        "order": f"CMD-{today.year}-{rng.randint(100, 9999):04d}",
        "invoice": f"FAC-{today.year}-{rng.randint(1, 99999):05d}",
        "price": f"{rng.randint(40, 1800)},{rng.choice(['00', '50', '90'])} €",
        "appointment": f"{appointment:%d/%m/%Y}",
        "rpps": rng.choice(["10005173140", "10003461033"]),
        "lot": "".join(rng.choice("0123456789") for _ in range(9)),
        "finess": "750712184",
    }


def _rpps_in(text: str) -> list[str]:
    return re.findall(r"\b1000\d{7}\b", text)


# -- templates -----------------------------------------------------------------------


def lab_order(rng: random.Random, p: SyntheticPatient, today: date) -> Message:
    t = make_traps(rng, today)
    written = write_full_name(rng, p)
    born = write_date(rng, p.birth_date)
    phone = write_phone(rng, p.phone)
    subject = f"Bon de commande {t['order']} - {p.last_name.upper()} {p.first_name}"
    body = (
        f"Bonjour,\n\nMerci de bien vouloir réaliser pour {written}, née le {born}, "
        f"une couronne zircone sur la {t['tooth']}, teinte {t['shade']}.\n"
        f"Bridge {t['span']} en céramo-métal, empreinte numérique jointe.\n"
        f"Patient joignable au {phone} si besoin.\n"
        f"Livraison souhaitée avant le RDV du {t['appointment']}. Lot {t['lot']}.\n"
        f"Devis accepté : {t['price']}.\n\n"
        f"{rng.choice(PRACTITIONER_SIGNATURES)}\n{SIGNATURE_BLOCK}\n"
    )
    if rng.random() < 0.5:
        filename = (
            f"{_ascii(p.last_name).upper().replace(' ', '-')}_{_ascii(p.first_name)}"
            f"_{today.isoformat()}.stl"
        )
    else:  # exocad-style export name
        filename = f"{today.isoformat()}_{_ascii(p.last_name)}-{_ascii(p.first_name)}-UpperJaw.stl"
    siret = "362 521 879 00034"
    body += (
        f"Date de pose prévue : {t['appointment']}. Dents 11, 21 et 22 à contrôler. "
        f"Labo SIRET {siret}, ADELI 751234567. Total TTC {t['price']}.\n"
    )
    planted = [
        *_name_values(written + subject, p),
        ("birth_date", born),
        ("phone", phone),
    ]
    if rng.random() < 0.25:
        # The surname alone, mid-sentence, with no civility: only the roster can tell.
        body += f"{p.last_name} préfère être rappelé(e) en fin de journée.\n"
        planted.append(("name", p.last_name))
    traps = [
        f"sur la {t['tooth']}",
        t["span"],
        t["shade"],
        t["order"],
        t["price"],
        t["appointment"],
        t["lot"],
        siret,
        "ADELI 751234567",
        "Dents 11, 21 et 22",
    ]
    traps.extend(_rpps_in(body))
    return Message(
        "lab_order",
        [
            TextField(subject, FieldKind.SUBJECT),
            TextField(body),
            TextField(filename, FieldKind.FILENAME),
        ],
        planted,
        traps,
    )


def referral_letter(rng: random.Random, p: SyntheticPatient, today: date) -> Message:
    t = make_traps(rng, today)
    written = write_full_name(rng, p)
    born = write_date(rng, p.birth_date)
    nir = write_nir(rng, p.nir)
    address = f"{p.street}, {p.postcode} {p.town}"
    email = p.email
    body = (
        f"Cher confrère,\n\nJe vous adresse {written}, date de naissance : {born}, "
        f"NIR {nir}, demeurant {address}, pour avis sur la {t['tooth']}.\n"
        f"Le patient présente une mobilité de la {t['span']} et une douleur à la percussion.\n"
        f"Vous pouvez le contacter par courriel ({email}) ou au {write_phone(rng, p.phone)}.\n"
        f"Prochain contrôle prévu le {t['appointment']}. Établissement FINESS {t['finess']}.\n\n"
        f"Bien confraternellement,\n{rng.choice(PRACTITIONER_SIGNATURES)}\n{SIGNATURE_BLOCK}\n"
    )
    planted = [
        *_name_values(written, p),
        ("birth_date", born),
        ("nir", nir),
        ("address", p.street),
        ("email", email),
    ]
    phone_written = body.split("ou au ")[1].split(".\n")[0]
    planted.append(("phone", phone_written))
    traps = [f"sur la {t['tooth']}", t["span"], t["appointment"], t["finess"], *_rpps_in(body)]
    subject = f"Adressage patient - {p.first_name} {p.last_name.upper()}"
    planted.extend(_name_values(subject, p))
    return Message(
        "referral", [TextField(subject, FieldKind.SUBJECT), TextField(body)], planted, traps
    )


def billing(rng: random.Random, p: SyntheticPatient, today: date) -> Message:
    t = make_traps(rng, today)
    iban = write_iban(rng, p.iban)
    nir = write_nir(rng, p.nir)
    body = (
        f"Facture {t['invoice']} du {today:%d/%m/%Y}\n"
        f"Patient : {p.last_name.upper()} {p.first_name}\n"
        f"N° sécurité sociale : {nir}\n"
        f"Acte : couronne céramo-céramique sur {t['tooth']} (HBLD090), teinte {t['shade']} : {t['price']}\n"
        f"Commande labo {t['order']}.\n"
        f"Remboursement sur le compte IBAN {iban}.\n"
        f"Adresse : {p.street}\n{p.postcode} {p.town}\n\n"
        f"{rng.choice(PRACTITIONER_SIGNATURES)}\n"
    )
    planted = [
        ("name", p.last_name),
        ("name", p.first_name),
        ("nir", nir),
        ("iban", iban),
        ("address", p.street),
    ]
    traps = [
        t["invoice"],
        f"sur {t['tooth']} (HBLD090)",
        t["shade"],
        t["price"],
        t["order"],
        *_rpps_in(body),
    ]
    subject = f"Facture {t['invoice']}"
    return Message(
        "billing", [TextField(subject, FieldKind.SUBJECT), TextField(body)], planted, traps
    )


def reminder(rng: random.Random, p: SyntheticPatient, today: date) -> Message:
    t = make_traps(rng, today)
    greeting = rng.choice(
        [
            f"Bonjour {p.first_name} {p.last_name},",
            f"Bonjour Madame {p.last_name},",
            f"Bonjour Monsieur {p.last_name.upper()},",
            f"Chère {p.first_name} {p.last_name},",
        ]
    )
    phone = write_phone(rng, p.phone)
    body = (
        f"{greeting}\n\nNous vous rappelons votre rendez-vous du {t['appointment']} à 14h30 "
        f"pour le contrôle de la {t['tooth']}.\n"
        f"Un SMS de confirmation sera envoyé au {phone}.\n"
        f"En cas d'empêchement, merci de prévenir le cabinet au 04 76 12 34 56.\n\n"
        f"{SIGNATURE_BLOCK}\n"
    )
    planted = [*_name_values(greeting, p), ("phone", phone)]
    display = f"{p.first_name} {p.last_name}"
    planted.extend(_name_values(display, p))
    traps = [t["appointment"], f"de la {t['tooth']}", "04 76 12 34 56"]
    return Message(
        "reminder",
        [
            TextField("Rappel de rendez-vous", FieldKind.SUBJECT),
            TextField(display, FieldKind.DISPLAY_NAME),
            TextField(body),
        ],
        planted,
        traps,
    )


def _age(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def write_age(rng: random.Random, years: int) -> tuple[str, str]:
    """(the age with its context, the age as planted: "67 ans")."""
    value = f"{years} an" if years == 1 else f"{years} ans"
    form = rng.choice(
        [
            "âgé(e) de {}",
            "âgée de {}",
            "({})",
            "patient(e) de {}",
            "patiente de {}",
            "Âge : {}",
        ]
    )
    return form.format(value), value


def write_residence(rng: random.Random, p: SyntheticPatient) -> tuple[str, str]:
    """(a street with no house number after a residence word, the street as planted)."""
    street = p.street.split(" ", 1)[1]  # "rue des Lilas": the number dropped
    form = rng.choice(
        [
            "demeurant {street}",
            "domicilié(e) {street} à {town}",
            "Adresse : {street}",
            "résidant {street}, {postcode} {town}",
        ]
    )
    return form.format(street=street, town=p.town, postcode=p.postcode), street


def clinical_note(rng: random.Random, p: SyntheticPatient, today: date) -> Message:
    """A consultation report: the patient's age and a street with no house number, among
    durations ("depuis 3 ans", "garantie 5 ans", "dans 10 jours") and "place" or "rue" in
    clinical text, none of which is an identifier."""
    t = make_traps(rng, today)
    written = write_full_name(rng, p)
    age, age_value = write_age(rng, _age(p.birth_date, today))
    residence, street = write_residence(rng, p)
    # Durations stay under 7 years: planted ages (9 and over) never read inside them.
    since = f"depuis {rng.randint(2, 6)} ans"
    warranty = f"garantie {rng.randint(2, 6)} ans"
    warranty_de = f"garantie de {rng.randint(2, 6)} ans"
    later = f"dans {rng.choice([8, 10, 15, 21])} jours"
    review = f"contrôle ({rng.choice([3, 6])} mois)"
    placed = f"mise en place il y a {rng.randint(2, 6)} ans"
    street_word = "en face de la rue piétonne"
    body = (
        f"Compte rendu de consultation du {today:%d/%m/%Y}\n\n"
        f"{written}, {age}, {residence}, consulte pour une douleur sur la {t['tooth']} "
        f"{since}.\nCouronne {placed}, {warranty} (teinte {t['shade']}), "
        f"implant sous {warranty_de}.\n"
        f"Réévaluation {later}, puis {review}. Prochain rendez-vous le {t['appointment']}.\n"
        f"Accès au cabinet : parking {street_word}.\n\n"
        f"{rng.choice(PRACTITIONER_SIGNATURES)}\n"
    )
    planted = [*_name_values(written, p), ("age", age_value), ("address", street)]
    traps = [
        since,
        warranty,
        warranty_de,
        later,
        review,
        placed,
        street_word,
        f"sur la {t['tooth']}",
        t["shade"],
        t["appointment"],
        *_rpps_in(body),
    ]
    subject = f"Compte rendu - {p.last_name.upper()} {p.first_name}"
    planted.extend(_name_values(subject, p))
    return Message(
        "clinical_note", [TextField(subject, FieldKind.SUBJECT), TextField(body)], planted, traps
    )


TEMPLATES = (lab_order, referral_letter, billing, reminder)
# Templates the corpus test adds; the benchmark's dense messages keep TEMPLATES, so its
# figures stay comparable across rounds.
EXTRA_TEMPLATES = (clinical_note,)


def make_corpus(
    count: int,
    seed: int = 3,
    extra_roster: int = 1000,
    templates: tuple[Callable[[random.Random, SyntheticPatient, date], Message], ...] = TEMPLATES,
) -> tuple[list[Message], list[RosterPatient]]:
    """`count` messages over a pool of patients, and a roster holding them plus others."""
    rng = random.Random(seed)
    today = date(2024, 11, 2)
    pool = [make_patient(rng) for _ in range(max(10, count // 2))]
    messages = [templates[i % len(templates)](rng, rng.choice(pool), today) for i in range(count)]
    others = [make_patient(rng) for _ in range(extra_roster)]
    roster = [p.roster_entry(f"p-{i}") for i, p in enumerate(pool + others)]
    return messages, roster


# -- measuring -----------------------------------------------------------------------

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def comparable(text: str) -> str:
    """Case, accents and separators removed: the leak comparison's normal form."""
    return _NON_ALNUM.sub("", _ascii(text).lower())


def words(text: str) -> set[str]:
    return set(re.findall(r"[0-9a-z]+", _ascii(text).lower()))


def leaked(kind: str, value: str, output: str) -> bool:
    """Whether a planted value survives in the output (names: every word of it; ages: the
    number, not inside a longer one, then its unit)."""
    if kind == "age":
        number, unit = value.split()
        return re.search(rf"(?<!\d){number}\W*{unit}\b", _ascii(output).lower()) is not None
    if kind == "name":
        parts = re.findall(r"[0-9a-z]+", _ascii(value).lower())
        present = words(output)
        return all(part in present for part in parts)
    return comparable(value) in comparable(output)


def corpus_and_dense_orders(count: int, orders: int | None = None) -> list[list[TextField]]:
    """The fields of `count` corpus messages (seed 7) and of `orders` (default `count`) of
    load-tests/bench_scan.py's dense lab orders: the texts the C modules' tests compare
    with their Python fallbacks on."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "load-tests"))
    try:
        import bench_scan
    finally:
        sys.path.pop(0)
    messages, _ = make_corpus(count, seed=7)
    dense = bench_scan.dense_messages(count if orders is None else orders).messages
    return [m.fields for m in messages] + dense
