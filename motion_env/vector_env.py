"""The text-to-motion env for many episodes in one object: every env steps in one array op."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

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
from motion_env.env import observation_space


class TextToMotionVectorEnv(VectorEnv):
    """``num_envs`` copies of :class:`~motion_env.env.TextToMotionEnv` held as arrays.

    Sub-env ``i`` behaves exactly as a single env reset with seed ``seed + i`` and given the
    same actions: same prompts, tokens, observations and rewards. Envs that end in the same
    step are decoded and scored in one batch.

    Autoreset: ``autoreset_mode`` is ``AutoresetMode.NEXT_STEP`` (the default: the step after an
    episode ends resets that env, ignoring its action, with reward 0) or
    ``AutoresetMode.DISABLED`` (reset ended envs yourself with
    ``reset(options={"reset_mask": mask})``; stepping an ended env raises).
    ``vector_reward=True`` returns ``(num_envs, 3)`` normalised rewards (the MO variant).
    ``max_episode_steps`` (set by ``gymnasium.make_vec`` from the registration) caps ``max_codes``,
    as the single env's ``TimeLimit`` does.
    Other arguments are the single env's.
    """

    def __init__(self, num_envs: int, prompts=None, *, bundle=None, parts=None,
                 reward_tokens: Sequence[str | None] = REWARD_TOKENS, scalarization: str = "token", weights=None,
                 max_codes: int = DEFAULT_MAX_CODES, autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
                 vector_reward: bool = False, max_episode_steps: int | None = None):  # fmt: skip
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if max_episode_steps is not None:  # what gymnasium.make_vec passes from the registration
            max_codes = min(max_codes, max_episode_steps)
        autoreset_mode = AutoresetMode(autoreset_mode)
        if autoreset_mode == AutoresetMode.SAME_STEP:
            raise ValueError("autoreset_mode SAME_STEP is not supported; use NEXT_STEP or DISABLED")
        self.num_envs = num_envs
        self.metadata = {"autoreset_mode": autoreset_mode, "render_modes": []}
        self.prompts = (
            default_prompts()
            if prompts is None
            else (prompts if isinstance(prompts, PromptSet) else PromptSet(prompts))
        )
        text_encoder, tokenizer, scorer = parts if parts is not None else default_parts(bundle)
        self.batch = EmissionBatch(num_envs, text_encoder, tokenizer, scorer, max_codes=max_codes,
                                   scalarization=scalarization, weights=weights)  # fmt: skip
        self.reward_tokens = check_tokens(reward_tokens)
        self.vector_reward = vector_reward
        self.single_action_space = spaces.Discrete(self.batch.end_token + 1)
        self.action_space = spaces.MultiDiscrete(np.full(num_envs, self.batch.end_token + 1))
        self.single_observation_space = observation_space(self.batch.text_dim, max_codes, self.batch.end_token)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        if vector_reward:
            self.reward_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self._rngs: list[np.random.Generator | None] = [None] * num_envs
        self._ended = np.ones(num_envs, dtype=bool)  # the episode in this slot is over
        self._started = False

    def _seeds(self, seed) -> list[int | None]:
        if seed is None or isinstance(seed, (int, np.integer)):
            return [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
        return seeds

    def reset(self, *, seed=None, options: dict | None = None):
        options = dict(options or {})
        mask = np.asarray(options.pop("reset_mask", np.ones(self.num_envs, dtype=bool)))
        if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
            raise ValueError(f"reset_mask must be a ({self.num_envs},) bool array, got {mask.dtype} {mask.shape}")
        if not self._started and not mask.all():
            raise ValueError("the first reset must reset every env (reset_mask all True)")
        for i, s in enumerate(self._seeds(seed)):
            if mask[i] and (s is not None or self._rngs[i] is None):
                self._rngs[i], _ = seeding.np_random(s)
        self._begin(np.flatnonzero(mask), options)
        self._started = True
        return self.batch.observation(), self._infos(np.flatnonzero(mask), {})

    def _begin(self, rows: np.ndarray, options: dict) -> None:
        if len(rows) == 0:
            return
        drawn = [draw_episode(self._rngs[i], self.prompts, self.reward_tokens, options) for i in rows]
        self.batch.begin(rows.tolist(), self.prompts, [p for p, _ in drawn], [t for _, t in drawn])
        self._ended[rows] = False

    def _infos(self, rows: np.ndarray, extra: dict[int, dict]) -> dict:
        """Gymnasium's vector info layout (a value array and a ``_key`` mask per key), built as arrays."""
        present = np.zeros(self.num_envs, dtype=bool)
        present[rows] = True
        prompts = np.full(self.num_envs, None, dtype=object)
        prompts[rows] = [self.batch.prompts[i] for i in rows]
        infos = {"prompt": prompts, "_prompt": present,
                 "prompt_id": np.where(present, self.batch.prompt_ids, 0), "_prompt_id": present,
                 "num_codes": np.where(present, self.batch.num_codes, 0), "_num_codes": present}  # fmt: skip
        for i, info in extra.items():  # only the envs whose episode ended this step
            infos = self._add_info(infos, info, i)
        return infos

    def step(self, actions):
        if not self._started:
            raise RuntimeError("step() called before reset()")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not self.action_space.contains(actions.astype(np.int64)):
            raise ValueError(
                f"actions must be {self.num_envs} integers in [0, {self.batch.end_token}], got {actions!r}"
            )
        actions = actions.astype(np.int64)
        rewards = np.zeros((self.num_envs, 3) if self.vector_reward else self.num_envs, dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        restarting = np.flatnonzero(self._ended)
        if len(restarting) and self.metadata["autoreset_mode"] == AutoresetMode.DISABLED:
            raise RuntimeError(
                f"envs {restarting.tolist()} have ended; reset them with reset(options={{'reset_mask': mask}}) "
                "before stepping (autoreset is disabled)"
            )
        self._begin(restarting, {})  # NEXT_STEP: their actions are ignored
        active = np.flatnonzero(~np.isin(np.arange(self.num_envs), restarting))
        extra: dict[int, dict] = {}
        if len(active):
            term, trunc = self.batch.emit(active, actions[active])
            terminated[active], truncated[active] = term, trunc
            ended = active[term | trunc]
            if len(ended):
                scored = self.batch.score(ended)
                rewards[ended] = scored.vector if self.vector_reward else scored.reward
                for k, i in enumerate(ended):
                    extra[int(i)] = {"reward_components": self.batch.components(scored, k),
                                     "reward_vector": scored.vector[k].astype(np.float32)}  # fmt: skip
            self._ended[ended] = True
        return self.batch.observation(), rewards, terminated, truncated, self._infos(np.arange(self.num_envs), extra)


class MOTextToMotionVectorEnv(TextToMotionVectorEnv):
    """The vector env with MO-Gymnasium's reward: ``(num_envs, 3)`` normalised rewards."""

    def __init__(self, num_envs: int, *args, **kwargs):
        super().__init__(num_envs, *args, vector_reward=True, **kwargs)
