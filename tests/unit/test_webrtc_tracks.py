"""The WebRTC tracks (gateway/webrtc/tracks.py): what they hand aiortc, stamped on the playout's clock."""

from __future__ import annotations

import av
import numpy as np
from av.packet import Packet
from av.video.frame import VideoFrame

from gateway.webrtc.playout import AUDIO_BLOCK, AUDIO_RATE, VIDEO_CLOCK, AudioBlock, Playout
from gateway.webrtc.tracks import VIDEO_TIME_BASE, MediaClock, PlayoutAudioTrack, PlayoutFeed, PlayoutVideoTrack


def feed() -> PlayoutFeed:
    return PlayoutFeed(Playout(), MediaClock())


def test_an_audio_block_becomes_one_opus_packet_stamped_with_its_place_and_silence_shrinks_to_dtx() -> None:
    track = PlayoutAudioTrack(feed())
    rng = np.random.default_rng(0)
    sizes = []
    for index in range(30):
        speech = (rng.standard_normal(AUDIO_BLOCK) * 3000).astype(np.int16)
        pcm = speech if index < 5 else np.zeros(AUDIO_BLOCK, np.int16)
        packet = track.encode(AudioBlock(AUDIO_RATE + index * AUDIO_BLOCK, pcm, silent=index >= 5))
        assert isinstance(packet, Packet) and packet.pts == AUDIO_RATE + index * AUDIO_BLOCK
        sizes.append(packet.size)
    assert min(sizes[:5]) > 75, "speech"
    assert max(sizes[-5:]) <= 2, "DTX: a byte or two a packet after a while of silence"


async def test_the_video_track_hands_over_a_queued_frame_with_its_clock_time_as_pts() -> None:
    shared = feed()
    track = PlayoutVideoTrack(shared)
    frame = VideoFrame(16, 16, "yuv420p")
    at = shared.clock.now()
    shared.playout.add_video("r1", 0.0, frame, now=at)
    shared.changed()
    sent = await track.recv()
    assert sent is frame and sent.pts == round(at * VIDEO_CLOCK) and track.frames_sent == 1


async def test_the_video_track_hands_over_an_h264_packet_as_it_is_stamped_on_the_90_khz_clock() -> None:
    shared = feed()
    track = PlayoutVideoTrack(shared)
    packet = av.Packet(b"\x00\x00\x00\x01\x65\x88")
    at = shared.clock.now() + 0.01
    shared.playout.add_video("r1", 0.0, packet, now=at)
    shared.changed()
    sent = await track.recv()
    assert sent is packet and sent.pts == round(at * VIDEO_CLOCK) and sent.time_base == VIDEO_TIME_BASE


async def test_the_audio_track_sends_continuous_blocks_speech_where_queued() -> None:
    shared = feed()
    track = PlayoutAudioTrack(shared)
    first = await track.recv()
    shared.playout.add_audio("r1", np.full(2 * AUDIO_BLOCK, 1000, np.int16), now=shared.clock.now())
    second, third = await track.recv(), await track.recv()
    stamps = [packet.pts for packet in (first, second, third)]
    assert None not in stamps
    assert np.diff(np.array(stamps)).tolist() == [AUDIO_BLOCK, AUDIO_BLOCK], "no gap"
    assert track.speech_blocks_sent >= 1 and track.blocks_sent == 3
