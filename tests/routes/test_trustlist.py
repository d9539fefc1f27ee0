"""The ANS trust-list parser on a real-format sample, malformed inputs, and HTTPS refresh."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.certs import make_ca
from gateway.errors import TrustListError
from gateway.trustlist import (
    TrustListSource,
    fetch_trust_list,
    is_valid_ins,
    load_trust_list,
    normalise_dn,
    parse_trust_list,
)
from tests.conftest import TestPKI as PKI
from tests.connectors._helpers import SAMPLE_TRUST_LIST

pytestmark = pytest.mark.timeout(60)

NS = "https://listeblanche.mssante.fr/schema"


def small_list(*domains: str, close_root: bool = True) -> bytes:
    entries = "".join(
        f"<Domaine><Nom>{d}</Nom><Description>x</Description>"
        f"<DNCertificatOperateur>CN=mx.{d},O=Op,C=FR</DNCertificatOperateur>"
        "<DateMAJ>2025-03-13T14:54:10Z</DateMAJ></Domaine>"
        for d in domains
    )
    tail = "</ListeBlancheMSSante>" if close_root else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><ListeBlancheMSSante xmlns="{NS}">'
        f"<DateDeGeneration>2025-03-14T00:00:00Z</DateDeGeneration>"
        f"<ListeDomaines>{entries}</ListeDomaines>{tail}"
    ).encode()


def test_reads_the_real_format_sample() -> None:
    trust = load_trust_list(SAMPLE_TRUST_LIST)
    assert trust.generated == "2025-03-13T14:54:10Z"
    assert trust.entries == 270
    assert len(trust) == 266  # some domains are served by several operator certificates
    # The real list holds one entry whose Nom is an address: left out, reported.
    assert len(trust.skipped_entries) == 1
    assert not trust.contains("sessad@ase.ditepbeziers.mssante.fr")
    assert not trust.contains("ase.ditepbeziers.mssante.fr")
    assert trust.contains("patient.mssante.fr")
    assert trust.contains("mssante.apicrypt.org")
    assert trust.contains("INTEROP-MSSANTE.APICRYPT.ORG.")
    dns = {normalise_dn(dn) for dn in trust.operator_dns("mssante.apicrypt.org")}
    assert (
        "CN=mailin.interop-mssante.apicrypt.org,OU=343975235300037,O=APICEM,ST=Nord (59),C=FR"
        in dns
    )
    assert len(trust.operator_dns("interop-mssante.apicrypt.org")) == 2
    assert any("CNAM" in dn for dn in trust.operator_dns("patient.mssante.fr"))


def test_exact_domain_match_never_suffix() -> None:
    trust = load_trust_list(SAMPLE_TRUST_LIST)
    assert trust.is_mssante_address("dr.x@adsea29.mssante.fr")
    assert not trust.is_mssante_address("dr.x@sub.adsea29.mssante.fr")
    assert not trust.is_mssante_address("dr.x@not-listed.mssante.fr")
    assert not trust.is_mssante_address("dr.x@mssante.fr")
    assert not trust.is_mssante_address("dr.x@apicrypt.org")
    assert trust.is_mssante_address("dr.x@mssante.apicrypt.org")
    assert not trust.is_mssante_address("adsea29.mssante.fr")
    assert not trust.is_mssante_address("@adsea29.mssante.fr")


def test_patient_addresses_need_a_valid_ins() -> None:
    trust = load_trust_list(SAMPLE_TRUST_LIST)
    assert trust.is_mssante_address("279035121518989@patient.mssante.fr")
    assert not trust.is_mssante_address("279035121518988@patient.mssante.fr")  # wrong key
    assert not trust.is_mssante_address("27903512151898@patient.mssante.fr")  # too short
    assert not trust.is_mssante_address("jeanne.dupont@patient.mssante.fr")
    assert not trust.is_mssante_address("reponse.automatique-test@patient.mssante.fr")
    assert not is_valid_ins("2690299341732")  # 13 characters: a NIR without its key


def test_one_bad_entry_is_left_out_not_fatal() -> None:
    trust = parse_trust_list(small_list("a.mssante.fr", "x@b.mssante.fr", "c.mssante.fr"))
    assert trust.skipped_entries == (2,)
    assert sorted(trust.domains) == ["a.mssante.fr", "c.mssante.fr"]
    assert not trust.is_mssante_address("y@b.mssante.fr")


def test_root_close_tag_omitted_as_published_is_accepted() -> None:
    assert b"</ListeBlancheMSSante>" not in SAMPLE_TRUST_LIST.read_bytes()[-100:]
    assert parse_trust_list(small_list("a.mssante.fr", close_root=False)).contains("a.mssante.fr")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"<ListeBlancheMSSante", "not well-formed XML"),
        (small_list("a.mssante.fr")[:-60], "not well-formed XML"),  # truncated download
        (b"<html><body>503</body></html>", "root is 'html'"),
        (
            small_list("a.mssante.fr").replace(NS.encode(), b"urn:other"),
            "expected ListeBlancheMSSante",
        ),
        (small_list(), "no Domaine entries"),
        (small_list("not a domain"), "no valid domain name"),
        (
            small_list("a.mssante.fr").replace(b"<Nom>a.mssante.fr</Nom>", b""),
            "no valid domain name",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            b'<ListeBlancheMSSante xmlns="' + NS.encode() + b'">&b;</ListeBlancheMSSante>',
            "refused",
        ),
    ],
)
def test_malformed_lists_are_rejected_with_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(TrustListError, match=message):
        parse_trust_list(data)


def test_load_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "liste.xml"
    bad.write_bytes(b"<ListeBlancheMSSante")
    with pytest.raises(TrustListError, match=r"liste\.xml: trust list is not well-formed XML"):
        load_trust_list(bad)
    with pytest.raises(TrustListError, match="cannot read"):
        load_trust_list(tmp_path / "absent.xml")


async def _https_server(pki: PKI, served: dict[str, bytes | int]) -> tuple[web.AppRunner, int]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=served["body"], status=int(served.get("status", 200)))

    app = web.Application()
    app.router.add_get("/listeblanchemssante.xml", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context())
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def test_refresh_over_https_keeps_the_last_good_copy(pki: PKI, tmp_path: Path) -> None:
    path = tmp_path / "liste.xml"
    path.write_bytes(SAMPLE_TRUST_LIST.read_bytes())
    served: dict[str, bytes | int] = {"body": small_list("nouveau.mssante.fr")}
    runner, port = await _https_server(pki, served)
    try:
        url = f"https://127.0.0.1:{port}/listeblanchemssante.xml"
        source = TrustListSource(path, url, ca_file=str(pki.ca_file))
        assert source.contains("adsea29.mssante.fr")
        assert await source.refresh()
        assert source.contains("nouveau.mssante.fr") and not source.contains("adsea29.mssante.fr")
        assert load_trust_list(path).contains("nouveau.mssante.fr")
        good = path.read_bytes()

        served["body"] = b"<ListeBlancheMSSante"  # broken publication
        assert not await source.refresh()
        assert "not well-formed" in source.last_error
        served.update(body=b"oops", status=503)
        assert not await source.refresh()
        assert "HTTP 503" in source.last_error
        assert source.contains("nouveau.mssante.fr")
        assert path.read_bytes() == good

        # A server the CA bundle does not vouch for: refused, nothing replaced.
        served.update(body=small_list("pirate.mssante.fr"), status=200)
        other_ca = tmp_path / "other-ca.pem"
        other_ca.write_bytes(make_ca("Other CA").cert_pem())
        with pytest.raises(TrustListError, match="download failed"):
            await fetch_trust_list(url, path, ca_file=str(other_ca))
    finally:
        await runner.cleanup()
    assert path.read_bytes() == good


async def test_refresh_refuses_plain_http(tmp_path: Path) -> None:
    with pytest.raises(TrustListError, match="https"):
        await fetch_trust_list("http://127.0.0.1:1/x.xml", tmp_path / "l.xml")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash_the_parser(data: bytes) -> None:
    try:
        trust = parse_trust_list(data)
    except TrustListError:
        return
    assert trust.entries > 0


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=1000))
def test_any_truncation_of_a_list_is_rejected_or_complete(cut: int) -> None:
    full = small_list("a.mssante.fr", "b.mssante.fr")
    data = full[: max(0, len(full) - cut)]
    try:
        trust = parse_trust_list(data)
    except TrustListError:
        return
    assert trust.contains("a.mssante.fr") and trust.contains("b.mssante.fr")
