"""absl flags of tools/prepare_data.py and the PrepareConfig they describe."""

from absl import flags

from flags.main_flags import _Definer


def define_prepare_flags(flag_values=None) -> None:
    d = _Definer(flag_values if flag_values is not None else flags.FLAGS)
    d.DEFINE_string("output_dir", None, "Where the TFRecords go (train*, dev*, test*, extra*, "
                    "dataset_info.json).")
    d.DEFINE_string("image_dir", "", "A folder with one subfolder of images per class.")
    d.DEFINE_string("unlabeled_image_dir", "", "A folder of unlabeled images (subfolders are "
                    "read too; no labels) -> extra* shards.")
    d.DEFINE_string("test_image_dir", "", "Class folders of test images (same class names); "
                    "default: --test_size of --image_dir is held out.")
    d.DEFINE_string("tfds_name", "", "A prepared tensorflow-datasets dataset, e.g. svhn_cropped, "
                    "cifar10, imagenet2012 (NAME, NAME/CONFIG or NAME:VERSION).")
    d.DEFINE_string("tfds_data_dir", None, "tfds data dir (default: tfds' own, "
                    "~/tensorflow_datasets). Nothing is downloaded.")
    d.DEFINE_string("tfds_train_split", "train", "tfds split string of the training images.")
    d.DEFINE_string("tfds_dev_split", "", "tfds split of the dev images (e.g. validation); empty: "
                    "--dev_size images held out of the train split at random (upstream SVHN).")
    d.DEFINE_string("tfds_test_split", "test", "tfds split of the test images; empty: none.")
    d.DEFINE_string("tfds_unlabeled_split", "", "tfds split whose images (labels dropped) become "
                    "the unlabeled extra* shards, e.g. extra for svhn_cropped.")
    d.DEFINE_float("dev_size", 0.1, "Dev hold-out from the training images: a fraction (< 1) "
                   "or a count (>= 1; upstream SVHN: 4000).")
    d.DEFINE_float("test_size", 0.1, "Test hold-out of --image_dir when no --test_image_dir: a "
                   "fraction (< 1) or a count.")
    d.DEFINE_integer("train_shards", 0, "Shards of train*; 0: one per ~2048 images (upstream "
                     "SVHN: 128).")
    d.DEFINE_integer("eval_shards", 0, "Shards of dev* and test*; 0: automatic (upstream SVHN: "
                     "64).")
    d.DEFINE_integer("unlabeled_shards", 0, "Shards of extra*; 0: automatic (upstream SVHN: 128).")
    d.DEFINE_enum("image_format", "jpeg", ["jpeg", "png", "keep"],
                  "jpeg: JPEGs kept, other images re-encoded as RGB JPEG q100 (upstream's format); "
                  "png: lossless RGB PNG; keep: every file's bytes unchanged.")
    d.DEFINE_bool("compute_mean_std", False, "Compute the training images' per-channel mean and "
                  "stddev (0-255) into dataset_info.json; main.py uses them for this directory.")
    d.DEFINE_integer("seed", 0, "Seed of the dev/test hold-outs (upstream SVHN: 0).")
    d.DEFINE_bool("redo_changed", False, "Replace outputs already in --output_dir that other "
                  "settings (or another tool) made, instead of stopping.")


def prepare_config_from_flags(fv):
    """The tool's only reading of its flags."""
    from noisy_student_tf.data.prepare import PrepareConfig

    names = [f.name for f in PrepareConfig.__dataclass_fields__.values()]
    values = {n: fv[n].value for n in names}
    values["output_dir"] = values["output_dir"] or ""
    return PrepareConfig(**values)
