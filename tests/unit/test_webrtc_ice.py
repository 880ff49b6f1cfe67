"""Which ICE candidates the WebRTC output uses (gateway/webrtc/ice.py)."""

from __future__ import annotations

import aioice.ice
import pytest

from gateway.webrtc import ice

OFFER = "\r\n".join([
    "v=0", "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "a=candidate:1 1 udp 2122260223 192.0.2.2 50000 typ host generation 0",
    "a=candidate:2 1 udp 2122194687 127.0.0.1 50001 typ host generation 0",
    "a=candidate:3 1 udp 2122129151 ::1 50002 typ host generation 0",
    "a=candidate:4 1 udp 2122063615 6f1c2b1e-3f2a.local 50003 typ host generation 0",
    "a=mid:0", "",
])


def test_a_loopback_only_gateway_keeps_only_the_offers_loopback_candidates() -> None:
    kept = ice.reachable_candidates(OFFER, ["127.0.0.1"])
    assert "127.0.0.1 50001" in kept and "::1 50002" in kept
    assert "192.0.2.2" not in kept and ".local" not in kept, "never tried, never resolved by multicast"
    assert "a=mid:0" in kept and kept.startswith("v=0\r\n")


def test_a_gateway_on_other_interfaces_passes_the_offer_unchanged() -> None:
    assert ice.reachable_candidates(OFFER, []) == OFFER
    assert ice.reachable_candidates(OFFER, ["192.0.2.2"]) == OFFER


def test_gathering_is_limited_to_the_named_addresses_and_restored_when_none_are_named() -> None:
    try:
        ice.gather_on(["127.0.0.1", "::1"])
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1", "::1"]
    finally:
        ice.gather_on([])
    assert aioice.ice.get_host_addresses is ice._original_host_addresses


def test_the_setting_names_addresses_only() -> None:
    assert ice.parse_addresses(" 127.0.0.1, ::1 ") == ["127.0.0.1", "::1"]
    assert ice.parse_addresses("") == []
    with pytest.raises(ValueError):
        ice.parse_addresses("localhost")
