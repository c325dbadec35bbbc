"""Every upstream main.py / predict_label.py flag exists with its name, type and default, and
flags turn into the right config (task forcing, digits defaults, bad values)."""

import os

import pytest
from absl import flags as absl_flags

from flags.config import run_config_from_flags
from noisy_student_tf.errors import UserInputError
from tests.helpers import write_dataset
from tests.upstream_flags import UPSTREAM_MAIN, UPSTREAM_PREDICT

# (name, absl flag type, default) of upstream main.py (59 flags) and predict_label.py (10).
ABSL_TYPES = {"string": "string", "int": "int", "float": "float", "bool": "bool"}


def test_upstream_flag_count():
    assert len(UPSTREAM_MAIN) == 59 and len(UPSTREAM_PREDICT) == 10


@pytest.mark.parametrize("name,kind,default", UPSTREAM_MAIN + UPSTREAM_PREDICT)
def test_flag_name_type_default(fv, name, kind, default):
    assert name in fv, name
    flag = fv[name]
    assert flag.flag_type() == ABSL_TYPES[kind], (name, flag.flag_type())
    assert flag.default == default
    assert flag.help and len(flag.help) > 10  # every flag has a real help string


def parse(fv, *args):
    fv(["main.py", *args])
    return fv


def test_digits_defaults_and_forcing(fv, digits_dir, tmp_path):
    parse(fv, "--task_name=digits", f"--label_data_dir={digits_dir}",
          f"--model_dir={tmp_path}", "--train_steps=10")
    cfg = run_config_from_flags(fv)
    assert (cfg.model.image_size, cfg.model.small_image_model, cfg.model.num_classes) == (
        32, True, 10)
    assert cfg.model.width_coefficient == 0.5  # digits preset, flag not given
    assert cfg.train.train_steps == 10  # explicit flag beats the preset
    from noisy_student_tf.train.run import resolve_data

    assert resolve_data(cfg).data.num_train_images == 1257  # a given digits dir is counted
    assert cfg.train.use_bfloat16 is False  # default True applies on TPU only


def test_svhn_forces_small_image(fv, tmp_path):
    parse(fv, "--task_name=svhn", f"--label_data_dir={tmp_path}", f"--model_dir={tmp_path}",
          "--mode=eval", "--num_label_classes=100", "--input_image_size=224")
    cfg = run_config_from_flags(fv)
    assert (cfg.model.image_size, cfg.model.small_image_model, cfg.model.num_classes) == (
        32, True, 10)
    assert cfg.data.num_train_images == 69257
    assert cfg.data.mean_rgb[0] == pytest.approx(0.4376821 * 255)


def test_custom_task_counts_records_when_the_run_starts(fv, tmp_path):

    write_dataset(tmp_path, {"train": 5, "dev": 2}, num_classes=4)
    parse(fv, "--task_name=custom", f"--label_data_dir={tmp_path}", f"--model_dir={tmp_path}",
          "--num_label_classes=4", "--input_image_size=32", "--train_ratio=2")
    cfg = run_config_from_flags(fv)
    assert cfg.data.num_train_images is None  # reading flags counts nothing
    from noisy_student_tf.train.run import resolve_data

    assert resolve_data(cfg).data.num_train_images == 5  # the run counts them
    assert cfg.model.num_classes == 4 and cfg.model.image_size == 32
    assert cfg.train.train_steps == 2 * 109474


@pytest.mark.parametrize("args,flip", [
    (["--small_image_model"], False),  # 32x32 custom data: upstream's SVHN path, no flips
    (["--small_image_model", "--flip"], True),
    ([], True),  # larger custom images flip, as imagenet
    (["--noflip"], False),
])
def test_custom_flip_rule(fv, tmp_path, args, flip):

    write_dataset(tmp_path, {"train": 2}, num_classes=4)
    parse(fv, "--task_name=custom", f"--label_data_dir={tmp_path}", f"--model_dir={tmp_path}",
          "--num_label_classes=4", "--input_image_size=32", *args)
    assert run_config_from_flags(fv).data.flip is flip


def test_train_last_step_num_scaled_by_ratio(fv, digits_dir, tmp_path):
    parse(fv, "--task_name=digits", f"--label_data_dir={digits_dir}", f"--model_dir={tmp_path}",
          "--train_steps=100", "--train_last_step_num=40", "--train_ratio=2")
    t = run_config_from_flags(fv).train
    assert (t.train_steps, t.last_step, t.start_from_step) == (200, 80, 120)


@pytest.mark.parametrize("args,match", [
    (["--model_name=efficientnet-b9"], "model_name"),
    (["--task_name=cifar"], "task_name"),
    (["--num_label_classes=1"], "num_label_classes"),
    (["--mode=fit"], "mode"),
    (["--init_model"], "--init_model=true needs --init_model_path"),
    (["--label_data_sample_prob=0"], "label_data_sample_prob"),
])
def test_bad_flags(fv, tmp_path, args, match):
    parse(fv, "--task_name=custom", f"--label_data_dir={tmp_path}", f"--model_dir={tmp_path}",
          *args)
    with pytest.raises(UserInputError, match=match):
        run_config_from_flags(fv)


@pytest.mark.parametrize("args,match", [
    (["--unlabel_ratio=-1"], "unlabel_ratio=-1"),
    (["--unlabel_ratio=2"], "needs --unlabel_data_dir"),
    (["--unlabel_ratio=2", "--unlabel_data_dir=/nonexistent"], "/nonexistent"),
    (["--unlabel_ratio=2", "--unlabel_data_dir=DIGITS", "--teacher_model_name=efficientnet-b0"],
     "needs --teacher_model_path"),
    (["--unlabel_ratio=2", "--unlabel_data_dir=DIGITS", "--teacher_softmax_temp=0"],
     "teacher_softmax_temp=0"),
    (["--unlabel_ratio=2", "--unlabel_data_dir=DIGITS", "--unl_aug=v9"], "unl_aug"),
])
def test_bad_student_flags(fv, digits_dir, tmp_path, args, match):
    args = [a.replace("DIGITS", digits_dir) for a in args]
    parse(fv, "--task_name=digits", f"--label_data_dir={digits_dir}", f"--model_dir={tmp_path}",
          *args)
    with pytest.raises(UserInputError, match=match):
        run_config_from_flags(fv)


def test_student_config_from_flags(fv, digits_dir, tmp_path):
    parse(fv, "--task_name=digits", f"--label_data_dir={digits_dir}", f"--model_dir={tmp_path}",
          "--unlabel_ratio=3", f"--unlabel_data_dir={digits_dir}", "--teacher_softmax_temp=1",
          "--teacher_model_name=efficientnet-b1", f"--teacher_model_path={tmp_path}",
          "--augment_name=v1", "--unl_aug=", "--train_batch_size=10")
    st = run_config_from_flags(fv).student
    assert st.enabled and st.unlabeled_batch_size(10, 1.0) == 30
    # no run_config.json beside the teacher: upstream's rule, student overrides + 32px
    assert st.teacher.model_name == "efficientnet-b1" and st.teacher.image_size == 32
    assert st.teacher.width_coefficient == 0.5
    assert st.unl_augment.name is None  # --unl_aug='' turns RandAugment off for unlabeled
    assert st.teacher_softmax_temp == 1.0
    # upstream's -1 sentinel (hard labels) becomes None at the boundary
    parse(fv, "--task_name=digits", f"--label_data_dir={digits_dir}", f"--model_dir={tmp_path}",
          "--unlabel_ratio=3", f"--unlabel_data_dir={digits_dir}", "--teacher_softmax_temp=-1")
    assert run_config_from_flags(fv).student.teacher_softmax_temp is None


# Upstream filter_unlabel.py's 24 flags.
UPSTREAM_FILTER = [
    ("input_dir", "string", ""), ("prediction_dir", "string", ""), ("info_dir", "string", ""),
    ("prelim_stats_dir", "string", ""), ("output_dir", "string", ""),
    ("num_shards", "int", 128), ("only_use_num_shards", "int", -1), ("shard_id", "int", 0),
    ("num_image", "int", 1300), ("total_replicas", "int", 1),
    ("total_label_replicas", "int", -1), ("task", "int", -1), ("debug", "int", 0),
    ("min_threshold", "float", 0.0), ("max_prob", "float", 2), ("num_label_classes", "int", 1000),
    ("upsample", "int", 1), ("only_get_stats", "int", 0), ("file_prefix", "string", "train"),
    ("data_type", "string", "tfrecord"), ("use_top", "int", 1), ("eval_imagenet_p", "bool", False),
    ("use_all", "bool", False),
]


def test_filter_flags_match_upstream():
    from flags.filter_flags import define_filter_flags

    values = absl_flags.FlagValues()
    define_filter_flags(values)
    assert len(UPSTREAM_FILTER) == 23
    for name, kind, default in UPSTREAM_FILTER:
        assert name in values, name
        assert values[name].flag_type() == ABSL_TYPES[kind], name
        assert values[name].default == default, name


def test_predict_flags_to_config(fv, digits_dir, tmp_path):
    from flags.config import predict_config_from_flags

    parse(fv, "--task_name=digits", "--mode=predict", f"--label_data_dir={digits_dir}",
          "--predict_ckpt_path=/nonexistent", f"--output_dir={tmp_path}",
          f"--info_dir={tmp_path}", "--shard_id=3,1", "--num_shards=4", "--total_replicas=2",
          "--worker_id=1", "--predict_batch_size=32")
    model, cfg = predict_config_from_flags(fv, run_config_from_flags(fv))
    assert (cfg.shard_ids, cfg.worker_id, cfg.total_replicas, cfg.batch_size) == (
        (3, 1), 1, 2, 32)
    assert cfg.image_size == 32 and cfg.small_image and cfg.num_classes == 10
    fv.unparse_flags()
    parse(fv, "--task_name=digits", "--mode=predict", f"--label_data_dir={digits_dir}",
          "--predict_ckpt_path=/x", f"--output_dir={tmp_path}")
    with pytest.raises(UserInputError, match="--info_dir is required"):
        predict_config_from_flags(fv, run_config_from_flags(fv))


def test_jit_compile_defaults_off_on_cpu(fv, digits_dir, tmp_path):
    parse(fv, "--task_name=digits", f"--label_data_dir={digits_dir}", f"--model_dir={tmp_path}")
    assert run_config_from_flags(fv).train.jit_compile is False  # no GPU/TPU here
    fv.unparse_flags()
    parse(fv, "--task_name=digits", f"--label_data_dir={digits_dir}", f"--model_dir={tmp_path}",
          "--jit_compile")
    assert run_config_from_flags(fv).train.jit_compile is True


def test_fp16_and_bfloat16_flags(fv, digits_dir, tmp_path):
    base = ["--task_name=digits", f"--label_data_dir={digits_dir}", f"--model_dir={tmp_path}"]
    parse(fv, *base, "--use_fp16")
    train = run_config_from_flags(fv).train
    assert train.use_fp16 and not train.use_bfloat16
    # On a TPU the default use_bfloat16=True yields to an explicit --use_fp16.
    assert not run_config_from_flags(fv, on_tpu=True).train.use_bfloat16
    fv.unparse_flags()
    parse(fv, *base, "--use_fp16", "--use_bfloat16")
    with pytest.raises(UserInputError, match="--use_fp16 and --use_bfloat16 are exclusive"):
        run_config_from_flags(fv)


def test_tool_flags_become_configs_in_flags_package(tmp_path):
    """The loop driver's and the converter's flags are defined and read in flags/, like
    main.py's and the filter's (the tools only dispatch)."""
    from flags.convert_flags import define_convert_flags, model_config_from_flags
    from flags.loop_flags import define_loop_flags, loop_config_from_flags

    fv = absl_flags.FlagValues()
    define_loop_flags(fv)
    fv(["run_noisy_student.py", f"--output_dir={tmp_path}", "--num_iterations=2",
        "--student_model_names=efficientnet-b0,efficientnet-b1", "--teacher_softmax_temp=-1"])
    cfg = loop_config_from_flags(fv)
    assert cfg.output_dir == str(tmp_path) and cfg.num_iterations == 2
    assert cfg.student_model_names == ("efficientnet-b0", "efficientnet-b1")
    fv = absl_flags.FlagValues()
    define_loop_flags(fv)
    fv(["run_noisy_student.py"])
    with pytest.raises(UserInputError, match="--output_dir is required"):
        loop_config_from_flags(fv)
    fv = absl_flags.FlagValues()
    define_convert_flags(fv)
    fv(["convert_checkpoint.py", "--model_name=efficientnet-b2", "--small_image_model",
        "--num_label_classes=10"])
    model = model_config_from_flags(fv)
    assert (model.model_name, model.image_size, model.num_classes) == ("efficientnet-b2", 32, 10)


def test_reading_flags_writes_no_data(fv, tmp_path):
    """The embedded digits are written when a run starts, not when flags become a config."""
    from noisy_student_tf.train.run import resolve_data

    cache = tmp_path / "cache"
    parse(fv, "--task_name=digits", f"--data_cache_dir={cache}", f"--model_dir={tmp_path / 'm'}")
    cfg = run_config_from_flags(fv)
    assert cfg.data.embedded_digits and not cache.exists()
    resolved = resolve_data(cfg)
    assert sorted(os.listdir(resolved.data.label_data_dir))[:2] == [
        "DONE", "dev-00000-of-00002"]
    assert resolved.data.num_train_images == 1257  # the digits task's own count


def test_main_job_holds_everything_main_needs(fv, tmp_path, digits_dir):
    from flags.config import main_job_from_flags

    parse(fv, "--task_name=digits", f"--label_data_dir={digits_dir}",
          f"--model_dir={tmp_path}", "--mode=train")
    job = main_job_from_flags(fv)
    assert job.mode == "train" and job.predict is None and job.export is None
    assert job.flag_values["model_dir"] == str(tmp_path)
    parse(fv, "--task_name=digits", f"--label_data_dir={digits_dir}", "--mode=predict",
          f"--predict_ckpt_path={tmp_path}", f"--output_dir={tmp_path / 'p'}",
          f"--info_dir={tmp_path / 'i'}", "--shard_id=0,1")
    model_cfg, pcfg, checkpoint = main_job_from_flags(fv).predict
    assert checkpoint == str(tmp_path) and pcfg.shard_ids == (0, 1)
    assert model_cfg.image_size == 32
    parse(fv, "--task_name=digits", f"--label_data_dir={digits_dir}", "--mode=export",
          f"--model_dir={tmp_path}", f"--export_dir={tmp_path / 'e'}", "--export_top_k=3")
    *_, ecfg = main_job_from_flags(fv).export
    assert ecfg.export_dir == str(tmp_path / "e") and ecfg.top_k == 3
