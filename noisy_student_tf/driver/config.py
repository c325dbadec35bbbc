"""What the loop driver is asked to do: LoopConfig (filled from tools/run_noisy_student.py's flags),
the per-task defaults it falls back on, a Round of the result (teacher, student_i, baseline),
and the unlabeled shard layout the offline rounds need."""

import dataclasses
import os
import re
from typing import Optional, Tuple

from noisy_student_tf.driver import stages as stages_lib
from noisy_student_tf.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """Everything the loop needs; tools/run_noisy_student.py fills it from flags."""

    output_dir: str
    task_name: str = "digits"  # digits (embedded) | custom
    label_data_dir: Optional[str] = None
    unlabel_data_dir: Optional[str] = None
    num_label_classes: int = 10
    input_image_size: int = 32
    flip: Optional[bool] = None  # None: main.py's task rule
    labels_per_class: int = 15  # digits
    data_cache_dir: Optional[str] = None  # digits
    seed: int = 0
    num_iterations: Optional[int] = None  # None: len(student_model_names) or the task's
    teacher_model_name: str = "efficientnet-b0"
    student_model_names: Tuple[str, ...] = ()  # empty: the teacher's model every round
    width_coefficient: Optional[float] = None  # None: the model's (32px: its small preset)
    depth_coefficient: Optional[float] = None
    model_scale: float = 1.0  # multiplies every stage's width and depth (quick runs, tests)
    train_batch_size: int = 32
    train_steps: Optional[int] = None  # every noised stage; None: the task's (TASK_DEFAULTS)
    teacher_train_steps: Optional[int] = None  # None: train_steps
    base_learning_rate: float = 0.032
    # Upstream decays the LR by 0.97 every 2.4 epochs of the labeled data, which with a few
    # hundred labels is near zero after a few hundred steps; upstream's own final_base_lr
    # option spreads the decay over the run instead: final_base_lr = base * this ratio.
    # 0: upstream's fixed decay.
    final_lr_ratio: float = 0.1
    unlabel_ratio: float = 2.0
    teacher_softmax_temp: float = 1.0  # -1: hard pseudo-labels
    augment_name: str = "v1"
    randaug_mag: int = 5
    dropout_rate: Optional[float] = None  # None: the model's
    stochastic_depth_rate: Optional[float] = None  # None: 0.2
    teacher_noise: bool = True
    student_noise: bool = True
    with_baseline: bool = False
    teacher_mode: str = "online"  # online | offline
    teacher_model_path: Optional[str] = None  # a given teacher: no teacher stage
    filter_num_image: int = -1
    filter_min_threshold: float = 0.3
    retrain_changed: bool = False
    # a cluster (TF_CONFIG with several workers): the same id on every host (driver/cluster.py)
    run_id: Optional[str] = None
    data_service_address: Optional[str] = None  # training stages' input on the tf.data service
    eval_robustness: bool = False  # a robustness stage per trained round (mCE / mFR)
    robustness_max_images: Optional[int] = None

    @property
    def student_names(self) -> Tuple[str, ...]:
        return self.student_model_names or (self.teacher_model_name,) * self.num_iterations

    def resolved(self) -> "LoopConfig":
        """Fills the settings left as None from TASK_DEFAULTS (and the student list)."""
        task = TASK_DEFAULTS.get(self.task_name, TASK_DEFAULTS["custom"])
        rounds = self.num_iterations
        if rounds is None:
            rounds = len(self.student_model_names) or task["num_iterations"]
        steps = self.train_steps if self.train_steps is not None else task["train_steps"]
        return dataclasses.replace(self, num_iterations=rounds, train_steps=steps)


# Settings chosen on dev splits (docs/benchmarks.md, "The loop, honest and strong"): two rounds of
# 1200 steps for any data set; the embedded digits keep one round of 800 steps so that the
# README's main job stays under 10 minutes on 2 CPU cores.
TASK_DEFAULTS = {
    "custom": {"train_steps": 1200, "num_iterations": 2},
    "digits": {"train_steps": 800, "num_iterations": 1},
}


@dataclasses.dataclass
class Round:
    """A row of the summary: a trained (or given) model."""

    name: str
    model_name: str
    params: int
    model_dir: str
    stage: Optional[stages_lib.Stage] = None  # None: given, not trained here
    same_as: Optional[str] = None  # the baseline when it is the teacher stage


def unlabeled_shards(unlabel_dir: str):
    """(prefix, num_shards) of upstream-named shards `<prefix>-SSSSS-of-NNNNN` in unlabel_dir
    (extra* preferred, as upstream's scripts predict on SVHN extra)."""
    names = sorted(os.listdir(unlabel_dir)) if os.path.isdir(unlabel_dir) else []
    for prefix in ("extra", "train"):
        found = [re.fullmatch(rf"{prefix}-(\d{{5}})-of-(\d{{5}})", n) for n in names]
        found = [m for m in found if m]
        if found:
            total = {int(m.group(2)) for m in found}
            if len(total) != 1 or len(found) != total.pop():
                raise UserInputError(f"--unlabel_data_dir={unlabel_dir!r}: {prefix}-* shards "
                                     "are incomplete or of mixed counts")
            return prefix, len(found)
    raise UserInputError(f"--unlabel_data_dir={unlabel_dir!r} has no shards named "
                         "extra-SSSSS-of-NNNNN or train-SSSSS-of-NNNNN (needed by "
                         "--teacher_mode=offline)")
