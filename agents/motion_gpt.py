"""MotionGPT: a T2M-GPT-style text-conditioned autoregressive transformer over VQ-VAE motion codes.

Sequence layout: position 0 is the projected text feature, positions 1.. are motion codes; the
logit at position i predicts code i, and after the last code it predicts END. The vocabulary is
the K codebook entries, then END (id K), then PAD (id K + 1), which is never predicted.

The cache argument is called ``cache``, as in transformers 5.x; ``past_key_values`` is accepted
as its older name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from safetensors import SafetensorError
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

IGNORE_INDEX = -100


@strict
class MotionGPTConfig(PretrainedConfig):
    r"""Configuration of [`MotionGPTForCausalLM`].

    Args:
        codebook_size (`int`): K, the number of VQ-VAE codes. END is id K, PAD is id K + 1.
        text_dim (`int`): width of the sentence-encoder feature placed at position 0.
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size (`int`): transformer size.
        max_codes (`int`): the longest code sequence (196 frames / 4 = 49); sets the position table.
        dropout (`float`): dropout on embeddings, attention weights and residual branches.
        layer_norm_eps, initializer_range (`float`): as in GPT-2.
        vocab_size, end_token_id, pad_token_id (`int`): derived from `codebook_size`; pass them only
            with their derived values (as a saved config.json does).
    """

    model_type = "motion_gpt"

    codebook_size: int = 512
    text_dim: int = 384
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    max_codes: int = 49
    dropout: float = 0.1
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    vocab_size: int | None = None
    end_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs):
        for name in ("codebook_size", "text_dim", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_codes"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        derived = {"vocab_size": self.codebook_size + 2, "end_token_id": self.codebook_size,
                   "pad_token_id": self.codebook_size + 1}  # fmt: skip
        for name, value in derived.items():
            given = getattr(self, name)
            if given is not None and given != value:
                raise ValueError(
                    f"{name} is derived from codebook_size={self.codebook_size} and must be {value}, got {given}"
                )
            setattr(self, name, value)
        super().__post_init__(**kwargs)


class MotionKVCache:
    """Keys and values of every layer in tensors allocated once for the whole sequence.

    ``update`` copies the new steps in place and returns views up to the filled length, so a decode
    step allocates nothing for the cache (transformers' `DynamicCache` concatenates every step).
    Any object with the same ``update`` / ``get_seq_length`` (e.g. a `DynamicCache`) also works.
    """

    def __init__(self, config: MotionGPTConfig, batch_size: int, max_length: int | None = None,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):  # fmt: skip
        self.max_length = max_length or config.max_codes + 1
        head_dim = config.hidden_size // config.num_attention_heads
        shape = (config.num_hidden_layers, batch_size, config.num_attention_heads, self.max_length, head_dim)
        self.keys = torch.empty(shape, dtype=dtype, device=device)  # (nl, B, nh, S, hs)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.lengths = [0] * config.num_hidden_layers

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        start, end = self.lengths[layer_idx], self.lengths[layer_idx] + key.shape[-2]
        if end > self.max_length:
            raise ValueError(f"MotionKVCache holds {self.max_length} positions, got {end}")
        if key.shape[0] != self.keys.shape[1]:
            raise ValueError(f"MotionKVCache was made for batch size {self.keys.shape[1]}, got {key.shape[0]}")
        self.keys[layer_idx, :, :, start:end] = key
        self.values[layer_idx, :, :, start:end] = value
        self.lengths[layer_idx] = end
        return self.keys[layer_idx, :, :, :end], self.values[layer_idx, :, :, :end]  # (B, nh, end, hs)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.lengths[layer_idx]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (a bool mask or indices over the batch), in order: drops ended sequences."""
        self.keys, self.values = self.keys[:, rows], self.values[:, rows]


class RowKVCache:
    """Keys and values of a batch whose rows each sit at their own position (envs restarting at different steps).

    Every row has its own filled length: ``update`` writes row b's new steps at its positions
    ``lengths[b]..``, ``attention_mask`` lets each new step attend to its own row's filled positions
    up to itself, ``position_ids`` gives each row's positions for the position embedding, and
    ``reset(rows)`` empties rows for new sequences. `MotionGPTModel` and its attention ask any cache
    for ``position_ids`` and ``attention_mask``; with a cache that lacks them (`MotionKVCache`) the
    rows move in lock-step. ``update`` returns the whole preallocated buffers; the mask hides the
    unfilled positions.
    """

    def __init__(self, config: MotionGPTConfig, batch_size: int, max_length: int | None = None,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):  # fmt: skip
        self.max_length = max_length or config.max_codes + 1
        head_dim = config.hidden_size // config.num_attention_heads
        shape = (config.num_hidden_layers, batch_size, config.num_attention_heads, self.max_length, head_dim)
        # zeros, not empty: masked positions get weight 0, and 0 * NaN from uninitialised memory would be NaN
        self.keys = torch.zeros(shape, dtype=dtype, device=device)  # (nl, B, nh, S, hs)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.lengths = torch.zeros(config.num_hidden_layers, batch_size, dtype=torch.long, device=device)  # (nl, B)
        self._steps = torch.arange(self.max_length, device=device)  # (S,)

    def position_ids(self, query_length: int) -> torch.Tensor:
        """Positions (B, T) of the next ``query_length`` steps of every row."""
        return self.lengths[0, :, None] + self._steps[:query_length]  # (B, T)

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        batch_size, _, query_length, _ = key.shape
        if batch_size != self.keys.shape[1]:
            raise ValueError(f"RowKVCache was made for batch size {self.keys.shape[1]}, got {batch_size}")
        positions = self.lengths[layer_idx, :, None] + self._steps[:query_length]  # (B, T)
        end = int(positions[:, -1].max()) + 1
        if end > self.max_length:
            raise ValueError(f"RowKVCache holds {self.max_length} positions, a row would fill {end}")
        index = positions[:, None, :, None].expand_as(key)  # (B, nh, T, hs)
        self.keys[layer_idx].scatter_(2, index, key)
        self.values[layer_idx].scatter_(2, index, value)
        self.lengths[layer_idx] += query_length
        return self.keys[layer_idx], self.values[layer_idx]  # (B, nh, S, hs), S = max_length

    def attention_mask(self, layer_idx: int, query_length: int) -> torch.Tensor:
        """Which keys each of the ``query_length`` steps just written may attend to: (B, 1, T, S) bool."""
        # after update, row b's step t sits at lengths[b] - T + t and sees its row's positions up to itself
        last = self.lengths[layer_idx, :, None] - query_length + self._steps[:query_length]  # (B, T)
        return (self._steps <= last[..., None])[:, None]  # (B, 1, T, S)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """The longest row's filled length."""
        return int(self.lengths[layer_idx].max())

    def reset(self, rows=None) -> None:
        """Empty ``rows`` (indices or a (B,) bool mask; all rows when None) for new sequences."""
        if rows is None:
            self.lengths.zero_()
            return
        rows = torch.as_tensor(rows, device=self.lengths.device)
        self.lengths[:, rows if rows.dtype == torch.bool else rows.long()] = 0


class PackedRows:
    """Right-padded rows laid end to end in fewer rows of the same width, so padding costs no compute.

    Rows of a batch ``(B, S)`` with ``lengths[b]`` valid positions are placed, longest first, into
    the first packed row with room (first-fit decreasing). Every slot keeps the position it had in
    its own row (so position embeddings need no change) and attends only to its own row's earlier
    slots: the valid positions' outputs equal those of the padded batch. Slots left empty attend to
    themselves and are dropped by `unpack`.

    Attributes:
        index: ``(P, S)`` long, each slot's position in the flattened padded batch ``(B * S)``; -1 when empty.
        attention_mask: ``(P, 1, S, S)`` bool, the keys each slot may attend to.
    """

    def __init__(self, lengths: torch.Tensor, width: int):
        counts = self._counts(lengths, width)
        self.batch_size, self.width = len(counts), width
        bins = self._first_fit(counts, width)
        index = torch.full((len(bins), width), -1, dtype=torch.long)
        segment = torch.full((len(bins), width), -1, dtype=torch.long)
        for i, rows in enumerate(bins):
            start = 0
            for row in rows:
                index[i, start : start + counts[row]] = row * width + torch.arange(counts[row])
                segment[i, start : start + counts[row]] = row
                start += counts[row]
        steps = torch.arange(width)
        same_row = (segment[:, :, None] == segment[:, None, :]) & (segment[:, :, None] >= 0)  # (P, S, S)
        causal = steps[None, :] <= steps[:, None]  # (S, S)
        self.attention_mask = ((same_row & causal) | torch.eye(width, dtype=torch.bool))[:, None].to(lengths.device)
        self.index = index.to(lengths.device)
        self._valid = self.index >= 0

    @staticmethod
    def _counts(lengths: torch.Tensor, width: int) -> list[int]:
        if lengths.dim() != 1 or ((lengths < 1) | (lengths > width)).any():
            raise ValueError(f"lengths must be a (B,) tensor of values in [1, {width}], got {lengths.tolist()}")
        return lengths.tolist()

    @staticmethod
    def _first_fit(counts: list[int], width: int) -> list[list[int]]:
        """The rows of each packed row: longest first, each into the first packed row with room."""
        bins: list[list[int]] = []
        room: list[int] = []
        for row in sorted(range(len(counts)), key=lambda b: -counts[b]):
            slot = next((i for i, free in enumerate(room) if free >= counts[row]), None)
            if slot is None:
                bins.append([])
                room.append(width)
                slot = len(bins) - 1
            bins[slot].append(row)
            room[slot] -= counts[row]
        return bins

    @classmethod
    def if_worth_it(cls, lengths: torch.Tensor, width: int, min_saving: float = 0.1) -> PackedRows | None:
        """The packing of ``lengths``, or None when it would save less than ``min_saving`` of the positions."""
        rows = len(cls._first_fit(cls._counts(lengths, width), width))
        return cls(lengths, width) if rows <= (1.0 - min_saving) * len(lengths) else None

    @property
    def num_rows(self) -> int:
        return len(self.index)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, S, ...)`` -> ``(P, S, ...)``; empty slots are 0."""
        flat = x.reshape(self.batch_size * self.width, *x.shape[2:])
        packed = flat[self.index.clamp(min=0)]  # (P, S, ...)
        return packed * self._valid.view(*self._valid.shape, *([1] * (x.dim() - 2))).to(x.dtype)

    def unpack(self, y: torch.Tensor) -> torch.Tensor:
        """``(P, S, ...)`` -> ``(B, S, ...)``; padding positions are 0."""
        out = y.new_zeros(self.batch_size * self.width, *y.shape[2:])
        out = out.index_put((self.index[self._valid],), y[self._valid])
        return out.reshape(self.batch_size, self.width, *y.shape[2:])


class MotionGPTAttention(nn.Module):
    def __init__(self, config: MotionGPTConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.dropout
        # separate projections (not one fused c_attn) so that peft LoRA can target them by name
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states: torch.Tensor, cache=None, attention_mask=None) -> torch.Tensor:
        """``attention_mask`` (B, 1, T, T) bool, without a cache: the keys each position attends to (packing)."""
        B, T, C = hidden_states.shape
        q = self.q_proj(hidden_states).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(hidden_states).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        v = self.v_proj(hidden_states).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        mask = attention_mask
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, nh, S, hs), S = past + T
            row_mask = getattr(cache, "attention_mask", None)  # a cache whose rows sit at their own positions
            mask = row_mask(self.layer_idx, T) if row_mask is not None else None  # (B, 1, T, S)
        past = k.shape[-2] - T
        if mask is None and past > 0 and T > 1:  # SDPA's is_causal is top-left; steps after a prefix need bottom-right
            mask = torch.ones(T, past + T, dtype=torch.bool, device=q.device).tril(diagonal=past)  # (T, S)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
            is_causal=mask is None and past == 0 and T > 1,
        )  # (B, nh, T, hs)  # fmt: skip
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.o_proj(y))


class MotionGPTMLP(nn.Module):
    def __init__(self, config: MotionGPTConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(F.gelu(self.up_proj(hidden_states))))


class MotionGPTBlock(GradientCheckpointingLayer):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: MotionGPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = MotionGPTAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MotionGPTMLP(config)

    def forward(self, hidden_states: torch.Tensor, cache=None, attention_mask=None) -> torch.Tensor:
        hidden_states = hidden_states + self.attn(self.ln_1(hidden_states), cache=cache, attention_mask=attention_mask)
        return hidden_states + self.mlp(self.ln_2(hidden_states))


class MotionGPTPreTrainedModel(PreTrainedModel):
    config_class = MotionGPTConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MotionGPTBlock"]

    def _init_weights(self, module):
        super()._init_weights(module)  # normal(0, initializer_range) for Linear/Embedding, LayerNorm to (1, 0)
        if isinstance(module, (MotionGPTAttention, MotionGPTMLP)):
            # GPT-2's scaled init of the projections that write into the residual stream (2 per block)
            std = self.config.initializer_range / (2 * self.config.num_hidden_layers) ** 0.5
            residual_proj = module.o_proj if isinstance(module, MotionGPTAttention) else module.down_proj
            init.normal_(residual_proj.weight, mean=0.0, std=std)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        # safetensors reports a truncated file as "incomplete metadata" without naming it
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as err:
            raise OSError(
                f"cannot read the weights in {pretrained_model_name_or_path}: the safetensors file is truncated or "
                f"corrupt ({err}); save the checkpoint again"
            ) from err


def is_fsdp_managed(module: nn.Module) -> bool:
    """Whether FSDP2 (`torch.distributed.fsdp.fully_shard`) manages any part of ``module``."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch without FSDP2
        return False
    return any(isinstance(m, FSDPModule) for m in module.modules())


def _check_inputs(config: MotionGPTConfig, input_ids, text_features, past_length: int, inputs_embeds=None) -> None:
    """Raise a ValueError naming the offending value for input the model cannot take."""
    if inputs_embeds is not None:
        if input_ids is not None or text_features is not None:
            raise ValueError("pass inputs_embeds or input_ids / text_features, not both")
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != config.hidden_size:
            raise ValueError(
                f"inputs_embeds must be (B, T, hidden_size={config.hidden_size}), got {tuple(inputs_embeds.shape)}"
            )
        _check_length(config, past_length + inputs_embeds.shape[1])
        return
    if text_features is None and past_length == 0:
        raise ValueError(
            "text_features (B, text_dim) is required on the first call (no cache yet): position 0 is the text; "
            "later calls pass only the new codes with the cache"
        )
    if text_features is not None:
        if past_length > 0:
            raise ValueError(
                f"text_features is only taken on the first call, but the cache already holds {past_length} positions"
            )
        if text_features.dim() != 2 or text_features.shape[-1] != config.text_dim:
            raise ValueError(
                f"text_features must be (B, text_dim={config.text_dim}), got shape {tuple(text_features.shape)}"
            )
        if not text_features.is_floating_point():
            raise ValueError(f"text_features must be a float tensor, got {text_features.dtype}")
    if input_ids is None or input_ids.numel() == 0:
        if text_features is None:
            raise ValueError("nothing to run: with a cache, pass the new codes as input_ids (B, L >= 1)")
        return
    if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int32):
        raise ValueError(
            f"input_ids must be a (B, L) long tensor of codes, got {input_ids.dtype} of shape {tuple(input_ids.shape)}"
        )
    if text_features is not None and input_ids.shape[0] != text_features.shape[0]:
        raise ValueError(
            f"input_ids has batch size {input_ids.shape[0]} but text_features has {text_features.shape[0]}"
        )
    bad = (input_ids < 0) | (input_ids >= config.vocab_size)
    if bad.any():
        raise ValueError(
            f"input_ids must be codes in [0, {config.vocab_size}), got {input_ids[bad].unique()[:10].tolist()}"
        )
    _check_length(config, past_length + int(text_features is not None) + input_ids.shape[1])


def _check_length(config: MotionGPTConfig, total: int) -> None:
    if total > config.max_codes + 1:
        raise ValueError(f"sequence of {total} positions (text + codes) exceeds max_codes + 1 = {config.max_codes + 1}")


def _check_attention_mask(attention_mask: torch.Tensor, input_ids) -> None:
    if input_ids is None or attention_mask.shape != input_ids.shape:
        shape = None if input_ids is None else tuple(input_ids.shape)
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must have the shape of input_ids {shape}")
    if (attention_mask[:, 1:] > attention_mask[:, :-1]).any():
        raise ValueError("attention_mask must be right-padded (1s then 0s); left padding is not supported")


class MotionGPTModel(MotionGPTPreTrainedModel):
    """The transformer body: text projection and code embeddings in, final hidden states out."""

    def __init__(self, config: MotionGPTConfig):
        super().__init__(config)
        self.text_proj = nn.Linear(config.text_dim, config.hidden_size)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.wpe = nn.Embedding(config.max_codes + 1, config.hidden_size)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(MotionGPTBlock(config, i) for i in range(config.num_hidden_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def forward(self, input_ids=None, text_features=None, cache=None, use_cache=None, past_key_values=None,
                inputs_embeds=None, attention_mask=None):  # fmt: skip
        """Final hidden states (B, T, C) of [text?, codes]; see `MotionGPTForCausalLM.forward`.

        ``attention_mask`` (B, L) over ``input_ids``, right-padded: on a first call (text, no cache)
        the rows then run packed (`PackedRows`) where that saves compute, and the hidden states
        past each row's text and real codes are 0.
        """
        cache = _cache_alias(cache, past_key_values)
        if attention_mask is not None:
            _check_attention_mask(attention_mask, input_ids)
        past_length = cache.get_seq_length() if cache is not None else 0
        _check_inputs(self.config, input_ids, text_features, past_length, inputs_embeds)
        if use_cache and cache is None:
            batch_size = next(x for x in (inputs_embeds, text_features, input_ids) if x is not None).shape[0]
            cache = MotionKVCache(self.config, batch_size, dtype=self.wte.weight.dtype, device=self.wte.weight.device)
        parts = [] if inputs_embeds is None else [inputs_embeds]
        if text_features is not None:
            parts.append(self.text_proj(text_features.to(self.text_proj.weight.dtype)).unsqueeze(1))  # (B, 1, C)
        if input_ids is not None and input_ids.shape[1] > 0:
            parts.append(self.wte(input_ids))  # (B, L, C)
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # (B, T, C)
        row_positions = getattr(cache, "position_ids", None)  # a cache whose rows sit at their own positions
        if row_positions is None:
            x = self.drop(x + self.wpe.weight[past_length : past_length + x.shape[1]])  # (B, T, C)
        else:
            x = self.drop(x + self.wpe(row_positions(x.shape[1])))  # (B, T, C)
        packing = None
        if attention_mask is not None and cache is None and inputs_embeds is None and text_features is not None:
            packing = PackedRows.if_worth_it(attention_mask.sum(-1).long() + 1, x.shape[1])  # text + real codes
        if packing is not None:
            x = packing.pack(x)  # (P, T, C)
        mask = None if packing is None else packing.attention_mask
        for block in self.h:
            x = block(x, cache=cache, attention_mask=mask)
        x = self.ln_f(x)
        if packing is not None:
            x = packing.unpack(x)  # (B, T, C)
        return BaseModelOutputWithPast(last_hidden_state=x, **{_CACHE_FIELD: cache if use_cache else None})


# transformers renamed the outputs' cache field from ``past_key_values`` to ``cache`` in 5.x;
# build and read outputs under whichever name the installed version uses.
_CACHE_FIELD = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def _output_cache(outputs):
    return getattr(outputs, _CACHE_FIELD)


def _cache_alias(cache, past_key_values):
    """The cache under its transformers-5 name ``cache`` or its older name ``past_key_values``."""
    if past_key_values is not None and cache is not None:
        raise ValueError("pass the cache as `cache` or as `past_key_values`, not both")
    return cache if cache is not None else past_key_values


def _filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set to -inf the logits outside the top-k and outside the top-p nucleus (B, V) -> (B, V)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1)  # ascending
        drop = sorted_logits.softmax(-1).cumsum(-1) <= 1.0 - top_p  # (B, V)
        drop[:, -1] = False  # the most likely code always stays
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


def _sample(probs: torch.Tensor, generator: torch.Generator | None, rows: torch.Tensor | None = None,
            batch_size: int | None = None) -> torch.Tensor:  # fmt: skip
    """One draw per row from probs (B, V) -> (B,), by inverse CDF.

    One uniform per row; `torch.multinomial` draws V exponentials per row, ~1 ms of a ~13 ms
    decode step at B = 64, V = 514 on a 2-core CPU. With ``rows`` (B,) of a batch of
    ``batch_size``, the uniforms of the whole batch are drawn and those of ``rows`` used, so the
    generator's stream does not depend on which rows are still sampled.
    """
    cdf = probs.cumsum(-1)  # (B, V)
    n = probs.shape[0] if rows is None else batch_size
    u = torch.rand(n, 1, generator=generator, device=probs.device, dtype=cdf.dtype)  # (n, 1)
    u = u if rows is None else u[rows]  # (B, 1)
    ids = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=probs.shape[-1] - 1)  # (B, 1)
    # should u * total round up to the total, it would land past the last possible code
    ids = torch.where(probs.gather(1, ids) > 0, ids, probs.argmax(-1, keepdim=True))
    return ids.squeeze(1)


class MotionGPTForCausalLM(MotionGPTPreTrainedModel, GenerationMixin):
    """MotionGPT with its next-code head; `generate` is a batched KV-cached sampler."""

    # The loss is a mean over the batch's labelled positions; Trainer need not pass token counts.
    accepts_loss_kwargs = False

    def __init__(self, config: MotionGPTConfig):
        super().__init__(config)
        self.transformer = MotionGPTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def _logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden_states)  # (..., V)
        pad = torch.full((1,), self.config.pad_token_id, device=logits.device)
        # PAD is padding, never an action. Out of place: a new tensor rather than a view of the
        # head's 2-D product, which FSDP2 cannot hook for backward.
        return logits.index_fill(-1, pad, float("-inf"))

    def forward(self, input_ids=None, text_features=None, attention_mask=None, cache=None, labels=None,
                use_cache=None, return_dict=True, past_key_values=None,
                inputs_embeds=None) -> CausalLMOutputWithPast:  # fmt: skip
        r"""
        Args:
            input_ids (`torch.LongTensor` (B, L)): codes, right-padded (PAD or any code past the mask).
                On later calls with a cache: only the new codes.
            text_features (`torch.FloatTensor` (B, text_dim)): required on the first call, refused later.
            attention_mask (`torch.LongTensor` (B, L)): 1 for real codes, then 0 (right padding only).
                Attention is causal, so padding never reaches a real position: the mask sets `labels`
                past the first padded code to ignored and, on a first call, lets the rows run packed,
                which skips the padding's compute (the logits past a row's END position are then the
                head's bias).
            cache (`MotionKVCache`, `RowKVCache` or a transformers `Cache`): from the previous call's
                output; `past_key_values` is accepted as its older name. With a `RowKVCache` every row
                continues from its own filled length.
            labels (`torch.LongTensor`, the logits' (B, T)): on the first call (B, L + 1):
                `labels[:, i]` is code i and `labels[:, n]` END after a row's n codes; -100 is
                ignored. No shift is applied.
            use_cache (`bool`): return a cache; defaults to True exactly when a cache was passed.
            inputs_embeds (`torch.FloatTensor` (B, T, hidden_size)): embedded positions in place of
                `input_ids` and `text_features` (`text_proj` of a text feature, `wte` of a code), so
                that rows can take text and codes in the same call.

        Returns:
            `CausalLMOutputWithPast` with `logits` (B, T, V), T = L + 1 on the first call, L later;
            the PAD logit is -inf.
        """
        cache = _cache_alias(cache, past_key_values)
        use_cache = cache is not None if use_cache is None else use_cache
        outputs = self.transformer(input_ids, text_features, cache, use_cache, inputs_embeds=inputs_embeds,
                                   attention_mask=attention_mask)  # fmt: skip
        logits = self._logits(outputs.last_hidden_state)  # (B, T, V)
        loss = None
        if labels is not None:
            labels = self._mask_labels(labels, logits.shape[:2], attention_mask)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
        if not return_dict:
            return tuple(x for x in (loss, logits, _output_cache(outputs)) if x is not None)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{_CACHE_FIELD: _output_cache(outputs)})

    def _mask_labels(self, labels, logits_shape, attention_mask) -> torch.Tensor:
        """Check labels (B, T) and ignore those after a right-padded row's END position."""
        if labels.shape != logits_shape:
            raise ValueError(
                f"labels must have shape {tuple(logits_shape)} (one per logit position), got {tuple(labels.shape)}"
            )
        bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels > self.config.end_token_id))
        if bad.any():
            raise ValueError(
                f"labels must be codes or END (0..{self.config.end_token_id}) or {IGNORE_INDEX}, "
                f"got {labels[bad].unique()[:10].tolist()}"
            )
        if attention_mask is None:
            return labels
        offset = logits_shape[1] - attention_mask.shape[1]  # 1 when the text is position 0
        # position i predicts code i; after n real codes, position n predicts END and later ones see padding
        valid = torch.cat([attention_mask.new_ones(labels.shape[0], offset), attention_mask], dim=1).bool()
        return labels.masked_fill(~valid, IGNORE_INDEX)

    def prepare_inputs_for_generation(self, input_ids, cache=None, text_features=None, use_cache=True, **kwargs):
        """Lets transformers' `GenerationMixin.generate` drive this model (our `generate` does not use it).

        There, `input_ids` must be one placeholder id per row (e.g. END) standing for the text
        position, so that its length counts the text position as the cache does::

            GenerationMixin.generate(model, torch.full((B, 1), config.end_token_id), text_features=f,
                                     eos_token_id=config.end_token_id, pad_token_id=config.pad_token_id)
        """
        past_length = cache.get_seq_length() if cache is not None else 0
        if past_length == 0:
            inputs = {"input_ids": input_ids[:, 1:], "text_features": text_features}
        else:
            inputs = {"input_ids": input_ids[:, past_length:]}
        return inputs | {"cache": cache, "use_cache": use_cache}

    def generate(self, text_features: torch.Tensor, *, max_codes: int | None = None, do_sample: bool = True,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, min_codes: int = 0, return_logprobs: bool = False,
                 return_hidden_states: bool = False):  # fmt: skip
        """Sample code sequences for a batch of text features, each row stopping at its own END.

        Runs in the module's current mode: call `.eval()` first for dropout-free sampling.

        Args:
            text_features: (B, text_dim).
            max_codes: codes per row at most (default and upper bound: `config.max_codes`); a row
                that has not emitted END by then is cut there.
            do_sample: sample from softmax(logits / temperature) after top-k / top-p; else argmax.
            generator: a `torch.Generator` for reproducible sampling.
            min_codes: END is not allowed before this many codes.
            return_logprobs: also return the log-probabilities of the emitted tokens.
            return_hidden_states: also return the final hidden state from which each token was drawn.

        Returns:
            codes (B, max_codes) long, padded with PAD after each row's end (END itself excluded);
            lengths (B,) long; with `return_logprobs`, logprobs (B, max_codes) float:
            log softmax(logits / temperature) of the chosen token with END masked before
            ``min_codes`` (the distribution it was drawn from), but before top-k / top-p; a teacher-
            forced forward reproduces it (`agents.ppo.token_logprobs` with ``min_codes``). For t < length it
            is the code's; at t = length (< max_codes) it is END's; after that 0. With
            `return_hidden_states`, last, hidden_states (B, max_codes, hidden_size): position t is
            the state [text, codes[:t]], as a teacher-forced forward gives it; positions after a
            row's END, and after the batch has ended, are 0. PPO reads its value estimates from them.
        """
        config = self.config
        max_codes = config.max_codes if max_codes is None else max_codes
        if not 1 <= max_codes <= config.max_codes:
            raise ValueError(f"max_codes must be in [1, {config.max_codes}], got {max_codes}")
        if not 0 <= min_codes <= max_codes:
            raise ValueError(f"min_codes must be in [0, max_codes={max_codes}], got {min_codes}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (use do_sample=False for greedy), got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")

        _check_inputs(config, None, text_features, past_length=0)
        # inference mode is a little faster than no_grad per decode step, but FSDP's gathered weights
        # must stay usable by the training forward that follows
        with torch.no_grad() if is_fsdp_managed(self) else torch.inference_mode():
            codes, lengths, logprobs, states = self._decode(text_features, max_codes, do_sample, temperature, top_k,
                                                            top_p, generator, min_codes, return_logprobs,
                                                            return_hidden_states)  # fmt: skip
        outputs = (codes, lengths, logprobs, states)
        asked = (True, True, return_logprobs, return_hidden_states)
        outputs = tuple(x for x, keep in zip(outputs, asked) if keep)
        # inference tensors cannot be saved for backward; PPO feeds these codes to a training forward
        return tuple(x.clone() for x in outputs)

    def _decode(self, text_features, max_codes, do_sample, temperature, top_k, top_p, generator, min_codes,
                return_logprobs, return_hidden_states):  # fmt: skip
        """The sampling loop of `generate`: one cached forward of B new codes per step.

        Returns codes, lengths, then logprobs and hidden states, each None when not asked for.
        """
        config = self.config
        batch_size, device, end_id = text_features.shape[0], self.lm_head.weight.device, config.end_token_id
        cache = MotionKVCache(config, batch_size, max_codes + 1, dtype=self.lm_head.weight.dtype, device=device)
        codes = torch.full((batch_size, max_codes), config.pad_token_id, dtype=torch.long, device=device)
        lengths = torch.full((batch_size,), max_codes, dtype=torch.long, device=device)
        logprobs = torch.zeros(batch_size, max_codes, device=device) if return_logprobs else None
        finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
        states = None
        if return_hidden_states:
            states = torch.zeros(batch_size, max_codes, config.hidden_size, dtype=cache.keys.dtype, device=device)

        hidden = self.transformer(None, text_features, cache=cache).last_hidden_state  # (B, 1, C)
        # The rows still computed (b of B, in cache order). Once an eighth of them have ended, they
        # leave the batch and the cache: the rest decode as before, the same uniforms drawn.
        rows = torch.arange(batch_size, device=device)
        for step in range(max_codes):
            ended = finished[rows]  # (b,)
            if states is not None:
                states[rows, step] = hidden[:, -1].masked_fill(ended[:, None], 0.0)
            logits = self._logits(hidden[:, -1]).float()  # (b, V)
            if temperature != 1.0:
                logits = logits / temperature
            if step < min_codes:
                logits[:, end_id] = float("-inf")
            if return_logprobs:
                step_logprobs = logits.log_softmax(-1)  # (b, V)
            if do_sample:
                probs = _filter_logits(logits, top_k, top_p).softmax(-1)  # (b, V)
                next_ids = _sample(probs, generator, rows, batch_size)  # (b,)
            else:
                next_ids = logits.argmax(-1)  # (b,)

            if return_logprobs:
                logprobs[rows, step] = step_logprobs.gather(1, next_ids[:, None]).squeeze(1).masked_fill_(ended, 0.0)
            is_end = next_ids == end_id
            codes[rows, step] = next_ids.masked_fill(ended | is_end, config.pad_token_id)
            lengths[rows] = lengths[rows].masked_fill(is_end & ~ended, step)
            finished[rows] = ended | is_end
            if step == max_codes - 1 or bool(finished.all()):
                break
            live = ~finished[rows]  # (b,)
            if 8 * (len(rows) - int(live.sum())) >= len(rows):
                rows, next_ids = rows[live], next_ids[live]
                cache.select(live)
            hidden = self.transformer(next_ids[:, None], cache=cache).last_hidden_state  # (b, 1, C)
        return codes, lengths, logprobs, states


__all__ = ["MotionGPTConfig", "MotionGPTForCausalLM", "MotionGPTModel", "MotionGPTPreTrainedModel", "MotionKVCache",
           "PackedRows", "RowKVCache"]  # fmt: skip
