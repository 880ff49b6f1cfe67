"""This gateway's WebRTC peers: an offer answered, the session's stream tapped, its chunks played, interrupts heard.

A peer reads its session through the gateway's one session-stream consumer as a tap beside the session's
WebSocket (``SessionRegistry.tap``): adding it never moves where the WebSocket reads. Interrupts are heard
where every processor hears them, on ``avatar.control``: the WebSocket protocol (gateway/ws.py) needs no
change, and a peer on one gateway stops when the WebSocket on another is interrupted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import SessionDescription
from confluent_kafka import OFFSET_END
from pydantic import ValidationError

from consumers.fmp4_demux import Sample
from consumers.session_reader import Chunk, FirstCopies, StreamItem, decode_session_record
from consumers.session_stream import Record
from gateway.sessions import SessionRegistry
from gateway.webrtc import ice
from gateway.webrtc.media import RequestMedia, UndecodableChunk, VideoItem
from gateway.webrtc.playout import Playout
from gateway.webrtc.tracks import MediaClock, PlayoutAudioTrack, PlayoutFeed, PlayoutVideoTrack
from infra.settings import Settings
from schemas.common import new_id
from schemas.control import Interrupt

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_DECODERS = 8  # requests decoded at once by one peer; the pipeline sends a session's requests in turn
MAX_REQUESTS_REMEMBERED = 256


def preferred_video_codecs() -> list[RTCRtpCodecCapability]:
    """aiortc's video codecs, H.264 with packetization-mode=1 first: constrained baseline (the profile the
    lip-sync's libx264 writes, ``42c0xx``), then baseline, which a constrained-baseline stream also is; then
    VP8 (re-encoded), and RTX for each."""
    codecs = RTCRtpSender.getCapabilities("video").codecs

    def rank(codec: RTCRtpCodecCapability) -> int:
        if codec.mimeType.lower() != "video/h264" or codec.parameters.get("packetization-mode") != "1":
            return 3 if codec.mimeType.lower() != "video/rtx" else 4
        return 0 if str(codec.parameters.get("profile-level-id", "")).lower().startswith("42e0") else 1
    return sorted(codecs, key=rank)


def sent_video_codec(answer_sdp: str) -> str | None:
    """The codec the answer sends video with (its video section's first payload type), e.g. ``video/H264``."""
    for media in SessionDescription.parse(answer_sdp).media:
        if media.kind == "video" and media.rtp.codecs:
            return media.rtp.codecs[0].mimeType
    return None


class PeerRefused(Exception):
    """The offer cannot be answered (``code`` is the error code, ``status`` the HTTP status)."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass
class PeerStats:
    chunks: int = 0
    undecodable: int = 0
    dropped_stopped: int = 0
    decode_s: float = 0.0  # from each chunk's turn to its last frame queued (wall time)


@dataclass
class WebRtcPeer:
    """One browser's RTCPeerConnection, fed by one session's stream."""

    peer_id: str
    session_id: str
    connection: RTCPeerConnection
    feed: PlayoutFeed
    video: PlayoutVideoTrack
    audio: PlayoutAudioTrack
    loop: asyncio.AbstractEventLoop
    decoding: ThreadPoolExecutor
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    stats: PeerStats = field(default_factory=PeerStats)
    _inbox: asyncio.Queue[StreamItem] = field(default_factory=asyncio.Queue)
    _copies: FirstCopies = field(default_factory=FirstCopies)
    owner: str | None = None  # the session's user (None: the admin's), so an interrupt needs no database look-up
    passthrough: bool = False  # H.264 negotiated: the lip-sync's own H.264 is sent, not decoded and re-encoded
    _decoders: dict[str, RequestMedia] = field(default_factory=dict)
    # every request a chunk of arrived for (bounded): "interrupt all" also stops one whose media is not placed yet
    _requests: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _pump: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._pump = asyncio.create_task(self._run(), name=f"webrtc-{self.peer_id}")

    def on_record(self, record: Record) -> None:
        """Called on the consumer's thread: decode the envelope, hand over to the event loop."""
        item = decode_session_record(record.value, record.offset)
        if item is not None:
            self.loop.call_soon_threadsafe(self._inbox.put_nowait, item)

    def interrupt(self, request_ids: list[str] | None) -> int:
        """Stop the named requests (None: all): their queued frames and audio are dropped now."""
        playout = self.feed.playout
        dropped = playout.flush(list(self._requests) if request_ids is None else request_ids)
        for request_id in list(self._decoders):
            if playout.is_stopped(request_id):
                del self._decoders[request_id]
        self.feed.changed()
        return dropped

    async def _run(self) -> None:
        while True:
            item = await self._inbox.get()
            if not isinstance(item, Chunk) or not self._copies.first(item):
                continue
            self._requests[item.request_id] = None
            self._requests.move_to_end(item.request_id)
            while len(self._requests) > MAX_REQUESTS_REMEMBERED:
                self._requests.popitem(last=False)
            try:
                await self._play(item)
            except Exception:
                log.exception("webrtc peer failed to play a chunk", extra={"peer": self.peer_id})

    async def _play(self, chunk: Chunk) -> None:
        """Demux a chunk and queue it: its audio first (it places the request), then its video. Passed-through
        H.264 is queued at once, every access unit of the chunk; decoded frames (VP8 fallback) one after the
        other, each as soon as it is decoded. Decoding runs off the event loop (it carries the RTP and the
        WebSockets) and off aiortc's encoding threads."""
        playout = self.feed.playout
        if playout.is_stopped(chunk.request_id):
            self.stats.dropped_stopped += 1
            return
        decoder = self._decoders.get(chunk.request_id)
        if decoder is None:
            decoder = self._decoders[chunk.request_id] = RequestMedia(passthrough=self.passthrough)
            while len(self._decoders) > MAX_DECODERS:
                self._decoders.pop(next(iter(self._decoders)))
        started = time.perf_counter()
        try:
            demuxed = await self._off_loop(partial(decoder.demux, chunk.data, is_last=chunk.is_last))
            # An interrupt may come at any await: the playout refuses a stopped request's media itself.
            playout.add_audio(chunk.request_id, demuxed.audio, self.feed.clock.now())
            samples: list[Sample | None] = [*demuxed.video, *([None] if chunk.is_last else [])]
            if self.passthrough:  # no decoding: a chunk's access units take microseconds
                self._queue_video(chunk.request_id, [item for sample in samples for item in decoder.video(sample)])
            else:
                for sample in samples:
                    self._queue_video(chunk.request_id, await self._off_loop(partial(decoder.video, sample)))
        except UndecodableChunk as error:
            self.stats.undecodable += 1
            log.info("webrtc peer skips a chunk", extra={"peer": self.peer_id, "error": str(error)})
            return
        finally:
            self.stats.decode_s += time.perf_counter() - started
        if chunk.is_last:
            self._decoders.pop(chunk.request_id, None)
        self.stats.chunks += 1

    def _queue_video(self, request_id: str, items: list[tuple[float, VideoItem]]) -> None:
        now = self.feed.clock.now()
        for rel_s, item in items:
            self.feed.playout.add_video(request_id, rel_s, item, now)
        self.feed.changed()

    async def _off_loop(self, work: Callable[[], T]) -> T:
        return await self.loop.run_in_executor(self.decoding, work)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        self.video.stop()
        self.audio.stop()
        await self.connection.close()


class WebRtcHub:
    """Answers offers for sessions, holds the peers, and flushes them on their session's interrupts."""

    def __init__(self, settings: Settings, registry: SessionRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.addresses = ice.parse_addresses(settings.webrtc_ice_addresses)
        self.peers: dict[str, WebRtcPeer] = {}
        self._closing: set[asyncio.Future[None]] = set()
        self.decoding = ThreadPoolExecutor(max_workers=2, thread_name_prefix="webrtc-decode")
        self.loop = asyncio.get_running_loop()
        ice.gather_on(self.addresses)
        registry.stream.listen(settings.kafka_control_topic, self._on_control, OFFSET_END)

    async def answer(self, session_id: str, sdp: str, kind: str,
                     owner: str | None = None) -> tuple[str, RTCSessionDescription]:
        """A peer for the session (already checked to be the caller's, ``owner``'s): its id and the SDP answer."""
        if len(self.peers) >= self.settings.webrtc_max_peers:
            raise PeerRefused("webrtc_busy", f"this gateway already serves {len(self.peers)} WebRTC peers "
                              "(WEBRTC_MAX_PEERS); use the WebSocket's MSE stream", 503)
        if kind != "offer":
            raise PeerRefused("invalid_request", "type: must be 'offer'", 422)
        connection = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # loopback/LAN only: no STUN, no TURN
        peer = self._new_peer(session_id, connection)
        peer.owner = owner
        try:
            offer = RTCSessionDescription(sdp=ice.reachable_candidates(sdp, self.addresses), type="offer")
            self._add_transceivers(peer)
            await connection.setRemoteDescription(offer)
            self._check_sections(peer)
            await connection.setLocalDescription(await connection.createAnswer())
            peer.passthrough = sent_video_codec(connection.localDescription.sdp) == "video/H264"
            peer.feed.playout.skip_late = not peer.passthrough
        except Exception as error:  # aiortc's SDP parser raises what it meets (ValueError, IndexError, ...)
            await connection.close()
            log.info("webrtc offer refused", extra={"session": session_id, "error": repr(error)})
            raise PeerRefused("invalid_offer", f"the SDP offer was refused: {error!r}"[:300], 400) from error
        self.peers[peer.peer_id] = peer
        self.registry.tap(session_id, peer.on_record)
        peer.start()
        connection.on("connectionstatechange", self._closer(peer))
        log.info("webrtc peer open", extra={"peer": peer.peer_id, "session": session_id,
                                            "video": "h264 pass-through" if peer.passthrough else "vp8 re-encode"})
        return peer.peer_id, connection.localDescription

    def _new_peer(self, session_id: str, connection: RTCPeerConnection) -> WebRtcPeer:
        clock = MediaClock()
        playout: Playout = Playout(lead_s=self.settings.webrtc_lead_ms / 1000, fps=self.settings.video_fps)
        feed = PlayoutFeed(playout, clock)
        return WebRtcPeer(new_id(), session_id, connection, feed, PlayoutVideoTrack(feed), PlayoutAudioTrack(feed),
                          self.loop, self.decoding)

    @staticmethod
    def _add_transceivers(peer: WebRtcPeer) -> None:
        """A sending transceiver per track, made before the offer is read so that it takes the offer's section
        and answers with H.264 first (the lip-sync's own video, passed through), VP8 only if the browser
        offers no H.264. aiortc gives every sender of a connection the same stream id, so the browser syncs
        the two tracks."""
        video = peer.connection.addTransceiver(peer.video, direction="sendonly")
        video.setCodecPreferences(preferred_video_codecs())
        peer.connection.addTransceiver(peer.audio, direction="sendonly")

    @staticmethod
    def _check_sections(peer: WebRtcPeer) -> None:
        """The offer must have a video and an audio section (a browser offers them recvonly) to send on."""
        missing = {t.kind for t in peer.connection.getTransceivers() if t.mid is None}
        if missing:
            raise ValueError(f"the offer has no {' or '.join(sorted(missing))} section to receive on")

    def _closer(self, peer: WebRtcPeer) -> Callable[[], None]:
        def on_state() -> None:
            if peer.connection.connectionState in ("failed", "closed"):
                task = asyncio.ensure_future(self.close(peer.peer_id))
                self._closing.add(task)  # held until done: the loop keeps only weak references to tasks
                task.add_done_callback(self._closing.discard)
        return on_state

    def interrupt(self, session_id: str, request_ids: list[str] | None) -> int:
        """Flush every peer of the session; how many queued items were dropped."""
        return sum(peer.interrupt(request_ids) for peer in list(self.peers.values()) if peer.session_id == session_id)

    def _on_control(self, record: Record) -> None:
        """On the consumer's thread: an interrupt of a session with a peer here is applied on the event loop."""
        try:
            message = Interrupt.model_validate_json(record.value)
        except ValidationError:
            return
        for peer in list(self.peers.values()):
            # "all requests" is replayed history for a peer that started after it was sent
            if peer.session_id == message.session_id and (message.request_ids or message.ts_ms >= peer.started_ms):
                self.loop.call_soon_threadsafe(peer.interrupt, message.request_ids or None)

    def peer_of(self, peer_id: str, session_id: str) -> WebRtcPeer | None:
        peer = self.peers.get(peer_id)
        return peer if peer is not None and peer.session_id == session_id else None

    async def close(self, peer_id: str) -> None:
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return
        self.registry.untap(peer.session_id, peer.on_record)
        await peer.close()
        log.info("webrtc peer closed", extra={"peer": peer_id, "stats": vars(peer.stats)})

    async def close_all(self) -> None:
        for peer_id in list(self.peers):
            await self.close(peer_id)
        self.decoding.shutdown(wait=False, cancel_futures=True)
