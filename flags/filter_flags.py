"""absl flags of tools/filter_unlabel.py: upstream filter_unlabel.py's 23 (same names, types and
defaults; its 0/1 integer switches stay integers) and this port's additions."""

from absl import flags, logging

from flags.main_flags import _Definer

# Accepted for compatibility; they change nothing here (a warning is logged when set).
FILTER_NO_EFFECT_FLAGS = {
    "total_label_replicas": "inferred from the prediction files, as upstream overwrote it",
    "data_type": "only tfrecord exists (upstream's sstable branch was unreachable)",
    "eval_imagenet_p": "unused upstream",
}


def define_filter_flags(flag_values=None) -> None:
    d = _Definer(flag_values if flag_values is not None else flags.FLAGS)
    # ---- upstream filter_unlabel.py
    d.DEFINE_string("input_dir", "", "Raw unlabeled shards (the ones that were predicted).")
    d.DEFINE_string("prediction_dir", "", "Directory of the train-info-* prediction files.")
    d.DEFINE_string("info_dir", "", "Directory of the info-*.txt image counts.")
    d.DEFINE_string("prelim_stats_dir", "", "Where per-shard histograms and totals go.")
    d.DEFINE_string("output_dir", "", "Receives threshold.json, data/, stats/, samples/.")
    d.DEFINE_integer("num_shards", 128, "Total shards.")
    d.DEFINE_integer("only_use_num_shards", -1, "If not -1, merge stats of this many shards.")
    d.DEFINE_integer("shard_id", 0, "Shard this process filters.")
    d.DEFINE_integer("num_image", 1300, "Target images per class after balancing.")
    d.DEFINE_integer("total_replicas", 1, "Filter tasks per shard (= prediction workers).")
    d.DEFINE_integer("total_label_replicas", -1, "No effect: inferred from the prediction files.")
    d.DEFINE_integer("task", -1, "Task index in [0, total_replicas), or -1 for all workers.")
    d.DEFINE_integer("debug", 0, "1: one worker and only this job's stats.")
    d.DEFINE_float("min_threshold", 0.0, "Lowest confidence kept; one of 0.00, 0.01, ..., 1.00.")
    d.DEFINE_float("max_prob", 2, "Highest confidence kept (default: no upper bound).")
    d.DEFINE_integer("num_label_classes", 1000, "Number of classes C.")
    d.DEFINE_integer("upsample", 1, "0: at most one copy per image (no duplication).")
    d.DEFINE_integer("only_get_stats", 0, "1: pass 1 (statistics and thresholds only).")
    d.DEFINE_string("file_prefix", "train", "Prefix of the raw shards (upstream scripts: extra).")
    d.DEFINE_string("data_type", "tfrecord", "Only tfrecord.")
    d.DEFINE_integer("use_top", 1, "1: highest threshold that still gives num_image images; "
                     "0: always min_threshold.")
    d.DEFINE_bool("eval_imagenet_p", False, "No effect (unused upstream).")
    d.DEFINE_bool("use_all", False, "Keep every image above min_threshold once, no balancing.")
    # ---- this port
    d.DEFINE_enum("probabilities_format", "full", ["full", "fp16", "topk"],
                  "Soft labels in the output: full (upstream's C floats), fp16 (C halves as "
                  "bytes) or topk (--top_k classes and probabilities). The training reader "
                  "reads all three; upstream's reads only full.")
    d.DEFINE_integer("top_k", 10, "Classes kept per record with --probabilities_format=topk.")
    d.DEFINE_enum("copies_format", "records", ["records", "feature"],
                  "Upsampled images: records (upstream: the record repeated) or feature (once, "
                  "with an int64 `copies` the training reader repeats).")
    d.DEFINE_integer("seed", 12345, "Seeds the random rounding, output shuffle and samples "
                     "(per shard and task), so reruns write identical files.")
    d.DEFINE_bool("save_samples", True, "Save a few kept images per class under samples/.")
    d.DEFINE_list("shard_ids", None,
                  "Run these shards one after another in this one process (e.g. 3,2,1,0), "
                  "instead of --shard_id: the same files as one process per shard, without a "
                  "TensorFlow start-up each (the loop driver uses it).")
    d.DEFINE_bool("redo_changed", False,
                  "When the output or prelim stats directories hold outputs made with other "
                  "settings (thresholds, formats, seed, other predictions; "
                  "output_dir/filter_settings.json), remove them and filter again. Off: such a "
                  "rerun stops with one line.")


def filter_configs_from_flags(fv) -> list:
    """One FilterConfig per shard of --shard_ids (or the one of --shard_id)."""
    import dataclasses

    from noisy_student_tf.errors import UserInputError

    cfg = filter_config_from_flags(fv)
    if not fv.shard_ids:
        return [cfg]
    try:
        ids = [int(s) for s in fv.shard_ids]
    except ValueError:
        raise UserInputError(f"--shard_ids={','.join(fv.shard_ids)}: integers expected") from None
    return [dataclasses.replace(cfg, shard_id=s) for s in ids]


def filter_config_from_flags(fv):
    """The filter tool's flags -> FilterConfig (the only reader of its flags)."""
    from noisy_student_tf.pseudo.filter_config import FilterConfig

    for name, why in FILTER_NO_EFFECT_FLAGS.items():
        if fv[name].value != fv[name].default:
            logging.warning("--%s has no effect: %s", name, why)
    return FilterConfig(
        input_dir=fv.input_dir, prediction_dir=fv.prediction_dir, info_dir=fv.info_dir,
        prelim_stats_dir=fv.prelim_stats_dir, output_dir=fv.output_dir,
        num_shards=fv.num_shards, only_use_num_shards=fv.only_use_num_shards,
        shard_id=fv.shard_id, num_image=fv.num_image, total_replicas=fv.total_replicas,
        task=fv.task, debug=bool(fv.debug), min_threshold=fv.min_threshold,
        max_prob=fv.max_prob, num_label_classes=fv.num_label_classes,
        upsample=bool(fv.upsample), only_get_stats=bool(fv.only_get_stats),
        file_prefix=fv.file_prefix, use_top=bool(fv.use_top), use_all=fv.use_all,
        probabilities_format=fv.probabilities_format, top_k=fv.top_k,
        copies_format=fv.copies_format, seed=fv.seed, save_samples=fv.save_samples,
        redo_changed=fv.redo_changed)
