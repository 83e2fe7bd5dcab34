"""Loss-weight sweeps: Ray Tune over the shared training loop (:mod:`ytmt.sweep.run`), with
the search space declared in params.yaml (:mod:`ytmt.sweep.space`)."""

from ytmt.sweep.space import TUNABLE_LOSS_KEYS, to_tune_space, validate_space

__all__ = ["TUNABLE_LOSS_KEYS", "to_tune_space", "validate_space"]
