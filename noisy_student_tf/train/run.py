"""main.py's runs as library functions: a training run (with evaluation), an evaluation of a
checkpoint, prediction shards and a SavedModel export. Each takes config objects (never FLAGS),
owns its model_dir lock and turns a failure on bad data into one BadDataError naming the file
and record.
"""

import dataclasses
import os
from typing import Callable, List, Optional, Tuple

import tensorflow as tf
from absl import logging

from noisy_student_tf import distribute, io_utils, locks, run_info
from noisy_student_tf.config import ExportConfig, ModelConfig, RunConfig
from noisy_student_tf.data import digits, framing, pipeline, service, tfds_source, validate
from noisy_student_tf.errors import BadDataError, UserInputError, WorkerLost
from noisy_student_tf.train import checkpoints
from noisy_student_tf.train.evaluate import EVAL_RESULTS
from noisy_student_tf.train.loop import Trainer

# (kind, files, num_classes) of a run's inputs, for naming a bad record after a failure.
Inputs = List[Tuple[str, List[str], int]]


def _prepare_model_dir(model_dir: str) -> None:
    """Creates model_dir, checks it is writable, takes its lock and removes what killed runs
    left there: the chief only (the other workers of a cluster never write there)."""
    if not distribute.is_chief():
        return
    try:
        tf.io.gfile.makedirs(model_dir)
        probe = os.path.join(model_dir, f".write-test-{os.getpid()}")
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as e:
        raise UserInputError(f"--model_dir={model_dir!r} is not writable ({e})") from None
    locks.lock_dir(model_dir, f"--model_dir={model_dir!r}")
    checkpoints.clean_leftovers(model_dir)


def resolve_data(cfg: RunConfig, training: bool = True) -> RunConfig:
    """What the flags leave to the data: writes the embedded digits on first use, and counts the
    training records when no count was given (custom data). Returns the completed config."""
    d = cfg.data
    if d.embedded_digits:
        digits.prepare_at(d.label_data_dir)
    if not training and d.num_train_images is None:  # evaluation needs no schedule
        return dataclasses.replace(cfg, data=dataclasses.replace(d, num_train_images=0))
    if d.num_train_images is None:
        files = train_source(cfg)
        if isinstance(files, tfds_source.TfdsSplit):
            count = files.num_examples
        else:
            count = framing.require(files)
            logging.info("Counted %d training images in %d files", count, len(files))
        if count < 1:
            first = pipeline.source_paths(files)[0]
            raise UserInputError(f"--label_data_dir={d.label_data_dir!r}: its training "
                                 f"file(s) hold no records (first: {first})")
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(d, num_train_images=count))
    return cfg


def _tfds_split(cfg: RunConfig, uri: str, split: str, flag: str) -> tfds_source.TfdsSplit:
    d = cfg.data
    source = tfds_source.resolve(uri, split, d.tfds_data_dir, flag)
    if source.num_classes is not None and source.num_classes != cfg.model.num_classes:
        raise UserInputError(f"--{flag}={uri!r}: split {split!r} has {source.num_classes} "
                             f"classes, but the model has {cfg.model.num_classes} "
                             "(--num_label_classes)")
    return source


def train_source(cfg: RunConfig):
    """The training files (upstream-format shards) or tfds split of cfg's labeled data."""
    d = cfg.data
    if tfds_source.is_tfds(d.label_data_dir):
        return _tfds_split(cfg, d.label_data_dir, d.tfds_train_split, "label_data_dir")
    return pipeline.train_files(d.label_data_dir, d.num_train_shards)


def _input_config(cfg: RunConfig) -> pipeline.InputConfig:
    d, m, t = cfg.data, cfg.model, cfg.train
    return pipeline.InputConfig(
        image_size=m.image_size, num_classes=m.num_classes, small_image=m.small_image_model,
        flip=d.flip, use_cache=d.use_cache, num_train_shards=d.num_train_shards,
        deterministic=d.deterministic, seed=t.seed, augment=d.augment,
        data_service=d.data_service_address)


def _eval_files(cfg: RunConfig) -> dict:
    d = cfg.data
    if tfds_source.is_tfds(d.label_data_dir):
        out = {}
        dev = d.tfds_dev_split
        if not dev:  # its validation split when the dataset has one
            splits = tfds_source.load_builder(d.label_data_dir[len(tfds_source.PREFIX):],
                                              d.tfds_data_dir, "label_data_dir").info.splits
            dev = "validation" if "validation" in splits else ""
        for subset, split in (("dev", dev), ("test", d.tfds_test_split)):
            if split:
                out[subset] = _tfds_split(cfg, d.label_data_dir, split, f"tfds_{subset}_split")
        return out
    out = {}
    for subset, patterns in pipeline.EVAL_PATTERNS.items():
        files = pipeline.list_files(cfg.data.label_data_dir, patterns)
        if files:
            out[subset] = files
        else:
            logging.warning("No %s files (%s) in %s; skipping that subset", subset,
                            "/".join(patterns), cfg.data.label_data_dir)
    return out


def _eval_datasets(cfg: RunConfig, in_cfg: pipeline.InputConfig, files: dict) -> dict:
    if not files:
        raise UserInputError(f"--label_data_dir={cfg.data.label_data_dir!r} has no dev*, "
                             "validation* or test* files to evaluate")
    return {subset: pipeline.eval_dataset(f, in_cfg, cfg.train.eval_batch_size)
            for subset, f in files.items()}


def skip_bad_records(inputs: Inputs, model_dir: str, step: int) -> pipeline.SkipList:
    """--skip_corrupt_records: checks every input record once, logs each bad one and the count
    (also to TensorBoard as data/skipped_records), and returns the pipeline's SkipList."""
    report = validate.ScanReport()
    for kind, files, num_classes in inputs:
        part = validate.scan(files, kind, num_classes)
        report.records += part.records
        report.bad.extend(part.bad)
    for bad in report.bad:
        logging.warning("skipping %s", bad)
    lost = sum(1 for b in report.bad if not b.unreadable_rest)
    cut = sum(1 for b in report.bad if b.unreadable_rest)
    logging.warning("--skip_corrupt_records: %d of %d records skipped%s", lost, report.records,
                    f", and {cut} file(s) read only up to a corrupt record" if cut else "")
    if model_dir and distribute.is_chief():
        with tf.summary.create_file_writer(model_dir).as_default(step=step):
            tf.summary.scalar("data/skipped_records", lost)
            tf.summary.scalar("data/truncated_files", cut)
    return pipeline.SkipList.from_report(report)


def _bad_data(error: tf.errors.OpError, inputs: Inputs) -> BadDataError:
    """A failure on bad records (CRC, undecodable bytes, labels out of range) as one line: our
    in-graph checks say what is wrong; otherwise the inputs are scanned for the culprit."""
    ours = [ln.strip() for ln in error.message.splitlines()
            if "unlabeled record has" in ln or "unlabeled `label`" in ln]
    if ours:
        return BadDataError(f"bad input data: {ours[0].split('Condition')[0].strip()}")
    where = None
    inputs = [i for i in inputs if not isinstance(i[1], tfds_source.TfdsSplit)]
    if inputs:
        logging.warning("the input pipeline failed; checking the input records to name the "
                        "bad one")
        bad = validate.find_first_bad(inputs)
        where = str(bad) if bad else None
    first = (error.message.strip().splitlines() or [type(error).__name__])[0]
    return BadDataError(f"bad input data: {where or first}" + (
        "; rerun with --skip_corrupt_records to leave bad records out" if where else ""))


def _student_inputs(cfg: RunConfig, strategy) -> Tuple[List[str], int]:
    """The unlabeled files and per-replica unlabeled batch of a Noisy Student run."""
    st, t, d = cfg.student, cfg.train, cfg.data
    if tfds_source.is_tfds(st.unlabel_data_dir):
        if st.teacher is None:
            raise UserInputError(f"--unlabel_data_dir={st.unlabel_data_dir!r} holds no teacher "
                                 "predictions: give an online teacher (--teacher_model_name) "
                                 "or prepare_data + predict + filter for offline training")
        unl_files = _tfds_split(cfg, st.unlabel_data_dir, d.tfds_unlabel_split,
                                "unlabel_data_dir")
    else:
        unl_files = pipeline.unlabeled_files(st.unlabel_data_dir)
    paths = pipeline.source_paths(unl_files)
    if not d.skip_corrupt_records and framing.require(paths) == 0:
        raise UserInputError(f"--unlabel_data_dir={st.unlabel_data_dir!r}: its {len(paths)} "
                             f"file(s) hold no records (first: {paths[0]})")
    global_unl = st.unlabeled_batch_size(t.train_batch_size, t.label_data_sample_prob)
    replicas = strategy.num_replicas_in_sync
    if global_unl % replicas:
        raise UserInputError(
            f"the unlabeled batch ceil(train_batch_size * label_data_sample_prob * "
            f"unlabel_ratio) = {global_unl} is not divisible by the {replicas} replicas")
    if st.teacher is None and not isinstance(unl_files, tfds_source.TfdsSplit):
        validate.check_offline_targets(unl_files, st.teacher_softmax_temp is not None,
                                       st.teacher_softmax_temp)
    logging.info("Noisy Student: %d labeled + %d unlabeled images per step, %s teacher",
                 t.train_batch_size, global_unl,
                 "online" if st.teacher else "offline (stored predictions)")
    return unl_files, global_unl // replicas


def train_and_evaluate(cfg: RunConfig, strategy, evaluate: bool = True,
                       flag_values: Optional[dict] = None,
                       stop_requested: Optional[Callable[[], bool]] = None) -> dict:
    """Trains cfg's model in cfg.train.model_dir (resuming from its newest checkpoint) and,
    with `evaluate`, evaluates every steps_per_eval steps and at the end. Returns the last
    {subset: results} ({} without evaluation). `flag_values` goes to FLAGS.json.

    Raises Preempted when stop_requested() turns true (after a checkpoint), UserInputError or
    BadDataError on bad input."""
    cfg = resolve_data(cfg, training=True)
    d, m, t, st = cfg.data, cfg.model, cfg.train, cfg.student
    _prepare_model_dir(t.model_dir)
    logging.info("Config: %s", cfg)
    in_cfg = _input_config(cfg)
    if d.data_service_address:
        service.check_reachable(d.data_service_address)
        logging.info("Training input made by the tf.data service at %s", d.data_service_address)
    trainer = Trainer(cfg, strategy)
    eval_files = _eval_files(cfg) if evaluate else {}
    # Restore (or check there is nothing to restore) before writing anything, so a run that
    # cannot resume stops with its files as they were.
    trainer.resume()
    if distribute.is_chief():
        io_utils.write_json_atomic(os.path.join(t.model_dir, "FLAGS.json"), flag_values or {})
        io_utils.write_json_atomic(os.path.join(t.model_dir, "run_config.json"),
                                   dataclasses.asdict(cfg))
    files = train_source(cfg)
    paths = pipeline.source_paths(files)
    if not d.skip_corrupt_records and framing.require(paths) == 0:
        raise UserInputError(f"--label_data_dir={d.label_data_dir!r}: its {len(paths)} "
                             f"training file(s) hold no records (first: {paths[0]})")
    replicas = strategy.num_replicas_in_sync
    if t.train_batch_size % replicas:
        raise UserInputError(f"--train_batch_size={t.train_batch_size} is not divisible by the "
                             f"{replicas} replicas")
    per_replica_batch = t.train_batch_size // replicas
    inputs: Inputs = [("labeled", files, m.num_classes)]
    unl_files, per_replica_unl = None, 0
    if st.enabled:
        unl_files, per_replica_unl = _student_inputs(cfg, strategy)
        inputs.append(("unlabeled", unl_files, m.num_classes))
    inputs += [("labeled", f, m.num_classes) for f in eval_files.values()]
    if d.skip_corrupt_records:
        in_cfg = dataclasses.replace(in_cfg, skip=skip_bad_records(inputs, t.model_dir,
                                                                   trainer.global_step))

    def dataset_fn(ctx):
        # A resumed run draws a fresh shuffle order and augmentation stream.
        run_cfg = dataclasses.replace(in_cfg, seed=pipeline.resume_seed(t.seed,
                                                                         trainer.global_step))
        if trainer.global_step:
            logging.info("Resuming at step %d: input pipeline seed %d", trainer.global_step,
                         run_cfg.seed)
        labeled = pipeline.labeled_train_dataset(files, run_cfg, per_replica_batch, ctx)
        if not st.enabled:
            return labeled
        unlabeled = pipeline.unlabeled_train_dataset(
            unl_files, run_cfg, per_replica_unl, st.unl_augment,
            teacher_size=st.teacher.image_size if st.teacher else None, input_context=ctx)
        return pipeline.zip_labeled_unlabeled(labeled, unlabeled)

    results = {}
    try:
        eval_fn = None
        if evaluate:
            datasets = _eval_datasets(cfg, in_cfg, eval_files)
            eval_fn = lambda step: results.update(trainer.evaluate(datasets))  # noqa: E731
        trainer.train(dataset_fn, eval_fn, stop_requested=stop_requested)
        if evaluate and not results:  # finished earlier: report anyway
            results = trainer.evaluate(datasets)
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
        raise _bad_data(e, inputs) from None
    except _PEER_ERRORS as e:
        if not distribute.is_multi_worker(strategy):
            raise
        raise _worker_lost(e, t.model_dir) from None
    return results


# What a collective op raises when a peer worker dies (connection reset: Unavailable) or stops
# answering (Aborted / DeadlineExceeded, with a collective timeout).
_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError,
                tf.errors.DeadlineExceededError, tf.errors.CancelledError)


def _worker_lost(error: tf.errors.OpError, model_dir: str) -> WorkerLost:
    first = (error.message.strip().splitlines() or [type(error).__name__])[0]
    last = checkpoints.latest(model_dir) if model_dir else None
    where = f"the last checkpoint, {os.path.basename(last)}" if last else "the start (no " \
        "checkpoint was written yet)"
    return WorkerLost(f"another worker of the cluster stopped or is unreachable ({first[:160]}); "
                      f"restart every worker with the same command to resume from {where}")


def evaluate_checkpoint(cfg: RunConfig, strategy) -> dict:
    """Top-1/top-5 of the newest checkpoint in cfg.train.model_dir (EMA weights) on its dev and
    test files; writes eval_results.json."""
    cfg = resolve_data(cfg, training=False)
    _prepare_model_dir(cfg.train.model_dir)
    in_cfg = _input_config(cfg)
    trainer = Trainer(cfg, strategy)
    eval_files = _eval_files(cfg)
    inputs: Inputs = [("labeled", f, cfg.model.num_classes) for f in eval_files.values()]
    if cfg.data.skip_corrupt_records:
        in_cfg = dataclasses.replace(in_cfg, skip=skip_bad_records(
            inputs, cfg.train.model_dir, trainer.global_step))
    trainer.restore(require=True)
    try:
        return trainer.evaluate(_eval_datasets(cfg, in_cfg, eval_files))
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
        raise _bad_data(e, inputs) from None


def _robustness_model(model_cfg: ModelConfig, mean, std, path: str, flag: str):
    """(predict: uint8 images -> logits, checkpoint path) of a model_dir's EMA weights."""
    from noisy_student_tf import teacher as teacher_lib

    model = teacher_lib.load_model(model_cfg, path, flag=flag)
    wrapped = teacher_lib.Teacher(model, mean, std)
    return tf.function(wrapped), teacher_lib.resolve_checkpoint(path, flag)


def evaluate_robustness(cfg: RunConfig, rcfg) -> Tuple[str, list]:
    """--mode=eval_robustness: the newest checkpoint of cfg.train.model_dir (EMA weights, its own
    architecture and normalisation) on corrupted and perturbed copies of the `rcfg.subset`
    images; robustness.json, robustness.png and TensorBoard scalars in model_dir. Returns the
    printed table and the written paths."""
    from noisy_student_tf.robustness import evaluate as rob

    cfg = resolve_data(cfg, training=False)
    model_dir = cfg.train.model_dir
    _prepare_model_dir(model_dir)
    files = _eval_files(cfg)
    if rcfg.subset not in files:
        raise UserInputError(f"--robustness_subset={rcfg.subset}: --label_data_dir="
                             f"{cfg.data.label_data_dir!r} has no {rcfg.subset} images")
    in_cfg = _input_config(cfg)
    paths = pipeline.source_paths(files[rcfg.subset])
    count = framing.require(paths)
    if isinstance(files[rcfg.subset], tfds_source.TfdsSplit):
        count = files[rcfg.subset].num_examples
    n = min(count, rcfg.max_images) if rcfg.max_images else count
    if n == 0:
        raise UserInputError(f"--robustness_subset={rcfg.subset}: no images to evaluate")
    examples = pipeline.eval_examples(files[rcfg.subset], in_cfg).take(n).map(
        lambda ex: (ex["image"], ex["label"]))
    size = cfg.model.image_size
    if n * size * size * 3 <= rob.CACHE_BYTES:
        examples = examples.cache()
    settings = rcfg.settings(cfg.data.label_data_dir, size)
    predict, ckpt = _robustness_model(cfg.model, cfg.data.mean_rgb, cfg.data.stddev_rgb,
                                      model_dir, "model_dir")
    logging.info("Robustness of %s on %d %s images", ckpt, n, rcfg.subset)
    result = rob.evaluate_model(predict, examples, n, rcfg, os.path.basename(model_dir))
    result.update(settings=settings, checkpoint=ckpt)
    if rcfg.tfds_sets:
        from noisy_student_tf.robustness import tfds_sets

        result["tfds"] = tfds_sets.evaluate(
            rcfg.tfds_sets, cfg.data.tfds_data_dir, in_cfg, predict, cfg.model.num_classes,
            rcfg.corruptions, rcfg.severities, rcfg.max_images, rcfg.batch_size)
    compared, reference_results = {}, {}
    for ref in rcfg.references:
        info = run_info.read(ref)
        if info is None:
            raise UserInputError(f"--robustness_reference={ref!r} has no run_config.json "
                                 "(a model_dir of main.py)")
        if info.model.num_classes != cfg.model.num_classes:
            raise UserInputError(f"--robustness_reference={ref!r} has {info.model.num_classes} "
                                 f"classes, the evaluated model {cfg.model.num_classes}")
        stored = rob.stored_results(ref, settings)
        if stored is None:  # evaluated here (same images, seeds and settings), not written
            model_cfg = dataclasses.replace(info.model, image_size=size)
            ref_predict, _ = _robustness_model(model_cfg, info.mean_rgb or cfg.data.mean_rgb,
                                               info.stddev_rgb or cfg.data.stddev_rgb, ref,
                                               "robustness_reference")
            stored = rob.evaluate_model(ref_predict, examples, n, rcfg, os.path.basename(ref))
        reference_results[ref] = stored
        compared[ref] = rob.compare(result, stored)
    step = int(ckpt.rsplit("-", 1)[-1]) if ckpt.rsplit("-", 1)[-1].isdigit() else 0
    written = rob.write_outputs(model_dir, result, compared, reference_results, step)
    return rob.format_table(result, model_dir, compared), written


def format_results(results: dict, model_dir: str) -> str:
    lines = [f"{'subset':<8}{'top-1':>8}{'top-5':>8}{'images':>8}  step (EMA weights, "
             f"{os.path.join(model_dir, EVAL_RESULTS)})"]
    for subset, r in results.items():
        lines.append(f"{subset:<8}{r['top_1_accuracy']:>8.4f}{r['top_5_accuracy']:>8.4f}"
                     f"{r['num_images']:>8d}  {r['global_step']}")
    return "\n".join(lines)


def predict(model_cfg: ModelConfig, pcfg, checkpoint_path: str, strategy,
            cfg: Optional[RunConfig] = None) -> list:
    """--mode=predict: teacher predictions (or reassigned labels) for shards of unlabeled
    records, upstream's files (pseudo/predict.py); returns the output paths. `cfg`: the run's
    config, whose embedded digits are written first when it predicts on them."""
    import json

    if cfg is not None:
        resolve_data(cfg, training=False)
    from noisy_student_tf import teacher
    from noisy_student_tf.pseudo import predict as predict_lib, provenance

    pcfg = dataclasses.replace(pcfg, model_fingerprint=json.dumps(
        provenance.model_fingerprint(checkpoint_path)))
    inputs: Inputs = [("image", [pcfg.input_path(s) for s in pcfg.shard_ids],
                       model_cfg.num_classes)]
    with strategy.scope():
        model = teacher.load_model(model_cfg, checkpoint_path, flag="predict_ckpt_path")
    try:
        return predict_lib.run_prediction(model, pcfg, strategy)
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
        raise _bad_data(e, inputs) from None


def export(model_cfg: ModelConfig, mean_rgb, stddev_rgb, ecfg: ExportConfig,
           task_name: str) -> Tuple[str, str]:
    """--mode=export: the newest checkpoint of ecfg.model_dir (EMA weights unless told) as a
    SavedModel with `serving_default` (encoded image bytes), `serving_images` (uint8) and
    `logits` signatures (interop/saved_model.py). Returns (checkpoint, export path)."""
    from noisy_student_tf import teacher
    from noisy_student_tf.interop import saved_model

    ckpt = (checkpoints.latest(ecfg.model_dir) if tf.io.gfile.isdir(ecfg.model_dir) else None)
    if ckpt is None:
        raise UserInputError(f"--model_dir={ecfg.model_dir!r} has no checkpoint to export")
    model = teacher.load_model(model_cfg, ckpt, flag="model_dir",
                                 use_ema=ecfg.moving_average)
    info = {"model": dataclasses.asdict(model_cfg),
            "data": {"task_name": task_name, "mean_rgb": list(mean_rgb),
                     "stddev_rgb": list(stddev_rgb)},
            "checkpoint": ckpt, "ema_weights": ecfg.moving_average}
    path = saved_model.export_saved_model(
        model, ecfg.export_dir, image_size=model_cfg.image_size,
        small_image=model_cfg.small_image_model, mean_rgb=mean_rgb, stddev_rgb=stddev_rgb,
        top_k=ecfg.top_k, run_config=info)
    return ckpt, path
