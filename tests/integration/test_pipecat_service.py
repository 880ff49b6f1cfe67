"""The pipecat service (integrations/pipecat) in pipecat's own test pipeline, against the running stack."""

from __future__ import annotations

import numpy as np
import pytest

pipecat = pytest.importorskip("pipecat", reason="the [pipecat] extra is not installed")

from pipecat.frames.frames import (  # noqa: E402
    ErrorFrame,
    InterruptionFrame,
    MetricsFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.metrics.metrics import TTFBMetricsData  # noqa: E402
from pipecat.pipeline.worker import PipelineParams  # noqa: E402
from pipecat.tests.utils import SleepFrame, run_test  # noqa: E402

from infra.broker import free_port  # noqa: E402
from integrations.pipecat import AvatarVideoService  # noqa: E402
from producers.audio import AUDIBLE_PEAK  # noqa: E402
from tests.integration.stack import RunningStack  # noqa: E402
from tests.support.agent_audio import chunks, speech_pcm  # noqa: E402

pytestmark = pytest.mark.integration
RATE = 24_000


def tts_frames(pcm: np.ndarray) -> list[TTSAudioRawFrame]:
    return [TTSAudioRawFrame(audio=piece, sample_rate=RATE, num_channels=1) for piece in chunks(pcm, RATE)]


async def test_tts_audio_comes_back_as_images_each_followed_by_the_audio_it_shows(stack: RunningStack) -> None:
    pcm = speech_pcm(RATE)[: 2 * RATE]
    service = AvatarVideoService(url=stack.ws, avatar_id="sample")
    down, _up = await run_test(service, frames_to_send=[TTSStartedFrame(), *tts_frames(pcm), TTSStoppedFrame()],
                               pipeline_params=PipelineParams(enable_metrics=True), start_timeout=15)
    media = [f for f in down if isinstance(f, OutputImageRawFrame | TTSAudioRawFrame)]
    assert all(isinstance(f, OutputImageRawFrame) for f in media[0::2]), "an image, then its audio, ..."
    images = [f for f in media[0::2] if isinstance(f, OutputImageRawFrame) and f.sync_with_audio]
    audio = [f for f in media[1::2] if isinstance(f, TTSAudioRawFrame) and f.sample_rate == RATE]
    assert len(images) == len(audio) == len(media) // 2 and all(f.num_frames == RATE // 25 for f in audio)
    assert all(f.size == (512, 512) and f.format == "RGB" and len(f.image) == 512 * 512 * 3 for f in images)
    assert abs(len(images) * 0.04 - len(pcm) / RATE) <= 0.2, "one image per 40 ms of the speech"
    returned = np.concatenate([np.frombuffer(f.audio, np.int16) for f in audio])
    # The service starts the utterance one frame before its first audible sample (leading silence is not sent).
    start = max(0, int(np.flatnonzero(np.abs(pcm.astype(np.int32)) >= AUDIBLE_PEAK)[0]) - RATE // 25)
    spoken = pcm[start:]
    assert np.array_equal(returned[: len(spoken)], spoken) and not returned[len(spoken) :].any(), \
        "each image's audio is the agent's own, sample for sample, on the video's clock"
    ttfb = [d for f in down if isinstance(f, MetricsFrame) for d in f.data if isinstance(d, TTFBMetricsData)]
    measured = [d.value for d in ttfb if d.value > 0]  # pipecat also reports an initial 0 at start
    assert len(measured) == 1 and measured[0] < 10, "time from the first audio to the first image is reported"


async def test_an_interruption_drops_the_rest_of_the_utterance_and_the_next_one_plays(stack: RunningStack) -> None:
    long_speech, short_speech = speech_pcm(RATE), speech_pcm(RATE)[: RATE // 2]
    service = AvatarVideoService(url=stack.ws, avatar_id="sample")
    frames = [TTSStartedFrame(), *tts_frames(long_speech), SleepFrame(sleep=1.0), InterruptionFrame(),
              SleepFrame(sleep=1.0), TTSStartedFrame(), *tts_frames(short_speech), TTSStoppedFrame()]
    down, _up = await run_test(service, frames_to_send=frames, start_timeout=15)
    cut = next(i for i, f in enumerate(down) if isinstance(f, InterruptionFrame))
    before = [f for f in down[:cut] if isinstance(f, OutputImageRawFrame)]
    after = [f for f in down[cut:] if isinstance(f, OutputImageRawFrame)]
    assert 0 < len(before) < len(long_speech) / RATE / 0.04, "the first utterance was cut short"
    assert abs(len(after) * 0.04 - 0.5) <= 0.1, "after the interruption only the second utterance's frames"


async def test_without_the_service_the_agent_keeps_its_voice_and_is_told_why() -> None:
    pcm = speech_pcm(RATE)[: RATE // 2]
    service = AvatarVideoService(url=f"ws://127.0.0.1:{free_port()}/ws/stream", avatar_id="sample")
    down, up = await run_test(service, frames_to_send=[TTSStartedFrame(), *tts_frames(pcm), TTSStoppedFrame()],
                              start_timeout=15)
    passed = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert b"".join(f.audio for f in passed) == pcm.astype("<i2").tobytes(), "the TTS audio, unchanged"
    assert not [f for f in down if isinstance(f, OutputImageRawFrame)]
    assert any(isinstance(f, ErrorFrame) and "unreachable" in f.error for f in up)
