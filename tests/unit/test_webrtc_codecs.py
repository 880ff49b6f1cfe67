"""Which video codec a WebRTC answer sends (gateway/webrtc/peers.py): H.264 passed through, VP8 only without it."""

from __future__ import annotations

from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription

from gateway.webrtc.peers import preferred_video_codecs, sent_video_codec
from gateway.webrtc.playout import Playout
from gateway.webrtc.tracks import MediaClock, PlayoutAudioTrack, PlayoutFeed, PlayoutVideoTrack


async def answered_codec(offered_video: list[str] | None) -> str | None:
    """The video codec of the gateway's answer to an offer of ``offered_video`` (mime types; None: all)."""
    browser, gateway = RTCPeerConnection(), RTCPeerConnection()
    try:
        video = browser.addTransceiver("video", direction="recvonly")
        capabilities = RTCRtpReceiver.getCapabilities("video")
        if offered_video is not None and capabilities is not None:
            video.setCodecPreferences([c for c in capabilities.codecs if c.mimeType in offered_video])
        browser.addTransceiver("audio", direction="recvonly")
        await browser.setLocalDescription(await browser.createOffer())
        feed = PlayoutFeed(Playout(), MediaClock())
        sending = gateway.addTransceiver(PlayoutVideoTrack(feed), direction="sendonly")
        sending.setCodecPreferences(preferred_video_codecs())  # as WebRtcHub._add_transceivers does
        gateway.addTransceiver(PlayoutAudioTrack(feed), direction="sendonly")
        await gateway.setRemoteDescription(RTCSessionDescription(browser.localDescription.sdp, "offer"))
        await gateway.setLocalDescription(await gateway.createAnswer())
        return sent_video_codec(gateway.localDescription.sdp)
    finally:
        await browser.close()
        await gateway.close()


def test_h264_with_packetization_mode_1_and_constrained_baseline_comes_first() -> None:
    first = preferred_video_codecs()[0]
    assert first.mimeType == "video/H264" and first.parameters["packetization-mode"] == "1"
    assert str(first.parameters["profile-level-id"]).startswith("42e0")
    assert [c.mimeType for c in preferred_video_codecs()][-1] == "video/rtx"


async def test_an_offer_with_h264_is_answered_with_h264_even_when_vp8_is_listed_first() -> None:
    assert await answered_codec(None) == "video/H264"
    assert await answered_codec(["video/VP8", "video/H264", "video/rtx"]) == "video/H264"


async def test_an_offer_without_h264_falls_back_to_vp8() -> None:
    assert await answered_codec(["video/VP8", "video/rtx"]) == "video/VP8"
