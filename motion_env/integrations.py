"""Using the vector env from RL libraries with their own vector-env interface.

Stable-Baselines3 reads a ``VecEnv`` of its own (reset in the same step, terminal observation
in ``infos``) rather than a Gymnasium ``VectorEnv``::

    vec = gymnasium.make_vec("MotionRL/TextToMotion-v0", num_envs=8, vectorization_mode="vector_entry_point",
                             autoreset_mode="Disabled")
    model = stable_baselines3.PPO("MultiInputPolicy", sb3_vec_env(vec), n_steps=64)
"""

from __future__ import annotations

import numpy as np
from gymnasium.vector import AutoresetMode


def sb3_vec_env(vector_env):
    """Wrap a :class:`~motion_env.vector_env.TextToMotionVectorEnv` (autoreset DISABLED) for SB3."""
    from stable_baselines3.common.vec_env import VecEnv

    if vector_env.metadata.get("autoreset_mode") != AutoresetMode.DISABLED:
        raise ValueError("sb3_vec_env needs the vector env made with autoreset_mode='Disabled'; SB3 resets itself")

    class _SB3VecEnv(VecEnv):
        def __init__(self, env):
            self.env = env
            super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
            self._actions = None

        def reset(self):
            seed = self._seeds[0] if any(s is not None for s in self._seeds) else None
            obs, _ = self.env.reset(seed=seed)
            self._reset_seeds()
            return obs

        def step_async(self, actions):
            self._actions = np.asarray(actions).reshape(self.num_envs)

        def step_wait(self):
            obs, rewards, terminated, truncated, info = self.env.step(self._actions)
            dones = terminated | truncated
            infos = [{} for _ in range(self.num_envs)]
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = {k: v[i].copy() for k, v in obs.items()}
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                if "reward_components" in info:
                    infos[i]["reward_components"] = {name: {part: float(values[part][i]) for part in values}
                                                     for name, values in info["reward_components"].items()
                                                     if isinstance(values, dict)}  # fmt: skip
            if dones.any():
                fresh, _ = self.env.reset(options={"reset_mask": dones})
                obs = {k: np.where(dones.reshape(-1, *[1] * (v.ndim - 1)), fresh[k], v) for k, v in obs.items()}
            return obs, rewards.astype(np.float32), dones, infos

        def close(self):
            self.env.close()

        def get_attr(self, attr_name, indices=None):
            return [getattr(self.env, attr_name) for _ in self._get_indices(indices)]

        def set_attr(self, attr_name, value, indices=None):
            setattr(self.env, attr_name, value)

        def env_method(self, method_name, *method_args, indices=None, **method_kwargs):
            return [getattr(self.env, method_name)(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False for _ in self._get_indices(indices)]

    return _SB3VecEnv(vector_env)
