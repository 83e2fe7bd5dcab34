"""Training: the per-worker loop (Train, Tune and tests share it), Ray Train driver, tracking."""
