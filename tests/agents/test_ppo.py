"""MotionPPOTrainer and ParetoPPOTrainer on a tiny policy with the default bundle's decoder and rewards."""

import copy

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel
from safetensors.torch import load_file
from transformers import TrainerCallback

from agents.motion_gpt import MotionGPTConfig, MotionGPTForCausalLM
from agents.pareto import grouped_non_dominated_mask
from agents.pipeline import default_checkpoint_dir, load_policy
from agents.ppo import (
    MotionPPOConfig,
    MotionPPOTrainer,
    ParetoPPOTrainer,
    PolicyAndValue,
    Rollout,
    gae,
    kl_penalty,
    load_full_state_dict,
    masked_mean,
    token_logprobs,
)
from motion_env.emission import EmissionBatch, PromptSet, default_parts
from reward_models.rewards import RewardOutput

PROMPTS = ["a person walks forward", "a person jumps twice", "a person waves with the left hand",
           "a person squats down", "a person turns around", "a person kicks with the right leg"]  # fmt: skip
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def parts():
    return default_parts()


def tiny_policy(seed: int = 0) -> MotionGPTForCausalLM:
    torch.manual_seed(seed)
    config = MotionGPTConfig(codebook_size=256, text_dim=384, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64, max_codes=16)  # fmt: skip
    return MotionGPTForCausalLM(config)


def make_args(tmp_path, **overrides) -> MotionPPOConfig:
    settings = dict(output_dir=str(tmp_path), num_prompts_per_rollout=2, num_samples_per_token=2,
                    per_device_train_batch_size=6, max_steps=4, logging_steps=1, learning_rate=1e-3, min_codes=2,
                    report_to="none", seed=0, lr_scheduler_type="constant", disable_tqdm=True)  # fmt: skip
    return MotionPPOConfig(**{**settings, **overrides})


def make_trainer(parts, tmp_path, cls=MotionPPOTrainer, scorer=None, policy=None, peft_config=None, **overrides):
    text_encoder, vqvae, default_scorer = parts
    args = make_args(tmp_path, **overrides)
    return cls(policy or tiny_policy(), args, PROMPTS, text_encoder, vqvae, scorer or default_scorer,
               peft_config=peft_config)  # fmt: skip


class LengthReward:
    """Longer motion scores higher, on all three columns: a reward PPO must be able to raise."""

    def __init__(self, nan_rows=()):
        self.nan_rows = list(nan_rows)

    def __call__(self, features, lengths, prompts, ground_truth=None):
        rewards = (lengths.float() / 196.0)[:, None].repeat(1, 3)
        rewards[self.nan_rows] = float("nan")
        return RewardOutput(rewards=rewards, raw=rewards)


def params(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# ---- the pieces ----


def test_gae_with_lambda_and_gamma_one_is_return_to_go_minus_value():
    rewards = torch.tensor([[0.0, -0.1, 0.0, 2.0], [0.5, 1.0, 0.0, 0.0]])
    values = torch.tensor([[0.3, 0.2, 0.1, 0.4], [0.1, 0.2, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    expected_returns = torch.tensor([[1.9, 1.9, 2.0, 2.0], [1.5, 1.0, 0.0, 0.0]])
    torch.testing.assert_close(returns * mask, expected_returns)
    torch.testing.assert_close(advantages, (expected_returns - values) * mask)


def test_gae_discounts_and_bootstraps_with_lambda_below_one():
    rewards, values, mask = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.25]]), torch.ones(1, 2)
    advantages, _ = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    last = 1.0 - 0.25
    first = (0.0 + 0.9 * 0.25 - 0.5) + 0.9 * 0.5 * last
    torch.testing.assert_close(advantages, torch.tensor([[first, last]]))


def test_kl_estimators():
    logp, ref = torch.log(torch.tensor([0.5, 0.2, 0.9])), torch.log(torch.tensor([0.25, 0.4, 0.9]))
    torch.testing.assert_close(kl_penalty(logp, ref, "k1"), logp - ref)
    k3 = kl_penalty(logp, ref, "k3")
    assert (k3 >= 0).all() and k3[2] == 0
    torch.testing.assert_close(k3, (ref - logp).exp() - 1 - (ref - logp))


def test_token_logprobs_ignore_pad_and_match_log_softmax():
    logits = torch.randn(2, 3, 6)
    logits[..., -1] = float("-inf")  # PAD
    actions = torch.tensor([[0, 4, 2], [1, 1, 3]])
    logp, entropy = token_logprobs(logits, actions, temperature=1.5)
    expected = (logits[..., :-1] / 1.5).log_softmax(-1).gather(-1, actions[..., None]).squeeze(-1)
    torch.testing.assert_close(logp, expected)
    assert torch.isfinite(entropy).all() and (entropy > 0).all()


def test_token_logprobs_leave_end_out_before_min_codes_as_the_sampler_does():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, requires_grad=True)  # 4 codes, END (column 4), PAD (column 5)
    actions = torch.tensor([[0, 1, 4, 2], [3, 3, 1, 4]])
    logp, entropy = token_logprobs(logits.detach().clone().index_fill(-1, torch.tensor([5]), float("-inf")),
                                   actions, temperature=1.0, min_codes=2)  # fmt: skip
    early = logits.detach()[:, :2, :4].log_softmax(-1)  # positions 0 and 1: END cannot be drawn
    late = logits.detach()[:, 2:, :5].log_softmax(-1)
    torch.testing.assert_close(logp[:, :2], early.gather(-1, actions[:, :2, None]).squeeze(-1))
    torch.testing.assert_close(logp[:, 2:], late.gather(-1, actions[:, 2:, None]).squeeze(-1))
    torch.testing.assert_close(entropy[:, :2], -(early.exp() * early).sum(-1))
    chosen, entropy = token_logprobs(logits, actions, temperature=1.0, min_codes=2)
    (chosen.sum() + entropy.sum()).backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[:, :2, 4] == 0).all()  # no gradient to a masked END


# ---- config errors ----


def test_incompatible_batch_sizes_name_the_values_and_a_fix(tmp_path):
    with pytest.raises(
        ValueError, match=r"incompatible batch sizes.*12 samples.*per_device_train_batch_size=5.*e\.g\. 6"
    ):
        make_args(tmp_path, per_device_train_batch_size=5)
    with pytest.raises(ValueError, match=r"gradient_accumulation_steps=3.*divisor of 4"):
        make_args(tmp_path, gradient_accumulation_steps=3)
    with pytest.raises(ValueError, match=r"score_normalization='group'.*at least 2, got 1.*'none'"):
        make_args(tmp_path, score_normalization="group", num_samples_per_token=1)


def test_unknown_reward_token_and_reward_are_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"unknown reward token '<speed>'.*'<mt>'"):
        make_args(tmp_path, reward_tokens=["<mt>", "<speed>"])
    with pytest.raises(ValueError, match=r"rewards must be a non-empty subset"):
        make_args(tmp_path, rewards=["style"])
    with pytest.raises(ValueError, match=r"reward tokens \['<perception>'\] ask for rewards outside"):
        make_args(tmp_path, rewards=["text_adherence", "motion_quality"])
    with pytest.raises(ValueError, match=r"loss_normalization must be 'tokens' or 'front', got 'samples'"):
        make_args(tmp_path, loss_normalization="samples")


# ---- the trainer ----


def test_rollout_shapes_rewards_and_scalarization(parts, tmp_path):
    trainer = make_trainer(parts, tmp_path)
    rollout = trainer.rollout(0)
    R = 12
    assert rollout.rewards.shape == (R, 3) and rollout.scores.shape == (R,) and rollout.selected.all()
    assert ((rollout.lengths >= 2) & (rollout.lengths <= 16)).all()
    assert rollout.action_mask.sum(1).long().tolist() == torch.clamp(rollout.lengths + 1, max=16).tolist()
    # rows are prompt-major, then reward token (<mt>, <mm>, <perception>), then sample
    columns = torch.tensor([0, 0, 1, 1, 2, 2] * 2)
    torch.testing.assert_close(rollout.scores, rollout.rewards.gather(1, columns[:, None]).squeeze(1))
    assert rollout.groups.tolist() == [0] * 6 + [1] * 6


def test_trainer_rewards_equal_the_env_rewards_for_the_same_tokens(parts, tmp_path):
    """One reward path: the env's terminal reward for the trainer's own token sequences."""
    text_encoder, vqvae, scorer = parts
    trainer = make_trainer(parts, tmp_path)
    rollout = trainer.rollout(0)
    prompt_ids = trainer.rollout_prompts(0)
    rows = np.arange(len(rollout.codes))
    batch = EmissionBatch(len(rows), text_encoder, vqvae, scorer, max_codes=16)
    tokens = [t for _ in prompt_ids for t in ("<mt>", "<mm>", "<perception>") for _ in range(2)]
    batch.begin(rows, trainer.prompts, [p for p in prompt_ids for _ in range(6)], tokens)
    codes, lengths = rollout.codes.numpy(), rollout.lengths.numpy()
    for step in range(codes.shape[1]):
        live = rows[lengths > step]
        batch.emit(live, codes[live, step])
    scored = batch.score(rows)
    np.testing.assert_allclose(scored.vector, rollout.rewards.double().numpy(), atol=1e-5)
    np.testing.assert_allclose(scored.reward, rollout.scores.double().numpy(), atol=1e-5)


def test_parameters_change_after_a_step(parts, tmp_path):
    trainer = make_trainer(parts, tmp_path, max_steps=1)
    before = params(trainer.model)
    trainer.train()
    after = params(trainer.model)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert any(name.startswith("policy.") for name in changed)
    assert {"value_head.weight", "value_head.bias"} <= changed
    assert all(torch.isfinite(p).all() for p in after.values())


def test_ppo_raises_a_simple_reward(parts, tmp_path):
    """The shipped generator learns within a few rollouts to make longer motion when length is rewarded."""
    trainer = make_trainer(parts, tmp_path, scorer=LengthReward(), policy=load_policy(default_checkpoint_dir()),
                           max_steps=24, learning_rate=1e-4, min_codes=10, num_samples_per_token=4,
                           per_device_train_batch_size=12)  # fmt: skip
    trainer.train()
    codes = [h["rollout/codes"] for h in trainer.state.log_history if "rollout/codes" in h]
    assert np.mean(codes[-2:]) > codes[0] + 1.5, codes


def test_rollout_takes_old_logprobs_and_values_from_the_sampler_as_a_forward_gives_them(parts, tmp_path):
    trainer = make_trainer(parts, tmp_path, policy=load_policy(default_checkpoint_dir()), max_steps=2)  # rows end apart
    model = trainer.accelerator.unwrap_model(trainer.model)
    torch.nn.init.normal_(model.value_head.weight)  # the head starts at zero: make the values say something
    rollout = trainer.rollout(0)
    model.eval()
    with torch.no_grad():
        logits, values = model(rollout.text_features, rollout.codes[:, :-1])  # padded, not packed
    logprobs = token_logprobs(logits, rollout.actions, trainer.args.temperature, trainer.args.min_codes)[0]
    acted = rollout.action_mask.bool()
    assert len(set(rollout.lengths.tolist())) > 1
    torch.testing.assert_close(rollout.logprobs[acted], logprobs[acted], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rollout.values[acted], values[acted], rtol=1e-5, atol=1e-5)


def test_kl_is_zero_while_the_policy_is_the_reference_and_grows_after_updates(parts, tmp_path):
    trainer = make_trainer(parts, tmp_path, max_steps=4)
    rollout = trainer.rollout(0)
    ref = trainer._ref_logprobs(trainer.model, rollout.text_features, rollout.codes, rollout.actions,
                                rollout.action_mask)  # fmt: skip
    # old log-probabilities come from the KV-cached sampler, the reference's from a packed forward:
    # equal up to float rounding
    torch.testing.assert_close(ref * rollout.action_mask, rollout.logprobs * rollout.action_mask, rtol=0, atol=1e-5)
    assert abs(trainer._metrics["objective/kl"][-1]) < 1e-4
    trainer.train()
    trainer.rollout(1)
    assert abs(trainer._metrics["objective/kl"][-1]) > 1e-4


def test_under_mixed_precision_the_reference_runs_in_the_policys_precision(parts, tmp_path):
    # bf16 autocast (CPU here): the old log-probabilities come from an autocast forward, so must the
    # reference's, or the KL term starts at the rounding difference instead of 0
    # (as in training, where the Trainer has wrapped the policy's forward in autocast)
    trainer = make_trainer(parts, tmp_path, bf16=True, use_cpu=not torch.cuda.is_available(), max_steps=1)
    trainer.train()
    assert trainer.accelerator.mixed_precision == "bf16"
    assert abs(trainer.state.log_history[0]["objective/kl"]) < 1e-4


def test_lora_reference_is_the_adapter_free_network_and_adapters_save_and_merge(parts, tmp_path):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, lora_dropout=0.0)
    trainer = make_trainer(parts, tmp_path, peft_config=config, max_steps=2)
    assert trainer.ref_model is None  # no second copy
    rollout = trainer.rollout(0)  # LoRA's B starts at zero: policy == reference
    assert abs(trainer._metrics["objective/kl"][-1]) < 1e-4  # sampler vs forward: float rounding only
    trainer.train()
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert all("lora_" in n or n.startswith("value_head") for n in trainable)
    trainer.save_model(str(tmp_path / "out"))
    adapter = tmp_path / "out" / "adapter" / "adapter_model.safetensors"
    assert adapter.is_file() and any("lora_B" in k for k in load_file(str(adapter)))

    tuned = trainer.model.policy.get_base_model().eval()
    inputs = {"input_ids": rollout.codes[:, :-1], "text_features": rollout.text_features}
    with torch.no_grad():
        expected = tuned(**inputs).logits
        loaded = PeftModel.from_pretrained(tiny_policy(), tmp_path / "out" / "adapter").eval()
        torch.testing.assert_close(loaded.get_base_model()(**inputs).logits, expected, atol=1e-5, rtol=1e-5)
        merged = loaded.merge_and_unload()
        torch.testing.assert_close(merged(**inputs).logits, expected, atol=1e-5, rtol=1e-5)
        with trainer.model.policy.disable_adapter():  # the reference: the base weights, untouched
            torch.testing.assert_close(tuned(**inputs).logits, tiny_policy().eval()(**inputs).logits)


def test_pareto_selects_the_front_of_each_prompt_and_only_it_gets_gradient(parts, tmp_path):
    trainer = make_trainer(parts, tmp_path, cls=ParetoPPOTrainer, num_samples_per_token=4,
                           per_device_train_batch_size=12)  # fmt: skip
    rollout = trainer.rollout(0)
    assert torch.equal(rollout.selected, grouped_non_dominated_mask(rollout.rewards, rollout.groups))
    assert 0 < rollout.selected.sum() < len(rollout.selected)

    def gradient(batch: Rollout) -> torch.Tensor:
        trainer.model.zero_grad()
        trainer.compute_loss(trainer.model, batch).backward()
        return torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])

    reference = gradient(rollout)
    off = ~rollout.selected
    noisy = copy.copy(rollout)  # scramble everything the loss reads for samples off the front
    noisy.advantages = rollout.advantages.masked_fill(off[:, None], 1e3)
    noisy.returns = rollout.returns.masked_fill(off[:, None], -1e3)
    noisy.logprobs = rollout.logprobs.masked_fill(off[:, None], -5.0)
    torch.testing.assert_close(gradient(noisy), reference)
    on = copy.copy(rollout)
    on.advantages = rollout.advantages.masked_fill(rollout.selected[:, None], 1e3)
    assert not torch.allclose(gradient(on), reference)


def test_front_normalization_averages_an_epochs_minibatch_losses_to_algorithm_1s_objective(parts, tmp_path):
    trainer = make_trainer(parts, tmp_path, cls=ParetoPPOTrainer, num_samples_per_token=4,
                           per_device_train_batch_size=6, loss_normalization="front")  # fmt: skip
    rollout = trainer.rollout(0)  # 24 samples: 4 minibatches of 6
    front = rollout.selected
    assert 0 < front.sum() < len(front)
    # Before any update the policy is the sampler's (ratio 1, values as in the rollout), so each token's
    # loss is −A + vf_coef · ½ (V − G)²; J sums them over a sample's steps, averages over the front.
    token_terms = -rollout.advantages + trainer.args.vf_coef * 0.5 * (rollout.values - rollout.returns) ** 2
    sums = (token_terms * rollout.action_mask).sum(-1)
    objective = sums[front].sum() / front.sum() / trainer.max_codes
    with torch.no_grad():
        losses = [trainer.compute_loss(trainer.model, rollout.rows(torch.arange(i, i + 6))) for i in range(0, 24, 6)]
    torch.testing.assert_close(torch.stack(losses).mean(), objective, rtol=1e-4, atol=1e-6)
    # a minibatch weighs its front samples by their number in the rollout, not in the minibatch
    counts = torch.stack([front[i : i + 6].sum() for i in range(0, 24, 6)])
    assert len(set(counts.tolist())) > 1


def test_a_minibatch_cut_to_its_longest_row_gives_the_same_loss_and_gradient(parts, tmp_path):
    from agents.pipeline import default_checkpoint_dir, load_policy

    trainer = make_trainer(parts, tmp_path, policy=load_policy(default_checkpoint_dir()), num_prompts_per_rollout=4)
    rollout = trainer.rollout(0)  # the default policy ends its motions at different lengths
    counts = rollout.action_mask.sum(-1)
    short = torch.nonzero(counts < counts.max()).flatten()  # rows whose longest one still ends early
    assert len(short) >= 2
    batch = rollout.rows(short)
    cut = batch.trimmed()
    assert cut.codes.shape[1] == int(counts[short].max()) < batch.codes.shape[1]
    assert torch.equal(cut.action_mask.sum(-1), batch.action_mask.sum(-1))  # no action is lost

    def loss_and_gradient(minibatch: Rollout):
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, minibatch)
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])

    full_loss, full_gradient = loss_and_gradient(batch)
    cut_loss, cut_gradient = loss_and_gradient(cut)
    torch.testing.assert_close(cut_loss, full_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cut_gradient, full_gradient, rtol=1e-4, atol=1e-6)


def test_resume_from_a_checkpoint_reproduces_the_next_steps(parts, tmp_path):
    # a rollout is 4 steps; the checkpoint at step 3 falls inside one, so its rollout is saved with it
    run = make_trainer(parts, tmp_path / "a", max_steps=6, save_strategy="steps", save_steps=3)
    run.train()
    losses = {h["step"]: h["loss"] for h in run.state.log_history if "loss" in h}
    checkpoint = tmp_path / "a" / "checkpoint-3"
    assert (checkpoint / "gpt" / "model.safetensors").is_file() and (checkpoint / "rollout_0.safetensors").is_file()
    assert not (checkpoint / "training_args.bin").exists()  # nothing pickled

    resumed = make_trainer(parts, tmp_path / "a", max_steps=6, save_strategy="steps", save_steps=3)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    again = {h["step"]: h["loss"] for h in resumed.state.log_history if "loss" in h}
    assert {4, 5, 6} <= set(again)  # the history up to step 3 comes back with the checkpoint
    for step in (4, 5, 6):
        assert again[step] == pytest.approx(losses[step], abs=1e-6)
    for name, value in params(resumed.model).items():
        torch.testing.assert_close(value, params(run.model)[name])

    (checkpoint / "rollout_0.safetensors").unlink()  # e.g. written by fewer processes than resume it
    with pytest.warns(UserWarning, match=r"no rollout_0\.safetensors: the rollout in flight is sampled again"):
        make_trainer(parts, tmp_path / "b")._load_from_checkpoint(str(checkpoint))


def test_save_writes_a_given_full_state_dict(parts, tmp_path):
    # under FSDP/DeepSpeed the weights arrive gathered as a state dict; they, not the module's shards, are saved
    trainer = make_trainer(parts, tmp_path)
    gathered = {k: v + 1 for k, v in trainer.model.state_dict().items()}
    trainer._save(tmp_path / "saved", state_dict=gathered)
    saved = load_policy(tmp_path / "saved")
    for name, tensor in saved.state_dict().items():
        torch.testing.assert_close(tensor, gathered[f"policy.{name}"])
    critic = load_file(str(tmp_path / "saved" / "value.safetensors"))
    torch.testing.assert_close(critic["value_head.weight"], gathered["value_head.weight"])


def test_a_missing_checkpoint_file_is_named(parts, tmp_path):
    trainer = make_trainer(parts, tmp_path)
    (tmp_path / "checkpoint-1").mkdir()
    with pytest.raises(FileNotFoundError, match=r"checkpoint-1/gpt: missing model\.safetensors"):
        trainer._load_from_checkpoint(str(tmp_path / "checkpoint-1"))


def test_nonfinite_rewards_leave_their_samples_out_and_are_counted(parts, tmp_path):
    trainer = make_trainer(parts, tmp_path, scorer=LengthReward(nan_rows=[0, 5]), max_steps=4)
    rollout = trainer.rollout(0)
    assert not rollout.selected[[0, 5]].any() and rollout.selected.sum() == 10
    assert torch.isfinite(rollout.advantages).all() and torch.isfinite(rollout.returns).all()
    assert trainer._metrics["rollout/nonfinite_rewards"][-1] == 2
    trainer.train()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


class NegativeReward(LengthReward):
    """LengthReward below zero on every column: a NaN row replaced by zeros would dominate them all."""

    def __call__(self, features, lengths, prompts, ground_truth=None):
        out = super().__call__(features, lengths, prompts, ground_truth)
        return RewardOutput(rewards=out.rewards - 1.0, raw=out.raw - 1.0)


def test_samples_without_finite_rewards_take_no_front_place_from_the_others(parts, tmp_path):
    trainer = make_trainer(parts, tmp_path, cls=ParetoPPOTrainer, scorer=NegativeReward(nan_rows=[0, 4]),
                           num_samples_per_token=4, per_device_train_batch_size=12)  # fmt: skip
    rollout = trainer.rollout(0)
    assert trainer._metrics["rollout/nonfinite_rewards"][-1] == 2
    finite = torch.ones(24, dtype=torch.bool)
    finite[[0, 4]] = False
    expected = torch.zeros_like(finite)
    expected[finite] = grouped_non_dominated_mask(rollout.rewards[finite], rollout.groups[finite])
    assert torch.equal(rollout.selected, expected)
    assert rollout.selected[1:4].any()  # the NaN row's group keeps a front of its own


def test_a_nonfinite_loss_skips_the_update_and_is_logged(parts, tmp_path):
    trainer = make_trainer(parts, tmp_path, max_steps=1)
    rollout = trainer.rollout(0)
    rollout.advantages = torch.full_like(rollout.advantages, float("nan"))
    trainer._rollout = rollout
    before = params(trainer.model)
    trainer.train()
    for name, value in params(trainer.model).items():
        assert torch.equal(value, before[name]), name
    assert trainer.state.log_history[0]["skipped/nonfinite_loss"] == 1


def test_weighted_scalarization_and_reward_subsets(parts, tmp_path):
    trainer = make_trainer(parts, tmp_path, reward_tokens=["none"], num_samples_per_token=6,
                           rewards=["text_adherence", "motion_quality"], reward_scalarization="weighted",
                           reward_weights=[1.0, 1.0])  # fmt: skip
    rollout = trainer.rollout(0)
    torch.testing.assert_close(rollout.scores, rollout.rewards[:, 0] + rollout.rewards[:, 1])
    pareto = make_trainer(parts, tmp_path, cls=ParetoPPOTrainer, rewards=["text_adherence", "perception"],
                          reward_tokens=["<mt>", "<perception>"], num_samples_per_token=3)  # fmt: skip
    rollout = pareto.rollout(0)
    assert torch.equal(rollout.selected, grouped_non_dominated_mask(rollout.rewards[:, [0, 2]], rollout.groups))


def test_separate_critic_trains_its_own_transformer(parts, tmp_path):
    trainer = make_trainer(parts, tmp_path, critic="separate", max_steps=2)  # its head starts at 0: step 2 reaches it
    before = params(trainer.model)
    trainer.train()
    after = params(trainer.model)
    assert any(n.startswith("value_model.") and not torch.equal(before[n], after[n]) for n in before)
    trainer.save_model(str(tmp_path / "out"))
    assert any(k.startswith("value_model.") for k in load_file(str(tmp_path / "out" / "value.safetensors")))


def test_separate_critic_with_lora_starts_from_the_policys_weights(parts, tmp_path):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, lora_dropout=0.0)
    policy = tiny_policy()
    expected = copy.deepcopy(policy.transformer.state_dict())
    trainer = make_trainer(parts, tmp_path, policy=policy, peft_config=config, critic="separate", max_steps=2)
    for name, tensor in trainer.model.value_model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    trainer.train()
    trainer.save_model(str(tmp_path / "out"))
    assert any(k.startswith("value_model.") for k in load_file(str(tmp_path / "out" / "value.safetensors")))


def test_update_metrics_leave_out_a_minibatch_without_selected_samples(parts, tmp_path):
    trainer = make_trainer(parts, tmp_path)
    rollout = trainer.rollout(0)
    flat = rollout.action_mask.bool()
    residual, returns = (rollout.returns - rollout.values)[flat], rollout.returns[flat]
    expected = 1 - residual.var(unbiased=False) / returns.var(unbiased=False)
    assert trainer._metrics["val/explained_variance"][-1] == pytest.approx(expected.item(), abs=1e-4)
    trainer._metrics.clear()
    rollout.selected = torch.zeros_like(rollout.selected)  # e.g. every sample's rewards were NaN
    loss = trainer.compute_loss(trainer.model, rollout)
    assert loss.item() == 0.0
    assert set(trainer._metrics) == {"policy/entropy", "loss/policy", "loss/value"}  # no ratio, clip or KL of nothing


def test_masked_mean_of_an_empty_mask_is_zero_and_keeps_the_graph():
    values = torch.randn(3, 4, requires_grad=True)
    out = masked_mean(values, torch.zeros(3, 4))
    out.backward()
    assert out.item() == 0.0 and torch.equal(values.grad, torch.zeros(3, 4))


def test_prompt_set_sources(parts, tmp_path):
    trainer = make_trainer(parts, tmp_path)
    assert isinstance(trainer.prompts, PromptSet) and trainer.prompts.texts == PROMPTS
    first, second = trainer.rollout_prompts(0), trainer.rollout_prompts(1)
    assert len(set(first) | set(second)) == 4  # one epoch: a permutation without repeats


def test_group_standardize_takes_each_prompts_mean_and_scale_out():
    from agents.ppo import group_standardize

    scores = torch.tensor([1.0, 2.0, 3.0, 10.0, 30.0, float("nan")])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    valid = torch.tensor([True, True, True, True, True, False])
    out = group_standardize(torch.nan_to_num(scores), groups, valid)
    torch.testing.assert_close(out, torch.tensor([-1.0, 0.0, 1.0, -(2**-0.5), 2**-0.5, 0.0]), atol=1e-4, rtol=0)


def test_a_nonfinite_gradient_skips_the_update_and_is_logged(parts, tmp_path):
    trainer = make_trainer(parts, tmp_path, max_steps=1)
    trainer.model.value_head.weight.register_hook(lambda grad: grad * float("inf"))  # finite loss, Inf gradient
    before = params(trainer.model)
    trainer.train()
    for name, value in params(trainer.model).items():
        assert torch.equal(value, before[name]), name
    assert trainer.state.log_history[0]["skipped/nonfinite_gradients"] == 1
    assert "skipped/nonfinite_loss" not in trainer.state.log_history[0]


def test_a_skipped_step_after_updates_leaves_weights_and_optimizer_state_as_they_were(parts, tmp_path):
    # After real steps AdamW's moments are non-zero: a zeroed gradient still fed to it would move the weights.
    trainer = make_trainer(parts, tmp_path, max_steps=3)
    calls = {"backward": 0}

    def inf_on_the_third_step(grad):
        calls["backward"] += 1
        return grad * float("inf") if calls["backward"] == 3 else grad

    trainer.model.value_head.weight.register_hook(inf_on_the_third_step)
    snapshots = {}

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            snapshots[state.global_step] = (params(trainer.model), copy.deepcopy(trainer.optimizer.state_dict()))

    trainer.add_callback(Snapshot())
    trainer.train()
    (after_two, optimizer_two), (after_three, optimizer_three) = snapshots[2], snapshots[3]
    assert any(not torch.equal(snapshots[1][0][n], after_two[n]) for n in after_two)  # real steps move them
    for name, value in after_three.items():
        assert torch.equal(value, after_two[name]), name
    for key, state in optimizer_three["state"].items():
        for field, value in state.items():
            assert torch.equal(value, optimizer_two["state"][key][field]), (key, field)
    assert [log.get("skipped/nonfinite_gradients") for log in trainer.state.log_history[:3]] == [None, None, 1]


# ---- FSDP2 (sharded over 2 CPU processes with gloo; accelerate runs FSDP on GPUs only) ----


def _fsdp_worker(rank: int, store: str, results: dict) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from agents.motion_gpt import MotionGPTBlock

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        reference = PolicyAndValue(tiny_policy()).eval()
        torch.nn.init.normal_(reference.value_head.weight)
        sharded = copy.deepcopy(reference)
        for block in sharded.modules():
            if isinstance(block, MotionGPTBlock):
                fully_shard(block)
        fully_shard(sharded)
        sharded.register_fsdp_methods()
        sharded.register_fsdp_methods()  # a second call must not wrap the methods twice
        text = torch.randn(4, 384, generator=torch.Generator().manual_seed(1))

        def sample(model):
            return model.generate(text, max_codes=8, min_codes=2, generator=torch.Generator().manual_seed(0),
                                  return_logprobs=True, return_hidden_states=True)  # fmt: skip

        mine, theirs = sample(sharded), sample(reference)
        same = all(torch.allclose(a.float(), b.float(), atol=1e-5) for a, b in zip(mine, theirs))
        values = sharded.values(mine[3], text, mine[0])
        same_values = torch.allclose(values, reference.values(theirs[3], text, theirs[0]), atol=1e-5)
        sharded.train()
        logits, values = sharded(text, mine[0])
        (logits.logsumexp(-1).mean() + values.mean()).backward()
        grads = [p.grad for p in sharded.parameters() if p.grad is not None]
        # resuming: whole tensors from a checkpoint go into each process's shards
        noise = torch.Generator().manual_seed(2)  # the same file on every process
        state = {k: v + 0.01 * torch.randn(v.shape, generator=noise) for k, v in reference.state_dict().items()}
        load_full_state_dict(sharded.eval(), state)
        load_full_state_dict(reference, state)
        loaded = all(
            torch.allclose(a.float(), b.float(), atol=1e-5) for a, b in zip(sample(sharded), sample(reference))
        )
        results[rank] = (same, same_values, len(grads) == len(list(sharded.parameters())), loaded)
    finally:
        dist.destroy_process_group()


def test_fsdp2_sampling_values_and_loading_work_on_the_sharded_weights(tmp_path):
    # generate and values run outside forward; registered as FSDP forward methods they see whole weights
    ctx = torch.multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        results = manager.dict()
        torch.multiprocessing.start_processes(_fsdp_worker, args=(str(tmp_path / "store"), results), nprocs=2,
                                              start_method="spawn")  # fmt: skip
        results = dict(results)
    assert results == {0: (True, True, True, True), 1: (True, True, True, True)}
