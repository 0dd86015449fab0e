#!/usr/bin/env bash
# Reproduce the models shipped in models/ (the main job's encoder and policy) from scratch on a
# CPU machine: record expert demos in sim -> DynaFLIP encoder pre-training -> ONNX export with
# parity gate -> diffusion policy on frozen embeddings -> offline closed-loop check.
# Times on the 2-core development machine are in the README. Outputs go to outputs/ (ignored);
# the final artifacts are copied into models/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup_env.sh"
cd "$root"
export PATH="$root/.venv/bin:$PATH"
EPISODES="${EPISODES:-200}"
ENCODER_STEPS="${ENCODER_STEPS:-700}"
POLICY_STEPS="${POLICY_STEPS:-4000}"

dynaflip record --sim --episodes "$EPISODES" --seed 0 --out outputs/demos --resume
dynaflip train-encoder --dataset outputs/demos --out outputs/encoder --steps "$ENCODER_STEPS" --threads 1
dynaflip export --encoder outputs/encoder --out models/encoder --tensorrt auto --precision fp32
dynaflip train-policy --dataset outputs/demos --encoder models/encoder --out models/policy --steps "$POLICY_STEPS"
dynaflip eval --sim --encoder models/encoder --policy models/policy --episodes 20
