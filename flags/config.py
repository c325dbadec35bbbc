"""Parsed flags -> noisy_student_tf.config objects. The only place that interprets FLAGS."""

import dataclasses
from typing import Optional, Tuple

import tensorflow as tf
from absl import logging

from flags.main_flags import NO_EFFECT_FLAGS
from noisy_student_tf import run_info
from noisy_student_tf.config import (DataConfig, ModelConfig, RunConfig, StudentConfig,
                                     TrainConfig)
from noisy_student_tf.data import augment, digits, pipeline, prepare, task_info, tfds_source
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.models import MODEL_PARAMS
from noisy_student_tf.models.params import SMALL_IMAGE_PRESETS

MODES = ("train", "eval", "train_and_eval", "predict", "export", "eval_robustness")
EVAL_MODES = ("eval", "eval_robustness")  # read the model from the checkpoint in --model_dir

# --task_name=digits: values used for flags the user did not pass, so that
# `main.py --task_name=digits --mode=train_and_eval --model_dir=DIR` is a complete run of a few
# minutes on 2 CPU cores. Width and depth come from the model's 32x32 preset
# (models/params.py SMALL_IMAGE_PRESETS; B0 there is 0.66M parameters): full B0 at 32px trains at
# ~70 images/s here, too slow for a default. The learning rate stays upstream's 0.016: it was best
# on the dev split of 0.016 / 0.032 / 0.064 (docs/benchmarks.md).
DIGITS_DEFAULTS = {
    "train_batch_size": 64,
    "train_steps": 600,
    "eval_batch_size": 128,
    "iterations_per_loop": 50,
    "save_checkpoints_steps": 100,
    "steps_per_eval": 200,
}


def _present(flag_values, name: str) -> bool:
    return flag_values[name].present > 0


def explicit_model_fields(fv) -> set:
    """ModelConfig fields the user set (or the named task forces): these must agree with a
    checkpoint's run_config.json; the others are taken from it."""
    fields = {f for f, flag in run_info.ARCHITECTURE_FLAGS.items() if _present(fv, flag)}
    if _present(fv, "task_name") and task_info.get_task_info(fv.task_name).small_image:
        fields |= {"num_classes", "image_size", "small_image_model"}
    return fields


def checkpoint_model(fv, cfg: RunConfig, path: str, flag: str):
    """(ModelConfig, mean_rgb, stddev_rgb) for the checkpoint at `path`: its run_config.json
    decides, a conflicting flag is an error naming both values; the flags without the file."""
    info = run_info.read(path)
    if info is None:
        return cfg.model, tuple(cfg.data.mean_rgb), tuple(cfg.data.stddev_rgb)
    what = f"--{flag}={path!r}"
    run_info.check_model(info, cfg.model, sorted(explicit_model_fields(fv)), what)
    if _present(fv, "mean_rgb") or _present(fv, "stddev_rgb"):
        run_info.check_normalisation(info, cfg.data.mean_rgb, cfg.data.stddev_rgb,
                                     fv.task_name, what, source="--mean_rgb/--stddev_rgb")
    elif _present(fv, "task_name") and fv.task_name != "custom":  # custom has no mean/std
        run_info.check_normalisation(info, cfg.data.mean_rgb, cfg.data.stddev_rgb,
                                     fv.task_name, what)
    model = dataclasses.replace(info.model, fix_layer_num=-1)
    return (model, info.mean_rgb or tuple(cfg.data.mean_rgb),
            info.stddev_rgb or tuple(cfg.data.stddev_rgb))


def task_defaults(flag_values) -> dict:
    """Flag name -> value to use where the user did not set the flag."""
    if flag_values.task_name == "digits":
        preset = SMALL_IMAGE_PRESETS.get(flag_values.model_name)
        defaults = dict(DIGITS_DEFAULTS)
        if preset is not None:
            defaults.update(width_coefficient=preset[0], depth_coefficient=preset[1])
        return {k: v for k, v in defaults.items() if not _present(flag_values, k)}
    return {}


# Numeric flags checked for sign and range at start-up: name -> (low, high, low_inclusive).
# A negative learning rate would train by gradient ascent without a word.
_RANGES = {
    "base_learning_rate": (0.0, None, False),
    "final_base_lr": (0.0, None, True),
    "moving_average_decay": (0.0, 1.0, True),
    "weight_decay": (0.0, None, True),
    "label_smoothing": (0.0, 1.0, True),
    "dropout_rate": (0.0, 1.0, True),
    "stochastic_depth_rate": (0.0, 1.0, True),
    "depth_coefficient": (0.0, None, False),
    "width_coefficient": (0.0, None, False),
    "randaug_mag": (0, None, True),
    "randaug_layer": (0, None, True),
}


def _check_ranges(values: dict) -> None:
    for name, (low, high, inclusive) in _RANGES.items():
        value = values.get(name)
        if value is None:
            continue
        below = value < low if inclusive else value <= low
        if below or (high is not None and value > high) or value != value:
            span = (f"{'[' if inclusive else '('}{low:g}, {high:g}]" if high is not None else
                    f"{'>=' if inclusive else '>'} {low:g}")
            raise UserInputError(f"--{name}={value:g} is out of range (must be {span})")


def _check_flags(fv, values: dict) -> None:
    if values["mode"] not in MODES:
        raise UserInputError(f"--mode={values['mode']!r}; expected one of {', '.join(MODES)}")
    if values["model_name"] not in MODEL_PARAMS:
        raise UserInputError(
            f"--model_name={values['model_name']!r}; expected one of {', '.join(MODEL_PARAMS)}")
    if values["task_name"] not in task_info.TASKS:
        raise UserInputError(
            f"--task_name={values['task_name']!r}; expected one of {', '.join(task_info.TASKS)}")
    if values["num_label_classes"] < 2:
        raise UserInputError(
            f"--num_label_classes={values['num_label_classes']} must be at least 2")
    for name in ("train_batch_size", "eval_batch_size", "iterations_per_loop",
                 "save_checkpoints_steps", "keep_checkpoint_max"):
        if values[name] < 1:
            raise UserInputError(f"--{name}={values[name]} must be at least 1")
    if not 0 < values["label_data_sample_prob"] <= 1:
        raise UserInputError(
            f"--label_data_sample_prob={values['label_data_sample_prob']} must be in (0, 1]")
    _check_ranges(values)
    if values["train_steps"] < 1 or values["train_ratio"] <= 0:
        raise UserInputError("--train_steps and --train_ratio must be positive")
    if not values["model_dir"] and values["mode"] != "predict":
        raise UserInputError("--model_dir is required")
    if values["init_model"] and not values["init_model_path"]:
        raise UserInputError("--init_model=true needs --init_model_path (a checkpoint or "
                             "model_dir)")
    if values["fix_layer_num"] < -1:
        raise UserInputError(f"--fix_layer_num={values['fix_layer_num']} must be -1 (none) or "
                             ">= 0")
    if values["mode"] == "predict":
        if not values["predict_ckpt_path"]:
            raise UserInputError("--mode=predict needs --predict_ckpt_path (a checkpoint or "
                                 "model_dir)")
        if values["data_type"] != "tfrecord":
            raise UserInputError(f"--data_type={values['data_type']!r}: only tfrecord is "
                                 "supported")
    if values["mode"] == "export" and not values["export_dir"]:
        raise UserInputError("--mode=export needs --export_dir (where the SavedModel goes)")
    for name in NO_EFFECT_FLAGS:
        if values[name] != fv[name].default:
            logging.warning("--%s=%r has no effect in this port (TPU-only or cosmetic upstream "
                            "flag; see WORKSPACE.md)", name, values[name])
    if values["data_format"] != "channels_last":
        raise UserInputError("--data_format=channels_first is not supported (channels_last only)")


def strategy_args(fv) -> Tuple[str, Optional[str]]:
    """(--strategy, --tpu) after upstream's --use_tpu rule: set explicitly, it needs --tpu;
    left at its default (True) without a TPU, the run falls back to CPU/GPU."""
    if fv["use_tpu"].present and fv.use_tpu and not fv.tpu:
        raise UserInputError("--use_tpu=true needs --tpu naming the TPU (none is given)")
    if fv.use_tpu and not fv.tpu:
        logging.info("use_tpu defaults to True upstream; no --tpu given, running on CPU/GPU")
    return fv.strategy, fv.tpu


def run_config_from_flags(fv, on_tpu: bool = False) -> RunConfig:
    """Builds the RunConfig from parsed absl FlagValues `fv`.

    Applies upstream's task forcing (svhn/digits: 32x32, small-image model, 10 classes), this
    port's digits defaults, and counts images from the records when neither a flag nor the task
    gives them. Raises UserInputError on bad values.
    """
    values = {name: fv[name].value for name in fv}
    values.update(task_defaults(fv))
    _check_flags(fv, values)
    info = task_info.get_task_info(values["task_name"])

    image_size = values["input_image_size"]
    small = values["small_image_model"]
    num_classes = values["num_label_classes"]
    if info.small_image:  # upstream main(): svhn forces 32x32, small_image_model, 10 classes
        image_size, small, num_classes = 32, True, info.num_classes
    if image_size is None:
        image_size = MODEL_PARAMS[values["model_name"]][2]

    label_dir = values["label_data_dir"]
    embedded = values["task_name"] == "digits" and not label_dir
    if embedded:  # written when a run starts (train/run.py), not while reading flags
        label_dir = digits.cache_path(values["data_cache_dir"])
    if not label_dir:
        raise UserInputError("--label_data_dir is required for --task_name="
                             f"{values['task_name']}")

    num_classes, mean, std = _dataset_facts(fv, values, info, label_dir, num_classes)
    if values["skip_corrupt_records"] and (tfds_source.is_tfds(label_dir) or
                                           tfds_source.is_tfds(values["unlabel_data_dir"])):
        raise UserInputError("--skip_corrupt_records reads upstream-format records only; "
                             "convert the tfds dataset with tools/prepare_data.py first")

    # None: counted from the training files when the run starts (train/run.py)
    num_train = values["num_train_images"] or info.num_train_images
    if (values["task_name"] == "digits" and values["label_data_dir"]) or \
            tfds_source.is_tfds(label_dir):
        # another digits split, or a tfds split (any slice): its own count, unless given
        num_train = values["num_train_images"]
    eval_images = {"dev": values["num_eval_images"] or info.num_eval_images,
                   "test": values["num_test_images"] or info.num_test_images}

    try:
        aug = augment.AugmentConfig(
            name=values["augment_name"] or None, magnitude=values["randaug_mag"],
            num_layers=values["randaug_layer"], cutout=values["cutout_op"],
            remove_aug=values["remove_aug"],
            upstream_contrast=values["randaug_upstream_contrast"])
    except ValueError as e:
        raise UserInputError(f"--{e}") from None
    use_bf16 = values["use_bfloat16"] if _present(fv, "use_bfloat16") else (
        values["use_bfloat16"] and on_tpu and not values["use_fp16"])
    if use_bf16 and values["use_fp16"]:
        raise UserInputError("--use_fp16 and --use_bfloat16 are exclusive (pick one "
                             "mixed-precision policy)")
    train_steps = int(values["train_steps"] * values["train_ratio"])
    last = values["train_last_step_num"]
    last = None if last == -1 else int(last * values["train_ratio"])
    model = ModelConfig(
        model_name=values["model_name"], num_classes=num_classes, image_size=image_size,
        small_image_model=small, dropout_rate=values["dropout_rate"],
        stochastic_depth_rate=values["stochastic_depth_rate"],
        width_coefficient=values["width_coefficient"],
        depth_coefficient=values["depth_coefficient"],
        fix_layer_num=values["fix_layer_num"],
    )
    data = DataConfig(
        task_name=values["task_name"], label_data_dir=label_dir,
        num_train_images=num_train or None, embedded_digits=embedded, eval_images=eval_images,
        mean_rgb=mean, stddev_rgb=std,
        flip=_flip(values, info, small),
        use_cache=values["use_cache"],
        num_train_shards=values["num_train_shards"], deterministic=values["deterministic"],
        skip_corrupt_records=values["skip_corrupt_records"],
        augment=aug,
        tfds_data_dir=values["tfds_data_dir"], tfds_train_split=values["tfds_train_split"],
        tfds_dev_split=values["tfds_dev_split"], tfds_test_split=values["tfds_test_split"],
        tfds_unlabel_split=values["tfds_unlabel_split"],
        data_service_address=_data_service(values),
    )
    train = TrainConfig(
        model_dir=values["model_dir"], train_steps=train_steps, train_last_step_num=last,
        train_ratio=values["train_ratio"], train_batch_size=values["train_batch_size"],
        eval_batch_size=values["eval_batch_size"],
        base_learning_rate=values["base_learning_rate"], final_base_lr=values["final_base_lr"],
        weight_decay=values["weight_decay"], label_smoothing=values["label_smoothing"],
        moving_average_decay=values["moving_average_decay"],
        label_data_sample_prob=values["label_data_sample_prob"],
        iterations_per_loop=values["iterations_per_loop"],
        save_checkpoints_steps=values["save_checkpoints_steps"],
        keep_checkpoint_max=values["keep_checkpoint_max"],
        steps_per_eval=values["steps_per_eval"], skip_host_call=values["skip_host_call"],
        use_bfloat16=use_bf16, use_fp16=values["use_fp16"], seed=values["seed"],
        image_summary_images=values["image_summary_images"],
        init_model_path=_init_model_path(values),
        jit_compile=_jit_compile(values, on_tpu),
    )
    student = StudentConfig()
    if values["mode"] in ("train", "train_and_eval"):
        student = student_config(fv, values, model, aug)
    if student.enabled and not tfds_source.is_tfds(student.unlabel_data_dir):
        pipeline.unlabeled_files(student.unlabel_data_dir)  # fails early, naming the dir
    if train.init_model_path:
        info = run_info.read(train.init_model_path)
        if info is not None:
            run_info.check_model(info, model, ["model_name", "num_classes", "small_image_model",
                                               "width_coefficient", "depth_coefficient"],
                                 f"--init_model_path={train.init_model_path!r}")
    cfg = RunConfig(model=model, data=data, train=train, student=student)
    return _with_checkpoint_model(fv, values, cfg)


def _with_checkpoint_model(fv, values: dict, cfg: RunConfig) -> RunConfig:
    """--mode=eval: the model and normalisation of the checkpoint in --model_dir. A resumed
    training run must build exactly the model of the checkpoint it resumes."""
    model_dir = values["model_dir"]
    if values["mode"] not in (*EVAL_MODES, "train", "train_and_eval") or not model_dir:
        return cfg
    from noisy_student_tf.train import checkpoints

    if not tf.io.gfile.isdir(model_dir) or not checkpoints.has_checkpoint_files(model_dir):
        return cfg
    if values["mode"] in EVAL_MODES:
        model, mean, std = checkpoint_model(fv, cfg, model_dir, "model_dir")
        model = dataclasses.replace(model, fix_layer_num=cfg.model.fix_layer_num)
        return dataclasses.replace(cfg, model=model, data=dataclasses.replace(
            cfg.data, mean_rgb=mean, stddev_rgb=std))
    info = run_info.read(model_dir) if tf.io.gfile.isdir(model_dir) else None
    if info is not None:
        run_info.check_model(info, cfg.model, list(run_info.ARCHITECTURE_FLAGS),
                             f"the checkpoint in --model_dir={model_dir!r} (resuming)")
    return cfg


def _data_service(values: dict) -> Optional[str]:
    address = values["data_service_address"]
    if not address:
        return None
    from noisy_student_tf.data import service

    address = service.normalize_address(address)
    if values["deterministic"]:
        raise UserInputError("--data_service_address and --deterministic are exclusive (the "
                             "service's workers deliver batches in the order they finish them)")
    if values["mode"] not in ("train", "train_and_eval"):
        logging.warning("--data_service_address is for training; --mode=%s reads its input "
                        "locally", values["mode"])
    return address


def _rgb(values: dict, name: str) -> Optional[tuple]:
    raw = values[name]
    if raw is None:
        return None
    try:
        rgb = tuple(float(v) for v in raw)
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or (name == "stddev_rgb" and min(rgb) <= 0):
        raise UserInputError(f"--{name}={','.join(raw)}: three numbers (R,G,B on the 0-255 "
                             "scale) expected" + (", all > 0" if name == "stddev_rgb" else ""))
    return rgb


def _dataset_facts(fv, values: dict, info, label_dir: str, num_classes: int):
    """(classes, mean_rgb, stddev_rgb): --mean_rgb/--stddev_rgb, else for custom data the
    dataset_info.json tools/prepare_data.py wrote into label_dir, else the task's. A prepared
    directory also gives the class count; a conflicting --num_label_classes is an error."""
    prepared = None
    if values["task_name"] == "custom" and label_dir and not tfds_source.is_tfds(label_dir):
        try:
            prepared = prepare.read_info(label_dir)
        except ValueError as e:
            raise UserInputError(f"--label_data_dir={label_dir!r}: {e}") from None
    if prepared and prepared.get("num_classes"):
        if not _present(fv, "num_label_classes"):
            num_classes = int(prepared["num_classes"])
        elif num_classes != prepared["num_classes"]:
            raise UserInputError(
                f"--num_label_classes={num_classes} but {label_dir}/{prepare.INFO_FILE} "
                f"records {prepared['num_classes']} classes")
    mean, std = _rgb(values, "mean_rgb"), _rgb(values, "stddev_rgb")
    if (mean is None) != (std is None):
        raise UserInputError("--mean_rgb and --stddev_rgb go together (give both)")
    if mean is None and prepared and prepared.get("mean_rgb"):
        mean, std = tuple(prepared["mean_rgb"]), tuple(prepared["stddev_rgb"])
        logging.info("mean/std of %s/%s: %s / %s", label_dir, prepare.INFO_FILE, mean, std)
    return num_classes, mean or info.mean_rgb, std or info.stddev_rgb


def _flip(values: dict, info, small: bool) -> bool:
    """--flip, or when unset the task's rule: imagenet flips, svhn and digits never do, and
    custom data flips at large sizes only: at 32x32 (the small-image path, upstream's SVHN path)
    it does not, since digits and text change meaning when mirrored (--flip for CIFAR-like
    images)."""
    if values["flip"] is not None:
        return bool(values["flip"])
    return info.flip and not (values["task_name"] == "custom" and small)


def _jit_compile(values: dict, on_tpu: bool) -> bool:
    """--jit_compile, or when unset: XLA on GPU/TPU, not on CPU (measured 5-7x slower here)."""
    if values["jit_compile"] is not None:
        return bool(values["jit_compile"])
    accelerated = on_tpu or bool(tf.config.list_physical_devices("GPU"))
    logging.info("jit_compile unset: %s (%s)", accelerated,
                 "accelerator found" if accelerated else "CPU only")
    return accelerated


def _init_model_path(values: dict):
    """--init_model/--init_model_path as upstream: used only without a teacher."""
    if not values["init_model"]:
        if values["init_model_path"]:
            logging.warning("--init_model_path is ignored without --init_model=true (upstream)")
        return None
    if values["teacher_model_name"] and values["unlabel_ratio"] > 0:
        logging.warning("--init_model_path is ignored when a teacher is set (upstream only "
                        "initialises the teacher then); the student starts from scratch")
        return None
    return values["init_model_path"]


def teacher_model_config(values: dict, student: ModelConfig) -> ModelConfig:
    """The online teacher's architecture: from run_config.json beside its checkpoint (which
    must name --teacher_model_name and the student's class count), else --teacher_model_name
    with the student's width/depth overrides and resolution rules, as upstream builds it."""
    name = values["teacher_model_name"]
    if name not in MODEL_PARAMS:
        raise UserInputError(
            f"--teacher_model_name={name!r}; expected one of {', '.join(MODEL_PARAMS)}")
    path = values["teacher_model_path"] or ""
    info = run_info.read(path)
    if info is not None:
        what = f"the teacher --teacher_model_path={path!r}"
        run_info.check_model(info, dataclasses.replace(student, model_name=name),
                             ["model_name", "num_classes"], what,
                             {"model_name": "teacher_model_name"})
        return dataclasses.replace(info.model, fix_layer_num=-1)
    size = student.image_size if student.small_image_model else MODEL_PARAMS[name][2]
    return ModelConfig(
        model_name=name, num_classes=student.num_classes, image_size=size,
        small_image_model=student.small_image_model,
        width_coefficient=student.width_coefficient, depth_coefficient=student.depth_coefficient)


def student_config(fv, values: dict, model: ModelConfig, aug) -> StudentConfig:
    ratio = values["unlabel_ratio"]
    if ratio < 0:
        raise UserInputError(f"--unlabel_ratio={ratio} must be >= 0")
    if ratio == 0:
        for name in ("teacher_model_name", "unlabel_data_dir"):
            if values[name]:
                logging.warning("--%s is set but --unlabel_ratio=0: no unlabeled training", name)
        return StudentConfig()
    if not values["unlabel_data_dir"]:
        raise UserInputError(f"--unlabel_ratio={ratio} needs --unlabel_data_dir")
    temp = values["teacher_softmax_temp"]
    if temp != -1 and temp <= 0:
        raise UserInputError(f"--teacher_softmax_temp={temp} must be > 0, or -1 for hard labels")
    teacher = None
    if values["teacher_model_name"]:
        if not values["teacher_model_path"]:
            raise UserInputError("--teacher_model_name needs --teacher_model_path")
        teacher = teacher_model_config(values, model)
    unl_aug = values["unl_aug"]
    if unl_aug == "default":
        unl = aug
    else:
        try:
            unl = augment.AugmentConfig(
                name=unl_aug or None, magnitude=aug.magnitude, num_layers=aug.num_layers,
                cutout=aug.cutout, remove_aug=aug.remove_aug,
                upstream_contrast=aug.upstream_contrast)
        except ValueError as e:
            raise UserInputError(f"--unl_aug: {e}") from None
    norm = {}
    info = run_info.read(values["teacher_model_path"]) if teacher is not None else None
    if info is not None and info.mean_rgb is not None:  # the teacher's own normalisation
        norm = dict(teacher_mean_rgb=info.mean_rgb, teacher_stddev_rgb=info.stddev_rgb)
    return StudentConfig(
        unlabel_ratio=ratio, unlabel_data_dir=values["unlabel_data_dir"],
        teacher_softmax_temp=None if temp == -1 else temp, teacher=teacher,
        teacher_model_path=values["teacher_model_path"], unl_augment=unl, **norm)



def export_model_config(fv, cfg: RunConfig):
    """(ModelConfig, mean_rgb, stddev_rgb) of the run in --model_dir: from its run_config.json
    (a conflicting flag is an error); the flags when the file is absent."""
    return checkpoint_model(fv, cfg, fv.model_dir, "model_dir")


def predict_config_from_flags(fv, cfg: RunConfig):
    """(ModelConfig, PredictConfig) for --mode=predict. Architecture, classes, image size and
    normalisation come from run_config.json beside --predict_ckpt_path (a flag set to another
    value is an error naming both); from the flags when the file is absent."""
    from noisy_student_tf.pseudo.predict import PredictConfig, parse_shard_ids

    model, mean, std = checkpoint_model(fv, cfg, fv.predict_ckpt_path, "predict_ckpt_path")
    if fv["label_data_dir"].present == 0 and fv.task_name != "digits":
        raise UserInputError("--label_data_dir is required: the directory of the shards to "
                             "predict on")
    pcfg = PredictConfig(
        label_data_dir=cfg.data.label_data_dir, output_dir=fv.output_dir, info_dir=fv.info_dir,
        image_size=model.image_size, small_image=model.small_image_model,
        num_classes=model.num_classes, mean_rgb=mean, stddev_rgb=std, file_prefix=fv.file_prefix,
        num_shards=fv.num_shards, shard_ids=parse_shard_ids(fv.shard_id),
        worker_id=fv.worker_id, total_replicas=fv.total_replicas,
        reassign_label=fv.reassign_label, batch_size=fv.predict_batch_size,
        probabilities_format=fv.probabilities_format, top_k=fv.top_k, seed=fv.seed,
        redo_changed=fv.redo_changed)
    pcfg.validate()
    return model, pcfg


def export_config_from_flags(fv, cfg: RunConfig):
    """(ModelConfig, mean_rgb, stddev_rgb, ExportConfig) for --mode=export."""
    from noisy_student_tf.config import ExportConfig

    model, mean, std = export_model_config(fv, cfg)
    return model, mean, std, ExportConfig(
        model_dir=fv.model_dir, export_dir=fv.export_dir,
        moving_average=fv.export_moving_average, top_k=fv.export_top_k)


@dataclasses.dataclass(frozen=True)
class MainJob:
    """Everything main.py does, from its flags: the mode and the configs that mode needs."""
    mode: str
    run: RunConfig
    flag_values: dict  # written to FLAGS.json by training runs
    predict: Optional[tuple] = None  # (ModelConfig, PredictConfig, checkpoint path)
    export: Optional[tuple] = None  # (ModelConfig, mean_rgb, stddev_rgb, ExportConfig)
    robustness: Optional[object] = None  # robustness/evaluate.py RobustnessConfig


def main_job_from_flags(fv, on_tpu: bool = False) -> MainJob:
    """main.py's flags -> MainJob: the only reading of main.py's FLAGS."""
    cfg = run_config_from_flags(fv, on_tpu=on_tpu)
    predict = export = None
    if fv.mode == "predict":
        predict = (*predict_config_from_flags(fv, cfg), fv.predict_ckpt_path)
    elif fv.mode == "export":
        export = export_config_from_flags(fv, cfg)
    robustness = robustness_config_from_flags(fv) if fv.mode == "eval_robustness" else None
    return MainJob(mode=fv.mode, run=cfg, flag_values=fv.flag_values_dict(), predict=predict,
                   export=export, robustness=robustness)


def robustness_config_from_flags(fv):
    """--robustness_* (and --seed, --eval_batch_size) -> RobustnessConfig."""
    from noisy_student_tf.robustness.evaluate import RobustnessConfig

    if not fv.model_dir:
        raise UserInputError("--mode=eval_robustness needs --model_dir (a trained checkpoint)")
    kwargs = {}
    if fv.robustness_corruptions is not None:
        kwargs["corruptions"] = tuple(c for c in fv.robustness_corruptions if c)
    if fv.robustness_perturbations is not None:
        kwargs["perturbations"] = tuple(p for p in fv.robustness_perturbations if p)
    bad = [s for s in fv.robustness_severities if not s.strip().isdigit()]
    if bad:
        raise UserInputError(f"--robustness_severities: {bad[0]!r} is not a severity (1-5)")
    try:
        severities = tuple(int(s) for s in fv.robustness_severities)
        return RobustnessConfig(
            severities=severities, frames=fv.robustness_frames, subset=fv.robustness_subset,
            max_images=fv.robustness_max_images, seed=fv.seed, batch_size=fv.eval_batch_size,
            references=tuple(fv.robustness_reference or ()),
            tfds_sets=tuple(t for t in fv.robustness_tfds or () if t), **kwargs)
    except ValueError as e:
        raise UserInputError(f"--{e}") from None
