"""Known answers for the evaluation metrics: R-precision, MM-Dist, FID, Diversity, MultiModality, CI, table."""

import math

import numpy as np
import pytest
import torch

from reward_models.metrics import (
    COLUMNS,
    FrechetReference,
    activation_statistics,
    diversity,
    embed_pairs,
    euclidean_distance_matrix,
    evaluate_embeddings,
    evaluation_table,
    fid,
    frechet_distance,
    mm_dist,
    multimodality,
    paired_difference,
    physical_metrics,
    r_precision,
    run_repetitions,
    summarize,
)


def test_distance_matrix_matches_pairwise_norms_and_is_never_negative():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 7)) * 1e3, rng.normal(size=(4, 7))
    expected = [[math.dist(x, y) for y in b] for x in a]
    np.testing.assert_allclose(euclidean_distance_matrix(a, b), expected, rtol=1e-12)
    # Nearly equal large vectors: the ‖a‖²+‖b‖²−2ab expansion cancels to a negative square here.
    far = np.full((1, 64), 1e8) + rng.normal(size=(1, 64)) * 1e-4
    dist = euclidean_distance_matrix(far, far + 1e-6)
    assert dist.shape == (1, 1) and 0 < dist[0, 0] < 1e-4
    batched = euclidean_distance_matrix(a[None].repeat(3, 0), b[None].repeat(3, 0))
    assert batched.shape == (3, 5, 4)
    np.testing.assert_allclose(batched[2], expected, rtol=1e-12)


# ---- R-precision and MM-Dist ----


def test_r_precision_hand_computed_batch_of_four():
    # 1-D embeddings. Distances, rows = captions 19, 2, 5, 18; columns = motions 5, 13, 7, 16:
    #   [[14, 6, 12, 3], [3, 11, 5, 14], [0, 8, 2, 11], [13, 5, 11, 2]]
    # Each caption's true motion (the diagonal) ranks 3, 2, 1, 0 among the row;
    # each motion's true caption ranks 3, 3, 0, 0 among the column.
    text = np.array([[19.0], [2.0], [5.0], [18.0]])
    motion = np.array([[5.0], [13.0], [7.0], [16.0]])
    np.testing.assert_allclose(r_precision(text, motion, batch_size=4), [1 / 4, 2 / 4, 3 / 4])
    np.testing.assert_allclose(r_precision(text, motion, batch_size=4, query="motion"), [2 / 4, 2 / 4, 2 / 4])
    np.testing.assert_allclose(r_precision(text, motion, batch_size=4, top_k=4), [1 / 4, 2 / 4, 3 / 4, 1])
    assert mm_dist(text, motion) == pytest.approx((14 + 11 + 2 + 2) / 4)


def test_r_precision_perfect_embeddings_score_one():
    emb = torch.randn(96, 16, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(r_precision(emb, emb.clone()), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(r_precision(emb, emb, generator=3, query="motion"), [1.0, 1.0, 1.0])
    assert mm_dist(emb, emb) == 0.0


def test_r_precision_of_unrelated_pairs_is_chance():
    rng = np.random.default_rng(1)
    n = 32 * 500
    top = r_precision(rng.normal(size=(n, 8)), rng.normal(size=(n, 8)))
    for k in (1, 2, 3):
        p = k / 32
        assert abs(top[k - 1] - p) < 4 * math.sqrt(p * (1 - p) / n), (k, top[k - 1])


def test_r_precision_ties_count_as_chance_not_success():
    # A generator that collapsed to one motion: all distances in a row tie.
    text = np.random.default_rng(2).normal(size=(64, 8))
    motion = np.tile(np.random.default_rng(3).normal(size=(1, 8)), (64, 1))
    np.testing.assert_allclose(r_precision(text, motion), [1 / 32, 2 / 32, 3 / 32], rtol=1e-12)


def test_r_precision_drops_the_incomplete_batch_and_shuffles_pairs_jointly():
    rng = np.random.default_rng(4)
    text = rng.normal(size=(70, 8))
    motion = text + rng.normal(size=(70, 8)) * 0.01
    motion[64:] = rng.normal(size=(6, 8)) * 100  # the dropped tail: wrong pairs that would cost top-1
    np.testing.assert_array_equal(r_precision(text, motion), [1.0, 1.0, 1.0])
    # With a generator the batches are a joint permutation of the pairs: still all correct...
    np.testing.assert_array_equal(r_precision(text[:64], motion[:64], generator=0), [1.0, 1.0, 1.0])
    # ...and the same as ranking the permuted pairs in order.
    noisy = text + rng.normal(size=(70, 8))
    perm = np.random.default_rng(5).permutation(70)[:64]
    np.testing.assert_array_equal(
        r_precision(text, noisy, generator=np.random.default_rng(5)), r_precision(text[perm], noisy[perm])
    )


# ---- FID ----


def test_fid_of_identical_sets_is_zero():
    emb = np.random.default_rng(6).normal(size=(2000, 32)) * 3.0
    scale = np.trace(np.cov(emb, rowvar=False))
    assert abs(fid(emb, emb)) < 1e-6 * scale
    assert abs(fid(torch.from_numpy(emb).float(), emb)) < 1e-4 * scale  # float32 in, float64 inside


def test_fid_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(7)
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 0.5, -2.3])
    var1, var2 = np.array([1.0, 2.0, 0.5]), np.array([0.5, 1.0, 2.0])
    n = 200_000
    real = mu1 + rng.normal(size=(n, 3)) * np.sqrt(var1)
    gen = mu2 + rng.normal(size=(n, 3)) * np.sqrt(var2)
    # ‖μ1−μ2‖² + Tr(Σ1+Σ2−2(Σ1Σ2)^½); diagonal Σ: Σ_i (σ1_i − σ2_i)².
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    # Sampling error: the mean term dominates, std ≈ 2·sqrt(Δμᵀ(Σ1+Σ2)Δμ / n) ≈ 0.008 here.
    assert fid(real, gen) == pytest.approx(expected, abs=0.04)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_equals_the_general_matrix_square_root_form():
    from scipy import linalg

    rng = np.random.default_rng(9)
    for n, dim in ((400, 24), (20, 24)):  # full-rank covariances, then fewer samples than dimensions
        mixing = rng.normal(size=(dim, dim))
        real, gen = rng.normal(size=(n, dim)) @ mixing, rng.normal(size=(n, dim)) @ mixing * 1.2 + 0.3
        (mu1, sigma1), (mu2, sigma2) = activation_statistics(real), activation_statistics(gen)
        covmean = linalg.sqrtm(sigma1 @ sigma2).real
        expected = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * covmean)
        assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-6)


def test_fid_with_a_constant_dimension_is_finite():
    rng = np.random.default_rng(8)
    real, gen = rng.normal(size=(500, 4)), rng.normal(size=(500, 4)) + 1.0
    real[:, 0] = gen[:, 0] = 2.0  # zero variance: Σ1Σ2 is singular
    value = fid(real, gen)
    # The constant dimension adds nothing: Σ1Σ2 is singular, its root's trace is still exact.
    assert math.isfinite(value) and value == pytest.approx(fid(real[:, 1:], gen[:, 1:]), abs=1e-5)


def test_a_fitted_reference_gives_each_fid_exactly_and_checks_widths():
    rng = np.random.default_rng(10)
    real = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16))
    reference = FrechetReference.fit(real)
    for shift in (0.0, 0.5, 2.0):
        gen = rng.normal(size=(200, 16)) * 1.3 + shift
        assert reference.fid(gen) == fid(real, gen) == fid(reference, gen)  # the same arithmetic, reused
    with pytest.raises(ValueError, match=r"real_emb \(N, 16\) and gen_emb \(200, 8\) must share the embedding width"):
        reference.fid(rng.normal(size=(200, 8)))


def test_activation_statistics_match_numpy():
    emb = np.random.default_rng(9).normal(size=(50, 3))
    mu, sigma = activation_statistics(emb)
    np.testing.assert_allclose(mu, emb.mean(0))
    np.testing.assert_allclose(sigma, np.cov(emb.T))


# ---- Diversity and MultiModality ----


def test_diversity_is_the_mean_distance_over_the_drawn_pairs():
    emb = np.arange(10.0)[:, None] * np.array([[3.0, 4.0]])  # point i at 5i along a line
    draws = np.random.default_rng(11)
    first, second = draws.choice(10, 6, replace=False), draws.choice(10, 6, replace=False)
    expected = sum(5 * abs(int(i) - int(j)) for i, j in zip(first, second)) / 6
    assert diversity(emb, 6, np.random.default_rng(11)) == pytest.approx(expected)
    assert diversity(emb, 6, 11) == pytest.approx(expected)  # an int is a seed
    assert diversity(np.ones((10, 2)), 6, 0) == 0.0


def test_diversity_of_a_gaussian_approaches_its_expectation():
    # E‖x − y‖ for x, y ~ N(0, I_D) independent is 2·Γ((D+1)/2)/Γ(D/2); pairs of equal index are rare.
    d = 16
    expected = 2 * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))
    emb = np.random.default_rng(12).normal(size=(20_000, d))
    assert diversity(emb, 5000, 0) == pytest.approx(expected, rel=0.01)


def test_multimodality_measures_spread_within_each_text_only():
    rng = np.random.default_rng(13)
    # Texts 1000 apart; each text's 30 generations lie on a segment of length 1 (text t scaled by s_t).
    offsets = np.arange(4)[:, None, None] * 1000.0
    spread = np.array([0.0, 0.25, 0.5, 1.0])[:, None, None]
    position = rng.uniform(size=(1, 30, 1))  # (1, 30, 1) shared positions along the segment
    emb = offsets + spread * position * np.array([1.0, 0.0])  # (4, 30, 2)
    draws = np.random.default_rng(14)
    first, second = draws.choice(30, 10, replace=False), draws.choice(30, 10, replace=False)
    per_pair = np.abs(position[0, first, 0] - position[0, second, 0])
    expected = spread.mean() * per_pair.mean()
    assert multimodality(emb, 10, np.random.default_rng(14)) == pytest.approx(expected)
    assert multimodality(emb, 10, 14) <= 1.0  # never across texts
    assert multimodality(np.ones((4, 30, 2)), 10, 0) == 0.0


# ---- repetitions ----


def test_summarize_is_mean_and_1_96_std_over_sqrt_n():
    mean, ci = summarize([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert ci == pytest.approx(1.96 * math.sqrt(1.25) / 2)  # population std (ddof=0): sqrt(1.25)
    mean, ci = summarize([[1.0, 10.0], [3.0, 10.0]])
    np.testing.assert_allclose(mean, [2.0, 10.0])
    np.testing.assert_allclose(ci, [1.96 / math.sqrt(2), 0.0])
    assert summarize([5.0]) == (5.0, 0.0)


def test_paired_difference_is_the_t_interval_of_the_per_repetition_differences():
    from scipy.stats import t

    base, other = [0.40, 0.38, 0.42, 0.39, 0.41], [0.43, 0.40, 0.46, 0.41, 0.45]
    differences = np.array(other) - np.array(base)  # 0.03, 0.02, 0.04, 0.02, 0.04
    mean, half = paired_difference(base, other)
    assert mean == pytest.approx(0.03)
    assert half == pytest.approx(t.ppf(0.975, 4) * differences.std(ddof=1) / math.sqrt(5))
    assert half < summarize(base)[1] + summarize(other)[1]  # the shared draw-to-draw spread cancels
    assert paired_difference([1.0, 2.0, 3.0], [1.5, 2.5, 3.5]) == pytest.approx((0.5, 0.0))  # a constant shift
    assert paired_difference([1.0], [2.0]) == (1.0, math.inf)  # one pair says nothing about noise
    with pytest.raises(ValueError, match="equal-length"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        paired_difference([1.0, float("nan")], [1.0, 2.0])


def test_run_repetitions_seeds_each_repetition_and_summarises():
    seen = []

    def once(seed):
        seen.append(seed)
        return {"fid": float(seed), "top1": 0.5}

    result = run_repetitions(once, 20, seed=100)
    assert seen == list(range(100, 120))
    assert result["fid"] == summarize(np.arange(100, 120.0))
    assert result["top1"] == (0.5, 0.0)


# ---- orchestration ----


class LookupEvaluator:
    """An evaluator whose embeddings are fixed by the caption and by the motion's first frame."""

    def __init__(self, text_vectors):
        self.text_vectors = text_vectors

    def embed_texts(self, texts):
        return torch.stack([self.text_vectors[t] for t in texts])

    def embed_motions(self, features, lengths):
        return features[:, 0, :4] * lengths[:, None].float() / 10


def test_embed_pairs_keeps_input_order_across_chunks():
    texts = [f"caption {i}" for i in range(7)]
    evaluator = LookupEvaluator({t: torch.full((4,), float(i)) for i, t in enumerate(texts)})
    features = torch.arange(7.0)[:, None, None].expand(7, 3, 263).clone()
    lengths = torch.full((7,), 10)
    text_emb, motion_emb = embed_pairs(evaluator, texts, features, lengths, batch_size=3)
    assert text_emb.shape == motion_emb.shape == (7, 4)
    np.testing.assert_array_equal(text_emb[:, 0], np.arange(7.0))
    np.testing.assert_array_equal(motion_emb[:, 0], np.arange(7.0))


def test_evaluate_embeddings_and_physical_metrics_report_table_keys():
    rng = np.random.default_rng(15)
    text = rng.normal(size=(64, 8))
    metrics = evaluate_embeddings(text, text, text, generator=0, diversity_pairs=32)
    assert set(metrics) == {"top1", "top2", "top3", "mm_dist", "fid", "diversity"}
    assert metrics["top1"] == 1.0 and metrics["mm_dist"] == 0.0 and abs(metrics["fid"]) < 1e-8
    joints = np.zeros((2, 10, 22, 3))
    joints[..., 1] = 1.0  # standing still in the air
    assert physical_metrics(joints, [10, 8]) == {"foot_skating": 0.0, "jerk": 0.0}
    assert set(metrics) | {"foot_skating", "jerk", "multimodality", "perception"} == set(COLUMNS)


def test_evaluation_table_shape_and_missing_cells():
    table = evaluation_table(
        {
            "Real motion": {"top1": (0.511, 0.003), "fid": (0.002, 0.0)},
            "Model": {"top1": (0.531, 0.0021), "jerk": (123.4567, 1.0), "multimodality": None},
        }
    )
    lines = table.splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1  # header, rule, 2 aligned rows
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["Method", *COLUMNS.values()]
    real = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert real[:5] == ["Real motion", "0.511 ±0.003", "-", "-", "0.002 ±0.000"]
    model = [cell.strip() for cell in lines[3].strip("|").split("|")]
    assert model[1] == "0.531 ±0.002" and model[-1] == "123.457 ±1.000" and model[7] == "-"
    with pytest.raises(ValueError, match="unknown metrics.*'FID'"):
        evaluation_table({"Model": {"FID": (0.1, 0.0)}})


# ---- errors ----


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda e: r_precision(e["nan"], e["ok"]), "text_emb contains NaN"),
        (lambda e: r_precision(e["ok"], e["inf"]), "motion_emb contains NaN or Inf"),
        (lambda e: r_precision(e["ok"], e["ok"][:40]), r"must be matching pairs"),
        (lambda e: r_precision(e["ok"][:31], e["ok"][:31]), "at least batch_size=32 pairs, got 31"),
        (lambda e: r_precision(e["ok"], e["ok"], query="caption"), "query must be"),
        (lambda e: r_precision(e["ok"], e["ok"], top_k=33), "top_k"),
        (lambda e: mm_dist(e["ok"], e["ok"][:, :4]), "must be matching pairs"),
        (lambda e: fid(e["ok"], e["nan"]), "gen_emb contains NaN"),
        (lambda e: fid(e["ok"], e["ok"][:, :4]), "embedding width"),
        (lambda e: fid(e["ok"][:1], e["ok"]), "at least 2 embeddings"),
        (lambda e: diversity(e["ok"], 301), "num_pairs=301.*got 64"),
        (lambda e: diversity(e["ok"][0], 10), "2-D"),
        (lambda e: multimodality(e["ok"], 10), "3-D"),
        (lambda e: multimodality(e["ok"].reshape(8, 8, 8), 10), "num_pairs=10.*got 8"),
        (lambda e: frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2)), r"must be \(D,\)"),
        (lambda e: frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([-1.0, 1.0])), "imaginary part"),
        (lambda e: summarize([]), "at least one repetition"),
        (lambda e: summarize([1.0, float("nan")]), "NaN"),
        (lambda e: run_repetitions(lambda s: {"fid": 0.0} if s == 0 else {"top1": 0.0}, 2), "repetition 1"),
    ],
)
def test_bad_input_raises_value_error_naming_it(call, message):
    ok = np.random.default_rng(16).normal(size=(64, 8))
    nan, inf = ok.copy(), ok.copy()
    nan[3, 2], inf[5, 0] = np.nan, np.inf
    with pytest.raises(ValueError, match=message):
        call({"ok": ok, "nan": nan, "inf": inf})


def test_embed_pairs_rejects_an_evaluator_that_drops_rows():
    class Dropping(LookupEvaluator):
        def embed_motions(self, features, lengths):
            return super().embed_motions(features, lengths)[:-1]

    texts = ["a", "b"]
    evaluator = Dropping({t: torch.zeros(4) for t in texts})
    with pytest.raises(ValueError, match="returned 2 text and 1 motion embeddings for 2 inputs"):
        embed_pairs(evaluator, texts, torch.zeros(2, 3, 263), torch.full((2,), 3))
    with pytest.raises(ValueError, match="must be equal"):
        embed_pairs(evaluator, texts, torch.zeros(3, 3, 263), torch.full((3,), 3))
