"""Which addresses WebRTC's ICE may use: the gateway's host candidates and the browser's it will try.

aiortc gathers host candidates on every interface but loopback (aioice's ``get_host_addresses``) and has no
option to choose; ``WEBRTC_ICE_ADDRESSES`` names the addresses to gather on instead (127.0.0.1 for a
loopback-only setup, as in the tests). A gateway bound to loopback alone can reach only loopback
candidates, so the offer's others are dropped before aiortc sees them: it never tries them, and never
resolves a browser's mDNS (``.local``) candidate by multicast.
"""

from __future__ import annotations

import ipaddress

import aioice.ice

_original_host_addresses = aioice.ice.get_host_addresses


def parse_addresses(text: str) -> list[str]:
    """The comma-separated addresses of the setting, validated; empty: every interface."""
    addresses = [part.strip() for part in text.split(",") if part.strip()]
    for address in addresses:
        ipaddress.ip_address(address)  # raises ValueError for a name or a typo
    return addresses


def gather_on(addresses: list[str]) -> None:
    """Make aiortc gather host candidates on ``addresses`` only (empty: aioice's own choice)."""
    if not addresses:
        aioice.ice.get_host_addresses = _original_host_addresses
        return

    def chosen(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in addresses if (use_ipv4 and ipaddress.ip_address(a).version == 4)
                or (use_ipv6 and ipaddress.ip_address(a).version == 6)]

    aioice.ice.get_host_addresses = chosen


def loopback_only(addresses: list[str]) -> bool:
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def reachable_candidates(sdp: str, addresses: list[str]) -> str:
    """The offer without the candidates a gateway gathering on ``addresses`` cannot reach.

    Only a loopback-only gateway drops any: it keeps the loopback candidates (and every other line).
    """
    if not loopback_only(addresses):
        return sdp
    lines = sdp.splitlines()
    kept = [line for line in lines if not line.startswith("a=candidate:") or _is_loopback_candidate(line)]
    return "\r\n".join(kept) + "\r\n"


def _is_loopback_candidate(line: str) -> bool:
    # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...
    fields = line.split()
    if len(fields) < 6:
        return False
    try:
        return ipaddress.ip_address(fields[4]).is_loopback
    except ValueError:  # a hostname: an mDNS .local name, resolvable only by multicast
        return False
