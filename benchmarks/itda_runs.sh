#!/usr/bin/env bash
# The #16 layer-matching experiments on SmolLM2, into one store (rerunning skips what is finished):
#   bash benchmarks/itda_runs.sh self     # (a) SmolLM2 with itself: ITDA builds with seeds 0 and 1, every layer
#   bash benchmarks/itda_runs.sh lora     # (b) a LoRA finetune of SmolLM2 on BBC news, then SmolLM2 vs it
#   bash benchmarks/itda_runs.sh qwen     # (c) SmolLM2 vs Qwen2.5-Coder-1.5B (another tokenizer, 28 layers):
#                                         # prompts aligned by character offsets, matched by relative depth
#   bash benchmarks/itda_runs.sh interp   # detection/fuzzing of 30 random live features: ITDA (tau 0.2) and TopK
#                                         # k=32, both layer 12 at 0.5M tokens, in the #14 comparison store
# `.venv/bin/workbench --store data/itda.duckdb serve` shows the heatmaps (Dictionaries tab).
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${STORE:-data/itda.duckdb}
wb() { .venv/bin/workbench --store "$STORE" "$@"; }
VARIANT=smollm2-bbc-lora

case "${1:-}" in
  self) wb compare-layers ;;
  lora)
    if ! wb sql "SELECT name FROM models WHERE name = '$VARIANT'" | grep -q "$VARIANT"; then
      wb lora --name "$VARIANT" --corpus bbc --steps 80 --lr 2e-3   # ~5 s a step here
    fi
    wb compare-layers --model-b "$VARIANT" --seed-b 0 ;;
  qwen) wb compare-layers --model-b qwen2.5-coder-1.5b-instruct --seed-b 0 --tokens 6000 --paired-tokens 2048 ;;
  interp)
    for dict_id in itda-blocks_12_hook_resid_post-c802d2eaa34c topk-blocks_12_hook_resid_post-95310832bed6; do
      .venv/bin/workbench --store data/comparison.duckdb evaluate --dict-id "$dict_id" --groups core,autointerp \
        --interpret-features 30
    done ;;
  *) echo "usage: $0 self|lora|qwen|interp" >&2; exit 2 ;;
esac
