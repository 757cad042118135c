from itertools import combinations

import numpy as np
import pytest
import torch
from PIL import Image

from agents import pareto
from agents.pareto import (
    grouped_non_dominated_mask,
    hypervolume,
    non_dominated_mask,
    reference_grouped,
    reference_non_dominated,
)
from agents.plots import _trailing_mean, plot_reward_front, plot_training_curves


def inclusion_exclusion_volume(points: np.ndarray) -> float:
    """Volume of the union of boxes [0, p], summed over all subsets (exact, exponential)."""
    total = 0.0
    for size in range(1, len(points) + 1):
        for subset in combinations(range(len(points)), size):
            total += (-1) ** (size + 1) * np.prod(points[list(subset)].min(axis=0))
    return total


def tied_rewards(generator: torch.Generator, n: int, k: int, levels: int = 3) -> torch.Tensor:
    return torch.randint(0, levels, (n, k), generator=generator).float()


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 40, 120])
def test_mask_equals_reference_on_tied_rewards(n, k):
    generator = torch.Generator().manual_seed(1000 * n + k)
    for levels in (2, 3, 5):
        for _ in range(10):
            rewards = tied_rewards(generator, n, k, levels)
            mask = non_dominated_mask(rewards)
            assert mask.dtype == torch.bool and mask.shape == (n,)
            assert mask.tolist() == reference_non_dominated(rewards.tolist())


def test_mask_equals_reference_on_continuous_rewards():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        rewards = torch.randn(60, 3, generator=generator, dtype=torch.float64)
        assert non_dominated_mask(rewards).tolist() == reference_non_dominated(rewards.tolist())


@pytest.fixture(params=["two stages", "one block"])
def grouped_path(request, monkeypatch):
    """Runs a grouped test through each implementation: the two-stage filter, or every group's pairs
    in one padded block (chosen by size, so forced here)."""
    monkeypatch.setattr(pareto, "BLOCK_PAIRS_PER_ROW", 0 if request.param == "two stages" else 10**9)
    return request.param


@pytest.mark.parametrize("num_groups", [1, 3, 8])
def test_grouped_mask_equals_per_group_reference(num_groups, grouped_path):
    generator = torch.Generator().manual_seed(num_groups)
    for _ in range(20):
        rewards = tied_rewards(generator, 64, 3)
        # Scattered, non-contiguous ids: the grouping must not assume sorted or 0..G-1 ids.
        groups = torch.randint(0, num_groups, (64,), generator=generator) * 7 - 5
        mask = grouped_non_dominated_mask(rewards, groups)
        assert mask.tolist() == reference_grouped(rewards.tolist(), groups.tolist())


@pytest.mark.parametrize("num_strong", [1, 2, 1000])
def test_mask_is_exact_whatever_the_first_stage_prunes(monkeypatch, num_strong):
    monkeypatch.setattr(pareto, "NUM_STRONG", num_strong)
    monkeypatch.setattr(pareto, "BLOCK_PAIRS_PER_ROW", 0)  # small groups would skip the stages
    generator = torch.Generator().manual_seed(num_strong)
    for _ in range(10):
        rewards = tied_rewards(generator, 90, 3, levels=4)
        groups = torch.randint(0, 5, (90,), generator=generator)
        assert non_dominated_mask(rewards).tolist() == reference_non_dominated(rewards.tolist())
        assert grouped_non_dominated_mask(rewards, groups).tolist() == reference_grouped(
            rewards.tolist(), groups.tolist())  # fmt: skip


def test_every_row_on_the_front_with_duplicates(grouped_path):
    generator = torch.Generator().manual_seed(0)
    xy = torch.randint(0, 6, (200, 2), generator=generator)
    rewards = torch.cat([xy, 10 - xy.sum(dim=1, keepdim=True)], dim=1).float()  # one plane: no row dominates
    assert non_dominated_mask(rewards).all()
    assert grouped_non_dominated_mask(rewards, torch.randint(0, 4, (200,), generator=generator)).all()


def test_grouped_mask_with_unbalanced_groups(grouped_path):
    generator = torch.Generator().manual_seed(1)
    rewards = tied_rewards(generator, 150, 2, levels=6) - 3  # some below the block's zero padding
    groups = torch.cat([torch.zeros(100, dtype=torch.long), torch.arange(1, 51)])  # one big group, 50 singletons
    groups = groups[torch.randperm(150, generator=generator)]
    mask = grouped_non_dominated_mask(rewards, groups)
    assert mask.tolist() == reference_grouped(rewards.tolist(), groups.tolist())
    assert mask[groups > 0].all()


def test_grouped_mask_is_exact_for_equal_groups_one_ulp_apart_subnormal_and_integer(grouped_path):
    generator = torch.Generator().manual_seed(2)
    levels = tied_rewards(generator, 96, 3)
    one_ulp_up = torch.nextafter(levels, torch.full_like(levels, 10.0))
    rewards = torch.where(torch.rand(96, 3, generator=generator) < 0.3, one_ulp_up, levels)
    groups = torch.arange(8).repeat_interleave(12)[torch.randperm(96, generator=generator)]  # equal, interleaved
    for values in (rewards, rewards.double() * 1e-310, levels.long() - 1):  # float32, subnormal float64, integers
        mask = grouped_non_dominated_mask(values, groups)
        assert mask.tolist() == reference_grouped(values.tolist(), groups.tolist())


def test_grouping_keeps_samples_another_group_dominates():
    rewards = torch.tensor([[1.0, 1.0], [5.0, 5.0], [0.0, 0.0], [1.0, 0.0]])
    groups = torch.tensor([0, 1, 0, 0])
    assert non_dominated_mask(rewards).tolist() == [False, True, False, False]
    assert grouped_non_dominated_mask(rewards, groups).tolist() == [True, True, False, False]


def test_duplicates_on_the_front_all_stay():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [0.0, 0.0, 0.0]])
    assert non_dominated_mask(rewards).tolist() == [True, True, True, False]


def test_better_in_one_column_equal_in_the_rest_dominates():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.5]])
    assert non_dominated_mask(rewards).tolist() == [False, True]


def test_chain_of_three_keeps_only_the_top():
    rewards = torch.tensor([[1.0, 1.0], [3.0, 3.0], [2.0, 2.0]])
    assert non_dominated_mask(rewards).tolist() == [False, True, False]


def test_trade_offs_are_all_kept_and_single_sample_is_kept():
    assert non_dominated_mask(torch.tensor([[1.0, 0.0], [0.0, 1.0]])).tolist() == [True, True]
    assert non_dominated_mask(torch.tensor([[-4.0, 2.0, 0.5]])).tolist() == [True]
    assert non_dominated_mask(torch.empty(0, 3)).shape == (0,)
    assert grouped_non_dominated_mask(torch.empty(0, 3), torch.empty(0, dtype=torch.long)).shape == (0,)
    assert grouped_non_dominated_mask(torch.tensor([[1.0, 2.0]]), torch.tensor([4])).tolist() == [True]


def test_integer_and_double_rewards_give_the_same_mask():
    rewards = torch.tensor([[2, 1], [1, 2], [1, 1], [2, 2]])
    assert non_dominated_mask(rewards).tolist() == non_dominated_mask(rewards.double()).tolist() == [
        False, False, False, True]  # fmt: skip


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_reward_raises_naming_the_row(bad):
    rewards = torch.zeros(5, 3)
    rewards[2, 1] = bad
    rewards[4, 0] = bad
    with pytest.raises(ValueError, match=r"rows \[2, 4\]"):
        non_dominated_mask(rewards)
    with pytest.raises(ValueError, match=r"rows \[2, 4\]"):
        grouped_non_dominated_mask(rewards, torch.zeros(5, dtype=torch.long))


def test_wrong_shapes_raise():
    with pytest.raises(ValueError, match=r"\(N, K\), got \(4,\)"):
        non_dominated_mask(torch.zeros(4))
    with pytest.raises(ValueError, match=r"\(N, K\), got \(2, 3, 4\)"):
        non_dominated_mask(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="at least one reward column"):
        non_dominated_mask(torch.zeros(4, 0))
    with pytest.raises(TypeError, match="torch.Tensor"):
        non_dominated_mask(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"groups must have shape \(4,\)"):
        grouped_non_dominated_mask(torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer group ids"):
        grouped_non_dominated_mask(torch.zeros(4, 3), torch.zeros(4))


def test_hypervolume_of_one_point_is_the_box():
    assert hypervolume(np.array([[5.0]])) == 5.0
    assert hypervolume(np.array([[2.0, 3.0]])) == 6.0
    assert hypervolume(np.array([[2.0, 3.0, 4.0]])) == 24.0
    assert hypervolume(np.array([[2.0, 3.0, 4.0]]), reference=np.array([1.0, 1.0, 1.0])) == 6.0
    assert hypervolume(np.empty((0, 3))) == 0.0


def test_hypervolume_of_overlapping_boxes():
    # 2-D: 2·1 + 1·2 − 1·1 = 3.
    assert hypervolume(np.array([[2.0, 1.0], [1.0, 2.0]])) == pytest.approx(3.0)
    # 3-D: 3·1·2 + 1·2·3 − 1·1·2 = 10.
    assert hypervolume(np.array([[3.0, 1.0, 2.0], [1.0, 2.0, 3.0]])) == pytest.approx(10.0)
    # 1-D: the union of segments is the longest.
    assert hypervolume(np.array([[3.0], [5.0], [1.0]])) == 5.0


@pytest.mark.parametrize("k", [2, 3])
def test_hypervolume_equals_inclusion_exclusion(k):
    rng = np.random.default_rng(k)
    for n in range(1, 8):
        points = rng.integers(1, 5, size=(n, k)).astype(float)  # ties and duplicates included
        assert hypervolume(points) == pytest.approx(inclusion_exclusion_volume(points))


def test_dominated_points_add_nothing():
    front = np.array([[3.0, 1.0, 2.0], [1.0, 2.0, 3.0]])
    with_dominated = np.vstack([front, [[1.0, 1.0, 1.0], [3.0, 1.0, 2.0], [0.5, 2.0, 2.5]]])
    assert hypervolume(with_dominated) == pytest.approx(hypervolume(front))


def test_points_not_above_the_reference_add_nothing():
    points = np.array([[2.0, 2.0], [5.0, -1.0], [6.0, 0.0], [-1.0, -1.0]])
    assert hypervolume(points) == pytest.approx(4.0)
    shifted = np.array([[3.0, 3.0, 3.0], [10.0, 1.0, 10.0]])
    assert hypervolume(shifted, reference=np.array([1.0, 1.0, 1.0])) == pytest.approx(8.0)
    assert hypervolume(np.array([[0.5, 0.5]]), reference=np.array([1.0, 1.0])) == 0.0


def test_hypervolume_takes_tensors():
    points = torch.tensor([[3.0, 1.0, 2.0], [1.0, 2.0, 3.0]])
    assert hypervolume(points, reference=torch.zeros(3)) == pytest.approx(10.0)


def test_hypervolume_matches_monte_carlo_in_3d():
    rng = np.random.default_rng(0)
    # Points near the unit sphere's positive octant: a curved front where most points matter.
    directions = np.abs(rng.normal(size=(60, 3)))
    points = directions / np.linalg.norm(directions, axis=1, keepdims=True) * rng.uniform(0.7, 1.0, (60, 1))
    reference = np.array([0.05, 0.1, 0.0])
    exact = hypervolume(points, reference)

    upper = points.max(axis=0)
    box = np.prod(upper - reference)
    samples = rng.uniform(reference, upper, size=(200_000, 3))
    inside = np.zeros(len(samples), dtype=bool)
    for point in points:
        inside |= (samples <= point).all(axis=1)
    p = inside.mean()
    estimate, std = box * p, box * np.sqrt(p * (1 - p) / len(samples))
    assert abs(exact - estimate) < 5 * std, (exact, estimate, std)


def test_hypervolume_rejects_bad_input():
    with pytest.raises(ValueError, match="1 to 3 objectives, got K=4"):
        hypervolume(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"reference must have shape \(3,\)"):
        hypervolume(np.ones((2, 3)), reference=np.zeros(2))
    with pytest.raises(ValueError, match=r"point rows \[1\]"):
        hypervolume(np.array([[1.0, 1.0], [np.nan, 1.0]]))
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        hypervolume(np.ones(3))


def _assert_png(path, min_width):
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] >= min_width and image.size[1] > 0
        image.load()


def test_plot_reward_front_writes_png(tmp_path):
    generator = torch.Generator().manual_seed(0)
    base = torch.rand(80, 3, generator=generator)
    tuned = base + 0.2 * torch.rand(80, 3, generator=generator)
    sets = {name: (v.numpy(), non_dominated_mask(v).numpy()) for name, v in [("base", base), ("fine-tuned", tuned)]}
    path = plot_reward_front(sets, tmp_path / "figs" / "front.png", title="base vs fine-tuned")
    assert path.stat().st_size > 0
    _assert_png(path, min_width=3 * 300)

    single = plot_reward_front((base.numpy(), non_dominated_mask(base).numpy()), tmp_path / "one.png")
    _assert_png(single, min_width=3 * 300)


def test_plot_reward_front_rejects_mismatched_input(tmp_path):
    vectors = np.random.default_rng(0).random((10, 3))
    with pytest.raises(ValueError, match="front_mask must be bool of shape"):
        plot_reward_front({"a": (vectors, np.ones(9, dtype=bool))}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="one label per reward column"):
        plot_reward_front({"a": (vectors, np.ones(10, dtype=bool))}, tmp_path / "x.png", names=("a", "b"))
    with pytest.raises(ValueError, match="has 2 rewards"):
        plot_reward_front({"a": (vectors, np.ones(10, dtype=bool)), "b": (vectors[:, :2], np.ones(10, dtype=bool))},
                          tmp_path / "x.png")  # fmt: skip


def test_plot_training_curves_draws_the_logged_keys(tmp_path):
    history = [{"step": s, "loss": 1.0 / s, "rewards/perception/mean": 0.1 * s, "objective/kl": 0.01 * s}
               for s in range(1, 30)] + [{"step": 29, "train_runtime": 1.0}]  # fmt: skip
    path = plot_training_curves(history, tmp_path / "figs" / "curves.png", title="run")
    with Image.open(path) as png:
        assert png.format == "PNG"
        two_panels = png.size
    path = plot_training_curves(history + [{"step": 30, "pareto/front_fraction": 0.4, "policy/entropy": 1.2,
                                            "policy/clipfrac": 0.1}], tmp_path / "more.png")  # fmt: skip
    with Image.open(path) as png:
        assert png.size[0] > two_panels[0]  # more panels, a wider figure


def test_plot_training_curves_rejects_a_history_without_metrics(tmp_path):
    with pytest.raises(ValueError, match="none of the keys"):
        plot_training_curves([{"step": 1, "loss": 0.5}], tmp_path / "x.png")
    with pytest.raises(ValueError, match="smoothing"):
        plot_training_curves([{"step": 1, "objective/kl": 0.5}], tmp_path / "x.png", smoothing=0)
    assert not (tmp_path / "x.png").exists()


def test_trailing_mean():
    values = np.array([1.0, 3.0, 5.0, 7.0])
    assert np.allclose(_trailing_mean(values, 2), [1.0, 2.0, 4.0, 6.0])
    assert np.allclose(_trailing_mean(values, 10), [1.0, 2.0, 3.0, 4.0])
    assert np.allclose(_trailing_mean(values, 1), values)
