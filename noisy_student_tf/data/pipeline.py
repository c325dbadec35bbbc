"""tf.data input pipelines over upstream-format TFRecords (upstream data_input.py)."""

import dataclasses
from typing import Optional, Sequence

import tensorflow as tf

from noisy_student_tf import io_utils
from noisy_student_tf.data import augment as augment_lib
from noisy_student_tf.data import framing, keys, preprocess, records, service, tfds_source
from noisy_student_tf.errors import UserInputError

# upstream data_input.py: interleave cycle 64, 8 MiB read buffer, shuffle 16384 with cache and
# 1024 without.
CYCLE_LENGTH = 64
READ_BUFFER_BYTES = 8 * 1024 * 1024
CACHED_SHUFFLE_BUFFER = 16384
SHUFFLE_BUFFER = 1024

TRAIN_PATTERNS = ("train*",)
# upstream globs dev* and test*; ImageNet-style dirs name their dev split validation*.
EVAL_PATTERNS = {"dev": ("dev*", "validation*"), "test": ("test*",)}


@dataclasses.dataclass(frozen=True)
class SkipList:
    """Records left out by --skip_corrupt_records (found by data/validate.scan): `bad` maps a
    file to the indices of its bad records, `limits` a file to the number of records readable
    before a read error (CRC / truncation)."""
    bad: tuple = ()  # ((path, (index, ...)), ...)
    limits: tuple = ()  # ((path, count), ...)

    @classmethod
    def from_report(cls, report) -> "SkipList":
        return cls(bad=tuple((p, tuple(i)) for p, i in sorted(report.skip_indices.items())),
                   limits=tuple(sorted(report.read_limits.items())))

    def records_fn(self):
        """path (string tensor) -> that file's records without the bad ones."""
        keys = [f"{p}:{i}" for p, idx in self.bad for i in idx] or [""]
        bad = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, tf.ones([len(keys)], tf.int64)), 0)
        paths = [p for p, _ in self.limits] or [""]
        counts = [n for _, n in self.limits] or [-1]
        limits = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(paths, tf.constant(counts, tf.int64)), -1)

        def records(path):
            ds = tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER_BYTES)
            ds = ds.take(limits.lookup(path)).enumerate()
            keep = lambda i, _: tf.equal(  # noqa: E731
                bad.lookup(tf.strings.join([path, tf.strings.as_string(i)], ":")), 0)
            return ds.filter(keep).map(lambda _, serialized: serialized)

        return records


def resume_seed(seed: int, start_step: int) -> int:
    """The input pipeline's seed for a run starting at `start_step`: `seed` for a fresh run, a
    different one after a resume, so a resumed run does not replay the shuffle order and
    augmentation draws its first steps already used (the iterator itself is not checkpointed:
    its shuffle buffers would be gigabytes at ImageNet scale)."""
    if start_step == 0:
        return seed
    return (seed * 1_000_003 + start_step * 7_919 + 1) % (2 ** 31 - 1)


@dataclasses.dataclass(frozen=True)
class InputConfig:
    image_size: int
    num_classes: int
    small_image: bool = False
    flip: bool = True
    use_cache: bool = True
    num_train_shards: Optional[int] = None
    deterministic: bool = False
    seed: int = 0
    augment: augment_lib.AugmentConfig = dataclasses.field(
        default_factory=augment_lib.AugmentConfig)
    skip: Optional[SkipList] = None  # --skip_corrupt_records
    # --data_service_address: training batches made by tf.data service workers (data/service.py)
    data_service: Optional[str] = None


def _split_dirs(data_dirs: str) -> list:
    """Upstream's `;`-separated directories; a directory whose own name holds `;` is taken whole."""
    if ";" in data_dirs and tf.io.gfile.isdir(data_dirs):
        return [data_dirs]
    return [d for d in data_dirs.split(";") if d]


def list_files(data_dirs: str, patterns: Sequence[str], flag: str = "label_data_dir") -> list:
    """Sorted files matching the first pattern that matches anything, in each `;`-separated dir.

    Returns [] when no pattern matches; raises UserInputError when a directory does not exist.
    """
    if not data_dirs:
        raise UserInputError(f"--{flag} is empty; give the directory of the TFRecord shards")
    files = []
    for d in _split_dirs(data_dirs):
        if not tf.io.gfile.isdir(d):
            raise UserInputError(f"--{flag}: directory {d!r} does not exist")
        for pattern in patterns:
            found = [f for f in io_utils.match_files(d, pattern)
                     if ".tmp" not in f.rsplit("/", 1)[-1]]  # half-written outputs
            if found:
                files.extend(found)
                break
    return sorted(files)


def train_files(data_dirs: str, num_train_shards: Optional[int] = None) -> list:
    files = list_files(data_dirs, TRAIN_PATTERNS)
    if not files:
        raise UserInputError(
            f"--label_data_dir={data_dirs!r} has no training files (train*)"
        )
    if num_train_shards:
        files = files[:num_train_shards]
    return files


def source_paths(files) -> list:
    """The files of an input: a list of upstream-format shards or a tfds split
    (data/tfds_source.TfdsSplit), which every reader below also accepts."""
    return files.paths if isinstance(files, tfds_source.TfdsSplit) else list(files)


def _labeled_parser(files):
    if isinstance(files, tfds_source.TfdsSplit):
        return tfds_source.parse_labeled(files)
    return records.parse_labeled


def count_records(files: Sequence[str]) -> int:
    """Counts records (used when image counts are not given by flag or task) from the frame
    headers alone (data/framing.py), which also stops a file whose framing is bad."""
    return framing.require(files)


def _check_label(label, num_classes: int):
    tf.debugging.assert_greater_equal(
        label, 0, message="record has a label outside [1, num_label_classes] on disk "
        "(missing or 0 image/class/label)")
    tf.debugging.assert_less(
        label, num_classes,
        message=f"record has a label above num_label_classes={num_classes}")
    return label


def _repeat_copies(ds):
    """Repeats each serialized record `copies` times (the filter tool's compact upsampling;
    records without the feature count once). Batched so the per-record cost stays small."""
    def expand(serialized):
        copies = tf.io.parse_example(serialized, {records.COPIES_KEY: tf.io.FixedLenFeature(
            [], tf.int64, default_value=1)})[records.COPIES_KEY]
        tf.debugging.assert_non_negative(copies, message="record has a negative `copies`")
        return tf.repeat(serialized, copies)
    return ds.batch(1024).map(expand, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def _read(files, cfg: InputConfig, is_training: bool, input_context=None,
          expand_copies: bool = False):
    # Every file's frame headers are checked before TensorFlow reads it (a crafted length
    # prefix would crash the reader); the skip list's read limits stop before a bad frame.
    tfds_split = files if isinstance(files, tfds_source.TfdsSplit) else None
    files = source_paths(files)
    framing.require(files, dict(cfg.skip.limits) if cfg.skip is not None else None)
    if tfds_split is not None:  # the split's window of each file (split strings may slice)
        records_of = tfds_source.records(tfds_split)
    elif cfg.skip is not None:
        records_of = cfg.skip.records_fn()
    else:
        records_of = lambda f: tf.data.TFRecordDataset(f, buffer_size=READ_BUFFER_BYTES)  # noqa
    if not is_training:  # file order, record order: results line up with the inputs
        if cfg.skip is not None or tfds_split is not None:
            return tf.data.Dataset.from_tensor_slices(files).flat_map(records_of)
        return tf.data.TFRecordDataset(files, buffer_size=READ_BUFFER_BYTES)
    ds = tf.data.Dataset.from_tensor_slices(files)
    # Under the tf.data service, the dispatcher deals the files out to its workers and the
    # batches to the trainer hosts (data/service.py): no per-host shard, no cache.
    served = bool(cfg.data_service)
    n_hosts = input_context.num_input_pipelines if input_context is not None and not served \
        else 1
    host = input_context.input_pipeline_id if n_hosts > 1 else 0
    shard_records = n_hosts > len(files)  # too few files for one per host: split records
    if n_hosts > 1 and not shard_records:
        ds = ds.shard(n_hosts, host)
    ds = ds.shuffle(len(files), seed=cfg.seed)
    use_cache = cfg.use_cache and not served
    if not use_cache:
        ds = ds.repeat()
    ds = ds.interleave(
        records_of,
        cycle_length=min(CYCLE_LENGTH, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=cfg.deterministic,
    )
    if n_hosts > 1 and shard_records:
        ds = ds.shard(n_hosts, host)
    if use_cache:
        ds = ds.cache()
        if expand_copies:
            ds = _repeat_copies(ds)
        return ds.shuffle(CACHED_SHUFFLE_BUFFER, seed=cfg.seed).repeat()
    if expand_copies:
        ds = _repeat_copies(ds)
    return ds.shuffle(SHUFFLE_BUFFER, seed=cfg.seed)


def labeled_train_dataset(files, cfg: InputConfig, batch_size: int, input_context=None):
    """Infinite batches {'image': uint8 [B, S, S, 3], 'label': int32 [B]} with upstream's
    training crop/flip and, per `cfg.augment`, RandAugment.

    `batch_size` is per input pipeline (per replica under a strategy).
    """
    ds = _read(files, cfg, True, input_context)
    seeds = tf.data.Dataset.random(seed=cfg.seed).batch(2)
    ds = tf.data.Dataset.zip((ds, seeds))
    aug = cfg.augment
    per_image = augment_lib.image_fn(aug, cfg.image_size, cfg.small_image)
    per_batch = augment_lib.batch_fn(aug, cfg.small_image)
    parse_labeled = _labeled_parser(files)

    def parse(serialized, seed):
        ex = parse_labeled(serialized)
        image = preprocess.decode(ex["encoded"])
        if aug.remove_aug:  # upstream remove_aug: eval preprocessing, no crop/flip/RA
            image = preprocess.preprocess_for_eval(image, cfg.image_size, cfg.small_image)
        else:
            image = preprocess.preprocess_for_train(
                image, cfg.image_size, cfg.small_image, cfg.flip, seed, per_image,
                truncate=per_batch is not None)
        return {keys.IMAGE: image, keys.LABEL: _check_label(ex["label"], cfg.num_classes)}

    return _map_batch_augment(ds, parse, cfg, batch_size, per_batch, keys.IMAGE, seed_offset=1,
                              input_context=input_context)


def _map_batch_augment(ds, parse, cfg: InputConfig, batch_size: int, per_batch, key: str,
                       seed_offset: int, input_context=None):
    """map(parse) -> batch -> optional batched RandAugment of `key` -> (the tf.data service)
    -> prefetch. Batched augmentation (each image still draws its own ops) launches far fewer
    kernels than per-image augmentation (benchmarks/input_pipeline.py)."""
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=cfg.deterministic)
    ds = ds.batch(batch_size, drop_remainder=True)
    if per_batch is not None:
        seeds = tf.data.Dataset.random(seed=cfg.seed + seed_offset).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda b, s: {**b, key: per_batch(b[key], s)},
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=cfg.deterministic)
    if cfg.data_service:
        hosts = input_context.num_input_pipelines if input_context is not None else 1
        ds = service.distribute(ds, cfg.data_service, service.job_name(key, cfg.seed, hosts))
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_examples(files, cfg: InputConfig):
    """One pass, in file order, of {'image': uint8 [S, S, 3] (eval crop), 'label': int32}."""
    ds = _read(files, cfg, False)
    parse_labeled = _labeled_parser(files)

    def parse(serialized):
        ex = parse_labeled(serialized)
        image = preprocess.preprocess_for_eval(
            preprocess.decode(ex["encoded"]), cfg.image_size, cfg.small_image
        )
        return {keys.IMAGE: image, keys.LABEL: _check_label(ex["label"], cfg.num_classes)}

    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)


def eval_dataset(files, cfg: InputConfig, batch_size: int):
    """One pass, in file order, keeping the last partial batch (upstream dropped it)."""
    ds = eval_examples(files, cfg)
    return ds.batch(batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE)


UNLABELED_PATTERNS = ("train*", "extra*")  # upstream globs both in each unlabeled dir


def unlabeled_files(data_dirs: str) -> list:
    """`train*` and `extra*` files of every `;`-separated unlabeled directory."""
    files = []
    for d in _split_dirs(data_dirs):
        for pattern in UNLABELED_PATTERNS:
            files.extend(list_files(d, (pattern,), flag="unlabel_data_dir"))
    if not files:
        raise UserInputError(
            f"--unlabel_data_dir={data_dirs!r} has no unlabeled files (train* or extra*)")
    return sorted(set(files))


def unlabeled_train_dataset(files, cfg: InputConfig, batch_size: int, student_augment=None,
                            teacher_size: Optional[int] = None, input_context=None):
    """Infinite batches of unlabeled images for the student (and, optionally, its teacher).

    Yields {'unl_image': uint8 [U, S, S, 3] (student view: crop/flip + `student_augment`,
    upstream's unl_aug), 'unl_label': int32 [U] (the record's 0-based `label`, -1 if absent),
    'unl_probs': float32 [U, C] (soft label in any format of records.py, zeros if absent)} and,
    with `teacher_size`, 'unl_teacher_image': uint8 [U, T, T, 3], the clean eval view of the
    same bytes at the teacher's resolution. Upstream required the dummy fields; here they are
    optional. Records with a `copies` feature are repeated that many times before shuffling.
    """
    aug = student_augment if student_augment is not None else cfg.augment
    scfg = dataclasses.replace(cfg, augment=aug)
    per_image = augment_lib.image_fn(aug, cfg.image_size, cfg.small_image)
    per_batch = augment_lib.batch_fn(aug, cfg.small_image)
    spec = {
        records.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
        "label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        **records.soft_label_spec(cfg.num_classes),
    }
    tfds_split = files if isinstance(files, tfds_source.TfdsSplit) else None
    ds = tf.data.Dataset.zip((_read(files, scfg, True, input_context,
                                    expand_copies=tfds_split is None),
                              tf.data.Dataset.random(seed=cfg.seed + 2).batch(2)))

    def parse_record(serialized):
        """-> (encoded image, 0-based label or -1, soft label [C] or zeros)."""
        if tfds_split is None:
            ex = tf.io.parse_single_example(serialized, spec)
            return (ex[records.IMAGE_KEY], tf.cast(ex["label"], tf.int32),
                    records.dense_probabilities(ex, cfg.num_classes))
        # a tfds split: the image only (no soft labels: an online teacher labels it)
        ex = tfds_source.parse_labeled(tfds_split)(serialized)
        return ex["encoded"], tf.constant(-1, tf.int32), tf.zeros([cfg.num_classes])

    def parse(serialized, seed):
        encoded, label, probs = parse_record(serialized)
        image = preprocess.decode(encoded)
        if aug.remove_aug:
            student = preprocess.preprocess_for_eval(image, cfg.image_size, cfg.small_image)
        else:
            student = preprocess.preprocess_for_train(
                image, cfg.image_size, cfg.small_image, cfg.flip, seed, per_image,
                truncate=per_batch is not None)
        out = {keys.UNL_IMAGE: student, keys.UNL_LABEL: label, keys.UNL_PROBS: probs}
        if teacher_size is not None:
            out[keys.UNL_TEACHER_IMAGE] = preprocess.preprocess_for_eval(
                image, teacher_size, cfg.small_image)
        return out

    return _map_batch_augment(ds, parse, cfg, batch_size, per_batch, keys.UNL_IMAGE, seed_offset=3,
                              input_context=input_context)


def zip_labeled_unlabeled(labeled, unlabeled):
    """One dict per step: B labeled images plus U unlabeled ones (upstream zips the two)."""
    return tf.data.Dataset.zip((labeled, unlabeled)).map(lambda a, b: {**a, **b})
