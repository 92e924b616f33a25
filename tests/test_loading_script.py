"""coco_unified.py as a loading script: `load_dataset("coco_unified.py", trust_remote_code=True)`.

Each load runs in a fresh interpreter with fresh module and dataset caches, since `datasets`
copies a script into its module cache only the first time it sees it (docs/FACTS.md §4).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import datasets
import numpy as np
import pytest

import coco_unified

SCRIPTS_SUPPORTED = int(datasets.__version__.split(".")[0]) < 4

LOAD_AND_SUMMARISE = textwrap.dedent(
    """
    import json, logging, sys
    import numpy as np
    from datasets import Image, load_dataset
    script, config, data_dir, streaming = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    dataset = load_dataset(script, config, data_dir=data_dir, split="train", streaming=streaming, trust_remote_code=True)
    if "image" in dataset.column_names:
        dataset = dataset.cast_column("image", Image(decode=False))
    rows = sorted(dataset, key=lambda row: row["index"])
    print(json.dumps({
        "columns": sorted(rows[0]),
        "image_ids": [row["image_id"] for row in rows],
        "doc2vec_sums": [float(np.sum(row["doc2vec"], dtype=np.float64)) for row in rows] if "doc2vec" in rows[0] else None,
        "image_sizes": [len(row["image"]["bytes"]) for row in rows] if "image" in rows[0] else None,
        "loggers": sorted(name for name in logging.root.manager.loggerDict if "coco_unified" in name),
    }))
    """
)


LOAD_WITH_FEATURE_SIDECARS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from datasets import load_dataset
    script, data_dir, sidecar, streaming = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    dataset = load_dataset(
        script, "no_images", data_dir=data_dir, feature_sidecars={"clip_image": sidecar, "vgg19_fc7": sidecar},
        split="train", streaming=streaming, trust_remote_code=True,
    )
    rows = sorted(dataset, key=lambda row: row["index"])
    print(json.dumps({name: [row[name] for row in rows] for name in ("image_id", "clip_image", "vgg19_fc7")}))
    """
)


LOAD_SPLIT_IMAGE_IDS = textwrap.dedent(
    """
    import json, sys
    from datasets import load_dataset
    script, config, data_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    loaded = load_dataset(script, config, data_dir=data_dir, with_images=False, trust_remote_code=True)
    print(json.dumps({split: sorted(dataset["image_id"]) for split, dataset in loaded.items()}))
    """
)


LOAD_WITH_A_TYPO = textwrap.dedent(
    """
    import sys
    from datasets import load_dataset
    load_dataset(sys.argv[1], data_dir=sys.argv[2], doc2vec_pth="vectors.parquet", split="train", trust_remote_code=True)
    """
)


def run_in_fresh_process(code, args, tmp_path):
    env = dict(
        os.environ,
        HF_MODULES_CACHE=str(tmp_path / "modules"),
        HF_DATASETS_CACHE=str(tmp_path / "datasets"),
        HF_HUB_OFFLINE="1",
    )
    command = [sys.executable, "-c", code, *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def load_in_fresh_process(script, config, data_dir, streaming, tmp_path):
    result = run_in_fresh_process(LOAD_AND_SUMMARISE, [script, config, data_dir, "1" if streaming else "0"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


@pytest.fixture
def script_beside_sidecar(tmp_path, oracle):
    """The script as a user or a Hub repo holds it: dataset_infos.json, the default sidecar and the id lists beside it."""
    folder = tmp_path / "repo"
    (folder / "data").mkdir(parents=True)
    repo = os.path.dirname(coco_unified.__file__)
    for name in ("coco_unified.py", "dataset_infos.json", *coco_unified.KARPATHY_ID_LISTS.values()):
        shutil.copy(os.path.join(repo, name), folder / name)
    image_ids = sorted(oracle)
    vectors = np.arange(len(image_ids) * 300, dtype=np.float32).reshape(-1, 300)
    coco_unified.write_doc2vec_sidecar(
        str(folder / coco_unified.DOC2VEC_SIDECAR), image_ids, vectors, {"model": "test"}
    )
    return folder / "coco_unified.py", vectors.sum(axis=1, dtype=np.float64)


@pytest.mark.skipif(not SCRIPTS_SUPPORTED, reason="datasets >= 4 loads no scripts; test_builder.py covers the class")
@pytest.mark.parametrize("streaming", [False, True])
def test_load_dataset_runs_the_script_with_its_default_sidecar(
    streaming, script_beside_sidecar, sample_dir, oracle, tmp_path
):
    script, doc2vec_sums = script_beside_sidecar
    summary, _ = load_in_fresh_process(script, "default", sample_dir, streaming, tmp_path)
    assert summary["image_ids"] == sorted(oracle)
    assert summary["image_sizes"] == [len(oracle[image_id]["image"]) for image_id in sorted(oracle)]
    assert np.allclose(summary["doc2vec_sums"], doc2vec_sums)
    assert summary["loggers"] == ["datasets.coco_unified"]  # no module-cache hash in the name


@pytest.mark.skipif(not SCRIPTS_SUPPORTED, reason="datasets >= 4 loads no scripts")
def test_load_dataset_labeled_no_images(script_beside_sidecar, sample_dir, oracle, tmp_path):
    script, _ = script_beside_sidecar
    summary, _ = load_in_fresh_process(script, "labeled_no_images", sample_dir, False, tmp_path)
    assert summary["image_ids"] == sorted(image_id for image_id, row in oracle.items() if row["labels"])
    assert "image" not in summary["columns"] and "doc2vec" in summary["columns"]


@pytest.mark.skipif(not SCRIPTS_SUPPORTED, reason="datasets >= 4 loads no scripts; test_feature_sidecars.py covers it")
@pytest.mark.parametrize("streaming", [False, True])
def test_load_dataset_joins_feature_sidecars(streaming, script_beside_sidecar, sample_dir, oracle, tmp_path):
    script, _ = script_beside_sidecar
    image_ids = sorted(oracle)
    rng = np.random.default_rng(3)
    matrices = {
        "clip_image": rng.standard_normal((len(image_ids), 4)),
        "vgg19_fc7": rng.standard_normal((len(image_ids), 9)),
    }
    sidecar = tmp_path / "features.parquet"
    coco_unified.write_feature_sidecar(str(sidecar), image_ids, matrices, {"model": "test"}, store="float16")
    args = [script, sample_dir, sidecar, "1" if streaming else "0"]
    result = run_in_fresh_process(LOAD_WITH_FEATURE_SIDECARS, args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["image_id"] == image_ids
    for name, matrix in matrices.items():
        assert np.array_equal(np.asarray(summary[name], np.float32), matrix.astype(np.float16).astype(np.float32))


@pytest.mark.skipif(not SCRIPTS_SUPPORTED, reason="datasets >= 4 loads no scripts; test_builder.py covers the class")
def test_load_dataset_karpathy_reads_the_id_lists_beside_the_script(
    script_beside_sidecar, sample_dir, karpathy_oracle, tmp_path
):
    script, _ = script_beside_sidecar
    result = run_in_fresh_process(LOAD_SPLIT_IMAGE_IDS, [script, "karpathy", sample_dir], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == karpathy_oracle


@pytest.mark.skipif(not SCRIPTS_SUPPORTED, reason="datasets >= 4 loads no scripts; test_builder.py covers the class")
def test_load_dataset_with_a_misspelt_keyword_lists_the_valid_ones(script_beside_sidecar, sample_dir, tmp_path):
    script, _ = script_beside_sidecar
    result = run_in_fresh_process(LOAD_WITH_A_TYPO, [script, sample_dir], tmp_path)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert re.search(
        r"\.ConfigError: doc2vec_pth= is not a keyword of CocoUnified; did you mean doc2vec_path=\? ", last_line
    )
    assert "num_shards" in last_line and "CocoUnifiedConfig(" not in result.stderr


@pytest.mark.skipif(SCRIPTS_SUPPORTED, reason="only datasets >= 4 refuses scripts")
def test_newest_datasets_refuses_the_script_as_documented(tmp_path, sample_dir):
    with pytest.raises(RuntimeError, match="Dataset scripts are no longer supported"):
        datasets.load_dataset(coco_unified.__file__, data_dir=str(sample_dir), cache_dir=str(tmp_path))
