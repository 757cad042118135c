import numpy as np
import pytest
import torch

from reward_models.normalize import RewardNormalizer

NAMES = ("text_adherence", "motion_quality", "perception")


def test_eq12_on_hand_computed_values():
    norm = RewardNormalizer(NAMES, low=(-4.0, -2.0, 1.0), high=(0.0, 2.0, 3.0))
    raw = torch.tensor([[-4.0, -2.0, 1.0], [0.0, 2.0, 3.0], [-1.0, 0.0, 2.5], [-5.0, 3.0, 0.0]])
    expected = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.75, 0.5, 0.75], [-0.25, 1.25, -0.5]])
    # Eq. 12 as printed reduces to one unclipped line: values may leave [0, 1].
    torch.testing.assert_close(norm(raw), expected)


def test_fit_uses_percentiles_and_round_trips():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(1000, 3)) * np.array([1.0, 10.0, 0.1]) + np.array([0.0, -5.0, 2.0])
    norm = RewardNormalizer.fit(raw, NAMES, percentiles=(5, 95))
    np.testing.assert_allclose(norm.low, np.percentile(raw, 5, axis=0))
    np.testing.assert_allclose(norm.high, np.percentile(raw, 95, axis=0))
    out = norm(torch.as_tensor(raw, dtype=torch.float64)).numpy()
    assert ((out >= 0) & (out <= 1)).mean(0) == pytest.approx([0.9, 0.9, 0.9], abs=0.01)
    assert RewardNormalizer.from_dict(norm.to_dict()) == norm


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"low": (0.0, 0.0, 1.0), "high": (1.0, 1.0, 1.0)}, "high must exceed low"),
        ({"low": (0.0, float("nan"), 0.0), "high": (1.0, 1.0, 1.0)}, "finite"),
        ({"low": (0.0, 0.0), "high": (1.0, 1.0, 1.0)}, "one entry per reward"),
    ],
)
def test_bad_bounds(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RewardNormalizer(NAMES, **kwargs)


def test_fit_rejects_constant_or_nan_rewards():
    raw = np.ones((10, 3))
    raw[:, 0] = np.arange(10)
    raw[:, 2] = np.arange(10)
    with pytest.raises(ValueError, match="motion_quality.*constant"):
        RewardNormalizer.fit(raw, NAMES)
    raw[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        RewardNormalizer.fit(raw, NAMES)
