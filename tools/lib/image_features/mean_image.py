"""CNN-F's mean image: the pool's mean over its resized images, which CNN-F's input subtracts.

No torch here: `coco-unified export` reads the mean image beside a cnnf_fc7 sidecar to write the
reference preparation's avgpix.COCO.py.mat.
"""

import hashlib
import os

import numpy as np
import scipy.io

from coco_unified import CocoError

INPUT_SIZE = 224  # CNN-F's input: the whole image resized to 224 x 224
MEAN_IMAGE_KEY = "meanpix"  # the key of the reference preparation's avgpix.COCO.py.mat
MEAN_IMAGE_SHAPE = (INPUT_SIZE, INPUT_SIZE, 3)  # MatConvNet's height x width x channels
# Beside a sidecar STEM.parquet, `coco-unified image-features --model cnnf` writes STEM.meanpix.npy and .mat.
MEAN_IMAGE_SUFFIX = ".meanpix"


def mean_image_sha256(mean_image: np.ndarray) -> str:
    """What the provenance records: the sha256 of the float64 height x width x 3 array's bytes."""
    return hashlib.sha256(np.ascontiguousarray(mean_image, dtype=np.float64).tobytes()).hexdigest()


def check_mean_image(mean_image: np.ndarray, path: str) -> np.ndarray:
    mean_image = np.asarray(mean_image)
    if mean_image.shape != MEAN_IMAGE_SHAPE or not np.issubdtype(mean_image.dtype, np.number):
        raise CocoError(
            f"{path}: a mean image of shape {mean_image.shape} ({mean_image.dtype}); CNN-F needs "
            f"{MEAN_IMAGE_SHAPE} numbers (height x width x RGB, 0..255). Pass as mean_image=FILE the .npy or .mat "
            "this tool wrote, or none to compute the pool's."
        )
    if not np.isfinite(mean_image).all():
        raise CocoError(f"{path}: the mean image holds NaN or infinite values; compute it again.")
    return mean_image.astype(np.float64)


def read_mean_image(path: str) -> np.ndarray:
    """A mean image from a .npy file, or a .mat file with the variable `meanpix`."""
    try:
        if path.endswith(".mat"):
            contents = scipy.io.loadmat(path)
            if MEAN_IMAGE_KEY not in contents:
                raise CocoError(
                    f"{path}: holds no variable `{MEAN_IMAGE_KEY}`; pass as mean_image=FILE the .mat this tool wrote."
                )
            mean_image = contents[MEAN_IMAGE_KEY]
        else:
            mean_image = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CocoError(f"{path} not found; check mean_image=FILE, or pass none to compute the mean image.") from None
    except (ValueError, OSError, TypeError) as error:
        raise CocoError(f"{path}: not a readable .npy or .mat file ({error}); compute the mean image again.") from None
    return check_mean_image(mean_image, path)


def write_mean_image(mean_image: np.ndarray, stem: str) -> list[str]:
    """STEM.npy and STEM.mat (variable `meanpix`), as the reference preparation's avgpix file."""
    written = []
    for path, write in (
        (stem + ".npy", lambda partial: np.save(partial, mean_image)),
        (stem + ".mat", lambda partial: scipy.io.savemat(partial, {MEAN_IMAGE_KEY: mean_image})),
    ):
        partial = path + ".partial"
        with open(partial, "wb") as file:
            write(file)
        os.replace(partial, path)
        written.append(path)
    return written
