"""The benchmarks behind `make bench*` (scripts/bench.py runs them): one module per benchmark over
the shared harness (:mod:`.harness`) and one process sampler (:mod:`.sampling`).

`make bench`: where the job's time goes, against the model's own speed.

Measures, on N images copied from ../shared/data/fruits360-dev into a local S3 endpoint:

1. model ceiling: the bare ResNet50 forward pass over pre-decoded, pre-resized, preprocessed arrays
   (same batch size, image size and total threads as the job), in images/s;
2. decode ceiling: decode + resize + preprocess alone, one core, in images/s;
3. the job: `spark-submit jobs/extract_features.py` end to end, in images/s over the manifest's
   total, with its stage timings, how many images went through ResNet50, and the peak memory of
   the driver (JVM and Python) and of the Python workers;
4. the ratio job / model ceiling.

Each engine (`--engines`, default both: onnxruntime and tensorflow) is measured against its own
ceiling; the ONNX files come from `jobs/export_onnx.py` (exported on first use into build/models/).

Subcommands: `run` (the above for each engine, plus a scaling run over several N), `knobs` (one
job per setting of each tuning knob, one engine), `image-size` (224 against the native 100x100:
throughput and the accuracy of a job's own classifier on the components, fixed split), `progress`
(the job with progress lines every 15 s against none, in turn, pair by pair), `output-format` (the
dev set written as CSV and as Parquet: the features' size and the write stage), `precision` (the
job's classifier on the dev set with ONNX Runtime fp32, OpenVINO fp32 and OpenVINO bf16, same
split), `robustness` (the classifier trained with and without augmentation, scored on held-out dev
images on white and composited onto backgrounds the augmentation never uses), `scale` (the job's
listing and partitioning of 10k to 1M keys from a generated S3 Inventory report and key list, and
the sequential listing for contrast, by a spark-submit driver on a local standalone cluster: time,
the driver's peak memory, the executors' CPU; no images, no model). Each writes JSON (and `run` and
`robustness` a PNG) under bench/results/ and prints a table.
"""
