#!/usr/bin/env bash
# Accelerator check: the KD-step benchmarks on one GPU, in under 5 minutes.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, on a GPU host
#
# Needs jax with CUDA (pip install -U "jax[cuda13]" or the host's jax) and this
# package installed (pip install -e .[bench]). PyTorch columns run on the GPU
# only when torch has CUDA; with a CPU-only torch they are reported as skipped.
#
# Steps (each bounded by `timeout`):
#   1. the CPU benchmark's shapes (vision resnet32x4 -> resnet8x4 batch 64,
#      LM 8x512 -> 4x256, seq 256, vocab 32k, batch 8) on the GPU, float32,
#      distill_jax vs PyTorch eager;
#   2. the LLM distillation MFU check: SmolLM2-135M-architecture teacher
#      (30 x 576, vocab 49,152) -> 4 x 256 student, 16 x 2048 tokens, bfloat16
#      compute, token-level forward KL, AdamW. MFU = analytic matmul FLOPs
#      (teacher forward + 3x student forward, causal attention counted in full)
#      / step time / the GPU's bf16 peak (data sheet: 989 TFLOP/s for H100/H200
#      SXM; the measured 8192^3 bf16 matmul is reported next to it).
#      Target: >= 40% on an H100/H200.
#   3. the Pallas large-vocabulary kernels compiled for the GPU (not interpret
#      mode): tests/losses/test_large_vocab_pallas.py against the XLA path.
# Results: benchmarks/results/gpu_kd_step.{json,md}, gpu_lm_135m.{json,md}.
# This script has not been run yet: the machine it was written on has no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
OUT="${OUT:-benchmarks/results}"
TORCH_DEVICE="${TORCH_DEVICE:-cuda}"
mkdir -p "$OUT"
start=$(date +%s)

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
"$PYTHON" - <<'EOF'
import jax
print('jax', jax.__version__, jax.devices())
assert jax.default_backend() == 'gpu', (
    f'jax backend is {jax.default_backend()!r}, not gpu: install jax with CUDA support '
    '(pip install -U "jax[cuda13]") on this host.')
EOF

# Keep XLA from grabbing 75% of the GPU up front (PyTorch shares the device),
# and let it use the latency-hiding scheduler / autotuning defaults otherwise.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

echo "== 1/3 CPU-benchmark shapes on the GPU (float32) =="
timeout 130 "$PYTHON" -m benchmarks.run --suites=vision,lm --steps=20 --warmup=3 \
  --vision_columns=distill_jax,torch_eager --torch_device="$TORCH_DEVICE" \
  --out="$OUT/gpu_kd_step" || echo "step 1 failed or timed out (exit $?)"

echo "== 2/3 LLM KD step MFU: SmolLM2-135M-architecture teacher, bf16, 16 x 2048 =="
timeout 130 "$PYTHON" -m benchmarks.run --suites=lm --lm_preset=smollm2_135m --dtype=bfloat16 \
  --steps=20 --warmup=3 --torch_device="$TORCH_DEVICE" --out="$OUT/gpu_lm_135m" \
  || echo "step 2 failed or timed out (exit $?)"

"$PYTHON" - "$OUT/gpu_lm_135m.json" <<'EOF'
import json, sys
try:
  r = json.load(open(sys.argv[1]))
except FileNotFoundError:
  sys.exit('no LM result: see the log above')
ours = r['lm']['columns']['distill_jax']
peak = r['peak']
nominal = peak.get('nominal_peak_flops_per_s')
flops = r['lm']['analytic_flops_per_step']
print(f"LLM KD step: {ours['median_s'] * 1e3:.1f} ms, {ours['items_per_s']:.0f} tokens/s, "
      f"{ours['flops_per_s'] / 1e12:.0f} TFLOP/s (analytic matmul count)")
print(f"measured bf16 matmul peak {peak['peak_flops_per_s'] / 1e12:.0f} TFLOP/s "
      f"on {peak['device_kind']}; MFU vs measured {100 * ours['mfu']:.1f}%")
if nominal:
  mfu = flops / ours['median_s'] / nominal
  print(f"MFU vs data-sheet peak {nominal / 1e12:.0f} TFLOP/s: {100 * mfu:.1f}% "
        f"(target >= 40%: {'met' if mfu >= 0.4 else 'NOT met'})")
EOF
echo "== 3/3 Pallas large-vocabulary kernels on the GPU =="
timeout 120 "$PYTHON" -m pytest -q -p no:cacheprovider tests/losses/test_large_vocab_pallas.py \
  || echo "step 3 failed or timed out (exit $?)"

echo "gpu_check.sh done in $(( $(date +%s) - start )) s"
