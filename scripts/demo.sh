#!/usr/bin/env bash
# The main job: build snapvm, boot the built-in guest (no kernel needed),
# show it ticking and computing, snapshot it live into a qcow2 image over
# QMP, change it, restore the snapshot and show that RAM, disk and clock
# came back.  See scripts/demo.py for the steps.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
exec /usr/bin/python3 scripts/demo.py
