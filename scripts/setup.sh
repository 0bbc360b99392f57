#!/usr/bin/env bash
# Set up regulator on a fresh Debian/Ubuntu machine with Python 3.11.
#   scripts/setup.sh          the daemon and its CLI, in ./.venv
#   scripts/setup.sh --test   also the test tools and Debian's prometheus, alertmanager
#                             and systemd (for promtool, amtool, systemd-analyze)
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

if [ "$want_test" = 1 ]; then
  if command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends \
      prometheus prometheus-alertmanager systemd >/dev/null
  else
    echo "setup: no apt-get; install prometheus, alertmanager and systemd-analyze yourself" >&2
  fi
fi

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# Norse declares torchvision; these two builds are the ones the README states
# (CPU execution; on machines with a pip cache or mirror they come from there).
python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
if [ "$want_test" = 1 ]; then
  python -m pip install -q -e ".[test,bench]"
else
  python -m pip install -q -e .
fi
echo "setup: done ($(python -c 'import torch, norse; print("torch", torch.__version__)'))"
