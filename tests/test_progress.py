"""Progress lines: the arithmetic, the executors' datagrams and the driver's listener (no Spark)."""

from __future__ import annotations

import io
import logging
import socket
import time

import numpy as np
import pytest
from PIL import Image

from conftest import wait_for
from fruits_features.features.udf import EmbedSpec, embed_series
from fruits_features.progress import (
    ProgressEndpoint,
    ProgressListener,
    TaskProgress,
    every,
    format_duration,
    progress_line,
)


def test_progress_line_gives_counts_rate_and_eta() -> None:
    assert progress_line("embed", 250, 1000, 10.0) == "embed: 250/1000 images (25%), 25.0 images/s, ETA 30s"
    assert progress_line("embed", 0, 1000, 5.0).endswith("ETA unknown (no image finished yet)")
    assert progress_line("embed", 1000, 1000, 61.0) == (
        "embed: 1000/1000 images (100%), 16.4 images/s, done in 1m01s"
    )
    # A retried task's images may be heard twice: never more than the total.
    assert progress_line("embed", 1200, 1000, 10.0).startswith("embed: 1000/1000 images (100%)")


def test_durations_read_as_a_person_would() -> None:
    assert [format_duration(s) for s in (0.4, 42, 185, 7620)] == ["0s", "42s", "3m05s", "2h07m"]


def test_listener_keeps_the_latest_count_of_each_partition_and_of_its_latest_attempt() -> None:
    with ProgressListener("127.0.0.1") as listener:
        token = listener.endpoint.token
        for message in (f"{token} 0 0 32", f"{token} 1 0 64", f"{token} 0 0 96", f"{token} 0 0 64"):
            listener.record(message.encode())
        assert listener.done() == 96 + 64  # a late, smaller datagram does not go back
        listener.record(f"{token} 1 1 10".encode())  # partition 1 retried: its new attempt counts
        assert listener.done() == 96 + 10
        listener.record(f"{token} 1 0 500".encode())  # the failed attempt is no longer heard
        listener.record(b"wrong-token 2 0 1000")
        listener.record(f"{token} 2 zero 5".encode())
        listener.record(b"\xff\xfe")
        assert listener.done() == 96 + 10


def test_tasks_send_their_running_totals_over_udp_to_the_driver() -> None:
    with ProgressListener("127.0.0.1") as listener:
        first = TaskProgress(listener.endpoint, partition=0, attempt=0)
        second = TaskProgress(listener.endpoint, partition=1, attempt=0)
        for _ in range(3):
            first.add(32)
        second.add(20)
        first.close()
        second.close()

        assert wait_for(lambda: listener.done() == 3 * 32 + 20), listener.done()
        assert first.done == 96


def test_an_unreachable_driver_never_fails_the_task() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for host in ("127.0.0.1", "no-such-host.invalid"):
        task = TaskProgress(ProgressEndpoint(host, port, "t"), partition=0, attempt=0)
        for _ in range(3):
            task.add(8)
        task.close()
        assert task.done == 24
    assert TaskProgress(None, 0, 0).done == 0


def test_every_logs_at_its_interval_while_the_block_runs_and_never_when_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fruits_features.progress")
    with every(0.05, lambda elapsed: f"tick {elapsed:.2f}"):
        time.sleep(0.4)
    ticks = [r.getMessage() for r in caplog.records if r.getMessage().startswith("tick")]
    assert len(ticks) >= 3
    seen = [float(t.split()[1]) for t in ticks]
    assert seen == sorted(seen)

    caplog.clear()
    with every(0, lambda elapsed: "never"):
        time.sleep(0.1)
    assert not caplog.records


def fake_model(pixels: np.ndarray) -> np.ndarray:
    return np.ones((len(pixels), 2048), dtype=np.float32)


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_embed_series_reports_every_finished_image_once_rejects_included() -> None:
    spec = EmbedSpec(weights="unused", image_size=32, batch_size=4, threads=1, max_image_pixels=10**6)
    images: list[bytes | None] = [jpeg_bytes()] * 9 + [b"not an image", None]
    reported: list[int] = []

    frame = embed_series(images, spec, fake_model, on_done=reported.append)

    assert reported == [4, 4, 1, 2]  # three model batches, then the two rejects
    assert sum(reported) == len(frame) == len(images)
