#!/usr/bin/env bash
# README command 1: the whole job on a small generated COCO sample, offline. Sets up .venv with
# requirements.txt, makes the three COCO-shaped zips, trains Doc2Vec and writes the sidecar, loads
# the pool through load_dataset("coco_unified.py") prepared and streamed, exports the arrays of the
# hashing literature, evaluates the vectors, and ends with where everything is and how to load it.
# Usage: bash scripts/sample.sh [OUT_DIR]   (relative to the checkout; default: build/sample)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh .venv requirements.txt
out=${1:-build/sample}
num_query=50 num_train=100 # protocol splits small enough for the sample (the real ones: 5,000 and 10,000)
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 PATH="$PWD/.venv/bin:$PATH"
# Let Python keep the bytecode it compiles (in .venv and __pycache__/): with PYTHONDONTWRITEBYTECODE
# set, each command below would compile again the ~1,800 modules it imports, 10 s each (measured).
unset PYTHONDONTWRITEBYTECODE
step() {
  echo "== $*" >&2 # stdout is the commands' own (the evaluation report)
  "$@"
}

step coco-unified sample "$out/coco"
step coco-unified doc2vec --data-dir "$out/coco" --output "$out/doc2vec.parquet"
step python examples/load_pool.py --data-dir "$out/coco" --doc2vec-path "$out/doc2vec.parquet" --cache-dir "$out/hf-cache"
step coco-unified export --data-dir "$out/coco" --doc2vec-path "$out/doc2vec.parquet" --cache-dir "$out/hf-cache" \
  --output-dir "$out/arrays" --num-query "$num_query" --train-sizes "$num_train"
mkdir -p "$out/evaluation"
step coco-unified evaluate --data-dir "$out/coco" --doc2vec-path "$out/doc2vec.parquet" --num-query "$num_query" \
  --train-size "$num_train" --output-dir "$out/evaluation" >"$out/evaluation/report.txt"

python - "$out" "$num_query" "$num_train" "$SECONDS" <<'EOF'
import os
import sys

out, num_query, num_train, seconds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
source = f'data_dir="{out}/coco", doc2vec_path="{out}/doc2vec.parquet", cache_dir="{out}/hf-cache"'
with open(f"{out}/evaluation/report.txt") as report:
    evaluation = report.read().rstrip()
print(f"""
Done in {seconds // 60} min {seconds % 60} s. Under {out}/:
  coco/             the three COCO-shaped zips: what data_dir= (--data-dir) points at
  doc2vec.parquet   the Doc2Vec sidecar (doc2vec.model: its model): doc2vec_path= (--doc2vec-path)
  hf-cache/         the datasets cache holding the prepared pool: cache_dir= (--cache-dir)
  arrays/           coco_unified.mat, labels/texts/clean_id .npy, id-map.txt, class-name.txt, protocol/ index files
  evaluation/       the evaluation below (report.txt), its figures (PNG) and numbers (evaluation.json)

Load what was just built: in .venv/bin/python, started in {os.getcwd()}:
    from datasets import load_dataset
    pool = load_dataset("coco_unified.py", {source}, split="train", trust_remote_code=True)
    query = load_dataset("coco_unified.py", "protocol", num_query={num_query}, num_train={num_train}, {source}, split="query", trust_remote_code=True)
The same with datasets >= 4, which runs no loading scripts:
    from coco_unified import CocoUnified
    builder = CocoUnified({source})
    builder.download_and_prepare()
    pool = builder.as_dataset("train")

The Doc2Vec vectors judged by retrieval, beside TF-IDF and chance (coco-unified evaluate):
{evaluation}""")
EOF
