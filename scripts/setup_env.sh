#!/usr/bin/env bash
# Create (or refresh) a virtual environment from requirement files: setup_env.sh VENV REQ [REQ...]
# Later files override earlier pins (the second environment swaps in the newest datasets).
set -euo pipefail
venv=$1; shift
stamp="$venv/.requirements.sha256"
wanted=$(cat "$@" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
for requirements in "$@"; do
  "$venv/bin/pip" install --quiet -r "$requirements"
done
echo "$wanted" > "$stamp"
