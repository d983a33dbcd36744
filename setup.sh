#!/usr/bin/env bash
# Set up wmse on a fresh machine: Fashion-MNIST (Debian package), a virtual environment
# in .venv, and the package with its test and benchmark extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

# Fashion-MNIST from Debian when its files are missing (needs root or sudo). Without
# it, `wmse train` looks in --data-dir and finally downloads through torchvision.
FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ] && command -v apt-get >/dev/null; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
    if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
        echo "setup: installing Debian's dataset-fashion-mnist"
        $SUDO apt-get update -qq
        $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
        echo "setup: not root; skipping dataset-fashion-mnist (pass --data-dir instead)"
    fi
fi

# Virtual environment with the package (editable) and its extras.
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,bench]"
echo "setup: done ($(.venv/bin/python -c 'import torch, wmse; print("torch", torch.__version__, "wmse", wmse.__version__)'))"
