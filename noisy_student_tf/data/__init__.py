"""Input: TFRecord formats, task metadata, the embedded digits data, preprocessing, tf.data."""
