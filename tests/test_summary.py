"""The lines a user reads at the end of a run (jobs/extract_features.py, jobs/score.py)."""

from __future__ import annotations

from typing import Any

from fruits_features.cli import score_summary_lines


def scoring_manifest() -> dict[str, Any]:
    """A scoring run's manifest as run_scoring writes it (the keys the summary reads)."""
    return {
        "job": "scoring",
        "run_id": "score-7",
        "output": "s3://b/scores/score-7",
        "counts": {"keys_listed": 12, "keys_skipped": 1, "images": 11, "featurized": 10, "rejected": 1},
        "timings_seconds": {"load_and_embed": 3.2, "total": 14.31},
        # the engine that embedded the images
        "model": {"engine": "onnxruntime", "precision": "fp32", "onnx": "s3://b/models/r50.64px.onnx"},
        # the saved pipeline that scored them
        "scoring_model": {
            "uri": "s3://b/features/train-1/model/",
            "run_id": "train-1",
            "image_size": 64,
            "k": 50,
        },
    }


def test_the_scoring_summary_names_the_model_that_scored_and_the_counts() -> None:
    lines = score_summary_lines(scoring_manifest())

    assert lines == [
        "scoring run score-7",
        "  model            s3://b/features/train-1/model/ (trained by run train-1, 64px)",
        "  images           11 (1 rejected)",
        "  scored           10",
        "  wall time        14.3s",
        "  predictions      s3://b/scores/score-7/predictions/",
    ]
    assert not any("onnxruntime" in line or "{" in line for line in lines)  # not the engine's section
