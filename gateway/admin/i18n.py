"""Console texts in French (default) and English.

The language is chosen, in order: the `lang` cookie set by the toggle, then the
browser's Accept-Language (first of fr/en by q-value), then admin.language.
Every text is a fixed phrase: translations never interpolate patient data, only
counts, identifiers of records, route names and user names.
"""

from __future__ import annotations

from collections.abc import Mapping

LANGUAGES = ("fr", "en")

MESSAGES: Mapping[str, tuple[str, str]] = {
    # key: (French, English)
    "app.title": ("Portique : console d'administration", "Portique: admin console"),
    "nav.dashboard": ("Tableau de bord", "Dashboard"),
    "nav.audit": ("Journal d'audit", "Audit trail"),
    "nav.quarantine": ("Quarantaine", "Quarantine"),
    "nav.queue": ("File d'attente", "Queue"),
    "nav.reidentify": ("Ré-identification", "Re-identification"),
    "nav.logout": ("Se déconnecter", "Log out"),
    "nav.signed_in_as": ("Connecté : {user} ({role})", "Signed in: {user} ({role})"),
    "lang.switch": ("English", "Français"),
    "role.viewer": ("lecteur", "viewer"),
    "role.auditor": ("auditeur", "auditor"),
    "role.admin": ("administrateur", "admin"),
    # login
    "login.title": ("Connexion", "Sign in"),
    "login.user": ("Identifiant", "User name"),
    "login.password": ("Mot de passe", "Password"),
    "login.submit": ("Se connecter", "Sign in"),
    "login.failed": ("Identifiant ou mot de passe incorrect.", "Wrong user name or password."),
    "login.rate_limited": (
        "Trop de tentatives échouées. Réessayez dans quelques minutes.",
        "Too many failed attempts. Try again in a few minutes.",
    ),
    "login.expired": (
        "Session expirée. Veuillez vous reconnecter.",
        "Session expired. Please sign in again.",
    ),
    "totp.title": ("Second facteur", "Second factor"),
    "totp.help": (
        "Saisissez le code à 6 chiffres de votre application d'authentification, ou un code de secours.",
        "Enter the 6-digit code from your authenticator app, or a recovery code.",
    ),
    "totp.code": ("Code", "Code"),
    "totp.submit": ("Valider", "Verify"),
    "totp.failed": ("Code incorrect.", "Wrong code."),
    "enrol.title": ("Activer la double authentification", "Set up two-factor authentication"),
    "enrol.help": (
        "Votre rôle exige un second facteur. Scannez ce QR code avec une application "
        "d'authentification (TOTP), puis saisissez le code affiché.",
        "Your role requires a second factor. Scan this QR code with an authenticator app "
        "(TOTP), then enter the code it shows.",
    ),
    "enrol.manual": ("Ou saisissez ce lien ou cette clé :", "Or enter this link or key:"),
    "enrol.qr_alt": ("QR code d'enrôlement TOTP", "TOTP enrolment QR code"),
    "recovery.title": ("Codes de secours", "Recovery codes"),
    "recovery.help": (
        "Chaque code permet une seule connexion si vous perdez votre téléphone. "
        "Conservez-les en lieu sûr : ils ne seront plus affichés.",
        "Each code allows one sign-in if you lose your phone. Keep them safe: they will "
        "not be shown again.",
    ),
    "recovery.continue": ("Continuer", "Continue"),
    # errors
    "error.forbidden": (
        "Accès refusé : votre rôle ne permet pas d'ouvrir cette page.",
        "Access denied: your role does not allow this page.",
    ),
    "error.not_found": ("Page introuvable.", "Page not found."),
    "error.csrf": (
        "Formulaire expiré ou invalide. Rechargez la page et réessayez.",
        "Form expired or invalid. Reload the page and try again.",
    ),
    "error.internal": (
        "Erreur interne : l'action n'a peut-être pas abouti. Vérifiez son état avant de réessayer.",
        "Internal error: the action may not have completed. Check its state before retrying.",
    ),
    "error.bad_input": ("Saisie invalide : {field}.", "Invalid input: {field}."),
    "error.title": ("Erreur", "Error"),
    # dashboard
    "dash.title": ("Tableau de bord", "Dashboard"),
    "dash.per_hour": (
        "Messages par heure, par route et action",
        "Messages per hour, by route and action",
    ),
    "dash.findings": ("Identifiants détectés, par type", "Findings by type"),
    "dash.queue_depth": ("Messages en file", "Messages queued"),
    "dash.quarantined": ("Messages en quarantaine", "Messages held"),
    "dash.errors": ("Dernières erreurs de livraison", "Last delivery errors"),
    "dash.chain": ("Journal d'audit", "Audit trail"),
    "dash.chain_ok": ("intègre", "intact"),
    "dash.chain_bad": ("ALTÉRÉ", "TAMPERED"),
    "dash.records": ("{n} enregistrements", "{n} records"),
    "dash.lockdown": ("Isolement (lockdown)", "Lockdown"),
    "dash.lockdown_on": (
        "ACTIF : aucun envoi sortant ; les messages sont acceptés et mis en file.",
        "ON: no outbound delivery; mail is accepted and spooled.",
    ),
    "dash.lockdown_off": ("inactif : les envois sortants sont autorisés.", "off: delivery runs."),
    "dash.lockdown_enable": ("Activer l'isolement", "Turn lockdown on"),
    "dash.lockdown_disable": ("Lever l'isolement", "Turn lockdown off"),
    "dash.none": ("Aucun.", "None."),
    "dash.metrics": (
        "Les métriques Prometheus complètes sont exposées sur /metrics (serveur de métriques).",
        "Full Prometheus metrics are on /metrics (metrics server).",
    ),
    "col.hour": ("Heure (UTC)", "Hour (UTC)"),
    "col.route": ("Route", "Route"),
    "col.action": ("Action", "Action"),
    "col.count": ("Nombre", "Count"),
    "col.type": ("Type", "Type"),
    "col.when": ("Date (UTC)", "When (UTC)"),
    "col.queue_id": ("Identifiant", "Id"),
    "col.connector": ("Connecteur", "Connector"),
    "col.detail": ("Détail", "Detail"),
    "col.kind": ("Événement", "Event"),
    "col.actor": ("Acteur", "Actor"),
    "col.fields": ("Données", "Fields"),
    "col.sender": ("Expéditeur", "Sender"),
    "col.recipients": ("Destinataires", "Recipients"),
    "col.reason": ("Motif", "Reason"),
    "col.findings": ("Détections", "Findings"),
    "col.attempts": ("Tentatives", "Attempts"),
    "col.next_attempt": ("Prochain essai", "Next attempt"),
    "col.last_error": ("Dernière erreur", "Last error"),
    "col.part": ("Partie", "Part"),
    "col.content_type": ("Type de contenu", "Content type"),
    "col.size": ("Taille (octets)", "Size (bytes)"),
    "col.held": (
        "Retirée par « Libérer sans les parties retenues »",
        "Dropped by “Release without the held parts”",
    ),
    "col.audience": ("Destinataire du jeton", "Token audience"),
    "col.identity": ("Patient", "Patient"),
    "yes": ("oui", "yes"),
    "no": ("non", "no"),
    # audit
    "audit.title": ("Journal d'audit", "Audit trail"),
    "audit.since": ("Du", "From"),
    "audit.until": ("Au", "To"),
    "audit.sender": ("Expéditeur", "Sender"),
    "audit.recipient": ("Destinataire", "Recipient"),
    "audit.route": ("Route", "Route"),
    "audit.action": ("Action", "Action"),
    "audit.message_id": ("Message-ID", "Message-ID"),
    "audit.kind": ("Événement", "Event"),
    "audit.search": ("Rechercher", "Search"),
    "audit.export_jsonl": ("Exporter (JSONL)", "Export (JSONL)"),
    "audit.export_csv": ("Exporter (CSV)", "Export (CSV)"),
    "audit.results": (
        "{total} résultat(s), {first} à {last}",
        "{total} result(s), {first} to {last}",
    ),
    "audit.none": ("Aucun enregistrement ne correspond.", "No record matches."),
    "audit.prev": ("« Précédents", "« Previous"),
    "audit.next": ("Suivants »", "Next »"),
    # quarantine
    "q.title": ("Quarantaine", "Quarantine"),
    "q.none": ("Aucun message retenu.", "Nothing is held."),
    "q.open": ("Examiner", "Review"),
    "q.item_title": ("Message retenu {id}", "Held message {id}"),
    "q.parts": ("Parties du message", "Message parts"),
    "q.release_default": (
        "Libérer sans les parties retenues",
        "Release without the held parts",
    ),
    "q.release_rescan": ("Libérer après nouvelle analyse", "Release after re-scan"),
    "q.release_as_is": ("Libérer tel quel", "Release as is"),
    "q.as_is_warning": (
        "Libérer tel quel envoie le message original, avec les détections ci-dessus. "
        "Indiquez le motif (obligatoire, consigné dans le journal d'audit).",
        "Releasing as is sends the original message, with the findings above. State the "
        "reason (required, written to the audit trail).",
    ),
    "q.reason": ("Motif", "Reason"),
    "q.delete": ("Supprimer", "Delete"),
    "q.released": ("Message {id} libéré : {outcome}.", "Message {id} released: {outcome}."),
    "q.deleted": ("Message {id} supprimé.", "Message {id} deleted."),
    "q.missing": ("Ce message n'est plus en quarantaine.", "This message is no longer held."),
    "q.reason_required": (
        "Un motif est obligatoire pour libérer tel quel.",
        "A reason is required to release as is.",
    ),
    # queue
    "queue.title": ("File d'attente (messages différés)", "Queue (deferred messages)"),
    "queue.none": ("Aucun message différé.", "No deferred message."),
    "queue.retry": ("Réessayer maintenant", "Retry now"),
    "queue.retried": ("Nouvel essai programmé pour {id}.", "Retry scheduled for {id}."),
    "queue.missing": ("Ce message n'est plus en file.", "This message is no longer queued."),
    # re-identification
    "reid.title": ("Ré-identification", "Re-identification"),
    "reid.help": (
        "Retrouver le patient derrière un jeton de pseudonymisation. Chaque consultation "
        "est consignée dans le journal d'audit avec son motif.",
        "Find the patient behind a pseudonymisation token. Each lookup is written to the "
        "audit trail with its reason.",
    ),
    "reid.token": ("Jeton", "Token"),
    "reid.reason": ("Motif (obligatoire)", "Reason (required)"),
    "reid.submit": ("Ré-identifier", "Re-identify"),
    "reid.reason_required": ("Le motif est obligatoire.", "The reason is required."),
    "reid.unknown": ("Jeton inconnu.", "Unknown token."),
    "reid.result": ("Résultat pour le jeton {token}", "Result for token {token}"),
    # flashes
    "lockdown.on": ("Isolement activé.", "Lockdown is on."),
    "lockdown.off": ("Isolement levé.", "Lockdown is off."),
    "refused.reason_required": ("Un motif est obligatoire.", "A reason is required."),
    "refused.not_found": ("Élément introuvable.", "Item not found."),
    "refused.rescan_failed": (
        "La nouvelle analyse a de nouveau retenu le message.",
        "The re-scan held the message again.",
    ),
    "refused.unavailable": (
        "Service indisponible pour cette action.",
        "The service cannot perform this action now.",
    ),
}


def negotiate(cookie: str | None, accept_language: str | None, default: str) -> str:
    if cookie in LANGUAGES:
        return cookie
    best: tuple[float, str] | None = None
    # 20 entries: real browsers send a handful; bound the parsing work.
    for item in (accept_language or "").split(",")[:20]:
        parts = item.strip().split(";")
        tag = parts[0].strip().lower().split("-")[0]
        if tag not in LANGUAGES:
            continue
        q = 1.0
        for p in parts[1:]:
            p = p.strip()
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if q > 0 and (best is None or q > best[0]):
            best = (q, tag)
    if best is not None:
        return best[1]
    return default if default in LANGUAGES else "fr"


def translate(lang: str, key: str, **params: object) -> str:
    pair = MESSAGES.get(key)
    if pair is None:
        return key
    text = pair[0] if lang == "fr" else pair[1]
    return text.format(**params) if params else text
