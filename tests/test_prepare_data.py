"""tools/prepare_data.py and direct tfds reading: image folders and a tensorflow-datasets dataset
built offline become upstream-format records that the trainer reads; bad input is one line and
leaves nothing behind; a killed run resumes; `tfds:NAME` gives the same batches as its records."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from noisy_student_tf.data import framing, pipeline, prepare, records, tfds_source
from noisy_student_tf.errors import UserInputError
from tests.helpers import assert_one_line_error, fake_registered, run_tool

CLASSES = ("cat", "dog", "emu")


def make_folder(root, per_class=6, seed=0):
    """Class folders of PNG (RGB, RGBA, grayscale) and JPEG images; returns {path: (pixels as
    the trainer decodes them, label)}."""
    rng = np.random.RandomState(seed)
    truth = {}
    for label, name in enumerate(CLASSES):
        os.makedirs(os.path.join(root, name))
        for i in range(per_class):
            rgb = rng.randint(0, 256, (9 + i, 11, 3)).astype(np.uint8)
            kind = i % 4
            path = os.path.join(root, name, f"{i}.{'jpg' if kind == 3 else 'png'}")
            if kind == 0:
                Image.fromarray(rgb).save(path)
                pixels = rgb
            elif kind == 1:  # RGBA: alpha dropped
                Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(path)
                pixels = rgb
            elif kind == 2:  # grayscale: replicated to RGB
                Image.fromarray(rgb[..., 0]).save(path)
                pixels = np.repeat(rgb[..., :1], 3, axis=-1)
            else:
                Image.fromarray(rgb).save(path, quality=90)
                pixels = tf.io.decode_image(open(path, "rb").read(), channels=3).numpy()
            truth[path] = (pixels, label)
    return truth


def read_labeled(out, subset):
    files = pipeline.list_files(str(out), (f"{subset}-*",))
    got = []
    for serialized in tf.data.TFRecordDataset(files):
        ex = records.parse_labeled(serialized)
        got.append((ex["encoded"].numpy(), int(ex["label"])))
    return files, got


def test_image_folder_records_are_what_the_trainer_reads(tmp_path):
    truth = make_folder(tmp_path / "imgs")
    unl = tmp_path / "unl"
    os.makedirs(unl / "sub")
    for i in range(5):
        Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(unl / "sub" / f"{i}.png")
    (unl / ".DS_Store").write_bytes(b"\0\1junk")  # hidden files are not images: left out
    out = tmp_path / "out"
    info = prepare.run(prepare.PrepareConfig(
        output_dir=str(out), image_dir=str(tmp_path / "imgs"), unlabeled_image_dir=str(unl),
        dev_size=3, test_size=3, image_format="png", compute_mean_std=True))
    assert info["counts"] == {"train": 12, "dev": 3, "test": 3, "extra": 5}
    assert info["class_names"] == list(CLASSES) and info["num_classes"] == 3
    assert sorted(os.listdir(out)) == sorted(
        ["dataset_info.json", "train-00000-of-00001", "dev-00000-of-00001",
         "test-00000-of-00001", "extra-00000-of-00001"])
    by_pixels = {v[0].tobytes(): v for v in truth.values()}
    seen = []
    for subset in ("train", "dev", "test"):
        _, got = read_labeled(out, subset)
        for encoded, label in got:
            pixels = tf.io.decode_image(encoded, channels=3).numpy()
            expected, expected_label = by_pixels[pixels.tobytes()]  # lossless, RGB
            assert label == expected_label
            seen.append(pixels.tobytes())
    assert len(set(seen)) == len(truth)  # every image once, across the three subsets
    # The extra shard holds images only (no labels, no dummy soft labels).
    ex = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(
        str(out / "extra-00000-of-00001")))).numpy())
    assert list(ex.features.feature) == [records.IMAGE_KEY]
    # mean/std over the training pixels, 0-255 scale
    train_pixels = np.concatenate([
        tf.io.decode_image(e, channels=3).numpy().reshape(-1, 3) for e, _ in
        read_labeled(out, "train")[1]]).astype(np.float64)
    np.testing.assert_allclose(info["mean_rgb"], train_pixels.mean(0), atol=1e-3)
    np.testing.assert_allclose(info["stddev_rgb"], train_pixels.std(0), atol=1e-3)
    # JPEG files are stored byte for byte under the default format.
    out2 = tmp_path / "out2"
    prepare.run(prepare.PrepareConfig(output_dir=str(out2), image_dir=str(tmp_path / "imgs"),
                                      dev_size=0, test_size=0))
    stored = {e for e, _ in read_labeled(out2, "train")[1]}
    jpegs = [p for p in truth if p.endswith(".jpg")]
    assert jpegs and all(open(p, "rb").read() in stored for p in jpegs)
    assert all(e.startswith(b"\xff\xd8") for e in stored)  # PNGs became JPEG


@pytest.mark.parametrize("case", ["corrupt", "empty_class", "not_image", "missing", "tiny"])
def test_bad_folder_input_names_the_file_and_leaves_nothing(tmp_path, case):
    make_folder(tmp_path / "imgs", per_class=3)
    image_dir = str(tmp_path / "imgs")
    if case == "corrupt":
        bad = tmp_path / "imgs" / "dog" / "1.png"
        bad.write_bytes(bad.read_bytes()[:40])  # a truncated PNG
    elif case == "empty_class":
        bad = tmp_path / "imgs" / "zebra"
        os.makedirs(bad)
    elif case == "not_image":
        bad = tmp_path / "imgs" / "emu" / "notes.txt"
        bad.write_text("not an image")
    elif case == "missing":
        bad = tmp_path / "nowhere"
        image_dir = str(bad)
    else:
        bad = tmp_path / "imgs" / "cat" / "dot.png"
        Image.fromarray(np.zeros((1, 5, 3), np.uint8)).save(bad)
    out = tmp_path / "out"
    with pytest.raises(UserInputError) as e:
        prepare.run(prepare.PrepareConfig(output_dir=str(out), image_dir=image_dir,
                                          dev_size=1, test_size=1))
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    assert not out.exists()  # nothing half-written, not even the directory
    # An output directory that existed keeps only what it had.
    os.makedirs(out)
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserInputError):
        prepare.run(prepare.PrepareConfig(output_dir=str(out), image_dir=image_dir,
                                          dev_size=1, test_size=1))
    assert os.listdir(out) == ["keep.txt"]


def test_tool_reports_one_line_and_exit_2(tmp_path):
    make_folder(tmp_path / "imgs", per_class=2)
    bad = tmp_path / "imgs" / "emu" / "0.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    proc = run_tool("prepare_data.py", f"--image_dir={tmp_path}/imgs",
                    f"--output_dir={tmp_path}/out", check=False)
    assert_one_line_error(proc, f"{bad}: corrupt PNG image")
    assert not (tmp_path / "out").exists()


class Killed(Exception):
    pass


def test_killed_run_resumes_from_finished_shards(tmp_path, monkeypatch):
    make_folder(tmp_path / "imgs", per_class=8)
    cfg = prepare.PrepareConfig(output_dir=str(tmp_path / "out"), image_dir=str(tmp_path / "imgs"),
                                dev_size=2, test_size=2, train_shards=4)
    real_encode, calls = prepare.encode, []

    def dying_encode(item, data, fmt):
        calls.append(item.name)
        if len(calls) == 12:  # inside the third train shard (5 records each)
            raise Killed()
        return real_encode(item, data, fmt)

    monkeypatch.setattr(prepare, "encode", dying_encode)
    with pytest.raises(Killed):
        prepare.run(cfg)
    staging = tmp_path / "out" / prepare.STAGING
    finished = sorted(f for f in os.listdir(staging) if f.startswith("train-") and "." not in f)
    assert finished == ["train-00000-of-00004", "train-00001-of-00004"]
    assert not [f for f in os.listdir(tmp_path / "out") if f.startswith("train-")]
    stamp = os.stat(staging / finished[0]).st_mtime_ns
    monkeypatch.setattr(prepare, "encode", real_encode)
    info = prepare.run(cfg)
    assert info["counts"] == {"train": 20, "dev": 2, "test": 2}
    assert os.stat(tmp_path / "out" / finished[0]).st_mtime_ns == stamp  # not rewritten
    assert not staging.exists()
    clean = prepare.run(dataclasses.replace(cfg, output_dir=str(tmp_path / "clean")))
    assert clean["counts"] == info["counts"]
    for name in os.listdir(tmp_path / "clean"):
        if name.startswith(("train-", "dev-", "test-")):
            assert (tmp_path / "clean" / name).read_bytes() == \
                (tmp_path / "out" / name).read_bytes()
    # A rerun with the same settings does nothing; other settings stop, or replace with redo.
    assert prepare.run(cfg) == info
    other = dataclasses.replace(cfg, train_shards=2)
    with pytest.raises(UserInputError, match="already holds"):
        prepare.run(other)
    assert prepare.run(dataclasses.replace(other, redo_changed=True))["shards"]["train"] == 2
    assert len([f for f in os.listdir(tmp_path / "out") if f.startswith("train-")]) == 2


def build_tfds(data_dir, seed=0):
    """A real tfds dataset (tfds' own files) written offline: train 40, test 12, extra 16."""
    import tensorflow_datasets as tfds

    rng = np.random.RandomState(seed)

    def split(n):
        labels = rng.randint(0, 3, n)
        # smooth images (a colour per image plus a ramp): JPEG q100 keeps them within ~1 level
        ramp = np.arange(32)[None, None, :, None]
        images = (rng.randint(0, 60, (n, 1, 1, 3)) + 60 * labels[:, None, None, None] + ramp
                  + np.zeros((1, 32, 1, 1), int))
        return tf.data.Dataset.from_tensor_slices({"image": images.astype(np.uint8),
                                                   "label": labels})

    tfds.dataset_builders.store_as_tfds_dataset(
        name="tiny_digits_like", version="1.0.0", data_dir=str(data_dir), config="default",
        split_datasets={"train": split(40), "test": split(12), "extra": split(16)},
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(32, 32, 3)),
            "label": tfds.features.ClassLabel(names=["a", "b", "c"])}))
    return "tiny_digits_like"


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tfds")
    build_tfds(d)
    return str(d)


def test_tfds_prepare_holds_out_dev_and_drops_unlabeled_labels(tfds_dir, tmp_path):
    out = tmp_path / "out"
    info = prepare.run(prepare.PrepareConfig(
        output_dir=str(out), tfds_name="tiny_digits_like", tfds_data_dir=tfds_dir,
        tfds_unlabeled_split="extra", dev_size=8))
    assert info["counts"] == {"train": 32, "dev": 8, "test": 12, "extra": 16}
    assert info["class_names"] == ["a", "b", "c"]
    source = tfds_source.resolve("tiny_digits_like", "train", tfds_dir)
    ds = tf.data.TFRecordDataset(source.paths).map(tfds_source.parse_labeled(source))
    originals = {(tf.io.decode_image(ex["encoded"]).numpy().tobytes(), int(ex["label"]))
                 for ex in ds}
    got = {}
    for subset in ("train", "dev"):
        got[subset] = {(tf.io.decode_image(e).numpy().tobytes(), y)
                       for e, y in read_labeled(out, subset)[1]}
    # q100 JPEG is near, not equal: match each written image to its original by pixels.
    assert len(got["train"] | got["dev"]) == 40 and not got["train"] & got["dev"]
    near = 0
    for pixels, label in got["train"] | got["dev"]:
        a = np.frombuffer(pixels, np.uint8).astype(int)
        best = min(originals, key=lambda o: np.abs(np.frombuffer(o[0], np.uint8) - a).mean())
        near += best[1] == label and np.abs(np.frombuffer(best[0], np.uint8) - a).mean() < 2
    assert near == 40
    assert framing.require(pipeline.list_files(str(out), ("extra-*",))) == 16


def test_tfds_direct_gives_the_batches_of_its_records(tfds_dir, tmp_path):
    out = tmp_path / "out"
    prepare.run(prepare.PrepareConfig(
        output_dir=str(out), tfds_name="tiny_digits_like", tfds_data_dir=tfds_dir,
        tfds_dev_split="test", image_format="keep", train_shards=1, eval_shards=1))
    direct = tfds_source.resolve("tfds:tiny_digits_like", "train", tfds_dir)
    files = pipeline.train_files(str(out))
    assert direct.num_examples == framing.require(files) == 40
    cfg = pipeline.InputConfig(image_size=32, num_classes=3, small_image=True, flip=True,
                               deterministic=True, seed=5)
    a = pipeline.labeled_train_dataset(direct, cfg, 8)
    b = pipeline.labeled_train_dataset(files, cfg, 8)
    for x, y in zip(a.take(6), b.take(6)):
        np.testing.assert_array_equal(x["image"].numpy(), y["image"].numpy())
        np.testing.assert_array_equal(x["label"].numpy(), y["label"].numpy())
    e1 = pipeline.eval_dataset(tfds_source.resolve("tiny_digits_like", "test", tfds_dir), cfg, 5)
    e2 = pipeline.eval_dataset(pipeline.list_files(str(out), ("dev*",)), cfg, 5)
    assert [x["label"].numpy().tolist() for x in e1] == [x["label"].numpy().tolist() for x in e2]
    # A sliced split reads its window of the files.
    part = tfds_source.resolve("tiny_digits_like", "train[10:25]", tfds_dir)
    labels = [int(x["label"]) for x in pipeline.eval_dataset(part, cfg, 100).unbatch()]
    whole = [int(x["label"]) for x in pipeline.eval_dataset(direct, cfg, 100).unbatch()]
    assert labels == whole[10:25]


def test_tfds_errors_are_one_line(tfds_dir, tmp_path):
    with pytest.raises(UserInputError, match="no such tensorflow-datasets dataset"):
        tfds_source.resolve("tfds:no_such_set_here", "train", tfds_dir)
    with pytest.raises(UserInputError, match="no split 'validation'"):
        tfds_source.resolve("tfds:tiny_digits_like", "validation", tfds_dir)


def test_main_reads_classes_and_mean_std_of_a_prepared_dir(tmp_path, fv):
    from flags.config import run_config_from_flags

    out = tmp_path / "out"
    os.makedirs(out)
    (out / "dataset_info.json").write_text(json.dumps(
        {"num_classes": 7, "mean_rgb": [10.0, 20.0, 30.0], "stddev_rgb": [1.0, 2.0, 3.0]}))
    args = ["main.py", "--task_name=custom", f"--label_data_dir={out}",
            f"--model_dir={tmp_path}/m", "--num_train_images=10"]
    fv(args)
    cfg = run_config_from_flags(fv)
    assert cfg.model.num_classes == 7
    assert cfg.data.mean_rgb == (10.0, 20.0, 30.0) and cfg.data.stddev_rgb == (1.0, 2.0, 3.0)
    fv.unparse_flags()
    fv(args + ["--mean_rgb=1,2,3", "--stddev_rgb=4,5,6"])
    cfg = run_config_from_flags(fv)
    assert cfg.data.mean_rgb == (1.0, 2.0, 3.0) and cfg.data.stddev_rgb == (4.0, 5.0, 6.0)
    fv.unparse_flags()
    fv(args + ["--num_label_classes=5"])
    with pytest.raises(UserInputError, match="records 7 classes"):
        run_config_from_flags(fv)
    fv.unparse_flags()
    fv(args + ["--mean_rgb=1,2"])
    with pytest.raises(UserInputError, match="three numbers"):
        run_config_from_flags(fv)


@pytest.mark.e2e
def test_folder_to_training_prediction_and_filter(tmp_path):
    """A folder of images -> prepare_data -> main.py train_and_eval -> predict on its unlabeled
    images -> the filter's two passes."""
    from tests.helpers import TINY, run_main

    make_folder(tmp_path / "imgs", per_class=8)
    os.makedirs(tmp_path / "unl")
    for i in range(12):
        Image.fromarray(np.full((20, 20, 3), i * 20, np.uint8)).save(tmp_path / "unl" / f"{i}.jpg")
    out = str(tmp_path / "out")
    proc = run_tool("prepare_data.py", f"--image_dir={tmp_path}/imgs", f"--output_dir={out}",
                    f"--unlabeled_image_dir={tmp_path}/unl", "--dev_size=3", "--test_size=3",
                    "--compute_mean_std")
    assert "18 train, 3 dev, 3 test, 12 extra; 3 classes" in proc.stdout
    model = str(tmp_path / "model")
    run_main("--task_name=custom", f"--label_data_dir={out}", f"--model_dir={model}", *TINY,
             "--mode=train_and_eval", "--train_steps=2", "--input_image_size=32")
    run = json.load(open(os.path.join(model, "run_config.json")))
    info = json.load(open(os.path.join(out, "dataset_info.json")))
    assert run["model"]["num_classes"] == 3  # from dataset_info.json, no flag given
    assert run["data"]["mean_rgb"] == info["mean_rgb"]
    results = json.load(open(os.path.join(model, "eval_results.json")))
    assert {k: v["num_images"] for k, v in results.items()} == {"dev": 3, "test": 3}
    _predict_and_filter(out, model, tmp_path, num_shards=1, num_classes=3)


@pytest.mark.e2e
def test_svhn_recipe_from_tfds_converted_and_direct(tmp_path):
    """The README's SVHN recipe on a stand-in svhn_cropped (tfds' registered builder reads it):
    prepare_data -> the teacher on the records; then a student straight from tfds, labeled
    train[10:] / dev train[:10] and the `extra` split as its unlabeled data."""
    from tests.helpers import TINY, run_main

    tfds_dir = tmp_path / "tfds"
    fake_registered(tfds_dir, "svhn_cropped", "3.1.0", {"train": 50, "test": 20, "extra": 30})
    out = str(tmp_path / "svhn")
    prepare.run(prepare.PrepareConfig(  # the tool's flags are exercised by the folder test
        output_dir=out, tfds_name="svhn_cropped", tfds_data_dir=str(tfds_dir),
        tfds_unlabeled_split="extra", dev_size=10, train_shards=4, eval_shards=2,
        unlabeled_shards=4))
    assert len(pipeline.list_files(out, ("extra-*",))) == 4
    teacher = str(tmp_path / "teacher")
    run_main("--task_name=svhn", f"--label_data_dir={out}", f"--model_dir={teacher}", *TINY,
             "--mode=train_and_eval", "--train_steps=2", "--augment_name=v1", "--randaug_mag=5")
    results = json.load(open(os.path.join(teacher, "eval_results.json")))
    assert {k: v["num_images"] for k, v in results.items()} == {"dev": 10, "test": 20}
    # the recipe's predict + filter on the prepared extra shards
    _predict_and_filter(out, teacher, tmp_path, num_shards=4, num_classes=10)
    student = str(tmp_path / "student")
    tfds_args = ["--label_data_dir=tfds:svhn_cropped", f"--tfds_data_dir={tfds_dir}",
                 "--tfds_train_split=train[10:]", "--tfds_dev_split=train[:10]"]
    run_main("--task_name=svhn", *tfds_args, f"--model_dir={student}", *TINY,
             "--mode=train_and_eval", "--train_steps=2", "--unlabel_ratio=2",
             "--unlabel_data_dir=tfds:svhn_cropped", "--tfds_unlabel_split=extra",
             "--teacher_model_name=efficientnet-b0", f"--teacher_model_path={teacher}",
             "--teacher_softmax_temp=1")
    results = json.load(open(os.path.join(student, "eval_results.json")))
    assert {k: v["num_images"] for k, v in results.items()} == {"dev": 10, "test": 20}


def test_cifar10_recipe_prepares_from_tfds(tmp_path):
    from noisy_student_tf.data import task_info

    fake_registered(tmp_path / "tfds", "cifar10", "3.0.2", {"train": 30, "test": 10})
    info = prepare.run(prepare.PrepareConfig(
        output_dir=str(tmp_path / "c10"), tfds_name="cifar10", tfds_data_dir=str(tmp_path / "tfds"),
        dev_size=5, compute_mean_std=True))
    assert info["counts"] == {"train": 25, "dev": 5, "test": 10} and info["num_classes"] == 10
    task = task_info.get_task_info("cifar10")
    assert task.small_image and task.flip and task.num_classes == 10
    assert (task.num_train_images, task.num_eval_images) == (45000, 5000)  # 50k - 5k dev


def test_tfds_class_count_must_match_the_model(tfds_dir):
    from noisy_student_tf.config import DataConfig, ModelConfig, RunConfig
    from noisy_student_tf.train import run

    cfg = RunConfig(model=ModelConfig(num_classes=4), data=DataConfig(
        task_name="custom", label_data_dir="tfds:tiny_digits_like", tfds_data_dir=tfds_dir))
    with pytest.raises(UserInputError, match="has 3 classes, but the model has 4"):
        run.train_source(cfg)
    # an offline student needs stored predictions, which a tfds split does not hold
    from noisy_student_tf.config import StudentConfig

    offline = dataclasses.replace(cfg, model=ModelConfig(num_classes=3), student=StudentConfig(
        unlabel_ratio=1.0, unlabel_data_dir="tfds:tiny_digits_like", teacher_softmax_temp=1.0))
    with pytest.raises(UserInputError, match="holds no teacher predictions"):
        run._student_inputs(offline, tf.distribute.get_strategy())
    ok = dataclasses.replace(cfg, model=ModelConfig(num_classes=3))
    assert run.resolve_data(dataclasses.replace(ok, data=dataclasses.replace(
        ok.data, num_train_images=None))).data.num_train_images == 40


def _predict_and_filter(data_dir, model_dir, tmp_path, num_shards, num_classes):
    """main.py --mode=predict on a prepared directory's extra* shards, then the filter's two
    passes (in this process, from the tool's own flags); some images are kept."""
    from absl import flags as absl_flags

    from flags.filter_flags import define_filter_flags, filter_configs_from_flags
    from noisy_student_tf.pseudo import filter as filter_lib
    from tests.helpers import run_main

    ids = ",".join(str(i) for i in range(num_shards))
    pred, pinfo, flt = (str(tmp_path / n) for n in ("pred", "info", "filter"))
    run_main("--mode=predict", "--task_name=custom", f"--predict_ckpt_path={model_dir}",
             f"--label_data_dir={data_dir}", "--file_prefix=extra",
             f"--num_shards={num_shards}", f"--shard_id={ids}", f"--info_dir={pinfo}",
             f"--output_dir={pred}")
    for stats in (1, 0):
        fv = absl_flags.FlagValues()
        define_filter_flags(fv)
        fv(["filter_unlabel.py", f"--input_dir={data_dir}", f"--prediction_dir={pred}",
            f"--info_dir={pinfo}", f"--prelim_stats_dir={flt}/prelim", f"--output_dir={flt}",
            f"--num_shards={num_shards}", f"--shard_ids={ids}", "--task=0",
            f"--num_label_classes={num_classes}", "--num_image=4", "--min_threshold=0",
            "--file_prefix=extra", f"--only_get_stats={stats}"])
        for cfg in filter_configs_from_flags(fv):
            filter_lib.run(cfg)
    kept = pipeline.list_files(os.path.join(flt, "data"), ("train-*",))
    assert kept and framing.require(kept) > 0
