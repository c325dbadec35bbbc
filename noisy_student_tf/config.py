"""Run configuration as frozen dataclasses. Defaults equal upstream main.py's flags.

main.py and the tools turn absl flags into these (flags/config.py); the library never reads FLAGS.
"""

import dataclasses
import math
from typing import Optional

from noisy_student_tf.data.augment import AugmentConfig


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    model_name: str = "efficientnet-b0"
    num_classes: int = 1000
    image_size: int = 224
    small_image_model: bool = False
    dropout_rate: Optional[float] = None
    stochastic_depth_rate: Optional[float] = None
    width_coefficient: Optional[float] = None
    depth_coefficient: Optional[float] = None
    fix_layer_num: int = -1

    def build_kwargs(self) -> dict:
        return dict(
            fix_layer_num=self.fix_layer_num,
            num_classes=self.num_classes,
            dropout_rate=self.dropout_rate,
            stochastic_depth_rate=self.stochastic_depth_rate,
            width_coefficient=self.width_coefficient,
            depth_coefficient=self.depth_coefficient,
            small_image_model=self.small_image_model,
        )


@dataclasses.dataclass(frozen=True)
class DataConfig:
    task_name: str = "imagenet"
    label_data_dir: str = ""
    # None: counted from the training files when the run starts (train/run.py resolve_data)
    num_train_images: Optional[int] = 1281167
    # The embedded digits are written to label_data_dir when the run starts (not by the flags)
    embedded_digits: bool = False
    eval_images: dict = dataclasses.field(default_factory=dict)  # subset -> count or None
    mean_rgb: tuple = (123.675, 116.28, 103.53)
    stddev_rgb: tuple = (58.395, 57.12, 57.375)
    flip: bool = True
    use_cache: bool = True
    num_train_shards: Optional[int] = None
    deterministic: bool = False
    skip_corrupt_records: bool = False
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    # label_data_dir / unlabel_data_dir `tfds:NAME`: a prepared tensorflow-datasets dataset read
    # in place (data/tfds_source.py); dev "" = its `validation` split when it has one.
    tfds_data_dir: Optional[str] = None
    tfds_train_split: str = "train"
    tfds_dev_split: str = ""
    tfds_test_split: str = "test"
    tfds_unlabel_split: str = "train"
    # host:port of a tf.data service dispatcher: training batches made on its workers
    data_service_address: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model_dir: str = ""
    train_steps: int = 109474  # after train_ratio
    train_last_step_num: Optional[int] = None  # after train_ratio; None: train_steps
    train_ratio: float = 1.0
    train_batch_size: int = 4096
    eval_batch_size: int = 8
    base_learning_rate: float = 0.016
    final_base_lr: Optional[float] = None
    weight_decay: float = 1e-5
    label_smoothing: float = 0.1
    moving_average_decay: float = 0.9999
    label_data_sample_prob: float = 1.0
    iterations_per_loop: int = 1000
    save_checkpoints_steps: int = 1000
    keep_checkpoint_max: int = 5
    steps_per_eval: int = 3000
    skip_host_call: bool = False
    use_bfloat16: bool = False
    use_fp16: bool = False
    seed: int = 0
    image_summary_images: int = 4  # augmented images to TensorBoard at each checkpoint
    init_model_path: Optional[str] = None  # fresh runs start from this checkpoint's EMA weights
    jit_compile: bool = False  # XLA for the forward/backward pass and eval

    @property
    def last_step(self) -> int:
        """Training stops when global_step reaches this (upstream: train_last_step_num)."""
        return self.train_steps if self.train_last_step_num is None else self.train_last_step_num

    @property
    def start_from_step(self) -> int:
        """Offset added to global_step in the LR schedule (upstream section 4.4, step 3)."""
        return self.train_steps - self.last_step


@dataclasses.dataclass(frozen=True)
class StudentConfig:
    """The semi-supervised part (upstream section 4.2). Off while unlabel_ratio is 0."""

    unlabel_ratio: float = 0.0
    unlabel_data_dir: str = ""
    # Soft pseudo-labels sharpened by this temperature; None: hard one-hot labels (upstream's
    # --teacher_softmax_temp=-1, turned into None by flags/config.py).
    teacher_softmax_temp: Optional[float] = None
    teacher: Optional[ModelConfig] = None  # online teacher; None: offline (stored predictions)
    teacher_model_path: Optional[str] = None
    # the teacher checkpoint's own mean/std (its run_config.json); None: the student's
    teacher_mean_rgb: Optional[tuple] = None
    teacher_stddev_rgb: Optional[tuple] = None
    unl_augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)

    @property
    def enabled(self) -> bool:
        return self.unlabel_ratio > 0

    def unlabeled_batch_size(self, batch: int, sample_prob: float) -> int:
        """U = ceil(B * p * r)."""
        return int(math.ceil(batch * sample_prob * self.unlabel_ratio))


@dataclasses.dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    student: StudentConfig = dataclasses.field(default_factory=StudentConfig)


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """--mode=export: the newest checkpoint of model_dir as a SavedModel in export_dir."""
    model_dir: str
    export_dir: str
    moving_average: bool = True  # the EMA weights (false: the raw training weights)
    top_k: int = 5
