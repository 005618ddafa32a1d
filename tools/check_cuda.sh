#!/usr/bin/env bash
# Compile check of fastmask's CUDA backend with this machine's nvcc; no GPU needed.
#   1. every csrc/cuda/*.cu for sm_80 and sm_90, with the extension's flags, warnings as errors;
#   2. csrc/cuda/bindings.cpp and csrc/module.cpp as the CUDA build compiles them, against torch's
#      headers (syntax and types only; needs an importable torch, else this step is reported as skipped).
# Exits non-zero on any failure; skips with exit 0 only when nvcc is absent.
# Environment: NVCC (default nvcc), CXX (default g++), PYTHON (default .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC=${NVCC:-nvcc}
if ! command -v "$NVCC" >/dev/null 2>&1; then
  echo "check_cuda: SKIPPED: nvcc not found (set NVCC or put nvcc on PATH to compile-check csrc/cuda)"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/fastmask_check_cuda.XXXXXX")
trap 'rm -rf "$work"' EXIT
status=0

echo "check_cuda: $("$NVCC" --version | grep -i release)"
shopt -s nullglob
sources=(csrc/cuda/*.cu)
if [ ${#sources[@]} -eq 0 ]; then
  echo "check_cuda: FAILED: no csrc/cuda/*.cu found"
  exit 1
fi
flags=(-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
       -std=c++17 --fmad=false -O3 -Icsrc -Werror all-warnings)
for source in "${sources[@]}"; do
  object="$work/$(basename "$source" .cu).o"
  echo "+ $NVCC ${flags[*]} -c $source -o $object"
  if "$NVCC" "${flags[@]}" -c "$source" -o "$object"; then
    echo "check_cuda: ok $source"
  else
    echo "check_cuda: FAILED $source"
    status=1
  fi
done

python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
if includes=$("$python" - 2>/dev/null <<'EOF'
import sysconfig
from torch.utils import cpp_extension
paths = cpp_extension.include_paths() + [sysconfig.get_paths()["include"]]
print(" ".join("-isystem" + path for path in paths))
EOF
); then
  # The toolkit headers nvcc itself uses (cuda_runtime.h and friends).
  cuda_include=$("$NVCC" --dryrun -x cu -c /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ INCLUDES="-I\([^"]*\)".*/\1/p')
  # CPU wheels of torch ship c10/cuda without this generated one-line config header.
  stub="$work/stub/c10/cuda/impl"
  mkdir -p "$stub"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$stub/cuda_cmake_macros.h"
  cxx=${CXX:-g++}
  for source in csrc/cuda/bindings.cpp csrc/module.cpp; do
    # shellcheck disable=SC2086  # $includes is a list of flags
    command=("$cxx" -std=c++17 -fsyntax-only -Wall -Wextra -Werror -DTORCH_EXTENSION_NAME=_C
             -DTORCH_API_INCLUDE_EXTENSION_H -DFASTMASK_WITH_CUDA=1 $includes -idirafter "$work/stub"
             -isystem "$cuda_include" -Icsrc "$source")
    echo "+ ${command[*]}"
    if "${command[@]}"; then
      echo "check_cuda: ok $source (syntax)"
    else
      echo "check_cuda: FAILED $source"
      status=1
    fi
  done
else
  echo "check_cuda: SKIPPED csrc/cuda/bindings.cpp, csrc/module.cpp: torch is not importable by $python"
fi

if [ "$status" -ne 0 ]; then
  echo "check_cuda: FAILED"
else
  echo "check_cuda: all CUDA sources compile"
fi
exit "$status"
