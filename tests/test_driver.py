"""The loop driver's plan and stage bookkeeping, without training anything."""

import io
import json
import logging as py_logging
import os

import pytest

from noisy_student_tf.driver import loop as loop_lib
from noisy_student_tf.driver import stages as stages_lib
from noisy_student_tf.driver import summary as summary_lib
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.models import params as params_lib



@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def digits_plan(tmp_path, cache, **kw):
    cfg = loop_lib.LoopConfig(output_dir=str(tmp_path / "out"), data_cache_dir=str(cache), **kw)
    return loop_lib.LoopPlan(cfg, root=str(tmp_path))


def args_of(stage):
    return stage.commands()[0][1:]


def test_each_stage_builds_the_model_it_names(tmp_path, cache):
    p = digits_plan(tmp_path, cache, num_iterations=2,
                    student_model_names=("efficientnet-b0", "efficientnet-b1"))
    assert [s.name for s in p.stages] == ["teacher", "student_1", "student_2"]
    params = {r.name: r.params for r in p.rounds}
    assert params["student_2"] > params["student_1"] == params["teacher"]
    for name, stage in (("efficientnet-b0", p.stages[1]), ("efficientnet-b1", p.stages[2])):
        w, d = params_lib.SMALL_IMAGE_PRESETS[name][:2]
        s = stage.settings
        assert (s["model_name"], float(s["width_coefficient"]),
                float(s["depth_coefficient"])) == (name, w, d)
    assert params["student_2"] == params_lib.param_count(
        "efficientnet-b1", 10, width_coefficient=0.5, depth_coefficient=0.55,
        small_image_model=True)
    # round 2 is taught by round 1's student (paths inside the loop recorded relative to it)
    assert p.stages[2].settings["teacher_model_path"] == "<output_dir>/student_1"
    assert f"--teacher_model_path={p.stages[1].directory}" in args_of(p.stages[2])
    assert p.stages[2].settings["teacher_model_name"] == "efficientnet-b0"


def test_teacher_is_the_noise_matched_baseline(tmp_path, cache):
    p = digits_plan(tmp_path, cache, with_baseline=True)
    assert [s.name for s in p.stages] == ["teacher", "student_1"]  # nothing more to train
    baseline = p.rounds[-1]
    assert baseline.name == "baseline" and baseline.same_as == "teacher"
    teacher = p.stages[0].settings
    student = p.stages[1].settings
    for key in ("augment_name", "randaug_mag", "train_steps", "base_learning_rate",
                "train_batch_size", "model_name", "width_coefficient"):
        assert teacher[key] == student[key], key
    assert "dropout_rate" not in teacher  # the model's own dropout, as the student's
    # 1200 steps x 32 over 150 labels: the LR decays to base / 10 over the run
    assert teacher["final_base_lr"] == "0.0032" == student["final_base_lr"]
    short = digits_plan(tmp_path, cache, train_steps=10)  # under upstream's 5 warmup epochs
    assert "final_base_lr" not in short.stages[0].settings


def test_unnoised_teacher_and_larger_student_get_their_own_baseline(tmp_path, cache):
    p = digits_plan(tmp_path, cache, with_baseline=True, teacher_noise=False)
    assert [s.name for s in p.stages] == ["teacher", "student_1", "baseline"]
    t = p.stages[0].settings
    assert (t["augment_name"], t["dropout_rate"], t["stochastic_depth_rate"]) == ("", "0", "0")
    assert p.stages[2].settings["augment_name"] == "v1"
    assert "unlabel_data_dir" not in p.stages[2].settings
    p = digits_plan(tmp_path, cache, with_baseline=True,
                    student_model_names=("efficientnet-b2",))
    assert [s.name for s in p.stages] == ["teacher", "student_1", "baseline"]
    assert p.stages[2].settings["model_name"] == "efficientnet-b2"


def test_smaller_student_warns(tmp_path, cache, caplog):
    with caplog.at_level(py_logging.WARNING):
        digits_plan(tmp_path, cache, teacher_model_name="efficientnet-b2",
                    student_model_names=("efficientnet-b0",))
    assert "is smaller than its teacher" in caplog.text


def test_offline_rounds_reassign_with_the_new_teacher(tmp_path, cache):
    p = digits_plan(tmp_path, cache, teacher_mode="offline", num_iterations=2)
    assert [s.name for s in p.stages] == ["teacher", "pseudo_1", "student_1", "pseudo_2",
                                          "student_2"]
    reassign = p.stages[3].settings
    assert reassign["reassign_label"] == "true"
    assert reassign["predict_ckpt_path"] == "<output_dir>/student_1"  # student_1 re-labels
    assert reassign["label_data_dir"] == "<output_dir>/pseudo_1/filter_data/data"
    assert p.stages[4].settings["unlabel_data_dir"] == "<output_dir>/pseudo_2/reassign"
    assert "teacher_model_path" not in p.stages[4].settings


def test_bad_loop_settings(tmp_path, cache):
    with pytest.raises(UserInputError, match="lists 1 models"):
        digits_plan(tmp_path, cache, num_iterations=2, student_model_names=("efficientnet-b0",))
    with pytest.raises(UserInputError, match="--base_learning_rate=-0.1 is out of range"):
        digits_plan(tmp_path, cache, base_learning_rate=-0.1)
    with pytest.raises(UserInputError, match="not one of"):
        digits_plan(tmp_path, cache, teacher_model_name="resnet")


def test_stale_stage_is_refused_then_retrained_on_request(tmp_path, cache):
    old = digits_plan(tmp_path, cache)
    for stage in old.stages:  # as if the loop had run with randaug_mag 5
        os.makedirs(stage.directory)
        json.dump({"settings": stage.settings}, open(os.path.join(stage.directory,
                                                                 stages_lib.CONFIG_FILE), "w"))
        open(os.path.join(stage.directory, stages_lib.DONE_FILE), "w").close()
    same = digits_plan(tmp_path, cache)
    assert stages_lib.check_stages(same.stages, same.out, retrain_changed=False) == []
    new = digits_plan(tmp_path, cache, randaug_mag=9)
    with pytest.raises(UserInputError) as e:
        stages_lib.check_stages(new.stages, new.out, retrain_changed=False)
    msg = str(e.value)
    assert "stage teacher" in msg and "--randaug_mag 5 -> 9" in msg and "\n" not in msg
    assert "--retrain_changed" in msg
    assert all(s.done for s in new.stages)  # nothing touched
    # only the student changed: the message names it; its teacher is reused
    new = digits_plan(tmp_path, cache, unlabel_ratio=3)
    with pytest.raises(UserInputError, match=r"stage student_1 .*--unlabel_ratio 2 -> 3"):
        stages_lib.check_stages(new.stages, new.out, retrain_changed=False)
    moved = stages_lib.check_stages(new.stages, new.out, retrain_changed=True)
    assert moved == ["student_1"]
    assert new.stages[0].done and not new.stages[1].done
    assert os.path.isdir(new.stages[1].directory + ".replaced")


def test_changed_teacher_makes_its_students_stale(tmp_path, cache):
    old = digits_plan(tmp_path, cache)
    student = old.stages[1]
    os.makedirs(student.directory)
    json.dump({"settings": student.settings},
              open(os.path.join(student.directory, stages_lib.CONFIG_FILE), "w"))
    new = digits_plan(tmp_path, cache, teacher_noise=False)
    assert "stage teacher, which it builds on, changed" in new.stages[1].stale_reason()


def test_a_moved_loop_directory_is_still_the_same_run(tmp_path, cache):
    first = digits_plan(tmp_path, cache, num_iterations=2)
    moved = loop_lib.LoopPlan(loop_lib.LoopConfig(
        output_dir=str(tmp_path / "elsewhere"), data_cache_dir=str(cache), num_iterations=2),
        root=str(tmp_path))
    assert [s.settings for s in first.stages] == [s.settings for s in moved.stages]


def test_directory_without_recorded_settings_is_not_reused(tmp_path, cache):
    p = digits_plan(tmp_path, cache)
    os.makedirs(p.stages[0].directory)
    open(os.path.join(p.stages[0].directory, "checkpoint"), "w").close()
    with pytest.raises(UserInputError, match="no recorded settings"):
        stages_lib.check_stages(p.stages, p.out, retrain_changed=False)


def test_progress_line_parses_main_py_and_tools():
    runner = stages_lib.StageRunner("/nonexistent", stages_lib.ProgressLine(io.StringIO()))
    seen = {}
    runner.on_rate = lambda name, s: seen.update({name: s})
    runner.eta_after = lambda: 120.0
    stage = stages_lib.Stage("student_1", "/x", {}, lambda: [], steps=1000)
    line = ("I1126 loop.py:337] step 250/1000  loss 2.2504  lab/acc 0.438  lr 7.32e-04  "
            "147.7 img/s  ETA 0:01:15\n")
    text, step = runner._status(line, "student_1 2/3", stage)
    assert step == 250
    assert text == ("[student_1 2/3] step 250/1000  loss 2.2504  148 img/s  ETA 0:01:15  "
                    "(loop ETA 0:03:15)")
    assert seen["student_1"] == pytest.approx(75 / 750)
    text, _ = runner._status("I1126 shards.py:159] predict extra-00001-of-00004: 300/900 "
                             "records (150 rec/s, ETA 4 s)\n", "pseudo_1 2/4", stage)
    assert "300/900 records" in text and "ETA 0:00:04" in text
    assert runner._status("I1126 something else\n", "x", stage) is None


def test_progress_line_rewrites_in_place_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    line = stages_lib.ProgressLine(out)
    line.show("[teacher 1/2] step 50/100")
    line.show("[teacher 1/2] step 100/100")
    line.end()
    assert out.getvalue() == ("\r[teacher 1/2] step 50/100\r[teacher 1/2] step 100/100\n")
    plain = io.StringIO()
    line = stages_lib.ProgressLine(plain, every_s=3600)
    line.show("a", force=True)
    line.show("b")  # throttled: not a terminal
    assert plain.getvalue() == "a\n"


def test_summary_table_marks_the_shared_baseline():
    table = summary_lib.format_table({"rounds": [
        {"name": "teacher", "model_name": "efficientnet-b0", "params": 663530,
         "dev_top_1": 0.9, "test_top_1": 0.8},
        {"name": "baseline", "model_name": "efficientnet-b0", "params": 663530,
         "dev_top_1": 0.9, "test_top_1": 0.8, "same_as": "teacher"}]})
    assert "663,530" in table and "(= teacher)" in table


def test_given_teacher_is_described_by_its_run_config(tmp_path, cache):
    import dataclasses

    from noisy_student_tf.config import ModelConfig, RunConfig

    given = tmp_path / "given"
    given.mkdir()
    model = ModelConfig("efficientnet-b1", 10, 32, True, width_coefficient=0.5,
                        depth_coefficient=0.55)
    json.dump(dataclasses.asdict(RunConfig(model=model)), open(given / "run_config.json", "w"))
    p = digits_plan(tmp_path, cache, teacher_model_path=str(given),
                    teacher_model_name="efficientnet-b1", with_baseline=True)
    assert [s.name for s in p.stages] == ["student_1", "baseline"]  # no teacher stage
    assert p.rounds[0].params == params_lib.param_count(
        "efficientnet-b1", 10, width_coefficient=0.5, depth_coefficient=0.55,
        small_image_model=True)
    assert p.stages[0].settings["teacher_model_path"] == str(given)


def test_eval_robustness_adds_a_stage_per_trained_round(tmp_path, cache):
    p = digits_plan(tmp_path, cache, with_baseline=True, eval_robustness=True,
                    robustness_max_images=50)
    assert [s.name for s in p.stages] == ["teacher", "student_1", "robustness_teacher",
                                          "robustness_student_1"]  # the baseline is the teacher
    rob = p.stages[3]
    args = args_of(rob)
    assert args[:2] == ["--mode=eval_robustness", f"--model_dir={p.stages[1].directory}"]
    assert "--robustness_max_images=50" in args and rob.steps == 0
    # retraining the student makes its robustness stale too; the teacher is its reference
    assert rob.settings["(stage student_1)"] == stages_lib.fingerprint(p.stages[1].settings)
    assert f"--robustness_reference={p.stages[0].directory}" in args
    assert "(stage robustness_teacher)" in rob.settings
    assert not any(a.startswith("--robustness_reference") for a in args_of(p.stages[2]))
    # the summary reads each round's robustness.json (the baseline row: the teacher's)
    teacher_dir = p.stages[0].directory
    os.makedirs(teacher_dir)
    with open(os.path.join(teacher_dir, "eval_results.json"), "w") as f:
        json.dump({s: {"top_1_accuracy": 0.5} for s in ("dev", "test")}, f)
    with open(os.path.join(teacher_dir, "robustness.json"), "w") as f:
        json.dump({"clean_error": 0.5, "mCE": 0.61, "mFR": 0.02}, f)
    rows = {r["name"]: r for r in summary_lib.summarize(p.rounds, p.cfg, p.out)["rounds"]}
    assert rows["teacher"]["mCE"] == rows["baseline"]["mCE"] == 0.61
    assert "mCE" not in rows["student_1"]
    rows["student_1"].update(mCE=0.5, mFR=0.01, vs={"model_dir": teacher_dir,
                                                    "mCE_relative": 0.82})
    table = summary_lib.format_table({"rounds": list(rows.values())})
    assert "mCE" in table.splitlines()[0] and "0.6100  0.0200" in table
    assert "(mCE 0.82x teacher's)" in table


def test_progress_line_parses_robustness_progress():
    runner = stages_lib.StageRunner("/nonexistent", stages_lib.ProgressLine(io.StringIO()))
    stage = stages_lib.Stage("robustness_teacher", "/x", {}, lambda: [])
    text, done = runner._status("I1126 evaluate.py:79] robustness: 1160/5640 images (teacher: "
                                "motion_blur 3), 97 images/s, ETA 0m46s\n", "rob 3/4", stage)
    assert done == 1160
    assert text == "[rob 3/4] 1160/5640 images (teacher: motion_blur 3)  97 img/s  ETA 0:00:46"
