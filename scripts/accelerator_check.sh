#!/usr/bin/env bash
# One-command accelerator check on a GPU machine (docs/accelerators.md): parity of every
# arch, the bench in bf16 (vs torch AMP eager and torch.compile) and fp32, 60 s of the real
# training loop; writes accelerator_check.json / .md to ${OUT:-accelerator_check}.
# Where only the GPU image's packages exist, the missing ones travel as wheels in .whl/.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
exec python3 scripts/accelerator_check.py "${OUT:-accelerator_check}" "$@"
