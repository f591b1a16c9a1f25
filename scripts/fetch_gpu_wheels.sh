#!/usr/bin/env bash
# Download the wheels of scripts/gpu_wheels.txt for the GPU image (CPython 3.12, manylinux
# x86-64) into .whl/, which scripts/accelerator_check.sh installs from. Run where pip can
# reach an index.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
platforms=()
for p in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 \
         manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${p}_x86_64")
done
grep -v '^#' scripts/gpu_wheels.txt | grep . | while read -r wheel; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl "$wheel" \
  || python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl "$wheel"
done
ls .whl
