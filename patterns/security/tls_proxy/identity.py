"""The client identity the proxy passes to the app, and the request headers it strips so a
client cannot forge it.

Stripped from every request, whatever their case or count: the four identity headers the
proxy sets, `Forwarded`, and the same names spelt with underscores (WSGI servers map
`X_Client_Subject` and `X-Client-Subject` to the same variable)."""

from __future__ import annotations

from typing import Any

PROXY_HEADERS = (b"x-forwarded-for", b"x-forwarded-proto", b"x-client-verify", b"x-client-subject")
STRIPPED = frozenset((*PROXY_HEADERS, b"forwarded", b"x-forwarded-host", b"x-forwarded-port",
                      b"x-real-ip"))  # fmt: skip


def stripped(name: bytes) -> bool:
    """Whether a client's header of this name is dropped (the proxy's own go in instead)."""
    return name.lower().replace(b"_", b"-") in STRIPPED


# The attribute names RFC 4514 gives short names (as the `cryptography` library writes
# them), keyed by the long names OpenSSL uses in `getpeercert()`.
_SHORT_NAMES = {
    "commonName": "CN",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}
# Other common attributes: RFC 4514 writes them as their OID.
_OIDS = {
    "emailAddress": "1.2.840.113549.1.9.1",
    "serialNumber": "2.5.4.5",
    "surname": "2.5.4.4",
    "givenName": "2.5.4.42",
    "title": "2.5.4.12",
    "initials": "2.5.4.43",
    "generationQualifier": "2.5.4.44",
    "pseudonym": "2.5.4.65",
    "dnQualifier": "2.5.4.46",
    "businessCategory": "2.5.4.15",
    "postalCode": "2.5.4.17",
    "organizationIdentifier": "2.5.4.97",
}
_SPECIAL = frozenset(',+"\\<>;')


def _escape(value: str) -> str:
    """RFC 4514 section 2.4, plus: control characters and non-ASCII as \\XX hex pairs of
    their UTF-8 bytes (also RFC 4514), so the value is always a safe header value."""
    out = []
    last = len(value) - 1
    for i, char in enumerate(value):
        if char in _SPECIAL or (i == 0 and char in "# ") or (i == last and char == " "):
            out.append("\\" + char)
        elif char < " " or char >= "\x7f":
            out.append("".join(f"\\{byte:02X}" for byte in char.encode("utf-8")))
        else:
            out.append(char)
    return "".join(out)


def rfc4514_subject(peer_cert: dict[str, Any]) -> str:
    """The subject of a verified peer certificate (`SSLObject.getpeercert()`) as an RFC 4514
    string: relative names last-first, multi-valued ones joined by "+"."""
    rdns = []
    for rdn in reversed(peer_cert.get("subject", ())):
        rdns.append("+".join(
            f"{_SHORT_NAMES.get(name) or _OIDS.get(name) or name}={_escape(value)}"
            for name, value in rdn
        ))  # fmt: skip
    return ",".join(rdns)


def identity_headers(client_ip: str, peer_cert: dict[str, Any] | None) -> bytes:
    """The headers the proxy adds to every request of one connection."""
    lines = [f"X-Forwarded-For: {client_ip}", "X-Forwarded-Proto: https"]
    if peer_cert:
        lines += ["X-Client-Verify: SUCCESS", f"X-Client-Subject: {rfc4514_subject(peer_cert)}"]
    else:
        lines.append("X-Client-Verify: NONE")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
