"""``pca.k`` as a count or a variance target, on synthetic data whose spectrum is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from fruits_features.config_files import apply_overrides, build_config
from fruits_features.errors import ConfigError
from fruits_features.stages.pca_fit import (
    Moments,
    block_moments,
    collects_directly,
    fit_moments,
    standardized_pca,
)
from fruits_features.stages.reduce import (
    component_signs,
    components_for_variance,
    components_to_columns,
    fit_reduction,
    project,
    reduce_features,
)

# Ten features in three blocks of exact copies of one latent variable each (5, 3 and 2 copies),
# the latents exactly uncorrelated in the sample. Standardized, every feature has variance 1 and
# the covariance is block-diagonal with all-ones blocks: eigenvalues 5, 3, 2 and seven zeros, so
# the components explain exactly 50%, 30% and 20% of the variance.
BLOCKS = (5, 3, 2)
SPECTRUM = [0.5, 0.3, 0.2]


def synthetic_features(rows: int = 40, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(rows, len(BLOCKS)))
    raw -= raw.mean(axis=0)
    latents, _ = np.linalg.qr(raw)  # orthonormal, and centred since raw's columns were
    scales = rng.uniform(0.5, 20.0, size=sum(BLOCKS))  # standardization must undo these
    offsets = rng.uniform(-100.0, 100.0, size=sum(BLOCKS))
    columns = np.repeat(latents, BLOCKS, axis=1)
    return np.asarray(columns * scales + offsets, dtype=np.float32)


@pytest.fixture(scope="module")
def frame(spark):
    values = synthetic_features()
    rows = [(f"s3://b/i/K/{i}.jpg", "K", [float(v) for v in row]) for i, row in enumerate(values)]
    return spark.createDataFrame(rows, "path string, label string, features array<float>").cache()


@pytest.mark.parametrize(
    ("target", "k"),
    [(0.3, 1), (0.5, 1), (0.51, 2), (0.8, 2), (0.800001, 3), (0.95, 3), (1.0, 3)],
)
def test_smallest_k_reaching_the_target_is_chosen(target: float, k: int) -> None:
    assert components_for_variance(SPECTRUM, target) == k


def test_a_target_beyond_the_data_keeps_every_component() -> None:
    assert components_for_variance([0.6, 0.3], 1.0) == 2


@pytest.mark.parametrize("target", [0.0, -0.1, 1.5])
def test_a_target_outside_zero_one_is_refused(target: float) -> None:
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        components_for_variance(SPECTRUM, target)


@pytest.mark.parametrize(("target", "k"), [(0.45, 1), (0.75, 2), (0.9, 3)])
def test_variance_target_picks_k_on_data_with_a_known_spectrum(frame, target: float, k: int) -> None:
    reduction = fit_reduction(frame, target)

    assert reduction.k == k
    assert reduction.variance_target == target
    np.testing.assert_allclose(reduction.explained_variance, SPECTRUM[:k], atol=1e-6)
    np.testing.assert_allclose(reduction.spectrum[:3], SPECTRUM, atol=1e-6)
    np.testing.assert_allclose(reduction.spectrum[3:], 0.0, atol=1e-6)


def test_only_the_chosen_components_are_written(frame) -> None:
    reduction = fit_reduction(frame, 0.75)

    reduced = reduce_features(frame, reduction).toPandas()

    assert list(reduced.columns) == ["path", "label", "pc_1", "pc_2"]
    # The kept components are the data's first two principal directions: their variances are
    # the top two eigenvalues of the standardized covariance, 5 and 3.
    np.testing.assert_allclose(reduced[["pc_1", "pc_2"]].var(ddof=1).to_numpy(), [5.0, 3.0], rtol=1e-5)
    vectors = project(frame, reduction).select("_components").collect()
    assert {len(row[0]) for row in vectors} == {2}


def test_a_component_count_is_used_as_given(frame) -> None:
    reduction = fit_reduction(frame, 4)

    assert reduction.k == 4
    assert reduction.variance_target is None
    np.testing.assert_allclose(reduction.explained_variance, [*SPECTRUM, 0.0], atol=1e-6)
    columns = components_to_columns(project(frame, reduction), reduction.k).columns
    assert columns == ["path", "label", "pc_1", "pc_2", "pc_3", "pc_4"]


def test_saved_and_loaded_reduction_gives_the_same_components(frame, tmp_path) -> None:
    from pyspark.ml import PipelineModel

    reduction = fit_reduction(frame, 0.75)
    reduction.model.write().save(tmp_path.as_uri() + "/model")
    loaded = type(reduction)(model=PipelineModel.load(tmp_path.as_uri() + "/model"), k=reduction.k)
    # The stage folders are named as a fit from Python names them (1_PCA_..., as before the blockwise fit).
    stages = sorted(p.name.split("_")[1] for p in (tmp_path / "model" / "stages").iterdir())
    assert stages == ["ElementwiseProduct", "PCA", "StandardScaler", "VectorSlicer"]

    before = reduce_features(frame, reduction).toPandas()
    after = reduce_features(frame, loaded).toPandas()

    # The same model, the same rows: equal up to the last bits the BLAS's vectorized sums may vary.
    np.testing.assert_allclose(
        after[["pc_1", "pc_2"]].to_numpy(), before[["pc_1", "pc_2"]].to_numpy(), rtol=1e-12, atol=1e-12
    )


def test_each_component_is_signed_so_that_its_largest_loading_is_positive() -> None:
    loadings = np.array(
        [
            [0.1, -0.2, 0.0, 0.5],
            [-0.9, 0.3, 0.0, -0.5],  # a tie in magnitude: the first of them decides
            [0.2, -0.1, 0.0, 0.1],
        ]
    )
    np.testing.assert_array_equal(component_signs(loadings), [-1.0, 1.0, 1.0, 1.0])
    flipped = loadings * component_signs(loadings)
    np.testing.assert_array_equal(component_signs(flipped), [1.0, 1.0, 1.0, 1.0])
    # The rule sees the component, not its sign: a negated fit gets the opposite signs, the same result.
    np.testing.assert_array_equal(-loadings * component_signs(-loadings), flipped)
    assert component_signs(np.zeros((5, 0))).shape == (0,)


@pytest.mark.parametrize("k", [4, 0.75])
def test_the_fitted_components_follow_the_sign_convention(frame, k: float) -> None:
    """Whatever signs the SVD gave, the pipeline's components have their largest loading positive:
    the projection of a unit vector along each feature is that feature's loading (times its scale)."""
    reduction = fit_reduction(frame, k)
    scaler = reduction.model.stages[0]
    # One row per feature: the mean plus one standard deviation along that feature alone, so its
    # standardized vector is the unit vector e_i and its components are row i of the loadings.
    mean, std = scaler.mean.toArray(), scaler.std.toArray()
    rows = [(f"e{i}", "K", [float(v) for v in mean + std * np.eye(len(mean))[i]]) for i in range(len(mean))]
    unit = frame.sparkSession.createDataFrame(rows, "path string, label string, features array<float>")
    projected = project(unit, reduction).toPandas().sort_values("path", key=lambda p: p.str[1:].astype(int))
    loadings = np.stack(projected["_components"].map(lambda v: v.toArray()).to_numpy())
    assert loadings.shape == (len(mean), reduction.k)
    # Components 1-3 carry the data; the rest span a null space whose loadings the fit does not fix.
    top = min(3, reduction.k)
    strongest = loadings[np.argmax(np.abs(loadings[:, :top]), axis=0), np.arange(top)]
    assert (strongest > 0).all(), loadings[:, :top]


MINIMAL = {"input": {"uri": "s3://in-bucket/images/"}, "output": {"uri": "s3://out-bucket/features/"}}


@pytest.mark.parametrize(
    ("raw", "k", "target"), [("50", 50, None), ("1", 1, None), ("0.9", 0.9, 0.9), ("1.0", 1.0, 1.0)]
)
def test_pca_k_is_a_count_when_an_integer_and_a_variance_target_when_a_float(
    raw: str, k: float, target
) -> None:
    config = build_config(apply_overrides(MINIMAL, [f"pca.k={raw}"]))
    assert config.pca.k == k
    assert type(config.pca.k) is type(k)
    assert config.pca.variance_target == target


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("0", "config key 'pca.k': Input should be greater than or equal to 1"),
        ("4096", "config key 'pca.k': Input should be at most 2048"),
        ("1.5", "config key 'pca.k': a float is a variance target, in (0, 1]"),
        ("0.0", "config key 'pca.k': a float is a variance target, in (0, 1]"),
        (
            "true",
            "config key 'pca.k': Input should be a number of components (an integer 1-2048) or a variance",
        ),
        ("ninety", "(got 'ninety')"),
    ],
)
def test_a_k_that_is_neither_is_refused_naming_both_readings(raw: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(apply_overrides(MINIMAL, [f"pca.k={raw}"]))
    assert message in str(caught.value)
    assert "variance target" in str(caught.value)


def skewed_features(rows: int, dimension: int, seed: int) -> np.ndarray:
    """Non-negative, skewed, differently scaled columns (as pooled ReLU features are), one constant."""
    rng = np.random.default_rng(seed)
    mixed = rng.gamma(0.5, 1.0, size=(rows, 8)) @ rng.uniform(0.0, 1.0, size=(8, dimension))
    values = mixed + rng.gamma(0.3, 1.0, size=(rows, dimension))
    values *= rng.uniform(0.1, 5.0, size=dimension)
    values[:, 3] = 2.5  # Spark scales a constant column to 0
    return np.asarray(values, dtype=np.float32)


@pytest.mark.parametrize("k", [6, 0.9])
def test_the_fit_equals_spark_mls_own_fit_within_1e_6(spark, k: float) -> None:
    """The blockwise fit against Pipeline([StandardScaler, PCA]).fit on the same rows, split over
    three partitions: the same mean and deviation, spectrum and components after the sign convention."""
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import PCA, StandardScaler, VectorSlicer
    from pyspark.ml.functions import array_to_vector

    from fruits_features.stages.reduce import COMPONENTS_COL, VECTOR_COL, sign_stage

    values = skewed_features(rows=120, dimension=40, seed=5)
    rows = [(f"s3://b/i/K/{i}.jpg", [float(v) for v in row]) for i, row in enumerate(values)]
    frame = spark.createDataFrame(rows, "path string, features array<float>").repartition(3).cache()
    ours = fit_reduction(frame, k)

    vectors = frame.select(array_to_vector("features").alias(VECTOR_COL))
    full = k if isinstance(k, int) else 40
    scaler = StandardScaler(inputCol=VECTOR_COL, outputCol="_s", withMean=True, withStd=True)
    theirs_scaler, theirs_pca = (
        Pipeline(stages=[scaler, PCA(k=full, inputCol="_s", outputCol="_p")]).fit(vectors).stages
    )
    stages = [theirs_scaler, theirs_pca, sign_stage(theirs_pca, "_signed")]
    stages.append(VectorSlicer(inputCol="_signed", outputCol=COMPONENTS_COL, indices=list(range(ours.k))))
    theirs = PipelineModel(stages=stages)

    our_scaler = ours.model.stages[0]
    np.testing.assert_allclose(our_scaler.mean.toArray(), theirs_scaler.mean.toArray(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(our_scaler.std.toArray(), theirs_scaler.std.toArray(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.spectrum, theirs_pca.explainedVariance.toArray(), rtol=0, atol=1e-9)
    if not isinstance(k, int):
        assert ours.k == 1 + int(np.searchsorted(np.cumsum(theirs_pca.explainedVariance.toArray()), k - 1e-9))

    def components(model) -> np.ndarray:
        projected = model.transform(vectors).select(COMPONENTS_COL).toPandas()[COMPONENTS_COL]
        return np.stack(projected.map(lambda v: v.toArray()).to_numpy())

    ours_out, theirs_out = components(ours.model), components(theirs)
    assert ours_out.shape == (120, ours.k)
    np.testing.assert_allclose(ours_out, theirs_out, rtol=0, atol=1e-6)


def test_moments_of_blocks_add_up_to_the_moments_of_all_rows() -> None:
    values = skewed_features(rows=30, dimension=7, seed=2).astype(np.float64)
    whole = block_moments(values)
    parts = block_moments(values[:11]) + block_moments(values[11:])
    assert parts.rows == whole.rows == 30
    np.testing.assert_allclose(parts.sums, values.sum(axis=0))
    np.testing.assert_allclose(parts.gram, values.T @ values)
    np.testing.assert_allclose(parts.gram, whole.gram)
    again = Moments.from_bytes(*parts.to_bytes())
    np.testing.assert_array_equal(again.gram, parts.gram)


@pytest.mark.parametrize(("partitions", "direct"), [(2, True), (7, False)])
def test_the_moments_are_the_same_collected_at_once_or_summed_in_a_tree(
    spark, partitions: int, direct: bool
) -> None:
    """A few partitions' partial moments come to the driver in one Arrow collect, many meet in a
    tree: both give the moments of all the rows."""
    values = skewed_features(rows=50, dimension=6, seed=3)
    rows = [(f"s3://b/i/K/{i}.jpg", [float(v) for v in row]) for i, row in enumerate(values)]
    frame = spark.createDataFrame(rows, "path string, features array<float>").repartition(partitions)
    assert collects_directly(partitions) is direct
    got = fit_moments(frame)
    want = block_moments(values.astype(np.float64))
    assert got.rows == want.rows == 50
    np.testing.assert_allclose(got.sums, want.sums, rtol=1e-12)
    np.testing.assert_allclose(got.gram, want.gram, rtol=1e-12)


def test_a_fit_needs_two_rows_and_a_k_within_the_features() -> None:
    one_row = block_moments(np.ones((1, 4)))
    with pytest.raises(ValueError, match="at least two rows"):
        standardized_pca(one_row, 2)
    with pytest.raises(ValueError, match=r"within 1\.\.4"):
        standardized_pca(block_moments(skewed_features(5, 4, seed=1)), 5)
