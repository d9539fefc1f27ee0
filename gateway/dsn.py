"""Bounces (RFC 3464 DSNs) and sender notices, in French and English.

Trust boundary: inputs are queue metadata (addresses, Message-ID, dates, fixed PHI-free
reason phrases, finding counts). Output: a complete message from the null sender `<>`.

Invariants:
- A DSN or notice never contains the original body, its attachments, or its Subject,
  except `safe_subject`, which the pipeline has already redacted (None = left out).
- Reasons are fixed phrases and status codes; a peer's free-text reply is never quoted
  (it may echo an address or a name).
- Never a bounce of a bounce: the queue does not call `build_dsn` for a message whose
  envelope sender is empty (see gateway/queue.py).
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP

NOTICE_SUBJECT = {
    "dsn": "Non remis / Undelivered mail returned to sender",
    "hold": "Message retenu / Message held for review",
    "reject": "Message refusé / Message rejected",
}


@dataclass(frozen=True)
class FailedRecipient:
    address: str
    status: str  # RFC 3463 code, e.g. "5.1.1"
    reason: str  # fixed, PHI-free phrase, e.g. "550 5.1.1 from relay"


_CODE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def status_from_detail(detail: str, permanent: bool) -> str:
    """The enhanced status code in a connector's detail, or a generic one."""
    m = _CODE.search(detail)
    if m:
        return m.group(0)
    return "5.0.0" if permanent else "4.0.0"


def _headers(hostname: str, to: str, subject: str) -> list[tuple[str, str]]:
    return [
        ("From", f"Portique <MAILER-DAEMON@{hostname}>"),
        ("To", to),
        ("Subject", subject),
        ("Date", email.utils.formatdate(localtime=False)),
        ("Message-ID", email.utils.make_msgid(domain=hostname)),
        ("Auto-Submitted", "auto-replied"),
    ]


def _base(hostname: str, to: str, subject: str) -> EmailMessage:
    msg = EmailMessage(policy=SMTP)
    for key, value in _headers(hostname, to, subject):
        msg[key] = value
    return msg


def shown_address(address: str, identifies_patient: Callable[[str], bool] | None) -> str:
    """How a recipient appears in a notice: a patient's own address keeps only its
    first character and its domain (`j…@gmail.com`), so a bounce names no patient."""
    if identifies_patient is None or not identifies_patient(address):
        return address
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}…@{domain}"


def build_dsn(
    *,
    hostname: str,
    sender: str,
    original_message_id: str,
    arrival: float,
    failed: Sequence[FailedRecipient],
    gave_up: bool,
    safe_subject: str | None = None,
    identifies_patient: Callable[[str], bool] | None = None,
) -> bytes:
    """A multipart/report DSN (RFC 3464) to `sender` for `failed` recipients."""
    arrival_date = email.utils.formatdate(arrival, localtime=False)
    rcpt_lines = "\n".join(
        f"  - {shown_address(f.address, identifies_patient)} : {f.reason}" for f in failed
    )
    subject_fr = f"Objet (expurgé) : {safe_subject}\n" if safe_subject is not None else ""
    subject_en = f"Subject (redacted): {safe_subject}\n" if safe_subject is not None else ""
    why_fr = (
        "Portique a renoncé après plusieurs jours de tentatives."
        if gave_up
        else "Le serveur destinataire a refusé le message."
    )
    why_en = (
        "Portique gave up after several days of retries."
        if gave_up
        else "The receiving server refused the message."
    )
    text = (
        "Votre message n'a pas pu être remis aux destinataires suivants.\n"
        f"{why_fr}\n\n"
        f"Message-ID : {original_message_id or '(aucun)'}\n"
        f"Reçu le : {arrival_date}\n"
        f"{subject_fr}"
        f"Destinataires :\n{rcpt_lines}\n\n"
        "Le contenu du message n'est pas reproduit ici.\n"
        "\n----\n\n"
        "Your message could not be delivered to the following recipients.\n"
        f"{why_en}\n\n"
        f"Message-ID: {original_message_id or '(none)'}\n"
        f"Received: {arrival_date}\n"
        f"{subject_en}"
        f"Recipients:\n{rcpt_lines}\n\n"
        "The content of the message is not reproduced here.\n"
    )
    # message/delivery-status: one block of fields per message, then one per recipient.
    blocks = [[("Reporting-MTA", f"dns; {hostname}"), ("Arrival-Date", arrival_date)]]
    for f in failed:
        blocks.append(
            [
                ("Final-Recipient", f"rfc822; {shown_address(f.address, identifies_patient)}"),
                ("Action", "failed"),
                ("Status", f.status),
                ("Diagnostic-Code", f"smtp; {f.reason}"),
            ]
        )
    report = MIMEMultipart("report", report_type="delivery-status", policy=SMTP)
    for key, value in _headers(hostname, sender, NOTICE_SUBJECT["dsn"]):
        report[key] = value
    report.attach(MIMEText(text, "plain", "utf-8", policy=SMTP))
    status = MIMEBase("message", "delivery-status", policy=SMTP)
    for fields in blocks:
        block = Message(policy=SMTP)
        for key, value in fields:
            block[key] = value
        status.attach(block)
    report.attach(status)
    return report.as_bytes()


def build_notice(
    *,
    hostname: str,
    sender: str,
    kind: str,
    original_message_id: str,
    arrival: float,
    recipients: Sequence[str],
    reason: str,
    finding_counts: Mapping[str, int],
    safe_subject: str | None = None,
    identifies_patient: Callable[[str], bool] | None = None,
) -> bytes:
    """A plain notice for a held (`kind="hold"`) or rejected (`"reject"`) copy.

    Lists finding types and counts, never values, and says what to do next.
    """
    arrival_date = email.utils.formatdate(arrival, localtime=False)
    counts = (
        "\n".join(f"  - {k} : {n}" for k, n in sorted(finding_counts.items())) or "  (aucun / none)"
    )
    rcpts = "\n".join(f"  - {shown_address(r, identifies_patient)}" for r in recipients)
    subject_fr = f"Objet (expurgé) : {safe_subject}\n" if safe_subject is not None else ""
    subject_en = f"Subject (redacted): {safe_subject}\n" if safe_subject is not None else ""
    if kind == "hold":
        what_fr = (
            "Votre message est retenu en quarantaine pour vérification par "
            "l'administrateur de Portique. Il n'a pas été envoyé."
        )
        what_en = (
            "Your message is held in quarantine for review by the Portique "
            "administrator. It has not been sent."
        )
        todo_fr = "Contactez votre administrateur si l'envoi est urgent."
        todo_en = "Contact your administrator if it is urgent."
    else:
        what_fr = "Votre message n'a pas été envoyé : il contient des données de patient."
        what_en = "Your message was not sent: it contains patient data."
        todo_fr = (
            "Pour envoyer des données de santé à un professionnel, "
            "utilisez votre messagerie MSSanté."
        )
        todo_en = "To send health data to a professional, use your MSSanté mailbox."
    text = (
        f"{what_fr}\n\nMotif : {reason}\nMessage-ID : {original_message_id or '(aucun)'}\n"
        f"Reçu le : {arrival_date}\n{subject_fr}Destinataires :\n{rcpts}\n"
        f"Éléments détectés (type : nombre) :\n{counts}\n\n{todo_fr}\n"
        "\n----\n\n"
        f"{what_en}\n\nReason: {reason}\nMessage-ID: {original_message_id or '(none)'}\n"
        f"Received: {arrival_date}\n{subject_en}Recipients:\n{rcpts}\n"
        f"Detected items (type: count):\n{counts}\n\n{todo_en}\n"
    )
    msg = _base(hostname, sender, NOTICE_SUBJECT[kind])
    msg.set_content(text, charset="utf-8")
    return msg.as_bytes()
