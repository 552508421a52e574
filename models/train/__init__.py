"""Training and int8 export scripts; run with the `train` extra (TensorFlow) from the repo root."""
