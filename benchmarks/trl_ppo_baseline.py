"""TRL's own PPOTrainer at the sizes of `ppo_throughput.py`: the baseline measured, not quoted.

``PYTHONPATH=.cache/trl-1.12.0 python benchmarks/trl_ppo_baseline.py --iterations 5``

TRL shipped its PPOTrainer last in 1.12 (``trl.experimental.ppo``); the installed TRL (1.13 or
later) has none, so this script runs against a TRL 1.12 put on ``PYTHONPATH`` (``python
benchmarks/ppo_throughput.py`` installs one into ``.cache/`` and runs this script itself).

What TRL does per iteration, unchanged: HF ``generate`` (KV cache) of 64 episodes × 50 tokens,
then forward passes of the frozen reference, the value model and the reward model, GAE, then 2 PPO
epochs × 2 minibatches of 32 (policy and value model forward and backward, AdamW). All four models
are 4 × 256 Llamas over the motion vocabulary (codes + END + PAD, 258 tokens). ``--intermediate_size``
683 gives the gated Llama MLP (3 matrices) the FLOPs of our policy's 1024-wide 2-matrix MLP, so
both run the same arithmetic per token; 1024 gives the Llama a third more. The prompt is one token
(ours is one text state), no stop token, so every episode is 50 tokens. fp32, no gradient
checkpointing (TRL's config defaults bf16 on, which a CPU refuses). One warm-up iteration, then
``--iterations`` timed from step end to step end. The last line printed is JSON for the caller.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict

VOCAB = 258  # 256 codes, END, PAD: the vocabulary of ppo_throughput.py's policy
EPISODES, TOKENS = 64, 50


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=5, help="timed PPO iterations, after one warm-up")
    parser.add_argument("--intermediate_size", type=int, default=683, help="Llama MLP width (683: our FLOPs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error(f"--iterations must be >= 1, got {args.iterations}")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

    import torch
    import trl
    from datasets import Dataset
    from tokenizers import Tokenizer, models
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        LlamaForSequenceClassification,
        PreTrainedTokenizerFast,
        TrainerCallback,
    )

    try:
        import trl.experimental.ppo.ppo_trainer as trl_ppo
    except ImportError as error:
        raise SystemExit(
            f"TRL {trl.__version__} at {os.path.dirname(trl.__file__)} has no PPOTrainer ({error}); put TRL 1.12 "
            "first on the path: pip install --no-deps --target .cache/trl-1.12.0 trl==1.12.0 and "
            "PYTHONPATH=.cache/trl-1.12.0"
        ) from error

    vocab = {f"c{i}": i for i in range(VOCAB - 2)} | {"<eos>": VOCAB - 2, "<pad>": VOCAB - 1}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<pad>")), eos_token="<eos>", pad_token="<pad>"
    )
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=4, intermediate_size=args.intermediate_size,
                         max_position_embeddings=2 * TOKENS, bos_token_id=0, eos_token_id=VOCAB - 2,
                         pad_token_id=VOCAB - 1)  # fmt: skip
    torch.manual_seed(args.seed)
    policy, ref_policy = LlamaForCausalLM(config), LlamaForCausalLM(config)
    ref_policy.load_state_dict(policy.state_dict())
    scalar = LlamaConfig(**config.to_dict() | {"num_labels": 1, "id2label": {0: "score"}, "label2id": {"score": 0}})
    reward_model, value_model = LlamaForSequenceClassification(scalar), LlamaForSequenceClassification(scalar)
    prompts = Dataset.from_dict({"input_ids": [[i % (VOCAB - 2)] for i in range(EPISODES * (args.iterations + 1))]})

    # Phase timers around TRL's own module-level functions; get_reward serves the value and reward models.
    seconds: dict[str, float] = defaultdict(float)

    def timed(fn, name_of):
        def wrapper(*a, **kw):
            start = time.perf_counter()
            out = fn(*a, **kw)
            seconds[name_of(*a)] += time.perf_counter() - start
            return out

        return wrapper

    trl_ppo.batch_generation = timed(trl_ppo.batch_generation, lambda *a: "generation")
    trl_ppo.get_reward = timed(trl_ppo.get_reward, lambda m, *a: "reward model" if m is reward_model else "value")
    trl_ppo.forward = timed(trl_ppo.forward, lambda m, *a: "reference" if m is ref_policy else "update forward")

    step_ends: list[float] = []

    class StepEnds(TrainerCallback):
        def on_step_end(self, _args, state, control, **kwargs):
            step_ends.append(time.perf_counter())
            if len(step_ends) == 1:
                seconds.clear()  # the warm-up iteration is not timed

    with tempfile.TemporaryDirectory() as workdir:
        ppo_args = trl_ppo.PPOConfig(
            output_dir=workdir, per_device_train_batch_size=32, gradient_accumulation_steps=2, num_mini_batches=2,
            num_ppo_epochs=2, response_length=TOKENS, total_episodes=EPISODES * (args.iterations + 1),
            local_rollout_forward_batch_size=EPISODES, stop_token_id=None, num_sample_generations=0,
            temperature=1.0, bf16=False, gradient_checkpointing=False, report_to="none", save_strategy="no",
            logging_steps=1, disable_tqdm=True, seed=args.seed,
        )  # fmt: skip
        trainer = trl_ppo.PPOTrainer(args=ppo_args, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                                     reward_model=reward_model, value_model=value_model, train_dataset=prompts,
                                     eval_dataset=prompts.select(range(EPISODES)), callbacks=[StepEnds()])  # fmt: skip
        trainer.train()

    n = args.iterations
    total = (step_ends[-1] - step_ends[0]) / n
    phase = {name: value / n for name, value in seconds.items()}
    result = {
        "trl_version": trl.__version__,
        "intermediate_size": args.intermediate_size,
        "threads": torch.get_num_threads(),
        "iterations": n,
        "seconds_per_iteration": total,
        "phases": phase,
        "episodes_per_second": EPISODES / total,
        "episodes_per_second_without_reward_model": EPISODES / (total - phase.get("reward model", 0.0)),
    }
    print(f"TRL {trl.__version__} PPOTrainer, 4 × 256 Llamas (MLP {args.intermediate_size}), {EPISODES} × {TOKENS} "
          f"tokens: {total:.3f} s per iteration, {result['episodes_per_second']:.2f} episodes/s "
          f"({result['episodes_per_second_without_reward_model']:.2f} without its reward model)")  # fmt: skip
    for name, value in phase.items():
        print(f"  {name}: {value:.3f} s")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
