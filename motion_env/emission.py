"""The token-emission MDP for many episodes at once: the state and rules both envs share.

The single env (:mod:`motion_env.env`) is this with one row; the vector env
(:mod:`motion_env.vector_env`) with ``num_envs`` rows. Episodes that end in the same step are
decoded by the VQ-VAE and scored by the shared batched reward scorer in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reward_models.rewards import REWARD_NAMES
from reward_models.rewards import REWARD_TOKENS as REWARD_TOKEN_OF

# Which reward column each reward-specific token asks for (Appendix B).
TOKEN_COLUMN = {REWARD_TOKEN_OF[name]: k for k, name in enumerate(REWARD_NAMES)}
REWARD_TOKENS = tuple(REWARD_TOKEN_OF.values())
DEFAULT_MAX_CODES = 49  # 196 frames, HumanML3D's longest kept clip
SCALARIZATIONS = ("token", "weighted")
EMPTY_MOTION_REWARD = -1.0


class PromptSet:
    """Prompts an env draws from, each with its ground-truth motion when one is known.

    ``source``: a ``datasets.Dataset`` with a ``caption`` column (and optionally ``motion``, raw
    ``(T, 263)`` features), a list of strings, or a dataset directory in HumanML3D layout (its
    ``train`` split).
    """

    def __init__(self, source):
        if isinstance(source, (str, Path)):
            from motion_env.datasets import load_humanml3d

            source = load_humanml3d(source, "train")
        if isinstance(source, Sequence) and not isinstance(source, str):
            texts, motions = list(source), [None] * len(source)
        elif hasattr(source, "column_names"):
            if "caption" not in source.column_names:
                raise ValueError(f"a prompt dataset needs a 'caption' column, got columns {source.column_names}")
            columns = source[:]  # one formatting pass: column by column, a dataset formats row by row
            texts = list(columns["caption"])
            motions = [None] * len(texts)
            if "motion" in columns:  # sliced arrays are read-only views of the Arrow table: keep writable copies
                motions = [m.copy() if isinstance(m, np.ndarray) else m for m in columns["motion"]]
        else:
            raise TypeError(
                f"prompts must be a datasets.Dataset, a list of strings or a path, got {type(source).__name__}"
            )
        if not texts:
            raise ValueError("the prompt set is empty; give at least one prompt")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"prompt {i} must be a non-empty string, got {text!r}")
        self.texts, self.motions = texts, motions

    def __len__(self) -> int:
        return len(self.texts)

    def index(self, prompt) -> int:
        """Index of a prompt given by index or text; a new text joins the set (no ground truth)."""
        if isinstance(prompt, (int, np.integer)):
            if not 0 <= prompt < len(self):
                raise ValueError(f"prompt index {prompt} is outside the prompt set of {len(self)}")
            return int(prompt)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"a prompt must be an index or a non-empty string, got {prompt!r}")
        if prompt not in self.texts:
            self.texts.append(prompt)
            self.motions.append(None)
        return self.texts.index(prompt)


def draw_episode(np_random: np.random.Generator, prompts: PromptSet, reward_tokens: Sequence[str | None],
                 options: dict | None) -> tuple[int, str | None]:  # fmt: skip
    """Prompt index and reward token of a new episode, as ``reset(options=...)`` asks.

    Both are always drawn, so a fixed option does not shift the generator's later draws.
    """
    options = dict(options or {})
    unknown = set(options) - {"prompt", "reward_token"}
    if unknown:
        raise ValueError(f"unknown reset options {sorted(unknown)}; expected 'prompt' and/or 'reward_token'")
    prompt_id = int(np_random.integers(len(prompts)))
    token = reward_tokens[int(np_random.integers(len(reward_tokens)))]
    if "prompt" in options:
        prompt_id = prompts.index(options["prompt"])
    if "reward_token" in options:
        token = check_token(options["reward_token"])
    return prompt_id, token


def check_token(token: str | None) -> str | None:
    if token is not None and token not in REWARD_TOKENS:
        raise ValueError(f"unknown reward token {token!r}; expected one of {REWARD_TOKENS} or None")
    return token


def check_tokens(reward_tokens: Sequence[str | None]) -> list[str | None]:
    tokens = [check_token(t) for t in reward_tokens]
    if not tokens:
        raise ValueError("reward_tokens is empty; pass [None] for episodes without a reward token")
    return tokens


@dataclass
class Scored:
    """What the end of an episode reports."""

    reward: np.ndarray  # (m,) scalar rewards
    vector: np.ndarray  # (m, 3) normalised rewards
    raw: np.ndarray  # (m, 3)


class EmissionBatch:
    """``n`` episodes of emitting motion tokens for prompts.

    Args:
        n: number of episodes held at once.
        text_encoder: ``GuidedTextEncoder``-like, ``features(texts, reward_token) -> (B, dim)``.
        tokenizer: the VQ-VAE (``decode``, ``denormalize``, ``config.codebook_size``).
        scorer: the batched reward scorer, ``scorer(features, lengths, prompts, ground_truth)``.
        max_codes: tokens after which an episode is truncated (and scored).
        scalarization: ``"token"`` (the reward of the episode's reward token, as in the paper; the
            mean of the three for an episode without one) or ``"weighted"`` (``weights · r̃``).
        weights: the three weights of ``"weighted"``, in reward-name order.
    """

    def __init__(self, n: int, text_encoder, tokenizer, scorer, *, max_codes: int = DEFAULT_MAX_CODES,
                 scalarization: str = "token", weights: Sequence[float] | None = None):  # fmt: skip
        if scalarization not in SCALARIZATIONS:
            raise ValueError(f"scalarization must be one of {SCALARIZATIONS}, got {scalarization!r}")
        weights = np.full(3, 1 / 3) if weights is None else np.asarray(weights, dtype=np.float64)
        if weights.shape != (3,) or not np.isfinite(weights).all():
            raise ValueError(f"weights must be 3 finite numbers (text, motion, perception), got {weights}")
        if max_codes < 1:
            raise ValueError(f"max_codes must be >= 1, got {max_codes}")
        self.n, self.max_codes = n, max_codes
        self.text_encoder, self.tokenizer, self.scorer = text_encoder, tokenizer, scorer
        self.scalarization, self.weights = scalarization, weights
        self.end_token = tokenizer.config.codebook_size
        self.pad_token = self.end_token + 1
        self.text_dim = text_encoder.dim
        self.tokens = np.full((n, max_codes), self.pad_token, dtype=np.int64)
        self.num_codes = np.zeros(n, dtype=np.int64)
        self.text = np.zeros((n, self.text_dim), dtype=np.float32)
        self.prompts: list[str | None] = [None] * n
        self.ground_truth: list[np.ndarray | None] = [None] * n
        self.reward_tokens: list[str | None] = [None] * n
        self.prompt_ids = np.full(n, -1, dtype=np.int64)
        self._fitting_prompts: set[str] = set()

    def begin(self, rows: Sequence[int], prompts: PromptSet, prompt_ids: Sequence[int],
              reward_tokens: Sequence[str | None]) -> None:  # fmt: skip
        """Start new episodes in ``rows`` for the given prompts and reward tokens."""
        texts = [prompts.texts[i] for i in prompt_ids]
        self._check_prompt_length(texts)
        features = self.text_encoder.features(texts, list(reward_tokens))  # (m, dim), Eq. 11
        for k, row in enumerate(rows):
            self.tokens[row] = self.pad_token
            self.num_codes[row] = 0
            self.text[row] = features[k].detach().cpu().numpy()
            self.prompts[row], self.ground_truth[row] = texts[k], prompts.motions[prompt_ids[k]]
            self.reward_tokens[row], self.prompt_ids[row] = reward_tokens[k], prompt_ids[k]

    def _check_prompt_length(self, texts: list[str]) -> None:
        encoder = getattr(self.text_encoder, "encoder", None)
        tokenizer, limit = getattr(encoder, "tokenizer", None), getattr(encoder, "max_length", None)
        if tokenizer is None or limit is None:
            return
        budget = limit - tokenizer.num_special_tokens_to_add() - 8  # room for a reward-token suffix
        for text in texts:
            if text in self._fitting_prompts:  # each prompt is tokenised once, not at every reset
                continue
            count = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            if count > budget:
                raise ValueError(
                    f"prompt {text[:60]!r}... has {count} text tokens; the text encoder reads at most {budget} "
                    f"with a reward token ({limit} in all)"
                )
            self._fitting_prompts.add(text)

    def observation(self, rows: Sequence[int] | slice = slice(None)) -> dict[str, np.ndarray]:
        return {
            "text": self.text[rows].copy(),
            "tokens": self.tokens[rows].copy(),
            "mask": (self.tokens[rows] != self.pad_token).astype(np.int8),
        }

    def emit(self, rows: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Append ``actions`` to ``rows``; returns ``(terminated, truncated)`` masks over ``rows``."""
        ended = actions == self.end_token
        emitting = rows[~ended]
        self.tokens[emitting, self.num_codes[emitting]] = actions[~ended]
        self.num_codes[emitting] += 1
        truncated = ~ended & (self.num_codes[rows] >= self.max_codes)
        return ended, truncated

    @torch.no_grad()
    def score(self, rows: Sequence[int]) -> Scored:
        """Decode and score the motions of ``rows`` in one batch."""
        rows = np.asarray(rows, dtype=np.int64)
        vector = np.full((len(rows), 3), EMPTY_MOTION_REWARD)
        raw = np.full((len(rows), 3), np.nan)
        filled = self.num_codes[rows] > 0  # an END as the first action leaves no motion to score
        if filled.any():
            keep = rows[filled]
            width = int(self.num_codes[keep].max())
            device = next(self.tokenizer.parameters()).device
            codes = torch.from_numpy(self.tokens[keep, :width]).to(device)
            features, lengths = self.tokenizer.decode_motion(codes, torch.from_numpy(self.num_codes[keep]).to(device))
            out = self.scorer(features, lengths, [self.prompts[r] for r in keep],
                              [self.ground_truth[r] for r in keep])  # fmt: skip
            vector[filled] = out.rewards.double().cpu().numpy()
            raw[filled] = out.raw.double().cpu().numpy()
        return Scored(self.scalarize(vector, [self.reward_tokens[r] for r in rows]), vector, raw)

    def scalarize(self, vector: np.ndarray, tokens: Sequence[str | None]) -> np.ndarray:
        if self.scalarization == "weighted":
            return vector @ self.weights
        out = vector.mean(-1)
        for i, token in enumerate(tokens):
            if token is not None:
                out[i] = vector[i, TOKEN_COLUMN[token]]
        return out

    def components(self, scored: Scored, i: int) -> dict[str, dict[str, float]]:
        return {name: {"raw": float(scored.raw[i, k]), "normalized": float(scored.vector[i, k])}
                for k, name in enumerate(REWARD_NAMES)}  # fmt: skip


def default_parts(bundle: str | Path | None = None, device: str | torch.device = "cpu"):
    """Text encoder, VQ-VAE and reward scorer of a bundle (the shipped default when ``None``)."""
    from agents.pipeline import default_checkpoint_dir
    from agents.text_encoder import GuidedTextEncoder, SentenceEncoder
    from motion_env.tokenizer import MotionVQVAE
    from reward_models.rewards import RewardScorer

    root = Path(bundle) if bundle is not None else default_checkpoint_dir()
    tokenizer = MotionVQVAE.from_pretrained(root / "vqvae", dtype=torch.float32).to(device).eval()
    scorer = RewardScorer.from_pretrained(root / "rewards", device=device)
    return GuidedTextEncoder(SentenceEncoder()), tokenizer, scorer


def default_prompts():
    """The procedural training split (generated into ``data/procedural`` when missing)."""
    from motion_env.procedural import ensure_dataset

    return PromptSet(ensure_dataset("data/procedural"))
