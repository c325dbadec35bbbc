"""main.py end to end, as a user runs it: train_and_eval, resume, eval, bad input, --helpfull."""

import glob
import json
import os

import pytest

from tests.helpers import TINY, assert_one_line_error, run_main
from tests.upstream_flags import UPSTREAM_MAIN, UPSTREAM_PREDICT

pytestmark = pytest.mark.e2e


def test_train_and_eval_then_resume_then_eval(tmp_path, digits_dir):
    model_dir = str(tmp_path / "m")
    common = ["--task_name=digits", f"--label_data_dir={digits_dir}", f"--model_dir={model_dir}",
              *TINY]
    # (one run checks several things: each main.py start costs CI ~5 s)
    run_main(*common, "--mode=train_and_eval", "--train_steps=4", "--steps_per_eval=4",
             "--augment_name=v1", "--randaug_mag=27")
    _check_tensorboard(model_dir)
    results = json.load(open(os.path.join(model_dir, "eval_results.json")))
    assert set(results) == {"dev", "test"}
    for subset, n in (("dev", 180), ("test", 360)):
        r = results[subset]
        assert r["global_step"] == 4 and r["num_images"] == n
        assert 0.0 <= r["top_1_accuracy"] <= r["top_5_accuracy"] <= 1.0
    flags_json = json.load(open(os.path.join(model_dir, "FLAGS.json")))
    assert flags_json["train_steps"] == 4 and flags_json["task_name"] == "digits"
    assert flags_json["augment_name"] == "v1" and flags_json["randaug_mag"] == 27
    assert glob.glob(os.path.join(model_dir, "events.out.tfevents.*"))
    assert glob.glob(os.path.join(model_dir, "eval", "events.out.tfevents.*"))
    assert os.path.exists(os.path.join(model_dir, "model.ckpt-4.index"))

    # The same command with a longer schedule resumes from step 4 instead of starting over.
    proc = run_main(*common, "--mode=train", "--train_steps=6")
    assert "Training from step 4 to 6" in proc.stderr
    assert os.path.exists(os.path.join(model_dir, "model.ckpt-6.index"))
    # Rerunning a finished run does nothing.
    proc = run_main(*common, "--mode=train", "--train_steps=6")
    assert "nothing to do" in proc.stderr

    run_main(*common, "--mode=eval")
    results = json.load(open(os.path.join(model_dir, "eval_results.json")))
    assert results["test"]["global_step"] == 6


def _check_tensorboard(model_dir):
    """Upstream's scalar names, and the (RandAugment-noised) training images."""
    import tensorflow as tf

    tags = set()
    for path in glob.glob(os.path.join(model_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    assert {"lab/acc", "lab/loss", "lab/pred_prob", "train/lr", "train/loss",
            "train/data_loss", "train/epoch"} <= tags
    assert any(t.startswith("train/input_images") for t in tags), "no training images"


@pytest.mark.parametrize("args,needle", [
    (["--task_name=custom", "--label_data_dir=/nonexistent/dir"], "/nonexistent/dir"),
    (["--task_name=digits", "--model_name=efficientnet-b9"], "efficientnet-b9"),
    (["--task_name=mnist"], "mnist"),
    (["--task_name=digits", "--use_tpu=true"], "--use_tpu=true needs --tpu"),
    (["--task_name=digits", "--num_label_classes=1", "--task_name=custom",
      "--label_data_dir=/tmp"], "num_label_classes"),
])
def test_bad_input_is_one_line(tmp_path, digits_dir, args, needle):
    proc = run_main(f"--model_dir={tmp_path / 'm'}", f"--data_cache_dir={tmp_path}", *args,
                    check=False)
    assert_one_line_error(proc, needle)


def test_empty_data_dir_and_unwritable_model_dir(tmp_path, digits_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_main("--task_name=custom", f"--label_data_dir={empty}",
                    f"--model_dir={tmp_path / 'm'}", "--num_label_classes=3", check=False)
    assert_one_line_error(proc, "no training files")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_main("--task_name=digits", f"--label_data_dir={digits_dir}",
                    f"--model_dir={blocker / 'sub'}", check=False)
    assert_one_line_error(proc, "model_dir")


def test_helpfull_lists_every_upstream_flag():
    proc = run_main("--helpfull", check=False)  # absl exits 1 after printing help
    assert proc.returncode in (0, 1)
    for name, kind, _ in UPSTREAM_MAIN + UPSTREAM_PREDICT:
        shown = f"--[no]{name}:" if kind == "bool" else f"--{name}:"
        assert shown in proc.stdout, name


def test_bad_augment_name_is_one_line(tmp_path, digits_dir):
    proc = run_main("--task_name=digits", f"--label_data_dir={digits_dir}",
                    f"--model_dir={tmp_path / 'm'}", "--augment_name=v7", check=False)
    assert_one_line_error(proc, "augment_name='v7'")
