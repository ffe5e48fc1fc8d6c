#!/usr/bin/env bash
# The #15 experiments on SmolLM2, into one store (rerunning skips what is finished):
#   bash benchmarks/strategies_runs.sh fast-middle   # BT(P), BT(F), FAST x {TopK, JumpReLU}, layer 15, seeds 0 and 1
#   bash benchmarks/strategies_runs.sh fast-ends     # the same at layers 4 and 25, seed 0, 0.1M tokens
#   bash benchmarks/strategies_runs.sh ends 15 0,1   # the same at one layer and the seeds given, 0.1M tokens
#   bash benchmarks/strategies_runs.sh topk 15 1     # TopK alone, at one layer and the seeds given, 0.1M tokens
#   bash benchmarks/strategies_runs.sh gba           # the frontier: GBA, TopK, ReLU+L1, JumpReLU at 4 levels, layer 12
#   bash benchmarks/strategies_runs.sh evaluate      # chat metrics, and seed stability where there are two seeds
#   bash benchmarks/strategies_runs.sh autointerp 4  # detection of 30 random live features per TopK strategy dictionary at layer 4
#   bash benchmarks/strategies_runs.sh one-table 4   # GBA and ReLU+L1 on the layer's BT(P) stream, then every dictionary
#                                                    # of the layer on the same held-out sets (core and chat groups)
#   bash benchmarks/strategies_runs.sh matched-l0 4 0,1  # JumpReLU per strategy with its initial threshold searched until
#                                                    # its L0 on the held-out conversations is TopK's 32 (seed 0), then the
#                                                    # chat group, for each seed given at the threshold found
# then `.venv/bin/python benchmarks/strategies_table.py` prints the README tables.
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${STORE:-data/strategies.duckdb}
wb() { .venv/bin/workbench --store "$STORE" "$@"; }

# Every strategy: 0.5M tokens (0.1M at layers 4 and 25: collecting activations runs at ~600
# tokens/s to layer 15 on this CPU; 1,600 to layer 4 on the 2026-12 machine), 2,048-token
# sequences (FAST's truncation: ShareGPT's median rendered conversation is 1,915 tokens, 2,048
# keeps 89% of its tokens; BT's blocks, as in the paper), every
# token counted (the paper trains on all of them, attention sinks included). The train run's own
# evaluation is small (8,192 tokens, CE on 4 sequences of 2,048 in the middle, 1 at the ends: 32 took
# 13 min a dictionary, and 4 took over 4.5 min on the 2026-12 machine): the table reads the chat
# group, which evaluates every strategy on the same conversations.
ENDS=(100000 1)   # tokens and CE sequences of every run at layers 4 and 25

stream_args() {   # layer seed tokens ce-sequences: the settings every strategy run shares, into STREAM_ARGS
  STREAM_ARGS=(--hook-point "blocks.$1.hook_resid_post" --tokens "$3" --context 2048 --forward-batch 4
               --token-rule.max-norm-ratio 0 --eval-tokens 8192 --ce-sequences "$4" --seed "$2")
}

strategy_train() {   # strategy, then the method's arguments; after stream_args
  local corpus=sharegpt
  [ "$1" = bt-p ] && corpus=wiki+bbc
  wb train --strategy "$1" --corpus "$corpus" "${STREAM_ARGS[@]}" "${@:2}"
}

jumprelu_train() {   # strategy init-threshold; after stream_args (the initial threshold sets JumpReLU's
  # L0 at these budgets: Adam moves a threshold by about lr a step, whatever the L0 coefficient)
  strategy_train "$1" --architecture jumprelu --sae.normalize-activations expected_average_only_in \
    --sae.l0-coefficient 6 --sae.init-threshold "$2"
}

chat_evaluate() {   # dictionary: the chat group every strategy table reads
  wb evaluate --dict-id "$1" --groups chat --chat-ce-sequences 4
}

topk_train() {   # strategy; after stream_args
  strategy_train "$1" --architecture topk --sae.k 32
}

strategy_runs() {   # layer seed tokens ce-sequences [topk]: every strategy with TopK and JumpReLU, or TopK alone
  stream_args "${@:1:4}"
  local threshold   # one value for these runs and for the table that tells them from the L0 search's tries
  threshold=$(.venv/bin/python -c 'import sys; sys.path.insert(0, "benchmarks")
from strategies_table import STRATEGY_RUN_THRESHOLD; print(STRATEGY_RUN_THRESHOLD)')
  for strategy in bt-p bt-f fast; do
    topk_train "$strategy"
    [ "${5:-}" = topk ] || jumprelu_train "$strategy" "$threshold"
  done
}

gba_runs() {   # the frontier at layer 12 on wiki+bbc (the #14 comparison's data; half its budget)
  local common=(--hook-point blocks.12.hook_resid_post --corpus wiki+bbc --tokens 250000)
  local norm=(--sae.normalize-activations expected_average_only_in)
  for high in 0.3 0.1 0.03 0.01; do
    low=$(python3 -c "print($high / 100)")
    wb train "${common[@]}" --architecture relu "${norm[@]}" --sae.l1-coefficient 0 --bias-adaptation gba \
      --gba.high-freq "$high" --gba.low-freq "$low"
  done
  for k in 16 32 64 128; do wb train "${common[@]}" --architecture topk --sae.k "$k"; done
  for l1 in 0.5 1.0 1.5 2.8; do wb train "${common[@]}" --architecture relu "${norm[@]}" --sae.l1-coefficient "$l1"; done
  for coef in 1 3 6 12; do
    wb train "${common[@]}" --architecture jumprelu "${norm[@]}" --sae.l0-coefficient "$coef" --sae.init-threshold 1.2
  done
  # second seeds for cross-seed consistency
  wb train "${common[@]}" --architecture relu "${norm[@]}" --sae.l1-coefficient 0 --bias-adaptation gba \
    --gba.high-freq 0.03 --gba.low-freq 0.0003 --seed 1
  wb train "${common[@]}" --architecture topk --sae.k 32 --seed 1
}

case "${1:-}" in
  fast-middle) strategy_runs 15 0 500000 4; strategy_runs 15 1 500000 4 ;;
  fast-ends) strategy_runs 4 0 "${ENDS[@]}"; strategy_runs 25 0 "${ENDS[@]}" ;;
  ends) for seed in ${3//,/ }; do strategy_runs "${2:?give the layer}" "$seed" "${ENDS[@]}"; done ;;
  topk) for seed in ${3//,/ }; do strategy_runs "${2:?give the layer}" "$seed" "${ENDS[@]}" topk; done ;;
  gba) gba_runs ;;
  evaluate)   # chat group on the strategy dictionaries; seed stability where a second seed exists
    # (core metrics are the train run's own, on the training corpus's held-out split)
    for dict_id in $(.venv/bin/python benchmarks/strategies_table.py --store "$STORE" --list chat); do
      chat_evaluate "$dict_id"
    done
    for dict_id in $(.venv/bin/python benchmarks/strategies_table.py --store "$STORE" --list paired); do
      wb evaluate --dict-id "$dict_id" --groups stability
    done ;;
  autointerp)   # one explainer and one scorer for every strategy: the TopK dictionaries (L0 32 each) of
    # the layer given, examples from one feature pass over held-out ShareGPT conversations, detection
    # with its shuffled control; 12 examples shown and 5 + 5 scored, so a feature costs ~1 min here
    layer=${2:?give the layer}
    for dict_id in $(.venv/bin/python benchmarks/strategies_table.py --store "$STORE" --list chat); do
      case "$dict_id" in topk-blocks_"$layer"_*) ;; *) continue ;; esac
      wb evaluate --dict-id "$dict_id" --groups autointerp --interpret-corpus sharegpt --interpret-features 30 \
        --interpret-scorers detection --interpret-explain-examples 12 --interpret-score-examples 5
    done ;;
  one-table)   # the methods of the GBA frontier beside the strategies, at one layer: GBA and ReLU+L1 trained on
    # the BT(P) stream the strategies' BT(P) rows use (its activations are cached), then the core group
    # (held-out wiki+bbc) and the chat group (held-out conversations) for every dictionary of the layer
    layer=${2:?give the layer}
    stream_args "$layer" 0 "${ENDS[@]}"
    relu=(--architecture relu --sae.normalize-activations expected_average_only_in)
    strategy_train bt-p "${relu[@]}" --sae.l1-coefficient 0 --bias-adaptation gba
    strategy_train bt-p "${relu[@]}" --sae.l1-coefficient 1.5
    for dict_id in $(.venv/bin/python benchmarks/strategies_table.py --store "$STORE" --list all); do
      case "$dict_id" in *-blocks_"$layer"_*) ;; *) continue ;; esac
      wb evaluate --dict-id "$dict_id" --groups core,chat --chat-ce-sequences 4
    done ;;
  jumprelu)   # one JumpReLU strategy run at the ends' settings (benchmarks/jumprelu_matched_l0.py searches the threshold)
    stream_args "${2:?give the layer}" "${5:-0}" "${ENDS[@]}"
    jumprelu_train "${3:?give the strategy}" "${4:?give the initial threshold}" ;;
  chat) chat_evaluate "${2:?give the dictionary}" ;;   # one dictionary's chat group (for jumprelu_matched_l0.py)
  matched-l0)   # JumpReLU at TopK's L0 (32 on the held-out conversations) for every strategy of a layer, seed 0,
    # then the other seeds given (e.g. 0,1) at the thresholds found
    .venv/bin/python benchmarks/jumprelu_matched_l0.py --store "$STORE" --layer "${2:?give the layer}" --seeds "${3:-0}" ;;
  *) echo "usage: $0 fast-middle|fast-ends|ends LAYER SEEDS|topk LAYER SEEDS|gba|evaluate|autointerp LAYER|one-table LAYER|matched-l0 LAYER [SEEDS]" >&2; exit 2 ;;
esac
