"""Ranks and finished shards: what lets several processes share a run, and a killed run resume.

With `torchrun --nproc-per-node N [--nnodes M]`, each process reads its rank from the environment
torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK); rank r takes the shards s with s % world_size == r.
Each finished shard is stored at once as one file in a work folder beside the output (written
aside, then renamed: it is there whole or not at all), under the fingerprint of everything its
numbers depend on. A run started again with the same arguments skips the stored shards; a run
with other inputs discards them. With several nodes, the work folder must be on a file system
they share.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import io
import json
import logging
import os

import numpy as np
import torch.distributed

from coco_unified import CocoError

logger = logging.getLogger(__name__)

# Ranks wait for the slowest at each barrier: on CPUs, a rank's share of a VGG-19 pass takes hours.
RANK_WAIT = datetime.timedelta(hours=48)
_FINGERPRINT_FILE = "fingerprint"
_SHARD_PATTERN = "shard-{:05d}.npz"


@dataclasses.dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> Ranks:
        """torchrun's RANK, WORLD_SIZE and LOCAL_RANK; one process when they are not set."""
        return cls(
            int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
        )

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def merges(self) -> bool:
        """Rank 0 writes the shared files, once every rank has stored its shards."""
        return self.rank == 0

    def start(self) -> None:
        # gloo: only barriers cross ranks, and gloo's work on any machine, with or without GPUs.
        if self.distributed and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("gloo", timeout=RANK_WAIT)

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def stop(self) -> None:
        if self.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def owned(self, num_shards: int) -> list[int]:
        return list(range(self.rank, num_shards, self.world_size))


def fingerprint(inputs: dict) -> str:
    return json.dumps(inputs, sort_keys=True, default=str)


class ShardStore:
    """The finished shards of one pass, as .npz files of named arrays, in `directory`."""

    def __init__(self, directory: str, inputs: dict):
        self.directory = directory
        self._fingerprint = fingerprint(inputs)

    def prepare(self) -> None:
        """Create the folder, discarding the shards of a run with other inputs; one rank does it, before the others."""
        os.makedirs(self.directory, exist_ok=True)
        if self._recorded_fingerprint() != self._fingerprint:
            stale = self._shard_files()
            if stale:
                logger.warning("%s: discarding %d shards of a run with other inputs", self.directory, len(stale))
            for path in stale:
                os.remove(path)
            self._write_atomically(os.path.join(self.directory, _FINGERPRINT_FILE), self._fingerprint.encode())

    def check(self) -> None:
        """Every rank: the folder is the one prepared for these inputs."""
        if self._recorded_fingerprint() != self._fingerprint:
            raise CocoError(
                f"{self.directory}: prepared for other inputs than this rank's; start every rank with the same arguments."
            )

    def _recorded_fingerprint(self) -> str:
        try:
            with open(os.path.join(self.directory, _FINGERPRINT_FILE)) as file:
                return file.read()
        except FileNotFoundError:
            return ""

    def _shard_files(self) -> list[str]:
        return glob.glob(os.path.join(self.directory, "shard-*.npz"))

    @staticmethod
    def _write_atomically(path: str, content: bytes) -> None:
        partial = path + ".partial"
        with open(partial, "wb") as file:
            file.write(content)
        os.replace(partial, path)

    def path(self, shard: int) -> str:
        return os.path.join(self.directory, _SHARD_PATTERN.format(shard))

    def finished(self) -> set[int]:
        return {int(os.path.basename(path)[len("shard-") : -len(".npz")]) for path in self._shard_files()}

    def save(self, shard: int, arrays: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        self._write_atomically(self.path(shard), buffer.getvalue())

    def load(self, shard: int) -> dict[str, np.ndarray]:
        path = self.path(shard)
        try:
            with np.load(path, allow_pickle=False) as stored:
                return {name: stored[name] for name in stored.files}
        except FileNotFoundError:
            raise CocoError(
                f"{path} is missing: shard {shard} was never finished. A rank failed; run the same command again."
            ) from None

    def remove(self) -> None:
        """Delete the stored shards, the fingerprint and the folder (if nothing else is in it)."""
        for path in glob.glob(os.path.join(self.directory, "shard-*")) + glob.glob(
            os.path.join(self.directory, _FINGERPRINT_FILE + "*")
        ):
            os.remove(path)
        if not os.listdir(self.directory):
            os.rmdir(self.directory)
