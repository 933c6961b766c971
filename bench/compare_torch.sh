#!/usr/bin/env bash
# Installs Debian's PyTorch (with OpenBLAS) and transformers if missing, then
# times the configurations of photon-bench in PyTorch with the same threads.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian's torch calls the system BLAS (libblas.so.3); libopenblas0-pthread
# makes that OpenBLAS instead of the slow reference BLAS.
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null || ! dpkg -s libopenblas0-pthread >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch python3-numpy \
        python3-pip libopenblas0-pthread >/dev/null
fi
/usr/bin/python3 -c 'import transformers' 2>/dev/null ||
    /usr/bin/python3 -m pip install -q --break-system-packages transformers==4.36.2
echo "BLAS: $(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3)" >&2
exec /usr/bin/python3 bench/compare_torch.py "$@"
