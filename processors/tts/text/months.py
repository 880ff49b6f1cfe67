"""Month names (Solar Hijri, Gregorian in Persian, English) and the words that say a number is a day of one."""

from __future__ import annotations

SOLAR_HIJRI_MONTHS = (
    "فروردین", "اردیبهشت", "خرداد", "تیر", "مرداد", "شهریور", "مهر", "آبان", "آذر", "دی", "بهمن", "اسفند",
)
GREGORIAN_MONTHS_IN_PERSIAN = (
    "ژانویه", "فوریه", "مارس", "آوریل", "مه", "ژوئن", "ژوئیه", "اوت", "سپتامبر", "اکتبر", "نوامبر", "دسامبر",
)
ENGLISH_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)
PERSIAN_MONTHS = frozenset(SOLAR_HIJRI_MONTHS + GREGORIAN_MONTHS_IN_PERSIAN)
# These are also everyday words (arrow, kindness/seal, fog, …): "۳ تیر شلیک شد" is three bullets. They make the
# number before them a day only with more evidence: a year after them, or a weekday / "روز" before the number.
AMBIGUOUS_PERSIAN_MONTHS = frozenset({"تیر", "مهر", "دی", "مه"})
PERSIAN_DATE_CUES = frozenset({
    "روز", "تاریخ", "شنبه", "یکشنبه", "یک‌شنبه", "دوشنبه", "سه‌شنبه", "چهارشنبه", "پنجشنبه", "پنج‌شنبه", "جمعه",
})
# Short month names written without a dot ("Jan 5, 2024"): months only beside a day, where they are said in full.
ENGLISH_SHORT_MONTHS = {name[:3]: index for index, name in enumerate(ENGLISH_MONTHS) if len(name) > 3} | {"Sept": 8}
# English month names that are also common words ("May I", "March on") count only when capitalised.
ENGLISH_MONTHS_BY_NAME = {name: index for index, name in enumerate(ENGLISH_MONTHS)} | {
    name[:3] + ".": index for index, name in enumerate(ENGLISH_MONTHS)
} | {"Sept.": 8} | ENGLISH_SHORT_MONTHS
