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

from flags.filter_flags import define_filter_flags, filter_configs_from_flags  # noqa: E402
from noisy_student_tf.errors import run_tool  # noqa: E402

define_filter_flags()
FLAGS = flags.FLAGS


def main(argv):
    def filter_shards():
        from noisy_student_tf.pseudo import filter as filter_lib

        return [filter_lib.run(cfg) for cfg in filter_configs_from_flags(FLAGS)][-1]

    result = run_tool("filter_unlabel.py", filter_shards, argv[1:])
    logging.info("filter_unlabel: %s", result)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    app.run(main)
