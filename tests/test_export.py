"""main.py --mode=export: a SavedModel for serving, equal to main.py eval, and usable as a teacher
by the prediction tool and online training."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf import teacher
from noisy_student_tf.data import preprocess, records
from tests import pseudo_data
from tests.helpers import LOOP_TINY, TINY, build_once, run_loop, run_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def exported(shared_dir, digits_dir):
    """Trains 50 steps on digits (eval at the end), then exports in another process; once per
    test run (the tests only read these directories)."""
    def build(root):
        model_dir, export_dir = str(root / "run"), str(root / "export")
        common = ["--task_name=digits", f"--label_data_dir={digits_dir}",
                  f"--model_dir={model_dir}", *TINY]
        run_main(*common, "--mode=train_and_eval", "--train_steps=50", "--iterations_per_loop=25",
                 "--save_checkpoints_steps=50", "--steps_per_eval=50")
        proc = run_main(*common, "--mode=export", f"--export_dir={export_dir}")
        assert "serving_default" in proc.stdout
        return [common, model_dir, export_dir]

    return build_once(shared_dir, "export", build)


def _test_images(digits_dir):
    """(PNG bytes, uint8 eval views, labels) of the digits test split."""
    files = sorted(tf.io.gfile.glob(os.path.join(digits_dir, "test-*")))
    pngs, views, labels = [], [], []
    for serialized in tf.data.TFRecordDataset(files):
        ex = records.parse_labeled(serialized)
        image = preprocess.decode(ex["encoded"])
        pngs.append(tf.io.encode_png(image).numpy())  # lossless: the same pixels as the JPEG
        views.append(preprocess.preprocess_for_eval(image, 32, True).numpy())
        labels.append(int(ex["label"]))
    return pngs, np.stack(views), np.array(labels)


def test_serving_default_equals_main_eval(exported, digits_dir):
    """Acceptance 1: PNG bytes through serving_default give main.py eval's classes, and the
    Keras model's EMA probabilities within 1e-5 (this test process never exported anything)."""
    _, model_dir, export_dir = exported
    loaded = tf.saved_model.load(export_dir)
    serve = loaded.signatures["serving_default"]
    pngs, views, labels = _test_images(digits_dir)
    out = serve(images=tf.constant(pngs))
    assert set(out) == {"probabilities", "classes", "top_k_probabilities", "top_k_classes"}
    probs, classes = out["probabilities"].numpy(), out["classes"].numpy()
    assert probs.shape == (360, 10) and out["top_k_classes"].shape == (360, 5)
    np.testing.assert_array_equal(out["top_k_classes"].numpy()[:, 0], classes)

    results = json.load(open(os.path.join(model_dir, "eval_results.json")))["test"]
    assert results["num_images"] == len(labels)
    assert (classes == labels).mean() == pytest.approx(results["top_1_accuracy"], abs=1e-9)

    run_config = json.load(open(os.path.join(model_dir, "run_config.json")))
    from noisy_student_tf import run_info

    model = teacher.load_model(run_info.read(model_dir).model, model_dir)
    mean = np.array(run_config["data"]["mean_rgb"], np.float32)
    std = np.array(run_config["data"]["stddev_rgb"], np.float32)
    keras_probs = tf.nn.softmax(model((views.astype(np.float32) - mean) / std,
                                      training=False)).numpy()
    np.testing.assert_allclose(probs, keras_probs, atol=1e-5)
    np.testing.assert_array_equal(classes, keras_probs.argmax(-1))
    uint8 = loaded.signatures["serving_images"](images=tf.constant(views))
    np.testing.assert_allclose(uint8["probabilities"].numpy(), probs, atol=1e-6)

    # Non-image bytes: an error naming the bad entry, and the loaded model keeps serving.
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images\[.*1.*\] is not JPEG, PNG"):
        serve(images=tf.constant([pngs[0], b"not an image", pngs[2]]))
    again = serve(images=tf.constant(pngs[:3]))["probabilities"].numpy()
    np.testing.assert_allclose(again, probs[:3], atol=1e-6)


def test_saved_model_cli_lists_the_signatures(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.run([cli, "show", "--all", "--dir", exported[2]], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("serving_default", "serving_images", "logits"):
        assert f"signature_def['{name}']" in proc.stdout
    assert "DT_STRING" in proc.stdout and "DT_UINT8" in proc.stdout


def test_export_bad_input(exported, tmp_path):
    common, model_dir, export_dir = exported
    cases = [
        ([*common, f"--export_dir={export_dir}"], "already holds a SavedModel"),
        ([*common, "--model_name=efficientnet-b1", f"--export_dir={tmp_path / 'b1'}"],
         f"--model_name=efficientnet-b1 conflicts with --model_dir={model_dir!r}, which was "
         "trained with model_name=efficientnet-b0"),
        (["--task_name=digits", f"--model_dir={tmp_path / 'empty'}",
          f"--export_dir={tmp_path / 'e'}"],
         f"--model_dir={str(tmp_path / 'empty')!r} has no checkpoint to export"),
        ([*common], "--mode=export needs --export_dir"),
    ]
    (tmp_path / "empty").mkdir()
    for args, needle in cases:
        proc = run_main(*args, "--mode=export", check=False)
        assert proc.returncode == 2, proc.stderr[-1000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("main.py: error: ") and needle in last, last
    assert not os.path.exists(tmp_path / "b1") and not os.path.exists(tmp_path / "e")


def test_exported_model_as_teacher(exported, digits_dir, tmp_path, fv):
    """The prediction tool and online training take the SavedModel where a checkpoint goes."""
    from flags import config as flag_config
    from noisy_student_tf.train import run as run_lib

    common, model_dir, export_dir = exported
    unl = tmp_path / "unl"
    files = sorted(tf.io.gfile.glob(os.path.join(digits_dir, "test-*")))
    serialized = [s.numpy() for s in tf.data.TFRecordDataset(files).take(24)]
    unl.mkdir()
    records.write_shards(str(unl), "extra", serialized, 1)
    outs = {}
    for name, path in (("ckpt", model_dir), ("saved", export_dir)):
        # main.py --mode=predict's path, in this process (flags -> job -> run.predict)
        fv.unparse_flags()
        fv(["main.py", "--mode=predict", "--task_name=digits", f"--predict_ckpt_path={path}",
            f"--label_data_dir={unl}", "--file_prefix=extra", "--num_shards=1",
            "--shard_id=0", f"--info_dir={tmp_path / name / 'info'}",
            f"--output_dir={tmp_path / name / 'pred'}", *TINY])
        job = flag_config.main_job_from_flags(fv)
        list(run_lib.predict(*job.predict, tf.distribute.get_strategy(), job.run))
        pred = tf.io.gfile.glob(str(tmp_path / name / "pred" / "*"))[0]
        outs[name] = np.array([f["probabilities"].float_list.value
                               for f in pseudo_data.read_records(pred)])
    assert outs["saved"].shape == (24, 10)
    np.testing.assert_allclose(outs["saved"], outs["ckpt"], atol=1e-5)

    # The loop driver starts from it (no teacher stage); its student trains online against it.

    out = tmp_path / "loop"
    proc = run_loop(f"--output_dir={out}", f"--data_cache_dir={tmp_path / 'cache'}", *LOOP_TINY,
                    f"--teacher_model_path={export_dir}")
    rounds = json.load(open(out / "summary.json"))["rounds"]
    assert [r["name"] for r in rounds] == ["teacher", "student_1"]
    assert rounds[0]["model_dir"] == export_dir and rounds[0]["test_top_1"] is None
    assert 0.0 <= rounds[1]["test_top_1"] <= 1.0 and not (out / "teacher").exists()
    log = open(out / "student_1" / "stage_log.txt").read()
    assert f"teacher_model_path='{export_dir}'" in log and "(given)" in proc.stdout
