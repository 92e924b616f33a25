"""tools/lib/dataset_infos.py: dataset_infos.json is what the builder generates, and a stale copy is told apart."""

import json

import datasets
import pytest

from coco_unified import REAL_COUNTS
from tools.lib.dataset_infos import INFOS_PATH, infos_up_to_date, official_infos, render, write_infos

pytestmark = pytest.mark.skipif(
    int(datasets.__version__.split(".")[0]) >= 4, reason="dataset_infos.json is written with datasets < 4"
)


def test_the_checked_in_file_is_up_to_date():
    assert infos_up_to_date(), f"{INFOS_PATH} is stale: run `coco-unified dataset-infos`"


def test_a_stale_file_is_detected_and_rewritten(tmp_path):
    stale = tmp_path / INFOS_PATH.name
    infos = official_infos()
    infos["default"]["splits"]["train"]["num_examples"] -= 1
    stale.write_text(render(infos))
    assert not infos_up_to_date(stale)
    write_infos(stale)
    assert infos_up_to_date(stale)
    assert json.loads(stale.read_text())["default"]["splits"]["train"]["num_examples"] == REAL_COUNTS.images
