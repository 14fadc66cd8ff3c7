#!/usr/bin/env bash
# The README's main job on the embedded default (the MuJoCo mirror, no robot, no GPU):
# record scripted demonstrations of every mirror task, train the reward model (cpu
# preset) on them and score held-out episodes (robot/demo.py). Output lands in
# ${DRR_OUT:-out/demo}; re-running resumes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec .venv/bin/drr demo --out "${DRR_OUT:-out/demo}" "$@"
