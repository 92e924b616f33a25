"""`coco-unified image-features`: CNN-F, VGG-19 and CLIP features of generated COCO samples.

No pretrained weights can be downloaded here: each model's weights are random, written in the
real file format (tools/fakes/image_weights.py), so the real loading code reads them. The
features are checked against an independent reference forward written here (numpy for CNN-F,
torchvision's and open_clip's own modules and transforms for the others) on the same images.
The big networks see the 20-image tiny sample only; runs that repeat (workers, ranks, resume)
use a small CLIP. Tolerances: float32 against float64 numpy, relative 1e-3 of the largest value;
the same library in float32, 1e-4.
"""

import argparse
import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip(
    "torchvision", reason="the image feature stack (torchvision, open_clip) is not installed here"
)
open_clip = pytest.importorskip("open_clip")

import pyarrow.parquet as pq  # noqa: E402
import scipy.io  # noqa: E402
from PIL import Image  # noqa: E402

from coco_unified import CocoError  # noqa: E402
from tools import image_features  # noqa: E402
from tools.fakes.image_weights import (  # noqa: E402
    cnnf_layers,
    simplenn_layers,
    write_open_clip_folder,
    write_simplenn,
    write_vgg19_state_dict,
)
from tools.fakes.sample_coco import generate  # noqa: E402
from tools.lib.image_features.cnnf import build_network, read_simplenn  # noqa: E402
from tools.lib.image_features.extract import ExtractOptions, extract  # noqa: E402
from tools.lib.image_features.models import ModelOptions, load_model  # noqa: E402
from tools.lib.image_features.pipeline import PoolSource  # noqa: E402
from tools.lib.image_features.sidecar import (  # noqa: E402
    FEATURES_METADATA_KEY,
    read_caption_features,
    read_feature_provenance,
    read_feature_sidecar,
    write_feature_sidecar,
)

REPO = Path(__file__).resolve().parents[1]
TINY_SCALE = 1e-5  # 10 images per split, with the greyscale and PNG-behind-.jpg corner cases
SHARDS = 4  # the tiny sample in 3 + 1 shards (train2017, val2017), the 247-image sample in 15 + 1


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_coco")
    generate(out, TINY_SCALE, 0)
    return out


def images_of(data_dir: Path) -> dict[int, dict]:
    """Image id -> file name, bytes and captions, read with zipfile and json (independent of the tool)."""
    with zipfile.ZipFile(data_dir / "annotations_trainval2017.zip") as annotations:
        rows = {}
        for split in ("train2017", "val2017"):
            captions = json.loads(annotations.read(f"annotations/captions_{split}.json"))
            with zipfile.ZipFile(data_dir / f"{split}.zip") as archive:
                for image in captions["images"]:
                    content = archive.read(f"{split}/{image['file_name']}")
                    rows[image["id"]] = {"file_name": image["file_name"], "bytes": content, "captions": []}
            for caption in captions["annotations"]:
                rows[caption["image_id"]]["captions"].append(caption["caption"])
    return dict(sorted(rows.items()))


def rgb(content: bytes) -> Image.Image:
    return Image.open(io.BytesIO(content)).convert("RGB")


@pytest.fixture(scope="session")
def tiny_images(tiny_sample):
    return images_of(tiny_sample)


@pytest.fixture(scope="session")
def cnnf_file(tmp_path_factory):
    layers = cnnf_layers(seed=0)
    path = tmp_path_factory.mktemp("cnnf") / "imagenet-vgg-f.mat"
    write_simplenn(path, layers)
    return path, layers


@pytest.fixture(scope="session")
def clip_folder(tmp_path_factory):
    return write_open_clip_folder(tmp_path_factory.mktemp("clip") / "tiny-clip", seed=0)


def run_extract(model, data_dir, output, num_workers=0, batch_size=8, shards=SHARDS, **model_options):
    options = ExtractOptions(output=str(output), batch_size=batch_size, num_workers=num_workers)
    return extract(model, ModelOptions(**model_options), PoolSource(str(data_dir), num_shards=shards), options)


def command(*args):
    return [sys.executable, "-m", "tools.image_features", *map(str, args)]


def cli(*args, **kwargs):
    return subprocess.run(command(*args), cwd=REPO, capture_output=True, text=True, timeout=300, **kwargs)


# ----------------------------------------------------------------------------- CNN-F: the reader and the network


def reference_simplenn(layers: list[dict], image: np.ndarray, last: str = "fc7") -> np.ndarray:
    """MatConvNet's layer definitions in float64 numpy, height x width x channels, up to `last`'s ReLU."""
    x = image.astype(np.float64)
    seen_last = False
    for layer in layers:
        kind = layer["type"]
        if kind == "conv":
            filters, biases = (np.asarray(array, np.float64) for array in layer["weights"])
            top, bottom, left, right = np.broadcast_to(layer["pad"], 4)
            stride = int(np.ravel(layer["stride"])[0])
            x = np.pad(x, ((top, bottom), (left, right), (0, 0)))
            windows = np.lib.stride_tricks.sliding_window_view(x, filters.shape[:2], axis=(0, 1))[::stride, ::stride]
            x = np.tensordot(windows, filters, axes=([3, 4, 2], [0, 1, 2])) + biases.ravel()
            seen_last = layer["name"] == last
        elif kind == "relu":
            x = np.maximum(x, 0)
            if seen_last:
                return x.ravel()
        elif kind == "lrn":
            depth, kappa, alpha, beta = layer["param"]
            depth, channels = int(depth), x.shape[2]
            window = np.zeros_like(x)
            for channel in range(channels):
                low, high = channel - (depth - 1) // 2, channel + depth // 2
                window[..., channel] = (x[..., max(low, 0) : min(high, channels - 1) + 1] ** 2).sum(axis=2)
            x = x * (kappa + alpha * window) ** -beta
        elif kind == "pool":
            top, bottom, left, right = layer["pad"]
            x = np.pad(x, ((top, bottom), (left, right), (0, 0)), constant_values=-np.inf)
            windows = np.lib.stride_tricks.sliding_window_view(x, layer["pool"], axis=(0, 1))
            x = windows[:: layer["stride"], :: layer["stride"]].max(axis=(3, 4))
    raise AssertionError(f"no {last} in the layers")


# A small simplenn with what CNN-F's reading must get right: asymmetric padding, stride, an LRN
# of even depth (its window leans differently from torch's), a dropout layer, fc7 as a convolution.
SMALL_NET = (
    ("conv", "conv1", {"filters": (5, 5, 3, 8), "stride": 2, "pad": (1, 2, 0, 1)}),
    ("relu", "relu1", {}),
    ("lrn", "norm1", {"param": (4, 1.5, 0.01, 0.75)}),
    ("pool", "pool1", {"pool": (3, 3), "stride": 2, "pad": (0, 1, 0, 1)}),
    ("dropout", "drop1", {}),
    ("conv", "fc7", {"filters": (7, 7, 8, 16), "stride": 1, "pad": 0}),
    ("relu", "relu7", {}),
    ("conv", "fc8", {"filters": (1, 1, 16, 4), "stride": 1, "pad": 0}),
    ("softmax", "prob", {}),
)


def test_simplenn_reader_and_network_follow_matconvnet(tmp_path):
    layers = simplenn_layers(SMALL_NET, seed=1)
    path = tmp_path / "small.mat"
    write_simplenn(path, layers)
    network = build_network(read_simplenn(str(path)))
    image = np.random.default_rng(2).uniform(-100, 100, (31, 31, 3))
    features = network(torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32))).flatten().detach()
    expected = reference_simplenn(layers, image)
    assert features.shape == (16,) and expected.max() > 0
    np.testing.assert_allclose(features.numpy(), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_cnnf_file_of_another_network_is_refused(tmp_path):
    path = tmp_path / "small.mat"
    write_simplenn(path, simplenn_layers(SMALL_NET))
    with pytest.raises(CocoError, match=rf"{path}: convolutions \['conv1', 'fc7'\], CNN-F's are .*imagenet-vgg-f\.mat"):
        load_model("cnnf", ModelOptions(weights=str(path)))


def test_cnnf_layer_of_other_size_is_named(tmp_path):
    layers = cnnf_layers()
    layers[0]["weights"][0] = np.zeros((7, 7, 3, 96), np.float32)  # AlexNet-like conv1
    layers[0]["weights"][1] = np.zeros((1, 96), np.float32)
    path = tmp_path / "other.mat"
    write_simplenn(path, layers[:5])  # conv1..pool1 suffice to be refused
    with pytest.raises(CocoError, match="no layer fc7"):
        load_model("cnnf", ModelOptions(weights=str(path)))
    write_simplenn(path, layers)
    with pytest.raises(CocoError, match=r"layer conv1 has filters \(7, 7, 3, 96\) .* CNN-F's has 11 x 11 x 3 x 64"):
        load_model("cnnf", ModelOptions(weights=str(path)))


def test_damaged_or_foreign_mat_files_are_named(tmp_path, cnnf_file):
    truncated = tmp_path / "truncated.mat"
    truncated.write_bytes(cnnf_file[0].read_bytes()[:100_000])
    with pytest.raises(CocoError, match=rf"{truncated}: not a readable MATLAB \.mat file .*weights=FILE"):
        load_model("cnnf", ModelOptions(weights=str(truncated)))
    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"net": np.zeros(3)})
    with pytest.raises(CocoError, match=rf"{other}: holds no variable `layers` \(found \['net'\]\)"):
        load_model("cnnf", ModelOptions(weights=str(other)))
    with pytest.raises(CocoError, match="CNN-F needs its weights file"):
        load_model("cnnf", ModelOptions())


# ----------------------------------------------------------------------------- CNN-F end to end


@pytest.fixture(scope="session")
def cnnf_run(tiny_sample, cnnf_file, tmp_path_factory):
    output = tmp_path_factory.mktemp("cnnf_run") / "cnnf.parquet"
    result = run_extract("cnnf", tiny_sample, output, num_workers=2, weights=str(cnnf_file[0]))
    return output, result


def resized(content: bytes) -> np.ndarray:
    return np.array(rgb(content).resize((224, 224), Image.Resampling.BILINEAR))


def test_cnnf_mean_image_is_the_pools_mean(cnnf_run, tiny_images):
    output, result = cnnf_run
    expected = np.mean([resized(image["bytes"]) for image in tiny_images.values()], axis=0)
    stem = str(output)[: -len(".parquet")] + ".meanpix"
    assert result.mean_image_files == [stem + ".npy", stem + ".mat"]
    assert np.array_equal(np.load(stem + ".npy"), expected)
    assert np.array_equal(scipy.io.loadmat(stem + ".mat")["meanpix"], expected)


def test_cnnf_features_match_the_reference_forward(cnnf_run, cnnf_file, tiny_images):
    output, _ = cnnf_run
    mean_image = np.load(str(output)[: -len(".parquet")] + ".meanpix.npy")
    vectors, provenance = read_feature_sidecar(str(output), "cnnf_fc7", list(tiny_images), dim=4096)
    assert vectors.shape == (len(tiny_images), 4096) and (vectors >= 0).all() and vectors.max() > 0
    images = list(tiny_images.values())
    for row in special_rows(images):
        image = images[row]
        expected = reference_simplenn(cnnf_file[1], resized(image["bytes"]) - mean_image)
        np.testing.assert_allclose(vectors[row], expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    assert provenance["weights"] == "imagenet-vgg-f.mat" and len(provenance["weights_sha256"]) == 64
    assert provenance["images"] == len(tiny_images) and provenance["skipped_images"] == []
    assert provenance["features"] == {"cnnf_fc7": {"dim": 4096, "store": "float32"}}
    assert {"torch", "scipy", "pillow", "datasets"} <= set(provenance["versions"])


def test_cnnf_with_the_written_mean_image_gives_the_same_file(cnnf_run, cnnf_file, tiny_sample, tmp_path):
    output, _ = cnnf_run
    again = tmp_path / "again.parquet"
    mean_file = str(output)[: -len(".parquet")] + ".meanpix.mat"
    result = run_extract("cnnf", tiny_sample, again, num_workers=0, weights=str(cnnf_file[0]), mean_image=mean_file)
    assert result.mean_image_files == [] and not list(tmp_path.glob("*.meanpix.*"))
    vectors = read_feature_sidecar(str(again), "cnnf_fc7")[0]
    assert np.array_equal(vectors, read_feature_sidecar(str(output), "cnnf_fc7")[0])
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((256, 256, 3)))
    with pytest.raises(CocoError, match=rf"{wrong}: a mean image of shape \(256, 256, 3\) .*mean_image=FILE"):
        run_extract("cnnf", tiny_sample, tmp_path / "x.parquet", weights=str(cnnf_file[0]), mean_image=str(wrong))


# ----------------------------------------------------------------------------- VGG-19


@pytest.fixture(scope="session")
def vgg19_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg19") / "vgg19-random.pth"
    write_vgg19_state_dict(path, seed=0)
    return path


def special_rows(images: list[dict]) -> list[int]:
    """A handful of rows: the first image, a greyscale one and the PNG behind a .jpg name."""
    greyscale = next(row for row, image in enumerate(images) if Image.open(io.BytesIO(image["bytes"])).mode == "L")
    png = next(row for row, image in enumerate(images) if image["bytes"].startswith(b"\x89PNG"))
    return [0, greyscale, png]


def test_vgg19_fc7_matches_torchvision(vgg19_file, tiny_images):
    """The model's worker steps and forward, on a handful of images (the pipeline is the others' tests')."""
    model = load_model("vgg19", ModelOptions(weights=str(vgg19_file)))
    images = [list(tiny_images.values())[row]["bytes"] for row in special_rows(list(tiny_images.values()))]
    pixels = torch.from_numpy(np.stack([model.worker_steps.prepare_image(rgb(image)) for image in images]))
    vectors = model.embed_images(pixels.permute(0, 3, 1, 2)).numpy()
    reference = torchvision.models.vgg19()
    reference.load_state_dict(torch.load(vgg19_file, weights_only=True))
    reference.eval()
    preset = torchvision.models.VGG19_Weights.IMAGENET1K_V1.transforms()
    with torch.no_grad():
        batch = torch.stack([preset(rgb(image)) for image in images])
        expected = reference.classifier[:5](torch.flatten(reference.avgpool(reference.features(batch)), 1)).numpy()
    assert vectors.shape == (3, 4096) and (vectors >= 0).all() and vectors.max() > 0
    np.testing.assert_allclose(vectors, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert model.provenance["layer"].startswith("fc7: classifier[:5]")
    assert model.provenance["weights"] == "vgg19-random.pth"


def test_vgg19_reads_torchvisions_weights_from_the_torch_cache(vgg19_file, monkeypatch, tmp_path):
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    os.link(vgg19_file, checkpoints / "vgg19-dcbb9e9d.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    model = load_model("vgg19", ModelOptions())
    assert model.provenance["weights"] == "torchvision VGG19_Weights.IMAGENET1K_V1"
    with open(vgg19_file, "rb") as file:
        assert model.provenance["weights_sha256"] == hashlib.file_digest(file, "sha256").hexdigest()


def test_vgg19_without_network_or_cache_says_where_to_put_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # A dead proxy on the loopback: the download fails at once, wherever the test runs.
    for variable in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    with pytest.raises(
        CocoError,
        match=rf"could not be read from https://download\.pytorch\.org/.* put it at {cached} or pass it as weights=FILE",
    ):
        load_model("vgg19", ModelOptions())


def test_vgg19_refuses_other_networks_and_damaged_files(vgg19_file, tmp_path):
    resnet = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), resnet)
    with pytest.raises(CocoError, match=rf"{resnet}: not the weights of torchvision's VGG-19 \(.*Missing key"):
        load_model("vgg19", ModelOptions(weights=str(resnet)))
    truncated = tmp_path / "truncated.pth"
    with open(vgg19_file, "rb") as source:
        truncated.write_bytes(source.read(1 << 20))
    with pytest.raises(CocoError, match=rf"{truncated}: not a readable PyTorch state_dict .*weights=FILE"):
        load_model("vgg19", ModelOptions(weights=str(truncated)))


# ----------------------------------------------------------------------------- CLIP


def test_clip_image_and_text_match_open_clip(clip_folder, tiny_sample, tiny_images, tmp_path):
    output = tmp_path / "clip.parquet"
    arch = f"local-dir:{clip_folder}"
    run_extract("clip", tiny_sample, output, num_workers=2, arch=arch, text=True)
    reference, _, preprocess = open_clip.create_model_and_transforms(arch)
    reference.eval()
    tokenizer = open_clip.get_tokenizer(arch)
    images = list(tiny_images.values())
    with torch.no_grad():
        expected_images = reference.encode_image(torch.stack([preprocess(rgb(image["bytes"])) for image in images]))
        expected_captions = [reference.encode_text(tokenizer(image["captions"])).numpy() for image in images]
    vectors, provenance = read_feature_sidecar(str(output), "clip_image", list(tiny_images), dim=32)
    np.testing.assert_allclose(vectors, expected_images.numpy(), rtol=1e-4, atol=1e-4)
    text = read_feature_sidecar(str(output), "clip_text", list(tiny_images), dim=32)[0]
    np.testing.assert_allclose(text, [captions.mean(axis=0) for captions in expected_captions], rtol=1e-4, atol=1e-4)
    image_ids, per_caption = read_caption_features(str(output), "caption_clip_text")
    assert image_ids.tolist() == list(tiny_images)
    for got, expected in zip(per_caption, expected_captions):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert set(provenance["features"]) == {"clip_image", "clip_text", "caption_clip_text"}
    assert provenance["weights"] == "tiny-clip" and "open_clip" in provenance["versions"]


def test_clip_checkpoint_of_another_architecture_is_refused(clip_folder, tmp_path):
    with pytest.raises(CocoError, match=r"open_clip_pytorch_model\.bin: not a checkpoint of open_clip's ViT-B-32"):
        load_model("clip", ModelOptions(arch="ViT-B-32", pretrained=str(clip_folder / "open_clip_pytorch_model.bin")))
    with pytest.raises(
        CocoError, match=r"'no-such-tag' is neither a file nor a pretrained tag of open_clip's ViT-B-32 .*openai"
    ):
        load_model("clip", ModelOptions(arch="ViT-B-32", pretrained="no-such-tag"))
    with pytest.raises(CocoError, match="'ViT-Q-99' is not an open_clip architecture"):
        load_model("clip", ModelOptions(arch="ViT-Q-99", pretrained="openai"))


# ----------------------------------------------------------------------------- workers, ranks, resume


@contextlib.contextmanager
def threads(count: int):
    """torch's intra-op threads: float32 sums split over threads round differently (measured: 1 ulp, 4.8e-7)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def clip_reference(sample_dir, clip_folder, tmp_path_factory):
    """The 247-image sample's CLIP features from one process without workers, on one thread as a torchrun rank."""
    output = tmp_path_factory.mktemp("clip_reference") / "clip.parquet"
    with threads(1):
        run_extract("clip", sample_dir, output, num_workers=0, shards=16, arch=f"local-dir:{clip_folder}")
    return output


def test_file_is_identical_whatever_the_workers(clip_reference, sample_dir, clip_folder, tmp_path):
    output = tmp_path / "clip.parquet"
    with threads(1):
        run_extract("clip", sample_dir, output, num_workers=2, shards=16, arch=f"local-dir:{clip_folder}")
    assert output.read_bytes() == clip_reference.read_bytes()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_ranks_write_the_file_one_process_writes(clip_reference, sample_dir, clip_folder, tmp_path):
    """torchrun gives each rank one thread (OMP_NUM_THREADS=1), as the reference had."""
    output = tmp_path / "clip.parquet"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1"]
    args = ["--model", "clip", "--arch", f"local-dir:{clip_folder}", "--data-dir", sample_dir, "--output", output]
    args += ["--num-shards", 16, "--batch-size", 8, "--num-workers", 1, "--device", "cpu"]
    finished = subprocess.run(
        [*torchrun, "--master-port", str(free_port()), "-m", "tools.image_features", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "features (rank 1)" in finished.stderr
    assert output.read_bytes() == clip_reference.read_bytes()


def test_killed_run_resumes_from_its_finished_shards(cnnf_run, cnnf_file, tiny_sample, tmp_path):
    output = tmp_path / "cnnf.parquet"
    shards = Path(f"{output}.parts") / "features"
    args = ["--model", "cnnf", "--weights", cnnf_file[0], "--data-dir", tiny_sample, "--output", output]
    # As cnnf_run, without workers: the same shards and batches, so the same numbers.
    args += ["--num-shards", SHARDS, "--batch-size", 8, "--num-workers", 0, "--device", "cpu"]
    run = subprocess.Popen(
        command(*args),
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(shards.glob("shard-*.npz")) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # the command and its workers, as a crash would
        run.wait()
    finished = len(list(shards.glob("shard-*.npz")))
    assert run.returncode == -signal.SIGKILL and finished >= 1 and not output.exists()
    resumed = cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "features: resuming" in resumed.stderr and "mean image: resuming" in resumed.stderr
    assert not Path(f"{output}.parts").exists()
    expected = read_feature_sidecar(str(cnnf_run[0]), "cnnf_fc7")[0]
    assert np.array_equal(read_feature_sidecar(str(output), "cnnf_fc7")[0], expected)


# ----------------------------------------------------------------------------- bad images, bad flags, bad sidecars


@pytest.fixture
def damaged_copy(tiny_sample, tiny_images, tmp_path):
    """The tiny sample extracted (train2017/, val2017/, annotations/), one listed image's bytes replaced by text."""
    copy = tmp_path / "coco"
    for archive in ("train2017.zip", "val2017.zip", "annotations_trainval2017.zip"):
        with zipfile.ZipFile(tiny_sample / archive) as reader:
            reader.extractall(copy)
    image_id, image = next(
        (i, image) for i, image in tiny_images.items() if (copy / "train2017" / image["file_name"]).exists()
    )
    (copy / "train2017" / image["file_name"]).write_bytes(b"this is no image")
    return copy, image_id, image["file_name"]


def test_undecodable_image_stops_the_run_naming_it(damaged_copy, clip_folder, tmp_path):
    copy, image_id, file_name = damaged_copy
    failed = cli(
        "--model",
        "clip",
        "--arch",
        f"local-dir:{clip_folder}",
        "--data-dir",
        copy,
        "--output",
        tmp_path / "x.parquet",
        "--num-workers",
        1,
    )
    assert failed.returncode == 1
    assert (
        f"error: {copy}: {file_name} (image id {image_id}) cannot be decoded (UnidentifiedImageError" in failed.stderr
    )
    assert "pass --on-bad-image skip to leave such images out" in failed.stderr


def test_undecodable_image_is_skipped_and_listed_when_asked(damaged_copy, clip_folder, tiny_images, tmp_path):
    copy, image_id, file_name = damaged_copy
    output = tmp_path / "clip.parquet"
    options = ExtractOptions(output=str(output), num_workers=1, on_bad_image="skip")
    model = ModelOptions(arch=f"local-dir:{clip_folder}")
    result = extract("clip", model, PoolSource(str(copy), num_shards=SHARDS), options)
    provenance = read_feature_provenance(str(output))
    assert (
        [entry["image_id"] for entry in result.skipped]
        == [image_id]
        == [e["image_id"] for e in provenance["skipped_images"]]
    )
    assert provenance["skipped_images"][0]["file_name"] == file_name
    image_ids = pq.read_table(output, columns=["image_id"]).column(0).to_pylist()
    assert image_id not in image_ids and len(image_ids) == provenance["images"] == len(tiny_images) - 1
    with pytest.raises(
        CocoError,
        match=rf"no clip_image vector for 1 image .*1 of them could not be decoded .*image {image_id} \({file_name}: ",
    ):
        read_feature_sidecar(str(output), "clip_image", [image_id])


def test_flags_of_another_model_are_refused():
    parser = argparse.ArgumentParser()
    image_features.add_arguments(parser)
    args = parser.parse_args(["--model", "vgg19", "--mean-image", "m.npy", "--output", "x.parquet"])
    with pytest.raises(CocoError, match=r"^--mean-image applies to --model cnnf, not to --model vgg19\.$"):
        image_features.model_options(args)
    args = parser.parse_args(["--model", "clip", "--arch", "local-dir:folder", "--output", "x.parquet"])
    assert image_features.model_options(args).pretrained is None  # the folder holds its checkpoint


def test_float16_store_halves_the_values(tmp_path):
    vectors = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32) * 10
    path = tmp_path / "half.parquet"
    write_feature_sidecar(str(path), [1, 2, 3, 5, 8], {"vgg19_fc7": vectors}, {"model": "test"}, store="float16")
    assert str(pq.read_schema(path).field("vgg19_fc7").type) == "fixed_size_list<element: halffloat>[8]"
    read, _ = read_feature_sidecar(str(path), "vgg19_fc7", [8, 1], dim=8)
    assert np.array_equal(read, vectors[[4, 0]].astype(np.float16).astype(np.float32))
    with pytest.raises(CocoError, match="beyond float16's range; store them as float32"):
        write_feature_sidecar(str(path), [1], {"vgg19_fc7": np.full((1, 8), 1e6, np.float32)}, {}, store="float16")


def test_sidecar_checks_on_read(tmp_path):
    path = tmp_path / "features.parquet"
    write_feature_sidecar(str(path), [3, 4], {"clip_image": np.ones((2, 8), np.float32)}, {"model": "test"})
    with pytest.raises(CocoError, match=rf"{path}: clip_image vectors are 8-d, expected 512-d; .*image-features"):
        read_feature_sidecar(str(path), "clip_image", dim=512)
    with pytest.raises(CocoError, match=r"has no column 'vgg19_fc7'; its vector columns are \['clip_image'\]"):
        read_feature_sidecar(str(path), "vgg19_fc7")
    with pytest.raises(CocoError, match=r"no clip_image vector for 1 image of the pool \(e\.g\. ids \[5\]\)"):
        read_feature_sidecar(str(path), "clip_image", [3, 5])
    metadata = json.loads(pq.read_schema(path).metadata[FEATURES_METADATA_KEY])
    assert metadata["features"] == {"clip_image": {"dim": 8, "store": "float32"}} and metadata["images"] == 2
    with pytest.raises(CocoError, match="NaN or infinite"):
        write_feature_sidecar(str(path), [1], {"clip_image": np.full((1, 8), np.nan, np.float32)}, {})
    with pytest.raises(CocoError, match=r"image ids \[7\] appear more than once"):
        write_feature_sidecar(str(path), [7, 7], {"clip_image": np.ones((2, 8), np.float32)}, {})
