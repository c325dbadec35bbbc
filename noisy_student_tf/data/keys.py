"""Keys of the batches the input pipeline yields and the train/eval steps read (record keys on
disk are upstream's, in data/records.py)."""

IMAGE = "image"  # uint8 [B, S, S, 3], the labeled (or eval) images
LABEL = "label"  # int32 [B], 0-based
UNL_IMAGE = "unl_image"  # uint8 [U, S, S, 3], the student's noised view of unlabeled images
UNL_LABEL = "unl_label"  # int32 [U], a record's stored 0-based `label`, -1 if absent
UNL_PROBS = "unl_probs"  # float32 [U, C], a record's stored soft label, zeros if absent
UNL_TEACHER_IMAGE = "unl_teacher_image"  # uint8 [U, T, T, 3], the teacher's clean view
