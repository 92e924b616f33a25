"""tools/cli.py and the command modules: every entry point's --help, and a user's mistakes as one line.

Real subprocesses (fresh interpreters) of the installed `coco-unified` command (`pip install -e .`),
of `python -m tools.NAME` and of `python tools/NAME.py`, on the generated sample of conftest.py.
"""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from coco_unified import CocoUnified
from tools import cli

REPO = Path(__file__).resolve().parents[1]
COMMAND = Path(sys.executable).with_name("coco-unified")
# Offline, as a user without network would be; loopback requests must not go to a proxy.
ENVIRONMENT = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "NO_PROXY": "127.0.0.1,localhost"}
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) [\w.]+: ")


def run(command, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(part) for part in command], cwd=cwd, env=ENVIRONMENT, capture_output=True, text=True, timeout=600
    )


def coco_unified(*arguments, cwd=REPO) -> subprocess.CompletedProcess:
    if not COMMAND.exists():
        pytest.fail(f"{COMMAND} is missing: install the command with `{sys.executable} -m pip install -e . --no-deps`")
    return run([COMMAND, *arguments], cwd)


def error_line(result: subprocess.CompletedProcess, prog: str, status: int = 1) -> str:
    """The one `PROG: error: ...` line of a failed run, checked to be its only error and no traceback."""
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


# ----------------------------------------------------------------------------- --help


def test_top_level_help_lists_every_command_from_any_folder(tmp_path):
    for result in (coco_unified("--help", cwd=tmp_path), run([sys.executable, "-m", "tools", "--help"])):
        assert result.returncode == 0, result.stderr
        assert all(name in result.stdout for name in cli.COMMANDS)


HELP_FORMS = {
    "coco-unified": lambda name, module, tmp_path: coco_unified(name, "--help"),
    "coco-unified elsewhere": lambda name, module, tmp_path: coco_unified(name, "--help", cwd=tmp_path),
    "python -m": lambda name, module, tmp_path: run([sys.executable, "-m", module, "--help"]),
    "by path": lambda name, module, tmp_path: run(
        [sys.executable, REPO / (module.replace(".", "/") + ".py"), "--help"], cwd=tmp_path
    ),
}


@pytest.mark.parametrize("form", HELP_FORMS)
@pytest.mark.parametrize("name", cli.COMMANDS)
def test_every_command_has_help_in_every_form(name, form, tmp_path):
    module = cli.COMMANDS[name]
    result = HELP_FORMS[form](name, module, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ") and cli.command_summary(module) in result.stdout
    assert "--verbose" in result.stdout


@pytest.mark.parametrize("name", cli.COMMANDS)
def test_every_flag_is_explained(name):
    parser = cli.build_parser(name)
    subparser = parser._subparsers._group_actions[0].choices[name]
    for action in subparser._actions:
        assert action.help and action.help.strip(), f"{name}: {action.option_strings or action.dest} has no help"


# ----------------------------------------------------------------------------- flag words


@pytest.mark.parametrize(
    "message, translated",
    [
        (
            "Missing from data_dir: /x/data_dir/a.zip; fix data_dir.",
            "Missing from --data-dir: /x/data_dir/a.zip; fix --data-dir.",
        ),
        ("pass doc2vec=False to build without it", "pass --no-doc2vec to build without it"),
        ("pass num_query=50, num_train=100 (or smaller)", "pass --num-query 50, --train-sizes 100 (or smaller)"),
        ("train_sizes=[5000, 10000] do not fit", "--train-sizes 5000 10000 do not fit"),
        ("the model, a seed and model= unset", "the model, a seed and --model unset"),
        ("offline: pass `data_dir=` and my_data_dir0", "offline: pass `--data-dir` and my_data_dir0"),
    ],
)
def test_keywords_in_messages_become_flags(message, translated):
    flags = {
        "data_dir": "--data-dir",
        "doc2vec=False": "--no-doc2vec",
        "num_query": "--num-query",
        "num_train": "--train-sizes",
        "train_sizes": "--train-sizes",
        "model": "--model",
        "seed": "--seed",
    }
    assert cli.in_flag_words(message, flags) == translated


def test_config_fields_become_config_kwarg_flags_for_push():
    parser = cli.build_parser("push")
    flags = parser._subparsers._group_actions[0].choices["push"].get_default("command_flags")
    message = "pass num_query=50, num_train=100; or doc2vec=False; num_shards=0 is not allowed"
    assert cli.in_flag_words(message, flags) == (
        "pass --config-kwarg num_query=50, --config-kwarg num_train=100; or --no-doc2vec; "
        "--config-kwarg num_shards=0 is not allowed"
    )


# ----------------------------------------------------------------------------- a user's mistakes


def test_a_data_dir_that_is_not_a_folder_names_the_flag(tmp_path):
    result = coco_unified("protocol", "--data-dir", tmp_path / "nowhere", "--output-dir", tmp_path / "out")
    line = error_line(result, "coco-unified protocol")
    assert "--data-dir" in line and "not a folder" in line and "data_dir=" not in line


def test_protocol_writes_the_named_protocol_and_refuses_a_value_it_does_not_use(sample_dir, tmp_path):
    result = coco_unified(
        "protocol", "--data-dir", sample_dir, "--output-dir", tmp_path / "out", "--protocol", "karpathy"
    )
    assert result.returncode == 0, result.stderr
    written = sorted(path.name for path in (tmp_path / "out").iterdir())
    folds = [f"test_fold_{k}{suffix}.txt" for k in range(5) for suffix in ("", "_image_ids")]
    splits = [f"{split}{suffix}.txt" for split in ("train", "validation", "test") for suffix in ("", "_image_ids")]
    assert written == sorted(folds + splits)
    refused = coco_unified(
        "protocol",
        "--data-dir",
        sample_dir,
        "--output-dir",
        tmp_path / "refused",
        "--protocol",
        "karpathy",
        "--seed",
        "3",
    )
    assert "--seed 3: protocol 'karpathy' does not use it" in error_line(refused, "coco-unified protocol")
    assert not (tmp_path / "refused").exists()


def test_a_data_dir_without_the_zips_names_what_is_missing(tmp_path):
    line = error_line(run([sys.executable, "-m", "tools.doc2vec", "--data-dir", tmp_path]), "python -m tools.doc2vec")
    assert "annotations_trainval2017.zip" in line and "--data-dir" in line


@pytest.mark.parametrize("command", ["export", "push"])
def test_a_missing_sidecar_names_the_doc2vec_command_and_no_doc2vec(command, sample_dir, tmp_path):
    output = ["--output-dir" if command == "export" else "--output", tmp_path / "out"]
    dry_run = ["--dry-run", "--configs", "no_images"] if command == "push" else []
    result = coco_unified(
        command, "--data-dir", sample_dir, "--doc2vec-path", tmp_path / "absent.parquet", *output, *dry_run,
        "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    line = error_line(result, f"coco-unified {command}")
    assert "coco-unified doc2vec" in line and "--no-doc2vec" in line and "--doc2vec-path" in line
    assert "doc2vec=False" not in line and "doc2vec_path" not in line
    assert not (tmp_path / "out").exists()


def test_evaluate_without_a_sidecar_names_the_doc2vec_command(sample_dir, tmp_path):
    result = coco_unified("evaluate", "--data-dir", sample_dir, "--sidecar", tmp_path / "absent.parquet")
    assert "coco-unified doc2vec" in error_line(result, "coco-unified evaluate")


def test_push_dry_run_on_the_sample_writes_a_complete_folder_and_skips_the_sized_protocols(
    sample_dir, sidecar, tmp_path
):
    result = coco_unified(
        "push", "--data-dir", sample_dir, "--doc2vec-path", sidecar, "--output", tmp_path / "hub", "--dry-run",
        "--cache-dir", tmp_path / "cache",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split()
    assert "README.md" in listed and all((tmp_path / "hub" / name).is_file() for name in listed)
    # The sample's 243 labeled images cannot hold 5,000 queries; Karpathy's splits have no such size.
    too_small = [
        name for name, config in CocoUnified.builder_configs.items() if config.protocol not in (None, "karpathy")
    ]
    written = sorted(path.name for path in (tmp_path / "hub" / "data").iterdir())
    assert written == sorted(name for name in CocoUnified.builder_configs if name not in too_small)
    skipped = [line for line in result.stderr.splitlines() if "Skipped" in line]
    assert len(skipped) == len(too_small) == 4
    assert all(
        f"--configs {name}" in line and "--config-kwarg num_query=" in line for name, line in zip(too_small, skipped)
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cache", "hub"]  # no partial folder left


def command_line(command, sample_dir, sidecar, tmp_path) -> list:
    """A command's flags for the sample that work, writing under tmp_path/out."""
    source = ["--data-dir", sample_dir]
    built = [*source, "--doc2vec-path", sidecar, "--cache-dir", tmp_path / "cache"]
    return {
        "export": [*built, "--output-dir", tmp_path / "out"],
        "push": [*built, "--output", tmp_path / "out"],
        "doc2vec": [*source, "--output", tmp_path / "out" / "vectors.parquet"],
    }[command]


@pytest.mark.parametrize(
    "command, flags, named",
    [
        ("export", ["--num-query", "5000", "--train-sizes", "50"], r"cannot hold 5000 queries.*pass --num-query \d+, --train-sizes \d+"),
        ("push", ["--configs", "protocol", "--dry-run"], r"Config protocol: .*pass --config-kwarg num_query=\d+, --config-kwarg num_train=\d+"),
        ("push", ["--config-kwarg", "num_shards=0", "--configs", "no_images", "--dry-run"], r"--config-kwarg num_shards=0: must be a whole number >= 1"),
        ("push", ["--config-kwarg", "doc2vec_pth=x", "--configs", "no_images", "--dry-run"], r"doc2vec_pth= is not a keyword.*did you mean --doc2vec-path"),
        ("push", ["--configs", "no_images"], r"pass --repo-id USER/REPO, or --dry-run"),
        ("doc2vec", ["--model", "m.model", "--epochs", "3"], r"--epochs 3 apply only to training.*\(--model or --jhlau-model\)"),
    ],
    ids=["protocol too big", "protocol config too big", "num_shards=0", "misspelt config kwarg", "no repo", "training flags with a model"],
)  # fmt: skip
def test_values_that_cannot_work_are_refused_with_the_fix(command, flags, named, sample_dir, sidecar, tmp_path):
    result = coco_unified(command, *command_line(command, sample_dir, sidecar, tmp_path), *flags)
    assert re.search(named, error_line(result, f"coco-unified {command}")), result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "arguments, named",
    [
        (["doc2vec", "--workers", "0"], "argument --workers: 0 is not a count: it must be at least 1"),
        (["push", "--output", "out", "--shard-size", "big"], "argument --shard-size: 'big' is not a size"),
        (["sample", "out", "--scale", "9"], "argument --scale: 9.0 is not in (0, 4.0]"),
        (["export", "--output-dir", "out", "--train-sizes", "0"], "argument --train-sizes: 0 is not a count"),
        (["push", "--output", "out", "--configs", "nope"], "argument --configs: invalid choice: 'nope'"),
    ],
)
def test_flag_values_argparse_can_check_are_its_errors(arguments, named, tmp_path):
    result = coco_unified(*arguments, cwd=tmp_path)
    assert named in error_line(result, f"coco-unified {arguments[0]}", status=2)
    assert not (tmp_path / "out").exists()


def test_an_unreachable_mirror_names_the_url_and_how_to_work_offline(tmp_path):
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = coco_unified("protocol", "--base-url", f"http://127.0.0.1:{port}", "--output-dir", tmp_path / "out")
    line = error_line(result, "coco-unified protocol")
    assert f"http://127.0.0.1:{port}/annotations/annotations_trainval2017.zip" in line and "--data-dir" in line


def test_verbose_adds_the_traceback(tmp_path):
    result = coco_unified("protocol", "--data-dir", tmp_path / "nowhere", "--output-dir", tmp_path, "--verbose")
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("coco-unified protocol: error: --data-dir")


# ----------------------------------------------------------------------------- logs and progress


def test_by_path_with_worker_processes_one_log_format_and_each_bar_ends_once(sample_dir, tmp_path):
    # Run by path, worker processes (spawned: they run the module's path guard again) must import the tools.
    output = tmp_path / "vectors.parquet"
    result = run(
        [sys.executable, REPO / "tools" / "doc2vec.py", "--data-dir", sample_dir, "--output", output,
         "--epochs", "2", "--infer-epochs", "5", "--workers", "2", "--chunk-images", "100"],
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert output.is_file()
    frames = [frame for line in result.stderr.splitlines() for frame in line.split("\r") if frame.strip()]
    bars = [frame for frame in frames if "|" in frame and "%" in frame]
    logs = [frame for frame in frames if frame not in bars]
    assert logs and all(LOG_LINE.match(line) for line in logs), logs
    for bar in ("tokenizing", "training", "inference"):
        finished = [frame for frame in bars if frame.startswith(f"{bar}: 100%")]
        assert len(finished) == 1, bars
