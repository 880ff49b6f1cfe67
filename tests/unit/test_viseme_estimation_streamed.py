"""Speech arriving in 100 ms pieces (an agent's audio) is articulated almost as the whole utterance would be."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from processors.lipsync.core import ESTIMATE_CONTEXT_SAMPLES, estimate_in_context
from processors.lipsync.viseme_estimator import SAMPLE_RATE, VisemeEstimator
from processors.lipsync.visemes import Viseme
from processors.tts.engines.espeak_library import EspeakLibraryError, shared_library

SENTENCES = [("Maybe Pam will bring the map to Mabel.", "en-us+f3"),
             ("Father bought a large boat on Saturday.", "en-us"), ("مامان برای بابا یک بسته پسته خرید.", "fa+f3")]
PIECE = SAMPLE_RATE // 10  # 100 ms
Onsets = list[tuple[float, Viseme]]


@pytest.fixture(scope="module")
def estimator() -> VisemeEstimator:
    return VisemeEstimator.load()


def spoken(text: str, voice: str) -> np.ndarray:
    try:
        speech = shared_library().synthesize(text, voice, rate_wpm=165)
    except EspeakLibraryError as error:
        pytest.skip(f"libespeak-ng unavailable: {error}")
    audio = resample_poly(speech.pcm.astype(np.float32) / 32768.0, SAMPLE_RATE, speech.sample_rate)
    pad = np.zeros(SAMPLE_RATE // 5, np.float32)
    return np.concatenate([pad, audio.astype(np.float32), pad])


def shape_at(onsets: Onsets, t: float) -> Viseme:
    return [viseme for start, viseme in onsets if start <= t][-1]


def streamed(estimator: VisemeEstimator, audio: np.ndarray, *, with_context: bool) -> Onsets:
    timeline: Onsets = []
    context = np.zeros(0, np.float32)
    for start in range(0, len(audio), PIECE):
        piece = audio[start : start + PIECE]
        heard = context if with_context else np.zeros(0, np.float32)
        timeline += [(start / SAMPLE_RATE + t, v) for t, v in estimate_in_context(estimator.estimate, heard, piece)]
        context = np.concatenate([context, piece])[-ESTIMATE_CONTEXT_SAMPLES:]
    return timeline


def agreement(estimator: VisemeEstimator, *, with_context: bool) -> float:
    """Share of video frames (40 ms, at their middle) whose shape matches the whole utterance's estimate."""
    shares = []
    for text, voice in SENTENCES:
        audio = spoken(text, voice)
        whole, pieces = estimator.estimate(audio), streamed(estimator, audio, with_context=with_context)
        frames = len(audio) // 640
        shares.append(np.mean([shape_at(whole, (k + 0.5) * 0.04) == shape_at(pieces, (k + 0.5) * 0.04)
                               for k in range(frames)]))
    return float(np.mean(shares))


def test_100_ms_pieces_heard_with_their_past_agree_with_the_whole_utterance_on_most_frames(
        estimator: VisemeEstimator) -> None:
    with_context, alone = agreement(estimator, with_context=True), agreement(estimator, with_context=False)
    assert with_context >= 0.88, with_context
    assert with_context > alone + 0.05, f"the context is what makes pieces agree ({alone:.2f} alone)"


def test_the_shape_going_on_at_a_piece_start_opens_its_timeline(estimator: VisemeEstimator) -> None:
    audio = spoken(*SENTENCES[0])
    onsets = estimate_in_context(estimator.estimate, audio[:SAMPLE_RATE], audio[SAMPLE_RATE : SAMPLE_RATE + PIECE])
    assert onsets[0][0] == 0.0 and all(0.0 <= t < 0.1 for t, _ in onsets)
    assert [t for t, _ in onsets] == sorted(t for t, _ in onsets)
