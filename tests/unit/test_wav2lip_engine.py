"""The Wav2Lip path: architecture builder, torch-free checkpoint reader, converter (fp32/int8) and the engine.

Models are built here from the published architecture (a slim width for speed, the real I/O signature)
with random weights, and checkpoints are written in torch's own two on-disk formats by a small pickler
that emits the same opcodes torch.save does (torch itself is not installable here).
"""

from __future__ import annotations

import io
import itertools
import pickle
import struct
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest

from infra.settings import Settings
from processors.lipsync.engines.base import SAMPLES_PER_FRAME, BatchLipSyncEngine, RenderJob, render_jobs
from processors.lipsync.engines.wav2lip import (
    MASK_TOP,
    Wav2LipEngine,
    Wav2LipModelError,
    crop_box,
    make_face_plan,
)
from processors.lipsync.main import build_engine
from processors.lipsync.mel import mel_windows
from schemas.avatar import AvatarFaceData, FaceFrame
from scripts.wav2lip.convert import calibration_feeds, convert, write_model
from scripts.wav2lip.graph import (
    FACE_INPUT,
    FRAMES_OUTPUT,
    MEL_INPUT,
    Architecture,
    CheckpointMismatch,
    build_model,
    random_state_dict,
    wav2lip_architecture,
)
from scripts.wav2lip.torch_checkpoint import (
    CheckpointError,
    OpaqueObject,
    find_state_dict,
    load_tensors,
    read_checkpoint,
)
from tests.unit.face_fixtures import astronaut_photo, astronaut_video, espeak_speech, frame_tag

SLIM = 8  # channel divisor of the test models: ~0.6 M parameters, ~5 ms a frame
FloatArray = npt.NDArray[np.float32]
Tensor = npt.NDArray[Any]


# ---------------------------------------------------------------- torch.save's formats, written without torch


class _TorchGlobal:
    """A torch global (function or storage class), pickled as GLOBAL 'module\\nname' the way torch's are."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: object) -> None:  # pickle insists a reduce function be callable
        raise AssertionError("only ever pickled")


_REBUILD_TENSOR_V2 = _TorchGlobal("torch._utils", "_rebuild_tensor_v2")
_STORAGE_CLASSES = {np.dtype(np.float32): _TorchGlobal("torch", "FloatStorage"),
                    np.dtype(np.int64): _TorchGlobal("torch", "LongStorage"),
                    np.dtype(np.float16): _TorchGlobal("torch", "HalfStorage")}


_storage_keys = itertools.count()  # torch numbers a file's storages uniquely


class _Storage:
    def __init__(self, key: str, data: npt.NDArray[Any]) -> None:
        self.key, self.data = key, data


class _Tensor:
    """Pickles as torch does: _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)."""

    def __init__(self, storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def __reduce__(self) -> tuple[Any, ...]:
        return (_REBUILD_TENSOR_V2, (self.storage, self.offset, self.shape, self.stride, False, OrderedDict()))


_PythonPickler: Any = pickle._Pickler  # the pure-Python pickler, whose type dispatch can be extended


class _TorchPickler(_PythonPickler):
    """Protocol 2, storages as persistent ids, torch globals by name: what torch.save emits."""

    dispatch: ClassVar[dict[type, Any]] = dict(_PythonPickler.dispatch)

    def __init__(self, file: io.BytesIO, legacy: bool) -> None:
        super().__init__(file, protocol=2)
        self.legacy = legacy
        self.storages: dict[str, _Storage] = {}

    def persistent_id(self, obj: object) -> tuple[Any, ...] | None:
        if not isinstance(obj, _Storage):
            return None
        self.storages[obj.key] = obj
        storage_class = _STORAGE_CLASSES[obj.data.dtype]
        if self.legacy:  # torch < 1.6 added a view-metadata slot
            return ("storage", storage_class, obj.key, "cpu", obj.data.size, None)
        return ("storage", storage_class, obj.key, "cpu", obj.data.size)

    def _save_torch_global(self, obj: _TorchGlobal) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[_TorchGlobal] = _save_torch_global


def torch_tensors(arrays: Mapping[str, npt.NDArray[Any]], *, column_major: frozenset[str] = frozenset(),
                  share_storage: bool = False) -> OrderedDict[str, _Tensor]:
    """Tensors over storages: column-major ones get transposed strides, shared ones sit at offsets in one
    storage (as in checkpoints of flattened parameters)."""
    tensors: OrderedDict[str, _Tensor] = OrderedDict()
    shared: list[npt.NDArray[Any]] = []
    shared_key = str(next(_storage_keys))
    offset = 0
    for name, array in arrays.items():
        if name in column_major:
            flat, stride = array.ravel(order="F"), tuple(int(np.prod(array.shape[:i])) for i in range(array.ndim))
        else:
            flat, stride = array.ravel(), tuple(int(np.prod(array.shape[i + 1:])) for i in range(array.ndim))
        if share_storage and array.dtype == np.float32:
            shared.append(flat)
            tensors[name] = _Tensor(_Storage(shared_key, np.zeros(0, np.float32)), offset, array.shape, stride)
            offset += flat.size
        else:
            tensors[name] = _Tensor(_Storage(str(next(_storage_keys)), flat), 0, array.shape, stride)
    if shared:
        everything = np.concatenate(shared)
        for tensor in tensors.values():
            if tensor.storage.key == shared_key:
                tensor.storage.data = everything
    return tensors


def write_torch_checkpoint(path: Path, obj: object, *, legacy: bool) -> None:
    """``obj`` saved as torch.save would: the zip format (torch >= 1.6) or the legacy stream (torch 1.1)."""
    buffer = io.BytesIO()
    pickler = _TorchPickler(buffer, legacy)
    if legacy:
        for header in (0x1950A86A20F9469CFC6C, 1001,
                       {"protocol_version": 1001, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, buffer, protocol=2)
    pickler.dump(obj)
    storages = pickler.storages
    if legacy:
        keys = sorted(storages)
        pickle.dump(keys, buffer, protocol=2)
        for key in keys:
            data = np.ascontiguousarray(storages[key].data)
            buffer.write(struct.pack("<q", data.size) + data.astype(data.dtype.newbyteorder("<")).tobytes())
        path.write_bytes(buffer.getvalue())
        return
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("wav2lip_gan/data.pkl", buffer.getvalue())
        archive.writestr("wav2lip_gan/byteorder", "little")
        for key, storage in storages.items():
            archive.writestr(f"wav2lip_gan/data/{key}", np.ascontiguousarray(storage.data).tobytes())
        archive.writestr("wav2lip_gan/version", "3\n")


def wav2lip_checkpoint(state: Mapping[str, npt.NDArray[Any]], **layout: Any) -> dict[str, object]:
    """What Wav2Lip's training script saves: a DataParallel state dict plus optimiser state and counters."""
    tensors = torch_tensors({f"module.{name}": value for name, value in state.items()}, **layout)
    first = next(iter(state.values()))
    optimiser_moment = torch_tensors({"m": np.full(first.shape, 0.25, np.float32)})["m"]
    return {
        "state_dict": tensors,
        "optimizer": {"state": {0: {"step": 1200, "exp_avg": optimiser_moment}},
                      "param_groups": [{"lr": 1e-4, "betas": (0.5, 0.999), "params": [0]}]},
        "global_step": 1200,
        "global_epoch": 3,
    }


# ---------------------------------------------------------------- a numpy forward pass of the architecture


def _conv(x: Tensor, w: Tensor, b: Tensor, stride: tuple[int, int], pad: tuple[int, int]) -> Tensor:
    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    windows = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))[:, :, :: stride[0], :: stride[1]]
    return np.einsum("nchwij,ocij->nohw", windows, w, optimize=True) + b[None, :, None, None]


def _conv_transpose(x: Tensor, w: Tensor, b: Tensor, stride: int, pad: int, out_pad: int) -> Tensor:
    """By definition: every input pixel scatters its kernel-weighted value onto the output grid."""
    n, _, h, width = x.shape
    k = w.shape[2]
    full = np.zeros((n, w.shape[1], (h - 1) * stride + k + out_pad, (width - 1) * stride + k + out_pad), np.float64)
    for ky in range(k):
        for kx in range(k):
            full[:, :, ky : ky + stride * h : stride, kx : kx + stride * width : stride] += np.einsum(
                "nchw,co->nohw", x, w[:, :, ky, kx])
    out_h, out_w = (h - 1) * stride - 2 * pad + k + out_pad, (width - 1) * stride - 2 * pad + k + out_pad
    return full[:, :, pad : pad + out_h, pad : pad + out_w] + b[None, :, None, None]


def numpy_forward(state: Mapping[str, Tensor], arch: Architecture, mel: Tensor, face: Tensor) -> FloatArray:
    """Wav2Lip's forward pass with batch norm applied as a separate step (nothing folded)."""

    def layer(spec: Any, x: Tensor) -> Tensor:
        if not spec.batch_norm:
            return _conv(x, state[f"{spec.name}.weight"], state[f"{spec.name}.bias"], spec.stride, spec.padding)
        conv, norm = f"{spec.name}.conv_block.0", f"{spec.name}.conv_block.1"
        if spec.transposed:
            y = _conv_transpose(x, state[f"{conv}.weight"], state[f"{conv}.bias"], spec.stride[0], spec.padding[0],
                                spec.output_padding)
        else:
            y = _conv(x, state[f"{conv}.weight"], state[f"{conv}.bias"], spec.stride, spec.padding)
        shape = (1, -1, 1, 1)
        y = (y - state[f"{norm}.running_mean"].reshape(shape)) / np.sqrt(
            state[f"{norm}.running_var"].reshape(shape) + 1e-5)
        y = y * state[f"{norm}.weight"].reshape(shape) + state[f"{norm}.bias"].reshape(shape)
        if spec.residual:
            y = y + x
        return np.maximum(y, 0.0)

    feats = []
    x = face.astype(np.float64)
    for block in arch.face_encoder:
        for spec in block:
            x = layer(spec, x)
        feats.append(x)
    x = mel.astype(np.float64)
    for spec in arch.audio_encoder:
        x = layer(spec, x)
    for block in arch.face_decoder:
        for spec in block:
            x = layer(spec, x)
        x = np.concatenate([x, feats.pop()], axis=1)
    for spec in arch.output_block:
        x = layer(spec, x)
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def slim() -> Architecture:
    return wav2lip_architecture(SLIM)


@pytest.fixture(scope="module")
def slim_state(slim: Architecture) -> dict[str, FloatArray]:
    return random_state_dict(slim, seed=3)


@pytest.fixture(scope="module")
def slim_model(tmp_path_factory: pytest.TempPathFactory, slim: Architecture,
               slim_state: dict[str, FloatArray]) -> Path:
    path = tmp_path_factory.mktemp("wav2lip") / "slim.onnx"
    onnx.save(build_model(slim_state, slim), str(path))
    return path


@pytest.fixture(scope="module")
def engine(slim_model: Path) -> Wav2LipEngine:
    return Wav2LipEngine(slim_model, batch_size=8, threads=1)


def random_inputs(batch: int, seed: int = 0) -> dict[str, FloatArray]:
    rng = np.random.default_rng(seed)
    return {MEL_INPUT: rng.uniform(-4, 4, (batch, 1, 80, 16)).astype(np.float32),
            FACE_INPUT: rng.uniform(0, 1, (batch, 6, 96, 96)).astype(np.float32)}


def run_model(model: onnx.ModelProto | Path, feeds: Mapping[str, FloatArray]) -> FloatArray:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return np.asarray(session.run([FRAMES_OUTPUT], dict(feeds))[0])


def speech_job(avatar: AvatarFaceData, first_frame: int = 0, n_frames: int | None = None) -> RenderJob:
    speech = espeak_speech("The quick brown fox jumps over the lazy dog.", "en-us")
    n = n_frames if n_frames is not None else speech.shape[0] // SAMPLES_PER_FRAME
    return RenderJob(avatar, np.array(speech[: n * SAMPLES_PER_FRAME]), first_frame, n)


# ---------------------------------------------------------------- architecture and graph


def test_full_architecture_has_the_published_36_3_million_parameters() -> None:
    assert round(wav2lip_architecture().parameter_count() / 1e6, 1) == 36.3


def test_slim_model_keeps_the_real_io_signature(slim_model: Path) -> None:
    session = ort.InferenceSession(str(slim_model), providers=["CPUExecutionProvider"])
    inputs = {arg.name: arg.shape[1:] for arg in session.get_inputs()}
    assert inputs == {MEL_INPUT: [1, 80, 16], FACE_INPUT: [6, 96, 96]}
    assert [arg.shape[1:] for arg in session.get_outputs()] == [[3, 96, 96]]
    out = run_model(slim_model, random_inputs(3))
    assert out.shape == (3, 3, 96, 96)
    assert out.min() >= 0.0 and out.max() <= 1.0 and out.std() > 0.05


def test_onnx_graph_computes_the_architecture_forward_pass_with_batch_norm_unfolded() -> None:
    arch = wav2lip_architecture(16)
    state = random_state_dict(arch, seed=11)
    feeds = random_inputs(2, seed=5)
    expected = numpy_forward(state, arch, feeds[MEL_INPUT], feeds[FACE_INPUT])
    np.testing.assert_allclose(run_model(build_model(state, arch), feeds), expected, atol=2e-5)


def test_convtranspose_rewrite_to_conv_and_pixel_shuffle_is_exact(slim: Architecture,
                                                                  slim_state: dict[str, FloatArray]) -> None:
    rewritten = build_model(slim_state, slim, rewrite_transposed=True)
    assert "ConvTranspose" not in {node.op_type for node in rewritten.graph.node}
    assert "DepthToSpace" in {node.op_type for node in rewritten.graph.node}
    feeds = random_inputs(2, seed=9)
    np.testing.assert_allclose(run_model(rewritten, feeds), run_model(build_model(slim_state, slim), feeds),
                               atol=1e-5)


def test_weights_of_another_model_are_refused_with_what_does_not_fit(slim: Architecture,
                                                                     slim_state: dict[str, FloatArray]) -> None:
    wrong = dict(slim_state)
    del wrong["audio_encoder.3.conv_block.0.weight"]
    wrong["face_encoder_blocks.0.0.conv_block.0.weight"] = np.zeros((2, 6, 5, 5), np.float32)
    wrong["disc.conv.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointMismatch) as error:
        build_model(wrong, slim)
    message = str(error.value)
    assert "1 missing tensor(s), e.g. audio_encoder.3.conv_block.0.weight" in message
    assert "1 unexpected tensor(s), e.g. disc.conv.weight" in message
    assert "face_encoder_blocks.0.0.conv_block.0.weight: (2, 6, 5, 5) instead of (2, 6, 7, 7)" in message


# ---------------------------------------------------------------- reading torch checkpoints


@pytest.mark.parametrize("legacy", [False, True], ids=["zip-format", "legacy-format"])
def test_checkpoint_of_either_torch_format_reads_back_exactly(tmp_path: Path, legacy: bool) -> None:
    rng = np.random.default_rng(1)
    arrays: dict[str, Tensor] = {"conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
              "conv.bias": rng.standard_normal(4).astype(np.float32),
              "proj.weight": rng.standard_normal((5, 7)).astype(np.float32),
              "norm.num_batches_tracked": np.array(42, np.int64),
              "half.weight": rng.standard_normal((2, 3)).astype(np.float16)}
    path = tmp_path / "model.pth"
    tensors = torch_tensors(arrays, column_major=frozenset({"proj.weight"}), share_storage=True)
    write_torch_checkpoint(path, {"model_state": tensors, "step": 7}, legacy=legacy)
    checkpoint = read_checkpoint(path)
    assert checkpoint["step"] == 7
    loaded = load_tensors(find_state_dict(checkpoint))
    assert list(loaded) == list(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype
        np.testing.assert_array_equal(loaded[name], array)


def test_restricted_unpickler_never_runs_code_from_the_file(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = b"\x80\x02cos\nsystem\nq\x00X" + struct.pack("<I", len(f"touch {marker}")) + \
        f"touch {marker}".encode() + b"\x85R."
    path = tmp_path / "hostile.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
    result = read_checkpoint(path)
    assert isinstance(result, OpaqueObject) and "os.system" in repr(result)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="holds no state dict"):
        find_state_dict(result)


def test_files_that_are_not_checkpoints_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        read_checkpoint(tmp_path / "missing.pth")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(text)
    other_zip = tmp_path / "photos.pth"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("a.txt", "x")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_checkpoint(other_zip)


# ---------------------------------------------------------------- converter


@pytest.mark.parametrize("legacy", [False, True], ids=["zip-format", "legacy-format"])
def test_converted_checkpoint_gives_the_same_model_as_its_weights(tmp_path: Path, slim: Architecture,
                                                                   slim_state: dict[str, FloatArray],
                                                                   legacy: bool) -> None:
    checkpoint = tmp_path / "wav2lip_gan.pth"
    write_torch_checkpoint(checkpoint, wav2lip_checkpoint(slim_state), legacy=legacy)
    messages: list[str] = []
    report = convert(checkpoint, tmp_path / "out.onnx", arch=slim, progress=messages.append)
    assert not report.int8 and not report.rewritten
    assert any("tensors" in m for m in messages) and any("wrote" in m for m in messages)
    feeds = random_inputs(2, seed=4)
    np.testing.assert_array_equal(run_model(report.output, feeds), run_model(build_model(slim_state, slim), feeds))


def test_converter_script_turns_a_full_size_checkpoint_into_a_loadable_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    try:
        import convert_wav2lip
    finally:
        sys.path.pop(0)
    full = wav2lip_architecture()
    checkpoint = tmp_path / "wav2lip.pth"
    write_torch_checkpoint(checkpoint, wav2lip_checkpoint(random_state_dict(full, seed=2)), legacy=True)
    output = tmp_path / "models" / "wav2lip.onnx"
    assert convert_wav2lip.main([str(checkpoint), "-o", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "36.3 M parameters" in printed and "WAV2LIP_MODEL_PATH=" in printed
    engine = Wav2LipEngine(output, batch_size=1, threads=2)
    assert engine.signature.mel_input == MEL_INPUT


def test_converter_script_reports_a_foreign_checkpoint_as_an_error(
    tmp_path: Path, slim_state: dict[str, FloatArray], capsys: pytest.CaptureFixture[str]
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    try:
        import convert_wav2lip
    finally:
        sys.path.pop(0)
    checkpoint = tmp_path / "slim.pth"  # a slim model's weights do not fit the full-size architecture
    write_torch_checkpoint(checkpoint, wav2lip_checkpoint(slim_state), legacy=False)
    assert convert_wav2lip.main([str(checkpoint), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "error: these weights are not the Wav2Lip generator's" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_int8_conversion_quantises_every_convolution_and_stays_close_to_fp32(
    tmp_path: Path, slim: Architecture, slim_state: dict[str, FloatArray]
) -> None:
    avatar = astronaut_photo()
    speech = np.concatenate([espeak_speech("Hello there, how are you?", "en-us"), espeak_speech("سلام دوست من", "fa")])
    feeds = calibration_feeds(avatar.frames[0].image, avatar.frames[0].box, speech, frames=24)
    report = write_model(slim_state, tmp_path / "int8.onnx", int8=True, arch=slim, calibration=feeds)
    assert report.int8 and report.rewritten
    ops = [node.op_type for node in onnx.load(str(report.output)).graph.node]
    assert "ConvTranspose" not in ops
    assert ops.count("DequantizeLinear") > ops.count("Conv")  # weights and activations of (nearly) every conv
    assert report.int8_mean_error_levels is not None and report.int8_mean_error_levels < 6.0
    Wav2LipEngine(report.output, batch_size=4, threads=1).render(speech_job(avatar, n_frames=4))


# ---------------------------------------------------------------- engine start-up


def test_missing_model_is_a_start_up_error_naming_the_converter(tmp_path: Path) -> None:
    with pytest.raises(Wav2LipModelError, match=r"no Wav2Lip model at .*convert_wav2lip\.py"):
        Wav2LipEngine(tmp_path / "nowhere.onnx")


def test_file_that_is_not_onnx_is_a_start_up_error(tmp_path: Path) -> None:
    bogus = tmp_path / "wav2lip.onnx"
    bogus.write_bytes(b"PK\x03\x04 definitely not protobuf")
    with pytest.raises(Wav2LipModelError, match="is not a loadable ONNX model"):
        Wav2LipEngine(bogus)


def test_model_with_another_signature_is_refused_naming_what_it_has(tmp_path: Path) -> None:
    x = onnx.helper.make_tensor_value_info("audio", onnx.TensorProto.FLOAT, ["batch", 1, 80, 16])
    y = onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["batch", 1, 80, 16])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["audio"], ["image"])], "other", [x], [y])
    path = tmp_path / "other.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8), str(path))
    with pytest.raises(Wav2LipModelError, match=r"not a Wav2Lip generator: .* got audio\['batch', 1, 80, 16\]"):
        Wav2LipEngine(path)


def test_automatic_batch_size_is_calibrated_once_at_start_up(slim_model: Path) -> None:
    engine = Wav2LipEngine(slim_model, batch_size=0, threads=1)
    assert set(engine.calibration) >= {1, 2, 4}
    assert engine.batch_size in engine.calibration
    best = min(engine.calibration.values())
    assert engine.calibration[engine.batch_size] <= best * 1.05


def test_fixed_batch_export_pads_its_last_batch(tmp_path: Path, slim: Architecture,
                                                slim_state: dict[str, FloatArray]) -> None:
    model = build_model(slim_state, slim)
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 4
    path = tmp_path / "fixed.onnx"
    onnx.save(model, str(path))
    engine = Wav2LipEngine(path, threads=1)
    assert engine.signature.fixed_batch == 4 and engine.batch_size == 4
    assert len(engine.render(speech_job(astronaut_photo(), n_frames=6))) == 6


def test_lipsync_engine_setting_selects_wav2lip_and_a_missing_model_stops_start_up(
    tmp_path: Path, slim_model: Path
) -> None:
    engine = build_engine(Settings(_env_file=None, lipsync_engine="wav2lip", wav2lip_model_path=slim_model,
                                   wav2lip_batch_size=2, onnx_threads=1))
    assert isinstance(engine, Wav2LipEngine) and engine.batch_size == 2
    with pytest.raises(SystemExit, match="LIPSYNC_ENGINE=wav2lip: no Wav2Lip model at"):
        build_engine(Settings(_env_file=None, lipsync_engine="wav2lip", wav2lip_model_path=tmp_path / "none.onnx"))


# ---------------------------------------------------------------- rendering


def test_engine_is_a_batching_lipsync_engine(engine: Wav2LipEngine) -> None:
    assert engine.name == "wav2lip"
    assert isinstance(engine, BatchLipSyncEngine)


def test_frames_change_only_the_lower_face_inside_the_padded_box(engine: Wav2LipEngine) -> None:
    avatar = astronaut_photo()
    source = avatar.frames[0].image
    frames = engine.render(speech_job(avatar, n_frames=10))
    assert len(frames) == 10
    frame = avatar.frames[0]
    x0, y0, x1, y1 = crop_box(frame.box, engine.pads, 512, 512, float(frame.landmarks[8, 1]))
    assert y1 > frame.box[3] + 10  # lowered to the chin, then padded
    outside = np.ones((512, 512), bool)
    outside[y0:y1, x0:x1] = False
    upper = np.zeros((512, 512), bool)
    upper[y0 : y0 + int(MASK_TOP * (y1 - y0)), x0:x1] = True
    mouth = (slice(int(frame.landmarks[48:68, 1].min()), int(frame.landmarks[48:68, 1].max())),
             slice(int(frame.landmarks[48:68, 0].min()), int(frame.landmarks[48:68, 0].max())))
    for out in frames:
        assert out.shape == source.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out[outside], source[outside])
        np.testing.assert_array_equal(out[upper], source[upper])
        assert np.abs(out[mouth].astype(int) - source[mouth]).mean() > 5.0


def test_generated_mouth_follows_the_audio_window_of_each_frame(engine: Wav2LipEngine) -> None:
    avatar = astronaut_photo()
    speech = speech_job(avatar, n_frames=12)
    silent = RenderJob(avatar, np.zeros_like(speech.audio), 0, 12)
    batch = engine.prepare([speech, silent])
    np.testing.assert_array_equal(batch.mel[:12], mel_windows(speech.audio, 12))
    assert np.all(batch.mel[12:] == -4.0)  # silence is the floor of the normalised spectrogram
    faces = engine.infer(batch.mel, batch.face)
    assert np.abs(faces[:12] - faces[12:]).mean() > 0.01
    np.testing.assert_array_equal(faces[12], faces[13])  # same silence, same face: same output


def test_render_many_batches_sessions_without_mixing_their_frames(engine: Wav2LipEngine) -> None:
    photo, video = astronaut_photo(), astronaut_video(3)
    jobs = [speech_job(photo, 0, 5), speech_job(video, 7, 9), RenderJob(photo, np.zeros(0, np.float32), 0, 0)]
    together = render_jobs(engine, jobs)
    assert [len(frames) for frames in together] == [5, 9, 0]
    for job, frames in zip(jobs, together, strict=True):
        alone = engine.render(job)
        for a, b in zip(frames, alone, strict=True):
            assert np.abs(a.astype(int) - b).max() <= 1  # batch composition may move a float by an ulp
    assert [frame_tag(f) for f in together[1]] == [1, 0, 1, 2, 1, 0, 1, 2, 1]


def test_face_crops_are_cached_per_avatar_frame_and_renew_for_a_new_face(engine: Wav2LipEngine) -> None:
    avatar = astronaut_photo()
    assert engine.plan(avatar, 0) is engine.plan(avatar, 0)
    frame = avatar.frames[0]
    moved = FaceFrame(frame.image, (frame.box[0] + 8, *frame.box[1:]), frame.landmarks + 8)
    other = AvatarFaceData(avatar.avatar_id, (moved,))
    assert engine.plan(other, 0).box != engine.plan(avatar, 0).box


def test_face_input_is_the_bgr_crop_with_its_lower_half_masked_next_to_the_whole_crop() -> None:
    image = np.zeros((200, 200, 3), np.uint8)
    image[:, :, 0] = 200  # red in RGB
    plan = make_face_plan(image, (50, 40, 146, 136), pads=(0, 0, 0, 0))
    masked, reference = plan.face_input[:3], plan.face_input[3:]
    np.testing.assert_allclose(reference[2], 200 / 255, atol=1e-6)  # red is the model's third (BGR) channel
    assert np.all(reference[:2] == 0)
    np.testing.assert_array_equal(masked[:, :48], reference[:, :48])
    assert np.all(masked[:, 48:] == 0)
    assert plan.mask.shape == (96, 96, 1)
    assert plan.mask[:30].max() == 0.0 and plan.mask[70, 48, 0] == 1.0


def test_a_job_given_history_and_look_ahead_sees_the_windows_of_the_whole_request(engine: Wav2LipEngine) -> None:
    avatar = astronaut_photo()
    whole = speech_job(avatar, n_frames=50).audio
    expected = mel_windows(whole, 50)
    spf = SAMPLES_PER_FRAME
    ahead = engine.lookahead_frames
    job_audio = whole[20 * spf : (32 + ahead) * spf]
    exact = engine.prepare([RenderJob(avatar, job_audio, 20, 12, history=whole[: 20 * spf])]).mel
    np.testing.assert_array_equal(exact, expected[20:32])  # bit for bit, on the request's timeline
    # Without history the time before the job is taken as silence: only its first window reaches back.
    no_history = engine.prepare([RenderJob(avatar, job_audio, 20, 12)]).mel
    np.testing.assert_array_equal(no_history[1:], expected[21:32])
    assert np.abs(no_history[0] - expected[20]).max() > 0.1
    cut = engine.prepare([RenderJob(avatar, whole[20 * spf : 32 * spf], 20, 12, history=whole[: 20 * spf])]).mel
    assert np.abs(cut[-1] - expected[31]).max() > 0.5  # without look-ahead the last window is clamped


def test_the_crop_is_resized_bilinearly_as_wav2lip_was_trained() -> None:
    image = np.random.default_rng(2).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    plan = make_face_plan(image, (40, 40, 232, 232), pads=(0, 0, 0, 0))
    expected = cv2.resize(image[40:232, 40:232], (96, 96))  # cv2's default interpolation: INTER_LINEAR
    np.testing.assert_array_equal(plan.face_input[3:], expected[:, :, ::-1].transpose(2, 0, 1) / np.float32(255.0))


def test_io_binding_runs_the_model_to_the_same_frames_as_plain_runs(slim_model: Path, engine: Wav2LipEngine) -> None:
    """The CUDA provider's path (I/O binding, output buffers kept per batch size) runs here on the CPU device: the
    same code, the same frames; a short last batch reuses nothing of the full one's buffer."""
    bound = Wav2LipEngine(slim_model, batch_size=8, threads=1, io_binding=True)
    assert bound.io_binding and not engine.io_binding and bound.device == "cpu"
    photo = astronaut_photo()
    for job in (speech_job(photo, 0, 12), speech_job(photo, 3, 5), speech_job(photo, 0, 12)):
        for a, b in zip(bound.render(job), engine.render(job), strict=True):
            np.testing.assert_array_equal(a, b)
