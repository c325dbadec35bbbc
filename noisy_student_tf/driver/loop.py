"""The Noisy Student loop as a plan of stages: teacher -> (pseudo labels) -> students -> baseline.

    teacher    round 0: supervised training on the labeled data, with the same noise
               (RandAugment, dropout, stochastic depth) and schedule as the students, as the
               paper trains every teacher and baseline; only its inference is un-noised
               (LoopConfig.teacher_noise=False gives the crop/flip-only, dropout-free teacher)
    pseudo_i   (offline) the previous round's model labels the unlabeled data: round 1 predicts
               on every unlabeled shard and filters/balances (main.py --mode=predict, then
               tools/filter_unlabel.py), later rounds re-label round 1's selection with the
               new teacher (upstream's reassign)
    student_i  the previous round's model teaches (online: inside the step, on clean views);
               the student sees labeled + unlabeled images with noise
    baseline   student_1's model, noise and schedule on the labeled data only. When that is
               exactly the teacher's configuration (equal-size student, teacher noised) the
               teacher *is* the baseline and nothing more is trained.

Every stage records its settings (driver/stages.py); summary.json lists each round with its
parameter count and dev/test top-1. Test accuracy is reported, never used to choose anything.
"""

import os
from typing import List, Optional, Tuple

from absl import logging

from noisy_student_tf import io_utils, locks, run_info
from noisy_student_tf.driver import cluster as cluster_lib
from noisy_student_tf.driver import stages as stages_lib
from noisy_student_tf.driver import summary as summary_lib
from noisy_student_tf.driver.config import LoopConfig, Round, unlabeled_shards
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.models import params as params_lib
from noisy_student_tf.train import schedule as schedule_lib

def _fmt(value: float) -> str:
    return f"{value:g}"


class LoopPlan:
    """Builds the stages of a LoopConfig (nothing runs until run())."""

    def __init__(self, cfg: LoopConfig, root: str):
        cfg = cfg.resolved()
        self.cfg = cfg
        self.root = root
        self.out = os.path.abspath(cfg.output_dir)
        self.stages: List[stages_lib.Stage] = []
        self.rounds: List[Round] = []
        self._validate()
        self.data_args, self.label_dir, self.unlabel_dir = self._data()
        self.num_classes = 10 if cfg.task_name == "digits" else cfg.num_label_classes
        self.num_labeled = self._count_labeled()
        self._build()

    # ---------------------------------------------------------------- configuration
    def _validate(self) -> None:
        c = self.cfg
        if len(c.student_names) != c.num_iterations:
            raise UserInputError(f"--student_model_names lists {len(c.student_names)} models "
                                 f"for --num_iterations={c.num_iterations}")
        for name in (c.teacher_model_name, *c.student_names):
            if name not in params_lib.MODEL_PARAMS:
                raise UserInputError(f"model {name!r} is not one of "
                                     f"{', '.join(params_lib.MODEL_PARAMS)}")
        checks = [("train_steps", c.train_steps >= 1), ("train_batch_size",
                  c.train_batch_size >= 1), ("num_iterations", c.num_iterations >= 1),
                  ("unlabel_ratio", c.unlabel_ratio > 0), ("model_scale", c.model_scale > 0),
                  ("base_learning_rate", c.base_learning_rate > 0),
                  ("final_lr_ratio", 0 <= c.final_lr_ratio < 1),
                  ("teacher_softmax_temp", c.teacher_softmax_temp == -1
                   or c.teacher_softmax_temp > 0),
                  ("teacher_train_steps", c.teacher_train_steps is None
                   or c.teacher_train_steps >= 1)]
        for name, ok in checks:
            if not ok:
                raise UserInputError(f"--{name}={getattr(c, name)} is out of range")
        if c.teacher_mode not in ("online", "offline"):
            raise UserInputError(f"--teacher_mode={c.teacher_mode!r}; expected online or "
                                 "offline")

    def _data(self):
        c = self.cfg
        if c.task_name == "digits":
            from noisy_student_tf.data import digits

            try:
                label_dir, unlabel_dir = digits.prepare_scarce(c.labels_per_class,
                                                               c.data_cache_dir)
            except ValueError as e:
                raise UserInputError(f"--{e}") from None
            args = ["--task_name=digits", f"--label_data_dir={label_dir}"]
        elif c.task_name == "custom":
            if not c.label_data_dir or not c.unlabel_data_dir:
                raise UserInputError("--task_name=custom needs --label_data_dir and "
                                     "--unlabel_data_dir")
            label_dir, unlabel_dir = c.label_data_dir, c.unlabel_data_dir
            args = ["--task_name=custom", f"--label_data_dir={label_dir}",
                    f"--num_label_classes={c.num_label_classes}",
                    f"--input_image_size={c.input_image_size}",
                    f"--small_image_model={self.small_image}"]
        else:
            raise UserInputError(f"--task_name={c.task_name!r}; expected digits or custom")
        if c.flip is not None:
            args.append("--flip" if c.flip else "--noflip")
        return args, label_dir, unlabel_dir

    def _count_labeled(self) -> int:
        if self.cfg.task_name == "digits":
            return 10 * self.cfg.labels_per_class
        from noisy_student_tf.data import pipeline

        return pipeline.count_records(pipeline.train_files(self.label_dir))

    @property
    def small_image(self) -> bool:
        return self.cfg.task_name == "digits" or self.cfg.input_image_size == 32

    def model_shape(self, name: str) -> Tuple[float, float]:
        """(width, depth) a stage of model `name` builds: the explicit overrides, else the
        small-image preset (32px) or upstream's table, times model_scale."""
        c = self.cfg
        table = params_lib.SMALL_IMAGE_PRESETS if self.small_image else params_lib.MODEL_PARAMS
        width, depth = table[name][:2]
        width = c.width_coefficient if c.width_coefficient is not None else width
        depth = c.depth_coefficient if c.depth_coefficient is not None else depth
        return round(width * c.model_scale, 4), round(depth * c.model_scale, 4)

    def model_args(self, name: str) -> Tuple[list, int]:
        width, depth = self.model_shape(name)
        params = params_lib.param_count(name, self.num_classes, width_coefficient=width,
                                        depth_coefficient=depth,
                                        small_image_model=self.small_image)
        return [f"--model_name={name}", f"--width_coefficient={_fmt(width)}",
                f"--depth_coefficient={_fmt(depth)}"], params

    def noise_args(self, noised: bool) -> list:
        c = self.cfg
        if not noised:
            return ["--augment_name=", "--dropout_rate=0", "--stochastic_depth_rate=0"]
        args = [f"--augment_name={c.augment_name}", f"--randaug_mag={c.randaug_mag}"]
        if c.dropout_rate is not None:
            args.append(f"--dropout_rate={_fmt(c.dropout_rate)}")
        if c.stochastic_depth_rate is not None:
            args.append(f"--stochastic_depth_rate={_fmt(c.stochastic_depth_rate)}")
        return args

    def schedule_args(self, steps: int) -> list:
        c = self.cfg
        args = [f"--train_steps={steps}", f"--train_batch_size={c.train_batch_size}",
                f"--base_learning_rate={_fmt(c.base_learning_rate)}"]
        epochs = steps * c.train_batch_size / max(self.num_labeled, 1)
        if c.final_lr_ratio > 0 and epochs > schedule_lib.WARMUP_EPOCHS:
            args.append(f"--final_base_lr={_fmt(c.base_learning_rate * c.final_lr_ratio)}")
        return args

    def common_args(self) -> list:
        return [*self.data_args, f"--seed={self.cfg.seed}", "--iterations_per_loop=50",
                "--save_checkpoints_steps=100", "--eval_batch_size=128",
                "--steps_per_eval=1000000"]

    # ---------------------------------------------------------------- stages
    def _stage(self, name: str, settings: dict, commands, steps: int = 0, cost: float = 1.0,
               after=()) -> stages_lib.Stage:
        # Paths inside the output directory are recorded relative to it, so a copied or moved
        # loop directory is still recognised as the same run.
        inside = self.out.rstrip("/") + "/"
        settings = {k: "<output_dir>/" + v[len(inside):] if v.startswith(inside) else v
                    for k, v in settings.items()}
        for dep in after:  # a changed stage makes every stage built on it change too
            settings[f"(stage {dep.name})"] = stages_lib.fingerprint(dep.settings)
        stage = stages_lib.Stage(name, os.path.join(self.out, name), settings, commands,
                                 steps, cost)
        self.stages.append(stage)
        return stage

    def _train_stage(self, name: str, args: list, steps: int, cost: float, after=()):
        model_dir = os.path.join(self.out, name)
        full = ["--mode=train_and_eval", f"--model_dir={model_dir}", *args]
        if self.cfg.data_service_address:  # where the input is made does not change results
            full.append(f"--data_service_address={self.cfg.data_service_address}")
        return self._stage(name, stages_lib.settings_of(args),
                           lambda: [["main.py", *full]], steps, cost, after)

    def _build(self) -> None:
        c = self.cfg
        b = c.train_batch_size
        teacher_steps = c.teacher_train_steps or c.train_steps
        teacher_args = None
        if c.teacher_model_path:  # a given teacher: not trained (nor evaluated) here
            path = c.teacher_model_path
            if not os.path.exists(path) and not os.path.exists(path + ".index"):
                raise UserInputError(f"--teacher_model_path={path!r}: no such file, "
                                     "directory or checkpoint")
            _, params = self.model_args(c.teacher_model_name)
            info = run_info.read(path) if not path.endswith(".h5") else None
            if info is not None:  # its own description (our checkpoints, converted ones)
                m = info.model
                params = params_lib.param_count(
                    m.model_name, m.num_classes, width_coefficient=m.width_coefficient,
                    depth_coefficient=m.depth_coefficient, small_image_model=m.small_image_model)
            prev = Round("teacher", c.teacher_model_name, params, os.path.abspath(path))
        else:
            margs, params = self.model_args(c.teacher_model_name)
            teacher_args = [*margs, *self.noise_args(c.teacher_noise),
                            *self.schedule_args(teacher_steps), *self.common_args()]
            stage = self._train_stage("teacher", teacher_args, teacher_steps, b)
            prev = Round("teacher", c.teacher_model_name, params, stage.directory, stage)
        self.rounds.append(prev)
        first_pseudo = None
        for i, name in enumerate(c.student_names, start=1):
            margs, params = self.model_args(name)
            if params < prev.params:
                logging.warning("student_%d (%s, %d parameters) is smaller than its teacher "
                                "(%s, %d): Noisy Student expects an equal-or-larger student",
                                i, name, params, prev.model_name, prev.params)
            args = [*margs, *self.noise_args(c.student_noise),
                    *self.schedule_args(c.train_steps), *self.common_args(),
                    f"--unlabel_ratio={_fmt(c.unlabel_ratio)}",
                    f"--teacher_softmax_temp={_fmt(c.teacher_softmax_temp)}"]
            after = [prev.stage] if prev.stage else []
            if c.teacher_mode == "offline":
                pseudo = self._pseudo_stage(i, prev, first_pseudo)
                first_pseudo = first_pseudo or pseudo
                args.append(f"--unlabel_data_dir={self._pseudo_data_dir(pseudo, i)}")
                after = [pseudo]
                cost = b * (1 + 0.6 * c.unlabel_ratio)  # no teacher forward (estimate)
            else:
                args += [f"--teacher_model_name={prev.model_name}",
                         f"--teacher_model_path={prev.model_dir}",
                         f"--unlabel_data_dir={self.unlabel_dir}"]
                cost = b * (1 + 0.75 * c.unlabel_ratio)  # measured: 2.5x a teacher step at r=2
            stage = self._train_stage(f"student_{i}", args, c.train_steps, cost, after)
            prev = Round(f"student_{i}", name, params, stage.directory, stage)
            self.rounds.append(prev)
        if c.with_baseline:
            margs, params = self.model_args(c.student_names[0])
            args = [*margs, *self.noise_args(c.student_noise),
                    *self.schedule_args(c.train_steps), *self.common_args()]
            if teacher_args is not None and args == teacher_args:
                teacher = self.rounds[0]
                self.rounds.append(Round("baseline", teacher.model_name, teacher.params,
                                         teacher.model_dir, teacher.stage, same_as="teacher"))
            else:
                stage = self._train_stage("baseline", args, c.train_steps, b)
                self.rounds.append(Round("baseline", c.student_names[0], params,
                                         stage.directory, stage))
        if c.eval_robustness:
            first = None
            for r in self.rounds:
                if r.stage is not None and r.same_as is None:
                    stage = self._robustness_stage(r, first)
                    first = first or (r, stage)

    def _robustness_stage(self, r: Round, reference=None) -> stages_lib.Stage:
        """main.py --mode=eval_robustness on a trained round: robustness.json in its model_dir
        (the summary shows each round's mCE and mFR). Later rounds name the first evaluated one
        (the teacher) as their reference, whose robustness.json they reuse: their mCE and mFR
        relative to it."""
        c = self.cfg
        args = [*self.data_args, f"--seed={c.seed}", "--eval_batch_size=128"]
        if c.robustness_max_images:
            args.append(f"--robustness_max_images={c.robustness_max_images}")
        after = [r.stage]
        if reference is not None:
            args.append(f"--robustness_reference={reference[0].model_dir}")
            after.append(reference[1])
        full = ["--mode=eval_robustness", f"--model_dir={r.model_dir}", *args]
        return self._stage(f"robustness_{r.name}", stages_lib.settings_of(args),
                           lambda: [["main.py", *full]], after=after)

    def _pseudo_stage(self, i: int, teacher: Round, first: Optional[stages_lib.Stage]):
        """pseudo_1: predict + filter with the teacher; pseudo_i (i > 1): reassign pseudo_1's
        selection with the previous round's model."""
        c = self.cfg
        d = os.path.join(self.out, f"pseudo_{i}")
        prefix, n = unlabeled_shards(self.unlabel_dir)
        shard_ids = ",".join(str(s) for s in range(n))
        after = [s for s in (teacher.stage, first) if s is not None]
        if first is not None:
            reassign = ["--mode=predict", "--reassign_label", *self.data_args,
                        f"--model_name={teacher.model_name}",
                        f"--predict_ckpt_path={teacher.model_dir}",
                        f"--label_data_dir={os.path.join(first.directory, 'filter_data', 'data')}",
                        "--file_prefix=train", f"--num_shards={n}", f"--shard_id={shard_ids}",
                        f"--output_dir={os.path.join(d, 'reassign')}", f"--seed={c.seed}"]
            settings = stages_lib.settings_of(reassign)
            return self._stage(f"pseudo_{i}", settings, lambda: [["main.py", *reassign]],
                               after=after)
        info, pred = os.path.join(d, "info"), os.path.join(d, "predict_label")
        predict = ["--mode=predict", *self.data_args, f"--model_name={teacher.model_name}",
                   f"--predict_ckpt_path={teacher.model_dir}",
                   f"--label_data_dir={self.unlabel_dir}", f"--file_prefix={prefix}",
                   f"--num_shards={n}", f"--shard_id={shard_ids}", f"--info_dir={info}",
                   f"--output_dir={pred}", f"--seed={c.seed}"]
        filt = [f"--input_dir={self.unlabel_dir}", f"--prediction_dir={pred}",
                f"--info_dir={info}", f"--prelim_stats_dir={os.path.join(d, 'prelim_stats')}",
                f"--output_dir={os.path.join(d, 'filter_data')}", f"--num_shards={n}",
                "--task=0", f"--num_label_classes={self.num_classes}",
                f"--min_threshold={_fmt(c.filter_min_threshold)}", f"--file_prefix={prefix}",
                f"--seed={c.seed}"]
        settings = stages_lib.settings_of(predict)
        settings.update({f"filter:{k}": v for k, v in stages_lib.settings_of(filt).items()})
        settings["filter:num_image"] = str(c.filter_num_image)

        def commands():
            yield ["main.py", *predict]
            num_image = c.filter_num_image
            if num_image == -1:  # upstream's SVHN script: unlabeled images / classes
                total = sum(io_utils.read_json(os.path.join(info, f))["image_num"]
                            for f in os.listdir(info) if f.endswith(".txt"))
                num_image = max(1, total // self.num_classes)
            shards = ",".join(str(s) for s in reversed(range(n)))
            for p in (1, 0):  # each pass over every shard in one process
                yield ["tools/filter_unlabel.py", *filt, f"--num_image={num_image}",
                       f"--only_get_stats={p}", f"--shard_ids={shards}"]
            data_dir = os.path.join(d, "filter_data", "data")
            if not any(f.startswith("train-") and ".tmp" not in f
                       for f in os.listdir(data_dir)):
                raise UserInputError(
                    f"pseudo_{i}: the filter kept no image (every teacher confidence is below "
                    f"--filter_min_threshold={c.filter_min_threshold}; see "
                    f"{os.path.join(d, 'filter_data', 'threshold.json')})")
            # what the teacher's pseudo-labels look like: <pseudo_1>/filter_data/pictures
            yield ["tools/show_pseudo_labels.py", f"--filter_dir={os.path.join(d, 'filter_data')}",
                   f"--num_label_classes={self.num_classes}"]

        return self._stage(f"pseudo_{i}", settings, commands, after=after)

    def _pseudo_data_dir(self, stage: stages_lib.Stage, i: int) -> str:
        if i == 1:
            return os.path.join(stage.directory, "filter_data", "data")
        return os.path.join(stage.directory, "reassign")

    # ---------------------------------------------------------------- running
    def run(self, runner: stages_lib.StageRunner) -> Optional[dict]:
        """Runs the stages not done yet; returns the summary (None on a follower host of a
        cluster, driver/cluster.py, which runs only the chief's training commands)."""
        cluster = runner.cluster
        if cluster is not None and not cluster.chief:
            cluster.follow(runner.follow_command, lambda text: runner.progress.show(text, True))
            return None
        try:
            summary = self._run_stages(runner)
        except BaseException as e:
            if cluster is not None:
                cluster.announce(cluster_lib.FAILED, message=str(e) or type(e).__name__)
            raise
        if cluster is not None:
            cluster.announce(cluster_lib.FINISHED)
        return summary

    def _run_stages(self, runner: stages_lib.StageRunner) -> dict:
        # One driver per output directory (each stage's main.py also locks its own model_dir).
        locks.lock_dir(self.out, f"--output_dir={self.out!r}")
        moved = stages_lib.check_stages(self.stages, self.out, self.cfg.retrain_changed)
        for name in moved:
            logging.warning("stage %s had other settings: moved to %s.replaced, retraining",
                            name, name)
        for r in self.rounds:
            if r.stage is not None and r.same_as is None:
                logging.info("%s: %s, %d parameters", r.name, r.model_name, r.params)
        seconds_per_cost = {}

        def on_rate(name, sec_per_step):
            stage = next(s for s in self.stages if s.name == name)
            seconds_per_cost["last"] = sec_per_step / stage.cost

        runner.on_rate = on_rate
        total = len(self.stages)
        for k, stage in enumerate(self.stages, start=1):
            label = f"{stage.name} {k}/{total}"
            if stage.done:
                logging.info("[%s] already done, skipping", stage.name)
                continue
            rest = self.stages[k:]
            runner.eta_after = lambda rest=rest: sum(
                s.steps * s.cost * seconds_per_cost.get("last", 0.0)
                for s in rest if not s.done)
            runner.run(stage, label)
        return self.summarize()

    def summarize(self) -> dict:
        return summary_lib.summarize(self.rounds, self.cfg, self.out)
