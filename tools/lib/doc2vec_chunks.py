"""The finished chunks of an inference run, on disk, so that an interrupted run resumes.

The chunks live in a work directory next to the output with the fingerprint of the run's inputs
(documents, model, settings). A run with another fingerprint cannot use them and discards them.
Each chunk file appears complete or not at all (written aside, then renamed).
"""

import glob
import logging
import os

import numpy as np

from coco_unified import CocoError, number_of

logger = logging.getLogger(__name__)

_FINGERPRINT_FILE = "fingerprint"
_CHUNK_PREFIX = "chunk-"


class ChunkStore:
    def __init__(self, directory: str, fingerprint: str):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        if self._recorded_fingerprint() != fingerprint:
            self._discard_chunks()
            self._write_atomically(_FINGERPRINT_FILE, lambda file: file.write(fingerprint.encode()))

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _chunk_path(self, chunk_id: int) -> str:
        return self._path(f"{_CHUNK_PREFIX}{chunk_id:06d}.npy")

    def _recorded_fingerprint(self) -> str:
        try:
            with open(self._path(_FINGERPRINT_FILE)) as file:
                return file.read()
        except FileNotFoundError:
            return ""

    def _chunk_files(self):
        return glob.glob(self._path(f"{_CHUNK_PREFIX}*.npy"))

    def _discard_chunks(self) -> None:
        stale = self._chunk_files()
        if stale:
            logger.warning(
                "%s: discarding %s of a run with other inputs", self.directory, number_of(len(stale), "chunk")
            )
        for path in stale:
            os.remove(path)

    def _write_atomically(self, name: str, write) -> None:
        partial = self._path(name + ".partial")
        with open(partial, "wb") as file:
            write(file)
        os.replace(partial, self._path(name))

    def finished(self) -> set[int]:
        prefix_length = len(_CHUNK_PREFIX)
        return {int(os.path.basename(path)[prefix_length : -len(".npy")]) for path in self._chunk_files()}

    def save(self, chunk_id: int, vectors: np.ndarray) -> None:
        self._write_atomically(os.path.basename(self._chunk_path(chunk_id)), lambda file: np.save(file, vectors))

    def load(self, chunk_id: int, rows: int, columns: int) -> np.ndarray:
        path = self._chunk_path(chunk_id)
        vectors = np.load(path)
        if vectors.shape != (rows, columns) or vectors.dtype != np.float32:
            raise CocoError(
                f"{path}: holds {vectors.dtype} {vectors.shape}, expected float32 ({rows}, {columns}); delete {self.directory} and run again."
            )
        return vectors

    def remove(self) -> None:
        """Delete the chunks and the fingerprint, and the directory if nothing else is in it."""
        # Also the .partial files that a killed run left behind.
        for path in glob.glob(self._path(f"{_CHUNK_PREFIX}*")) + glob.glob(self._path(f"{_FINGERPRINT_FILE}*")):
            os.remove(path)
        if not os.listdir(self.directory):
            os.rmdir(self.directory)
