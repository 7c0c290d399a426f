#!/usr/bin/env bash
# One prepared run on a lent GPU machine (the device tool; never CI): the model parity tests and
# the training and generation benches on the GPU, with that image's jax and our pure-Python deps
# carried as wheels in .whl/ (see bench/README.md). Logs land in $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl >/dev/null && export PYTHONPATH=$PWD:/tmp/site || exit 1
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -c "import jax, flax, optax, orbax.checkpoint as o, transformers, torch; \
print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, \
'transformers', transformers.__version__, 'torch', torch.__version__); print(jax.devices())" \
  2>&1 | tee "$OUT/versions.txt"
timeout "${TESTS_S:-200}" python3 -m pytest -q ${PYTEST_FLAGS:--x} -p no:cacheprovider ${TESTS:-tests/models} \
  2>&1 | tee "$OUT/tests.txt" | tail -25
[ "${TRAIN_S:-120}" = 0 ] || timeout "${TRAIN_S:-120}" python3 bench/train_throughput.py --cases train_gpt2_small \
  --no-transformers --steps 10 2>&1 | tee "$OUT/train.jsonl" | grep -v Warning | tail -8
[ "${GEN_S:-150}" = 0 ] || timeout "${GEN_S:-150}" python3 bench/generate_throughput.py --cases ${GEN_CASES:-gen_gpt2_small} \
  --no-transformers --runs 2 2>&1 | tee "$OUT/generate.jsonl" | grep -v Warning | tail -8
