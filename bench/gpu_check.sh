#!/usr/bin/env bash
# One prepared run on a lent GPU machine (the device tool; never CI): the model parity tests,
# the MFU of bfloat16 training (bench/gpu_mfu.py: GPT-2 small 16 x 1024 and BERT-base 32 x 512,
# each attention kernel, XLA's default flags and MaxText's), then the training and generation
# benches on the GPU, with that image's jax and our pure-Python deps carried as wheels in .whl/
# (see bench/README.md). Logs land in $OUT. Each part has its own timeout in seconds (0 skips
# it): TESTS_S, MFU_S, TRAIN_S, GEN_S, about 9 minutes in all.
# DRY_RUN=1 runs only the MFU part, with --dry-run (tiny shapes, the same code path), on this
# machine's $PYTHON and packages: tests/bench/test_gpu_check.py runs it so on a CPU. The exit
# status is 1 if any part failed or timed out (each still runs).
set -uo pipefail
failed=""
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ "${DRY_RUN:-0}" = 1 ]; then
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  TESTS_S=0 TRAIN_S=0 GEN_S=0 MFU_FLAGS="--dry-run ${MFU_FLAGS:-}"
else
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >/dev/null && export PYTHONPATH=$PWD:/tmp/site || exit 1
  "$PYTHON" -c "import jax, flax, optax, orbax.checkpoint as o, transformers, torch; \
print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, \
'transformers', transformers.__version__, 'torch', torch.__version__); print(jax.devices())" \
    2>&1 | tee "$OUT/versions.txt"
fi
[ "${TESTS_S:=120}" = 0 ] || timeout "$TESTS_S" "$PYTHON" -m pytest -q ${PYTEST_FLAGS:--x} \
  -p no:cacheprovider ${TESTS:-tests/models} 2>&1 | tee "$OUT/tests.txt" | tail -25 \
  || failed+=" tests"
# gpu_mfu.py shares out 10 s less than its timeout, so a worker cut short is still reported.
[ "${MFU_S:=300}" = 0 ] || timeout "$MFU_S" "$PYTHON" bench/gpu_mfu.py --timeout-s $((MFU_S - 10)) \
  ${MFU_FLAGS:-} 2>"$OUT/mfu.log" | tee "$OUT/mfu.jsonl" || failed+=" mfu"
[ "${TRAIN_S:=60}" = 0 ] || timeout "$TRAIN_S" "$PYTHON" bench/train_throughput.py \
  --cases train_gpt2_small --no-transformers --steps 10 2>&1 | tee "$OUT/train.jsonl" \
  | grep -v Warning | tail -8 || failed+=" train"
[ "${GEN_S:=60}" = 0 ] || timeout "$GEN_S" "$PYTHON" bench/generate_throughput.py \
  --cases ${GEN_CASES:-gen_gpt2_small} --no-transformers --runs 2 2>&1 \
  | tee "$OUT/generate.jsonl" | grep -v Warning | tail -8 || failed+=" generate"
[ -z "$failed" ] || { echo "gpu_check.sh: failed:$failed (logs in $OUT)" >&2; exit 1; }
