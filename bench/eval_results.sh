#!/usr/bin/env bash
# Reproduce the tables of docs/RESULTS.md (run from the repository root; needs ../shared/data).
#   bash bench/eval_results.sh [OUT_DIR]          (default OUT_DIR: /tmp/echomask_results)
# Adds the model's row when weights/echomask_small.safetensors exists (generated from the clips' speech), and
# the random-masking ablation's row when RANDOM_MASKING_MODEL names its weights (trained with
# `python -m core train ... --random-masking`, same command and length as the default model otherwise).
set -euo pipefail
PY=${PYTHON:-python}
S=../shared/data
OUT=${1:-/tmp/echomask_results}
mkdir -p "$OUT"
MODEL_ARGS=()
if [ -f weights/echomask_small.safetensors ]; then
  MODEL_ARGS=(--model weights/echomask_small.safetensors --seed 0)
fi
if [ -n "${RANDOM_MASKING_MODEL:-}" ]; then
  MODEL_ARGS+=(--random-masking-model "$RANDOM_MASKING_MODEL")
fi
PUBLISHED=(--system "MambaTalk, published output=$S/beat2_model_outputs/mambatalk"
           --system "SemTalk fork, published output=$S/beat2_model_outputs/semtalk_fork")

# 1. Held-out tails: the last 15 % of each ground-truth clip (kept out of every training in this project).
/usr/bin/time -v "$PY" -m core eval --reference $S/beat2_samples/smplxflame_30 --audio $S/beat2_samples/wave16k \
  --tail 0.15 "${MODEL_ARGS[@]}" "${PUBLISHED[@]}" --out "$OUT/heldout.md" --json "$OUT/heldout.json" \
  2> "$OUT/heldout.time"

# 2. Whole clips (protocol sanity check; no model row: most of these frames are training data).
/usr/bin/time -v "$PY" -m core eval --reference $S/beat2_samples/smplxflame_30 --audio $S/beat2_samples/wave16k \
  "${PUBLISHED[@]}" --out "$OUT/whole.md" --json "$OUT/whole.json" 2> "$OUT/whole.time"

# 3. The model decoded by arg-max (Variation 0 in the panel, --temperature 0), held-out tails, model row only.
if [ -f weights/echomask_small.safetensors ]; then
  /usr/bin/time -v "$PY" -m core eval --reference $S/beat2_samples/smplxflame_30 --audio $S/beat2_samples/wave16k \
    --tail 0.15 --model weights/echomask_small.safetensors --seed 0 --temperature 0 --no-baselines \
    --out "$OUT/heldout_argmax.md" --json "$OUT/heldout_argmax.json" 2> "$OUT/heldout_argmax.time"
fi

grep -h "Elapsed\|Maximum resident" "$OUT"/*.time
