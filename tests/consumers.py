"""How the papers' own code reads its COCO files, re-implemented from their public loaders for the tests.

Each function does what the named loader does with the files (the same library calls, keys and
slicing; docs/FACTS.md §6, §9), so a test holds an export, or a protocol, to what that code would
see. The sizes are parameters because the test sample is smaller than COCO; the papers' values
are the defaults.
"""

import h5py
import numpy as np
import scipy.io


def dsph_split_data(num_rows: int, query_num: int = 5000, train_num: int = 10000, seed: int = 1814):
    """DSPH's dataset/dataloader.py split_data: the row numbers of its query, train and retrieval sets."""
    np.random.seed(seed)  # DSPH seeds numpy's global generator
    random_index = np.random.permutation(range(num_rows))
    return (
        random_index[:query_num],
        random_index[query_num : query_num + train_num],
        random_index[query_num:],
    )


def dsph_load(directory, query_num: int = 5000, train_num: int = 10000, seed: int = 1814) -> dict:
    """DSPH's dataloader(): its three .mat files read as it reads them, split by split_data.

    Returns split -> (image paths, per-image captions, labels), as its BaseDataset receives them.
    """
    captions = scipy.io.loadmat(f"{directory}/caption.mat")["caption"]
    captions = captions[0] if captions.shape[0] == 1 else captions
    indexs = scipy.io.loadmat(f"{directory}/index.mat")["index"]
    labels = scipy.io.loadmat(f"{directory}/label.mat")["category"]
    query, train, retrieval = dsph_split_data(len(indexs), query_num, train_num, seed)
    return {
        name: ([path.strip() for path in indexs[rows]], captions[rows], labels[rows])  # BaseDataset strips paths
        for name, rows in (("query", query), ("train", train), ("retrieval", retrieval))
    }


def ucch_load(path, test_size: int = 5000) -> dict:
    """UCCH's src/cmdataset.py MSCOCO_fea: the whole arrays, the last test_size rows the test (query) partition."""
    data = h5py.File(path, "r")
    data_img, data_txt, labels = data["XAll"][()], data["YAll"][()], data["LAll"][()]
    return {
        "test": (data_img[-test_size::], data_txt[-test_size::], labels[-test_size::]),
        "train": (data_img[0:-test_size], data_txt[0:-test_size], labels[0:-test_size]),
    }


def dchn_load(path, query_size: int = 5000, train_size: int = 10000) -> dict:
    """DCHN's data_loader.py load_img / load_txt for MSCOCO_doc2vec: train and test parts concatenated,
    then split name -> (image features, text features, labels)."""
    data = h5py.File(path, "r")
    data_img = np.concatenate([data["train_imgs_deep"][()], data["test_imgs_deep"][()]], axis=0)
    data_txt = np.concatenate([data["train_text"][()], data["test_text"][()]], axis=0).astype("float32")
    labels = np.concatenate([data["train_imgs_labels"][()], data["test_imgs_labels"][()]], axis=0)
    inx = np.arange(labels.shape[0])
    splits = {
        "train": inx[query_size : query_size + train_size],
        "query": inx[0:query_size],
        "retrieval": inx[query_size::],
    }
    return {name: (data_img[rows], data_txt[rows], labels[rows]) for name, rows in splits.items()}
