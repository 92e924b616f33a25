#!/usr/bin/env bash
# Create or update a virtual environment from pinned requirement files, one line per step:
#   bash scripts/setup_env.sh VENV [--override FILE] REQUIREMENTS...
# VENV is relative to the checkout. --override FILE: its pins replace those of the same packages
# in REQUIREMENTS (the second test environment swaps in the newest datasets this way).
# python3's pip puts uv (requirements-setup.txt) into the environment and uv installs the rest:
# cold, requirements.txt takes 5 s with uv and 90 s with pip (measured). The environment gets no
# pip of its own (8 s saved; add packages with VENV/bin/uv pip install). uv reads none of pip's
# configuration, so pip fetches the packages of PIP_FETCHED from wherever this machine's pip
# configuration says (a local CPU build of torch, for instance) and uv installs that wheel. Last
# comes the coco-unified command (`pip install -e . --no-deps`, done by uv). Unlike pip, uv
# compiles no bytecode: Python does, for the modules imported, as they are first imported (unless
# PYTHONDONTWRITEBYTECODE is set: see scripts/sample.sh). An environment remembers what it was set
# up with: run again with the same files, this script does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP_FETCHED="torch|torchvision"

venv=$1
shift
overrides=()
if [ "${1:-}" = --override ]; then
  overrides=(--override "$2")
  shift 2
fi
stamp="$venv/.setup-done"
key=$({
  echo "$* ${overrides[*]}"
  cat scripts/setup_env.sh pyproject.toml requirements-setup.txt "${overrides[@]:1}" "$@"
} | sha256sum | cut -d' ' -f1)
if grep -qsx "$key" "$stamp"; then
  exit 0
fi

say() { echo "setting up $venv: $*"; }
if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "scripts/setup_env.sh: python3 has no pip (python3 -m pip), which installs uv: install it (e.g. apt install python3-pip)" >&2
  exit 1
fi
start=$SECONDS
if [ ! -x "$venv/bin/python" ]; then
  say "creating it (python3 -m venv --without-pip)"
  python3 -m venv --without-pip "$venv"
fi
uv_pin=$(grep -o '^uv==[^ ]*' requirements-setup.txt)
if [ "$("$venv/bin/uv" --version 2>/dev/null | cut -d' ' -f2)" != "${uv_pin#uv==}" ]; then
  say "installing $uv_pin into it with python3's pip"
  python3 -m pip --python "$venv/bin/python" install -qq -r requirements-setup.txt
fi

find_links=()
# One pin per package, an override's first (so it wins over the requirement files').
pip_fetched=$(grep -hoE "^($PIP_FETCHED)==[^ ]+" "${overrides[@]:1}" "$@" | awk -F== '!seen[$1]++' | xargs || true)
if [ -n "$pip_fetched" ]; then
  wheels=$(mktemp -d)
  trap 'rm -rf "$wheels"' EXIT
  say "fetching $pip_fetched with python3's pip, which knows this machine's wheel sources"
  # shellcheck disable=SC2086  # one argument per pin
  python3 -m pip download -qq --no-deps --dest "$wheels" $pip_fetched
  find_links=(--find-links "$wheels")
fi
requirements=()
for file in "$@"; do requirements+=(-r "$file"); done
say "installing $* with uv${overrides[*]:+, the pins of ${overrides[1]} replacing theirs}"
"$venv/bin/uv" pip install -q --python "$venv/bin/python" "${find_links[@]}" "${overrides[@]}" "${requirements[@]}"
say "installing the coco-unified command (pip install -e . --no-deps, by uv)"
"$venv/bin/uv" pip install -q --python "$venv/bin/python" --no-deps -e .
echo "$key" >>"$stamp"
say "done in $((SECONDS - start)) s"
