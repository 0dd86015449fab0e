#!/usr/bin/env bash
# Issue 13's comparison on our task: every encoder recipe (encoder/recipes.py) trained on the same
# data with the same backbone, input size and budget, the same policy recipe trained on its
# embeddings with several training seeds, and one OOD session per recipe on matched episode
# seeds. Results accumulate in RESULTS_DIR (committed; `dynaflip results` turns them into
# docs/results.md tables); everything else stays under BENCH_DIR (outputs/, not committed).
#
#   1. data (once): POLICY demos, scripted DART expert in nominal scenes     -> BENCH_DIR/demos
#                   PRE-TRAINING episodes, randomised scenes                 -> BENCH_DIR/pretrain
#      (the first seeds of the build's recordings: same commands, fewer episodes)
#   2. per recipe:  encoder: pre-training on pretrain (ENCODER_STEPS), then a fine-tune on the
#                   demos with the same recipe (FINETUNE_STEPS) - the build's two stages; the
#                   untrained recipes (imagenet, random) are saved at their initialisation
#                   export at 192 x 192 with the stride-8 patch tokens (as the build)
#                   policies: config/policy_token_readout.yaml, POLICY_STEPS, one per POLICY_SEEDS
#                   probe: ridge read-out of joints, TCP pose, fingers and objects from the
#                   frozen embedding, held-out episodes (`dynaflip probe`)
#                   embedding shift: how far each of CONDITIONS moves the frozen encoder's output
#                   on the first frame of SHIFT_EPISODES seeds from 100000 (`dynaflip embedding-shift`)
#                   OOD session: nominal + CONDITIONS, EVAL_EPISODES seeds from 100000, every
#                   policy seed on the same episode seeds (`dynaflip eval-ood`)
#                   nominal extension: a second eval-ood session of the same policies on nominal
#                   scenes only, episode seeds NOMINAL_EXTENSION_SEEDS (more pairs where the
#                   policies succeed at all; the visual conditions sit at 0 %)
#   3. per recipe, into RESULTS_DIR/<recipe>/: session.json + episodes.jsonl of the session,
#      encoder.json and encoder_pre.json (the encoder manifests of the fine-tune and the
#      pre-training: recipe, data summary, steps, held-out retrieval), probe.json, shift.json and
#      policy_s<seed>.json (the policy's policy.json: data fingerprint, training summary, held-out errors),
#      nominal_extension/ (session.json + episodes.jsonl of the nominal extension).
#
# Usage: scripts/bench_encoders.sh [RECIPE ...]   (default: every recipe, in RECIPES order)
# Two invocations on disjoint recipe lists share the data (record it first: RECIPES="" runs
# step 1 only; a marker file in BENCH_DIR says it is complete). Every stage resumes (recordings keep their seeds, training --resume, eval-ood
# keeps finished episodes), so re-running after an interruption loses at most one checkpoint
# interval; a recipe whose results are complete is skipped (only its shift.json and its nominal
# extension are added when it lacks them and its encoder and policies are still in BENCH_DIR). Sizes come from the environment;
# the defaults are the protocol of docs/results.md "Issue 13".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PATH="$root/.venv/bin:$PATH"
export HF_HUB_OFFLINE=1
BENCH_DIR="${BENCH_DIR:-outputs/bench}"
RESULTS_DIR="${RESULTS_DIR:-results/our_task}"
DEMO_EPISODES="${DEMO_EPISODES:-400}"
PRETRAIN_EPISODES="${PRETRAIN_EPISODES:-200}"
ENCODER_STEPS="${ENCODER_STEPS:-500}"
FINETUNE_STEPS="${FINETUNE_STEPS:-150}"
POLICY_STEPS="${POLICY_STEPS:-5000}"
POLICY_SEEDS="${POLICY_SEEDS:-0 1 2}"
EVAL_EPISODES="${EVAL_EPISODES:-10}"
NOMINAL_EXTENSION_SEEDS="${NOMINAL_EXTENSION_SEEDS:-100010-100029}"
SHIFT_EPISODES="${SHIFT_EPISODES:-50}"
CONDITIONS="${CONDITIONS:-distractors:0.5,novel_object:0.5,lighting:0.1,texture:0.1,camera_pose:0.1,placement:0.25}"
THREADS="${THREADS:-2}"
ALL_RECIPES="dynaflip imagenet random tcn clip dynamo area_only no_flow no_language no_aux no_mismatched_negatives"
if [ "$#" -gt 0 ]; then recipes="$*"; else recipes="${RECIPES-$ALL_RECIPES}"; fi

stage() { printf '\n[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
embedding_shift() {  # recipe, exported encoder -> BENCH_DIR/recipe/shift.json (kept when there)
  if [ ! -f "$BENCH_DIR/$1/shift.json" ]; then
    stage "$1: embedding shift under $CONDITIONS, $SHIFT_EPISODES seeds"
    dynaflip embedding-shift --encoder "$2" --conditions "$CONDITIONS" --episodes "$SHIFT_EPISODES" --seed 100000 \
      --threads "$THREADS" --out "$BENCH_DIR/$1/shift.json" > "$BENCH_DIR/logs/shift_$1.log"
  fi
}
nominal_extension() {  # recipe -> RESULTS_DIR/recipe/nominal_extension (kept when there), its POLICY_SEEDS policies
  local recipe="$1" ext_models
  if [ ! -f "$RESULTS_DIR/$recipe/nominal_extension/session.json" ]; then
    stage "$recipe: nominal extension, episode seeds $NOMINAL_EXTENSION_SEEDS"
    mapfile -t ext_models < <(model_args "$recipe")
    dynaflip eval-ood "${ext_models[@]}" --conditions nominal --seeds "$NOMINAL_EXTENSION_SEEDS" \
      --threads 1 --out "$BENCH_DIR/$recipe/ood_nominal_extension" --no-report
    mkdir -p "$RESULTS_DIR/$recipe/nominal_extension"  # session.json last: its presence means the copy is whole
    cp "$BENCH_DIR/$recipe/ood_nominal_extension/episodes.jsonl" "$RESULTS_DIR/$recipe/nominal_extension/"
    cp "$BENCH_DIR/$recipe/ood_nominal_extension/session.json" "$RESULTS_DIR/$recipe/nominal_extension/"
  fi
}
policies_present() {  # recipe: every POLICY_SEEDS policy is still in BENCH_DIR
  for seed in $POLICY_SEEDS; do [ -f "$BENCH_DIR/$1/policy_s$seed/policy.json" ] || return 1; done
}
model_args() {  # recipe -> the --model arguments of its policies (one per POLICY_SEEDS), one per line
  for seed in $POLICY_SEEDS; do
    printf '%s\n' --model "${1}_s$seed=$BENCH_DIR/$1/encoder/export,$BENCH_DIR/$1/policy_s$seed"
  done
}
mkdir -p "$BENCH_DIR/logs"

data_done="$BENCH_DIR/data_${DEMO_EPISODES}_${PRETRAIN_EPISODES}.done"
if [ ! -f "$data_done" ]; then
  stage "data: $DEMO_EPISODES demos, $PRETRAIN_EPISODES pre-training episodes (side by side, logs in $BENCH_DIR/logs)"
  dynaflip record --sim --randomize-scene --episodes "$PRETRAIN_EPISODES" --seed 200000 --out "$BENCH_DIR/pretrain" \
    --resume --no-progress > "$BENCH_DIR/logs/record_pretrain.log" 2>&1 &
  pretrain_pid=$!
  dynaflip record --sim --episodes "$DEMO_EPISODES" --seed 0 --action-noise-rad 0.02 --out "$BENCH_DIR/demos" \
    --resume --no-progress > "$BENCH_DIR/logs/record_demos.log" 2>&1
  wait "$pretrain_pid"
  touch "$data_done"
fi

for recipe in $recipes; do
  out="$RESULTS_DIR/$recipe"
  enc="$BENCH_DIR/$recipe/encoder"
  if [ -f "$out/complete" ]; then
    if [ ! -f "$out/shift.json" ]; then
      if [ -f "$enc/export/manifest.json" ]; then
        embedding_shift "$recipe" "$enc/export"
        cp "$BENCH_DIR/$recipe/shift.json" "$out/shift.json"
      else
        stage "$recipe: $out has no shift.json and $enc/export is gone: rebuild the encoder (move $out aside and rerun) to measure it"
      fi
    fi
    if [ ! -f "$out/nominal_extension/session.json" ]; then
      if [ -f "$enc/export/manifest.json" ] && policies_present "$recipe"; then
        nominal_extension "$recipe"
      else
        stage "$recipe: $out has no nominal extension and its encoder or policies are gone from $BENCH_DIR: rebuild them (move $out aside and rerun) to run it"
      fi
    fi
    stage "$recipe: complete in $out, skipped"; continue
  fi
  case "$recipe" in
    imagenet|random)
      stage "$recipe: untrained encoder"
      dynaflip train-encoder --recipe "$recipe" --out "$enc" ;;
    *)
      stage "$recipe: encoder pre-training, $ENCODER_STEPS steps"
      dynaflip train-encoder --recipe "$recipe" --dataset "$BENCH_DIR/pretrain" --out "$BENCH_DIR/$recipe/encoder_pre" \
        --steps "$ENCODER_STEPS" --threads "$THREADS" --resume --no-progress
      stage "$recipe: encoder fine-tune on the demos, $FINETUNE_STEPS steps"
      dynaflip train-encoder --recipe "$recipe" --dataset "$BENCH_DIR/demos" --out "$enc" \
        --init "$BENCH_DIR/$recipe/encoder_pre" --steps "$FINETUNE_STEPS" --threads "$THREADS" --resume --no-progress ;;
  esac
  if [ ! -f "$enc/export/export_report.json" ]; then
    dynaflip export --encoder "$enc" --out "$enc/export" --input-hw 192 192 --token-stages 3 \
      --tolerance 5e-4 --tensorrt off --precision fp32 --threads "$THREADS"
  fi
  for seed in $POLICY_SEEDS; do
    stage "$recipe: policy, training seed $seed, $POLICY_STEPS steps"
    dynaflip train-policy --dataset "$BENCH_DIR/demos" --encoder "$enc/export" --out "$BENCH_DIR/$recipe/policy_s$seed" \
      --config config/policy_token_readout.yaml --steps "$POLICY_STEPS" --seed "$seed" \
      --threads "$THREADS" --cache-dir "$BENCH_DIR/$recipe/cache" --resume --no-progress
  done
  mapfile -t models < <(model_args "$recipe")
  if [ ! -f "$BENCH_DIR/$recipe/probe.json" ]; then
    stage "$recipe: control-relevant probe of the frozen embedding"
    dynaflip probe --dataset "$BENCH_DIR/demos" --encoder "$enc/export" --cache-dir "$BENCH_DIR/$recipe/cache" \
      --threads "$THREADS" --out "$BENCH_DIR/$recipe/probe.json" --no-progress
  fi
  rm -rf "$BENCH_DIR/$recipe/cache"  # this encoder's embeddings of the demos (GBs), not needed again
  embedding_shift "$recipe" "$enc/export"
  stage "$recipe: OOD session, nominal + $CONDITIONS, $EVAL_EPISODES episodes per condition and seed"
  dynaflip eval-ood "${models[@]}" --conditions "$CONDITIONS" --episodes "$EVAL_EPISODES" --seed 100000 \
    --threads 1 --out "$BENCH_DIR/$recipe/ood" --no-report
  mkdir -p "$out"
  cp "$BENCH_DIR/$recipe/ood/session.json" "$BENCH_DIR/$recipe/ood/episodes.jsonl" "$out/"
  nominal_extension "$recipe"
  cp "$enc/manifest.json" "$out/encoder.json"
  cp "$BENCH_DIR/$recipe/probe.json" "$BENCH_DIR/$recipe/shift.json" "$out/"
  if [ -f "$BENCH_DIR/$recipe/encoder_pre/manifest.json" ]; then cp "$BENCH_DIR/$recipe/encoder_pre/manifest.json" "$out/encoder_pre.json"; fi
  for seed in $POLICY_SEEDS; do cp "$BENCH_DIR/$recipe/policy_s$seed/policy.json" "$out/policy_s$seed.json"; done
  date -u +%Y-%m-%dT%H:%M:%SZ > "$out/complete"
  stage "$recipe: results in $out"
done
