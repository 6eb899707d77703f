"""Which peers may send a PROXY protocol header: ``Listener(trusted_proxies=...)``.

A PROXY header says who the real client is, and a service believes it
(``caller.remote_host`` feeds allow-lists, rate limits, audit logs). So only
the load balancer may send one. The check is made on the TCP peer's own
address, the one ``accept()`` returned, before a single byte of the
connection is read.

IPv4 peers that reach an IPv6 socket as IPv4-mapped addresses
(``::ffff:10.0.0.1``) are matched as the IPv4 address they are. A peer
without an IP address (a UNIX-domain socket) is trusted: who may connect
to it is decided by the file's permissions, not by an address, and load
balancers commonly reach local backends that way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Union

from ._errors import ConfigurationError

__all__ = ["TrustedProxies", "TrustedSource", "parse_trusted_proxies"]

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]  # noqa: UP007 - 3.10
#: One entry of ``trusted_proxies``: an address or network, as text or as an ``ipaddress`` object.
TrustedSource = Union[  # noqa: UP007 - 3.10
    str,
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
]


class TrustedProxies:
    """A parsed, immutable ``trusted_proxies`` list; ``peer in trusted`` tells."""

    __slots__ = ("_networks",)

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self._networks = tuple(networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(network) for network in self._networks]!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrustedProxies) and other._networks == self._networks

    def __hash__(self) -> int:
        return hash(self._networks)

    @property
    def networks(self) -> tuple[IPNetwork, ...]:
        """The networks, in the order given."""
        return self._networks

    def __contains__(self, host: object) -> bool:
        """Whether a peer at ``host`` (an IP address string; ``""`` for none) may send a header."""
        if not isinstance(host, str):
            return False
        if not host:
            return True  # no IP address: a UNIX-domain peer (see the module docstring)
        try:
            address = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return True  # not an IP address either: a UNIX socket path
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)


def parse_trusted_proxies(value: object) -> TrustedProxies:
    """Check a ``trusted_proxies`` value and return it parsed.

    Raises:
        TypeError: not a list or tuple, or an entry of another type.
        ConfigurationError: an entry that is not an IP address or network
            (the message names it), or an empty list.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
        raise TypeError(
            f"trusted_proxies must be a list of addresses or networks, got {type(value).__name__}"
        )
    if not value:
        raise ConfigurationError(
            "trusted_proxies is empty: no peer could send a PROXY header"
            " (use None to trust every peer)"
        )
    return TrustedProxies(_network(entry) for entry in value)


def _network(entry: object) -> IPNetwork:
    if isinstance(entry, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return _unmapped(entry)
    if isinstance(entry, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return _unmapped(ipaddress.ip_network(entry))
    if not isinstance(entry, str):
        raise TypeError(
            f"trusted_proxies entries must be str or ipaddress objects, got {type(entry).__name__}"
        )
    try:
        # strict=False would quietly turn "10.0.0.1/8" into 10.0.0.0/8; a
        # host address with a prefix is more likely a typo than a network.
        return _unmapped(ipaddress.ip_network(entry.strip(), strict=True))
    except ValueError as exc:
        raise ConfigurationError(
            f"trusted_proxies entry {entry!r} is not an IP address or network: {exc}"
        ) from None


def _unmapped(network: IPNetwork) -> IPNetwork:
    """``::ffff:10.0.0.0/104`` is the IPv4 network it maps; peers are compared unmapped too."""
    if isinstance(network, ipaddress.IPv6Network):
        mapped = network.network_address.ipv4_mapped
        if mapped is not None and network.prefixlen >= 96:
            return ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
    return network
