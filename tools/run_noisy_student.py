"""The whole Noisy Student loop in one command: teacher -> noised students -> summary.

    python tools/run_noisy_student.py --task_name=digits --output_dir=runs/ns --with_baseline

Stages (each a `main.py` run in its own directory under --output_dir, marked DONE when finished;
rerunning skips finished stages and resumes an interrupted one from its last checkpoint):
  teacher    supervised training on the labeled data (crop/flip only, upstream's teacher)
  student_i  online Noisy Student: the previous round's model as frozen teacher (EMA weights,
             clean views), RandAugment + dropout + stochastic depth on the student, labeled +
             unlabeled batches (upstream's local_scripts/svhn/run.sh, scaled to small data)
  pseudo_i   (--teacher_mode=offline) before student_i: main.py --mode=predict with the
             previous round's model on every unlabeled shard, then tools/filter_unlabel.py
             (both passes); student_i then trains on the filtered records, no teacher in
             its step (upstream's predict.sh -> filter_unlabel.sh -> svhn_offline.sh)
  baseline   (--with_baseline) student_1's model, noise and schedule on the labeled data only:
             what the unlabeled data bought, separately from stronger noise and longer training
Writes <output_dir>/summary.json {"rounds": [{name, model_name, dev_top_1, test_top_1,
model_dir}, ...]} and prints it as a table. The test split is reported, never used to choose.

On --task_name=digits (default) the data are the embedded digits with --labels_per_class labels
per class and the rest of the train split as unlabeled images. For your own data pass
--label_data_dir (train*, dev*, test*) and --unlabel_data_dir (extra*/train*) in upstream's
TFRecord formats, with --num_label_classes and --input_image_size.
"""

import os
import subprocess
import sys
import time

from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from noisy_student_tf import io_utils  # noqa: E402
from noisy_student_tf.errors import UserInputError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("task_name", "digits", "digits (embedded) or custom (your TFRecords).")
flags.DEFINE_string("output_dir", None, "Where stages, summary.json and logs go.")
flags.DEFINE_string("label_data_dir", None, "Labeled TFRecords (custom task).")
flags.DEFINE_string("unlabel_data_dir", None, "Unlabeled TFRecords (custom task).")
flags.DEFINE_integer("num_label_classes", 10, "Classes (custom task).")
flags.DEFINE_integer("input_image_size", 32, "Image size (custom task; 32 uses the "
                     "small-image model).")
flags.DEFINE_integer("labels_per_class", 15, "digits: labeled train images kept per class.")
flags.DEFINE_integer("seed", 0, "Seed passed to every stage.")
flags.DEFINE_integer("num_iterations", 1, "Student rounds (each student teaches the next).")
flags.DEFINE_string("teacher_model_name", "efficientnet-b0", "Teacher architecture.")
flags.DEFINE_string("student_model_names", None,
                    "Comma list, one per round (equal or larger), e.g. "
                    "efficientnet-b0,efficientnet-b1; default: the teacher's for every round.")
flags.DEFINE_float("width_coefficient", 0.5, "Width override for every model (small data).")
flags.DEFINE_float("depth_coefficient", 0.5, "Depth override for every model (small data).")
flags.DEFINE_integer("train_batch_size", 32, "Labeled batch size of every stage.")
flags.DEFINE_integer("teacher_train_steps", 300, "Teacher schedule length.")
flags.DEFINE_integer("student_train_steps", 600, "Student (and baseline) schedule length.")
flags.DEFINE_float("unlabel_ratio", 2, "Unlabeled images per labeled image in a student batch.")
flags.DEFINE_float("teacher_softmax_temp", 1.0, "Soft pseudo-labels at this temperature; -1: "
                   "hard labels.")
flags.DEFINE_string("augment_name", "v1", "Student input noise ('' for crop/flip only).")
flags.DEFINE_integer("randaug_mag", 5, "Student RandAugment magnitude (upstream SVHN: 5).")
flags.DEFINE_float("student_dropout_rate", None, "Student head dropout (default: model's).")
flags.DEFINE_float("student_stochastic_depth_rate", None, "Student stochastic depth (default "
                   "0.2).")
flags.DEFINE_bool("with_baseline", False, "Also train the labeled-only, noise-matched baseline.")
flags.DEFINE_string("data_cache_dir", None, "digits: where the split's TFRecords are cached.")
flags.DEFINE_enum("teacher_mode", "online", ["online", "offline"],
                  "online: the teacher runs inside the student's train step (upstream's default "
                  "scripts). offline: main.py --mode=predict on the unlabeled shards, then "
                  "tools/filter_unlabel.py (confidence filter + class balance), then the student "
                  "trains on the filtered records (upstream's svhn_offline chain).")
flags.DEFINE_string("teacher_model_path", None,
                    "Start from this teacher instead of training one: a model_dir or checkpoint, "
                    "a converted upstream checkpoint (tools/convert_checkpoint.py), a "
                    "keras.applications .weights.h5 file, or a SavedModel from main.py "
                    "--mode=export. --teacher_model_name names its architecture.")
flags.DEFINE_integer("filter_num_image", -1, "offline: images per class after balancing; -1: "
                     "unlabeled images / classes (as upstream's SVHN script sets it).")
flags.DEFINE_float("filter_min_threshold", 0.3, "offline: lowest teacher confidence kept "
                   "(upstream's scripts: 0.3).")


def _stage_args(model_name: str, model_dir: str, train_steps: int, common: list) -> list:
    return [f"--model_name={model_name}", f"--model_dir={model_dir}",
            f"--train_steps={train_steps}", *common]


def _run_commands(name: str, stage_dir: str, commands: list) -> None:
    """Runs `commands` (each [script, *args]) in order for one stage unless the stage is DONE;
    logs to <stage_dir>/stage_log.txt and writes DONE when all succeeded. Every command is
    itself restartable (main.py resumes, the tools skip finished shards)."""
    done = os.path.join(stage_dir, "DONE")
    if os.path.exists(done):
        logging.info("[%s] already done, skipping", name)
        return
    os.makedirs(stage_dir, exist_ok=True)
    t0 = time.time()
    log_path = os.path.join(stage_dir, "stage_log.txt")
    for script, *args in commands:
        logging.info("[%s] starting: %s %s", name, script, " ".join(args))
        with open(log_path, "a") as log:
            proc = subprocess.run([sys.executable, os.path.join(ROOT, script), *args],
                                  stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        if proc.returncode != 0:
            tail = open(log_path).read().strip().splitlines()
            prefix = f"{os.path.basename(script)}: error:"
            errors = [l for l in tail if l.startswith(prefix)] or tail[-1:]
            raise UserInputError(f"stage {name} failed (exit {proc.returncode}): "
                                 f"{errors[-1] if errors else ''} (log: {log_path})")
    io_utils.write_text_atomic(done, "ok\n")
    logging.info("[%s] finished in %.0f s", name, time.time() - t0)


def run_stage(name: str, args: list, output_dir: str) -> dict:
    """Runs main.py for one stage unless it is DONE; returns its eval_results.json."""
    model_dir = os.path.join(output_dir, name)
    _run_commands(name, model_dir, [["main.py", "--mode=train_and_eval", *args]])
    return io_utils.read_json(os.path.join(model_dir, "eval_results.json"))


def unlabeled_shards(unlabel_dir: str):
    """(prefix, num_shards) of upstream-named shards `<prefix>-SSSSS-of-NNNNN` in unlabel_dir
    (extra* preferred, as upstream's scripts predict on SVHN extra)."""
    import re

    names = sorted(os.listdir(unlabel_dir)) if os.path.isdir(unlabel_dir) else []
    for prefix in ("extra", "train"):
        found = [re.fullmatch(rf"{prefix}-(\d{{5}})-of-(\d{{5}})", n) for n in names]
        found = [m for m in found if m]
        if found:
            total = {int(m.group(2)) for m in found}
            if len(total) != 1 or len(found) != total.pop():
                raise UserInputError(f"--unlabel_data_dir={unlabel_dir!r}: {prefix}-* shards "
                                     "are incomplete or of mixed counts")
            return prefix, len(found)
    raise UserInputError(f"--unlabel_data_dir={unlabel_dir!r} has no shards named "
                         "extra-SSSSS-of-NNNNN or train-SSSSS-of-NNNNN (needed by "
                         "--teacher_mode=offline)")


def pseudo_label_stage(name: str, out: str, data: list, teacher_name: str, teacher_dir: str,
                       unlabel_dir: str, num_classes: int) -> str:
    """Offline round: predict on every unlabeled shard, then filter and balance (both passes).
    Returns the directory of the filtered records."""
    stage = os.path.join(out, name)
    prefix, n = unlabeled_shards(unlabel_dir)
    info, pred = os.path.join(stage, "info"), os.path.join(stage, "predict_label")
    filtered = os.path.join(stage, "filter_data")
    predict = ["main.py", "--mode=predict", *data, f"--model_name={teacher_name}",
               f"--predict_ckpt_path={teacher_dir}", f"--label_data_dir={unlabel_dir}",
               f"--file_prefix={prefix}", f"--num_shards={n}",
               f"--shard_id={','.join(str(s) for s in range(n))}", f"--info_dir={info}",
               f"--output_dir={pred}", f"--seed={FLAGS.seed}"]
    _run_commands(f"{name}/predict", os.path.join(stage, "predict"), [predict])
    num_image = FLAGS.filter_num_image
    if num_image == -1:
        total = sum(io_utils.read_json(os.path.join(info, f))["image_num"]
                    for f in os.listdir(info) if f.endswith(".txt"))
        num_image = max(1, total // num_classes)
    common = [f"--input_dir={unlabel_dir}", f"--prediction_dir={pred}", f"--info_dir={info}",
              f"--prelim_stats_dir={os.path.join(stage, 'prelim_stats')}",
              f"--output_dir={filtered}", f"--num_shards={n}", "--task=0",
              f"--num_label_classes={num_classes}", f"--num_image={num_image}",
              f"--min_threshold={FLAGS.filter_min_threshold}", f"--file_prefix={prefix}",
              f"--seed={FLAGS.seed}"]
    filters = [["tools/filter_unlabel.py", *common, f"--only_get_stats={p}", f"--shard_id={s}"]
               for p in (1, 0) for s in reversed(range(n))]
    _run_commands(f"{name}/filter", os.path.join(stage, "filter"), filters)
    data_dir = os.path.join(filtered, "data")
    if not any(f.startswith("train-") and ".tmp" not in f for f in os.listdir(data_dir)):
        raise UserInputError(f"{name}: the filter kept no image (every teacher confidence is "
                             f"below --filter_min_threshold={FLAGS.filter_min_threshold}; see "
                             f"{os.path.join(filtered, 'threshold.json')})")
    return data_dir


def main(argv):
    del argv
    try:
        run()
    except UserInputError as e:
        print(f"run_noisy_student.py: error: {e}", file=sys.stderr)
        sys.exit(2)


def run():
    if not FLAGS.output_dir:
        raise UserInputError("--output_dir is required")
    out = FLAGS.output_dir
    os.makedirs(out, exist_ok=True)
    num_classes = FLAGS.num_label_classes
    if FLAGS.task_name == "digits":
        from noisy_student_tf.data import digits

        num_classes = 10
        try:
            label_dir, unlabel_dir = digits.prepare_scarce(FLAGS.labels_per_class,
                                                           FLAGS.data_cache_dir)
        except ValueError as e:
            raise UserInputError(f"--{e}") from None
        data = ["--task_name=digits", f"--label_data_dir={label_dir}"]
    elif FLAGS.task_name == "custom":
        if not FLAGS.label_data_dir or not FLAGS.unlabel_data_dir:
            raise UserInputError("--task_name=custom needs --label_data_dir and "
                                 "--unlabel_data_dir")
        label_dir, unlabel_dir = FLAGS.label_data_dir, FLAGS.unlabel_data_dir
        small = FLAGS.input_image_size == 32
        data = ["--task_name=custom", f"--label_data_dir={label_dir}",
                f"--num_label_classes={FLAGS.num_label_classes}",
                f"--input_image_size={FLAGS.input_image_size}",
                f"--small_image_model={small}"]
    else:
        raise UserInputError(f"--task_name={FLAGS.task_name!r}; expected digits or custom")
    common = [*data, f"--seed={FLAGS.seed}",
              f"--train_batch_size={FLAGS.train_batch_size}",
              f"--width_coefficient={FLAGS.width_coefficient}",
              f"--depth_coefficient={FLAGS.depth_coefficient}",
              "--iterations_per_loop=50", "--save_checkpoints_steps=100",
              "--eval_batch_size=128", "--steps_per_eval=100000"]
    noise = [f"--augment_name={FLAGS.augment_name}", f"--randaug_mag={FLAGS.randaug_mag}"]
    if FLAGS.student_dropout_rate is not None:
        noise.append(f"--dropout_rate={FLAGS.student_dropout_rate}")
    if FLAGS.student_stochastic_depth_rate is not None:
        noise.append(f"--stochastic_depth_rate={FLAGS.student_stochastic_depth_rate}")
    names = (FLAGS.student_model_names.split(",") if FLAGS.student_model_names
             else [FLAGS.teacher_model_name] * FLAGS.num_iterations)
    if len(names) != FLAGS.num_iterations:
        raise UserInputError(f"--student_model_names lists {len(names)} models for "
                             f"--num_iterations={FLAGS.num_iterations}")

    rounds = []

    def record(name, model_name, results, model_dir=None):
        rounds.append({"name": name, "model_name": model_name,
                       "dev_top_1": results["dev"]["top_1_accuracy"] if results else None,
                       "test_top_1": results["test"]["top_1_accuracy"] if results else None,
                       "model_dir": model_dir or os.path.join(out, name)})

    teacher_name = FLAGS.teacher_model_name
    if FLAGS.teacher_model_path:  # a given teacher: not trained (nor evaluated) here
        if not os.path.exists(FLAGS.teacher_model_path) and not os.path.exists(
                FLAGS.teacher_model_path + ".index"):
            raise UserInputError(f"--teacher_model_path={FLAGS.teacher_model_path!r}: no such "
                                 "file, directory or checkpoint")
        prev_path = os.path.abspath(FLAGS.teacher_model_path)
        record("teacher", teacher_name, None, prev_path)
    else:
        record("teacher", teacher_name, run_stage(
            "teacher", _stage_args(teacher_name, os.path.join(out, "teacher"),
                                   FLAGS.teacher_train_steps, common), out))
        prev_path = os.path.join(out, "teacher")
    prev_name = teacher_name
    for i, model_name in enumerate(names, start=1):
        name = f"student_{i}"
        args = _stage_args(model_name, os.path.join(out, name), FLAGS.student_train_steps,
                           common) + noise + [f"--unlabel_ratio={FLAGS.unlabel_ratio}",
                                              f"--teacher_softmax_temp={FLAGS.teacher_softmax_temp}"]
        if FLAGS.teacher_mode == "offline":
            pseudo_dir = pseudo_label_stage(f"pseudo_{i}", out, data, prev_name, prev_path,
                                            unlabel_dir, num_classes)
            args.append(f"--unlabel_data_dir={pseudo_dir}")
        else:
            args += [f"--teacher_model_name={prev_name}", f"--teacher_model_path={prev_path}",
                     f"--unlabel_data_dir={unlabel_dir}"]
        record(name, model_name, run_stage(name, args, out))
        prev_path, prev_name = os.path.join(out, name), model_name
    if FLAGS.with_baseline:
        record("baseline", names[0], run_stage(
            "baseline", _stage_args(names[0], os.path.join(out, "baseline"),
                                    FLAGS.student_train_steps, common) + noise, out))
    summary = {"rounds": rounds, "seed": FLAGS.seed}
    io_utils.write_json_atomic(os.path.join(out, "summary.json"), summary)
    print(f"\n{'round':<12}{'model':<18}{'dev top-1':>10}{'test top-1':>11}")
    for r in rounds:
        if r["dev_top_1"] is None:
            print(f"{r['name']:<12}{r['model_name']:<18}{'(given)':>10}{'':>11}")
            continue
        print(f"{r['name']:<12}{r['model_name']:<18}{r['dev_top_1']:>10.4f}"
              f"{r['test_top_1']:>11.4f}")
    print(f"(summary: {os.path.join(out, 'summary.json')})")
    return summary


if __name__ == "__main__":
    app.run(main)
