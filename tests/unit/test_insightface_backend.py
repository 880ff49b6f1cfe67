"""The insightface backend on small ONNX models the tests build with the real SCRFD and 1k3d68 signatures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from infra.settings import Settings
from processors.registration.faces import FaceTracker
from processors.registration.insightface import InsightFaceAnalyser, ModelPackError, read_pack
from processors.registration.main import create_analyser
from schemas.avatar import RgbFrame

DETECTOR_SIDE = 160
STRIDES = (8, 16, 32)
BOX_DISTANCE = 1.0  # every anchor's box reaches one stride out from its centre on each side
LANDMARK_SIDE = 192


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def build_scrfd(path: Path, *, with_keypoints: bool = True, side: int | None = DETECTOR_SIDE) -> Path:
    """An SCRFD-shaped detector of bright squares: a stride-32 cell that is mostly white scores ~1.

    Input ``input.1`` 1×3×S×S (normalised like SCRFD); outputs per stride s, with N = (S/s)² × 2 anchors:
    scores 1×N×1, box distances 1×N×4 (all BOX_DISTANCE), key points 1×N×10 — ordered scores, boxes, kps.
    """
    dims: list[int | str] = [1, 3, side, side] if side else [1, 3, "height", "width"]
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, dims)
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["grey"], axes=[1], keepdims=1)]
    scores, boxes, points, outputs = [], [], [], []
    for stride in STRIDES:
        anchors: int | str = (side // stride) ** 2 * 2 if side else f"anchors{stride}"
        nodes += [
            helper.make_node("AveragePool", ["grey"], [f"pool{stride}"], kernel_shape=[stride, stride],
                             strides=[stride, stride]),
            _const(f"shape{stride}", np.array([-1, 1], dtype=np.int64)),
            helper.make_node("Reshape", [f"pool{stride}", f"shape{stride}"], [f"flat{stride}"]),
            _const(f"gain{stride}", np.array(20.0 if stride == 32 else 0.0, dtype=np.float32)),
            _const(f"bias{stride}", np.array(-0.5, dtype=np.float32)),
            helper.make_node("Add", [f"flat{stride}", f"bias{stride}"], [f"shifted{stride}"]),
            helper.make_node("Mul", [f"shifted{stride}", f"gain{stride}"], [f"logit{stride}"]),
            helper.make_node("Sigmoid", [f"logit{stride}"], [f"prob{stride}"]),
            # Strides 8 and 16 score sigmoid(0) = 0.5 everywhere: push them under any threshold.
            _const(f"keep{stride}", np.array(1.0 if stride == 32 else 0.0, dtype=np.float32)),
            helper.make_node("Mul", [f"prob{stride}", f"keep{stride}"], [f"kept{stride}"]),
            helper.make_node("Concat", [f"kept{stride}", f"kept{stride}"], [f"pair{stride}"], axis=1),
            _const(f"out_shape{stride}", np.array([1, -1, 1], dtype=np.int64)),
            helper.make_node("Reshape", [f"pair{stride}", f"out_shape{stride}"], [f"score_{stride}"]),
            # Box distances and key points shaped like the scores, whatever the input size.
            _const(f"none{stride}", np.array(0.0, dtype=np.float32)),
            helper.make_node("Mul", [f"score_{stride}", f"none{stride}"], [f"zeros{stride}"]),
            _const(f"reach{stride}", np.array(BOX_DISTANCE, dtype=np.float32)),
            helper.make_node("Add", [f"zeros{stride}", f"reach{stride}"], [f"ones{stride}"]),
            helper.make_node("Concat", [f"ones{stride}"] * 4, [f"bbox{stride}"], axis=2),
            helper.make_node("Concat", [f"zeros{stride}"] * 10, [f"kps{stride}"], axis=2),
        ]
        scores.append(helper.make_tensor_value_info(f"score_{stride}", TensorProto.FLOAT, [1, anchors, 1]))
        boxes.append(helper.make_tensor_value_info(f"bbox{stride}", TensorProto.FLOAT, [1, anchors, 4]))
        points.append(helper.make_tensor_value_info(f"kps{stride}", TensorProto.FLOAT, [1, anchors, 10]))
    outputs = scores + boxes + (points if with_keypoints else [])
    return _save(helper.make_graph(nodes, "scrfd_test", [image], outputs), path)


def template_points() -> np.ndarray:
    """68 distinct points in the crop's [-1, 1] coordinates: a ring of 17, then rows of the rest."""
    angles = np.linspace(0.2 * np.pi, 0.8 * np.pi, 17)
    jaw = np.stack([-0.5 * np.cos(angles), 0.5 * np.sin(angles)], axis=1)
    inner = np.stack(np.meshgrid(np.linspace(-0.4, 0.4, 17), np.linspace(-0.4, 0.2, 3)), axis=-1).reshape(-1, 2)
    return np.concatenate([jaw, inner]).astype(np.float32)


def build_landmarks(path: Path, *, values: int = 3309) -> Path:
    """A 1k3d68-shaped model (input ``data`` 1×3×192×192, output ``fc1`` 1×values): the template, whatever the
    input (times 0 · the input's mean, so the graph does read its input)."""
    rows = values // 3 if values in (3309, 204) else values // 2
    width = 3 if values in (3309, 204) else 2
    table = np.full((rows, width), 0.9, dtype=np.float32)  # the points a 68-point reader must skip
    if rows >= 68:
        table[-68:, :2] = template_points()
    image = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, LANDMARK_SIDE, LANDMARK_SIDE])
    nodes = [
        helper.make_node("ReduceMean", ["data"], ["mean"], keepdims=0),
        _const("zero", np.array(0.0, dtype=np.float32)),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        _const("template", table.reshape(1, -1)),
        helper.make_node("Add", ["template", "nothing"], ["fc1"]),
    ]
    output = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, values])
    return _save(helper.make_graph(nodes, "landmark_test", [image], [output]), path)


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("buffalo_test")
    build_scrfd(folder / "det_10g.onnx")
    build_landmarks(folder / "1k3d68.onnx")
    return folder


@pytest.fixture(scope="module")
def analyser(pack: Path) -> InsightFaceAnalyser:
    return InsightFaceAnalyser.from_pack(pack, threads=1)


def white_square_photo(width: int = 320, height: int = 240) -> RgbFrame:
    """Black, with a white square that fills stride-32 cell (row 2, column 3) once scaled into the 160 px input."""
    photo = np.zeros((height, width, 3), dtype=np.uint8)
    photo[128:192, 192:256] = 255
    return photo


def test_pack_models_are_found_by_insightface_file_names(pack: Path) -> None:
    config = read_pack(pack)
    assert (config.detector.name, config.landmarks.name) == ("det_10g.onnx", "1k3d68.onnx")


def test_detection_decodes_the_anchor_box_back_to_original_image_coordinates(analyser: InsightFaceAnalyser) -> None:
    faces = analyser.detect(white_square_photo())
    # Cell (2, 3) at stride 32 is anchored at (96, 64) in the 160 px input; one stride each way, halved scale.
    assert len(faces) == 1, "both anchors of the cell are one face after non-maximum suppression"
    assert faces[0].box == (128, 64, 256, 192)
    assert faces[0].score > 0.99


def test_frame_without_a_bright_square_has_no_detection(analyser: InsightFaceAnalyser) -> None:
    assert analyser.detect(np.zeros((240, 320, 3), dtype=np.uint8)) == []


def test_two_separate_squares_are_two_faces(analyser: InsightFaceAnalyser) -> None:
    photo = white_square_photo()
    photo[0:64, 0:64] = 255  # cell (0, 0)
    boxes = sorted(face.box for face in analyser.detect(photo))
    assert boxes == [(-64, -64, 64, 64), (128, 64, 256, 192)]


def test_landmarks_are_the_last_68_points_mapped_back_from_the_enlarged_crop(analyser: InsightFaceAnalyser) -> None:
    box = (100, 50, 200, 170)  # 100 × 120: the crop is 1.5 × 120 = 180 px around the centre (150, 110)
    points = analyser.landmarks(white_square_photo(), box)
    expected = np.array([150.0, 110.0]) + template_points() * 90.0
    assert points.shape == (68, 2) and points.dtype == np.float32
    np.testing.assert_allclose(points, expected, atol=1e-3)


@pytest.mark.parametrize("values", [136, 204])
def test_68_point_models_with_2d_or_3d_outputs_are_read_too(values: int, pack: Path, tmp_path: Path) -> None:
    build_scrfd(tmp_path / "det_500m.onnx")
    build_landmarks(tmp_path / "landmarks68.onnx", values=values)
    analyser = InsightFaceAnalyser.from_pack(tmp_path, threads=1)
    points = analyser.landmarks(white_square_photo(), (0, 0, 60, 60))
    np.testing.assert_allclose(points, np.array([30.0, 30.0]) + template_points() * 45.0, atol=1e-3)


def test_a_detector_exported_with_a_dynamic_size_runs_at_640(tmp_path: Path) -> None:
    build_scrfd(tmp_path / "scrfd_dynamic.onnx", side=None)
    build_landmarks(tmp_path / "1k3d68.onnx")
    photo = np.zeros((240, 320, 3), dtype=np.uint8)
    photo[64:80, 96:112] = 255  # doubled into the 640 px input: stride-32 cell (row 4, column 6)
    faces = InsightFaceAnalyser.from_pack(tmp_path, threads=1).detect(photo)
    assert [face.box for face in faces] == [(80, 48, 112, 80)]


def test_tracker_follows_the_face_with_the_insightface_analyser(analyser: InsightFaceAnalyser) -> None:
    frames = [white_square_photo() for _ in range(4)]
    track = FaceTracker(analyser, dominance=2.0).track(frames)
    assert track.found == 4 and not track.ambiguous
    first = track.observations[0]
    assert first is not None and first.box == (128.0, 64.0, 256.0, 192.0)


def test_106_point_model_is_refused_with_a_hint_to_use_1k3d68(tmp_path: Path) -> None:
    build_scrfd(tmp_path / "det_10g.onnx")
    build_landmarks(tmp_path / "2d106det_68.onnx", values=212)
    with pytest.raises(ModelPackError, match=r"use 1k3d68\.onnx"):
        InsightFaceAnalyser.from_pack(tmp_path)


def test_missing_pack_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelPackError, match="is not a directory"):
        InsightFaceAnalyser.from_pack(tmp_path / "nowhere")


def test_pack_without_a_detector_names_the_expected_files(tmp_path: Path) -> None:
    build_landmarks(tmp_path / "1k3d68.onnx")
    with pytest.raises(ModelPackError, match=r"no SCRFD detector .*det_\*\.onnx or scrfd\*\.onnx"):
        InsightFaceAnalyser.from_pack(tmp_path)


def test_pack_without_a_landmark_model_names_the_expected_files(tmp_path: Path) -> None:
    build_scrfd(tmp_path / "det_10g.onnx")
    with pytest.raises(ModelPackError, match="no 68-point landmark model"):
        InsightFaceAnalyser.from_pack(tmp_path)


def test_file_that_is_not_onnx_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "det_10g.onnx").write_bytes(b"<html>404 not found</html>")
    build_landmarks(tmp_path / "1k3d68.onnx")
    with pytest.raises(ModelPackError, match=r"det_10g\.onnx is not a loadable ONNX model"):
        InsightFaceAnalyser.from_pack(tmp_path)


def test_detector_with_the_wrong_outputs_is_refused(tmp_path: Path) -> None:
    build_landmarks(tmp_path / "det_10g.onnx")  # a landmark model where the detector should be
    build_landmarks(tmp_path / "1k3d68.onnx")
    with pytest.raises(ModelPackError, match="SCRFD detector has"):
        InsightFaceAnalyser.from_pack(tmp_path)


def test_pack_json_names_the_files_and_may_not_point_outside_the_pack(pack: Path, tmp_path: Path) -> None:
    (tmp_path / "pack.json").write_text('{"detector": "../../det_10g.onnx", "landmarks": "1k3d68.onnx"}')
    with pytest.raises(ModelPackError, match="does not exist"):
        read_pack(tmp_path)
    build_scrfd(tmp_path / "my_detector.onnx")
    build_landmarks(tmp_path / "my_landmarks.onnx")
    (tmp_path / "pack.json").write_text('{"detector": "my_detector.onnx", "landmarks": "my_landmarks.onnx",'
                                        ' "score_threshold": 0.3}')
    config = read_pack(tmp_path)
    assert (config.detector.name, config.landmarks.name, config.score_threshold) == (
        "my_detector.onnx", "my_landmarks.onnx", 0.3)


def test_settings_with_insightface_need_an_existing_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="INSIGHTFACE_MODEL_DIR must name"):
        Settings(face_backend="insightface")
    with pytest.raises(ValueError, match="is not a directory"):
        Settings(face_backend="insightface", insightface_model_dir=tmp_path / "missing")


def test_gateway_loads_the_configured_insightface_backend_at_start_up(pack: Path, tmp_path: Path) -> None:
    analyser = create_analyser(Settings(face_backend="insightface", insightface_model_dir=pack))
    assert isinstance(analyser, InsightFaceAnalyser) and analyser.name == "insightface-scrfd-68"
    with pytest.raises(ModelPackError):
        create_analyser(Settings(face_backend="insightface", insightface_model_dir=tmp_path))
