"""`coco-unified evaluate` end to end: on the generated sample with real Doc2Vec, and on exported files."""

import json

import numpy as np
import pytest
import scipy.io

from coco_unified import CocoError
from tools import cli
from tools.lib.evaluation_report import (
    JSON_FILE,
    TEXT,
    EvaluateOptions,
    FeatureSource,
    evaluate,
    format_report,
    write_outputs,
)
from tools.lib.pool import read_pool

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(sample_dir, tmp_path_factory):
    """A Doc2Vec sidecar trained on the sample (50 epochs; 100 inference epochs at alpha 0.1 are
    enough on its template captions: label mAP well above chance)."""
    output = tmp_path_factory.mktemp("doc2vec") / "vectors.parquet"
    arguments = ["doc2vec", "--data-dir", str(sample_dir), "--output", str(output), "--seed", "7", "--workers", "2"]
    assert cli.main([*arguments, "--epochs", "50", "--infer-epochs", "100", "--infer-alpha", "0.1"]) == 0
    return output


@pytest.fixture(scope="module")
def bow(sample_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("bow") / "bow.parquet"
    assert cli.main(["bow", "--data-dir", str(sample_dir), "--output", str(output), "--workers", "1"]) == 0
    return output


def test_a_model_that_does_not_load_fails_the_evaluation(sample_dir, trained, tmp_path):
    broken = tmp_path / "broken.model"
    broken.write_bytes(b"not a pickle at all")
    options = EvaluateOptions(data_dir=str(sample_dir), doc2vec_path=str(trained), model=str(broken))
    with pytest.raises(CocoError, match=rf"{broken}: not a readable gensim 4 Doc2Vec model"):
        evaluate(options)


def assert_png(path):
    content = path.read_bytes()
    assert content.startswith(PNG_SIGNATURE) and len(content) > 10_000


def test_evaluation_finds_meaning_beyond_chance(sample_dir, trained, bow, tmp_path):
    options = EvaluateOptions(
        data_dir=str(sample_dir),
        doc2vec_path=str(trained),
        features=(FeatureSource(TEXT, str(bow)),),
        bits=(16, 32),
        caption_images=200,
        workers=2,
    )
    evaluation = evaluate(options)
    tasks = {task.name: task.result for task in evaluation.tasks}
    assert set(tasks) == {
        "doc2vec",
        "bow",
        "tf-idf",
        "PCA-ITQ 16 bits (doc2vec)",
        "PCA-ITQ 32 bits (doc2vec)",
        "PCA-ITQ 16 bits (bow)",
        "PCA-ITQ 32 bits (bow)",
    }
    assert all(task.direction == "text->text" for task in evaluation.tasks)
    # The sample's labeled images: a fifth query, the rest is the database and trains ITQ.
    labeled = sum(1 for record in read_pool(str(sample_dir)) if record.labels)
    assert evaluation.protocol == {
        "seed": 0,
        "labeled": labeled,
        "queries": labeled // 5,
        "database": labeled - labeled // 5,
        "train": labeled - labeled // 5,
        "relevant": "shares at least one label with the query",
    }
    chance = tasks["doc2vec"].base_rate
    assert tasks["doc2vec"].map_all > chance + 0.1
    assert tasks["tf-idf"].map_all > chance + 0.1 and tasks["bow"].map_all > chance
    halves = evaluation.caption_halves
    assert halves["images"] == 200 and halves["vocabulary"] < 200  # the sample's template words
    assert halves["recall"]["doc2vec"][10] > 3 * halves["recall"]["chance"][10]
    assert halves["recall"]["tf-idf"][10] > halves["recall"]["bow"][10] > halves["recall"]["chance"][10]

    report = format_report(evaluation)
    assert "R@10" in report and "chance (base rate)" in report
    assert report.splitlines()[-1].startswith("How to read this:")
    assert f"only {halves['vocabulary']} distinct words" in report

    written = write_outputs(evaluation, str(tmp_path / "out"))
    assert sorted(path.rsplit("/", 1)[1] for path in written) == [
        "caption_halves.png",
        JSON_FILE,
        "pr_curve_text_to_text.png",
        "precision_at_k_text_to_text.png",
    ]
    for name in ("caption_halves.png", "pr_curve_text_to_text.png", "precision_at_k_text_to_text.png"):
        assert_png(tmp_path / "out" / name)
    stored = json.loads((tmp_path / "out" / JSON_FILE).read_text())
    assert stored["tasks"][0]["name"] == "doc2vec"
    assert stored["tasks"][0]["result"]["map_all"] == pytest.approx(tasks["doc2vec"].map_all)
    # Where the time went, per stage: every ranking has its own.
    assert {"reading labels and captions", "ranking text->text doc2vec", "caption halves"} <= set(stored["stages"])
    assert all(spent["wall"] >= 0 and spent["cpu"] >= 0 for spent in stored["stages"].values())


def correlated_files(directory, rows=900, seed=0):
    """labels.npy, image features (.npy) and text features (.mat) of one latent, plus noise."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((rows, 6)) < 0.25).astype(np.uint8)
    latent = labels @ rng.standard_normal((6, 10))
    image = latent @ rng.standard_normal((10, 48)) + rng.standard_normal((rows, 48))
    text = latent @ rng.standard_normal((10, 24)) + rng.standard_normal((rows, 24))
    np.save(directory / "labels.npy", labels)
    np.save(directory / "image.npy", image.astype(np.float32))
    scipy.io.savemat(directory / "arrays.mat", {"texts": text.astype(np.float32), "other": np.zeros((2, 2))})
    return labels, image, text


def test_exported_files_cross_modal_with_cca_itq(tmp_path, capsys):
    correlated_files(tmp_path)
    arguments = ["evaluate", "--labels", str(tmp_path / "labels.npy"), "--image", str(tmp_path / "image.npy")]
    arguments += ["--text", f"{tmp_path / 'arrays.mat'}:texts", "--bits", "16", "--output-dir", str(tmp_path / "out")]
    assert cli.main(arguments) == 0
    report = capsys.readouterr().out
    stored = json.loads((tmp_path / "out" / JSON_FILE).read_text())
    names = {(task["direction"], task["name"]) for task in stored["tasks"]}
    assert names == {
        ("image->image", "image"),
        ("text->text", "texts"),
        ("image->text", "CCA-ITQ 16 bits (image, texts)"),
        ("text->image", "CCA-ITQ 16 bits (image, texts)"),
    }
    for task in stored["tasks"]:
        assert task["result"]["map_all"] > task["result"]["base_rate"] + 0.1
    assert "image->text" in report and "caption halves" not in report  # no captions without a pool
    for name in ("precision_at_k_image_to_text.png", "pr_curve_text_to_image.png"):
        assert_png(tmp_path / "out" / name)


def test_binary_codes_of_both_modalities(tmp_path, capsys):
    labels, image, text = correlated_files(tmp_path)
    np.save(tmp_path / "image_codes.npy", np.where(image[:, :16] > 0, 1, -1).astype(np.int8))
    np.save(tmp_path / "text_codes.npy", (text[:, :16] > 0).astype(np.uint8))
    arguments = ["evaluate", "--labels", str(tmp_path / "labels.npy"), "--bits", ""]
    arguments += ["--image-codes", str(tmp_path / "image_codes.npy"), "--text-codes", str(tmp_path / "text_codes.npy")]
    assert cli.main([*arguments, "--num-query", "100", "--map-k", "50"]) == 0
    report = capsys.readouterr().out
    assert "mAP@50" in report and "mAP@1000" not in report
    assert [line.split()[0] for line in report.splitlines() if line.split()[0].endswith(("->image", "->text"))] == [
        "image->image",
        "text->text",
        "image->text",
        "text->image",
    ]


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["--image", "{tmp}/short.npy"], "short.npy: has shape (10, 4); expected one row per row of"),
        (["--text", "{tmp}/arrays.mat"], "arrays.mat: holds the variables ['other', 'texts']; name one as"),
        (["--text", "{tmp}/arrays.mat:txt"], "arrays.mat: has no variable 'txt'"),
        (
            ["--image", "{tmp}/image.npy", "--num-query", "900"],
            "cannot hold --num-query 900 queries and a database; pass",
        ),
        (["--image", "{tmp}/image.npy", "--bow", "{tmp}/bow.parquet"], "pass --data-dir (or --base-url) as well"),
    ],
)
def test_mistakes_give_one_line_naming_the_fix(tmp_path, capsys, arguments, expected):
    correlated_files(tmp_path)
    np.save(tmp_path / "short.npy", np.zeros((10, 4)))
    (tmp_path / "bow.parquet").write_bytes(b"")
    arguments = [argument.format(tmp=tmp_path) for argument in arguments]
    assert cli.main(["evaluate", "--labels", str(tmp_path / "labels.npy"), *arguments]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("coco-unified evaluate: error: ") and expected in error


def test_a_missing_sidecar_names_the_command_and_no_doc2vec(sample_dir, tmp_path, capsys):
    missing = tmp_path / "missing.parquet"
    assert cli.main(["evaluate", "--data-dir", str(sample_dir), "--sidecar", str(missing)]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(missing) in error and "coco-unified doc2vec" in error and "--no-doc2vec" in error


def test_image_feature_sidecar_against_doc2vec_with_cca_itq(sample_dir, trained, tmp_path):
    """Image features in the sidecar format of `coco-unified image-features`, made here from the labels."""
    pytest.importorskip("torch")  # the image-features package imports it
    from tools.lib.image_features.sidecar import write_feature_sidecar

    records = read_pool(str(sample_dir))
    labels = np.zeros((len(records), 80), dtype=np.float32)
    for record in records:
        labels[record.index, record.labels] = 1
    rng = np.random.default_rng(0)
    features = labels @ rng.standard_normal((80, 64)) + 0.5 * rng.standard_normal((len(records), 64))
    path = tmp_path / "image.parquet"
    write_feature_sidecar(
        str(path), [record.image_id for record in records], {"cnnf_fc7": features.astype(np.float32)}, {}
    )
    options = EvaluateOptions(
        data_dir=str(sample_dir),
        doc2vec_path=str(trained),
        features=(FeatureSource("image", str(path)),),
        bits=(16,),
        caption_images=20,
        workers=2,
    )
    tasks = {(task.direction, task.name): task.result for task in evaluate(options).tasks}
    assert set(tasks) == {
        ("image->image", "cnnf_fc7"),
        ("text->text", "doc2vec"),
        ("text->text", "tf-idf"),
        ("image->text", "CCA-ITQ 16 bits (cnnf_fc7, doc2vec)"),
        ("text->image", "CCA-ITQ 16 bits (cnnf_fc7, doc2vec)"),
    }
    image = tasks[("image->image", "cnnf_fc7")]
    assert image.map_all > image.base_rate + 0.2  # made from the labels themselves
    cross = tasks[("image->text", "CCA-ITQ 16 bits (cnnf_fc7, doc2vec)")]
    assert cross.map_all > cross.base_rate + 0.1 and cross.pr_curve is not None  # measured: 0.52 against 0.34
