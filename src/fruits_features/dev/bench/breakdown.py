"""Where one job's wall time goes, from its manifest and the benchmark's own clock: the driver's
stages, the embed stage's tasks phase by phase, and the CPU the local S3 server took.

Pure functions over the dictionaries :func:`fruits_features.dev.bench.harness.run_job` returns.
"""

from __future__ import annotations

from typing import Any

# The driver's stages, in the order a run meets them (manifest timings_seconds).
DRIVER_STAGES = ("list", "preflight", "load_and_embed", "rejects", "reduce", "write", "report")
# The stages that run in a thread beside them (pipeline.run): their seconds overlap the others'.
BESIDE_STAGES = ("embeddings", "model_save")


def breakdown(job: dict[str, Any]) -> dict[str, Any]:
    """One job's seconds, split.

    Returns:
        ``wall``: spark-submit's wall time, ``split`` into ``spark_start`` (driver JVM start to
        the run's start), each driver stage, and ``other`` (what is left: the driver between
        stages, its shutdown); ``beside``: the stages that ran in a thread beside those
        (embeddings, model save); ``embed``: the embed stage per task slot (its tasks' seconds
        summed, over the slots that ran them), as ``model_load``, ``model``, ``prepare_wait``
        (the model waiting for decoded images), ``udf_other`` (inside the UDF but none of those:
        Arrow batches in and out, pandas) and ``outside_udf`` (the slot busy or idle outside the
        UDF: Python worker start, task scheduling, the JVM's side of the stage), with what ran
        hidden beside them (``decode``, ``read``, ``read_wait``); ``cpu``: the CPU seconds by
        process, the local S3 server's among them.
    """
    timings = job["timings_seconds"]
    wall = job["wall_seconds"]
    stages = {stage: timings[stage] for stage in DRIVER_STAGES if stage in timings}
    split: dict[str, float] = {"spark_start": timings.get("spark_start", 0.0), **stages}
    split["other"] = wall - sum(split.values())
    beside = {stage: timings[stage] for stage in BESIDE_STAGES if stage in timings}

    tasks = int(job.get("partitions") or 1)
    slots = max(1, min(tasks, int(job.get("task_slots") or tasks)))
    stage = timings["load_and_embed"]

    def per_slot(phase: str) -> float:
        return float(timings.get(f"executor_{phase}", 0.0)) / slots

    udf = per_slot("udf")
    embed = {
        "stage": stage,
        "tasks": tasks,
        "slots": slots,
        "model_load": per_slot("model_load"),
        "model": per_slot("model"),
        "prepare_wait": per_slot("prepare_wait"),
    }
    embed["udf_other"] = udf - embed["model_load"] - embed["model"] - embed["prepare_wait"]
    embed["outside_udf"] = stage - udf
    embed["hidden"] = {phase: per_slot(phase) for phase in ("decode", "read", "read_wait")}
    cpu = dict(job.get("cpu_seconds", {}))
    return {"wall": wall, "split": split, "beside": beside, "embed": embed, "cpu": cpu}


def ratios(job: dict[str, Any], own_ceiling: float, onnxruntime_ceiling: float) -> dict[str, float]:
    """The issue's two targets: the whole job (spark-submit's wall, Spark start included) against
    ONNX Runtime fp32's bare pass, and the embed stage against the bare engine it ran."""
    n = job["n"]
    return {
        "job_over_onnxruntime_bare": n / job["wall_seconds"] / onnxruntime_ceiling,
        "embed_over_own_bare": n / job["timings_seconds"]["load_and_embed"] / own_ceiling,
    }


def cpu_budget(ceiling: dict[str, Any], cores: int) -> dict[str, float]:
    """How close to its bare engine the embed stage can come on ``cores`` cores, from the CPU
    each image costs beside the model.

    The bare pass keeps every core on the model (``cores`` / its images/s of CPU per image). The
    job's tasks also decode each image (one core's decode ceiling) and GET it (boto3's CPU, and
    the local S3 server's where it shares the machine), on the same cores: however well those
    overlap the model, the stage cannot run faster than all of it takes.

    Returns:
        The CPU milliseconds per image of ``model``, ``decode``, ``get`` and ``s3_server``, and
        the ratio they allow: ``embed_bound`` with all of them, ``embed_bound_on_aws`` without the
        local S3 server.
    """
    per_image = {
        "model": cores * 1000 / ceiling["model_images_per_s"],
        "decode": 1000 / ceiling["decode_images_per_s"],
        "get": float(ceiling.get("get_cpu_ms", 0.0)),
        "s3_server": float(ceiling.get("s3_server_cpu_ms_per_get", 0.0)),
    }
    beside = per_image["decode"] + per_image["get"]
    model = per_image["model"]
    return {
        **per_image,
        "embed_bound": model / (model + beside + per_image["s3_server"]),
        "embed_bound_on_aws": model / (model + beside),
    }


def breakdown_lines(label: str, job: dict[str, Any]) -> list[str]:
    """The breakdown as the benchmark prints it."""
    parts = breakdown(job)
    split, embed, cpu = parts["split"], parts["embed"], parts["cpu"]
    wall = " + ".join(f"{name} {seconds:.1f}" for name, seconds in split.items())
    hidden = embed["hidden"]
    beside = ", ".join(f"{name} {seconds:.1f}" for name, seconds in parts["beside"].items())
    return [
        f"{label}: wall {parts['wall']:.1f} s = {wall}" + (f" (beside them: {beside})" if beside else ""),
        f"  embed stage {embed['stage']:.1f} s, {embed['tasks']} tasks on {embed['slots']} slots, per slot: "
        f"model {embed['model']:.1f} + model load {embed['model_load']:.1f} + waiting for decoded images "
        f"{embed['prepare_wait']:.1f} + Arrow/pandas {embed['udf_other']:.1f} + outside the UDF (worker "
        f"start, scheduling) {embed['outside_udf']:.1f}",
        f"  beside the model, per slot: decode+resize+preprocess {hidden['decode']:.1f}, S3 GETs "
        f"{hidden['read']:.1f} (summed over fetch threads), waited on GETs {hidden['read_wait']:.1f}",
        "  CPU s: " + ", ".join(f"{role} {seconds:.1f}" for role, seconds in cpu.items()),
    ]
