"""PPO for text-to-motion on the `transformers.Trainer` loop, written the TRL way (SPEC §7).

One PPO iteration (a *rollout*) on every process:

1. draw ``num_prompts_per_rollout`` prompts; for each, one text feature per reward token (Eq. 11)
   and ``num_samples_per_token`` code sequences sampled with the KV cache at ``temperature``;
2. decode the codes with the VQ-VAE and score the motions with the shared batched scorer: a
   ``(samples, 3)`` matrix of normalised rewards (Eq. 12);
3. ``select(reward_matrix, groups)`` says which samples enter the update (all of them here; the
   Pareto front of each prompt group in `agents.pareto.ParetoPPOTrainer`) — a loss mask, so batch
   shapes stay equal across processes;
4. per-token reward −β·KL(π‖π_ref) with the sample's scalar reward added on its last token
   (Eq. 7), GAE (λ = γ = 1 is Eq. 8), clipped policy loss (Eq. 9) and clipped value loss (Eq. 10)
   over ``num_ppo_epochs`` × minibatches of ``per_device_train_batch_size``.

Every call of `training_step` is one minibatch, so ``max_steps``, ``gradient_accumulation_steps``,
checkpointing, ``resume_from_checkpoint``, logging and accelerate/DeepSpeed/FSDP come from the
Trainer. Rollout ``r`` samples with a generator seeded by ``(seed, r, process)`` and its prompts
come from a seeded permutation, so a resumed run repeats the uninterrupted one; the current
rollout is saved with each checkpoint.
"""

from __future__ import annotations

import copy
import functools
import types
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from agents.motion_gpt import MotionGPTForCausalLM, MotionGPTModel, is_fsdp_managed
from agents.pareto import grouped_non_dominated_mask
from motion_env.emission import TOKEN_COLUMN, PromptSet
from reward_models.rewards import REWARD_NAMES
from reward_models.rewards import REWARD_TOKENS as TOKEN_OF_REWARD

REWARD_OF_TOKEN = {token: name for name, token in TOKEN_OF_REWARD.items()}
NO_TOKEN = "none"
ROLLOUT_FILE = "rollout.safetensors"
VALUE_FILE = "value.safetensors"
CONFIG_FILE = "motion_ppo_config.json"


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


@dataclass
class MotionPPOConfig(TrainingArguments):
    r"""Settings of [`MotionPPOTrainer`]; every `TrainingArguments` field works as usual.

    ``per_device_train_batch_size`` is the PPO minibatch; a rollout holds
    ``num_prompts_per_rollout × len(reward_tokens) × num_samples_per_token`` samples per process and
    is used for ``num_ppo_epochs`` passes, so one rollout is
    ``num_ppo_epochs × rollout_size / per_device_train_batch_size`` training steps.
    """

    output_dir: str = _help("Where checkpoints, logs and the fine-tuned model go.", default="outputs/ppo_pareto")
    # rollout
    num_prompts_per_rollout: int = _help("Prompts per rollout and process.", default=8)
    reward_tokens: list[str] = _help(
        "Reward-specific tokens each prompt is sampled with (Eq. 11): any of '<mt>', '<mm>', '<perception>', "
        "or 'none' for the plain prompt.",
        default_factory=lambda: ["<mt>", "<mm>", "<perception>"],
    )
    num_samples_per_token: int = _help("Samples per prompt and reward token (N).", default=4)
    temperature: float = _help("Sampling temperature of the rollouts (the paper's 1.5).", default=1.5)
    max_codes: int | None = _help("Most codes per motion (default: the policy's max_codes).", default=None)
    min_codes: int = _help("END is not sampled before this many codes (10 codes = 40 frames).", default=10)
    # rewards
    rewards: list[str] = _help(
        f"Rewards that count, of {list(REWARD_NAMES)}: the Pareto filter and the weighted sum use only these.",
        default_factory=lambda: list(REWARD_NAMES),
    )
    reward_scalarization: str = _help(
        "Scalar reward of a sample: 'token' (its reward token's reward, r(t_k, m_k) of Eq. 7; the mean of the "
        "counted rewards for 'none') or 'weighted' (reward_weights · rewards).",
        default="token",
    )
    reward_weights: list[float] | None = _help(
        "Weights of 'weighted', one per counted reward (default: equal).", default=None
    )
    # PPO
    num_ppo_epochs: int = _help("Passes over each rollout.", default=2)
    kl_coef: float = _help("β of the per-token KL penalty to the reference policy.", default=0.05)
    kl_estimator: str = _help("'k1' (log π − log π_ref) or 'k3' (an unbiased, non-negative estimator).", default="k1")
    gamma: float = _help("Discount γ.", default=1.0)
    lam: float = _help(
        "GAE λ; λ = γ = 1 (the default) is the Monte-Carlo advantage G_t − V(s_t) of Eq. 8.", default=1.0
    )
    cliprange: float = _help("ε of the clipped policy loss (Eq. 9).", default=0.2)
    cliprange_value: float = _help("Clip range of the value loss (Eq. 10).", default=0.2)
    vf_coef: float = _help("Weight of the value loss.", default=0.1)
    whiten_advantages: bool = _help("Whiten advantages over a rollout's tokens.", default=True)
    score_normalization: str = _help(
        "'none' (the paper) or 'group': standardise each sample's scalar reward among the samples of the same "
        "prompt and reward token before it enters the returns, which takes the prompt's difficulty and the "
        "scale of each reward out of the advantage.",
        default="none",
    )
    whiten_rewards: bool = _help("Whiten the per-token rewards before GAE.", default=False)
    loss_normalization: str = _help(
        "How the losses average over a rollout: 'tokens' (TRL's PPO: each minibatch's losses are means over its "
        "selected tokens) or 'front' (Algorithm 1's objective: each selected sample's per-token terms summed over "
        "its steps, averaged over the n(P) samples selected in the whole rollout, on every process; divided by "
        "max_codes so its scale stays that of a per-token mean).",
        default="tokens",
    )
    critic: str = _help(
        "'head': a value head on the policy's hidden states; 'separate': its own transformer, initialised from "
        "the policy's.",
        default="head",
    )
    # the paper's optimizer settings where TrainingArguments' defaults differ
    learning_rate: float = _help("AdamW learning rate (the paper's 5e-6).", default=5e-6)
    adam_beta2: float = _help("AdamW β2 (the paper's 0.99).", default=0.99)
    per_device_train_batch_size: int = _help("PPO minibatch per process (the paper's 32).", default=32)
    logging_steps: float = _help("Log every this many optimizer steps.", default=10)
    save_strategy: str = _help("When to checkpoint ('no', 'steps', 'epoch').", default="no")
    report_to: str | list[str] = _help("Loggers ('tensorboard', 'none', ...).", default="none")
    remove_unused_columns: bool = _help("Kept False: the trainer feeds its own rollouts.", default=False)

    def __post_init__(self):
        super().__post_init__()
        self.reward_tokens = [NO_TOKEN if t in (None, "", NO_TOKEN) else t for t in self.reward_tokens]
        if not self.reward_tokens:
            raise ValueError("reward_tokens is empty; give at least one of '<mt>', '<mm>', '<perception>', 'none'")
        for token in self.reward_tokens:
            if token != NO_TOKEN and token not in TOKEN_COLUMN:
                raise ValueError(
                    f"unknown reward token {token!r} in reward_tokens; use '<mt>' (text adherence), '<mm>' (motion "
                    f"quality), '<perception>' (human preference) or 'none'"
                )
        unknown = [r for r in self.rewards if r not in REWARD_NAMES]
        if unknown or not self.rewards:
            raise ValueError(f"rewards must be a non-empty subset of {list(REWARD_NAMES)}, got {self.rewards}")
        if self.reward_scalarization not in ("token", "weighted"):
            raise ValueError(f"reward_scalarization must be 'token' or 'weighted', got {self.reward_scalarization!r}")
        if self.reward_scalarization == "token":
            missing = [t for t in self.reward_tokens if t != NO_TOKEN and REWARD_OF_TOKEN[t] not in self.rewards]
            if missing:
                raise ValueError(
                    f"reward tokens {missing} ask for rewards outside rewards={self.rewards}; add them to rewards or "
                    "drop the tokens"
                )
        if self.reward_weights is not None and len(self.reward_weights) != len(self.rewards):
            raise ValueError(
                f"reward_weights needs one weight per counted reward {self.rewards}, got {self.reward_weights}"
            )
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator must be 'k1' or 'k3', got {self.kl_estimator!r}")
        if self.score_normalization not in ("none", "group"):
            raise ValueError(f"score_normalization must be 'none' or 'group', got {self.score_normalization!r}")
        if self.score_normalization == "group" and self.num_samples_per_token < 2:
            raise ValueError(
                "score_normalization='group' standardises each prompt's rewards over its num_samples_per_token "
                f"samples, which needs at least 2, got {self.num_samples_per_token}; sample more per prompt or "
                "use score_normalization='none'"
            )
        if self.loss_normalization not in ("tokens", "front"):
            raise ValueError(f"loss_normalization must be 'tokens' or 'front', got {self.loss_normalization!r}")
        if self.critic not in ("head", "separate"):
            raise ValueError(f"critic must be 'head' or 'separate', got {self.critic!r}")
        for name in ("num_prompts_per_rollout", "num_samples_per_token", "num_ppo_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"gamma and lam must be in [0, 1], got gamma={self.gamma}, lam={self.lam}")
        rollout, minibatch = self.rollout_size, self.per_device_train_batch_size
        if rollout % minibatch:
            raise ValueError(
                f"incompatible batch sizes: a rollout of {rollout} samples (num_prompts_per_rollout="
                f"{self.num_prompts_per_rollout} × {len(self.reward_tokens)} reward tokens × num_samples_per_token="
                f"{self.num_samples_per_token}) does not split into minibatches of per_device_train_batch_size="
                f"{minibatch}; choose a minibatch that divides {rollout} (e.g. {_divisor_near(rollout, minibatch)})"
            )
        if self.steps_per_rollout % self.gradient_accumulation_steps:
            raise ValueError(
                f"incompatible batch sizes: one rollout is {self.steps_per_rollout} minibatch steps "
                f"(num_ppo_epochs={self.num_ppo_epochs} × {rollout // minibatch} minibatches), which "
                f"gradient_accumulation_steps={self.gradient_accumulation_steps} does not divide; use a divisor of "
                f"{self.steps_per_rollout}"
            )

    @property
    def rollout_size(self) -> int:
        return self.num_prompts_per_rollout * len(self.reward_tokens) * self.num_samples_per_token

    @property
    def steps_per_rollout(self) -> int:
        """Minibatch steps (calls of `training_step`) per rollout."""
        return self.num_ppo_epochs * self.rollout_size // self.per_device_train_batch_size


def _divisor_near(n: int, target: int) -> int:
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - target), -d))


class PolicyAndValue(nn.Module):
    """The policy (a `MotionGPTForCausalLM`, optionally peft-wrapped) and its critic as one module.

    One forward gives next-token logits and state values for teacher-forced code sequences, so
    the Trainer (and DDP/FSDP/DeepSpeed) sees one model, as TRL's PPO wrapper did.
    """

    def __init__(self, policy: nn.Module, critic: str = "head"):
        super().__init__()
        self.policy = policy
        base = base_policy(policy)
        self.value_model = None
        if critic == "separate":
            # a peft policy's weights live in its LoRA-injected layers: the critic starts from them merged
            source = copy.deepcopy(policy).merge_and_unload() if _is_peft(policy) else base
            self.value_model = MotionGPTModel(base.config)
            self.value_model.load_state_dict(source.transformer.state_dict())
        self.value_head = nn.Linear(base.config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    @property
    def config(self):
        return base_policy(self.policy).config

    def forward(self, text_features: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Logits (B, L + 1, V) and values (B, L + 1) of the states [text, codes[:i]], i = 0..L.

        ``attention_mask`` (B, L) marks the codes whose states are needed (right-padded); the rows
        then run packed where that saves compute (see `MotionGPTModel.forward`).
        """
        base = base_policy(self.policy)
        hidden = base.transformer(input_ids, text_features, attention_mask=attention_mask).last_hidden_state
        return base._logits(hidden), self._values(hidden, text_features, input_ids, attention_mask)

    def generate(self, text_features: torch.Tensor, **kwargs):
        """The policy's `MotionGPTForCausalLM.generate` (adapters active), called through this module so
        that FSDP gathers its weights for sampling (see `register_fsdp_methods`)."""
        return base_policy(self.policy).generate(text_features, **kwargs)

    def values(self, policy_hidden: torch.Tensor, text_features: torch.Tensor, input_ids: torch.Tensor,
               attention_mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Values (B, L + 1) of the states [text, codes[:i]] from the policy's final hidden states of them.

        The value head reads them directly; a separate critic runs its own transformer on the codes.
        """
        return self._values(policy_hidden, text_features, input_ids, attention_mask)

    def register_fsdp_methods(self) -> None:
        """Let `generate` and `values`, called outside `forward`, gather FSDP2-sharded weights as `forward`
        does (no-op without FSDP2; call once, after `fully_shard`)."""
        try:
            from torch.distributed.fsdp import FSDPModule, register_fsdp_forward_method
        except ImportError:
            return
        if isinstance(self, FSDPModule) and not getattr(self, "_fsdp_methods_registered", False):
            register_fsdp_forward_method(self, "generate")
            register_fsdp_forward_method(self, "values")
            self._fsdp_methods_registered = True

    def _values(self, policy_hidden, text_features, input_ids, attention_mask=None) -> torch.Tensor:
        # `forward` calls this one: `values` may be registered with FSDP, whose hooks must not run twice
        if self.value_model is not None:
            policy_hidden = self.value_model(input_ids, text_features, attention_mask=attention_mask).last_hidden_state
        head = self.value_head  # one output: hidden · w + b, (B, L + 1) and not a view (FSDP2 hooks it)
        return policy_hidden @ head.weight[0] + head.bias


def base_policy(policy: nn.Module) -> MotionGPTForCausalLM:
    """The `MotionGPTForCausalLM` inside a peft wrapper (LoRA layers stay injected), or the policy."""
    return policy.get_base_model() if hasattr(policy, "get_base_model") else policy


def _is_peft(policy: nn.Module) -> bool:
    return hasattr(policy, "disable_adapter") and hasattr(policy, "peft_config")


def disable_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        elif isinstance(getattr(module, "dropout", None), float):  # attention's SDPA dropout_p
            module.dropout = 0.0
    if hasattr(model, "config") and hasattr(model.config, "dropout"):
        model.config.dropout = 0.0


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over ``mask``; 0 (still in the graph) when the mask is empty."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    count = mask.sum().clamp(min=1)
    mean = (values * mask).sum() / count
    var = (((values - mean) * mask) ** 2).sum() / (count - 1).clamp(min=1)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


def group_standardize(scores: torch.Tensor, groups: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(score − mean of its group) / std of its group, over the ``valid`` samples (R,) -> (R,)."""
    num_groups = int(groups.max()) + 1
    weight = valid.float()
    count = torch.zeros(num_groups, device=scores.device).index_add_(0, groups, weight).clamp(min=1)
    mean = torch.zeros(num_groups, device=scores.device).index_add_(0, groups, scores * weight) / count
    centred = (scores - mean[groups]) * weight
    var = torch.zeros(num_groups, device=scores.device).index_add_(0, groups, centred**2) / (count - 1).clamp(min=1)
    return centred * torch.rsqrt(var[groups] + 1e-8)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Advantages and returns (B, T) by generalised advantage estimation over ``mask``'d steps.

    A step's successor counts only while it is inside the episode, so the last step's advantage is
    ``r − V``; with λ = γ = 1 the advantage is the return-to-go minus V (Eq. 8).
    """
    values = values * mask
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    steps = rewards.shape[1]
    for t in reversed(range(steps)):
        going_on = mask[:, t + 1] if t + 1 < steps else torch.zeros_like(last)
        next_value = values[:, t + 1] * going_on if t + 1 < steps else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * going_on * last
        advantages[:, t] = last
    advantages = advantages * mask
    return advantages, advantages + values


def token_logprobs(logits: torch.Tensor, actions: torch.Tensor, temperature: float, min_codes: int = 0):
    """Log-probabilities (B, T) of ``actions`` and entropies (B, T) under softmax(logits / temperature).

    The PAD column (never an action, its logit is -inf) is dropped before the softmax. At the first
    ``min_codes`` positions END (the last remaining column) is masked as the sampler masks it, so
    these are the probabilities of the distribution the actions were drawn from.
    """
    scaled = logits[..., :-1].float() / temperature  # (B, T, V - 1)
    if min_codes > 0:
        early = torch.arange(scaled.shape[-2], device=scaled.device) < min_codes  # (T,)
        end = torch.arange(scaled.shape[-1], device=scaled.device) == scaled.shape[-1] - 1  # (V - 1,)
        scaled = scaled.masked_fill(early[:, None] & end, float("-inf"))
    logp = scaled.log_softmax(-1)
    chosen = logp.gather(-1, actions.clamp(max=logp.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp.clamp(min=torch.finfo(logp.dtype).min)).sum(-1)  # 0 · log 0 = 0
    return chosen, entropy


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL(π‖π_ref) estimate from log-probabilities of the sampled tokens."""
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    return torch.expm1(-log_ratio) + log_ratio  # k3: (r − 1) − log r, r = π_ref / π


@dataclass
class Rollout:
    """One rollout's samples (R rows) and per-token quantities (R, T) on one process."""

    text_features: torch.Tensor  # (R, text_dim)
    codes: torch.Tensor  # (R, T) codes, PAD past each length
    lengths: torch.Tensor  # (R,) codes per row
    actions: torch.Tensor  # (R, T) codes then END
    action_mask: torch.Tensor  # (R, T) float, 1 on the row's actions
    logprobs: torch.Tensor  # (R, T)
    values: torch.Tensor  # (R, T)
    advantages: torch.Tensor  # (R, T)
    returns: torch.Tensor  # (R, T)
    rewards: torch.Tensor  # (R, 3) normalised rewards, `REWARD_NAMES` order
    scores: torch.Tensor  # (R,) the scalar reward of each sample
    groups: torch.Tensor  # (R,) prompt group of each sample
    selected: torch.Tensor  # (R,) bool, the `select` mask
    index: torch.Tensor  # () the rollout's number
    front_weight: torch.Tensor  # () weight of one selected token's loss under loss_normalization='front'

    def rows(self, index: torch.Tensor) -> Rollout:
        return Rollout(**{f.name: getattr(self, f.name) if f.name in _PER_ROLLOUT else getattr(self, f.name)[index]
                          for f in fields(self)})  # fmt: skip

    def trimmed(self) -> Rollout:
        """The same rows cut to the most actions any of them has: the positions past it are padding in every row,
        and a causal model's outputs before them do not depend on them."""
        width = max(1, int(self.action_mask.sum(-1).max()))
        return Rollout(**{f.name: getattr(self, f.name)[:, :width] if f.name in _PER_TOKEN else getattr(self, f.name)
                          for f in fields(self)})  # fmt: skip

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name).contiguous() for f in fields(self)}


_PER_TOKEN = {"codes", "actions", "action_mask", "logprobs", "values", "advantages", "returns"}
_PER_ROLLOUT = {"index", "front_weight"}


class _StepIndices(torch.utils.data.Dataset):
    """The Trainer's dataloader yields one item per minibatch step; the rollouts bring the data."""

    def __init__(self, length: int):
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, int]:
        return {"step": i}


class _SkipNonFiniteSteps(TrainerCallback):
    """Skip an optimizer step whose gradients hold a NaN/Inf, or whose loss was non-finite; count the skips.

    The decision is taken jointly by all processes (a shard's NaN under FSDP, or one process's
    non-finite loss under DDP, skips the step everywhere), so the weights stay in step. A skipped step
    leaves the weights and the optimizer state as they were; the learning-rate schedule moves on.
    """

    def __init__(self, trainer: MotionPPOTrainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        trainer = self.trainer
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        # each process checks the gradients it holds (its shards under FSDP); the reduction joins them
        grads = [g.to_local() if hasattr(g, "to_local") else g for g in grads]
        # one fused pass: a tensor's norm is NaN/Inf when an entry is (or when it overflows float32, a step
        # gradient clipping would zero anyway); checking each tensor entry by entry cost ~20 ms a step
        bad_gradients = bool(grads) and not torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()
        flags = torch.tensor(
            [trainer._nonfinite_loss, bad_gradients], dtype=torch.float32, device=trainer.accelerator.device
        )
        bad_loss, bad_gradients = (trainer.accelerator.reduce(flags, "max") > 0).tolist()
        trainer._nonfinite_loss = False
        if bad_loss:
            trainer._metrics["skipped/nonfinite_loss"].append(1.0)
        elif bad_gradients:
            trainer._metrics["skipped/nonfinite_gradients"].append(1.0)
        trainer._skip_optimizer_step = bad_loss or bad_gradients

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer._skip_optimizer_step = False


class MotionPPOTrainer(Trainer):
    """PPO fine-tuning of a MotionGPT policy against the batched multi-reward scorer.

    Args:
        model: the policy, a `MotionGPTForCausalLM` (or a peft model around one).
        args: a `MotionPPOConfig`.
        train_dataset: prompts: a `datasets.Dataset` with a ``caption`` column (and ``motion``, the
            ground truth r_m compares with), a list of strings, or a `motion_env.emission.PromptSet`.
        text_encoder: a `GuidedTextEncoder` (reward-token features, Eq. 11).
        tokenizer: the VQ-VAE that decodes codes into motion.
        scorer: the batched scorer, ``scorer(features, lengths, prompts, ground_truth)`` -> an object
            with ``rewards`` (B, 3), normalised, in `REWARD_NAMES` order (a `RewardScorer`).
        ref_model: the reference policy; default: a frozen copy of ``model`` as given, or, with
            ``peft_config`` or a peft model, the same network with its adapters disabled.
        peft_config: a peft config (e.g. from `trl.get_peft_config`) to wrap ``model`` with.
    """

    _tag_names = ["motionrl", "ppo"]

    def __init__(self, model: nn.Module, args: MotionPPOConfig, train_dataset, text_encoder, tokenizer, scorer,
                 ref_model: nn.Module | None = None, peft_config=None, callbacks=None):  # fmt: skip
        if not isinstance(args, MotionPPOConfig):
            raise TypeError(f"args must be a MotionPPOConfig, got {type(args).__name__}")
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        base = base_policy(model)
        if not isinstance(base, MotionGPTForCausalLM):
            raise TypeError(f"model must be a MotionGPTForCausalLM (or a peft model of one), got {type(base).__name__}")
        if base.config.codebook_size != tokenizer.config.codebook_size:
            raise ValueError(
                f"the policy predicts {base.config.codebook_size} codes but the tokenizer has "
                f"{tokenizer.config.codebook_size}"
            )
        if base.config.text_dim != text_encoder.dim:
            raise ValueError(f"the policy reads {base.config.text_dim}-D text, the encoder gives {text_encoder.dim}-D")
        self.max_codes = args.max_codes or base.config.max_codes
        if not 1 <= args.min_codes < self.max_codes <= base.config.max_codes:
            raise ValueError(
                f"need 1 <= min_codes < max_codes <= {base.config.max_codes}, got min_codes={args.min_codes}, "
                f"max_codes={self.max_codes}"
            )
        disable_dropout(base)
        self.is_peft = _is_peft(model)
        if ref_model is None and not self.is_peft:
            ref_model = copy.deepcopy(base)
        if ref_model is not None:
            ref_model = ref_model.eval().requires_grad_(False)
            disable_dropout(ref_model)
        self.ref_model = ref_model
        self.prompts = train_dataset if isinstance(train_dataset, PromptSet) else PromptSet(train_dataset)
        self.text_encoder, self.vqvae, self.scorer = text_encoder, tokenizer.eval().requires_grad_(False), scorer
        self.reward_columns = [REWARD_NAMES.index(r) for r in args.rewards]
        weights = args.reward_weights or [1.0 / len(args.rewards)] * len(args.rewards)
        self.reward_weights = torch.tensor(weights, dtype=torch.float32)
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._rollout: Rollout | None = None
        self._micro = (-1, 0)  # (global step, minibatch position within it)

        steps = self._rollouts_per_epoch(args) * args.steps_per_rollout
        super().__init__(model=PolicyAndValue(model, args.critic), args=args, train_dataset=_StepIndices(steps),
                         data_collator=_collate_steps, callbacks=callbacks)  # fmt: skip
        self._nonfinite_loss = self._skip_optimizer_step = False
        self.add_callback(_SkipNonFiniteSteps(self))
        if self.ref_model is not None:
            self.ref_model.to(self.accelerator.device)
        self.vqvae.to(self.accelerator.device)

    # ---- the Trainer's data side: one item per minibatch step ----

    def _rollouts_per_epoch(self, args: MotionPPOConfig) -> int:
        per_rollout = args.num_prompts_per_rollout * max(1, args.world_size)
        return max(1, len(self.prompts) // per_rollout)

    def get_train_dataloader(self):
        # every process iterates the same step indices; the rollouts draw each process's prompts
        return torch.utils.data.DataLoader(self.train_dataset, batch_size=1, collate_fn=_collate_steps)

    def _prepare_inputs(self, inputs):
        """Turn a step index into this step's minibatch, sampling a new rollout when one is used up."""
        if self._micro[0] != self.state.global_step:
            self._micro = (self.state.global_step, 0)
        step = self.state.global_step * self.args.gradient_accumulation_steps + self._micro[1]
        self._micro = (self._micro[0], self._micro[1] + 1)
        rollout_index, position = divmod(step, self.args.steps_per_rollout)
        if self._rollout is None or int(self._rollout.index) != rollout_index:
            self._rollout = self.rollout(rollout_index)
        epoch, minibatch = divmod(position, self.args.steps_per_rollout // self.args.num_ppo_epochs)
        order = torch.randperm(self.args.rollout_size, generator=torch.Generator().manual_seed(
            _seed(self.args.seed, rollout_index, epoch, self.args.process_index)))  # fmt: skip
        size = self.args.per_device_train_batch_size
        rows = order[minibatch * size : (minibatch + 1) * size].to(self._rollout.codes.device)
        return self._rollout.rows(rows).trimmed()

    # ---- rollout ----

    def rollout_prompts(self, index: int) -> list[int]:
        """Prompt indices of rollout ``index`` on this process (a seeded permutation per epoch)."""
        args, n = self.args, len(self.prompts)
        epoch, k = divmod(index, self._rollouts_per_epoch(args))
        order = np.random.default_rng([args.seed, epoch]).permutation(n)
        start = (k * max(1, args.world_size) + args.process_index) * args.num_prompts_per_rollout
        return [int(order[(start + j) % n]) for j in range(args.num_prompts_per_rollout)]

    @torch.no_grad()
    def rollout(self, index: int) -> Rollout:
        """Sample, score, select and compute advantages for rollout ``index``."""
        args, device = self.args, self.accelerator.device
        model = self.accelerator.unwrap_model(self.model)
        model.eval()

        prompt_ids = self.rollout_prompts(index)
        K, N = len(args.reward_tokens), args.num_samples_per_token
        rows = [(p, token) for p in prompt_ids for token in args.reward_tokens for _ in range(N)]
        texts = [self.prompts.texts[p] for p, _ in rows]
        tokens = [None if token == NO_TOKEN else token for _, token in rows]
        groups = torch.arange(len(prompt_ids), device=device).repeat_interleave(K * N)
        text_features = self.text_encoder.features(texts, tokens).to(device=device, dtype=torch.float32)

        generator = torch.Generator(device=device).manual_seed(_seed(args.seed, index, args.process_index))
        # In full precision the sampler's log-probabilities and hidden states are those of a teacher-
        # forced forward over the codes (dropout is off, test), so the old log-probabilities and values
        # need no second pass. Under mixed precision the update's forward runs in autocast and the
        # sampler does not: there a forward pass gives old log-probabilities in the update's precision.
        from_sampler = self.accelerator.mixed_precision == "no"
        model.register_fsdp_methods()
        sampled = model.generate(
            text_features, max_codes=self.max_codes, temperature=args.temperature, min_codes=args.min_codes,
            generator=generator, return_logprobs=True, return_hidden_states=from_sampler,
        )  # fmt: skip
        codes, lengths, logprobs = sampled[:3]
        width = int(torch.clamp(lengths + 1, max=self.max_codes).max())
        codes = codes[:, :width]
        steps = torch.arange(width, device=device)
        action_mask = (steps[None] <= lengths[:, None]).float()  # codes, then END unless cut at max_codes
        actions = codes.masked_fill(steps[None] == lengths[:, None], model.config.end_token_id)
        if from_sampler:
            logprobs, values = logprobs[:, :width], model.values(sampled[3][:, :width], text_features, codes[:, :-1])
        else:
            logits, values = model(text_features, codes[:, :-1], _code_mask(action_mask))
            logprobs = token_logprobs(logits, actions, args.temperature, args.min_codes)[0]
        ref_logprobs = self._ref_logprobs(model, text_features, codes, actions, action_mask)

        features, frames = self.vqvae.decode_motion(codes, lengths)
        ground_truth = [self.prompts.motions[p] for p, _ in rows]
        reward_matrix = self.scorer(features, frames, texts, ground_truth).rewards.to(device, torch.float32)  # (R, 3)
        finite = torch.isfinite(reward_matrix).all(-1)
        reward_matrix = torch.where(finite[:, None], reward_matrix, torch.zeros_like(reward_matrix))
        scores = self.scalarize(reward_matrix, tokens)
        # a sample without finite rewards neither enters the update nor competes for a front place
        selected = torch.zeros_like(finite)
        if finite.any():
            selected[finite] = self.select(reward_matrix[finite][:, self.reward_columns], groups[finite])

        kl = kl_penalty(logprobs, ref_logprobs, args.kl_estimator) * action_mask
        token_rewards = -args.kl_coef * kl
        last = lengths.clamp(max=width - 1)  # END's step, or the last code's when cut at max_codes
        variants = torch.arange(len(prompt_ids) * K, device=device).repeat_interleave(N)  # (prompt, token) groups
        terminal = group_standardize(scores, variants, finite) if args.score_normalization == "group" else scores
        token_rewards[torch.arange(len(rows), device=device), last] += terminal
        # Whitening statistics come from every finite sample, not from the selected ones only: the
        # front's advantages stay mostly positive, so the update moves toward the front (Eq. 7).
        valid = action_mask * finite[:, None].float()
        if args.whiten_rewards:
            token_rewards = masked_whiten(token_rewards, valid, shift_mean=False) * action_mask
        advantages, returns = gae(token_rewards, values, action_mask, args.gamma, args.lam)
        if args.whiten_advantages:
            advantages = masked_whiten(advantages, valid) * action_mask

        self._log_rollout(reward_matrix, scores, kl, logprobs, values, returns, action_mask, selected, finite, groups,
                          lengths)  # fmt: skip
        model.train()
        return Rollout(text_features, codes, lengths, actions, action_mask, logprobs, values, advantages, returns,
                       reward_matrix, scores, groups, selected, torch.tensor(index),
                       self._front_weight(selected))  # fmt: skip

    def _front_weight(self, selected: torch.Tensor) -> torch.Tensor:
        """The weight that makes a minibatch's summed token losses, averaged over a PPO epoch's minibatch steps
        and the processes (as DDP averages gradients), Algorithm 1's J: (1/n(P)) Σ_{i∈P} Σ_t, over max_codes."""
        front = self.accelerator.reduce(selected.sum().float().reshape(1), "sum")[0]
        minibatches = self.args.rollout_size // self.args.per_device_train_batch_size
        return self.accelerator.num_processes * minibatches / (front.clamp(min=1) * self.max_codes)

    def _ref_logprobs(self, model, text_features, codes, actions, action_mask) -> torch.Tensor:
        mask = _code_mask(action_mask)
        if self.ref_model is not None:
            # in the policy forward's precision (its autocast, under mixed precision): a KL estimate of
            # two differently rounded log-probabilities would reward rounding, not staying close
            with self.accelerator.autocast():
                logits = self.ref_model(input_ids=codes[:, :-1], text_features=text_features,
                                        attention_mask=mask).logits  # fmt: skip
        else:  # the same network with its LoRA adapters off: no second copy of the weights
            with model.policy.disable_adapter():
                logits, _ = model(text_features, codes[:, :-1], mask)
        return token_logprobs(logits, actions, self.args.temperature, self.args.min_codes)[0]

    def scalarize(self, reward_matrix: torch.Tensor, tokens: Sequence[str | None]) -> torch.Tensor:
        """Each sample's scalar reward (R,) from its (R, 3) reward vector, by `reward_scalarization`."""
        counted = reward_matrix[:, self.reward_columns]
        weighted = counted @ self.reward_weights.to(counted.device)
        if self.args.reward_scalarization == "weighted":
            return weighted
        columns = torch.tensor([TOKEN_COLUMN[t] if t is not None else -1 for t in tokens], device=counted.device)
        own = reward_matrix.gather(1, columns.clamp(min=0)[:, None]).squeeze(1)
        return torch.where(columns >= 0, own, counted.mean(-1))

    def select(self, reward_matrix: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """Which samples enter the update, from their rewards (R, K) and prompt groups (R,): all of them."""
        return torch.ones(len(reward_matrix), dtype=torch.bool, device=reward_matrix.device)

    def _log_rollout(self, reward_matrix, scores, kl, logprobs, values, returns, action_mask, selected, finite,
                     groups, lengths):  # fmt: skip
        gather = self.accelerator.gather_for_metrics
        m = self._metrics
        kl_sum = gather(kl.sum(-1))
        m["objective/kl"].append(kl_sum.mean().item())
        m["objective/entropy"].append(gather((-logprobs * action_mask).sum(-1)).mean().item())
        score = gather(scores)
        m["objective/scores"].append(score.mean().item())
        m["objective/non_score_reward"].append((-self.args.kl_coef * kl_sum).mean().item())
        m["objective/rlhf_reward"].append((score - self.args.kl_coef * kl_sum).mean().item())
        rewards = gather(reward_matrix)
        for k, name in enumerate(REWARD_NAMES):
            m[f"rewards/{name}/mean"].append(rewards[:, k].mean().item())
        front = gather(selected.float())
        m["pareto/front_size"].append(front.sum().item() / max(1, self.accelerator.num_processes))
        m["pareto/front_fraction"].append(front.mean().item())
        m["rollout/nonfinite_rewards"].append(gather((~finite).float()).sum().item())
        m["rollout/codes"].append(gather(lengths.float()).mean().item())
        # 1 − Var[returns − values] / Var[returns] over every process's tokens, from reduced moments
        flat = action_mask.bool()
        residual, target = (returns - values)[flat].float(), returns[flat].float()
        moments = torch.stack(
            [flat.sum().float(), residual.sum(), (residual**2).sum(), target.sum(), (target**2).sum()]
        )
        n, r1, r2, t1, t2 = self.accelerator.reduce(moments, "sum").tolist()
        if n > 1:
            residual_var, target_var = r2 / n - (r1 / n) ** 2, t2 / n - (t1 / n) ** 2
            m["val/explained_variance"].append(1 - residual_var / max(target_var, 1e-8))

    # ---- the update ----

    def compute_loss(self, model, inputs: Rollout, return_outputs=False, num_items_in_batch=None):
        args, batch = self.args, inputs
        logits, values = model(batch.text_features, batch.codes[:, :-1], _code_mask(batch.action_mask))
        logprobs, entropy = token_logprobs(logits, batch.actions, args.temperature, args.min_codes)
        mask = batch.action_mask * batch.selected[:, None].float()

        log_ratio = (logprobs - batch.logprobs) * batch.action_mask
        ratio = torch.exp(log_ratio)
        pg_losses = -batch.advantages * ratio
        pg_losses_clipped = -batch.advantages * ratio.clamp(1 - args.cliprange, 1 + args.cliprange)

        def objective_mean(values: torch.Tensor) -> torch.Tensor:
            if args.loss_normalization == "front":  # Algorithm 1's 1/n(P) over the rollout's front
                return (values * (mask * batch.front_weight)).sum()
            return masked_mean(values, mask)  # TRL's: over this minibatch's selected tokens

        pg_loss = objective_mean(torch.max(pg_losses, pg_losses_clipped))
        values_clipped = batch.values + (values - batch.values).clamp(-args.cliprange_value, args.cliprange_value)
        vf_losses = torch.max((values - batch.returns) ** 2, (values_clipped - batch.returns) ** 2)
        vf_loss = 0.5 * objective_mean(vf_losses)
        loss = pg_loss + args.vf_coef * vf_loss

        with torch.no_grad():
            # Sums and token counts over all processes, divided after the reduction: a minibatch with no
            # selected token leaves these out instead of pulling them toward 0.
            over_selected = {
                "policy/approx_kl": 0.5 * log_ratio**2,
                "policy/clipfrac": (pg_losses_clipped > pg_losses).float(),
                "val/clipfrac": ((values - batch.returns) ** 2 < vf_losses).float(),
                "val/ratio": ratio,
            }
            sums = [(value * mask).sum() for value in over_selected.values()]
            sums += [mask.sum(), (entropy * batch.action_mask).sum(), batch.action_mask.sum(), pg_loss, vf_loss]
            totals = self.accelerator.reduce(torch.stack(sums).detach().float(), "sum").tolist()
            *selected_sums, selected, entropy_sum, tokens, pg_sum, vf_sum = totals
            if selected > 0:
                for key, total in zip(over_selected, selected_sums):
                    self._metrics[key].append(total / selected)
            self._metrics["policy/entropy"].append(entropy_sum / max(tokens, 1.0))
            processes = self.accelerator.num_processes
            self._metrics["loss/policy"].append(pg_sum / processes)
            self._metrics["loss/value"].append(vf_sum / processes)
        if not torch.isfinite(loss):
            # a zero loss that still reaches every parameter, so processes stay in step; the optimizer
            # step this minibatch belongs to is skipped (`_SkipNonFiniteSteps`)
            self._nonfinite_loss = True
            loss = sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
        return loss

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, whose `step` does nothing while a step is to be skipped."""
        optimizer = super().create_optimizer(model)
        step = optimizer.step

        def step_unless_skipped(_optimizer, *args, **kwargs):
            return None if self._skip_optimizer_step else step(*args, **kwargs)

        # a bound method, as the learning-rate scheduler expects to find (it wraps `step` in turn)
        optimizer.step = types.MethodType(functools.wraps(step)(step_unless_skipped), optimizer)
        return optimizer

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        metrics = {key: float(np.mean(values)) for key, values in self._metrics.items() if values}
        for key in ("skipped/nonfinite_loss", "skipped/nonfinite_gradients"):
            if key in metrics:
                metrics[key] = float(np.sum(self._metrics[key]))
        self._metrics.clear()
        super().log({**logs, **metrics}, start_time)

    # ---- saving and resuming ----

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Policy as ``gpt/`` (or peft adapters as ``adapter/``), critic as ``value.safetensors``, config as JSON."""
        output_dir = Path(output_dir or self.args.output_dir)
        if not self.args.should_save:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        if state_dict is None:
            state_dict = model.state_dict()
        # a full state dict of `PolicyAndValue`: gathered by the Trainer (DeepSpeed) or `save_model` (FSDP)
        policy = {k[len("policy.") :]: v for k, v in state_dict.items() if k.startswith("policy.")}
        model.policy.save_pretrained(output_dir / ("adapter" if self.is_peft else "gpt"), state_dict=policy)
        critic = {k: v for k, v in state_dict.items() if k.startswith(("value_head.", "value_model."))}
        save_file({k: v.detach().contiguous().cpu() for k, v in critic.items()}, str(output_dir / VALUE_FILE))
        (output_dir / CONFIG_FILE).write_text(self.args.to_json_string())

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """As the Trainer's, but under FSDP the weights are always gathered into full tensors first (the
        Trainer writes nothing for a sharded state-dict type, yet the model directory needs whole weights)."""
        if self.is_fsdp_enabled:
            state_dict = self.accelerator.get_state_dict(self.model)
            self._save(output_dir, state_dict=state_dict)
            return
        super().save_model(output_dir, _internal_call)

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if self._rollout is not None:  # every process saves the rollout it holds, as the Trainer its RNG state
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            tensors = {k: v.detach().cpu() for k, v in self._rollout.to_dict().items()}
            tensors["selected"] = tensors["selected"].to(torch.uint8)
            save_file(tensors, str(folder / f"rollout_{self.args.process_index}.safetensors"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        folder = Path(resume_from_checkpoint)
        unwrapped = self.accelerator.unwrap_model(model or self.model)
        weights = folder / ("adapter/adapter_model.safetensors" if self.is_peft else "gpt/model.safetensors")
        _require(weights)
        _require(folder / VALUE_FILE)
        critic = load_file(str(folder / VALUE_FILE))
        if self.is_peft:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(unwrapped.policy, load_file(str(weights)))
            unwrapped.value_head.load_state_dict({k[11:]: v for k, v in critic.items() if k.startswith("value_head.")})
            if unwrapped.value_model is not None:
                unwrapped.value_model.load_state_dict(
                    {k[12:]: v for k, v in critic.items() if k.startswith("value_model.")}
                )
        else:
            policy = {f"policy.{k}": v for k, v in load_file(str(weights)).items()}
            load_full_state_dict(unwrapped, policy | critic)
        saved = folder / f"rollout_{self.args.process_index}.safetensors"
        if not saved.is_file():
            warnings.warn(
                f"{folder} has no {saved.name}: the rollout in flight is sampled again from the resumed weights, so "
                "the run does not repeat the uninterrupted one from here (was the checkpoint written by fewer "
                "processes?)",
                stacklevel=2,
            )
            return
        tensors = load_file(str(saved), device=str(self.accelerator.device))
        tensors["selected"] = tensors["selected"].bool()
        if "front_weight" not in tensors:  # written before the weight was kept with the rollout
            tensors["front_weight"] = self._front_weight(tensors["selected"])
        self._rollout = Rollout(**tensors)

    def weights_in_sync(self) -> bool:
        """Whether every process holds the same trainable weights (a checksum gathered from all)."""
        model = self.accelerator.unwrap_model(self.model)
        full = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in model.parameters() if p.requires_grad]
        checksum = torch.stack([p.detach().double().sum() for p in full]).sum()
        sums = self.accelerator.gather(checksum.reshape(1).to(self.accelerator.device))
        return bool((sums == sums[0]).all())


class ParetoPPOTrainer(MotionPPOTrainer):
    """MotionRL: PPO on the batch-wise Pareto front of each prompt's samples (SPEC §6, Algorithm 1).

    Only `select` differs: a sample enters the update iff no sample of its prompt group is at least
    as good on every counted reward and better on one. The mask is a loss mask, so every process
    keeps its batch shape. With ``loss_normalization='front'`` the objective is Algorithm 1's: each
    front sample's token terms summed over its steps and averaged over the rollout's front (the
    1/n(P) factor); with 'tokens' (the default) it averages as TRL averages over a batch, each
    minibatch's losses a mean over its front samples' tokens.
    """

    def select(self, reward_matrix: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        return grouped_non_dominated_mask(reward_matrix, groups)


def load_full_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load whole tensors into ``model`` (strictly); under FSDP2 each process keeps its own shards of them."""
    if is_fsdp_managed(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        # a copy: it replaces the dict's tensors by this process's shards
        set_model_state_dict(model, dict(state_dict), options=StateDictOptions(full_state_dict=True))
    else:
        model.load_state_dict(state_dict)


def _require(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent}: missing {path.name}; not a checkpoint written by MotionPPOTrainer")


def _code_mask(action_mask: torch.Tensor) -> torch.Tensor:
    """Which input codes ``codes[:, :-1]`` a teacher-forced pass needs: code j's state chooses action j + 1."""
    return action_mask[:, 1:].long()


def _collate_steps(items):
    return {"step": torch.tensor([item["step"] for item in items])}


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


__all__ = [
    "MotionPPOConfig",
    "MotionPPOTrainer",
    "ParetoPPOTrainer",
    "base_policy",
    "PolicyAndValue",
    "Rollout",
    "gae",
    "kl_penalty",
]
