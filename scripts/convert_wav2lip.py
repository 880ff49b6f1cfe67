"""Converts a Wav2Lip PyTorch checkpoint (wav2lip.pth / wav2lip_gan.pth) to the ONNX model the engine loads.

No torch needed: the checkpoint is read with a restricted unpickler that never runs code from the file.

    python scripts/convert_wav2lip.py wav2lip_gan.pth                      # fp32 → .data/models/wav2lip.onnx
    python scripts/convert_wav2lip.py wav2lip_gan.pth --int8 -o w2l-int8.onnx   # static int8, ~2.5x faster on CPU

The weights are not ours to ship: get the checkpoint from the Wav2Lip authors (see docs/engines.md); it is
licensed for non-commercial research use only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file: the repository's packages

from infra.settings import Settings
from scripts.wav2lip.convert import ConversionError, convert, default_calibration_feeds
from scripts.wav2lip.graph import CheckpointMismatch
from scripts.wav2lip.torch_checkpoint import CheckpointError

DEFAULT_OUTPUT = Settings.model_fields["wav2lip_model_path"].default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="wav2lip.pth or wav2lip_gan.pth (torch.save file)")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"where to write the ONNX model (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--int8", action="store_true",
                        help="static int8 quantisation (QDQ, per-channel), calibrated on real face crops and speech")
    rewrite = parser.add_mutually_exclusive_group()
    rewrite.add_argument("--rewrite-convtranspose", dest="rewrite", action="store_true", default=None,
                         help="replace ConvTranspose by Conv + pixel shuffle (default with --int8)")
    rewrite.add_argument("--keep-convtranspose", dest="rewrite", action="store_false",
                         help="keep ConvTranspose (default without --int8: it is faster in fp32)")
    parser.add_argument("--calibration-image", type=Path, help="a face photo for int8 calibration "
                        "(default: scikit-image's astronaut); use one like your avatars")
    parser.add_argument("--calibration-audio", type=Path, help="a 16-bit WAV of speech for int8 calibration "
                        "(default: espeak-ng speaking Persian and English)")
    parser.add_argument("--calibration-frames", type=int, default=64, help="frames to calibrate on (default 64)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)

    try:
        calibration = None
        if args.int8:
            calibration = default_calibration_feeds(args.calibration_image, args.calibration_audio,
                                                    frames=args.calibration_frames, progress=progress)
        report = convert(args.checkpoint, args.output, int8=args.int8, rewrite_transposed=args.rewrite,
                         calibration=calibration, progress=progress)
    except (CheckpointError, CheckpointMismatch, ConversionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    progress(f"done: {report.output} ({'int8' if report.int8 else 'fp32'}) — set WAV2LIP_MODEL_PATH={report.output} "
             "and LIPSYNC_ENGINE=wav2lip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
