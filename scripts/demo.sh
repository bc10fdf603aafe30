#!/usr/bin/env bash
# The main job.  Until the machine lands this only builds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
echo "demo: snapvm is not functional yet"
