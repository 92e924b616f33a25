"""The evaluation of `coco-unified evaluate`: label-based retrieval of every feature set, each
beside its baselines, and caption-half retrieval of the text features.

Label-based retrieval (tools/lib/evaluation.py) uses the protocol split of the labeled images
(coco_unified.sample_protocol: queries, the rest the database, a training set drawn from it):
every feature set retrieves within its modality, and image and text sets of the same kind and
size also across. Baselines beside them: chance (the label-overlap base rate), TF-IDF of the
captions for text, and unsupervised hashing learned on the training set (tools/lib/hashing.py):
CCA-ITQ across each image and text feature pair, or PCA-ITQ of each feature set when only one
modality has real-valued features. Caption halves (tools/lib/retrieval.py) ask whether a text
representation finds an image's other captions.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from multiprocessing.pool import AsyncResult, Pool

import numpy as np
import scipy.sparse
from threadpoolctl import threadpool_limits

from coco_unified import (
    CLASS_NAMES,
    CocoError,
    ImageRecord,
    read_doc2vec_provenance,
    read_doc2vec_sidecar,
    sample_protocol,
)
from tools.lib import evaluation_plots
from tools.lib.bow import bow_matrix
from tools.lib.doc2vec_inference import InferenceSettings, infer_all, inference_processes, worker_ready
from tools.lib.evaluation import (
    DEFAULT_MAP_KS,
    DEFAULT_PRECISION_KS,
    CosineScorer,
    HammingScorer,
    RankingOptions,
    RankingResult,
    Relevance,
    rank,
)
from tools.lib.feature_files import check_rows, read_matrix
from tools.lib.hashing import DEFAULT_BITS, CcaFit, PcaFit
from tools.lib.pool import read_pool
from tools.lib.retrieval import (
    caption_halves,
    caption_halves_documents,
    chance_recall,
    fit_idf,
    halves_recall,
    tfidf_document,
    tfidf_vectors,
)
from tools.lib.text import caption_tokens

logger = logging.getLogger(__name__)

IMAGE, TEXT = "image", "text"
FEATURES, BASELINE = "features", "baseline"
# The protocol of the hashing papers on this pool, shrunk for smaller copies (the sample): at most
# a fifth of the labeled images query, and the hashing baselines train on at most 10,000 of the rest.
MAX_QUERIES, QUERY_SHARE = 5_000, 5
MAX_TRAIN = 10_000
DEFAULT_CAPTION_IMAGES = 1_000
# Integer features with fewer nonzeros than this (BoW: ~1%) are kept sparse: the pool's 2,000-d
# BoW would take 1 GB as dense float32.
SPARSE_DENSITY = 0.1
# Real captions have thousands of distinct words (Flickr8k's 8,092 images: 8,488); the generated
# sample's templates about 160.
SMALL_VOCABULARY = 1_000
JSON_FILE = "evaluation.json"


@dataclasses.dataclass(frozen=True)
class FeatureSource:
    """A feature file to evaluate: `PATH` or `PATH:NAME` (tools/lib/feature_files.py)."""

    modality: str  # IMAGE or TEXT
    source: str
    codes: bool = False  # binary codes (ranked by Hamming distance), not real-valued features


@dataclasses.dataclass(frozen=True)
class EvaluateOptions:
    data_dir: str | None = None
    base_url: str | None = None
    labels: str | None = None  # PATH[:NAME] of a label matrix, instead of the pool's annotations
    doc2vec_path: str | None = None  # the Doc2Vec sidecar; None: no Doc2Vec
    model: str | None = None  # the Doc2Vec model for caption halves (default: the sidecar's)
    features: tuple[FeatureSource, ...] = ()
    seed: int = 0
    num_query: int | None = None  # None: MAX_QUERIES or a fifth of the labeled images
    train_size: int | None = None  # None: MAX_TRAIN or the whole database
    bits: tuple[int, ...] = DEFAULT_BITS
    map_ks: tuple[int, ...] = DEFAULT_MAP_KS
    precision_ks: tuple[int, ...] = DEFAULT_PRECISION_KS
    caption_images: int = DEFAULT_CAPTION_IMAGES
    workers: int = 1


@dataclasses.dataclass
class FeatureSet:
    name: str
    modality: str
    matrix: np.ndarray | scipy.sparse.csr_matrix  # one row per pool index (or label row)
    codes: bool
    provenance: dict


@dataclasses.dataclass
class TaskResult:
    direction: str  # "text->text", "image->text", ...
    name: str
    role: str  # FEATURES or BASELINE
    result: RankingResult


@dataclasses.dataclass
class Evaluation:
    protocol: dict
    tasks: list[TaskResult]
    caption_halves: dict | None
    notes: list[str]
    reading: str = ""
    stages: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)  # stage -> wall, cpu seconds

    def directions(self) -> dict[str, list[TaskResult]]:
        grouped: dict[str, list[TaskResult]] = {}
        for task in self.tasks:
            grouped.setdefault(task.direction, []).append(task)
        return grouped


class _Stages:
    """Wall and CPU seconds of each stage, logged as it ends: where an evaluation's time goes
    (benchmarks/bench_evaluate.py prints them). A stage of the main thread counts the CPU of the
    whole process (its ranking threads, and what runs beside them meanwhile) and of the children
    that ended; a stage run beside the rankings (`beside`) counts its own thread's and that of the
    children that ended meanwhile."""

    BESIDE = " (beside the rankings)"

    def __init__(self):
        self.seconds: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, beside: bool = False):
        own_cpu = time.thread_time if beside else time.process_time
        wall, cpu, children = time.perf_counter(), own_cpu(), _children_cpu_seconds()
        yield
        spent = {"wall": time.perf_counter() - wall, "cpu": own_cpu() - cpu + _children_cpu_seconds() - children}
        name += self.BESIDE if beside else ""
        self.seconds[name] = spent
        logger.info("%s: %.1f s (%.1f s CPU)", name, spent["wall"], spent["cpu"])

    def beside(self, name: str, function: Callable, *arguments):
        """`function(*arguments)`, timed as a stage run beside the main thread's."""
        with self(name, beside=True):
            return function(*arguments)


def _children_cpu_seconds() -> float:
    times = os.times()
    return times.children_user + times.children_system


# ----------------------------------------------------------------------------- inputs


@dataclasses.dataclass
class _Pool:
    labels: np.ndarray  # rows x classes, 0/1
    rows_are: str  # what a row is, for messages
    image_ids: list[int] | None = None
    records: list[ImageRecord] | None = None


def _read_labels(options: EvaluateOptions) -> _Pool:
    if options.labels is not None and options.data_dir is None and options.base_url is None:
        labels, _, _ = read_matrix(options.labels)
        labels = check_rows(labels, len(labels), options.labels, "item")
        return _Pool(labels=(labels != 0).astype(np.uint8), rows_are=f"row of {options.labels}")
    records = read_pool(options.data_dir, options.base_url)
    labels = np.zeros((len(records), len(CLASS_NAMES)), dtype=np.uint8)
    for record in records:
        labels[record.index, record.labels] = 1
    if options.labels is not None:
        given, _, _ = read_matrix(options.labels)
        labels = (check_rows(given, len(records), options.labels, "pool image") != 0).astype(np.uint8)
    return _Pool(labels, "pool image", [record.image_id for record in records], records)


def _feature_sets(options: EvaluateOptions, pool: _Pool) -> list[FeatureSet]:
    sets: list[FeatureSet] = []
    if options.doc2vec_path is not None:
        vectors, provenance = read_doc2vec_sidecar(options.doc2vec_path, pool.image_ids)
        sets.append(FeatureSet("doc2vec", TEXT, vectors, False, provenance))
    for source in options.features:
        matrix, name, provenance = read_matrix(source.source, pool.image_ids)
        check_rows(matrix, len(pool.labels), source.source, pool.rows_are)
        if not source.codes and np.issubdtype(matrix.dtype, np.integer):
            if np.count_nonzero(matrix) < SPARSE_DENSITY * matrix.size:
                matrix = scipy.sparse.csr_matrix(matrix)
        if name in {feature.name for feature in sets}:
            name = source.source  # two files of the same feature: named by their paths
        sets.append(FeatureSet(name, source.modality, matrix, source.codes, provenance))
    if not sets:
        raise CocoError("Nothing to evaluate: no Doc2Vec sidecar and no feature or code files were given.")
    return sets


def _protocol(labels: np.ndarray, options: EvaluateOptions):
    labeled = np.flatnonzero(labels.any(axis=1))
    num_query = options.num_query or min(MAX_QUERIES, len(labeled) // QUERY_SHARE)
    if num_query < 1 or num_query >= len(labeled):
        raise CocoError(
            f"{len(labeled)} labeled images cannot hold num_query={num_query} queries and a database; "
            f"pass num_query={max(1, len(labeled) // QUERY_SHARE)}."
        )
    train_size = options.train_size or min(MAX_TRAIN, len(labeled) - num_query)
    return sample_protocol(labeled, options.seed, num_query, [train_size]), train_size


# ----------------------------------------------------------------------------- tasks


def _directions(sets: Sequence[FeatureSet]):
    """(direction, query set, database set) for within- and cross-modal retrieval."""
    for feature in sets:
        yield f"{feature.modality}->{feature.modality}", feature, feature
    for image in (feature for feature in sets if feature.modality == IMAGE):
        for text in (feature for feature in sets if feature.modality == TEXT):
            if image.codes == text.codes and image.matrix.shape[1] == text.matrix.shape[1]:
                yield f"{IMAGE}->{TEXT}", image, text
                yield f"{TEXT}->{IMAGE}", text, image


def _scorer(query: np.ndarray, database: np.ndarray, codes: bool):
    return HammingScorer(query, database) if codes else CosineScorer(query, database)


def _hashing_baselines(sets: Sequence[FeatureSet], protocol, train: np.ndarray, options: EvaluateOptions, notes):
    """(direction, name, query codes, database codes) of the unsupervised hashing baselines:
    CCA-ITQ across when both modalities have real-valued features, else PCA-ITQ within."""
    real = [feature for feature in sets if not feature.codes]
    images = [feature for feature in real if feature.modality == IMAGE]
    texts = [feature for feature in real if feature.modality == TEXT]
    pairs = [(image, text) for image in images for text in texts]
    if not options.bits:
        return
    for image, text in pairs:
        fit = CcaFit.of(image.matrix[train], text.matrix[train])
        for bits in options.bits:
            name = f"CCA-ITQ {bits} bits ({image.name}, {text.name})"
            try:
                image_hash, text_hash = fit.itq(bits, options.seed)
            except ValueError as error:
                notes.append(f"{name} left out: {error}")
                continue
            image_codes, text_codes = image_hash.codes(image.matrix), text_hash.codes(text.matrix)
            yield f"{IMAGE}->{TEXT}", name, image_codes[protocol.query], text_codes[protocol.database]
            yield f"{TEXT}->{IMAGE}", name, text_codes[protocol.query], image_codes[protocol.database]
    for feature in real if not pairs else []:
        fit = PcaFit.of(feature.matrix[train], max(options.bits))
        for bits in options.bits:
            name = f"PCA-ITQ {bits} bits ({feature.name})"
            try:
                codes = fit.itq(bits, options.seed).codes(feature.matrix)
            except ValueError as error:
                notes.append(f"{name} left out: {error}")
                continue
            yield f"{feature.modality}->{feature.modality}", name, codes[protocol.query], codes[protocol.database]


def evaluate(options: EvaluateOptions) -> Evaluation:
    # One BLAS thread: the ranking runs its own threads (--workers), and the rest is small linear
    # algebra that more BLAS threads only slow down: on 2 busy cores a 300 x 300 eigh took 20x the
    # CPU time with two threads, and ITQ's products 10x (measured).
    with threadpool_limits(1, user_api="blas"):
        return _evaluate(options)


def _evaluate(options: EvaluateOptions) -> Evaluation:
    with contextlib.ExitStack() as stack:
        return _evaluate_with(options, _Doc2VecInference.started(options, stack))


def _evaluate_with(options: EvaluateOptions, inference: _Doc2VecInference | None) -> Evaluation:
    stages = _Stages()
    with stages("reading labels and captions"):
        pool = _read_labels(options)
    if inference is not None:
        inference.check_loaded()  # a model that does not load fails the evaluation now, not at its end
    with stages("reading features"):
        sets = _feature_sets(options, pool)
    protocol, train_size = _protocol(pool.labels, options)
    train = protocol.train[train_size]
    with stages("relevance"):
        relevance = Relevance(pool.labels[protocol.query], pool.labels[protocol.database])
    # Captions (TF-IDF, caption halves) come with a pool and matter beside text features.
    with_captions = pool.records is not None and any(feature.modality == TEXT for feature in sets)
    halves, halves_result = None, None
    if with_captions:
        halves = _CaptionHalves.of(pool.records, inference, options)
    ranking = RankingOptions(map_ks=options.map_ks, precision_ks=options.precision_ks, workers=options.workers)
    notes: list[str] = []
    tasks: list[TaskResult] = []

    def run(direction: str, name: str, role: str, scorer) -> None:
        title = f"{direction} {name}"
        with stages(f"ranking {title}"):
            result = rank(scorer, relevance, dataclasses.replace(ranking, progress=title))
        tasks.append(TaskResult(direction, name, role, result))

    def hashing_baselines() -> list[tuple]:
        return list(_hashing_baselines(sets, protocol, train, options, notes))

    # Work that leaves a core idle runs beside the rankings: the hashing baselines' fits (numpy,
    # one thread) and the caption halves' Doc2Vec inference (a child process). One after the
    # other, they added 11 s to the 70-80 s of the full-scale sample (measured). Python-bound
    # work (TF-IDF's words) stays in this thread: beside the rankings, it held the GIL from
    # their threads and made them 5x slower (measured).
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="beside-rankings") as beside:
        if halves is not None:
            halves_vectors = beside.submit(stages.beside, "caption halves: Doc2Vec inference", halves.doc2vec_vectors)
        baselines = beside.submit(stages.beside, "hashing baselines: training and codes", hashing_baselines)
        for direction, query, database in _directions(sets):
            scorer = _scorer(query.matrix[protocol.query], database.matrix[protocol.database], query.codes)
            run(direction, query.name if query is database else f"{query.name} -> {database.name}", FEATURES, scorer)
        if with_captions:
            with stages("tf-idf vectors"):
                documents = [tfidf_document(record.captions) for record in pool.records]
                tfidf_model = fit_idf(documents)
                tfidf = tfidf_vectors(documents, *tfidf_model)
            run(f"{TEXT}->{TEXT}", "tf-idf", BASELINE, CosineScorer(tfidf[protocol.query], tfidf[protocol.database]))
        for direction, name, query_codes, database_codes in baselines.result():
            run(direction, name, BASELINE, HammingScorer(query_codes, database_codes))
        if halves is not None:
            doc2vec_vectors = halves_vectors.result()
            with stages("caption halves"):
                halves_result = halves.recall(sets, tfidf_model, doc2vec_vectors)
    evaluation = Evaluation(
        protocol={
            "seed": options.seed,
            "labeled": int(pool.labels.any(axis=1).sum()),
            "queries": len(protocol.query),
            "database": len(protocol.database),
            "train": train_size,
            "relevant": "shares at least one label with the query",
        },
        tasks=tasks,
        caption_halves=halves_result,
        notes=notes,
        stages=stages.seconds,
    )
    evaluation.reading = reading_sentence(evaluation)
    return evaluation


# ----------------------------------------------------------------------------- caption halves


@dataclasses.dataclass(frozen=True)
class _CaptionHalves:
    """Caption halves of up to `caption_images` images (tools/lib/retrieval.py): their recall@k
    for Doc2Vec (inferred with the sidecar's model and settings), BoW, TF-IDF and chance."""

    captions: list[Sequence[str]]  # per chosen image
    documents: Callable[[], tuple[list, list]]  # the halves' PTB documents, when first asked for
    doc2vec: _Doc2VecInference | None

    @classmethod
    def of(cls, records: Sequence[ImageRecord], doc2vec: _Doc2VecInference | None, options: EvaluateOptions):
        """None when fewer than two images have two captions."""
        splittable = [record.index for record in records if len(record.captions) >= 2]
        if len(splittable) < 2:
            return None
        rng = np.random.default_rng(options.seed)
        chosen = np.sort(rng.choice(splittable, min(options.caption_images, len(splittable)), replace=False))
        captions = [records[row].captions for row in chosen]
        if doc2vec is None:
            return cls(captions, functools.partial(caption_halves_documents, captions, options.workers), None)
        # The inference process tokenises them, with the nltk it imported while the annotations
        # were read (_Doc2VecInference.started): this process spares the 2.6 s of that import and
        # the second of tokenising (measured).
        return cls(captions, doc2vec.process.apply_async(caption_halves_documents, (captions,)).get, doc2vec)

    def doc2vec_vectors(self) -> np.ndarray | None:
        """The halves' Doc2Vec vectors, first halves then second halves; None without Doc2Vec."""
        if self.doc2vec is None:
            return None
        firsts, seconds = self.documents()
        return self.doc2vec.vectors(firsts + seconds)

    def recall(self, sets: Sequence[FeatureSet], tfidf_model: tuple, doc2vec_vectors: np.ndarray | None) -> dict:
        recall = {}
        if doc2vec_vectors is not None:
            middle = len(self.captions)
            recall["doc2vec"] = halves_recall(doc2vec_vectors[:middle], doc2vec_vectors[middle:])
        bow = next((feature for feature in sets if feature.name == "bow"), None)
        if bow is not None:
            words, counts = bow.provenance["vocabulary"], bow.provenance["counts"]
            firsts, seconds = self.documents()
            recall["bow"] = halves_recall(bow_matrix(firsts, words, counts), bow_matrix(seconds, words, counts))
        tfidf_firsts, tfidf_seconds = (
            [tfidf_document(half) for half in halves] for halves in caption_halves(self.captions)
        )
        recall["tf-idf"] = halves_recall(
            tfidf_vectors(tfidf_firsts, *tfidf_model), tfidf_vectors(tfidf_seconds, *tfidf_model)
        )
        recall["chance"] = chance_recall(len(self.captions))
        return {"images": len(self.captions), "vocabulary": len(tfidf_model[0]), "recall": recall}


@dataclasses.dataclass(frozen=True)
class _Doc2VecInference:
    """The process that infers with the model and settings the Doc2Vec sidecar was built with
    (tools/lib/doc2vec_inference.py)."""

    process: Pool
    loaded: AsyncResult  # the process has loaded the model, or why it could not (check_loaded)

    @classmethod
    def started(cls, options: EvaluateOptions, stack: contextlib.ExitStack) -> _Doc2VecInference | None:
        """None without a Doc2Vec sidecar. The process lives as long as `stack`; started first, it
        imports gensim and loads the model (~5 s of CPU) while the annotations are read."""
        if options.doc2vec_path is None:
            return None
        provenance = read_doc2vec_provenance(options.doc2vec_path)
        try:
            model_path = options.model or provenance["model"]["path"]
            recorded = provenance["inference"]
            settings = InferenceSettings(recorded["epochs"], recorded["alpha"], recorded["min_alpha"], recorded["seed"])
        except KeyError as missing:
            raise CocoError(
                f"{options.doc2vec_path}: its provenance lacks {missing}; it was not written by `coco-unified doc2vec`. "
                "Rebuild it."
            ) from None
        # One process: 2,000 half documents take ~1 s to infer at the default 100 epochs, less
        # than starting a second process costs (measured).
        process = stack.enter_context(inference_processes(model_path, settings, 1))
        loaded = process.apply_async(worker_ready)
        # It tokenises the caption halves too (_CaptionHalves.of): a first caption makes it import
        # nltk now, while this process reads the annotations.
        process.apply_async(caption_tokens, ("a first caption",))
        return cls(process, loaded)

    def check_loaded(self) -> None:
        """Raises the error that kept the process from loading the model (waiting for it to try)."""
        self.loaded.get()

    def vectors(self, documents: Sequence[list[str]]) -> np.ndarray:
        return infer_all(self.process, documents, "caption halves")


# ----------------------------------------------------------------------------- reports


def reading_sentence(evaluation: Evaluation) -> str:
    """One sentence on how to read the report, from its own figures."""
    sentence = (
        "How to read this: a row above chance ranks images that share labels with the query first, and a "
        "hashing row near its features loses little in that many bits"
    )
    halves = evaluation.caption_halves
    if halves and "doc2vec" in halves["recall"]:
        recall = halves["recall"]
        doc2vec, tfidf, chance = recall["doc2vec"][10], recall["tf-idf"][10], recall["chance"][10]
        if halves["vocabulary"] < SMALL_VOCABULARY:
            sentence += (
                f"; with only {halves['vocabulary']:,} distinct words in these captions, TF-IDF's exact word "
                f"matches find an image's other captions (R@10 {tfidf:.2f}) while Doc2Vec has too little to learn "
                f"from ({doc2vec:.2f}, chance {chance:.2f}): judge Doc2Vec on real captions, where the default "
                "reaches at least 0.9x TF-IDF (README)"
            )
        else:
            verdict = "at least 0.9x" if doc2vec >= 0.9 * tfidf else "below 0.9x"
            sentence += (
                f"; on caption halves Doc2Vec's R@10 ({doc2vec:.2f}) is {verdict} TF-IDF's ({tfidf:.2f}, "
                f"chance {chance:.2f}), what the default reaches on real captions"
            )
    return sentence + "."


def _columns(evaluation: Evaluation) -> list[tuple[str, callable]]:
    database = evaluation.protocol["database"]
    columns = [("mAP@all", lambda result: result.map_all)]
    some = evaluation.tasks[0].result if evaluation.tasks else None
    for k in some.map_at if some else ():
        columns.append((f"mAP@{k}", lambda result, k=k: result.map_at[k]))
    for k in (10, 100, 1000):
        if k <= database:
            columns.append((f"P@{k}", lambda result, k=k: result.precision_at.get(k, float("nan"))))
    return columns


def format_report(evaluation: Evaluation) -> str:
    protocol = evaluation.protocol
    lines = [
        f"label-based retrieval: {protocol['queries']:,} queries over {protocol['database']:,} database images "
        f"(seed {protocol['seed']}; relevant: {protocol['relevant']}; hashing baselines trained on "
        f"{protocol['train']:,})"
    ]
    columns = _columns(evaluation)
    width = max([len(task.name) for task in evaluation.tasks] + [20]) + 2
    for direction, tasks in evaluation.directions().items():
        lines.append(f"{direction}".ljust(width) + "".join(f"{title:>10}" for title, _ in columns))
        for task in tasks:
            lines.append(f"  {task.name}".ljust(width) + "".join(f"{value(task.result):10.3f}" for _, value in columns))
        chance = tasks[0].result.base_rate
        lines.append("  chance (base rate)".ljust(width) + "".join(f"{chance:10.3f}" for _ in columns))
    halves = evaluation.caption_halves
    if halves:
        ks = list(halves["recall"]["chance"])
        lines.append(
            f"caption halves: {halves['images']:,} images, the first half of each image's captions retrieves "
            f"the other half (the captions hold {halves['vocabulary']:,} distinct words)"
        )
        lines.append("".ljust(width) + "".join(f"{f'R@{k}':>10}" for k in ks))
        for name, recall in halves["recall"].items():
            lines.append(f"  {name}".ljust(width) + "".join(f"{recall[k]:10.3f}" for k in ks))
    lines += [f"note: {note}" for note in evaluation.notes]
    lines.append(evaluation.reading)
    return "\n".join(lines)


def write_outputs(evaluation: Evaluation, directory: str) -> list[str]:
    """evaluation.json and the figures in `directory`; returns the paths written."""
    os.makedirs(directory, exist_ok=True)
    written = []
    for direction, tasks in evaluation.directions().items():
        base_rate = tasks[0].result.base_rate
        written.append(evaluation_plots.precision_figure(direction, tasks, base_rate, directory))
        pr_path = evaluation_plots.pr_figure(direction, tasks, base_rate, directory)
        if pr_path:
            written.append(pr_path)
    if evaluation.caption_halves:
        halves = evaluation.caption_halves
        written.append(evaluation_plots.caption_halves_figure(halves["recall"], halves["images"], directory))
    path = os.path.join(directory, JSON_FILE)
    with open(path, "w") as file:
        json.dump(dataclasses.asdict(evaluation), file, indent=2)
    written.append(path)
    return written
