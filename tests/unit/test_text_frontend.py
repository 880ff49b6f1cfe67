"""Unit tests of the TTS text front end: Persian normalisation, numbers as words, language runs, pieces."""

from __future__ import annotations

import pytest

from processors.tts.text import Language, SpeechText, detect_language, plan_speech
from processors.tts.text.numbers import (
    english_cardinal,
    english_ordinal,
    english_year,
    persian_cardinal,
    persian_ordinal,
)

ZWNJ = "\u200c"
ALL_DIGITS = set("0123456789۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩")

NEWS_PARAGRAPH = (
    "بانک مرکزی روز سه شنبه اعلام کرد که نرخ تورم سالانه در پایان مرداد ۱۴۰۳ به ۳۱٫۲ درصد رسیده است. "
    "به گفته كارشناسان، این کاهش نتیجه سیاست های انقباضی ماه های گذشته است و می تواند ادامه پیدا کند. "
    "قیمت هر دلار در بازار آزاد امروز ساعت ۱۰:۳۰ حدود ۵۸٬۰۰۰ تومان بود."
)
NEWS_PARAGRAPH_NORMALISED = (
    f"بانک مرکزی روز سه{ZWNJ}شنبه اعلام کرد که نرخ تورم سالانه در پایان مرداد ۱۴۰۳ به ۳۱٫۲ درصد رسیده است. "
    f"به گفته کارشناسان، این کاهش نتیجه سیاست{ZWNJ}های انقباضی ماه{ZWNJ}های گذشته است و می{ZWNJ}تواند "
    "ادامه پیدا کند. قیمت هر دلار در بازار آزاد امروز ساعت ۱۰:۳۰ حدود ۵۸٬۰۰۰ تومان بود."
)


def spoken_of(text: str, language: Language | None = None) -> str:
    return " ".join(piece.spoken for piece in plan_speech(text, language))


def runs_of(text: str) -> list[tuple[str, str]]:
    """Language runs only: limits high enough that no run is cut for size."""
    return [(piece.language, piece.display) for piece in plan_speech(text, first_max_chars=500, max_chars=500)]


# --- Persian normalisation -------------------------------------------------------------------------------


def test_arabic_yeh_and_kaf_are_replaced_by_persian_letters() -> None:
    [piece] = plan_speech("علي يك كتاب خريد.")
    assert piece.display == "علی یک کتاب خرید."
    assert piece.spoken == "علی یک کتاب خرید."


def test_split_verb_prefix_plural_and_indefinite_suffix_are_joined_with_zwnj() -> None:
    text = " ".join(piece.display for piece in plan_speech("من می خواهم کتاب ها را به خانه ای ببرم."))
    assert f"می{ZWNJ}خواهم" in text
    assert f"کتاب{ZWNJ}ها" in text
    assert f"خانه{ZWNJ}ای" in text


def test_words_already_written_with_zwnj_are_kept_whole() -> None:
    text = f"می{ZWNJ}خواهم کتاب{ZWNJ}ها را در خانه{ZWNJ}ای امن نگه دارم."
    [piece] = plan_speech(text)
    assert piece.display == text


def test_kashida_and_shadda_are_removed_and_vowel_marks_kept_for_the_voice() -> None:
    [piece] = plan_speech("حَذفِ اِعراب در متنِ فارسی لازم اســـت.")
    assert piece.spoken == piece.display == "حَذفِ اِعراب در متنِ فارسی لازم است."
    [named] = plan_speech("مُحَمَّد آمد.")
    assert named.spoken == "مُحَمَد آمد.", "espeak-ng would say the shadda as the word 'tashdid'"


def test_spaces_before_persian_punctuation_are_removed_and_the_punctuation_kept() -> None:
    [piece] = plan_speech("سلام ، حال شما چطور است ؟")
    assert piece.display == "سلام، حال شما چطور است؟"


def test_invisible_direction_marks_are_dropped() -> None:
    [piece] = plan_speech("\u200fسلام\u200f دنیا\u200e")
    assert piece.display == "سلام دنیا"


def test_persian_greeting_is_one_unchanged_piece() -> None:
    text = "سلام، حال شما چطور است؟"
    assert plan_speech(text) == [SpeechText(spoken=text, display=text, language="fa")]


# --- number words ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "words"),
    [
        (0, "صفر"),
        (7, "هفت"),
        (15, "پانزده"),
        (21, "بیست و یک"),
        (105, "صد و پنج"),
        (1000, "هزار"),
        (1403, "هزار و چهارصد و سه"),
        (2000, "دو هزار"),
        (120_000, "صد و بیست هزار"),
        (1_000_000, "یک میلیون"),
        (2_500_000_000, "دو میلیارد و پانصد میلیون"),
    ],
)
def test_persian_cardinals_join_every_part_with_va(number: int, words: str) -> None:
    assert persian_cardinal(number) == words


@pytest.mark.parametrize(
    ("number", "words"),
    [(1, "یکم"), (3, "سوم"), (12, "دوازدهم"), (23, "بیست و سوم"), (30, f"سی{ZWNJ}ام")],
)
def test_persian_ordinals_follow_spelling_rules_for_three_and_final_yeh(number: int, words: str) -> None:
    assert persian_ordinal(number) == words


@pytest.mark.parametrize(
    ("number", "words"),
    [
        (0, "zero"),
        (13, "thirteen"),
        (42, "forty-two"),
        (100, "one hundred"),
        (123, "one hundred twenty-three"),
        (1001, "one thousand one"),
        (3_000_000, "three million"),
    ],
)
def test_english_cardinals(number: int, words: str) -> None:
    assert english_cardinal(number) == words


@pytest.mark.parametrize(
    ("number", "words"),
    [(1, "first"), (2, "second"), (3, "third"), (12, "twelfth"), (21, "twenty-first"), (40, "fortieth"),
     (100, "one hundredth")],
)
def test_english_ordinals(number: int, words: str) -> None:
    assert english_ordinal(number) == words


@pytest.mark.parametrize(
    ("year", "words"),
    [(1990, "nineteen ninety"), (1905, "nineteen oh five"), (1900, "nineteen hundred"),
     (2005, "two thousand five"), (2024, "twenty twenty-four")],
)
def test_english_years_are_read_in_pairs_where_english_does(year: int, words: str) -> None:
    assert english_year(year) == words


def test_cardinals_refuse_numbers_beyond_the_named_scales() -> None:
    with pytest.raises(ValueError):
        persian_cardinal(10**15)
    with pytest.raises(ValueError):
        english_cardinal(-1)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("سال ۱۴۰۳ سال مهمی بود.", "سال هزار و چهارصد و سه سال مهمی بود."),
        ("رشد اقتصادی 3.5 درصد بود.", "رشد اقتصادی سه ممیز پنج درصد بود."),
        ("نرخ رشد ۲/۵ درصد اعلام شد.", "نرخ رشد دو ممیز پنج درصد اعلام شد."),
        ("نرخ بیکاری ۲۵٪ است.", "نرخ بیکاری بیست و پنج درصد است."),
        ("تورم به 40% رسید.", "تورم به چهل درصد رسید."),
        ("جلسه ساعت ۱۰:۳۰ شروع می‌شود.", "جلسه ساعت ده و سی دقیقه شروع می‌شود."),
        ("قطار ساعت ۸:۰۵ حرکت کرد.", "قطار ساعت هشت و پنج دقیقه حرکت کرد."),
        ("در تاریخ ۱۴۰۳/۰۵/۱۲ امضا شد.", "در تاریخ دوازدهم مرداد هزار و چهارصد و سه امضا شد."),
        ("در ۲۰۲۴/۰۳/۱۵ منتشر شد.", "در پانزدهم مارس دو هزار و بیست و چهار منتشر شد."),
        ("قیمت بلیت ۲۵۰٬۰۰۰ تومان است.", "قیمت بلیت دویست و پنجاه هزار تومان است."),
        ("هر لیتر بنزین ۱۵۰۰ ریال بود.", "هر لیتر بنزین هزار و پانصد ریال بود."),
        ("این کتاب $20 قیمت دارد.", "این کتاب بیست دلار قیمت دارد."),
        ("عدد ٣٤ را بنویس.", "عدد سی و چهار را بنویس."),
        ("دمای هوا -5 درجه بود.", "دمای هوا منفی پنج درجه بود."),
        ("شماره من ۰۹۱۲۳۴۵۶۷۸۹ است.", "شماره من صفر نه یک دو سه چهار پنج شش هفت هشت نه است."),
    ],
)
def test_numbers_in_persian_text_are_read_as_persian_words(text: str, said: str) -> None:
    assert spoken_of(text) == said


def test_a_number_glued_to_a_persian_word_is_said_as_a_separate_word() -> None:
    assert spoken_of("طول دیوار ۹متر است.") == "طول دیوار نه متر است."


def test_no_digit_reaches_the_engine_from_a_number_heavy_persian_paragraph() -> None:
    spoken = spoken_of(NEWS_PARAGRAPH)
    assert not ALL_DIGITS & set(spoken)
    assert "هزار و چهارصد و سه" in spoken
    assert "سی و یک ممیز دو درصد" in spoken
    assert "پنجاه و هشت هزار تومان" in spoken


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("Dr. Smith arrived at 10:30 am.", "Doctor Smith arrived at ten thirty a m."),
        ("Mr. and Mrs. Jones met at 9:05.", "Mister and Missus Jones met at nine oh five."),
        ("She was born in 1990.", "She was born in nineteen ninety."),
        ("It costs $5.", "It costs five dollars."),
        ("It costs $1.", "It costs one dollar."),
        ("The ticket is $5.99 today.", "The ticket is five dollars and ninety-nine cents today."),
        ("The deal was worth $1.5 million.", "The deal was worth one point five million dollars."),
        ("Sales grew 25% this year.", "Sales grew twenty-five percent this year."),
        ("The value is 3.14 exactly.", "The value is three point one four exactly."),
        ("He was 1st, she was 2nd, I was 3rd.", "He was first, she was second, I was third."),
        ("We have 3,000,000 users.", "We have three million users."),
        ("It was signed on 2024-05-12.", "It was signed on May twelfth, twenty twenty-four."),
        ("Bring fruit, e.g. apples, etc.", "Bring fruit, for example apples, et cetera"),
        ("The U.S. economy grew.", "The U S economy grew."),
    ],
)
def test_english_numbers_money_times_and_abbreviations_are_read_as_english_words(text: str, said: str) -> None:
    assert spoken_of(text) == said


# --- emoji, URLs, e-mail ---------------------------------------------------------------------------------


def test_emoji_is_silent_but_stays_in_the_subtitle() -> None:
    assert plan_speech("سلام 😀 دنیا") == [SpeechText(spoken="سلام دنیا", display="سلام 😀 دنیا", language="fa")]


def test_emoji_after_a_sentence_stays_with_that_sentence() -> None:
    displays = [piece.display for piece in plan_speech(f"خیلی ممنونم! 🙏 فردا می{ZWNJ}بینمت.")]
    assert displays == ["خیلی ممنونم! 🙏", f"فردا می{ZWNJ}بینمت."]


def test_url_inside_persian_text_is_an_english_piece_that_says_only_the_domain() -> None:
    pieces = plan_speech("برای جزئیات به https://www.example.com/news/123 سر بزنید.")
    assert [(piece.language, piece.display) for piece in pieces] == [
        ("fa", "برای جزئیات به"),
        ("en", "https://www.example.com/news/123"),
        ("fa", "سر بزنید."),
    ]
    assert pieces[1].spoken == "example dot com"


@pytest.mark.parametrize(("text", "said"), [
    ("مقاله را در https://fa.wikipedia.org/wiki/تهران بخوانید.", "fa dot wikipedia dot org"),
    ("اخبار را از www.isna.ir/news/۱۴۰۲ دنبال کنید.", "isna dot ir"),
    ("سؤالات خود را به info@shahr-bank.ir بفرستید.", "info at shahr dash bank dot ir"),
    ("ایمیل من ali.rezaei@example.com است.", "ali dot rezaei at example dot com"),
])
def test_a_url_or_e_mail_in_a_persian_request_is_an_english_run_even_with_a_persian_path(text: str,
                                                                                         said: str) -> None:
    for language in (None, "fa"):  # detected, or the request says Persian: the address is English either way
        pieces = plan_speech(text, language, first_max_chars=200)
        assert [piece.language for piece in pieces] == ["fa", "en", "fa"]
        assert pieces[1].spoken == said


def test_url_at_the_end_of_a_sentence_leaves_the_full_stop_outside_the_address() -> None:
    assert spoken_of("Read more at example.org.") == "Read more at example dot org."


def test_email_address_is_said_with_at_and_dot() -> None:
    assert spoken_of("Write to ali.rezaei@example.org today.") == "Write to ali dot rezaei at example dot org today."


def test_long_latin_url_does_not_make_a_persian_request_english() -> None:
    pieces = plan_speech("لطفاً فرم را در forms.example.com/registration/summer-camp 2 بار پر کنید.")
    assert pieces[-1] == SpeechText(spoken="دو بار پر کنید.", display="2 بار پر کنید.", language="fa")


# --- languages and runs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("سلام دنیا", "fa"),
        ("Hello world", "en"),
        (f"من از Python استفاده می{ZWNJ}کنم", "fa"),
        ("I learned the word سلام today", "en"),
        ("۱۲۳", "fa"),
        ("123", "en"),
        ("", "en"),
    ],
)
def test_detect_language_follows_the_dominant_script(text: str, language: str) -> None:
    assert detect_language(text) == language


def test_mixed_text_is_split_into_language_runs_in_speaking_order() -> None:
    assert runs_of("من از Python استفاده می کنم.") == [
        ("fa", "من از"),
        ("en", "Python"),
        ("fa", f"استفاده می{ZWNJ}کنم."),
    ]


def test_a_single_acronym_inside_persian_is_its_own_english_piece() -> None:
    assert runs_of("ما با API جدید کار می کنیم.") == [("fa", "ما با"), ("en", "API"), ("fa", f"جدید کار می{ZWNJ}کنیم.")]


def test_a_persian_word_inside_english_is_its_own_persian_piece() -> None:
    assert runs_of("The word سلام means hello.") == [("en", "The word"), ("fa", "سلام"), ("en", "means hello.")]


def test_quotes_and_brackets_stay_with_the_word_they_enclose() -> None:
    assert runs_of("او گفت «Hello» و رفت.") == [("fa", "او گفت"), ("en", "«Hello»"), ("fa", "و رفت.")]
    assert runs_of("هوش مصنوعی (AI) آینده است.") == [("fa", "هوش مصنوعی"), ("en", "(AI)"), ("fa", "آینده است.")]


def test_a_number_between_scripts_is_read_in_the_main_language() -> None:
    persian = plan_speech("Python 3 را نصب کنید.")
    assert persian[-1] == SpeechText(spoken="سه را نصب کنید.", display="3 را نصب کنید.", language="fa")
    english = plan_speech("I bought 3 کتاب today.")
    assert english[0] == SpeechText(spoken="I bought three", display="I bought 3", language="en")


def test_a_number_in_persian_digits_between_scripts_is_read_in_persian() -> None:
    pieces = plan_speech("I bought ۳ کتاب today.")
    assert pieces[1] == SpeechText(spoken="سه کتاب", display="۳ کتاب", language="fa")


def test_explicit_language_decides_how_letterless_text_is_read() -> None:
    assert plan_speech("2024", "fa") == [SpeechText(spoken="دو هزار و بیست و چهار", display="2024", language="fa")]
    assert plan_speech("2024", "en") == [SpeechText(spoken="twenty twenty-four", display="2024", language="en")]


def test_explicit_language_does_not_make_other_script_words_change_language() -> None:
    assert [piece.language for piece in plan_speech("Hello world", "fa")] == ["en"]
    assert [piece.language for piece in plan_speech("سلام دنیا", "en")] == ["fa"]


# --- pieces ----------------------------------------------------------------------------------------------


def test_first_piece_is_cut_at_a_clause_boundary_within_the_limit() -> None:
    pieces = plan_speech(
        "به گزارش خبرگزاری ایسنا، رئیس بانک مرکزی روز دوشنبه اعلام کرد که نرخ تورم در پایان تیر ماه "
        "به ۳۵ درصد رسیده است."
    )
    assert pieces[0].display == "به گزارش خبرگزاری ایسنا،"
    assert len(pieces) == 2


def test_first_piece_without_punctuation_is_cut_before_a_conjunction() -> None:
    pieces = plan_speech("من می خواهم کتاب ها را به خانه ای ببرم که دوستم در آن زندگی می کند.")
    assert [piece.display for piece in pieces] == [
        f"من می{ZWNJ}خواهم کتاب{ZWNJ}ها را به خانه{ZWNJ}ای ببرم",
        f"که دوستم در آن زندگی می{ZWNJ}کند.",
    ]


def test_first_piece_without_clause_or_conjunction_ends_at_the_last_word_that_fits() -> None:
    sentence = "دانشجویان دانشگاه تهران امروز صبح برای بازدید از موزه ملی ایران به مرکز شهر رفتند و عکس گرفتند."
    first = plan_speech(sentence, first_max_chars=60)[0].display
    assert sentence.startswith(first + " ")
    next_word = sentence[len(first) + 1 :].split()[0]
    assert len(first) <= 60 < len(f"{first} {next_word}")


def test_comma_inside_a_date_is_not_taken_as_a_clause_break() -> None:
    first = plan_speech("On May 3rd, 2024 we launched the product in twelve countries around the world.")[0]
    assert first.display == "On May 3rd, 2024 we launched the product in"


def test_every_piece_fits_its_limit_in_both_shown_and_spoken_text() -> None:
    pieces = plan_speech(NEWS_PARAGRAPH, first_max_chars=60, max_chars=100)
    assert len(pieces[0].display) <= 60 and len(pieces[0].spoken) <= 60
    assert all(len(piece.display) <= 100 and len(piece.spoken) <= 100 for piece in pieces[1:])


def test_joined_pieces_give_back_every_word_in_order_so_no_word_is_cut() -> None:
    for first_max_chars, max_chars in ((60, 220), (30, 70)):
        pieces = plan_speech(NEWS_PARAGRAPH, first_max_chars=first_max_chars, max_chars=max_chars)
        assert " ".join(piece.display for piece in pieces).split() == NEWS_PARAGRAPH_NORMALISED.split()
        assert all(piece.display.strip() and piece.spoken.strip() for piece in pieces)


def test_later_pieces_are_whole_sentences() -> None:
    pieces = plan_speech("سلام، حال شما چطور است؟ من خوبم، ممنون. شما چه خبر؟")
    assert [piece.display for piece in pieces] == ["سلام، حال شما چطور است؟", "من خوبم، ممنون.", "شما چه خبر؟"]
    english = plan_speech("Hello, how are you? I am fine, thanks.")
    assert [piece.display for piece in english] == ["Hello, how are you?", "I am fine, thanks."]


def test_a_long_sentence_is_split_at_its_clause_marks_below_the_maximum() -> None:
    clause = "گزارش کامل این جلسه پس از بررسی دقیق کارشناسان و تایید مدیران ارشد منتشر خواهد شد"
    sentence = "، ".join([clause] * 4) + "."
    pieces = plan_speech(sentence, first_max_chars=220, max_chars=220)
    assert len(pieces) > 1
    assert all(len(piece.display) <= 220 for piece in pieces)
    assert all(piece.display.endswith("،") for piece in pieces[:-1])


def test_a_long_sentence_without_punctuation_is_split_at_word_boundaries() -> None:
    sentence = " ".join(["the quick brown fox jumps over the lazy dog"] * 8) + "."
    pieces = plan_speech(sentence, max_chars=100)
    assert all(len(piece.display) <= 100 for piece in pieces[1:])
    assert " ".join(piece.display for piece in pieces).split() == sentence.split()


def test_a_word_longer_than_the_limit_is_kept_whole() -> None:
    pieces = plan_speech("Supercalifragilisticexpialidocious is long.", first_max_chars=10)
    assert [piece.display for piece in pieces] == ["Supercalifragilisticexpialidocious", "is long."]


def test_line_breaks_end_sentences() -> None:
    assert [piece.display for piece in plan_speech("سلام\nخوبی؟\n\nمن خوبم")] == ["سلام", "خوبی؟", "من خوبم"]


@pytest.mark.parametrize("text", ["", "   \n\t ", "... !؟", "«»", "😀🎉"])
def test_text_with_nothing_to_say_gives_no_pieces(text: str) -> None:
    assert plan_speech(text) == []


def test_non_positive_limits_are_rejected() -> None:
    with pytest.raises(ValueError):
        plan_speech("سلام", first_max_chars=0)


# --- days, ordinals, ranges, units, phones, versions, decades, symbols -----------------------------------


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("جلسه روز ۱۲ اردیبهشت برگزار می‌شود.", "جلسه روز دوازدهم اردیبهشت برگزار می‌شود."),
        ("او ۳ خرداد ۱۴۰۲ آمد.", "او سوم خرداد هزار و چهارصد و دو آمد."),
        ("سه‌شنبه ۵ دی جلسه داریم.", "سه‌شنبه پنجم دی جلسه داریم."),
        ("۱۵ تیر ۱۴۰۲ آمد.", "پانزدهم تیر هزار و چهارصد و دو آمد."),
        ("قرارداد ۲۰ ژانویه امضا شد.", "قرارداد بیستم ژانویه امضا شد."),
    ],
)
def test_a_day_before_a_persian_month_name_is_read_as_an_ordinal(text: str, said: str) -> None:
    assert spoken_of(text) == said


def test_a_count_before_a_month_name_that_is_also_a_word_stays_a_count() -> None:
    assert spoken_of("۳ تیر شلیک شد.") == "سه تیر شلیک شد."


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("We met on January 5, 2024.", "We met on January fifth, twenty twenty-four."),
        ("It opens 12 March.", "It opens the twelfth of March."),
        ("May I bring 5 friends?", "May I bring five friends?"),
        ("The meeting is on Jan 5, 2024.", "The meeting is on January fifth, twenty twenty-four."),
        ("Due Sept 1 and Dec. 25, 1999.", "Due September first and December twenty-fifth, nineteen ninety-nine."),
        ("On 5 Jan we left.", "On the fifth of January we left."),
        ("Open Mar 3-5.", "Open March third to fifth."),
        ("Jan said hi to 5 people.", "Jan said hi to five people."),
    ],
)
def test_english_days_next_to_a_month_are_ordinals_and_other_numbers_are_not(text: str, said: str) -> None:
    assert spoken_of(text) == said


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("جلسه در Jan 5, 2024 برگزار شد.", "جلسه در پنجم ژانویه دو هزار و بیست و چهار برگزار شد."),
        ("قرارداد January 5 امضا شد.", "قرارداد پنجم ژانویه امضا شد."),
        ("او 5 January 2024 به تهران آمد.", "او پنجم ژانویه دو هزار و بیست و چهار به تهران آمد."),
        ("کلاس‌ها از Sept. 3rd شروع می‌شوند.", "کلاس‌ها از سوم سپتامبر شروع می‌شوند."),
        ("مهلت ثبت‌نام تا Dec 25, 1999 بود.", "مهلت ثبت‌نام تا بیست و پنجم دسامبر هزار و نهصد و نود و نه بود."),
        ("نامه روز ۱۲ March رسید.", "نامه روز دوازدهم مارس رسید."),
        ("آخرین مهلت Jan 31، 2025 است.", "آخرین مهلت سی و یکم ژانویه دو هزار و بیست و پنج است."),
    ],
)
def test_an_english_month_date_in_persian_text_is_one_persian_date_with_the_gregorian_month(
        text: str, said: str) -> None:
    pieces = plan_speech(text, "fa")
    assert [piece.language for piece in pieces] == ["fa"] * len(pieces), [(p.language, p.spoken) for p in pieces]
    spoken = " ".join(piece.spoken for piece in pieces)
    assert spoken == said
    assert "," not in spoken and not any("a" <= character.lower() <= "z" for character in spoken)
    assert " ".join(piece.display for piece in pieces) == text, "subtitles keep the date as written"


def test_an_english_month_date_is_still_english_in_an_english_request_and_in_english_words_of_persian_text() -> None:
    assert spoken_of("The meeting is on Jan 5, 2024.", "en") == "The meeting is on January fifth, twenty twenty-four."
    assert spoken_of("Classes start Sept. 3rd.", "en") == "Classes start September third."
    assert [(p.language, p.spoken) for p in plan_speech("او گفت: The deadline is Jan 5, 2024.", "fa")] == [
        ("fa", "او گفت:"), ("en", "The deadline is January fifth, twenty twenty-four.")]


def test_a_capitalised_month_word_without_a_day_beside_it_stays_an_english_word_in_persian_text() -> None:
    assert [(p.language, p.spoken) for p in plan_speech("فیلم May I Help You پخش شد.", "fa")] == [
        ("fa", "فیلم"), ("en", "May I Help You"), ("fa", "پخش شد.")]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("او در قرن ۲۱ام زندگی می‌کند.", "او در قرن بیست و یکم زندگی می‌کند."),
        ("نفر ۳ام شد.", "نفر سوم شد."),
        ("۲۰امین سالگرد", "بیستمین سالگرد"),
        ("۳۰امین جشنواره", f"سی{ZWNJ}امین جشنواره"),
        ("۳مین دوره", "سومین دوره"),
    ],
)
def test_persian_ordinal_suffixes_on_digits_are_read_as_ordinals(text: str, said: str) -> None:
    assert spoken_of(text) == said


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("تورم ۱۰-۱۵ درصد پیش‌بینی شد.", "تورم ده تا پانزده درصد پیش‌بینی شد."),
        ("Read pages 10-15.", "Read pages ten to fifteen."),
        ("The years 1990–2000 were calm.", "The years nineteen ninety to two thousand were calm."),
    ],
)
def test_a_dash_between_two_numbers_is_read_as_a_range(text: str, said: str) -> None:
    assert spoken_of(text) == said


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("سرعت ۱۲۰ km/h بود.", "سرعت صد و بیست کیلومتر بر ساعت بود."),
        ("دمای هوا ۲۵°C است.", "دمای هوا بیست و پنج درجه سانتی‌گراد است."),
        ("He ran 10 km in 45 min.", "He ran ten kilometers in forty-five minutes."),
        ("It weighs 1 kg.", "It weighs one kilogram."),
        ("The phone has 8 GB of memory.", "The phone has eight gigabytes of memory."),
    ],
)
def test_units_after_numbers_are_said_in_the_language_around_them(text: str, said: str) -> None:
    assert spoken_of(text) == said


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("با ۰۲۱-۸۸۷۷۶۶۵۵ تماس بگیرید.", "با صفر دو یک، هشت هشت هفت هفت شش شش پنج پنج تماس بگیرید."),
        ("Call 555-1234 now.", "Call five five five, one two three four now."),
        ("Call +98 912 345 6789.", "Call plus nine eight, nine one two, three four five, six seven eight nine."),
    ],
)
def test_phone_numbers_are_read_digit_by_digit_in_their_groups(text: str, said: str) -> None:
    assert spoken_of(text) == said


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("نسخه 3.11.2 منتشر شد.", "نسخه سه نقطه یازده نقطه دو منتشر شد."),
        ("Install version 2.0.1 today.", "Install version two dot zero dot one today."),
        ("In the 1990s, prices rose.", "In the nineteen nineties, prices rose."),
        ("Music of the '80s is back.", "Music of the eighties is back."),
        ("Meet me at 9am.", "Meet me at nine a m."),
        ("C++ is fast.", "C plus plus is fast."),
        ("۳ + ۴ = ۷", "سه به علاوه چهار مساوی هفت"),
        ("قیمت ۲۵۰۰ ﷼ است.", "قیمت دو هزار و پانصد ریال است."),
        ("این بنا در ۵۰۰ ق.م ساخته شد.", "این بنا در پانصد قبل از میلاد ساخته شد."),
        ("سال ۱۴۰۳ ه.ش. سال خوبی بود.", "سال هزار و چهارصد و سه هجری شمسی سال خوبی بود."),
    ],
)
def test_versions_decades_clock_hours_symbols_and_persian_abbreviations(text: str, said: str) -> None:
    assert spoken_of(text) == said


# --- a corpus of real Persian: normalised text, spoken numbers, piece boundaries -------------------------

CONVERSATION = "سلام علی جان! خوبی؟ دیروز کجا بودی؟ من دو ساعت منتظرت بودم، ولی نیامدی."
ZWNJ_HEAVY = "دانش آموزان کتاب های شان را به کتابخانه ی مدرسه برده اند و می خواهند آن ها را پس بدهند."
MIXED = "تیم ما از Kubernetes و Docker استفاده می کند و نسخه جدید API هفته بعد منتشر می شود."
DATES_AND_NUMBERS = "کنکور سال ۱۴۰۳ در روزهای ۱۸ و ۱۹ اردیبهشت برگزار شد و ۴۵۰٬۰۰۰ نفر در آن شرکت کردند."


def test_conversation_is_split_at_its_questions_and_exclamations() -> None:
    assert [piece.display for piece in plan_speech(CONVERSATION)] == [
        "سلام علی جان!", "خوبی؟", "دیروز کجا بودی؟", "من دو ساعت منتظرت بودم، ولی نیامدی."]


def test_zwnj_heavy_sentence_gets_its_joiners_and_is_spoken_whole() -> None:
    [piece] = plan_speech(ZWNJ_HEAVY, first_max_chars=500)
    for word in (f"کتاب{ZWNJ}های", f"کتابخانه{ZWNJ}ی", f"برده{ZWNJ}اند", f"می{ZWNJ}خواهند", f"آن{ZWNJ}ها"):
        assert f" {word} " in f" {piece.display} ", word
    assert piece.spoken == piece.display


def test_mixed_technical_sentence_speaks_each_english_word_in_english() -> None:
    pieces = plan_speech(MIXED, first_max_chars=500, max_chars=500)
    assert [(piece.language, piece.display) for piece in pieces] == [
        ("fa", "تیم ما از"), ("en", "Kubernetes"), ("fa", "و"), ("en", "Docker"),
        ("fa", f"استفاده می{ZWNJ}کند و نسخه جدید"), ("en", "API"), ("fa", f"هفته بعد منتشر می{ZWNJ}شود.")]


def test_dates_and_numbers_paragraph_has_no_digits_left_and_reads_each_number() -> None:
    spoken = spoken_of(DATES_AND_NUMBERS)
    assert not ALL_DIGITS & set(spoken)
    assert "هزار و چهارصد و سه" in spoken and "هجده و نوزدهم اردیبهشت" in spoken
    assert "چهارصد و پنجاه هزار نفر" in spoken


def test_news_paragraph_pieces_are_a_short_clause_first_then_sentences() -> None:
    pieces = plan_speech(NEWS_PARAGRAPH)
    assert len(pieces[0].display) <= 60
    assert pieces[-1].display == "قیمت هر دلار در بازار آزاد امروز ساعت ۱۰:۳۰ حدود ۵۸٬۰۰۰ تومان بود."
    assert pieces[-1].spoken == ("قیمت هر دلار در بازار آزاد امروز ساعت ده و سی دقیقه حدود پنجاه و هشت هزار "
                                 "تومان بود.")


@pytest.mark.parametrize(("text", "together"), [
    ("The launch of the new product is planned for January 15, 2025 in Tehran.", "January fifteenth,"),
    ("It was March 3rd, 1999 and Dec 25.", "December twenty-fifth."),
    ("جلسهٔ بعدی هیئت مدیره برای بررسی بودجه در تاریخ ۱۲ اردیبهشت برگزار می‌شود.", "دوازدهم اردیبهشت"),
])
def test_a_day_and_its_month_are_never_cut_into_two_pieces(text: str, together: str) -> None:
    pieces = plan_speech(text)
    assert len(pieces) > 1, "long enough to be cut somewhere"
    assert any(together in piece.spoken for piece in pieces), [piece.spoken for piece in pieces]
