"""The token-emission env, single and vector, on the shipped bundle."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import motion_env  # noqa: F401  (registers the envs)
from motion_env.emission import default_parts
from motion_env.env import TextToMotionEnv
from motion_env.vector_env import TextToMotionVectorEnv

PROMPTS = ["a person walks forward", "a person jumps twice", "someone waves with the right hand"]


@pytest.fixture(scope="module")
def parts():
    return default_parts()


def _actions(seed: int, length: int, end: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(a) for a in rng.integers(0, end, length)] + [end]


def _episode(env, actions):
    out = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return out


def test_check_env_passes(parts):
    check_env(TextToMotionEnv(PROMPTS, parts=parts), skip_render_check=True)


def test_seeded_resets_and_episodes_repeat(parts):
    a, b = TextToMotionEnv(PROMPTS, parts=parts), TextToMotionEnv(PROMPTS, parts=parts)
    draws = [a.reset(seed=5)[1]["prompt"] for _ in range(1)] + [a.reset()[1]["prompt"] for _ in range(5)]
    again = [b.reset(seed=5)[1]["prompt"] for _ in range(1)] + [b.reset()[1]["prompt"] for _ in range(5)]
    assert draws == again
    a.reset(seed=1)
    b.reset(seed=1)
    actions = _actions(0, 12, a.action_space.n - 1)
    ra, rb = _episode(a, actions)[-1], _episode(b, actions)[-1]
    assert ra[1] == rb[1] and ra[2] and not ra[3]


def test_terminal_reward_is_the_scorers(parts):
    text_encoder, tokenizer, scorer = parts
    env = TextToMotionEnv(PROMPTS, parts=parts, scalarization="weighted", weights=[0.5, 0.25, 0.25])
    obs, info = env.reset(seed=0, options={"prompt": 1, "reward_token": "<perception>"})
    assert info["prompt"] == PROMPTS[1] and info["reward_token"] == "<perception>"
    actions = _actions(3, 15, env.action_space.n - 1)
    steps = _episode(env, actions)
    assert all(r == 0.0 for _, r, *_ in steps[:-1])
    _, reward, terminated, _, info = steps[-1]
    codes = torch.tensor([actions[:-1]])
    features = tokenizer.denormalize(tokenizer.decode(codes, torch.tensor([15])))
    direct = scorer(features, torch.tensor([60]), [PROMPTS[1]])
    np.testing.assert_allclose(info["reward_vector"], direct.rewards[0].numpy(), rtol=1e-5, atol=1e-5)
    assert reward == pytest.approx(float(direct.rewards[0] @ torch.tensor([0.5, 0.25, 0.25])), abs=1e-5)
    raw = [info["reward_components"][name]["raw"] for name in ("text_adherence", "motion_quality", "perception")]
    np.testing.assert_allclose(raw, direct.raw[0].numpy(), rtol=1e-5, atol=1e-5)


def test_token_scalarisation_picks_the_tokens_reward(parts):
    env = TextToMotionEnv(PROMPTS, parts=parts)
    for token, column in (("<mt>", 0), ("<mm>", 1), ("<perception>", 2)):
        env.reset(seed=0, options={"prompt": 0, "reward_token": token})
        _, reward, _, _, info = _episode(env, _actions(1, 12, 256))[-1]
        assert reward == pytest.approx(float(info["reward_vector"][column]))


def test_vector_env_matches_single_envs(parts):
    n, seed = 3, 10
    vec = TextToMotionVectorEnv(n, PROMPTS, parts=parts)
    singles = [TextToMotionEnv(PROMPTS, parts=parts) for _ in range(n)]
    vobs, vinfo = vec.reset(seed=seed)
    for i, env in enumerate(singles):
        obs, info = env.reset(seed=seed + i)
        for key in obs:
            np.testing.assert_array_equal(vobs[key][i], obs[key])
        assert vinfo["prompt"][i] == info["prompt"]
    end = vec.single_action_space.n - 1
    plans = [_actions(i, 4 + 3 * i, end) for i in range(n)]  # episodes end at different steps
    done = [False] * n
    for t in range(max(len(p) for p in plans)):
        actions = np.array([p[t] if t < len(p) else 0 for p in plans])
        vobs, vrew, vterm, vtrunc, _ = vec.step(actions)
        for i, env in enumerate(singles):
            if t < len(plans[i]):
                obs, reward, terminated, truncated, _ = env.step(plans[i][t])
                for key in obs:
                    np.testing.assert_array_equal(vobs[key][i], obs[key])
                assert vrew[i] == pytest.approx(reward, abs=1e-5)
                assert (vterm[i], vtrunc[i]) == (terminated, truncated)
                done[i] = terminated or truncated
            elif t == len(plans[i]):  # NEXT_STEP autoreset: this step resets env i, reward 0
                assert vrew[i] == 0 and not vterm[i] and not vtrunc[i]
                assert vobs["mask"][i].sum() == 0
    assert all(done)


def test_disabled_autoreset_uses_reset_mask(parts):
    vec = TextToMotionVectorEnv(2, PROMPTS, parts=parts, autoreset_mode=AutoresetMode.DISABLED)
    assert vec.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    vec.reset(seed=0)
    end = vec.single_action_space.n - 1
    vec.step(np.array([3, 4]))
    _, _, terminated, _, _ = vec.step(np.array([end, 5]))
    assert terminated.tolist() == [True, False]
    with pytest.raises(RuntimeError, match="reset_mask"):
        vec.step(np.array([1, 1]))
    obs, _ = vec.reset(options={"reset_mask": np.array([True, False])})
    assert obs["mask"][0].sum() == 0 and obs["mask"][1].sum() == 2
    vec.step(np.array([1, 1]))


def test_registered_ids_and_make_vec(parts):
    env = gym.make("MotionRL/TextToMotion-v0", prompts=PROMPTS, parts=parts)
    assert env.spec.max_episode_steps == 49
    env.reset(seed=0)
    again = gym.make("motion_env:MotionRL/TextToMotion-v0", prompts=PROMPTS, parts=parts)
    assert isinstance(again.unwrapped, TextToMotionEnv)
    vec = gym.make_vec("MotionRL/TextToMotion-v0", num_envs=4, vectorization_mode="vector_entry_point",
                       prompts=PROMPTS, parts=parts)  # fmt: skip
    assert isinstance(vec, TextToMotionVectorEnv) and vec.num_envs == 4
    mo = gym.make("MotionRL/TextToMotion-MO-v0", prompts=PROMPTS, parts=parts)
    assert mo.unwrapped.reward_space.shape == (3,)
    mo.reset(seed=0)
    _, reward, *_ = mo.step(mo.action_space.n - 1 - 1)
    assert isinstance(reward, np.ndarray) and reward.shape == (3,) and not reward.any()


def test_truncation_scores_the_motion(parts):
    env = TextToMotionEnv(PROMPTS, parts=parts, max_codes=5)
    env.reset(seed=0)
    steps = _episode(env, [7] * 10)
    assert len(steps) == 5
    _, reward, terminated, truncated, info = steps[-1]
    assert truncated and not terminated and "reward_vector" in info and np.isfinite(reward)


def test_immediate_end_gives_the_floor_reward(parts):
    env = TextToMotionEnv(PROMPTS, parts=parts)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(env.action_space.n - 1)
    assert terminated and reward == -1.0 and np.isnan(info["reward_components"]["perception"]["raw"])


def test_bad_input(parts):
    env = TextToMotionEnv(PROMPTS, parts=parts)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(env.action_space.n)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(-1)
    env.step(env.action_space.n - 1)
    with pytest.raises(RuntimeError, match="has ended"):
        env.step(0)
    with pytest.raises(ValueError, match="empty"):
        TextToMotionEnv([], parts=parts)
    with pytest.raises(ValueError, match="unknown reward token"):
        env.reset(options={"reward_token": "<speed>"})
    with pytest.raises(ValueError, match="unknown reward token"):
        TextToMotionEnv(PROMPTS, parts=parts, reward_tokens=["<mt>", "fast"])
    with pytest.raises(ValueError, match="text tokens"):
        env.reset(options={"prompt": "a person walks forward and " * 60})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"promt": 0})
    vec = TextToMotionVectorEnv(2, PROMPTS, parts=parts)
    vec.reset(seed=0)
    with pytest.raises(ValueError, match="actions must be 2 integers"):
        vec.step(np.array([0, 300]))
