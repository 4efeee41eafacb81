#!/usr/bin/env bash
# The BREAD reproduction (issue: objectives and rollouts): one base checkpoint, then
# (a) GRPO, (b) SFT on the expert traces then GRPO, (c) BREAD, with the same step budget and
# seed, and the comparison table and plot written to runs/bread_comparison/.
#   bash examples/reproduce_bread.sh            (from the repository root)
# POST overrides the binary (default: cargo run --release --).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${POST:-}" ]; then
  post() { "$POST" "$@"; }
else
  cargo build --release --quiet
  post() { "${CARGO_TARGET_DIR:-target}/release/post" "$@"; }
fi
# Each of the three starts from `trained("bread_base.post", model = "policy")`: the first run
# builds the base into runs/prereq/bread_base-<graph hash>/ and the other two reuse it.
for x in grpo sft_then_grpo bread; do
  post run "examples/$x.post" --out "runs/$x"
done
post compare runs/grpo runs/sft_then_grpo runs/bread --reference sft_then_grpo \
  --out runs/bread_comparison
