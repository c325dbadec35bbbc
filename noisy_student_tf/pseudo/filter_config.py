"""FilterConfig: the filter tool's settings (upstream filter_unlabel.py's flags), its file names,
and the settings record that tells a rerun whether old outputs are stale."""

import dataclasses
import os

from noisy_student_tf import io_utils
from noisy_student_tf.data import records
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.pseudo import selection, shards

COPIES_FORMATS = ("records", "feature")


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    input_dir: str
    prediction_dir: str
    info_dir: str
    prelim_stats_dir: str
    output_dir: str
    num_shards: int = 128
    only_use_num_shards: int = -1
    shard_id: int = 0
    num_image: int = 1300
    total_replicas: int = 1
    task: int = -1
    debug: bool = False
    min_threshold: float = 0.0
    max_prob: float = 2.0
    num_label_classes: int = 1000
    upsample: bool = True
    only_get_stats: bool = False
    file_prefix: str = "train"
    use_top: bool = True
    use_all: bool = False
    probabilities_format: str = "full"
    top_k: int = 10
    copies_format: str = "records"
    seed: int = 12345
    shuffle_buffer: int = 10000  # upstream shuffles and writes every 10000 records
    save_samples: bool = True
    batch_size: int = 4096
    redo_changed: bool = False  # outputs made with other settings: remove and redo

    def validate(self) -> None:
        for name in ("input_dir", "prediction_dir", "info_dir", "prelim_stats_dir",
                     "output_dir"):
            if not getattr(self, name) and not (name == "input_dir" and self.only_get_stats):
                raise UserInputError(f"--{name} is required")
        try:
            selection.check_min_threshold(self.min_threshold)
        except ValueError as e:
            raise UserInputError(f"--{e}") from None
        if not self.max_prob > self.min_threshold:
            raise UserInputError(f"--max_prob={self.max_prob} must be above --min_threshold="
                                 f"{self.min_threshold} (nothing would be kept)")
        if self.num_image < 1:
            raise UserInputError(f"--num_image={self.num_image} must be at least 1")
        if self.num_label_classes < 2:
            raise UserInputError(f"--num_label_classes={self.num_label_classes} must be >= 2")
        if not 0 <= self.shard_id < self.num_shards:
            raise UserInputError(f"--shard_id={self.shard_id} outside [0, --num_shards="
                                 f"{self.num_shards})")
        if self.total_replicas < 1 or not -1 <= self.task < self.total_replicas:
            raise UserInputError(f"--task={self.task} outside [-1, --total_replicas="
                                 f"{self.total_replicas})")
        if self.probabilities_format not in records.PROBABILITIES_FORMATS:
            raise UserInputError(f"--probabilities_format={self.probabilities_format!r}; "
                                 f"expected one of {', '.join(records.PROBABILITIES_FORMATS)}")
        if self.top_k < 1:
            raise UserInputError(f"--top_k={self.top_k} must be at least 1")
        if self.copies_format not in COPIES_FORMATS:
            raise UserInputError(f"--copies_format={self.copies_format!r}; expected one of "
                                 f"{', '.join(COPIES_FORMATS)}")

    # ---- file names (upstream's)
    def prelim_path(self, shard: int, task: int) -> str:
        return os.path.join(self.prelim_stats_dir, f"prelim_stats_{shard:05d}_{task}.json")

    def stats_path(self, shard: int, task: int) -> str:
        return os.path.join(self.output_dir, "stats", f"stats_{shard:05d}_{task}.json")

    @property
    def threshold_path(self) -> str:
        return os.path.join(self.output_dir, "threshold.json")

    @property
    def data_path(self) -> str:
        return os.path.join(self.output_dir, "data", f"train-{self.task}-{self.shard_id:05d}-of-"
                                                     f"{self.num_shards:05d}")

    def prediction_path(self, worker: int) -> str:
        return os.path.join(self.prediction_dir,
                            shards.prediction_name(self.shard_id, self.num_shards, worker))

    def info_path(self, worker: int) -> str:
        return os.path.join(self.info_dir,
                            shards.info_name(self.shard_id, self.num_shards, worker))

    @property
    def raw_path(self) -> str:
        return os.path.join(self.input_dir, records.shard_name(self.file_prefix, self.shard_id,
                                                               self.num_shards))

    @property
    def is_master(self) -> bool:
        return self.shard_id == 0 and self.task in (-1, 0)

    def job_ids(self) -> list:
        """(shard, task) of every job whose stats are merged."""
        if self.debug:
            return [(self.shard_id, self.task)]
        n = self.only_use_num_shards if self.only_use_num_shards != -1 else self.num_shards
        tasks = [-1] if self.task == -1 else list(range(self.total_replicas))
        return [(s, t) for s in range(n) for t in tasks]


_NOT_SETTINGS = ("input_dir", "prediction_dir", "info_dir", "prelim_stats_dir", "output_dir",
                 "shard_id", "task", "only_get_stats", "batch_size", "redo_changed")


def settings(cfg: FilterConfig) -> dict:
    """What decides the filter's outputs (pseudo/provenance.py): the selection, format and
    seed settings, the shard layout, and the predictions by their own settings record."""
    out = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_SETTINGS}
    out["predictions"] = (io_utils.read_json(os.path.join(cfg.prediction_dir,
                                                          "predict_settings.json"))
                          if cfg.prediction_dir else None)
    out["input"] = os.path.basename(os.path.normpath(cfg.input_dir)) if cfg.input_dir else None
    return out
