"""Measures avatar registration end to end (gateway → avatar.registrations → registration worker →
PostgreSQL → gateway) and loading face data into the lip-sync cache; prints a table.

    python scripts/benchmark_registration.py                        # ~2 minutes on 2 cores
    python scripts/benchmark_registration.py --runs 5
    python scripts/benchmark_registration.py --in-gateway-tree ../main-before-issue-12

The gateway and the registration worker run as their own processes (`python -m gateway.main`,
`python -m processors.registration.main`, dlib backend) against an embedded broker and a throw-away database
on the local PostgreSQL (or pgserver). ``--in-gateway-tree`` names a checkout from before issue 12 (where the
gateway analysed uploads itself): its gateway alone is started from that tree, on a database of its own,
beside this tree's, and the two take turns upload by upload (the machine is shared), for a column to compare.
Figures, medians over the runs:
- registration of a 512×512 photo (the astronaut PNG), of a 1280×720 JPEG photo and of a 10-second 1280×720
  25 fps H.264 clip (the astronaut panning): request sent → 201 received (a synchronous POST, which the
  gateway answers once the worker finished the job);
- loading a registered avatar's face data the way the lip-sync processor does (AvatarStore.load_face_data,
  until its first frame is decoded and renderable), and the same through a warm AvatarCache (a hit);
- what the cached video avatar holds in memory, against its decoded frames.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
import numpy.typing as npt
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.avatar_store import AvatarStore
from infra.broker import EmbeddedBroker, free_port
from infra.crypto import face_keyring
from infra.database import open_pool
from infra.face_frames import resident_bytes
from infra.migrations import throwaway_database
from infra.settings import PROJECT_ROOT, get_settings
from processors.lipsync.avatar_cache import AvatarCache
from scripts import report_table

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Row:
    what: str
    target: str
    measured: str
    before: str  # the in-gateway path's figure, "-" when not measured
    ok: bool | None


@dataclass(frozen=True)
class Uploads:
    """The files every measured path registers."""

    photo: bytes
    photo_720p: bytes
    clip: bytes


@dataclass(frozen=True)
class Registered:
    """One registration as the client saw it."""

    total_s: float  # request sent → 201 received
    analysis_s: float  # the face analysis alone, as the 201 body reports it
    avatar_id: str


@dataclass(frozen=True)
class Median:
    """Medians over the runs of one upload: the whole request, and what it spent outside the face analysis
    (staging, the Kafka hop, storing, the gateway's polling; or, in the gateway, the thread hand-off)."""

    total_s: float
    outside_s: float

    @classmethod
    def of(cls, runs: list[Registered]) -> Median:
        return cls(statistics.median(r.total_s for r in runs),
                   statistics.median(r.total_s - r.analysis_s for r in runs))


@dataclass(frozen=True)
class Timings:
    """Each upload's medians, and the ids registered."""

    photo: Median
    photo_720p: Median
    clip: Median
    photo_ids: list[str]
    clip_ids: list[str]


def service_env(tree: Path, bootstrap: str, database_url: str, port: int) -> dict[str, str]:
    # PYTHONPATH names the tree, so an editable install of another checkout never supplies the code; the upload
    # rate limit (10 a minute by default) would otherwise time the limiter, not the registration.
    return dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, DATABASE_URL=database_url, PORT=str(port),
                LOG_LEVEL="WARNING", MAX_UPLOAD_BYTES=str(50 * 1024 * 1024), PYTHONPATH=str(tree),
                RATE_LIMIT_UPLOADS_PER_MIN="100000")


@contextmanager
def running_services(tree: Path, bootstrap: str, database_url: str, *, worker: bool) -> Iterator[str]:
    """The gateway (and, with ``worker``, one registration worker) of ``tree``; yields the gateway's URL."""
    port = free_port()
    env = service_env(tree, bootstrap, database_url, port)
    modules = ["gateway.main", *(["processors.registration.main"] if worker else [])]
    processes = [subprocess.Popen([sys.executable, "-m", module], cwd=tree, env=env) for module in modules]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base, processes)
        yield base
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)


def wait_for_health(base: str, processes: list[subprocess.Popen[bytes]], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        for process in processes:
            if process.poll() is not None:
                raise SystemExit(f"{process.args!r} exited with {process.returncode} during start-up")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the gateway did not start within {timeout_s:.0f} s")
        time.sleep(0.2)


def photo_png() -> bytes:
    return bytes(cv2.imencode(".png", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))[1].tobytes())


def panning_frame(t: float, size: tuple[int, int] = (1280, 720)) -> npt.NDArray[np.uint8]:
    """The astronaut's head and shoulders (720 px tall) at time ``t`` of a slow pan and nod, on a grey canvas."""
    width, height = size
    head = np.asarray(data.astronaut())[0:320, 64:384]
    portrait = cv2.resize(head, (height, height), interpolation=cv2.INTER_CUBIC)
    matrix = np.array([[1, 0, (width - height) / 2 + 40 * np.sin(t)], [0, 1, 6 * np.sin(2.3 * t)]], dtype=np.float32)
    return np.asarray(cv2.warpAffine(portrait, matrix, (width, height), borderValue=(110, 110, 110)), dtype=np.uint8)


def photo_720p() -> bytes:
    """The pan's first frame as a 1280×720 JPEG (q92), what a phone or webcam photo looks like."""
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(panning_frame(0.0), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise RuntimeError("could not encode the 720p photo")
    return bytes(jpeg.tobytes())


def panning_clip(seconds: float = 10.0, fps: int = 25, size: tuple[int, int] = (1280, 720)) -> bytes:
    """The astronaut's head and shoulders (720 px tall) slowly panning and nodding on a grey 720p canvas, H.264."""
    width, height = size
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        stream = output.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "20"})
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(int(seconds * fps)):
            frame = panning_frame(index / fps, size)
            output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        output.mux(stream.encode())
    return buffer.getvalue()


def register(client: httpx.Client, content: bytes, filename: str) -> Registered:
    started = time.perf_counter()
    response = client.post("/avatar/register", data={"avatar_name": uuid.uuid4().hex, "user_id": "bench"},
                           files={"file": (filename, content, "application/octet-stream")})
    elapsed = time.perf_counter() - started
    if response.status_code != 201:  # a 504 registration_pending also lands here: the worker is too slow
        raise SystemExit(f"registration of {filename} failed: {response.status_code} {response.text[:300]}")
    body = response.json()
    return Registered(elapsed, float(body["analysis"]["analysis_ms"]) / 1000, str(body["avatar_id"]))


def median_time(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def load_until_renderable(store: AvatarStore, avatar_id: str) -> None:
    face_data = store.load_face_data(avatar_id)
    _ = face_data.frames[0].image  # the first frame decoded: what rendering needs to start


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds >= 0.001 else f"{seconds * 1e6:.1f} µs"


def time_uploads(bases: list[str], uploads: Uploads, runs: int) -> list[Timings]:
    """Register each upload ``runs`` times (the clip a third as often) through each gateway in ``bases``, taking
    turns upload by upload, so a change in the machine's load (it is shared) weighs on every path alike."""
    clients = [httpx.Client(base_url=base, timeout=300) for base in bases]
    try:
        for client in clients:
            register(client, uploads.photo, "warm-up.png")  # pays for imports, pools and the worker's group join
        plan = ([(uploads.photo, "photo.png")] * runs + [(uploads.photo_720p, "photo.jpg")] * runs
                + [(uploads.clip, "clip.mp4")] * max(1, runs // 3))
        seen: list[dict[str, list[Registered]]] = [{} for _ in clients]
        for content, filename in plan:
            for client, mine in zip(clients, seen, strict=True):
                mine.setdefault(filename, []).append(register(client, content, filename))
    finally:
        for client in clients:
            client.close()
    return [Timings(Median.of(mine["photo.png"]), Median.of(mine["photo.jpg"]), Median.of(mine["clip.mp4"]),
                    [r.avatar_id for r in mine["photo.png"]], [r.avatar_id for r in mine["clip.mp4"]])
            for mine in seen]


def measure(runs: int, before_tree: Path | None) -> list[Row]:
    print("encoding the 10-second 720p clip…", flush=True)
    uploads = Uploads(photo_png(), photo_720p(), panning_clip())
    broker = EmbeddedBroker(free_port()).start()
    try:
        with ExitStack() as running:
            database_url = running.enter_context(throwaway_database("avatar_bench", embedded_dir="bench-pg"))
            bases = [running.enter_context(running_services(PROJECT_ROOT, broker.bootstrap, database_url,
                                                            worker=True))]
            if before_tree is not None:
                # A database of its own: the old gateway registers its own sample avatar, migrates its own way.
                before_url = running.enter_context(throwaway_database("avatar_bench_before", embedded_dir="bench-pg"))
                bases.append(running.enter_context(running_services(before_tree, broker.bootstrap, before_url,
                                                                    worker=False)))
            print(f"timing gateway + registration worker{' against the in-gateway path' if before_tree else ''}…",
                  flush=True)
            timings = time_uploads(bases, uploads, runs)
            now, before = timings[0], (timings[1] if before_tree is not None else None)
            with httpx.Client(base_url=bases[0], timeout=30) as client:
                video_info = client.get(f"/avatar/{now.clip_ids[0]}/info").json()
            loads = measure_loads(database_url, now, runs)
    finally:
        broker.stop()
    frames = f"{video_info['frame_count']} frames of {video_info['width']}×{video_info['height']}"

    def then(pick: Callable[[Timings], float]) -> str:
        return "-" if before is None else fmt_s(pick(before))

    def ms_then(pick: Callable[[Timings], float]) -> str:
        return "-" if before is None else fmt_ms(pick(before))

    clip_name = f"10 s 720p video ({len(uploads.clip) / 1e6:.1f} MB)"
    return [
        Row("register 512×512 photo over HTTP", "≤ 1 s", fmt_s(now.photo.total_s), then(lambda t: t.photo.total_s),
            now.photo.total_s <= 1.0),
        Row("register 1280×720 JPEG photo over HTTP", "≤ 1 s", fmt_s(now.photo_720p.total_s),
            then(lambda t: t.photo_720p.total_s), now.photo_720p.total_s <= 1.0),
        Row(f"register {clip_name} over HTTP", "≤ 10 s", fmt_s(now.clip.total_s), then(lambda t: t.clip.total_s),
            now.clip.total_s <= 10.0),
        Row("  of the 720p photo's: outside the face analysis", "-", fmt_ms(now.photo_720p.outside_s),
            ms_then(lambda t: t.photo_720p.outside_s), None),
        Row("  of the video's: outside the face analysis", "-", fmt_ms(now.clip.outside_s),
            ms_then(lambda t: t.clip.outside_s), None),
        Row("load photo avatar from PostgreSQL (+ first frame)", "≤ 50 ms", fmt_ms(loads["photo"]), "-",
            loads["photo"] <= 0.05),
        Row(f"load video avatar from PostgreSQL ({frames})", "≤ 50 ms", fmt_ms(loads["video"]), "-",
            loads["video"] <= 0.05),
        Row("cached avatar, already in memory (hit)", "≤ 1 ms", fmt_ms(loads["hit"]), "-", loads["hit"] <= 0.001),
        Row("decode every frame of the video avatar (for reference)", "-", fmt_ms(loads["decode_all"]), "-", None),
        Row("video avatar memory in the cache / decoded frames", "-",
            f"{loads['resident'] / 1e6:.1f} MB / {loads['raw'] / 1e6:.1f} MB", "-", None),
    ]


def measure_loads(database_url: str, now: Timings, runs: int) -> dict[str, float]:
    """What the lip-sync processor pays to load the registered avatars, cold and cached."""
    pool = open_pool(database_url, 2, name="benchmark")
    try:
        store = AvatarStore(pool, face_keyring(get_settings()))  # the same keys the services above use
        video = store.load_face_data(now.clip_ids[0])
        cache = AvatarCache(store.load_face_data)
        cache.get(now.clip_ids[0])
        return {
            "photo": median_time(lambda: load_until_renderable(store, now.photo_ids[0]), runs * 3),
            "video": median_time(lambda: load_until_renderable(store, now.clip_ids[0]), runs * 3),
            "decode_all": median_time(lambda: [f.image for f in video.frames], 3),
            "hit": median_time(lambda: cache.get(now.clip_ids[0]), 2000),
            "resident": float(resident_bytes(cache.get(now.clip_ids[0]))),
            "raw": float(sum(frame.image.nbytes for frame in video.frames)),
        }
    finally:
        pool.close()


def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def print_table(rows: list[Row], before_tree: Path | None) -> None:
    before = f"in-gateway ({before_tree.name})" if before_tree else "in-gateway (not run)"
    header = ["figure", "target", "gateway + worker", before, "ok"]
    body = [[r.what, r.target, r.measured, r.before, "-" if r.ok is None else ("yes" if r.ok else "NO")]
            for r in rows]
    print(report_table.table("Avatar registration and face-data loading (medians)", header, body))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="registrations of each photo (the video: a third)")
    parser.add_argument("--in-gateway-tree", type=Path, default=None,
                        help="a checkout from before issue 12, whose gateway analyses uploads itself, to compare")
    args = parser.parse_args()
    before = args.in_gateway_tree.resolve() if args.in_gateway_tree else None
    print_table(measure(max(1, args.runs), before), before)


if __name__ == "__main__":
    main()
