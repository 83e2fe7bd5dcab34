"""ResumableASHA (:mod:`ytmt.sweep.scheduler`): Tune's ASHA decisions, and its rung records
surviving a resumed sweep. The trials are plain stand-ins for Tune's Trial record (ASHA
reads only their id); no Ray started."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from ytmt.sweep.scheduler import ResumableASHA, make_scheduler

from .conftest import tune_section

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


@dataclass
class Trial:  # the attribute of ray.tune.experiment.Trial that ASHA reads
    trial_id: str


def asha(state_path) -> ResumableASHA:
    scheduler = ResumableASHA(str(state_path), max_t=4, grace_period=1, reduction_factor=2)
    scheduler.set_search_properties("val_psnr_t", "max")  # what Tune does with its TuneConfig
    return scheduler


def result(epoch: int, psnr: float) -> dict:
    return {"epoch": epoch, "val_psnr_t": psnr}


def test_rung_records_survive_a_resumed_sweep(tmp_path):
    state = tmp_path / "asha.pkl"
    a, b = Trial("s_00000"), Trial("s_00001")
    first = asha(state)
    first.on_trial_add(None, a)
    assert first.on_trial_result(None, a, result(1, 20.0)) == CONTINUE  # first at the rung
    assert state.is_file()
    # interrupted here; the resumed sweep's scheduler starts from the saved records
    resumed = asha(state)
    resumed.on_trial_add(None, a)  # a restored trial keeps its bracket
    resumed.on_trial_add(None, b)
    assert resumed.on_trial_result(None, b, result(1, 15.0)) == STOP  # below a's 20 at rung 1
    # control: a scheduler without the records lets the same result through
    forgetful = asha(tmp_path / "elsewhere.pkl")
    forgetful.on_trial_add(None, b)
    assert forgetful.on_trial_result(None, b, result(1, 15.0)) == CONTINUE


def test_decisions_are_asha_s(tmp_path):
    ours, theirs = asha(tmp_path / "a.pkl"), ASHAScheduler(
        time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2)
    theirs.set_search_properties("val_psnr_t", "max")
    script = [("t0", 1, 20.0), ("t1", 1, 25.0), ("t2", 1, 21.0), ("t1", 2, 26.0),
              ("t0", 2, 22.0), ("t2", 2, 20.0), ("t1", 4, 27.0)]
    for scheduler in (ours, theirs):
        for t in ("t0", "t1", "t2"):
            scheduler.on_trial_add(None, Trial(t))
    decisions = [[s.on_trial_result(None, Trial(t), result(e, v)) for t, e, v in script]
                 for s in (ours, theirs)]
    assert decisions[0] == decisions[1]
    assert STOP in decisions[0] and decisions[0][-1] == STOP  # the last epoch ends a trial


def test_completion_saves_and_unknown_trials_are_ignored(tmp_path):
    state = tmp_path / "asha.pkl"
    scheduler = asha(state)
    scheduler.on_trial_add(None, Trial("t0"))
    scheduler.on_trial_complete(None, Trial("t0"), result(1, 20.0))
    saved = pickle.loads(state.read_bytes())
    assert "t0" not in saved["_trial_info"] and "_state_path" not in saved
    scheduler.on_trial_complete(None, Trial("never-added"), result(1, 1.0))  # no KeyError
    scheduler.on_trial_remove(None, Trial("never-added"))


def test_state_path_may_be_a_uri_and_the_scheduler_pickles(tmp_path):
    state = tmp_path / "uri" / "asha.pkl"
    state.parent.mkdir()
    scheduler = asha(state.as_uri())  # file:///...: the same code path as s3://
    scheduler.on_trial_add(None, Trial("t0"))
    scheduler.on_trial_result(None, Trial("t0"), result(1, 20.0))
    assert state.is_file()
    copy = pickle.loads(pickle.dumps(scheduler))  # Tune may pickle its TuneConfig
    copy.on_trial_add(None, Trial("t1"))
    assert copy.on_trial_result(None, Trial("t1"), result(1, 10.0)) == STOP


def test_make_scheduler_follows_tune_scheduler(tmp_path):
    assert isinstance(make_scheduler(tune_section(scheduler="fifo"), "x"), FIFOScheduler)
    made = make_scheduler(tune_section(epochs=5, grace_period=2, reduction_factor=3.0),
                          str(tmp_path / "s.pkl"))
    assert isinstance(made, ResumableASHA)
    # its decisions are those of ASHA on the epoch with max_t 5, grace period 2 and
    # reduction factor 3; each control (one setting changed) decides otherwise on the script
    reference = dict(time_attr="epoch", max_t=5, grace_period=2, reduction_factor=3.0)
    want = asha_decisions(ASHAScheduler(**reference))
    assert asha_decisions(made) == want
    for change in ({"max_t": 4}, {"grace_period": 1}, {"reduction_factor": 2.0},
                   {"time_attr": "training_iteration"}):
        assert asha_decisions(ASHAScheduler(**{**reference, **change})) != want, change


# Trial results that tell ASHA's settings apart: (trial, epoch, val_psnr_t). A rung at
# epoch 1 (grace period 1) stops t1 and t2 there; at the rung at epoch 2 reduction factor 3
# keeps the top third (t2's 21.5 is stopped, with factor 2 it goes on); t0 reaches epoch 4
# (stopped there only with max_t 4) and 5. Tune's own counter "training_iteration" is
# another number than the epoch.
ASHA_SCRIPT = [("t0", 1, 20.0), ("t1", 1, 19.0), ("t2", 1, 10.0), ("t0", 2, 22.0),
               ("t1", 2, 21.0), ("t2", 2, 21.5), ("t3", 2, 21.8), ("t0", 3, 23.0),
               ("t0", 4, 24.0), ("t0", 5, 25.0)]


def asha_decisions(scheduler) -> list[str]:
    """``scheduler``'s decisions on :data:`ASHA_SCRIPT` (maximising val_psnr_t)."""
    scheduler.set_search_properties("val_psnr_t", "max")
    for t in ("t0", "t1", "t2", "t3"):
        scheduler.on_trial_add(None, Trial(t))
    return [scheduler.on_trial_result(None, Trial(t), {**result(e, v), "training_iteration": 3 * e})
            for t, e, v in ASHA_SCRIPT]
