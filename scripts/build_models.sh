#!/usr/bin/env bash
# Rebuild the models shipped in models/ (the main job's encoder and policy) from nothing, on a
# CPU machine (a GPU, when torch sees one, speeds up the encoder; nothing needs it):
#
#   1. policy demos: scripted expert, nominal multi-object scenes   -> outputs/demos
#   2. pre-training episodes: scripted expert, randomised lights,
#      table / floor colours and camera pose (train-split objects)   -> outputs/pretrain
#   3. DynaFLIP encoder pre-training on (2)                          -> outputs/encoder
#   4. ONNX export with the parity gate at a 192 x 192 input with
#      24 x 24 patch tokens of the stride-8 stage (docs/method.md §1),
#      and a linear probe of its embeddings on (1)                   -> models/encoder, outputs/eval/probe.json
#   5. language-conditioned diffusion policy on the frozen embeddings
#      and patch tokens of (1): token readout whose head estimates the
#      fingers-to-named-object offset, an input of the policy
#      (config/policy_token_readout.yaml)                            -> outputs/policy -> models/policy
#   6. lock-step evaluation on held-out seeds + the instruction-swap check -> outputs/eval/
#
# Every stage resumes: recordings skip the seeds they hold, training continues from its last
# checkpoint (--resume), so re-running the script after an interruption loses at most one
# checkpoint interval. Sizes come from the environment (defaults below are the shipped recipe);
# the manifests record the data, recipe and step counts. Progress goes to stdout.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup_env.sh"
cd "$root"
export PATH="$root/.venv/bin:$PATH"
DEMO_EPISODES="${DEMO_EPISODES:-1200}"          # policy demos (nominal scenes), seeds 0..
PRETRAIN_EPISODES="${PRETRAIN_EPISODES:-600}"   # encoder pre-training episodes (randomised), seeds 200000..
ENCODER_STEPS="${ENCODER_STEPS:-1500}"
POLICY_STEPS="${POLICY_STEPS:-10000}"
EVAL_EPISODES="${EVAL_EPISODES:-50}"
SWAP_PAIRS="${SWAP_PAIRS:-25}"
THREADS="${THREADS:-2}"

stage() { printf '\n[build %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
t0=$(date +%s)

stage "1/6 policy demos: $DEMO_EPISODES nominal episodes, DART-perturbed expert (docs/method.md §3)"
dynaflip record --sim --episodes "$DEMO_EPISODES" --seed 0 --action-noise-rad 0.02 --out outputs/demos --resume
stage "2/6 pre-training episodes: $PRETRAIN_EPISODES randomised episodes"
dynaflip record --sim --randomize-scene --episodes "$PRETRAIN_EPISODES" --seed 200000 --out outputs/pretrain --resume
stage "3/6 DynaFLIP encoder pre-training: $ENCODER_STEPS steps"
dynaflip train-encoder --dataset outputs/pretrain --out outputs/encoder --steps "$ENCODER_STEPS" \
  --threads "$THREADS" --resume
stage "4/6 ONNX export + parity gate"
dynaflip export --encoder outputs/encoder --out models/encoder --input-hw 192 192 --token-stages 3 \
  --tolerance 5e-4 --tensorrt auto --precision fp32
dynaflip probe --dataset outputs/demos --encoder models/encoder --out outputs/eval/probe.json --no-progress
stage "5/6 language-conditioned diffusion policy: $POLICY_STEPS steps"
dynaflip train-policy --dataset outputs/demos --encoder models/encoder --out outputs/policy \
  --config config/policy_token_readout.yaml --steps "$POLICY_STEPS" --resume
rm -rf models/policy.new && cp -r outputs/policy models/policy.new
rm -rf models/policy && mv models/policy.new models/policy
stage "6/6 evaluation: $EVAL_EPISODES held-out episodes, $SWAP_PAIRS swap pairs"
dynaflip eval --sim --encoder models/encoder --policy models/policy --episodes "$EVAL_EPISODES" \
  --out outputs/eval/build_lockstep.json
dynaflip eval --sim --encoder models/encoder --policy models/policy --swap-pairs "$SWAP_PAIRS" \
  --out outputs/eval/build_swap.json
stage "done in $(( ($(date +%s) - t0) / 60 )) min"
