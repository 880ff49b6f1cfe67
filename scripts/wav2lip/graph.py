"""Builds the published Wav2Lip generator as an ONNX graph, from a checkpoint's weights or random ones.

The architecture (Prajwal et al., "A Lip Sync Expert Is All You Need", 2020) is a face encoder of seven
blocks over the 6-channel 96x96 input (lower half masked + reference), an audio encoder over one 80x16 mel
window, and a decoder that starts from the audio embedding and, block by block, upsamples and concatenates
the face encoder's feature map of the same size (skip connections), ending in a 3-channel sigmoid image.
Every convolution but the last is conv + batch norm + ReLU, some with an identity residual before the ReLU.

Weights are named as in the reference PyTorch state dict (``face_encoder_blocks.1.0.conv_block.0.weight``
...), so a converted checkpoint maps one to one. Batch norm is folded into the convolutions here: the graph
holds only Conv/ConvTranspose, Add, Relu, Concat and Sigmoid.

``rewrite_transposed=True`` replaces every ConvTranspose by an exactly equivalent Conv: the stride-2 ones
by a 2x2 Conv with four output phases per channel followed by a pixel shuffle (DepthToSpace), the stride-1
one by a Conv with the flipped kernel. ONNX Runtime's int8 quantiser leaves ConvTranspose in fp32, so this
is what lets the whole decoder run in int8.

``width_divisor`` divides every inner channel count (tests use a slim variant for speed); the model's
inputs and output keep the real signature: mel (B,1,80,16), face (B,6,96,96) → (B,3,96,96) in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

MEL_INPUT = "mel"
FACE_INPUT = "face"
FRAMES_OUTPUT = "frames"
MEL_SHAPE = (1, 80, 16)
FACE_SHAPE = (6, 96, 96)
OUTPUT_SHAPE = (3, 96, 96)
OPSET = 17
BATCH_NORM_EPS = 1e-5  # PyTorch's BatchNorm2d default, which the reference model uses

FloatArray = npt.NDArray[np.float32]
StateDict = Mapping[str, npt.NDArray[np.generic]]


class HasShape(Protocol):
    """A tensor, loaded (numpy) or not yet (a checkpoint's TensorRef)."""

    @property
    def shape(self) -> tuple[int, ...]: ...


class CheckpointMismatch(ValueError):
    """The weights given do not fit the Wav2Lip generator (missing, unexpected or misshapen tensors)."""


@dataclass(frozen=True)
class ConvLayer:
    """One convolution of the generator, named by its state-dict prefix."""

    name: str
    cin: int
    cout: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    residual: bool = False
    transposed: bool = False
    output_padding: int = 0
    batch_norm: bool = True  # the final 1x1 convolution is a bare conv followed by the sigmoid

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        # PyTorch stores ConvTranspose weights as (in, out, kh, kw), Conv weights as (out, in, kh, kw).
        if self.transposed:
            return (self.cin, self.cout, *self.kernel)
        return (self.cout, self.cin, *self.kernel)

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every state-dict tensor of this layer and its shape."""
        if not self.batch_norm:
            return {f"{self.name}.weight": self.weight_shape, f"{self.name}.bias": (self.cout,)}
        conv, norm = f"{self.name}.conv_block.0", f"{self.name}.conv_block.1"
        return {
            f"{conv}.weight": self.weight_shape,
            f"{conv}.bias": (self.cout,),
            f"{norm}.weight": (self.cout,),
            f"{norm}.bias": (self.cout,),
            f"{norm}.running_mean": (self.cout,),
            f"{norm}.running_var": (self.cout,),
            f"{norm}.num_batches_tracked": (),
        }


@dataclass(frozen=True)
class Architecture:
    """The generator's layers: face encoder blocks, audio encoder, decoder blocks and output block."""

    face_encoder: tuple[tuple[ConvLayer, ...], ...]
    audio_encoder: tuple[ConvLayer, ...]
    face_decoder: tuple[tuple[ConvLayer, ...], ...]
    output_block: tuple[ConvLayer, ...]

    def layers(self) -> Iterator[ConvLayer]:
        for block in self.face_encoder:
            yield from block
        yield from self.audio_encoder
        for block in self.face_decoder:
            yield from block
        yield from self.output_block

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for layer in self.layers():
            shapes.update(layer.tensor_shapes())
        return shapes

    def parameter_count(self) -> int:
        """Trainable parameters (conv weights and biases, batch-norm scales and shifts), as PyTorch counts them."""
        return sum(
            int(np.prod(shape))
            for name, shape in self.tensor_shapes().items()
            if not name.endswith(("running_mean", "running_var", "num_batches_tracked"))
        )


def wav2lip_architecture(width_divisor: int = 1) -> Architecture:
    """The published Wav2Lip generator; ``width_divisor`` > 1 gives a slimmer model with the same I/O."""
    if width_divisor < 1 or 16 % width_divisor:
        raise ValueError(f"width_divisor must divide 16 (1, 2, 4, 8 or 16), got {width_divisor}")

    def ch(channels: int) -> int:
        return channels // width_divisor

    def conv(name: str, cin: int, cout: int, k: int | tuple[int, int], s: int | tuple[int, int] = 1,
             p: int = 0, *, residual: bool = False, raw_cin: bool = False) -> ConvLayer:
        return ConvLayer(name, cin if raw_cin else ch(cin), ch(cout), _pair(k), _pair(s), _pair(p), residual)

    def up(name: str, cin: int, cout: int, s: int, p: int, output_padding: int) -> ConvLayer:
        return ConvLayer(name, ch(cin), ch(cout), (3, 3), (s, s), (p, p), transposed=True,
                         output_padding=output_padding)

    def residuals(prefix: str, channels: int, first: int, count: int) -> tuple[ConvLayer, ...]:
        return tuple(conv(f"{prefix}.{first + i}", channels, channels, 3, 1, 1, residual=True) for i in range(count))

    face_encoder = (
        (conv("face_encoder_blocks.0.0", 6, 16, 7, 1, 3, raw_cin=True),),
        (conv("face_encoder_blocks.1.0", 16, 32, 3, 2, 1), *residuals("face_encoder_blocks.1", 32, 1, 2)),
        (conv("face_encoder_blocks.2.0", 32, 64, 3, 2, 1), *residuals("face_encoder_blocks.2", 64, 1, 3)),
        (conv("face_encoder_blocks.3.0", 64, 128, 3, 2, 1), *residuals("face_encoder_blocks.3", 128, 1, 2)),
        (conv("face_encoder_blocks.4.0", 128, 256, 3, 2, 1), *residuals("face_encoder_blocks.4", 256, 1, 2)),
        (conv("face_encoder_blocks.5.0", 256, 512, 3, 2, 1), *residuals("face_encoder_blocks.5", 512, 1, 1)),
        (conv("face_encoder_blocks.6.0", 512, 512, 3, 1, 0), conv("face_encoder_blocks.6.1", 512, 512, 1, 1, 0)),
    )
    audio_encoder = (
        conv("audio_encoder.0", 1, 32, 3, 1, 1, raw_cin=True),
        *residuals("audio_encoder", 32, 1, 2),
        conv("audio_encoder.3", 32, 64, 3, (3, 1), 1),
        *residuals("audio_encoder", 64, 4, 2),
        conv("audio_encoder.6", 64, 128, 3, 3, 1),
        *residuals("audio_encoder", 128, 7, 2),
        conv("audio_encoder.9", 128, 256, 3, (3, 2), 1),
        *residuals("audio_encoder", 256, 10, 1),
        conv("audio_encoder.11", 256, 512, 3, 1, 0),
        conv("audio_encoder.12", 512, 512, 1, 1, 0),
    )
    face_decoder = (
        (conv("face_decoder_blocks.0.0", 512, 512, 1, 1, 0),),
        (up("face_decoder_blocks.1.0", 1024, 512, 1, 0, 0), *residuals("face_decoder_blocks.1", 512, 1, 1)),
        (up("face_decoder_blocks.2.0", 1024, 512, 2, 1, 1), *residuals("face_decoder_blocks.2", 512, 1, 2)),
        (up("face_decoder_blocks.3.0", 768, 384, 2, 1, 1), *residuals("face_decoder_blocks.3", 384, 1, 2)),
        (up("face_decoder_blocks.4.0", 512, 256, 2, 1, 1), *residuals("face_decoder_blocks.4", 256, 1, 2)),
        (up("face_decoder_blocks.5.0", 320, 128, 2, 1, 1), *residuals("face_decoder_blocks.5", 128, 1, 2)),
        (up("face_decoder_blocks.6.0", 160, 64, 2, 1, 1), *residuals("face_decoder_blocks.6", 64, 1, 2)),
    )
    output_block = (
        conv("output_block.0", 80, 32, 3, 1, 1),
        ConvLayer("output_block.1", ch(32), 3, (1, 1), batch_norm=False),
    )
    return Architecture(face_encoder, audio_encoder, face_decoder, output_block)


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else value


def random_state_dict(arch: Architecture, seed: int = 0) -> dict[str, FloatArray]:
    """Weights of the right shapes, He-initialised, with batch-norm statistics that keep activations tame.

    The residual branches are scaled down so the signal does not grow block after block: with plain He
    weights the deep residual stacks drive the sigmoid into saturation, which would make the random model
    a poor stand-in for int8 calibration and accuracy checks.
    """
    rng = np.random.default_rng(seed)
    state: dict[str, FloatArray] = {}
    for layer in arch.layers():
        for name, shape in layer.tensor_shapes().items():
            state[name] = _random_tensor(rng, layer, name, shape)
    return state


def _random_tensor(rng: np.random.Generator, layer: ConvLayer, name: str, shape: tuple[int, ...]) -> FloatArray:
    if name.endswith("num_batches_tracked"):
        return np.zeros(shape, np.float32)
    if name in (f"{layer.name}.conv_block.0.weight", f"{layer.name}.weight"):
        fan_in = (layer.cout if layer.transposed else layer.cin) * layer.kernel[0] * layer.kernel[1]
        scale = np.sqrt(2.0 / fan_in) * (0.5 if layer.residual else 1.0)
        return (rng.standard_normal(shape) * scale).astype(np.float32)
    if name.endswith("running_var"):
        return rng.uniform(0.8, 1.2, shape).astype(np.float32)
    if name.endswith("conv_block.1.weight"):
        return rng.uniform(0.8, 1.2, shape).astype(np.float32)
    return (rng.standard_normal(shape) * 0.02).astype(np.float32)


def check_state_dict(state: Mapping[str, HasShape], arch: Architecture) -> None:
    """Raise CheckpointMismatch naming what is missing, unexpected or of the wrong shape."""
    expected = arch.tensor_shapes()
    problems: list[str] = []
    missing = [name for name in expected if name not in state and not name.endswith("num_batches_tracked")]
    unexpected = [name for name in state if name not in expected]
    misshapen = [
        f"{name}: {tuple(state[name].shape)} instead of {shape}"
        for name, shape in expected.items()
        if name in state and tuple(state[name].shape) != shape
    ]
    if missing:
        problems.append(f"{len(missing)} missing tensor(s), e.g. {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s), e.g. {', '.join(unexpected[:3])}")
    if misshapen:
        problems.append(f"{len(misshapen)} tensor(s) of the wrong shape, e.g. {'; '.join(misshapen[:3])}")
    if problems:
        raise CheckpointMismatch("these weights are not the Wav2Lip generator's: " + "; ".join(problems))


def build_model(
    state: StateDict,
    arch: Architecture | None = None,
    *,
    rewrite_transposed: bool = False,
    producer: str = "avatar-stream wav2lip_graph",
) -> onnx.ModelProto:
    """The generator as an ONNX model (batch norm folded), checked for consistency."""
    arch = arch or wav2lip_architecture()
    check_state_dict(state, arch)
    graph = _GraphWriter(state, rewrite_transposed)
    face_features = []
    x = FACE_INPUT
    for block in arch.face_encoder:
        x = graph.block(block, x)
        face_features.append(x)
    x = graph.block(arch.audio_encoder, MEL_INPUT)
    for block in arch.face_decoder:
        x = graph.block(block, x)
        x = graph.node("Concat", [x, face_features.pop()], axis=1)
    x = graph.block(arch.output_block, x)
    graph.node("Sigmoid", [x], output=FRAMES_OUTPUT)
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            "wav2lip",
            [_input(MEL_INPUT, MEL_SHAPE), _input(FACE_INPUT, FACE_SHAPE)],
            [_input(FRAMES_OUTPUT, OUTPUT_SHAPE)],
            graph.initializers,
        ),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=producer,
    )
    # Inference sessions may run an older ONNX Runtime than the onnx package that wrote the model.
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    return model


def _input(name: str, shape: tuple[int, ...]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape])


class _GraphWriter:
    """Accumulates nodes and initializers; names every tensor after the layer that makes it."""

    def __init__(self, state: StateDict, rewrite_transposed: bool) -> None:
        self.state = state
        self.rewrite_transposed = rewrite_transposed
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def node(self, op: str, inputs: list[str], output: str | None = None, **attributes: Any) -> str:
        self._count += 1
        output = output or f"{op.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def constant(self, name: str, value: FloatArray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    def block(self, layers: tuple[ConvLayer, ...], x: str) -> str:
        for layer in layers:
            x = self.layer(layer, x)
        return x

    def layer(self, layer: ConvLayer, x: str) -> str:
        weight, bias = folded_weights(self.state, layer)
        if layer.transposed and self.rewrite_transposed:
            y = self._transposed_as_conv(layer, weight, bias, x)
        elif layer.transposed:
            y = self.node(
                "ConvTranspose",
                [x, self.constant(f"{layer.name}.w", weight), self.constant(f"{layer.name}.b", bias)],
                layer.name, kernel_shape=list(layer.kernel), strides=list(layer.stride),
                pads=[*layer.padding, *layer.padding], output_padding=[layer.output_padding] * 2,
            )
        else:
            y = self._conv(layer.name, x, weight, bias, layer.stride, [*layer.padding, *layer.padding],
                           output=layer.name)
        if layer.residual:
            y = self.node("Add", [y, x])
        return self.node("Relu", [y]) if layer.batch_norm else y

    def _conv(self, name: str, x: str, weight: FloatArray, bias: FloatArray, stride: tuple[int, int],
              pads: list[int], output: str | None = None) -> str:
        return self.node(
            "Conv",
            [x, self.constant(f"{name}.w", weight), self.constant(f"{name}.b", bias)],
            output, kernel_shape=list(weight.shape[2:]), strides=list(stride), pads=pads,
        )

    def _transposed_as_conv(self, layer: ConvLayer, weight: FloatArray, bias: FloatArray, x: str) -> str:
        if layer.stride == (1, 1):
            kernel, pads = stride1_transposed_as_conv(weight, layer.padding)
            return self._conv(layer.name, x, kernel, bias, (1, 1), pads, output=layer.name)
        if layer.stride != (2, 2) or layer.kernel != (3, 3) or layer.padding != (1, 1) or layer.output_padding != 1:
            raise ValueError(f"{layer.name}: no exact Conv rewrite for this ConvTranspose")
        kernel = stride2_transposed_as_phase_conv(weight)
        phases = self._conv(layer.name, x, kernel, np.repeat(bias, 4), (1, 1), [0, 0, 1, 1], output=layer.name)
        return self.node("DepthToSpace", [phases], blocksize=2, mode="CRD")


def folded_weights(state: StateDict, layer: ConvLayer) -> tuple[FloatArray, FloatArray]:
    """The layer's kernel and bias with its batch norm (inference statistics) folded in."""
    if not layer.batch_norm:
        return _float(state[f"{layer.name}.weight"]), _float(state[f"{layer.name}.bias"])
    conv, norm = f"{layer.name}.conv_block.0", f"{layer.name}.conv_block.1"
    weight, bias = _float(state[f"{conv}.weight"]), _float(state[f"{conv}.bias"])
    scale = _float(state[f"{norm}.weight"]) / np.sqrt(_float(state[f"{norm}.running_var"]) + BATCH_NORM_EPS)
    shift = _float(state[f"{norm}.bias"]) - _float(state[f"{norm}.running_mean"]) * scale
    channel_axis = 1 if layer.transposed else 0
    shape = [1, 1, 1, 1]
    shape[channel_axis] = -1
    return (weight * scale.reshape(shape)).astype(np.float32), (bias * scale + shift).astype(np.float32)


def _float(value: npt.NDArray[np.generic]) -> FloatArray:
    return np.asarray(value, dtype=np.float32)


def stride1_transposed_as_conv(weight: FloatArray, padding: tuple[int, int]) -> tuple[FloatArray, list[int]]:
    """A stride-1 ConvTranspose is a Conv with the kernel flipped, in/out swapped and padding k-1-p."""
    kernel = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    ph, pw = weight.shape[2] - 1 - padding[0], weight.shape[3] - 1 - padding[1]
    return kernel, [ph, pw, ph, pw]


def stride2_transposed_as_phase_conv(weight: FloatArray) -> FloatArray:
    """The 2x2 Conv kernel whose output phases, pixel-shuffled, equal ConvTranspose(k=3, s=2, p=1, op=1).

    Output row 2i of the transposed conv takes input row i through kernel row 1; output row 2i+1 takes
    input row i through kernel row 2 and input row i+1 through kernel row 0 (likewise for columns). So a
    2x2 window at (i, j) of the input, padded by one row and column at the end, computes the four output
    pixels (2i+r, 2j+c); channel ``o*4 + r*2 + c`` holds phase (r, c) of output channel o, which is the
    order DepthToSpace's CRD mode reads.
    """
    cin, cout = weight.shape[:2]
    # taps[r][d]: the kernel row feeding output phase r from input offset d (None: no contribution).
    taps = ((1, None), (2, 0))
    kernel = np.zeros((cout, 2, 2, cin, 2, 2), dtype=np.float32)
    for r in range(2):
        for c in range(2):
            for dy in range(2):
                for dx in range(2):
                    ky, kx = taps[r][dy], taps[c][dx]
                    if ky is not None and kx is not None:
                        kernel[:, r, c, :, dy, dx] = weight[:, :, ky, kx].T
    return kernel.reshape(cout * 4, cin, 2, 2)
