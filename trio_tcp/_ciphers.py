"""Cipher suite names: IANA to OpenSSL translation and per-entry validation.

Ballerina (and Java, and the TLS RFCs) name cipher suites the IANA way,
``TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256``; OpenSSL, and so :mod:`ssl`, wants
``ECDHE-RSA-AES128-GCM-SHA256``. On OpenSSL 3 ``SSLContext.get_ciphers()``
gives the OpenSSL name and the 16-bit IANA code point (the low half of
``id``), but not the IANA name. So the table below maps IANA names to code
points (facts from the IANA TLS Cipher Suites registry), and the OpenSSL name
of each code point is read from the running OpenSSL at first use: a suite this
OpenSSL does not build (3DES, RC4) translates to nothing and is reported as
unsupported rather than unknown.

Each entry of a cipher list is checked on its own. ``set_ciphers("A:BOGUS")``
silently drops ``BOGUS``; here it is an error that names ``BOGUS``. An entry
must be one suite name; OpenSSL cipher-string syntax (``HIGH``, ``!aNULL``,
``A:B``) is refused so that what is configured is exactly what is listed.
Suites without authentication or encryption (``ADH-*``, ``NULL-*``) and
PSK/SRP suites (Python offers no way to supply their secrets) are refused.

TLS 1.3 suites cannot be restricted from Python (there is no
``set_ciphersuites``); they are always enabled. Naming them next to TLS 1.2
suites is accepted; naming only them is an error, since the list would
restrict nothing.
"""

from __future__ import annotations

import functools
import ssl

from ._errors import ConfigurationError

__all__ = ["TLS13_SUITES", "select_ciphers"]

#: The TLS 1.3 suites (RFC 8446 appendix B.4). OpenSSL uses the IANA names.
TLS13_SUITES = frozenset(
    {
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_CCM_SHA256",
        "TLS_AES_128_CCM_8_SHA256",
    }
)

# IANA name -> code point, for the TLS 1.2-and-older suites OpenSSL can offer
# with certificates (plus a few legacy ones, so they get a precise error).
_IANA_CODE_POINTS: dict[str, int] = {
    # ECDHE with ECDSA certificates
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": 0xC02B,
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": 0xC02C,
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA9,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CCM": 0xC0AC,
    "TLS_ECDHE_ECDSA_WITH_AES_256_CCM": 0xC0AD,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8": 0xC0AE,
    "TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8": 0xC0AF,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": 0xC023,
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384": 0xC024,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": 0xC009,
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": 0xC00A,
    "TLS_ECDHE_ECDSA_WITH_ARIA_128_GCM_SHA256": 0xC05C,
    "TLS_ECDHE_ECDSA_WITH_ARIA_256_GCM_SHA384": 0xC05D,
    "TLS_ECDHE_ECDSA_WITH_CAMELLIA_128_CBC_SHA256": 0xC072,
    "TLS_ECDHE_ECDSA_WITH_CAMELLIA_256_CBC_SHA384": 0xC073,
    "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA": 0xC008,
    # ECDHE with RSA certificates
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": 0xC02F,
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": 0xC030,
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA8,
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": 0xC027,
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384": 0xC028,
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": 0xC013,
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": 0xC014,
    "TLS_ECDHE_RSA_WITH_ARIA_128_GCM_SHA256": 0xC060,
    "TLS_ECDHE_RSA_WITH_ARIA_256_GCM_SHA384": 0xC061,
    "TLS_ECDHE_RSA_WITH_CAMELLIA_128_CBC_SHA256": 0xC076,
    "TLS_ECDHE_RSA_WITH_CAMELLIA_256_CBC_SHA384": 0xC077,
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": 0xC012,
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA": 0xC011,
    # finite-field DHE with RSA certificates
    "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256": 0x009E,
    "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384": 0x009F,
    "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCAA,
    "TLS_DHE_RSA_WITH_AES_128_CCM": 0xC09E,
    "TLS_DHE_RSA_WITH_AES_256_CCM": 0xC09F,
    "TLS_DHE_RSA_WITH_AES_128_CCM_8": 0xC0A2,
    "TLS_DHE_RSA_WITH_AES_256_CCM_8": 0xC0A3,
    "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256": 0x0067,
    "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256": 0x006B,
    "TLS_DHE_RSA_WITH_AES_128_CBC_SHA": 0x0033,
    "TLS_DHE_RSA_WITH_AES_256_CBC_SHA": 0x0039,
    "TLS_DHE_RSA_WITH_ARIA_128_GCM_SHA256": 0xC052,
    "TLS_DHE_RSA_WITH_ARIA_256_GCM_SHA384": 0xC053,
    "TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA256": 0x00BE,
    "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA256": 0x00C4,
    "TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA": 0x0045,
    "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA": 0x0088,
    "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA": 0x0016,
    # finite-field DHE with DSA certificates
    "TLS_DHE_DSS_WITH_AES_128_GCM_SHA256": 0x00A2,
    "TLS_DHE_DSS_WITH_AES_256_GCM_SHA384": 0x00A3,
    "TLS_DHE_DSS_WITH_AES_128_CBC_SHA256": 0x0040,
    "TLS_DHE_DSS_WITH_AES_256_CBC_SHA256": 0x006A,
    "TLS_DHE_DSS_WITH_AES_128_CBC_SHA": 0x0032,
    "TLS_DHE_DSS_WITH_AES_256_CBC_SHA": 0x0038,
    "TLS_DHE_DSS_WITH_ARIA_128_GCM_SHA256": 0xC056,
    "TLS_DHE_DSS_WITH_ARIA_256_GCM_SHA384": 0xC057,
    "TLS_DHE_DSS_WITH_CAMELLIA_128_CBC_SHA256": 0x00BD,
    "TLS_DHE_DSS_WITH_CAMELLIA_256_CBC_SHA256": 0x00C3,
    "TLS_DHE_DSS_WITH_CAMELLIA_128_CBC_SHA": 0x0044,
    "TLS_DHE_DSS_WITH_CAMELLIA_256_CBC_SHA": 0x0087,
    # static RSA key exchange (no forward secrecy)
    "TLS_RSA_WITH_AES_128_GCM_SHA256": 0x009C,
    "TLS_RSA_WITH_AES_256_GCM_SHA384": 0x009D,
    "TLS_RSA_WITH_AES_128_CCM": 0xC09C,
    "TLS_RSA_WITH_AES_256_CCM": 0xC09D,
    "TLS_RSA_WITH_AES_128_CCM_8": 0xC0A0,
    "TLS_RSA_WITH_AES_256_CCM_8": 0xC0A1,
    "TLS_RSA_WITH_AES_128_CBC_SHA256": 0x003C,
    "TLS_RSA_WITH_AES_256_CBC_SHA256": 0x003D,
    "TLS_RSA_WITH_AES_128_CBC_SHA": 0x002F,
    "TLS_RSA_WITH_AES_256_CBC_SHA": 0x0035,
    "TLS_RSA_WITH_ARIA_128_GCM_SHA256": 0xC050,
    "TLS_RSA_WITH_ARIA_256_GCM_SHA384": 0xC051,
    "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA256": 0x00BA,
    "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA256": 0x00C0,
    "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA": 0x0041,
    "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA": 0x0084,
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": 0x000A,
    "TLS_RSA_WITH_RC4_128_SHA": 0x0005,
    "TLS_RSA_WITH_RC4_128_MD5": 0x0004,
    "TLS_RSA_WITH_NULL_SHA256": 0x003B,
    "TLS_RSA_WITH_NULL_SHA": 0x0002,
}

# Everything OpenSSL knows minus what cannot be used safely or at all from
# Python: no authentication (aNULL), no encryption (eNULL), pre-shared keys and
# SRP (no API to provide their secrets). @SECLEVEL=0 so that listing does not
# depend on the system's security level; the level still applies at handshake.
_USABLE_SPEC = "ALL:!aNULL:!eNULL:!PSK:!SRP:@SECLEVEL=0"
_EVERYTHING_SPEC = "ALL:COMPLEMENTOFALL:@SECLEVEL=0"


def _list_ciphers(spec: str) -> list[dict[str, object]]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_ciphers(spec)
    return [dict(cipher) for cipher in context.get_ciphers()]


@functools.cache
def _tables() -> tuple[frozenset[str], frozenset[str], dict[str, str]]:
    """Return (usable OpenSSL names, all OpenSSL names, IANA -> OpenSSL) for this OpenSSL."""
    everything = _list_ciphers(_EVERYTHING_SPEC)
    by_code_point = {int(str(c["id"])) & 0xFFFF: str(c["name"]) for c in everything}
    usable = frozenset(
        str(c["name"]) for c in _list_ciphers(_USABLE_SPEC) if c["protocol"] != "TLSv1.3"
    )
    known = frozenset(str(c["name"]) for c in everything)
    iana = {
        name: by_code_point[code]
        for name, code in _IANA_CODE_POINTS.items()
        if code in by_code_point
    }
    return usable, known, iana


def _translate(entry: str, field: str) -> str | None:
    """Return the OpenSSL name of one entry, ``None`` for a TLS 1.3 suite, or raise."""
    usable, known, iana = _tables()
    name = entry.strip()
    upper = name.upper()
    if upper.startswith("SSL_"):  # Java spells the oldest suites SSL_RSA_WITH_...
        upper = "TLS_" + upper[4:]
    if upper in TLS13_SUITES:
        return None
    openssl = iana.get(upper, upper)
    if openssl in usable:
        return openssl
    where = f"{field}: {entry!r}"
    if not name:
        raise ConfigurationError(f"empty cipher name in {field}")
    if any(ch in name for ch in ":, !+@"):
        raise ConfigurationError(
            f"one cipher suite name per entry, not an OpenSSL cipher string ({where})"
        )
    if upper in _IANA_CODE_POINTS or openssl in known:
        raise ConfigurationError(
            f"cipher suite not allowed or not supported by {ssl.OPENSSL_VERSION} ({where}): "
            "anonymous, unencrypted, PSK/SRP and suites this OpenSSL does not build are refused"
        )
    raise ConfigurationError(
        f"unknown cipher suite ({where}); use an IANA name such as "
        "'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256' or an OpenSSL name such as "
        "'ECDHE-RSA-AES128-GCM-SHA256'"
    )


def select_ciphers(entries: tuple[str, ...], field: str) -> tuple[str, ...]:
    """Translate a configured cipher list into OpenSSL names for TLS 1.2 and older.

    Args:
        entries: IANA or OpenSSL suite names, one per entry.
        field: The configuration field, for error messages.

    Returns:
        The OpenSSL names, in the given order, duplicates and TLS 1.3 suites
        dropped. Empty when ``entries`` is empty.

    Raises:
        ConfigurationError: An entry is unknown, not allowed, or not a single
            name; or every entry is a TLS 1.3 suite, which Python cannot restrict.
        TypeError: An entry is not a :class:`str`.
    """
    selected: list[str] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise TypeError(f"{field} entries must be str, got {type(entry).__name__}")
        if not (entry.isascii() and entry.isprintable()):
            # Also keeps upper() honest: "\u017f".upper() == "S".
            raise ConfigurationError(
                f"cipher name with non-ASCII or control characters in {field}: {entry!r}"
            )
        name = _translate(entry, field)
        if name is not None and name not in selected:
            selected.append(name)
    if entries and not selected:
        raise ConfigurationError(
            f"{field} lists only TLS 1.3 suites, which Python's ssl module cannot restrict "
            "(all TLS 1.3 suites stay enabled); list TLS 1.2 suites, or leave ciphers empty"
        )
    return tuple(selected)
