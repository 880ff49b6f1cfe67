"""libespeak-ng called in-process through ctypes: speech and its phoneme events (IPA, sample offset) in one pass.

The CLI gives audio only; the library's synth callback also reports an ``espeakEVENT_PHONEME`` for every
phoneme it speaks, with the sample where the phoneme starts. Those timings are what the lip-sync engine
articulates from (bilabial closures, rounding, ...), so they come from the synthesiser that made the sound
rather than being guessed from it. Initialised with ``espeakINITIALIZE_PHONEME_IPA`` the names are IPA
(``b``, ``ɑː``, ``tʃ``), the same alphabet piper's phonemiser uses, so one viseme table serves both.

libespeak-ng keeps global state (one voice, one callback per process), so one ``EspeakLibrary`` exists per
process (``shared_library``) and every call holds its lock. A call costs ~1.5 ms of CPU per second of speech.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_PHONEME_IPA = 0x0002
INITIALIZE_DONT_EXIT = 0x8000
POS_CHARACTER = 1
CHARS_UTF8 = 1
EVENT_LIST_TERMINATED = 0
EVENT_PHONEME = 7
PARAMETER_RATE = 1
PARAMETER_PITCH = 3
EE_OK = 0
EE_NOT_FOUND = 2
LIBRARY_NAMES = ("libespeak-ng.so.1", "libespeak-ng.so")


class EspeakLibraryError(RuntimeError):
    """libespeak-ng is missing, failed to initialise, or refused a voice or a text."""


class _EventId(ctypes.Union):
    _fields_ = (("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8))


class _Event(ctypes.Structure):
    """``espeak_EVENT`` of speak_lib.h."""

    _fields_ = (
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    )


class _Voice(ctypes.Structure):
    """``espeak_VOICE`` of speak_lib.h."""

    _fields_ = (
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, name, NUL)*, then NUL: not one C string
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    )


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class PhonemeEvent:
    """One phoneme as espeak-ng spoke it: where it starts in the call's audio, and its IPA name."""

    sample: int
    phoneme: str


@dataclass(frozen=True)
class SpokenText:
    pcm: npt.NDArray[np.int16]
    sample_rate: int
    phonemes: tuple[PhonemeEvent, ...]


class _Capture:
    """What one synthesis call collects from the callback (audio blocks and phoneme events)."""

    def __init__(self, deadline: float) -> None:
        self.blocks: list[npt.NDArray[np.int16]] = []
        self.samples = 0
        self.events: list[tuple[int, int, str]] = []  # (sample, audio_position_ms, IPA)
        self.deadline = deadline
        self.timed_out = False


class EspeakLibrary:
    """The process's libespeak-ng, initialised for synchronous synthesis with IPA phoneme events."""

    def __init__(self, library: str | None = None) -> None:
        self._lib = _load(library)
        self._declare()
        rate = self._lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
            INITIALIZE_PHONEME_EVENTS | INITIALIZE_PHONEME_IPA | INITIALIZE_DONT_EXIT,
        )
        if rate <= 0:
            raise EspeakLibraryError("espeak_Initialize failed: is the espeak-ng-data package installed?")
        self.sample_rate = int(rate)
        self._lock = threading.Lock()
        self._capture: _Capture | None = None
        self._resolved: dict[str, str] = {}  # voice as asked → voice name or file that espeak-ng loads
        self._callback = _Callback(self._on_synth)  # kept referenced: the library holds only the pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    def _declare(self) -> None:
        lib = self._lib
        lib.espeak_Initialize.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = (_Callback,)
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = (ctypes.c_char_p,)
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p)
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = ()
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = (ctypes.POINTER(_Voice),)
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))

    def languages(self) -> set[str]:
        """Language codes of the installed voices ("fa", "en-us", ...)."""
        with self._lock:
            return {language for voice in self._voices(None) for language in _voice_languages(voice)}

    def variants(self) -> set[str]:
        """Voice variants ("f3", "klatt", "Annie", ...) that can follow a voice as ``fa+f3``."""
        wanted = ctypes.create_string_buffer(b"variant")
        spec = _Voice(languages=ctypes.cast(wanted, ctypes.c_void_p))
        with self._lock:
            return {_text(voice.identifier).removeprefix("!v/") for voice in self._voices(spec)}

    def has_voice(self, name: str) -> bool:
        with self._lock:
            return self._select(name) == EE_OK

    def _select(self, name: str) -> int:
        """Make ``name`` the current voice: a voice name or file (``en-us``, ``gmw/en``) or a language
        (``en-gb``) with an optional ``+variant``; the lock must be held.

        ``espeak_SetVoiceByName`` knows names and files only, while the CLI's ``-v`` also takes a language;
        a language is resolved here to its preferred voice's file (the CLI's fuzzy match would pick *some*
        voice for any string, even an unknown one). Resolutions are remembered: a voice is set per call.
        """
        resolved = self._resolved.get(name)
        if resolved is None:
            resolved = name
            if self._lib.espeak_SetVoiceByName(name.encode()) != EE_OK:
                base, plus, variant = name.partition("+")
                identifier = self._voice_of_language(base)
                if identifier is not None:
                    resolved = identifier + plus + variant
            self._resolved[name] = resolved
        return int(self._lib.espeak_SetVoiceByName(resolved.encode()))

    def _voice_of_language(self, language: str) -> str | None:
        """The file of the voice that lists ``language`` with the best (lowest) priority."""
        ranked = [(priority, _text(voice.identifier)) for voice in self._voices(None)
                  for priority, listed in _voice_priorities(voice) if listed == language]
        return min(ranked)[1] if ranked else None

    def synthesize(self, text: str, voice: str, *, rate_wpm: int = 175, pitch: int = 50,
                   timeout_s: float = 20.0) -> SpokenText:
        """Speak ``text`` (UTF-8) with ``voice`` (e.g. ``en-us`` or ``fa+f3``): audio and phoneme events."""
        encoded = text.encode("utf-8") + b"\0"
        buffer = ctypes.create_string_buffer(encoded, len(encoded))
        with self._lock:
            status = self._select(voice)
            if status != EE_OK:
                raise EspeakLibraryError(f"espeak-ng has no voice '{voice}' (error {status})")
            self._lib.espeak_SetParameter(PARAMETER_RATE, rate_wpm, 0)
            self._lib.espeak_SetParameter(PARAMETER_PITCH, pitch, 0)
            capture = _Capture(time.monotonic() + timeout_s)
            self._capture = capture
            try:
                status = self._lib.espeak_Synth(buffer, len(encoded), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
                self._lib.espeak_Synchronize()
            finally:
                self._capture = None
        if capture.timed_out:
            raise EspeakLibraryError(f"espeak-ng took longer than {timeout_s} s")
        if status != EE_OK:
            raise EspeakLibraryError(f"espeak_Synth failed (error {status})")
        pcm = np.concatenate(capture.blocks) if capture.blocks else np.zeros(0, np.int16)
        return SpokenText(pcm, self.sample_rate, _phoneme_events(capture.events, len(pcm), self.sample_rate))

    def _on_synth(self, wav: ctypes._Pointer[ctypes.c_short], count: int,
                  events: ctypes._Pointer[_Event]) -> int:
        capture = self._capture
        if capture is None:
            return 1
        if wav and count > 0:
            block = np.ctypeslib.as_array(wav, shape=(count,)).astype(np.int16, copy=True)
            capture.blocks.append(block)
            capture.samples += count
        index = 0
        while events[index].type != EVENT_LIST_TERMINATED:
            event = events[index]
            if event.type == EVENT_PHONEME:
                name = bytes(event.id.string).split(b"\0", 1)[0].decode("utf-8", errors="replace")
                capture.events.append((int(event.sample), int(event.audio_position), name))
            index += 1
        if time.monotonic() > capture.deadline:
            capture.timed_out = True
            return 1  # asks espeak-ng to stop this synthesis
        return 0

    def _voices(self, spec: _Voice | None) -> list[_Voice]:
        listed = self._lib.espeak_ListVoices(ctypes.byref(spec) if spec is not None else None)
        voices: list[_Voice] = []
        index = 0
        while listed and listed[index]:
            voices.append(listed[index].contents)
            index += 1
        return voices


def _phoneme_events(raw: Sequence[tuple[int, int, str]], total: int, rate: int) -> tuple[PhonemeEvent, ...]:
    """Named phoneme events in time order, each inside the audio.

    espeak-ng's ``sample`` counts from the start of the call; ``audio_position`` (ms) is the fallback when
    a build reports no sample. An empty name marks the end of a clause and is dropped: the audio's own
    silence says the mouth rests there.
    """
    events: list[PhonemeEvent] = []
    last = 0
    for sample, position_ms, name in raw:
        if not name.strip():
            continue
        at = sample if sample > 0 or position_ms == 0 else position_ms * rate // 1000
        at = min(max(at, last), total)
        events.append(PhonemeEvent(at, name))
        last = at
    return tuple(events)


def _voice_languages(voice: _Voice) -> list[str]:
    """The language names of a voice."""
    return [name for _, name in _voice_priorities(voice)]


def _voice_priorities(voice: _Voice) -> list[tuple[int, str]]:
    """(priority, language name) of a voice, read from its (priority byte, name, NUL)* list."""
    names: list[tuple[int, str]] = []
    address = voice.languages
    offset = 0
    while address and (priority := ctypes.string_at(address + offset, 1)) != b"\0":
        name = ctypes.string_at(address + offset + 1)
        names.append((priority[0], name.decode("utf-8", errors="replace")))
        offset += 2 + len(name)
    return names


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", errors="replace") if value else ""


def _load(library: str | None) -> ctypes.CDLL:
    candidates = [library] if library else [*LIBRARY_NAMES, ctypes.util.find_library("espeak-ng")]
    for candidate in candidates:
        if not candidate:
            continue
        try:
            return ctypes.CDLL(candidate)
        except OSError:
            continue
    raise EspeakLibraryError("libespeak-ng not found: install the Debian package espeak-ng (make run does)")


_shared: EspeakLibrary | None = None
_shared_lock = threading.Lock()


def shared_library() -> EspeakLibrary:
    """The process's one EspeakLibrary (libespeak-ng cannot run two instances in one process)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = EspeakLibrary()
        return _shared
