#!/usr/bin/env bash
# The whole job on a small generated COCO sample, offline: make the three COCO-shaped zips,
# train Doc2Vec and write the sidecar, load the pool through load_dataset("coco_unified.py")
# prepared and streamed, evaluate the vectors and export the arrays of the hashing literature.
# Usage: bash scripts/sample.sh [OUT_DIR]   (default: build/sample)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh .venv requirements.txt
out=${1:-build/sample}
python=.venv/bin/python
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1

$python -m tools.fakes.sample_coco "$out/coco"
$python -m tools.doc2vec --data-dir "$out/coco" --output "$out/doc2vec.parquet"
$python examples/load_pool.py --data-dir "$out/coco" --doc2vec-path "$out/doc2vec.parquet" --cache-dir "$out/hf-cache"
$python -m tools.evaluate --data-dir "$out/coco" --sidecar "$out/doc2vec.parquet"
$python -m tools.export --data-dir "$out/coco" --doc2vec-path "$out/doc2vec.parquet" \
  --cache-dir "$out/hf-cache" --output-dir "$out/arrays" --num-query 50 --train-sizes 50 100
echo "Done: the arrays, id-map and protocol files are in $out/arrays"
