"""A short CUDA check of the generator stack: training steps, sampling, CPU/GPU agreement, speed.

``python benchmarks/cuda_check.py [--model checkpoints/default]``

Uses the default bundle's tokenizer and MotionGPT with random text features (no text encoder),
so it needs only torch and transformers. Prints one table.
"""

from __future__ import annotations

import argparse
import time

import torch


def _timed(fn, repeats: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="checkpoints/default")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    from agents.motion_gpt import MotionGPTForCausalLM
    from motion_env.tokenizer import MotionVQVAE

    rows = [("device", torch.cuda.get_device_name(), "")]
    cuda = torch.device("cuda")
    torch.manual_seed(0)

    vqvae_cpu = MotionVQVAE.from_pretrained(f"{args.model}/vqvae", dtype=torch.float32).eval()
    vqvae = MotionVQVAE.from_pretrained(f"{args.model}/vqvae", dtype=torch.float32).to(cuda).eval()
    features = torch.randn(16, 96, 263) * 0.5
    lengths = torch.randint(40, 97, (16,))
    codes_cpu, lengths_cpu = vqvae_cpu.encode(features, lengths)
    codes_gpu, lengths_gpu = vqvae.encode(features.to(cuda), lengths.to(cuda))
    agree = (codes_cpu == codes_gpu.cpu()).float().mean().item()
    recon_gap = (vqvae_cpu.decode(codes_cpu, lengths_cpu) - vqvae.decode(codes_cpu.to(cuda), lengths_cpu.to(cuda)).cpu())
    rows += [("tokenizer codes, CPU vs CUDA agreement", f"{agree:.4f}", "fraction of codes"),
             ("tokenizer decode, CPU vs CUDA max diff", f"{recon_gap.abs().max().item():.2e}", "same codes")]  # fmt: skip

    vqvae.train()
    opt = torch.optim.AdamW(vqvae.parameters(), 2e-4)
    losses = []
    for _ in range(30):
        out = vqvae(features.to(cuda), lengths.to(cuda))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    rows.append(("tokenizer 30 CUDA training steps, loss first -> last", f"{losses[0]:.4f} -> {losses[-1]:.4f}", ""))

    policy_cpu = MotionGPTForCausalLM.from_pretrained(f"{args.model}/gpt", dtype=torch.float32).eval()
    policy = MotionGPTForCausalLM.from_pretrained(f"{args.model}/gpt", dtype=torch.float32).to(cuda).eval()
    text = torch.randn(64, policy.config.text_dim)
    text = text / text.norm(dim=-1, keepdim=True)
    greedy_cpu, len_cpu = policy_cpu.generate(text, do_sample=False)
    greedy_gpu, len_gpu = policy.generate(text.to(cuda), do_sample=False)
    rows.append(("greedy codes, CPU vs CUDA agreement", f"{(greedy_cpu == greedy_gpu.cpu()).float().mean().item():.4f}",
                 f"lengths equal in {(len_cpu == len_gpu.cpu()).float().mean().item():.2f} of rows"))  # fmt: skip

    codes, code_lengths, logprobs = policy.generate(text.to(cuda), temperature=1.5, return_logprobs=True,
                                                    generator=torch.Generator(cuda).manual_seed(0))  # fmt: skip
    rows.append(("sampled rows (T=1.5), mean codes", f"{code_lengths.float().mean().item():.1f}", "of 49 at most"))

    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), 1e-4)
    labels = torch.full((64, codes.shape[1] + 1), -100, device=cuda)
    for i, n in enumerate(code_lengths.tolist()):
        labels[i, :n] = codes[i, :n]
        labels[i, n] = policy.config.end_token_id
    mask = (torch.arange(codes.shape[1], device=cuda)[None] < code_lengths[:, None]).long()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = policy(input_ids=codes, text_features=text.to(cuda), attention_mask=mask, labels=labels)
    out.loss.backward()
    grads = sum(p.grad.abs().sum().item() for p in policy.parameters() if p.grad is not None)
    opt.step()
    rows.append(("MotionGPT bf16-autocast training step", f"loss {out.loss.item():.3f}", f"grad L1 {grads:.1f}"))

    policy.eval()
    full = torch.randint(0, policy.config.codebook_size, (64, 49), device=cuda)
    with torch.inference_mode():
        forward_s = _timed(lambda: policy(input_ids=full, text_features=text.to(cuda)))
        generate_s = _timed(lambda: policy.generate(text.to(cuda), min_codes=49))
    tokens = 64 * 49
    rows += [("teacher-forced forward, batch 64 x 49", f"{tokens / forward_s:,.0f}", "tokens/s"),
             ("cached generate, batch 64 x 49", f"{tokens / generate_s:,.0f}", f"{forward_s / generate_s:.3f} of the forward")]  # fmt: skip
    rows.append(("peak CUDA memory", f"{torch.cuda.max_memory_allocated() / 2**20:.0f}", "MiB"))

    print("| check | value | notes |\n|---|---|---|")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} |")


if __name__ == "__main__":
    main()
