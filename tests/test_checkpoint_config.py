"""A checkpoint's run_config.json decides architecture, classes, image size and normalisation
for eval, predict, export, init, online teachers and resumed runs; conflicting flags are one-line
errors naming both values."""

import dataclasses
import json
import os

import pytest

from flags.config import export_model_config, predict_config_from_flags, run_config_from_flags
from noisy_student_tf.config import DataConfig, ModelConfig, RunConfig
from noisy_student_tf.data import task_info
from noisy_student_tf.errors import UserInputError

DIGITS = task_info.get_task_info("digits")


def parse(fv, *args):
    fv.unparse_flags()
    fv(["main.py", *args])
    return fv


def fake_run(path, model: ModelConfig, task="digits", with_checkpoint=True) -> str:
    """A model_dir as main.py leaves it: run_config.json (+ a checkpoint state file)."""
    os.makedirs(path, exist_ok=True)
    info = task_info.get_task_info(task)
    cfg = RunConfig(model=model, data=DataConfig(task_name=task, mean_rgb=info.mean_rgb,
                                                 stddev_rgb=info.stddev_rgb))
    json.dump(dataclasses.asdict(cfg), open(os.path.join(path, "run_config.json"), "w"))
    if with_checkpoint:
        open(os.path.join(path, "model.ckpt-5.index"), "w").close()
        open(os.path.join(path, "checkpoint"), "w").write(
            'model_checkpoint_path: "model.ckpt-5"\n')
    return str(path)


DIGITS_B1 = ModelConfig("efficientnet-b1", 10, 32, True, width_coefficient=0.5,
                        depth_coefficient=0.55)


def test_predict_takes_model_and_normalisation_from_the_checkpoint(fv, tmp_path):
    run = fake_run(tmp_path / "teacher", DIGITS_B1)
    unl = tmp_path / "unl"
    parse(fv, "--mode=predict", f"--predict_ckpt_path={run}", f"--label_data_dir={unl}",
          f"--output_dir={tmp_path}", f"--info_dir={tmp_path}")  # no --task_name, no model
    model, pcfg = predict_config_from_flags(fv, run_config_from_flags(fv))
    assert model.model_name == "efficientnet-b1" and model.depth_coefficient == 0.55
    assert (pcfg.image_size, pcfg.small_image, pcfg.num_classes) == (32, True, 10)
    assert pcfg.mean_rgb == DIGITS.mean_rgb and pcfg.stddev_rgb == DIGITS.stddev_rgb
    parse(fv, "--mode=predict", f"--predict_ckpt_path={run}", f"--label_data_dir={unl}",
          f"--output_dir={tmp_path}", f"--info_dir={tmp_path}", "--model_name=efficientnet-b2")
    with pytest.raises(UserInputError) as e:
        predict_config_from_flags(fv, run_config_from_flags(fv))
    msg = str(e.value)
    assert "--model_name=efficientnet-b2" in msg and "model_name=efficientnet-b1" in msg
    parse(fv, "--mode=predict", f"--predict_ckpt_path={run}", f"--label_data_dir={unl}",
          f"--output_dir={tmp_path}", f"--info_dir={tmp_path}", "--task_name=imagenet")
    with pytest.raises(UserInputError, match="--task_name=imagenet normalises with mean"):
        predict_config_from_flags(fv, run_config_from_flags(fv))


def test_eval_builds_the_checkpoint_model(fv, tmp_path, digits_dir):
    run = fake_run(tmp_path / "run", DIGITS_B1)
    parse(fv, "--mode=eval", f"--model_dir={run}", "--task_name=custom",
          f"--label_data_dir={digits_dir}", "--num_label_classes=10")
    cfg = run_config_from_flags(fv)
    assert cfg.model.model_name == "efficientnet-b1" and cfg.model.small_image_model
    assert cfg.data.mean_rgb == DIGITS.mean_rgb  # the checkpoint's normalisation
    parse(fv, "--mode=eval", f"--model_dir={run}", "--task_name=custom",
          f"--label_data_dir={digits_dir}", "--num_label_classes=7")
    with pytest.raises(UserInputError, match=r"--num_label_classes=7 conflicts .* "
                                             r"num_classes=10"):
        run_config_from_flags(fv)
    parse(fv, "--mode=eval", f"--model_dir={run}", "--task_name=digits",
          "--width_coefficient=1.0")
    with pytest.raises(UserInputError, match="--width_coefficient=1.0 conflicts"):
        run_config_from_flags(fv)


def test_resume_with_another_architecture_is_refused(fv, tmp_path, digits_dir):
    run = fake_run(tmp_path / "run", DIGITS_B1)
    before = open(os.path.join(run, "run_config.json")).read()
    parse(fv, "--mode=train", f"--model_dir={run}", "--task_name=digits",
          f"--label_data_dir={digits_dir}", "--model_name=efficientnet-b0")
    with pytest.raises(UserInputError, match=r"--model_name=efficientnet-b0 conflicts with the "
                                             r"checkpoint in --model_dir=.*\(resuming\)"):
        run_config_from_flags(fv)
    assert open(os.path.join(run, "run_config.json")).read() == before
    parse(fv, "--mode=train", f"--model_dir={run}", "--task_name=digits",
          f"--label_data_dir={digits_dir}", "--model_name=efficientnet-b1")
    assert run_config_from_flags(fv).model.depth_coefficient == 0.55  # same model: resumes


def test_teacher_and_init_checkpoints_must_agree(fv, tmp_path, digits_dir):
    teacher = fake_run(tmp_path / "teacher", DIGITS_B1)
    common = ["--mode=train", f"--model_dir={tmp_path / 'student'}", "--task_name=digits",
              f"--label_data_dir={digits_dir}", "--unlabel_ratio=1",
              f"--unlabel_data_dir={digits_dir}", f"--teacher_model_path={teacher}"]
    parse(fv, *common, "--teacher_model_name=efficientnet-b1")
    st = run_config_from_flags(fv).student
    assert st.teacher == DIGITS_B1 and st.teacher_mean_rgb == DIGITS.mean_rgb
    parse(fv, *common, "--teacher_model_name=efficientnet-b0")
    with pytest.raises(UserInputError, match="--teacher_model_name=efficientnet-b0 conflicts "
                                             "with the teacher"):
        run_config_from_flags(fv)
    other = fake_run(tmp_path / "t7", dataclasses.replace(DIGITS_B1, num_classes=7))
    parse(fv, *common[:-1], f"--teacher_model_path={other}",
          "--teacher_model_name=efficientnet-b1")
    with pytest.raises(UserInputError, match="--num_label_classes=10 conflicts with the "
                                             "teacher.*num_classes=7"):
        run_config_from_flags(fv)
    parse(fv, "--mode=train", f"--model_dir={tmp_path / 's2'}", "--task_name=digits",
          f"--label_data_dir={digits_dir}", "--init_model", f"--init_model_path={teacher}")
    with pytest.raises(UserInputError, match="--model_name=efficientnet-b0 conflicts with "
                                             "--init_model_path"):
        run_config_from_flags(fv)


def test_export_uses_the_run_config(fv, tmp_path, digits_dir):
    run = fake_run(tmp_path / "run", DIGITS_B1)
    parse(fv, "--mode=export", f"--model_dir={run}", f"--export_dir={tmp_path / 'e'}",
          "--task_name=digits")
    model, mean, std = export_model_config(fv, run_config_from_flags(fv))
    assert model == DIGITS_B1 and mean == DIGITS.mean_rgb
    parse(fv, "--mode=export", f"--model_dir={run}", f"--export_dir={tmp_path / 'e'}",
          "--task_name=digits", "--model_name=efficientnet-b3")
    with pytest.raises(UserInputError, match="--model_name=efficientnet-b3 conflicts"):
        export_model_config(fv, run_config_from_flags(fv))
