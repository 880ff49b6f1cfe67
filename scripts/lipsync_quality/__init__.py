"""The lip-sync quality measure: what a viewer sees of the mouth, scored against the TTS's own phoneme timings.

``landmarks`` re-reads the lips on rendered frames with dlib's 68-point model; ``phonetics`` turns phoneme
events into timed phonetic classes and pauses; ``metrics`` scores a clip (bilabial closure, rounding,
labiodental raise, rest in pauses, audio-video lag); ``calibration`` derives the detector thresholds from
frames with a known closed and a known open mouth; ``reference`` renders known-good and known-bad clips.
"""
