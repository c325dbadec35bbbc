"""Digits conversion, TFRecord formats, preprocessing geometry and the tf.data pipelines."""

import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf.data import augment, digits, pipeline, preprocess, records, task_info
from noisy_student_tf.errors import UserInputError
from tests.helpers import write_dataset


def test_digits_split_is_fixed_and_disjoint():
    split = digits.load_split()
    assert {k: len(v[1]) for k, v in split.items()} == {"train": 1257, "dev": 180, "test": 360}
    again = digits.load_split()
    np.testing.assert_array_equal(split["test"][0], again["test"][0])
    # no image appears in two subsets (digits has a few exact duplicates, so compare counts of
    # the permutation indices instead: sizes add up to the whole set)
    assert sum(len(v[1]) for v in split.values()) == 1797
    info = task_info.get_task_info("digits")
    assert (info.num_train_images, info.num_eval_images, info.num_test_images) == (1257, 180, 360)


def test_digits_mean_std_constants_match_data():
    images = digits.load_split()["train"][0].astype(np.float64)
    info = task_info.get_task_info("digits")
    assert images.mean() == pytest.approx(info.mean_rgb[0], abs=0.01)
    assert images.std() == pytest.approx(info.stddev_rgb[0], abs=0.01)


def test_digits_records_are_upstream_format(digits_dir):
    files = pipeline.list_files(digits_dir, ["test*"])
    assert [f.rsplit("/", 1)[1] for f in files] == ["test-00000-of-00002", "test-00001-of-00002"]
    raw = next(iter(tf.data.TFRecordDataset(files[0])))
    ex = tf.train.Example.FromString(raw.numpy())
    keys = set(ex.features.feature)
    assert keys == {"image/encoded", "image/class/label"}
    label = ex.features.feature["image/class/label"].int64_list.value[0]
    assert label in range(1, 11)  # 1-based on disk
    img = tf.io.decode_jpeg(ex.features.feature["image/encoded"].bytes_list.value[0])
    assert img.shape == (32, 32, 3)
    total = pipeline.count_records(pipeline.list_files(digits_dir, ["train*"]))
    assert total == 1257


def test_eval_pipeline_reads_every_image_with_0_based_labels(tmp_path):
    labels = write_dataset(tmp_path, {"validation": 7}, fmt="png")
    cfg = pipeline.InputConfig(image_size=24, num_classes=3)
    files = pipeline.list_files(str(tmp_path), pipeline.EVAL_PATTERNS["dev"])
    batches = list(pipeline.eval_dataset(files, cfg, batch_size=3))
    assert [int(b["label"].shape[0]) for b in batches] == [3, 3, 1]  # last partial batch kept
    got = np.concatenate([b["label"].numpy() for b in batches])
    np.testing.assert_array_equal(got, labels["validation"])
    assert batches[0]["image"].shape == (3, 24, 24, 3)


def test_train_pipeline_shapes_and_determinism(tmp_path):
    write_dataset(tmp_path, {"train": 10})
    files = pipeline.train_files(str(tmp_path))
    cfg = pipeline.InputConfig(image_size=16, num_classes=3, deterministic=True, seed=3)
    a = next(iter(pipeline.labeled_train_dataset(files, cfg, 4)))
    b = next(iter(pipeline.labeled_train_dataset(files, cfg, 4)))
    assert a["image"].shape == (4, 16, 16, 3) and a["image"].dtype == tf.uint8
    np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
    np.testing.assert_array_equal(a["label"].numpy(), b["label"].numpy())


def test_center_crop_geometry():
    # 100x60 image, S=32: side = floor(32/64 * 60) = 30, offsets ((100-30+1)//2, (60-30+1)//2)
    image = np.zeros((100, 60, 3), np.uint8)
    image[35:65, 15:45] = 200  # exactly the expected crop window
    out = preprocess.center_crop(tf.constant(image), 32).numpy()
    assert out.shape == (32, 32, 3)
    assert out.min() > 190  # the crop saw only the bright window


def test_small_image_train_crop_and_no_flip():
    image = tf.constant(np.arange(32 * 32 * 3).reshape(32, 32, 3) % 256, tf.uint8)
    out = preprocess.preprocess_for_train(image, 32, True, False, tf.constant([1, 2]))
    assert out.shape == (32, 32, 3)
    ev = preprocess.preprocess_for_eval(image, 32, True)
    np.testing.assert_array_equal(ev.numpy(), image.numpy())


def test_large_image_train_crop_is_seeded():
    image = tf.constant(np.random.RandomState(0).randint(0, 255, (64, 80, 3)), tf.uint8)
    a = preprocess.preprocess_for_train(image, 24, False, True, tf.constant([5, 6]))
    b = preprocess.preprocess_for_train(image, 24, False, True, tf.constant([5, 6]))
    c = preprocess.preprocess_for_train(image, 24, False, True, tf.constant([7, 8]))
    assert a.shape == (24, 24, 3)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())


def test_tf1_bicubic_has_no_half_pixel_centres():
    image = tf.constant(np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1).repeat(3, -1)[0])
    ours = preprocess.resize_bicubic(image, 8).numpy()
    tf2 = tf.image.resize(image, (8, 8), method="bicubic").numpy()
    assert ours[0, 0, 0] == pytest.approx(0.0)  # TF1 samples the corner pixel exactly
    assert not np.allclose(ours, tf2)


def test_missing_dir_and_empty_dir_errors(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        pipeline.train_files(str(tmp_path / "nope"))
    with pytest.raises(UserInputError, match="no training files"):
        pipeline.train_files(str(tmp_path))


def test_label_out_of_range_fails_loudly(tmp_path):
    write_dataset(tmp_path, {"train": 4}, num_classes=5)
    cfg = pipeline.InputConfig(image_size=16, num_classes=2)
    ds = pipeline.labeled_train_dataset(pipeline.train_files(str(tmp_path)), cfg, 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_label_classes=2"):
        for _ in range(3):
            next(iter(ds))


@pytest.mark.parametrize("small", [False, True])
def test_randaugment_in_train_pipeline(tmp_path, small):
    size = 32 if small else 24
    write_dataset(tmp_path, {"train": 8}, size=(32, 32) if small else (40, 48))
    files = pipeline.train_files(str(tmp_path))

    def first(aug, seed=3):
        cfg = pipeline.InputConfig(image_size=size, num_classes=3, small_image=small, flip=False,
                                   deterministic=True, seed=seed, augment=aug)
        return next(iter(pipeline.labeled_train_dataset(files, cfg, 4)))["image"].numpy()

    plain = first(augment.AugmentConfig())
    v1 = augment.AugmentConfig(name="v1", magnitude=27)
    noisy = first(v1)
    assert noisy.dtype == np.uint8 and noisy.shape == (4, size, size, 3)
    assert not np.array_equal(plain, noisy)
    np.testing.assert_array_equal(noisy, first(v1))  # same seed, same noise
    assert not np.array_equal(noisy, first(v1, seed=4))
    if small:  # upstream's extra 16x16 Cutout (fill 128) on every small image
        assert all((img == 128).all(-1).sum() >= 16 for img in noisy)


def test_remove_aug_uses_eval_preprocessing(tmp_path):
    write_dataset(tmp_path, {"train": 4}, size=(40, 48))
    files = pipeline.train_files(str(tmp_path))
    aug = augment.AugmentConfig(name="v1", remove_aug=True)
    cfg = pipeline.InputConfig(image_size=24, num_classes=3, deterministic=True, augment=aug,
                               use_cache=False)
    got = next(iter(pipeline.labeled_train_dataset(files, cfg, 4)))["image"].numpy()
    ev = pipeline.eval_dataset(files, cfg, 4)
    expected = {img.tobytes() for b in ev for img in b["image"].numpy()}
    assert all(img.tobytes() in expected for img in got)


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="v2"), "augment_name"), (dict(name="v1", magnitude=-1), "randaug_mag"),
    (dict(name="v1", num_layers=-1), "randaug_layer"),
])
def test_bad_augment_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        augment.AugmentConfig(**kwargs)


def write_unlabeled(directory, prefix, n, num_classes=None, size=(32, 32), seed=0):
    rng = np.random.RandomState(seed)
    serialized = []
    for i in range(n):
        img = rng.randint(0, 256, size + (3,)).astype(np.uint8)
        probs = None if num_classes is None else np.eye(num_classes)[i % num_classes]
        serialized.append(records.unlabeled_example(tf.io.encode_jpeg(img).numpy(), probs,
                                                    label=i % 3))
    records.write_shards(str(directory), prefix, serialized, 2)


def test_unlabeled_pipeline_zipped_with_labeled(tmp_path):
    lab, unl = tmp_path / "lab", tmp_path / "unl"
    lab.mkdir()
    unl.mkdir()
    write_dataset(lab, {"train": 8}, size=(32, 32))
    write_unlabeled(unl, "extra", 6, num_classes=3)  # upstream SVHN converter's naming
    write_unlabeled(unl, "train", 4)  # no probabilities field: defaults to zeros
    files = pipeline.unlabeled_files(str(unl))
    assert len(files) == 4
    cfg = pipeline.InputConfig(image_size=32, num_classes=3, small_image=True, flip=False,
                               deterministic=True, augment=augment.AugmentConfig(name="v1"))
    labeled = pipeline.labeled_train_dataset(pipeline.train_files(str(lab)), cfg, 2)
    unlabeled = pipeline.unlabeled_train_dataset(files, cfg, 6, teacher_size=32)
    batch = next(iter(pipeline.zip_labeled_unlabeled(labeled, unlabeled)))
    assert batch["image"].shape == (2, 32, 32, 3)
    assert batch["unl_image"].shape == (6, 32, 32, 3)
    assert batch["unl_teacher_image"].shape == (6, 32, 32, 3)
    assert batch["unl_probs"].shape == (6, 3)
    # the teacher view is the clean eval view: no RandAugment, no crop
    clean = set()
    for raw in tf.data.TFRecordDataset(files):
        encoded = tf.train.Example.FromString(raw.numpy()).features.feature["image/encoded"]
        image = preprocess.decode(encoded.bytes_list.value[0])
        clean.add(preprocess.preprocess_for_eval(image, 32, True).numpy().tobytes())
    assert all(img.tobytes() in clean for img in batch["unl_teacher_image"].numpy())
    assert not all(img.tobytes() in clean for img in batch["unl_image"].numpy())


def test_unlabeled_errors(tmp_path):
    with pytest.raises(UserInputError, match="train\\* or extra\\*"):
        pipeline.unlabeled_files(str(tmp_path))
    write_unlabeled(tmp_path, "extra", 2, num_classes=5)
    cfg = pipeline.InputConfig(image_size=32, num_classes=3, small_image=True)
    ds = pipeline.unlabeled_train_dataset(pipeline.unlabeled_files(str(tmp_path)), cfg, 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="probabilities"):
        next(iter(ds))


def _proto(feature: dict) -> bytes:
    """Reference encoding: protobuf's deterministic serialization of {key: (kind, values)}."""
    import tensorflow as tf

    lists = {"bytes": lambda v: tf.train.Feature(bytes_list=tf.train.BytesList(value=v)),
             "int": lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=v)),
             "float": lambda v: tf.train.Feature(float_list=tf.train.FloatList(value=v))}
    return tf.train.Example(features=tf.train.Features(feature={
        k: lists[kind](values) for k, (kind, values) in feature.items()})).SerializeToString(
        deterministic=True)


def test_record_encoding_is_protobufs_deterministic_encoding():
    import numpy as np

    from noisy_student_tf.data import records

    rng = np.random.default_rng(0)
    img = bytes(rng.integers(0, 256, 300, dtype=np.uint8))  # lengths needing 2-byte varints
    p = rng.dirichlet(np.ones(1000)).astype(np.float32)
    assert records.labeled_example(img, 7) == _proto(
        {"image/encoded": ("bytes", [img]), "image/class/label": ("int", [7])})
    assert records.unlabeled_example(img, np.zeros(10)) == _proto(
        {"image/encoded": ("bytes", [img]), "label": ("int", [0]), "prob": ("float", [0.0]),
         "probabilities": ("float", [0.0] * 10)})
    assert records.unlabeled_only_example(b"") == _proto({"image/encoded": ("bytes", [b""])})
    assert records.prediction_example(p, 999) == _proto(
        {"probabilities": ("float", p.tolist()), "classes": ("int", [999])})
    base = {"image/encoded": ("bytes", [img]), "label": ("int", [3]),
            "prob": ("float", [float(p[3])])}
    assert records.pseudo_label_example(img, p, 3, p[3], copies=5) == _proto(
        {**base, "probabilities": ("float", p.tolist()), "copies": ("int", [5])})
    assert records.pseudo_label_example(img, p, 3, p[3], "fp16") == _proto(
        {**base, "probabilities_fp16": ("bytes", [p.astype("<f2").tobytes()])})
    top = np.argsort(-p, kind="stable")[:10]
    assert records.pseudo_label_example(img, p, 3, p[3], "topk", 10) == _proto(
        {**base, "topk_classes": ("int", top.tolist()),
         "topk_probabilities": ("float", p[top].tolist())})
    assert records._serialize({"x": records._ints([-1, 0, 2**40])}) == _proto(
        {"x": ("int", [-1, 0, 2**40])})
    assert records._serialize({"e": records._floats([]), "f": records._ints([])}) == _proto(
        {"e": ("float", []), "f": ("int", [])})


def test_record_key_order_is_protobufs():
    from noisy_student_tf.data import records

    keys = ["b", "ab", "a", "abc", "ba", "prob", "probabilities", "aab", "c"]
    feature = {k: records._ints([1]) for k in keys}
    assert records._serialize(feature) == _proto({k: ("int", [1]) for k in keys})
