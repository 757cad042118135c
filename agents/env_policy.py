"""MotionGPT acting in the vector env with a KV cache: each step feeds every env only its newest position.

The env returns the whole padded token sequence at every step; recomputing it would cost a
forward of ``num_envs × (1 + codes)`` positions per step. `CachedPolicyActor` keeps one
`RowKVCache` row per env instead, so a step costs one forward of ``num_envs × 1`` positions,
with every env at its own position since envs restart at different steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from agents.motion_gpt import MotionGPTForCausalLM, RowKVCache, _filter_logits, _sample


@dataclass
class ActorStep:
    """The actor's answer to one observation of the vector env."""

    actions: np.ndarray  # (n,) int64, for env.step; 0 where the env ignores the action
    logprobs: np.ndarray  # (n,) float32, log softmax(logits / temperature) of the action; 0 where ignored
    acting: np.ndarray  # (n,) bool, False where the env ignores the action (its NEXT_STEP reset step)
    logits: torch.Tensor  # (n, V) the policy's logits at each env's newest position; meaningless where not acting


class CachedPolicyActor:
    """Samples actions for `TextToMotionVectorEnv` from MotionGPT without recomputing prefixes.

    Each call takes the observation the env returned and feeds each env's new position into its
    cache row: the text feature when an episode begins (position 0), else the one code the env
    appended. Sampling is as in `MotionGPTForCausalLM.generate` (temperature, top-k, top-p,
    ``generator``); call ``policy.eval()`` first for dropout-free actions.

    Episode boundaries are read from the observations and the optional flags:
    - an episode begins in a row that holds none yet, whose code count dropped, or that is in
      ``reset_rows`` (pass the ``reset_mask`` with the observation ``reset`` returned);
    - an episode ends in the rows of ``done`` (``terminated | truncated`` of the step that returned
      the observation) or, without it, in a row with no new code (END) or with the env's
      ``max_codes`` codes (truncated). The row gets a placeholder action, which the env ignores
      under NEXT_STEP autoreset, and begins its next episode on the following call. Under
      DISABLED autoreset an ended env must be reset before it steps, so an ended row with 0
      codes is read as begun (reset after an END as its first action).
    After ``env.reset()`` of every env, call ``reset()`` or pass ``reset_rows``: under NEXT_STEP a
    row that had 0 codes would otherwise read as ended.

    Args:
        policy: a `MotionGPTForCausalLM` (or a peft wrapper of one) whose codebook is the env's.
        num_envs: the vector env's ``num_envs``.
        autoreset_mode: the env's ``metadata["autoreset_mode"]`` (NEXT_STEP or DISABLED).
        temperature, top_k, top_p: as in `generate`; log-probs are taken before top-k / top-p.
        generator: a `torch.Generator` on the policy's device, for reproducible actions.
    """

    def __init__(self, policy: MotionGPTForCausalLM, num_envs: int, *,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None):  # fmt: skip
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        autoreset_mode = AutoresetMode(autoreset_mode)
        if autoreset_mode == AutoresetMode.SAME_STEP:
            raise ValueError("autoreset_mode SAME_STEP is not supported; use NEXT_STEP or DISABLED")
        self.policy, self.num_envs, self.autoreset_mode = policy, num_envs, autoreset_mode
        self.temperature, self.top_k, self.top_p, self.generator = temperature, top_k, top_p, generator
        self.config = policy.config
        self._body = policy.transformer
        weight = self._body.wte.weight
        with torch.inference_mode():  # the cache is only ever written under inference mode
            self.cache = RowKVCache(self.config, num_envs, dtype=weight.dtype, device=weight.device)
        self._codes = np.full(num_envs, -1, dtype=np.int64)  # codes of each row's episode in the cache; -1: none

    def reset(self, rows=None) -> None:
        """Forget the episodes of ``rows`` (indices or a (n,) bool mask; all when None): they begin on the next call."""
        self._codes[slice(None) if rows is None else rows] = -1

    def act(self, observation: dict, done: np.ndarray | None = None, reset_rows: np.ndarray | None = None):
        """Actions (n,) int64 for ``env.step``; see `step`."""
        return self.step(observation, done, reset_rows).actions

    @torch.inference_mode()
    def step(self, observation: dict, done: np.ndarray | None = None,
             reset_rows: np.ndarray | None = None) -> ActorStep:  # fmt: skip
        """Feed every env's new position and sample its next action.

        Args:
            observation: the vector env's observation (``text`` (n, text_dim), ``tokens`` and ``mask`` (n, max_codes)).
            done: (n,) bool, ``terminated | truncated`` of the step that returned ``observation``.
            reset_rows: (n,) bool, rows whose observation begins a new episode.
        """
        text, tokens, counts = self._read(observation)
        begins = (self._codes < 0) | (counts < self._codes)  # no episode in the row yet, or its env was reset
        if reset_rows is not None:
            begins |= self._flags(reset_rows, "reset_rows")
        if done is not None:
            ends = self._flags(done, "done") & ~begins
        else:  # no new code: END was emitted; or the env's max_codes reached: truncated
            ends = ~begins & ((counts == self._codes) | (counts == tokens.shape[1]))
        if self.autoreset_mode == AutoresetMode.DISABLED:  # an ended env is reset before it steps again
            begins |= ends & (counts == 0)
            ends &= ~begins
        continues = ~begins & ~ends
        self._check_counts(begins, counts, 0, "begin an episode")
        self._check_counts(continues, counts, self._codes + 1, "continue their episodes")

        codes = np.full(self.num_envs, self.config.pad_token_id, dtype=np.int64)
        codes[continues] = tokens[continues, counts[continues] - 1]
        self.cache.reset(begins | ends)  # an ended row takes a placeholder at position 0, emptied when it begins
        device = self._body.wte.weight.device
        x = self._body.wte(torch.from_numpy(codes).to(device))  # (n, C)
        if begins.any():
            rows = torch.from_numpy(np.flatnonzero(begins)).to(device)
            features = torch.from_numpy(text[begins]).to(device, self._body.text_proj.weight.dtype)
            x[rows] = self._body.text_proj(features)  # (m, C)
        logits = self.policy(inputs_embeds=x[:, None], cache=self.cache).logits[:, -1]  # (n, V)

        scaled = logits.float() / self.temperature  # (n, V)
        actions = _sample(_filter_logits(scaled, self.top_k, self.top_p).softmax(-1), self.generator)  # (n,)
        logprobs = scaled.log_softmax(-1).gather(1, actions[:, None]).squeeze(1)  # (n,)
        acting = ~ends
        self._codes[begins], self._codes[continues], self._codes[ends] = 0, counts[continues], -1
        actions = np.where(acting, actions.cpu().numpy(), 0)
        logprobs = np.where(acting, logprobs.cpu().numpy(), 0.0).astype(np.float32)
        return ActorStep(actions, logprobs, acting, logits)

    def _read(self, observation: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        text, tokens, mask = (np.asarray(observation[key]) for key in ("text", "tokens", "mask"))
        n, text_dim, max_codes = self.num_envs, self.config.text_dim, self.config.max_codes
        if text.shape != (n, text_dim) or tokens.ndim != 2 or tokens.shape[0] != n or mask.shape != tokens.shape:
            raise ValueError(
                f"the observation must hold text ({n}, {text_dim}), tokens and mask ({n}, max_codes); got text "
                f"{text.shape}, tokens {tokens.shape}, mask {mask.shape}"
            )
        if tokens.shape[1] > max_codes:
            raise ValueError(f"the env's episodes run to {tokens.shape[1]} codes; the policy holds {max_codes}")
        return text, tokens, mask.sum(1, dtype=np.int64)

    def _flags(self, flags, name: str) -> np.ndarray:
        flags = np.asarray(flags)
        if flags.shape != (self.num_envs,) or flags.dtype != np.bool_:
            raise ValueError(f"{name} must be a ({self.num_envs},) bool array, got {flags.dtype} {flags.shape}")
        return flags

    def _check_counts(self, rows: np.ndarray, counts: np.ndarray, expected, what: str) -> None:
        bad = rows & (counts != expected)
        if bad.any():
            expected = np.broadcast_to(expected, counts.shape)
            raise ValueError(
                f"envs {np.flatnonzero(bad).tolist()} {what} but hold {counts[bad].tolist()} codes, not "
                f"{expected[bad].tolist()}; give the actor every observation of the env in order, with reset_rows "
                "where envs were reset"
            )


__all__ = ["ActorStep", "CachedPolicyActor"]
