"""Text-to-motion as a Gymnasium environment: one step emits one motion token."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from motion_env.emission import (
    DEFAULT_MAX_CODES,
    REWARD_TOKENS,
    EmissionBatch,
    PromptSet,
    check_tokens,
    default_parts,
    default_prompts,
    draw_episode,
)

ENV_ID = "MotionRL/TextToMotion-v0"
MO_ENV_ID = "MotionRL/TextToMotion-MO-v0"


def observation_space(text_dim: int, max_codes: int, codebook_size: int) -> spaces.Dict:
    """Fixed-size observation, so libraries without Sequence/Text spaces can use the env."""
    return spaces.Dict({
        "text": spaces.Box(-np.inf, np.inf, (text_dim,), np.float32),
        "tokens": spaces.Box(0, codebook_size + 1, (max_codes,), np.int64),
        "mask": spaces.Box(0, 1, (max_codes,), np.int8),
    })  # fmt: skip


class TextToMotionEnv(gym.Env):
    """Generate a motion for a text prompt, one VQ-VAE motion token per step (MotionRL's MDP).

    ## Description
    An episode is one prompt. Each step the agent emits a code of the motion tokenizer (a VQ-VAE
    whose every code is 4 frames at 20 fps) or END. When the motion ends, the tokenizer decodes
    the codes to HumanML3D features and the shared batched reward scorer rates the motion on
    text adherence, motion quality and human preference, each normalised by Eq. 12.

    ## Action Space
    ``Discrete(K + 1)``: codes ``0..K-1`` and END = ``K`` (K = 256 for the default tokenizer).

    ## Observation Space
    ``Dict`` of fixed-size boxes:
    - ``text``: ``(384,)`` float32, the prompt's sentence feature, guided by its reward token (Eq. 11);
    - ``tokens``: ``(max_codes,)`` int64, the codes emitted so far, then PAD = ``K + 1``;
    - ``mask``: ``(max_codes,)`` int8, 1 where ``tokens`` holds a code.
    The prompt text, its index in the prompt set and its reward token are in ``info``.

    ## Rewards
    0 on every step but the last. On the last: a scalar from the three normalised rewards by
    ``scalarization``: ``"token"`` (default; the reward the episode's reward token asks for, as
    the paper trains: ``<mt>`` text adherence, ``<mm>`` motion quality, ``<perception>`` human
    preference; the mean of the three when the episode has no token) or ``"weighted"``
    (``weights · r̃``). ``info["reward_components"]`` holds every component, raw and normalised;
    ``info["reward_vector"]`` the normalised three. An END as the first action leaves no motion:
    every component is then -1 (below the calibrated floor) and raw values are NaN.

    ## Starting State
    ``reset`` draws a prompt from the prompt set and, when ``options`` does not fix one, a reward
    token uniformly from ``reward_tokens``, both with ``self.np_random``. ``options``:
    ``{"prompt": str or index, "reward_token": "<mm>" | "<mt>" | "<perception>" | None}``.

    ## Episode End
    Terminated when the agent emits END. Truncated when ``max_codes`` codes have been emitted
    (the motion is scored then too); registration sets ``max_episode_steps = max_codes`` to match.

    ## Arguments
    ``gymnasium.make("MotionRL/TextToMotion-v0", prompts=None, bundle=None, reward_tokens=REWARD_TOKENS,
    scalarization="token", weights=None, max_codes=49)``. ``prompts``: a ``datasets.Dataset``
    (``caption`` and, for Eq. 4 against ground truth, ``motion``), a list of strings, or a
    HumanML3D-layout directory; the procedural training split by default. ``bundle``: a
    checkpoint directory with ``vqvae/`` and ``rewards/``; the shipped default by default.
    ``parts``: ``(text_encoder, tokenizer, scorer)`` to share already loaded models.

    ## Version History
    - v0: first version.
    """

    metadata: ClassVar[dict] = {"render_modes": [], "render_fps": 20}

    def __init__(self, prompts=None, *, bundle=None, parts=None, reward_tokens: Sequence[str | None] = REWARD_TOKENS,
                 scalarization: str = "token", weights=None, max_codes: int = DEFAULT_MAX_CODES):  # fmt: skip
        self.prompts = default_prompts() if prompts is None else (prompts if isinstance(prompts, PromptSet) else PromptSet(prompts))
        text_encoder, tokenizer, scorer = parts if parts is not None else default_parts(bundle)
        self.batch = EmissionBatch(1, text_encoder, tokenizer, scorer, max_codes=max_codes,
                                   scalarization=scalarization, weights=weights)  # fmt: skip
        self.reward_tokens = check_tokens(reward_tokens)
        self.action_space = spaces.Discrete(self.batch.end_token + 1)
        self.observation_space = observation_space(self.batch.text_dim, max_codes, self.batch.end_token)
        self._done = True

    def _info(self) -> dict:
        return {"prompt": self.batch.prompts[0], "prompt_id": int(self.batch.prompt_ids[0]),
                "reward_token": self.batch.reward_tokens[0], "num_codes": int(self.batch.num_codes[0])}  # fmt: skip

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        prompt_id, token = draw_episode(self.np_random, self.prompts, self.reward_tokens, options)
        self.batch.begin([0], self.prompts, [prompt_id], [token])
        self._done = False
        return self._obs(), self._info()

    def _obs(self) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.batch.observation([0]).items()}

    def step(self, action):
        if self._done:
            raise RuntimeError("step() called on an episode that has ended; call reset() first")
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is outside the action space {self.action_space}")
        terminated, truncated = self.batch.emit(np.array([0]), np.array([int(action)]))
        terminated, truncated = bool(terminated[0]), bool(truncated[0])
        info = self._info()
        reward = 0.0
        if terminated or truncated:
            self._done = True
            scored = self.batch.score([0])
            reward = float(scored.reward[0])
            info.update(reward_components=self.batch.components(scored, 0), reward_vector=scored.vector[0].astype(np.float32))
        return self._obs(), reward, terminated, truncated, info


class MOTextToMotionEnv(TextToMotionEnv):
    """The same MDP with MO-Gymnasium's vector reward: ``reward_space = Box(shape=(3,))``.

    The step reward is the ``(3,)`` float32 array of normalised rewards (text adherence, motion
    quality, human preference), zeros before the end; ``mo_gymnasium.LinearReward`` scalarises it.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reward_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.reward_dim = 3

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        vector = info.get("reward_vector", np.zeros(3, dtype=np.float32))
        return obs, vector, terminated, truncated, info
