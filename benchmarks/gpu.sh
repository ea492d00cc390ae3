#!/usr/bin/env bash
# Every speed measurement of the GPU targets, in one go (one device lease): bfloat16 generation at
# batch 1 and 64 and the largest batch that fits, the AR baseline beside it, training throughput and
# MFU at batch 256 with and without remat (and once without attention dropout, so that attention can
# run fused), and a profile of each.
#
#   bash benchmarks/gpu.sh OUTDIR        # JSON records and logs go to OUTDIR
#   MGT_BENCH_EXTRA=--smoke bash benchmarks/gpu.sh /tmp/gpu_smoke    # the same steps with tiny models
#
# Each step's JSON is written as soon as it ends, so a run cut short keeps what it measured.
set -u
out=${1:?usage: bash benchmarks/gpu.sh OUTDIR}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
export PYTHONUNBUFFERED=1
run() {  # name, then the command's arguments
  local name=$1; shift
  echo "=== $name: $*"
  # shellcheck disable=SC2086  # MGT_BENCH_EXTRA holds extra flags, split on purpose
  python "$@" ${MGT_BENCH_EXTRA:-} 2>&1 | tee "$out/$name.log" | grep -v "^WARNING" | tail -40
}
python -c "import jax; print(jax.devices())"
run decode    "$here/decode.py" --model imagenet --tokens 256 --batches 1,64 --steps 8,12 --methods maskgit,ar,vqgan,generation \
              --dtype bfloat16 --max-batch 4096 --json "$out/decode.json"
run gen_prof  "$here/breakdown.py" --model imagenet --batch 64 --dtype bfloat16 --json "$out/breakdown_generation.json"
run train     "$here/train.py" --stages transformer,tokenizer --batch 256 --dtype bfloat16 --json "$out/train.json"
run train_prof "$here/breakdown.py" --case train --batch 256 --dtype bfloat16 --json "$out/breakdown_train.json"
run train_fused "$here/train.py" --stages transformer --batch 256 --dtype bfloat16 --remat off --attention-dropout 0 \
              --json "$out/train_fused_attention.json"
