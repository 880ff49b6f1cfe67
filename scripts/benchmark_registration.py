"""Measures avatar registration over HTTP and loading face data into the lip-sync cache; prints a table.

    python scripts/benchmark_registration.py            # ~1 minute: starts a broker, a database and the gateway
    python scripts/benchmark_registration.py --runs 9

The gateway runs as its own process (`python -m gateway.main`, dlib backend) against an embedded broker and a
throw-away database on the local PostgreSQL (or pgserver). Figures, medians over the runs:
- registration of a 512×512 photo (the astronaut PNG): request sent → 201 received;
- registration of a 10-second 1280×720 25 fps H.264 clip (the astronaut panning): the same;
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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
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

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Row:
    what: str
    target: str
    measured: str
    ok: bool | None


@contextmanager
def running_gateway(bootstrap: str, database_url: str) -> Iterator[str]:
    port = free_port()
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, DATABASE_URL=database_url, PORT=str(port),
               LOG_LEVEL="WARNING", MAX_UPLOAD_BYTES=str(50 * 1024 * 1024))
    process = subprocess.Popen([sys.executable, "-m", "gateway.main"], cwd=PROJECT_ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the gateway exited with {process.returncode} during start-up")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the gateway did not start within 90 s")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(20)


def photo_png() -> bytes:
    return bytes(cv2.imencode(".png", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))[1].tobytes())


def panning_clip(seconds: float = 10.0, fps: int = 25, size: tuple[int, int] = (1280, 720)) -> bytes:
    """The astronaut's head and shoulders (720 px tall) slowly panning and nodding on a grey 720p canvas, H.264."""
    width, height = size
    head = np.asarray(data.astronaut())[0:320, 64:384]
    portrait = cv2.resize(head, (height, height), interpolation=cv2.INTER_CUBIC)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        stream = output.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "20"})
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(int(seconds * fps)):
            t = index / fps
            matrix = np.array([[1, 0, (width - height) / 2 + 40 * np.sin(t)], [0, 1, 6 * np.sin(2.3 * t)]],
                              dtype=np.float32)
            frame = np.asarray(cv2.warpAffine(portrait, matrix, (width, height), borderValue=(110, 110, 110)),
                               dtype=np.uint8)
            output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        output.mux(stream.encode())
    return buffer.getvalue()


def register(client: httpx.Client, content: bytes, filename: str) -> tuple[float, str]:
    started = time.perf_counter()
    response = client.post("/avatar/register", data={"avatar_name": uuid.uuid4().hex, "user_id": "bench"},
                           files={"file": (filename, content, "application/octet-stream")})
    elapsed = time.perf_counter() - started
    if response.status_code != 201:
        raise SystemExit(f"registration of {filename} failed: {response.status_code} {response.text[:300]}")
    return elapsed, str(response.json()["avatar_id"])


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


def measure(runs: int) -> list[Row]:
    print("encoding the 10-second 720p clip…", flush=True)
    clip = panning_clip()
    photo = photo_png()
    rows: list[Row] = []
    broker = EmbeddedBroker(free_port()).start()
    try:
        with (throwaway_database("avatar_bench", embedded_dir="bench-pg") as database_url,
              running_gateway(broker.bootstrap, database_url) as base):
            with httpx.Client(base_url=base, timeout=120) as client:
                register(client, photo, "warm-up.png")  # the first request pays for imports and pools
                photo_times, photo_ids = zip(*(register(client, photo, "photo.png") for _ in range(runs)),
                                             strict=True)
                video_runs = max(1, runs // 3)
                video_times, video_ids = zip(*(register(client, clip, "clip.mp4") for _ in range(video_runs)),
                                             strict=True)
                video_info = client.get(f"/avatar/{video_ids[0]}/info").json()
            pool = open_pool(database_url, 2, name="benchmark")
            store = AvatarStore(pool, face_keyring(get_settings()))  # the same keys the gateway above uses
            load_photo = median_time(lambda: load_until_renderable(store, photo_ids[0]), runs * 3)
            load_video = median_time(lambda: load_until_renderable(store, video_ids[0]), runs * 3)
            video = store.load_face_data(video_ids[0])
            decode_all = median_time(lambda: [f.image for f in video.frames], 3)
            cache = AvatarCache(store.load_face_data)
            cache.get(video_ids[0])
            hit = median_time(lambda: cache.get(video_ids[0]), 2000)
            resident = resident_bytes(cache.get(video_ids[0]))
            raw = sum(frame.image.nbytes for frame in video.frames)
            pool.close()
    finally:
        broker.stop()
    frames = f"{video_info['frame_count']} frames of {video_info['width']}×{video_info['height']}"
    rows += [
        Row("register 512×512 photo over HTTP", "≤ 1 s", fmt_ms(statistics.median(photo_times)),
            statistics.median(photo_times) <= 1.0),
        Row(f"register 10 s 720p video over HTTP ({len(clip) / 1e6:.1f} MB)", "≤ 10 s",
            f"{statistics.median(video_times):.2f} s", statistics.median(video_times) <= 10.0),
        Row("load photo avatar from PostgreSQL (+ first frame)", "≤ 50 ms", fmt_ms(load_photo), load_photo <= 0.05),
        Row(f"load video avatar from PostgreSQL ({frames})", "≤ 50 ms", fmt_ms(load_video), load_video <= 0.05),
        Row("cached avatar, already in memory (hit)", "≤ 1 ms", fmt_ms(hit), hit <= 0.001),
        Row("decode every frame of the video avatar (for reference)", "-", fmt_ms(decode_all), None),
        Row("video avatar memory in the cache / decoded frames", "-",
            f"{resident / 1e6:.1f} MB / {raw / 1e6:.1f} MB", None),
    ]
    return rows


def print_table(rows: list[Row]) -> None:
    widths = [max(len(r.what) for r in rows), max(len(r.target) for r in rows), max(len(r.measured) for r in rows)]
    header = f"| {'figure':<{widths[0]}} | {'target':<{widths[1]}} | {'measured':<{widths[2]}} | ok  |"
    print(header)
    print("|" + "|".join("-" * (w + 2) for w in [*widths, 3]) + "|")
    for row in rows:
        verdict = "-" if row.ok is None else ("yes" if row.ok else "NO")
        print(f"| {row.what:<{widths[0]}} | {row.target:<{widths[1]}} | {row.measured:<{widths[2]}} | {verdict:<3} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="registrations of the photo (the video: a third)")
    args = parser.parse_args()
    print_table(measure(max(1, args.runs)))


if __name__ == "__main__":
    main()
