"""Media output of the lip-sync processor: a streaming fragmented-MP4 (H.264 + AAC) writer for MSE clients."""

from processors.lipsync.media.encoder import FragmentedMp4Writer

__all__ = ["FragmentedMp4Writer"]
