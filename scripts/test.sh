#!/usr/bin/env bash
# Install undiffuse with its test extras and run the fast test suite (slow tests: pass -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || echo "test: could not install dataset-fashion-mnist; its tests will skip" >&2
fi
EXTRAS="${EXTRAS:-test,bench,medical,serve,browser,series,audio}" WITH_FID="${WITH_FID:-1}" bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
