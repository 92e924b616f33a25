#!/usr/bin/env bash
# README command 2: set up the three test environments (the job's requirements plus
# requirements-test.txt), then check the code style with ruff and run the tests: the whole suite
# under datasets 3.6 (the loading-script path), then the builder, loading, Hub, training-stream,
# hostile-input and network-fault tests under the newest datasets (the CocoUnified class), then the image-feature models
# (torchvision, open_clip) in .venv-vision. Arguments go to every pytest run (e.g. -x, -k NAME).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh .venv requirements.txt requirements-test.txt
bash scripts/setup_env.sh .venv-newest --override requirements-newest.txt requirements.txt requirements-test.txt
# The image-feature models need torchvision, which needs the torch of requirements-vision.txt.
bash scripts/setup_env.sh .venv-vision --override requirements-vision.txt requirements.txt requirements-test.txt \
  requirements-vision.txt
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" # the tests' loopback HTTP mirror
unset PYTHONDONTWRITEBYTECODE # keep compiled bytecode: the tests start many interpreters (see scripts/sample.sh)
step() {
  echo "== $*"
  "$@" # any failure ends the run, pytest's exit status 5 (no test collected) included
}

step .venv/bin/ruff check .
step .venv/bin/ruff format --check .
step .venv/bin/python -m pytest tests "$@"
step .venv-newest/bin/python -m pytest tests/test_builder.py tests/test_feature_sidecars.py tests/test_loading_script.py \
  tests/test_hub_export.py tests/test_train_stream.py tests/test_hostile_input.py tests/test_network_faults.py "$@"
step .venv-vision/bin/python -m pytest tests/test_image_features.py "$@"
echo "== all checks passed"
