"""Units of measure said after a number: their Persian name and their English singular and plural."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Unit:
    persian: str
    english: str
    english_plural: str


# Longest first, so "km/h" wins over "km" and "°C" over "°". "m", "g", "s" and "l" are left out: alone they
# are as often a letter or a word ("5 g" could be a network generation) as a unit.
UNITS: dict[str, Unit] = {
    "km/h": Unit("کیلومتر بر ساعت", "kilometer per hour", "kilometers per hour"),
    "kWh": Unit("کیلووات ساعت", "kilowatt hour", "kilowatt hours"),
    "mph": Unit("مایل بر ساعت", "mile per hour", "miles per hour"),
    "GHz": Unit("گیگاهرتز", "gigahertz", "gigahertz"),
    "MHz": Unit("مگاهرتز", "megahertz", "megahertz"),
    "kHz": Unit("کیلوهرتز", "kilohertz", "kilohertz"),
    "min": Unit("دقیقه", "minute", "minutes"),
    "km": Unit("کیلومتر", "kilometer", "kilometers"),
    "kg": Unit("کیلوگرم", "kilogram", "kilograms"),
    "cm": Unit("سانتی\u200cمتر", "centimeter", "centimeters"),
    "mm": Unit("میلی\u200cمتر", "millimeter", "millimeters"),
    "mg": Unit("میلی\u200cگرم", "milligram", "milligrams"),
    "ml": Unit("میلی\u200cلیتر", "milliliter", "milliliters"),
    "kW": Unit("کیلووات", "kilowatt", "kilowatts"),
    "MW": Unit("مگاوات", "megawatt", "megawatts"),
    "Hz": Unit("هرتز", "hertz", "hertz"),
    "GB": Unit("گیگابایت", "gigabyte", "gigabytes"),
    "MB": Unit("مگابایت", "megabyte", "megabytes"),
    "KB": Unit("کیلوبایت", "kilobyte", "kilobytes"),
    "TB": Unit("ترابایت", "terabyte", "terabytes"),
    "ms": Unit("میلی\u200cثانیه", "millisecond", "milliseconds"),
    "°C": Unit("درجه سانتی\u200cگراد", "degree Celsius", "degrees Celsius"),
    "°F": Unit("درجه فارنهایت", "degree Fahrenheit", "degrees Fahrenheit"),
    "°": Unit("درجه", "degree", "degrees"),
}
UNIT_PATTERN = "(?:" + "|".join(re.escape(symbol) for symbol in UNITS) + ")"
_TRAILING_UNIT_RE = re.compile(f"{UNIT_PATTERN}$")


def split_measure(text: str) -> tuple[str, Unit]:
    """"120 km/h" → ("120 ", the km/h unit)."""
    match = _TRAILING_UNIT_RE.search(text)
    if match is None:
        raise ValueError(f"no unit at the end of {text!r}")
    return text[: match.start()], UNITS[match.group()]
