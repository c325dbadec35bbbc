"""One replica's training step: pseudo-label targets, the loss, gradients and metrics (upstream
section 4.2). The Trainer (train/loop.py) runs it under its strategy, applies the gradients and
updates the EMA."""

import tensorflow as tf

from noisy_student_tf.config import RunConfig
from noisy_student_tf.data.preprocess import normalize
from noisy_student_tf.train import losses
from noisy_student_tf.data import keys


class TrainStep:
    """The per-replica computation of a supervised or Noisy Student step."""

    def __init__(self, cfg: RunConfig, model, optimizer, wd_vars, teacher, num_replicas: int):
        self.cfg, self.model, self.optimizer = cfg, model, optimizer
        self.wd_vars, self.teacher, self.num_replicas = wd_vars, teacher, num_replicas

    def unlabeled_targets(self, batch):
        """Pseudo-label targets q [U, C] (float32, no gradient), upstream section 4.2: from the
        online teacher's logits on its clean view, or from stored `probabilities` / `label`."""
        st, c = self.cfg.student, self.cfg.model.num_classes
        temp = st.teacher_softmax_temp
        if self.teacher is not None:
            t_logits = tf.stop_gradient(self.teacher(batch[keys.UNL_TEACHER_IMAGE]))
            if temp is not None:
                return tf.nn.softmax(t_logits / temp)
            hard = tf.argmax(t_logits, -1, output_type=tf.int32)
            return losses.smoothed_onehot(hard, c, self.cfg.train.label_smoothing)
        if temp is not None:
            probs = batch[keys.UNL_PROBS]
            total = tf.reduce_sum(probs, -1)
            tf.debugging.assert_positive(
                total, message="unlabeled record has all-zero `probabilities`: offline "
                "training with --teacher_softmax_temp needs predicted probabilities (or use "
                "--teacher_model_name for an online teacher)")
            sharpened = tf.pow(probs / total[:, None], 1.0 / temp)
            return sharpened / tf.reduce_sum(sharpened, -1, keepdims=True)
        labels = batch[keys.UNL_LABEL]
        tf.debugging.assert_greater_equal(labels, 0, message="unlabeled record has no `label` "
                                          "(offline hard labels need the filter tool's output)")
        tf.debugging.assert_less(labels, c, message="unlabeled `label` >= num_label_classes")
        return losses.smoothed_onehot(labels, c, self.cfg.train.label_smoothing)

    def compute(self, batch):
        """One replica's gradients and metrics (metrics are summed over replicas).

        Loss (upstream 4.2): L_lab + r * L_unl + weight_decay * sum ||w||^2 / 2, with L_lab the
        label-smoothed cross-entropy over the B labeled images and L_unl the soft cross-entropy
        against the pseudo-label targets averaged over the U = ceil(B * p * r) unlabeled ones.
        Student logits come from one forward pass over [labeled; unlabeled] (shared BN batch).
        """
        t, d, st = self.cfg.train, self.cfg.data, self.cfg.student
        num_replicas = self.num_replicas
        global_b = t.train_batch_size
        images = normalize(batch[keys.IMAGE], d.mean_rgb, d.stddev_rgb)
        labels = batch[keys.LABEL]
        step = self.optimizer.iterations
        seed = tf.stack([tf.cast(t.seed, tf.int64), tf.cast(step, tf.int64)])
        b_local = tf.shape(labels)[0]
        if st.enabled:
            targets = self.unlabeled_targets(batch)
            unl = normalize(batch[keys.UNL_IMAGE], d.mean_rgb, d.stddev_rgb)
            images = tf.concat([images, unl], axis=0)
            global_u = st.unlabeled_batch_size(global_b, t.label_data_sample_prob)
        with tf.GradientTape() as tape:
            logits = tf.cast(self.model(images, training=True), tf.float32)
            lab_logits = logits[:b_local]
            lab_loss = losses.labeled_loss_sum(
                labels, lab_logits, self.cfg.model.num_classes, t.label_smoothing,
                t.label_data_sample_prob, seed,
            ) / global_b
            data_loss = lab_loss
            if st.enabled:
                unl_logits = logits[b_local:]
                unl_loss = tf.reduce_sum(losses.soft_cross_entropy(targets, unl_logits)) / global_u
                # upstream weights by the real-valued ratio r, not U / B after the ceiling.
                data_loss = lab_loss + st.unlabel_ratio * unl_loss
            wd_loss = t.weight_decay * losses.l2_sum(self.wd_vars)
            # Gradients are summed over replicas: each replica carries 1/num_replicas of the
            # (replica-independent) weight-decay term.
            loss = data_loss + wd_loss / num_replicas
            if self.cfg.train.use_fp16:
                scaled = self.optimizer.scale_loss(loss)  # unscaled again in apply()
        grads = tape.gradient(scaled if self.cfg.train.use_fp16 else loss,
                              self.model.trainable_variables)
        probs = tf.nn.softmax(lab_logits)
        correct = tf.cast(tf.equal(tf.argmax(lab_logits, -1, output_type=tf.int32), labels),
                          tf.float32)
        metrics = {
            "lab/loss": lab_loss,
            "lab/acc": tf.reduce_sum(correct) / global_b,
            "lab/pred_prob": tf.reduce_sum(tf.reduce_max(probs, -1)) / global_b,
            "train/data_loss": data_loss,
            "train/loss": loss,
        }
        if st.enabled:
            unl_probs = tf.nn.softmax(unl_logits)
            agree = tf.equal(tf.argmax(unl_logits, -1, output_type=tf.int32), batch[keys.UNL_LABEL])
            metrics.update({
                "ext/loss": unl_loss,
                "unl/pred_prob": tf.reduce_sum(tf.reduce_max(unl_probs, -1)) / global_u,
                "unl/acc_to_dump": tf.reduce_sum(tf.cast(agree, tf.float32)) / global_u,
            })
            if st.teacher_softmax_temp is not None:
                metrics["unl/target_prob"] = tf.reduce_sum(tf.reduce_max(targets, -1)) / global_u
        assert set(metrics) == set(self.metric_names()), sorted(metrics)
        return grads, metrics

    def metric_names(self) -> tuple:
        """The keys of compute()'s metrics (the train loop needs them before the first step;
        compute() checks it returns exactly these)."""
        keys = ("lab/loss", "lab/acc", "lab/pred_prob", "train/data_loss", "train/loss")
        if self.cfg.student.enabled:
            keys += ("ext/loss", "unl/pred_prob", "unl/acc_to_dump")
            if self.cfg.student.teacher_softmax_temp is not None:
                keys += ("unl/target_prob",)
        return keys
