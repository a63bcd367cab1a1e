#!/usr/bin/env bash
# Set up napari-drunet on a fresh Debian/Ubuntu machine: system GL/Xvfb packages, a virtual
# environment in .venv with a CPU build of torch, and the package (editable) with its extras.
#   bash scripts/setup.sh          # everything needed for the tests and the GUI
#   bash scripts/setup.sh --core   # engine + CLI only (no napari/Qt, no apt packages)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="dev"
[ "${1:-}" = "--core" ] && EXTRAS=""
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

APT_PKGS="xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-icccm4 \
libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 \
libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1"
if [ -n "$EXTRAS" ] && command -v apt-get >/dev/null 2>&1; then
  missing=""
  for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q --no-install-recommends $missing \
      || { $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends $missing; }
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "$TORCH_SPEC"
if [ -n "$EXTRAS" ]; then
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
else
  .venv/bin/python -m pip install -q -e .
fi
.venv/bin/python -c "import napari_drunet, torch; print('napari-drunet', napari_drunet.__version__, '| torch', torch.__version__)"
