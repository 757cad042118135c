"""Other RL libraries drive the registered env: Stable-Baselines3 and MO-Gymnasium."""

import gymnasium as gym
import mo_gymnasium as mo_gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure

import motion_env  # noqa: F401  (registers the envs)
from motion_env.emission import default_parts
from motion_env.integrations import sb3_vec_env

PROMPTS = ["a person walks forward", "a person jumps twice", "someone waves with the right hand"]


@pytest.fixture(scope="module")
def parts():
    return default_parts()


def test_sb3_ppo_learns_on_make_vec(parts, tmp_path):
    vec = gym.make_vec("MotionRL/TextToMotion-v0", num_envs=4, vectorization_mode="vector_entry_point",
                       prompts=PROMPTS, parts=parts, autoreset_mode="Disabled", max_codes=12)  # fmt: skip
    model = PPO("MultiInputPolicy", sb3_vec_env(vec), n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.set_logger(configure(str(tmp_path), []))  # SB3's default logger leaves a folder in the system temp dir
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=64)
    assert model.num_timesteps >= 64
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters()))


def test_mo_gymnasium_linear_reward_is_the_weighted_vector(parts):
    weights = np.array([0.5, 0.3, 0.2])
    env = mo_gym.wrappers.LinearReward(
        mo_gym.make("MotionRL/TextToMotion-MO-v0", prompts=PROMPTS, parts=parts), weight=weights
    )
    env.reset(seed=0)
    rewards = [env.step(a)[1:] for a in (3, 4, 5, env.action_space.n - 1)]
    assert [r for r, *_ in rewards[:-1]] == [0.0, 0.0, 0.0]
    reward, terminated, _, info = rewards[-1]
    assert terminated and reward == pytest.approx(float(info["reward_vector"] @ weights), abs=1e-6)
    np.testing.assert_allclose(info["vector_reward"], info["reward_vector"])


def test_torchrl_gym_env_passes_its_spec_check_and_collects_frames(parts):
    from torchrl.envs import GymEnv
    from torchrl.envs.utils import check_env_specs

    env = GymEnv("MotionRL/TextToMotion-v0", prompts=PROMPTS, parts=parts)
    check_env_specs(env)
    rollout = env.rollout(6)
    assert rollout["next", "tokens"].shape == (len(rollout), 49) and rollout["next", "reward"].shape[-1] == 1
    assert (rollout["next", "mask"].sum(-1) >= 1).all()
