"""The lip-sync quality measure: real speech through the embedded engine correlates, a frozen mouth does not."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from processors.lipsync.engines.base import SAMPLES_PER_FRAME, RenderJob
from processors.lipsync.engines.embedded import EmbeddedEngine
from schemas.avatar import RgbFrame
from tests.support.envelope_measure import lagged_correlation, mouth_envelope_correlation
from tests.unit.face_fixtures import astronaut_photo, espeak_speech

PERSIAN = "سلام، حال شما چطور است؟ امروز هوا خیلی خوب است."
ENGLISH = "Good morning! The weather is lovely today, so we will walk to the old harbour."


def rendered(text: str, voice: str) -> tuple[list[RgbFrame], npt.NDArray[np.float32]]:
    speech = espeak_speech(text, voice)
    n_frames = speech.shape[0] // SAMPLES_PER_FRAME
    job = RenderJob(avatar=astronaut_photo(), audio=speech, first_frame=0, n_frames=n_frames)
    return EmbeddedEngine().render(job), speech


@pytest.fixture(scope="module")
def persian() -> tuple[list[RgbFrame], npt.NDArray[np.float32]]:
    return rendered(PERSIAN, "fa")


@pytest.mark.parametrize("voice", ["fa", "en"])
def test_embedded_engine_mouth_follows_espeak_speech(
    voice: str, persian: tuple[list[RgbFrame], npt.NDArray[np.float32]]
) -> None:
    frames, speech = persian if voice == "fa" else rendered(ENGLISH, voice)
    result = mouth_envelope_correlation(frames, speech)
    assert result.correlation >= 0.5, result
    assert abs(result.best_lag_frames) <= 2, result
    assert result.correlation_at_zero >= 0.5, result


def test_unanimated_source_frames_do_not_correlate() -> None:
    speech = espeak_speech(PERSIAN, "fa")
    still = [astronaut_photo().frames[0].image] * (speech.shape[0] // SAMPLES_PER_FRAME)
    result = mouth_envelope_correlation(still, speech)
    assert abs(result.correlation) < 0.2
    assert result.best_lag_frames == 0


def test_late_video_shows_as_positive_lag(persian: tuple[list[RgbFrame], npt.NDArray[np.float32]]) -> None:
    frames, speech = persian
    on_time = mouth_envelope_correlation(frames, speech)
    # Three frames of the rest pose first: every mouth shape arrives three frames after its sound.
    late = [frames[0]] * 3 + frames[:-3]
    result = mouth_envelope_correlation(late, speech)
    assert result.best_lag_frames == on_time.best_lag_frames + 3
    assert result.correlation_at_zero < result.correlation
    early = frames[2:] + [frames[-1]] * 2
    assert mouth_envelope_correlation(early, speech).best_lag_frames == on_time.best_lag_frames - 2


def test_lagged_correlation_pairs_mouth_with_earlier_sound_for_positive_lag() -> None:
    envelope = np.sin(np.linspace(0, 12, 60)) + np.linspace(0, 1, 60)
    mouth = np.concatenate([np.zeros(4), envelope[:-4]])  # the mouth repeats the sound 4 frames later
    assert lagged_correlation(mouth, envelope, 4) == pytest.approx(1.0)
    assert lagged_correlation(mouth, envelope, 0) < 0.9
    assert lagged_correlation(-envelope, envelope, 0) == pytest.approx(-1.0)


def test_constant_opening_or_envelope_correlates_zero() -> None:
    varying = np.linspace(0, 1, 30)
    assert lagged_correlation(np.full(30, 0.07), varying, 0) == 0.0
    assert lagged_correlation(varying, np.full(30, -20.0), 1) == 0.0


def test_frames_without_a_face_are_rejected() -> None:
    blank = [np.zeros((128, 128, 3), dtype=np.uint8)] * 5
    with pytest.raises(ValueError, match="no face"):
        mouth_envelope_correlation(blank, np.zeros(5 * SAMPLES_PER_FRAME, dtype=np.float32))
