"""Loss-weight sweeps: Ray Tune over the shared training loop.

==========================  ==============================================================
module                      what it holds
==========================  ==============================================================
``ytmt.sweep.config``       ``TuneConfig``, params.yaml's ``tune`` section
``ytmt.sweep.space``        the search space: validation (no Ray) and Tune domains
``ytmt.sweep.plan``         a trial's params and resources, resume key, storage (no Ray)
``ytmt.sweep.records``      best trial, ``trials.csv`` rows, output files, tags (no Ray)
``ytmt.sweep.trial``        one trial: its MLflow child run and Ray Train fit
``ytmt.sweep.recorder``     ``SweepRecorder``: scheduler decisions onto MLflow runs
``ytmt.sweep.scheduler``    ``ResumableASHA``: ASHA whose state survives a resume
``ytmt.sweep.run``          ``run_sweep``: the driver (Ray, the Tuner, the parent run)
==========================  ==============================================================
"""

from ytmt.sweep.space import TUNABLE_LOSS_KEYS, to_tune_space, validate_space

__all__ = ["TUNABLE_LOSS_KEYS", "to_tune_space", "validate_space"]
