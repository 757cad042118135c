#!/usr/bin/env bash
# A short CUDA check of the PPO training loop through `accelerate launch`, one GPU:
#   1. FSDP2 (accelerate_configs/fsdp.yaml, 1 process, bf16): sharded sampling, update, full-weight save;
#   2. LoRA on accelerate_configs/single_gpu.yaml (bf16): adapters saved;
#   3. benchmarks/ppo_throughput.py on the GPU (against TRL's PPOTrainer when .cache/trl-1.12.0 is there);
#   4. the main job on accelerate_configs/single_gpu.yaml with its default config (fewer evaluation
#      repetitions), report included.
# Each stage has its own time limit and log; a summary table is printed at the end.
#
#   bash benchmarks/cuda_ppo_check.sh [OUT_DIR]     (default outputs/cuda_ppo_check)
#   STAGES="fsdp main_job" bash benchmarks/cuda_ppo_check.sh   (a subset)
set -u
out=${1:-outputs/cuda_ppo_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" || exit 1
python3 -c "from motion_env.procedural import ensure_dataset; ensure_dataset('data/procedural')" >"$out/data.log" 2>&1

stages=${STAGES:-fsdp lora throughput main_job}
stage() {  # name, seconds, command...
    local name=$1 limit=$2
    shift 2
    [[ " $stages " == *" $name "* ]] || return 0
    local start=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "| $name | rc $rc | $((SECONDS - start)) s |" >>"$out/stages.md"
}

echo "| stage | exit | wall |" >"$out/stages.md"
echo "|---|---|---|" >>"$out/stages.md"
tiny=(--config recipes/configs/tiny.yaml --eval_max_clips 64)
stage fsdp 150 accelerate launch --config_file accelerate_configs/fsdp.yaml --num_processes 1 \
    recipes/ppo_pareto.py "${tiny[@]}" --output_dir "$out/fsdp" --report false
stage lora 120 accelerate launch --config_file accelerate_configs/single_gpu.yaml \
    recipes/ppo_pareto.py "${tiny[@]}" --output_dir "$out/lora" --use_peft --lora_r 16 --report false
# TRL 1.12's PPOTrainer as the baseline when it is in .cache/ (no package index needed), else the quoted figure
trl=quoted
[[ -d .cache/trl-1.12.0/trl/experimental/ppo ]] && trl=measure
stage throughput 180 python3 benchmarks/ppo_throughput.py --iterations 5 --trl "$trl"
stage main_job 300 accelerate launch --config_file accelerate_configs/single_gpu.yaml recipes/ppo_pareto.py \
    --output_dir "$out/main_job" --eval_repetitions 5 --eval_per_motion_repetitions 2

cat "$out/stages.md"
for run in fsdp lora main_job; do
    python3 - "$out/$run" <<'EOF'
import json, sys
from pathlib import Path

run = Path(sys.argv[1])
training = run / "training.json"
if not training.is_file():
    print(f"{run.name}: no training.json")
    raise SystemExit
t = json.loads(training.read_text())
saved = sorted(str(p.relative_to(run)) for p in run.rglob("*.safetensors"))
print(f"{run.name}: {t['trainer']}, {t['steps']} steps, {t.get('distributed_type')}, {t.get('mixed_precision')}, "
      f"{t.get('device')}, {t['train_runtime_s']:.1f} s, weights in sync {t['weights_identical_across_processes']}, "
      f"saved {saved}")
EOF
done
test -f "$out/throughput.log" && grep -E "^\|" "$out/throughput.log" | tail -12
test -f "$out/main_job/report.md" && sed -n 1,40p "$out/main_job/report.md"
exit 0
