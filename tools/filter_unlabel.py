"""Filter and balance teacher predictions into pseudo-labeled TFRecords (upstream's
filter_unlabel.py, same flags and files).

    # pass 1, every shard (any order, in parallel): per-class confidence histograms
    python tools/filter_unlabel.py --only_get_stats=1 --shard_id=S --task=0 --num_shards=N \
        --input_dir=UNL --prediction_dir=P/predict_label --info_dir=P/info \
        --prelim_stats_dir=P/prelim_stats --output_dir=P/filter_data \
        --num_label_classes=10 --num_image=53113 --min_threshold=0.3 --file_prefix=extra
    # pass 2, every shard: the same with --only_get_stats=0

Thresholds are merged once, by shard 0 at the end of pass 1 or else by the first pass-2 job; no
job waits for another. Output: <output_dir>/data/train-<task>-<shard>-of-<N>, usable as
main.py's --unlabel_data_dir (offline mode). Rerunning a finished shard does nothing.
"""

import os
import sys

from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from flags.filter_flags import FILTER_NO_EFFECT_FLAGS, define_filter_flags  # noqa: E402
from noisy_student_tf.errors import UserInputError, disk_full  # noqa: E402

define_filter_flags()
FLAGS = flags.FLAGS


def config_from_flags(fv):
    from noisy_student_tf.pseudo.filter import FilterConfig

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


def main(argv):
    if len(argv) > 1:
        print(f"filter_unlabel.py: error: unexpected arguments: {' '.join(argv[1:])}",
              file=sys.stderr)
        sys.exit(2)
    from noisy_student_tf.pseudo import filter as filter_lib

    try:
        result = filter_lib.run(config_from_flags(FLAGS))
    except UserInputError as e:
        print(f"filter_unlabel.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 (only a full disk is turned into one line)
        full = disk_full(e)
        if full is None:
            raise
        print(f"filter_unlabel.py: error: {full}", file=sys.stderr)
        sys.exit(1)
    logging.info("filter_unlabel: %s", result)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    app.run(main)
