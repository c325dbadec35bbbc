"""absl flag definitions for main.py: upstream main.py's 59 flags (same names, types, defaults),
predict_label.py's 10 (main.py imports them upstream too), and this port's additions.

Definitions only: flags/config.py turns parsed values into noisy_student_tf.config objects.
"""

from absl import flags

# Upstream flags that only matter on TPU or change nothing numerically: accepted, documented in
# WORKSPACE.md, and a warning is logged when one is set to a non-default value.
NO_EFFECT_FLAGS = (
    "master", "gcp_project", "tpu_zone", "num_shards_per_group", "num_tpu_cores",
    "transpose_input", "log_step_count_steps", "debug", "data_format",
)


class _Definer:
    """flags.DEFINE_* bound to one FlagValues (tests use a fresh one)."""

    def __init__(self, flag_values):
        self._fv = flag_values

    def __getattr__(self, name):
        define = getattr(flags, name)
        return lambda *args, **kwargs: define(*args, flag_values=self._fv, **kwargs)


def define_main_flags(flag_values=None) -> None:
    """Defines every flag main.py accepts (call once, before app.run)."""
    d = _Definer(flag_values if flag_values is not None else flags.FLAGS)
    # ---- upstream main.py
    d.DEFINE_string("task_name", "imagenet",
                    "Dataset: imagenet, svhn, digits (embedded scikit-learn digits, no download) "
                    "or custom (your own upstream-format TFRecords; counts read from the files).")
    d.DEFINE_string("label_data_dir", None,
                    "Directory of labeled TFRecords (train*, dev*/validation*, test*); several "
                    "joined with ';'. For --task_name=digits it defaults to the embedded data.")
    d.DEFINE_string("model_dir", None,
                    "Directory for checkpoints, TensorBoard logs, FLAGS.json, eval_results.json.")
    d.DEFINE_bool("init_model", False, "Initialise the student from --init_model_path (EMA).")
    d.DEFINE_string("init_model_path", None, "Checkpoint used when --init_model is set.")
    d.DEFINE_string("model_name", "efficientnet-b0",
                    "Student architecture: efficientnet-b0 ... efficientnet-b7, efficientnet-l2.")
    d.DEFINE_string("mode", "train_and_eval",
                    "train, eval, train_and_eval (trains and evaluates every --steps_per_eval; "
                    "upstream's trained nothing), predict, export (a SavedModel for serving, "
                    "see --export_dir), or eval_robustness (corruption errors / mCE and flip "
                    "rates / mFR of the checkpoint in --model_dir, see --robustness_*).")
    d.DEFINE_integer("train_steps", 109474,
                     "Length of the LR schedule in steps (350 ImageNet epochs at batch 4096); "
                     "multiplied by --train_ratio.")
    d.DEFINE_integer("input_image_size", None,
                     "Student resolution; defaults to the model's (32 for svhn and digits).")
    d.DEFINE_float("train_ratio", 1.0,
                   "Multiplies train_steps and train_last_step_num; decay epochs are 2.4x this.")
    d.DEFINE_integer("train_batch_size", 4096, "Global labeled batch size.")
    d.DEFINE_integer("eval_batch_size", 8, "Global eval batch size.")
    d.DEFINE_bool("use_tpu", True,
                  "Run on TPU. Upstream's default is True; here, left at its default without a "
                  "TPU it falls back to CPU/GPU with a warning, and set explicitly without a "
                  "TPU (--tpu) it is an error.")
    d.DEFINE_string("master", None, "TPU master address (TPU only; no effect here).")
    d.DEFINE_string("tpu", None, "TPU name or grpc address; selects TPUStrategy.")
    d.DEFINE_string("gcp_project", None, "GCP project of the TPU (TPU only; no effect here).")
    d.DEFINE_string("tpu_zone", None, "GCE zone of the TPU (TPU only; no effect here).")
    d.DEFINE_integer("num_train_images", None,
                     "Labeled training images (sets steps per epoch); default: task value, or "
                     "counted from the records.")
    d.DEFINE_integer("num_eval_images", None,
                     "Images in the dev subset; default: task value or counted. Informational: "
                     "evaluation always reads the whole subset.")
    d.DEFINE_integer("num_test_images", None,
                     "Images in the test subset; default: task value or counted. Informational.")
    d.DEFINE_integer("steps_per_eval", 3000,
                     "In train_and_eval mode, evaluate every this many steps (and at the end).")
    d.DEFINE_bool("skip_host_call", False, "Do not write training scalars to TensorBoard.")
    d.DEFINE_integer("iterations_per_loop", 1000,
                     "Steps per tf.function call (upstream's TPU loop); also the logging period "
                     "and the minimum checkpoint interval.")
    d.DEFINE_string("data_format", "channels_last",
                    "Upstream's data format; only channels_last is supported (no effect).")
    d.DEFINE_integer("num_label_classes", 1000, "Number of classes (forced to 10 for svhn/digits).")
    d.DEFINE_bool("transpose_input", True,
                  "Upstream's TPU infeed transpose trick; numerically neutral, no effect here.")
    d.DEFINE_bool("use_bfloat16", True,
                  "mixed_bfloat16 policy (float32 logits and losses). Upstream's default is "
                  "True; left at its default it applies on TPU only, set explicitly it applies "
                  "everywhere.")
    d.DEFINE_float("base_learning_rate", 0.016, "Learning rate per 256 images.")
    d.DEFINE_float("moving_average_decay", 0.9999,
                   "EMA decay (ramped as min(decay, (1+t)/(10+t))); <= 0 disables the EMA.")
    d.DEFINE_float("weight_decay", 1e-5, "L2 coefficient on non-BN trainable weights.")
    d.DEFINE_float("label_smoothing", 0.1, "Label smoothing of labeled and hard pseudo-labels.")
    d.DEFINE_float("dropout_rate", None, "Head dropout; default: the model's (0.2-0.5).")
    d.DEFINE_float("stochastic_depth_rate", None, "Stochastic depth base rate; default 0.2.")
    d.DEFINE_integer("log_step_count_steps", 64,
                     "Upstream's estimator logging period (no effect; logging follows "
                     "--iterations_per_loop).")
    d.DEFINE_bool("use_cache", True, "Cache the raw records in memory before shuffling.")
    d.DEFINE_float("depth_coefficient", None, "Override the model's depth coefficient.")
    d.DEFINE_float("width_coefficient", None, "Override the model's width coefficient.")
    d.DEFINE_integer("debug", 0, "Unused upstream (no effect).")
    d.DEFINE_string("unlabel_data_dir", "",
                    "Unlabeled TFRecord dirs (train*, extra*), ';'-separated.")
    d.DEFINE_float("unlabel_ratio", 0,
                   "Unlabeled batch = ceil(batch * label_data_sample_prob * ratio); also the "
                   "unlabeled loss weight. 0 disables the unlabeled part.")
    d.DEFINE_float("teacher_softmax_temp", -1,
                   "Soft pseudo-label temperature; -1 gives hard one-hot pseudo-labels.")
    d.DEFINE_integer("train_last_step_num", -1,
                     "Train only up to this step of the schedule (x train_ratio); -1: "
                     "train_steps.")
    d.DEFINE_string("teacher_model_name", None, "Architecture of the online teacher.")
    d.DEFINE_string("teacher_model_path", None, "Checkpoint of the online teacher (EMA used).")
    d.DEFINE_string("augment_name", None,
                    "None: crop and flip; v1: upstream's RandAugment; keras_cv / keras: those "
                    "libraries' RandAugment layers (comparison only, not upstream's ops).")
    d.DEFINE_bool("remove_aug", False, "Train with eval preprocessing (no crop, flip or RA).")
    d.DEFINE_integer("save_checkpoints_steps", 1000,
                     "Checkpoint period in steps (at least --iterations_per_loop).")
    d.DEFINE_integer("fix_layer_num", -1, "Freeze the stem and the first N blocks; -1: none.")
    d.DEFINE_integer("randaug_mag", 27, "RandAugment magnitude M.")
    d.DEFINE_integer("randaug_layer", 2, "RandAugment number of ops N.")
    d.DEFINE_integer("num_shards_per_group", -1,
                     "Cross-replica BN group size on TPU (TPU only; no effect here).")
    d.DEFINE_float("label_data_sample_prob", 1,
                   "Keep each labeled example's loss with this probability (also scales LR, "
                   "steps per epoch and the unlabeled batch).")
    d.DEFINE_integer("num_tpu_cores", None, "TPU cores (TPU only; no effect here).")
    d.DEFINE_string("unl_aug", "default",
                    "Augmentation of unlabeled images: 'default' follows --augment_name.")
    d.DEFINE_bool("cutout_op", True, "Include Cutout among RandAugment's ops.")
    d.DEFINE_bool("small_image_model", False,
                  "Upstream's 32x32 variant (stride 1 in stages 2-3, pad-and-crop training).")
    d.DEFINE_float("final_base_lr", None,
                   "If set, choose decay epochs so the per-256 LR decays to this by the end.")
    d.DEFINE_integer("num_train_shards", None, "Use only the first N labeled train files.")
    d.DEFINE_integer("keep_checkpoint_max", 5, "Checkpoints kept in model_dir.")
    # ---- upstream predict_label.py (imported by upstream main.py)
    d.DEFINE_string("predict_ckpt_path", "", "Checkpoint to predict with (EMA weights).")
    d.DEFINE_string("output_dir", "", "Where prediction or reassign outputs go.")
    d.DEFINE_string("info_dir", "", "Where per-shard info-*.txt count files go.")
    d.DEFINE_integer("num_shards", 128, "Number of input shards (in file names).")
    d.DEFINE_string("shard_id", "0", "Comma-separated shard ids to predict, one after another.")
    d.DEFINE_integer("total_replicas", 1, "Split each shard record-wise into this many parts.")
    d.DEFINE_integer("worker_id", 0, "Which part of the shard (0..total_replicas-1).")
    d.DEFINE_bool("reassign_label", False, "Re-predict labels of filtered records.")
    d.DEFINE_string("data_type", "tfrecord", "Input format of prediction (only tfrecord).")
    d.DEFINE_string("file_prefix", "train", "Input shard prefix for prediction.")
    # ---- this port
    d.DEFINE_string("strategy", "auto",
                    "tf.distribute strategy: auto, default, one_device, mirrored, "
                    "multi_worker_mirrored or tpu. auto: tpu if --tpu is given, multi-worker if "
                    "TF_CONFIG lists workers, mirrored for >1 GPU, else default.")
    d.DEFINE_integer("seed", 0, "Seed for data order, augmentation and label masking.")
    d.DEFINE_string("data_cache_dir", None,
                    "Where --task_name=digits writes its TFRecords (default "
                    "$NOISY_STUDENT_CACHE or ~/.cache/noisy_student_tf).")
    d.DEFINE_bool("randaug_upstream_contrast", False,
                  "Reproduce upstream's Contrast op bug (grey mean = pixel count / 256) instead "
                  "of the mean grey level PIL uses.")
    d.DEFINE_integer("image_summary_images", 4,
                     "Augmented training images written to TensorBoard at each checkpoint "
                     "(0 disables).")
    d.DEFINE_bool("jit_compile", None,
                  "XLA-compile the forward/backward pass and eval. Default (unset): on with a "
                  "GPU or TPU, off on CPU, where XLA made the train step 5-7x slower here.")
    d.DEFINE_integer("predict_batch_size", 256,
                     "Images per prediction batch (upstream hard-coded 8).")
    d.DEFINE_enum("probabilities_format", "full", ["full", "fp16", "topk"],
                  "Soft labels written by --mode=predict --reassign_label: full (upstream), "
                  "fp16 or topk (see tools/filter_unlabel.py).")
    d.DEFINE_integer("top_k", 10, "Classes kept with --probabilities_format=topk.")
    d.DEFINE_bool("redo_changed", False,
                  "--mode=predict: when --output_dir holds outputs made with other settings "
                  "(another teacher, format or shard layout; output_dir/predict_settings.json), "
                  "remove them and predict again. Off: such a rerun stops with one line.")
    # ---- export (names as in tensorflow/tpu's EfficientNet main.py)
    d.DEFINE_string("export_dir", None,
                    "--mode=export: where the SavedModel goes (must not hold one already).")
    d.DEFINE_bool("export_moving_average", True,
                  "--mode=export: export the EMA weights (false: the raw training weights).")
    d.DEFINE_integer("export_top_k", 5, "--mode=export: classes in the top_k_* outputs.")
    d.DEFINE_bool("use_fp16", False,
                  "Mixed float16 (GPUs) with dynamic loss scaling; logits, losses, BN and "
                  "weights stay float32. Steps whose scaled gradients overflow are skipped "
                  "(global_step counts applied steps). Exclusive with --use_bfloat16.")
    d.DEFINE_bool("skip_corrupt_records", False,
                  "Check every input record first (CRC, keys, label range, image bytes, soft "
                  "label length) and train/evaluate without the bad ones, logging each and "
                  "their count (TensorBoard data/skipped_records). Off: the first bad record "
                  "stops the run with its file and record index.")
    d.DEFINE_bool("flip", None,
                  "Random horizontal flips in training. Unset: the task's rule: imagenet flips, "
                  "svhn and digits never do (as upstream), custom data flips unless it uses the "
                  "32x32 small-image model (upstream's SVHN path; digits and text must not be "
                  "mirrored). --flip for CIFAR-like 32x32 images.")
    d.DEFINE_list("mean_rgb", None,
                  "Per-channel mean (R,G,B on the 0-255 scale) the images are normalised with. "
                  "Unset: the task's, or for custom data the mean in <label_data_dir>/"
                  "dataset_info.json (tools/prepare_data.py --compute_mean_std), else ImageNet's. "
                  "Stored in run_config.json; eval, predict, export and teachers reuse it.")
    d.DEFINE_list("stddev_rgb", None, "Per-channel standard deviation (0-255), as --mean_rgb.")
    d.DEFINE_string("tfds_data_dir", None,
                    "With --label_data_dir / --unlabel_data_dir of the form tfds:NAME: the "
                    "tensorflow-datasets data dir holding the prepared dataset (default: tfds' "
                    "own). Nothing is downloaded.")
    d.DEFINE_string("tfds_train_split", "train", "tfds:NAME: split string of the training "
                    "images (e.g. train[4000:]).")
    d.DEFINE_string("tfds_dev_split", "", "tfds:NAME: split of the dev images (e.g. "
                    "train[:4000]); empty: `validation` when the dataset has it, else none.")
    d.DEFINE_string("tfds_test_split", "test", "tfds:NAME: split of the test images; empty: "
                    "none.")
    d.DEFINE_string("tfds_unlabel_split", "train", "--unlabel_data_dir=tfds:NAME: the split "
                    "whose images are the unlabeled data (labels unused), e.g. extra.")
    d.DEFINE_bool("deterministic", False,
                  "Deterministic tf.data order (slower); with --seed gives repeatable runs.")
    # ---- --mode=eval_robustness (noisy_student_tf/robustness/)
    d.DEFINE_list("robustness_corruptions", None, "ImageNet-C corruptions to evaluate (default: "
                  "all 15; an empty value: none).")
    d.DEFINE_list("robustness_severities", ["1", "2", "3", "4", "5"], "Severities (1-5).")
    d.DEFINE_list("robustness_perturbations", None, "ImageNet-P-style perturbations for flip "
                  "rates (default: all 7; an empty value: none).")
    d.DEFINE_integer("robustness_frames", 10, "Frames per perturbation sequence.")
    d.DEFINE_enum("robustness_subset", "test", ["test", "dev"], "Which labeled split is "
                  "corrupted (the paper reports test-set corruptions).")
    d.DEFINE_integer("robustness_max_images", None, "Evaluate only the first N images (quick "
                     "looks; the numbers then describe those N).")
    d.DEFINE_list("robustness_tfds", [], "Prepared tensorflow-datasets robustness sets in "
                  "--tfds_data_dir: imagenet2012_corrupted, cifar10_corrupted (per corruption and "
                  "severity, as --robustness_corruptions/--robustness_severities), imagenet_a, "
                  "imagenet_r, imagenet_v2 (top-1 error). Nothing is downloaded.")
    d.DEFINE_list("robustness_reference", [], "model_dirs (e.g. the teacher, the baseline) to "
                  "compare with: their errors normalise the mCE / mFR (the paper uses AlexNet); "
                  "their robustness.json is reused when made with the same settings, else they "
                  "are evaluated in this run.")
    d.DEFINE_string("data_service_address", None,
                    "host:port of a tf.data service dispatcher (tools/data_service.py): the "
                    "training input (decode, crop, RandAugment, batching) runs on its workers, "
                    "which must read --label_data_dir / --unlabel_data_dir under the same paths. "
                    "Training only (evaluation and prediction read locally); not with "
                    "--deterministic.")
