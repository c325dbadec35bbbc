"""Training: upstream's optimizer, schedule, EMA, losses and the custom train/eval loop."""
