"""English abbreviations and initialisms: the pattern that finds them and how each is said."""

from __future__ import annotations

_EXPANSIONS = {
    "mr.": "Mister", "mrs.": "Missus", "ms.": "Miz", "dr.": "Doctor", "prof.": "Professor",
    "jr.": "Junior", "sr.": "Senior", "vs.": "versus", "etc.": "et cetera", "inc.": "Incorporated",
    "ltd.": "Limited", "mt.": "Mount", "approx.": "approximately", "dept.": "department",
    "e.g.": "for example", "i.e.": "that is", "a.m.": "a m", "p.m.": "p m",
    "jan.": "January", "feb.": "February", "mar.": "March", "apr.": "April", "jun.": "June",
    "jul.": "July", "aug.": "August", "sep.": "September", "sept.": "September", "oct.": "October",
    "nov.": "November", "dec.": "December",
}
_WORD_ABBREVIATIONS = sorted((key[:-1] for key in _EXPANSIONS if key.count(".") == 1), key=len, reverse=True)

# Initialisms such as "U.S." are matched too: their dots must not be taken for sentence ends.
ABBREVIATION_PATTERN = (
    r"(?<![A-Za-z.])(?i:(?:[a-z]\.){2,}|(?:" + "|".join(_WORD_ABBREVIATIONS) + r")\.)"
)


# Persian dotted abbreviations of calendars and names; the final dot is optional in use.
_PERSIAN_EXPANSIONS = {
    "ه.ش": "هجری شمسی", "ه.ق": "هجری قمری", "ق.م": "قبل از میلاد", "ج.ا.ا": "جمهوری اسلامی ایران",
}
PERSIAN_ABBREVIATION_PATTERN = (
    r"(?<![\u0600-\u06ff.])(?:" + "|".join(key.replace(".", r"\.") for key in _PERSIAN_EXPANSIONS) + r")\.?"
    r"(?![\u0600-\u06ff])"
)


def expand_abbreviation(abbreviation: str) -> str:
    """"Dr." → "Doctor", "ه.ش." → "هجری شمسی"; an initialism with no entry is spelled ("U.S." → "U S")."""
    persian = _PERSIAN_EXPANSIONS.get(abbreviation.rstrip("."))
    if persian is not None:
        return persian
    known = _EXPANSIONS.get(abbreviation.lower())
    if known is not None:
        return known
    return " ".join(letter for letter in abbreviation if letter != ".")
