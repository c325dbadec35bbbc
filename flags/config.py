"""Parsed flags -> noisy_student_tf.config objects. The only place that interprets FLAGS."""

import os

import tensorflow as tf
from absl import logging

from flags.main_flags import NO_EFFECT_FLAGS
from noisy_student_tf import io_utils
from noisy_student_tf.config import (DataConfig, ModelConfig, RunConfig, StudentConfig,
                                     TrainConfig)
from noisy_student_tf.data import augment, digits, pipeline, task_info
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.models import MODEL_PARAMS

MODES = ("train", "eval", "train_and_eval", "predict", "export")

# --task_name=digits: values used for flags the user did not pass, so that
# `main.py --task_name=digits --mode=train_and_eval --model_dir=DIR` is a complete run of a few
# minutes on 2 CPU cores. The model is B0 scaled to width/depth 0.5 (676k parameters): full B0 at
# 32px trains at ~70 images/s here, too slow for a default. The learning rate stays upstream's
# 0.016: it was best on the dev split of 0.016 / 0.032 / 0.064 (docs/benchmarks.md).
DIGITS_DEFAULTS = {
    "width_coefficient": 0.5,
    "depth_coefficient": 0.5,
    "train_batch_size": 64,
    "train_steps": 600,
    "eval_batch_size": 128,
    "iterations_per_loop": 50,
    "save_checkpoints_steps": 100,
    "steps_per_eval": 200,
}


def _present(flag_values, name: str) -> bool:
    return flag_values[name].present > 0


def task_defaults(flag_values) -> dict:
    """Flag name -> value to use where the user did not set the flag."""
    if flag_values.task_name == "digits":
        return {k: v for k, v in DIGITS_DEFAULTS.items() if not _present(flag_values, k)}
    return {}


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
    if values["task_name"] == "digits" and not label_dir:
        label_dir = digits.prepare(values["data_cache_dir"])
    if not label_dir:
        raise UserInputError("--label_data_dir is required for --task_name="
                             f"{values['task_name']}")

    train_files = None
    num_train = values["num_train_images"] or info.num_train_images
    if values["task_name"] == "digits" and values["label_data_dir"]:
        num_train = values["num_train_images"]  # another digits split: count its records
    if values["mode"] in ("train", "train_and_eval"):
        train_files = pipeline.train_files(label_dir, values["num_train_shards"])
        if num_train is None:
            num_train = pipeline.count_records(train_files)
            logging.info("Counted %d training images in %d files", num_train, len(train_files))
        if num_train < 1:
            raise UserInputError(f"--label_data_dir={label_dir!r}: training files are empty")
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
        num_train_images=num_train or 0, eval_images=eval_images,
        mean_rgb=info.mean_rgb, stddev_rgb=info.stddev_rgb,
        flip=info.flip, use_cache=values["use_cache"],
        num_train_shards=values["num_train_shards"], deterministic=values["deterministic"],
        skip_corrupt_records=values["skip_corrupt_records"],
        augment=aug,
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
    if student.enabled:
        pipeline.unlabeled_files(student.unlabel_data_dir)  # fails early, naming the dir
    return RunConfig(model=model, data=data, train=train, student=student)


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


def saved_model_config(path: str, name: str):
    """The ModelConfig in run_config.json beside checkpoint `path` (or in model_dir `path`) when
    it names model `name`, else None."""
    run_dir = path if tf.io.gfile.isdir(path) else os.path.dirname(path)
    saved = io_utils.read_json(os.path.join(run_dir, "run_config.json")) if run_dir else None
    if saved and saved.get("model", {}).get("model_name") == name:
        fields = {f: saved["model"][f] for f in ModelConfig.__dataclass_fields__
                  if f in saved["model"]}
        return ModelConfig(**fields)
    return None


def teacher_model_config(values: dict, student: ModelConfig) -> ModelConfig:
    """The online teacher's architecture: from run_config.json beside its checkpoint when that
    names the same model (so a digits-preset teacher loads), else --teacher_model_name with the
    student's width/depth overrides and resolution rules, as upstream builds it."""
    name = values["teacher_model_name"]
    if name not in MODEL_PARAMS:
        raise UserInputError(
            f"--teacher_model_name={name!r}; expected one of {', '.join(MODEL_PARAMS)}")
    saved = saved_model_config(values["teacher_model_path"] or "", name)
    if saved is not None:
        return saved
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
    return StudentConfig(
        unlabel_ratio=ratio, unlabel_data_dir=values["unlabel_data_dir"],
        teacher_softmax_temp=temp, teacher=teacher,
        teacher_model_path=values["teacher_model_path"], unl_augment=unl)



def export_model_config(fv, cfg: RunConfig):
    """(ModelConfig, mean_rgb, stddev_rgb) of the run in --model_dir: from its run_config.json,
    which must name --model_name; the flags when the file is absent."""
    saved = io_utils.read_json(os.path.join(fv.model_dir, "run_config.json"))
    if saved is None:
        return cfg.model, cfg.data.mean_rgb, cfg.data.stddev_rgb
    name = saved.get("model", {}).get("model_name")
    if name != cfg.model.model_name:
        raise UserInputError(f"--model_dir={fv.model_dir!r} holds a {name} run (run_config.json)"
                             f", not --model_name={cfg.model.model_name}")
    data = saved.get("data", {})
    return (saved_model_config(fv.model_dir, name), tuple(data.get("mean_rgb", cfg.data.mean_rgb)),
            tuple(data.get("stddev_rgb", cfg.data.stddev_rgb)))


def predict_config_from_flags(fv, cfg: RunConfig):
    """(ModelConfig, PredictConfig) for --mode=predict. The architecture comes from
    run_config.json beside --predict_ckpt_path when it names --model_name (a digits-preset
    model loads without repeating its width/depth flags), else from the flags."""
    from noisy_student_tf.pseudo.predict import PredictConfig, parse_shard_ids

    model = saved_model_config(fv.predict_ckpt_path, cfg.model.model_name) or cfg.model
    if fv["label_data_dir"].present == 0 and fv.task_name != "digits":
        raise UserInputError("--label_data_dir is required: the directory of the shards to "
                             "predict on")
    pcfg = PredictConfig(
        label_data_dir=cfg.data.label_data_dir, output_dir=fv.output_dir, info_dir=fv.info_dir,
        image_size=model.image_size, small_image=model.small_image_model,
        num_classes=model.num_classes, mean_rgb=tuple(cfg.data.mean_rgb),
        stddev_rgb=tuple(cfg.data.stddev_rgb), file_prefix=fv.file_prefix,
        num_shards=fv.num_shards, shard_ids=parse_shard_ids(fv.shard_id),
        worker_id=fv.worker_id, total_replicas=fv.total_replicas,
        reassign_label=fv.reassign_label, batch_size=fv.predict_batch_size,
        probabilities_format=fv.probabilities_format, top_k=fv.top_k, seed=fv.seed)
    pcfg.validate()
    return model, pcfg
