#!/usr/bin/env bash
# Run the test suite (GUI tests get a virtual X display from pytest-xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
export QT_QPA_PLATFORM=xcb PYTHONHASHSEED=0
exec .venv/bin/python -m pytest "$@"
