"""ONNX Runtime really runs on the GPU: a tiny model the test builds, and the Wav2Lip engine's session options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from processors.lipsync.engines.wav2lip import open_session

pytestmark = pytest.mark.gpu


def tiny_model(path: Path) -> Path:
    """y = relu(x @ w + b) with fixed weights: small, but a MatMul the CUDA provider takes."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["z"]),
         helper.make_node("Relu", ["z"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 32])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel()),
                     helper.make_tensor("b", TensorProto.FLOAT, b.shape, b)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_a_session_runs_on_the_cuda_provider_and_matches_the_cpu(tmp_path: Path) -> None:
    path = tiny_model(tmp_path / "tiny.onnx")
    options = ort.SessionOptions()
    options.log_severity_level = 1  # fallbacks to CPU for a node are logged, not hidden
    gpu = ort.InferenceSession(str(path), options, providers=["CUDAExecutionProvider"])
    assert gpu.get_providers()[0] == "CUDAExecutionProvider", gpu.get_providers()
    cpu = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((16, 64)).astype(np.float32)
    on_gpu, = gpu.run(None, {"x": x})
    on_cpu, = cpu.run(None, {"x": x})
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-3, atol=1e-3)
    # The input really went to device memory: an OrtValue placed on cuda:0 is accepted and answered the same.
    on_device = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    assert on_device.device_name() == "cuda"
    binding = gpu.io_binding()
    binding.bind_ortvalue_input("x", on_device)
    binding.bind_output("y", "cuda")
    gpu.run_with_iobinding(binding)
    np.testing.assert_allclose(binding.copy_outputs_to_cpu()[0], on_cpu, rtol=1e-3, atol=1e-3)


def test_the_lipsync_engine_session_uses_cuda_with_the_gpu_memory_limit(tmp_path: Path) -> None:
    path = tiny_model(tmp_path / "tiny.onnx")
    limit = 512 * 2**20  # GPU_MEMORY_LIMIT=512MiB
    session = open_session(path, use_gpu=True, gpu_memory_limit=limit)
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    assert session.get_provider_options()["CUDAExecutionProvider"]["gpu_mem_limit"] == str(limit)
