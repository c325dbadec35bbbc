"""absl flags of tools/show_pseudo_labels.py."""

from absl import flags

from flags.main_flags import _Definer


def define_pictures_flags(flag_values=None) -> None:
    d = _Definer(flag_values if flag_values is not None else flags.FLAGS)
    d.DEFINE_string("filter_dir", None, "The filter tool's --output_dir (threshold.json, "
                    "stats/, data/train-*).")
    d.DEFINE_string("output_dir", None, "Where the PNG files and TensorBoard images go "
                    "(default: <filter_dir>/pictures).")
    d.DEFINE_integer("num_label_classes", None, "Classes; default: from --label_data_dir's "
                     "dataset_info.json, else threshold.json.")
    d.DEFINE_string("label_data_dir", "", "A tools/prepare_data.py directory: class names and "
                    "count from its dataset_info.json.")
    d.DEFINE_integer("images_per_row", 8, "Images in each row of a class's contact sheet.")


def pictures_args_from_flags(fv) -> dict:
    """The tool's only reading of its flags -> keyword arguments of pseudo/pictures.write."""
    import os

    from noisy_student_tf import io_utils
    from noisy_student_tf.data import prepare
    from noisy_student_tf.errors import UserInputError

    if not fv.filter_dir:
        raise UserInputError("--filter_dir is required (the filter tool's --output_dir)")
    if fv.images_per_row < 1:
        raise UserInputError(f"--images_per_row={fv.images_per_row} must be at least 1")
    names, num = None, fv.num_label_classes
    if fv.label_data_dir:
        info = prepare.read_info(fv.label_data_dir)
        if info is None:
            raise UserInputError(f"--label_data_dir={fv.label_data_dir!r} has no "
                                 f"{prepare.INFO_FILE} (made by tools/prepare_data.py)")
        names, num = info.get("class_names"), num or info.get("num_classes")
    if num is None:
        threshold = os.path.join(fv.filter_dir, "threshold.json")
        num = len(io_utils.read_json(threshold, default={})) or None
    if not num:
        raise UserInputError("--num_label_classes is required (no dataset_info.json or "
                             "threshold.json to read it from)")
    return dict(filter_dir=fv.filter_dir,
                output_dir=fv.output_dir or os.path.join(fv.filter_dir, "pictures"),
                num_classes=num, class_names=names, per_class=fv.images_per_row)
