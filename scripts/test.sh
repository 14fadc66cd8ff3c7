#!/usr/bin/env bash
# The README's test command: set up (idempotent), then run the whole test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
# A crash outside a test (CI saw a segfault at interpreter exit) prints its native stack.
export PYTHONFAULTHANDLER=1
exec .venv/bin/python -m pytest "$@"
