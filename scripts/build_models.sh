#!/usr/bin/env bash
# Rebuild the models shipped in models/ (the main job's encoder and policy) from nothing, on a
# CPU machine (a GPU, when torch sees one, speeds up the encoder; nothing needs it):
#
#   1. policy demos: scripted expert, nominal multi-object scenes   -> outputs/demos
#   2. pre-training episodes: scripted expert, randomised lights,
#      table / floor colours and camera pose (train-split objects)   -> outputs/pretrain
#      (1 and 2 run side by side, one core each; 2 logs to outputs/logs/build_pretrain_record.log)
#   3. DynaFLIP encoder pre-training on (2)                          -> outputs/encoder
#   4. DynaFLIP fine-tune of (3) on the policy demos (1) (--init;
#      FINETUNE_STEPS=0 skips it)                                    -> outputs/encoder_ft
#   5. ONNX export with the parity gate at a 192 x 192 input with
#      24 x 24 patch tokens of the stride-8 stage (docs/method.md §1),
#      and a linear probe of its embeddings on (1)                   -> models/encoder, outputs/eval/probe.json
#   6. language-conditioned diffusion policies on the frozen embeddings
#      and patch tokens of (1), one per training seed (POLICY_SEEDS):
#      token readout whose head estimates the fingers-to-named-object
#      offset, an input of the policy (config/policy_token_readout.yaml),
#      combined into a checkpoint ensemble (dynaflip ensemble-policy) -> outputs/policy_s<seed>, models/policy
#   7. lock-step evaluation on held-out seeds + the instruction-swap check -> outputs/eval/
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
FINETUNE_STEPS="${FINETUNE_STEPS:-500}"        # encoder fine-tune on the policy demos (0: none)
POLICY_SEEDS="${POLICY_SEEDS:-0 1}"             # one policy per training seed; two or more: an ensemble
POLICY_STEPS="${POLICY_STEPS:-10000}"
EVAL_EPISODES="${EVAL_EPISODES:-50}"
SWAP_PAIRS="${SWAP_PAIRS:-25}"
THREADS="${THREADS:-2}"

stage() { printf '\n[build %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
t0=$(date +%s)

mkdir -p outputs/logs
stage "1-2/7 recordings side by side: $DEMO_EPISODES nominal policy demos, DART-perturbed expert (docs/method.md §3), and $PRETRAIN_EPISODES randomised pre-training episodes (outputs/logs/build_pretrain_record.log)"
dynaflip record --sim --randomize-scene --episodes "$PRETRAIN_EPISODES" --seed 200000 --out outputs/pretrain --resume \
  --no-progress > outputs/logs/build_pretrain_record.log 2>&1 &
pretrain_pid=$!
dynaflip record --sim --episodes "$DEMO_EPISODES" --seed 0 --action-noise-rad 0.02 --out outputs/demos --resume
wait "$pretrain_pid" || { echo "build: the pre-training recording failed, see outputs/logs/build_pretrain_record.log" >&2; exit 1; }
stage "3/7 DynaFLIP encoder pre-training: $ENCODER_STEPS steps"
dynaflip train-encoder --dataset outputs/pretrain --out outputs/encoder --steps "$ENCODER_STEPS" \
  --threads "$THREADS" --resume
encoder=outputs/encoder
if [ "$FINETUNE_STEPS" -gt 0 ]; then
  stage "4/7 DynaFLIP fine-tune on the policy demos: $FINETUNE_STEPS steps"
  dynaflip train-encoder --dataset outputs/demos --out outputs/encoder_ft --init outputs/encoder \
    --steps "$FINETUNE_STEPS" --threads "$THREADS" --resume
  encoder=outputs/encoder_ft
fi
stage "5/7 ONNX export + parity gate"
dynaflip export --encoder "$encoder" --out models/encoder --input-hw 192 192 --token-stages 3 \
  --tolerance 5e-4 --tensorrt auto --precision fp32
dynaflip probe --dataset outputs/demos --encoder models/encoder --out outputs/eval/probe.json --no-progress
members=()
for seed in $POLICY_SEEDS; do
  stage "6/7 language-conditioned diffusion policy, training seed $seed: $POLICY_STEPS steps"
  dynaflip train-policy --dataset outputs/demos --encoder models/encoder --out "outputs/policy_s$seed" \
    --config config/policy_token_readout.yaml --steps "$POLICY_STEPS" --seed "$seed" --resume
  members+=(--member "outputs/policy_s$seed")
done
rm -rf models/policy.new
if [ "${#members[@]}" -gt 2 ]; then
  dynaflip ensemble-policy "${members[@]}" --out models/policy.new
else
  cp -r "${members[1]}" models/policy.new
fi
rm -rf models/policy && mv models/policy.new models/policy
stage "7/7 evaluation: $EVAL_EPISODES held-out episodes, $SWAP_PAIRS swap pairs (side by side)"
dynaflip eval --sim --encoder models/encoder --policy models/policy --swap-pairs "$SWAP_PAIRS" \
  --out outputs/eval/build_swap.json > outputs/logs/build_swap.log 2>&1 &
swap_pid=$!
dynaflip eval --sim --encoder models/encoder --policy models/policy --episodes "$EVAL_EPISODES" \
  --out outputs/eval/build_lockstep.json
wait "$swap_pid" || { echo "build: the swap check failed, see outputs/logs/build_swap.log" >&2; exit 1; }
tail -n 6 outputs/logs/build_swap.log
stage "done in $(( ($(date +%s) - t0) / 60 )) min"
