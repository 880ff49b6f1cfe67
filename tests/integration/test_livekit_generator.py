"""The LiveKit Agents VideoGenerator (integrations/livekit) driven with real speech frames against the running stack."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

pytest.importorskip("livekit.agents", reason="the [livekit] extra is not installed")

from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd

from infra.broker import free_port
from integrations.livekit import AvatarUnavailable, AvatarVideoGenerator
from integrations.livekit.video_generator import Output
from producers.audio import AUDIBLE_PEAK
from tests.integration.stack import RunningStack
from tests.support.agent_audio import chunks, speech_pcm

pytestmark = pytest.mark.integration
RATE = 24_000


def agent_frames(pcm: np.ndarray, ms: int = 20) -> list[rtc.AudioFrame]:
    """The speech as a LiveKit agent's TTS hands it to its audio output: 20 ms AudioFrames."""
    return [rtc.AudioFrame(piece, RATE, 1, len(piece) // 2) for piece in chunks(pcm, RATE, ms)]


async def until_segment_end(generator: AvatarVideoGenerator, timeout_s: float = 30.0) -> list[Output]:
    items: list[Output] = []

    async def take() -> None:
        async for item in generator:
            items.append(item)
            if isinstance(item, AudioSegmentEnd):
                return

    await asyncio.wait_for(take(), timeout_s)
    return items


async def next_item(generator: AvatarVideoGenerator, timeout_s: float) -> Output:
    return await asyncio.wait_for(anext(aiter(generator)), timeout_s)


async def speak(generator: AvatarVideoGenerator, pcm: np.ndarray, *, end: bool = True) -> list[rtc.AudioFrame]:
    """Pushes the speech as the runner does (its frames as they come, then the segment's end); returns the frames."""
    frames = agent_frames(pcm)
    for frame in frames:
        await generator.push_audio(frame)
    if end:
        await generator.push_audio(AudioSegmentEnd())
    return frames


async def test_agent_audio_comes_back_as_rgba_frames_each_followed_by_its_own_audio_then_a_segment_end(
        stack: RunningStack) -> None:
    pcm = speech_pcm(RATE)[: 2 * RATE]
    generator = AvatarVideoGenerator(url=stack.ws, avatar_id="sample")
    try:
        await speak(generator, pcm)
        items = await until_segment_end(generator)
    finally:
        await generator.aclose()
    assert isinstance(items[-1], AudioSegmentEnd) and len(items) % 2 == 1
    assert all(isinstance(f, rtc.VideoFrame) for f in items[0:-1:2]), "a video frame, then its audio, ..."
    video = [f for f in items[0:-1:2] if isinstance(f, rtc.VideoFrame)]
    audio = [f for f in items[1:-1:2] if isinstance(f, rtc.AudioFrame)]
    assert len(video) == len(audio) == len(items) // 2
    assert all(f.type == rtc.VideoBufferType.RGBA and (f.width, f.height) == (512, 512)
               and len(f.data) == 512 * 512 * 4 for f in video)
    assert all(f.sample_rate == RATE and f.num_channels == 1 and f.samples_per_channel == RATE // 25 for f in audio)
    assert abs(len(video) * 0.04 - len(pcm) / RATE) <= 0.2, "one video frame per 40 ms of the speech"
    returned = np.concatenate([np.frombuffer(f.data, np.int16) for f in audio])
    # The service starts the utterance one frame before its first audible sample (leading silence is not sent).
    start = max(0, int(np.flatnonzero(np.abs(pcm.astype(np.int32)) >= AUDIBLE_PEAK)[0]) - RATE // 25)
    spoken = pcm[start:]
    assert np.array_equal(returned[: len(spoken)], spoken) and not returned[len(spoken) :].any(), \
        "each frame's audio is the agent's own, sample for sample, on the video's clock"
    assert (np.frombuffer(video[len(video) // 2].data, np.uint8)[3::4] == 255).all(), "opaque RGBA"


async def test_two_segments_in_a_row_each_end_after_their_own_frames(stack: RunningStack) -> None:
    first, second = speech_pcm(RATE)[: RATE // 2], speech_pcm(RATE)[RATE : 2 * RATE]
    generator = AvatarVideoGenerator(url=stack.ws, avatar_id="sample")
    try:
        await speak(generator, first)
        await speak(generator, second)
        one, two = await until_segment_end(generator), await until_segment_end(generator)
    finally:
        await generator.aclose()
    assert abs((len(one) - 1) / 2 * 0.04 - 0.5) <= 0.1 and abs((len(two) - 1) / 2 * 0.04 - 1.0) <= 0.1


async def test_clear_buffer_stops_the_output_at_once_and_the_next_segment_plays(stack: RunningStack) -> None:
    long_speech, short_speech = speech_pcm(RATE), speech_pcm(RATE)[: RATE // 2]
    generator = AvatarVideoGenerator(url=stack.ws, avatar_id="sample")
    try:
        await speak(generator, long_speech, end=False)  # still talking: most of its video is still to come
        assert isinstance(await next_item(generator, 15), rtc.VideoFrame)
        started = time.monotonic()
        await generator.clear_buffer()
        cleared_in = time.monotonic() - started
        with pytest.raises(TimeoutError):  # nothing more of the cleared segment
            await next_item(generator, 1.5)
        await speak(generator, short_speech)
        after = await until_segment_end(generator)
    finally:
        await generator.aclose()
    assert cleared_in < 0.2, f"clear_buffer took {cleared_in:.3f} s"
    video = [f for f in after if isinstance(f, rtc.VideoFrame)]
    assert abs(len(video) * 0.04 - 0.5) <= 0.1, "after the clear only the next segment's frames"


async def test_without_the_service_the_agent_keeps_its_voice_and_the_error_says_why() -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws/stream"
    pcm = speech_pcm(RATE)[: RATE // 2]
    generator = AvatarVideoGenerator(url=url, avatar_id="sample")
    with pytest.raises(AvatarUnavailable, match="unreachable"):
        await generator.start()
    generator = AvatarVideoGenerator(url=url, avatar_id="sample")
    try:
        frames = await speak(generator, pcm)
        items = await until_segment_end(generator, timeout_s=10)
    finally:
        await generator.aclose()
    assert all(a is b for a, b in zip(items[:-1], frames, strict=True)), "the agent's own frames, unchanged"
    assert isinstance(items[-1], AudioSegmentEnd), "... and the end of the segment, so the agent hears it played"
    assert generator.last_error is not None and "unreachable" in generator.last_error and url in generator.last_error
    assert not generator.connected


async def test_the_frames_play_through_livekits_own_av_synchronizer_in_real_time(stack: RunningStack) -> None:
    """What the AvatarRunner does with the frames (without a room): its native sources accept them, paced at 25 fps."""
    pcm = speech_pcm(RATE)[: RATE]
    generator = AvatarVideoGenerator(url=stack.ws, avatar_id="sample")
    audio_source = rtc.AudioSource(RATE, 1, queue_size_ms=100)
    video_source = rtc.VideoSource(512, 512)
    av_sync = rtc.AVSynchronizer(audio_source=audio_source, video_source=video_source, video_fps=25,
                                 video_queue_size_ms=100)
    try:
        await speak(generator, pcm)
        items = await until_segment_end(generator)
        started = time.monotonic()
        for item in items:
            if not isinstance(item, AudioSegmentEnd):  # the runner tells the agent instead
                await av_sync.push(item)
        await audio_source.wait_for_playout()
        played_s = time.monotonic() - started
    finally:
        await generator.aclose()
        await av_sync.aclose()
        await audio_source.aclose()
        await video_source.aclose()
    audio_s = sum(f.duration for f in items if isinstance(f, rtc.AudioFrame))
    assert audio_s >= 0.9 and abs(played_s - audio_s) <= 0.25, f"{audio_s:.2f} s of audio played in {played_s:.2f} s"


async def test_a_silent_segment_still_ends_so_the_agent_does_not_wait_and_the_error_says_why(
        stack: RunningStack) -> None:
    generator = AvatarVideoGenerator(url=stack.ws, avatar_id="sample")
    try:
        await speak(generator, np.zeros(RATE // 2, np.int16))
        items = await until_segment_end(generator, timeout_s=15)
        still_connected = generator.connected
    finally:
        await generator.aclose()
    assert len(items) == 1 and isinstance(items[0], AudioSegmentEnd), "no frame, but the end of the segment"
    assert generator.last_error is not None and "silent_audio" in generator.last_error
    assert still_connected, "the session stays usable"


async def test_a_lost_connection_leaves_the_voice_ends_the_segment_and_the_next_segment_has_the_face_again(
        stack: RunningStack) -> None:
    generator = AvatarVideoGenerator(url=stack.ws, avatar_id="sample", retry_interval_s=0)
    speech = speech_pcm(RATE)
    try:
        for frame in agent_frames(speech[:RATE]):
            await generator.push_audio(frame)
        link = generator._link
        assert link._ws is not None
        link._ws.transport.abort()  # the network under the connection goes away (a real socket, cut)
        deadline = time.monotonic() + 10
        while generator.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not generator.connected and generator.last_error is not None
        assert "closed the connection" in generator.last_error
        rest = agent_frames(speech[RATE : 2 * RATE])
        for frame in rest:
            await generator.push_audio(frame)
        await generator.push_audio(AudioSegmentEnd())
        dropped = await until_segment_end(generator)
        await speak(generator, speech[: RATE // 2])
        again = await until_segment_end(generator)
    finally:
        await generator.aclose()
    voice = [item for item in dropped if isinstance(item, rtc.AudioFrame) and item.samples_per_channel == 480]
    assert all(a is b for a, b in zip(voice, rest, strict=True)), "the rest of the segment: the agent's own frames"
    assert isinstance(dropped[-1], AudioSegmentEnd)
    assert abs(len([f for f in again if isinstance(f, rtc.VideoFrame)]) * 0.04 - 0.5) <= 0.1, "the face is back"


async def test_a_whole_sentence_in_one_frame_longer_than_the_gateways_message_limit_comes_back_whole(
        stack: RunningStack) -> None:
    pcm = speech_pcm(RATE)  # 5.5 s: over AUDIO_MAX_MESSAGE_S (5 s) were it sent as one message
    piece = pcm.astype("<i2").tobytes()
    generator = AvatarVideoGenerator(url=stack.ws, avatar_id="sample")
    try:
        await generator.push_audio(rtc.AudioFrame(piece, RATE, 1, len(pcm)))
        await generator.push_audio(AudioSegmentEnd())
        items = await until_segment_end(generator)
        error = generator.last_error
    finally:
        await generator.aclose()
    returned = np.concatenate([np.frombuffer(f.data, np.int16) for f in items if isinstance(f, rtc.AudioFrame)])
    start = max(0, int(np.flatnonzero(np.abs(pcm.astype(np.int32)) >= AUDIBLE_PEAK)[0]) - RATE // 25)
    assert error is None and np.array_equal(returned[: len(pcm) - start], pcm[start:])
