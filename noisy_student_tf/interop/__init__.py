"""Interop with upstream TF1 checkpoints, keras.applications weights and SavedModels."""
