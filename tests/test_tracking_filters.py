"""Issue 26 §3: tag values go into MLflow search filters quoted (ytmt.tracking.filter_value):
a quote in a run's tag (a checkpoint path, a run name) neither breaks the search nor changes
what it matches. Against a real SQLite tracking store."""

from __future__ import annotations

import pytest

from ytmt.tracking import client, count_runs, filter_value, open_run, tags_filter

KEY = "ytmt.checkpoint"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating one takes seconds); each test its own
    experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.mark.parametrize("value", ["models/it's/model.pt", 'models/a "b"/model.pt',
                                   "plain-name_1.0"])
def test_a_run_tagged_with_a_quote_is_found_again(store, value):
    experiment = f"quotes-{len(value)}"
    exp_id, run, reopened = open_run(store, experiment, {KEY: value}, run_name=value)
    assert not reopened
    _, again, reopened = open_run(store, experiment, {KEY: value}, run_name=value)
    assert reopened and again.info.run_id == run.info.run_id
    assert count_runs(store, exp_id, {KEY: value}) == 1


def test_a_value_cannot_rewrite_the_filter(store):
    """The old f"tags.`k` = '{v}'" let this value add a condition of its own and reopen a
    run whose tag it does not equal."""
    exp_id, victim, _ = open_run(store, "inject", {KEY: "nope", "other": "v"}, run_name="a")
    sneaky = "nope' and tags.`other` = 'v"
    assert count_runs(store, exp_id, {KEY: sneaky}) == 0
    _, run, reopened = open_run(store, "inject", {KEY: sneaky}, run_name="b")
    assert not reopened and run.info.run_id != victim.info.run_id
    assert client(store).get_run(run.info.run_id).data.tags[KEY] == sneaky


def test_parent_run_ids_and_model_names_are_quoted_too(store):
    exp_id, parent, _ = open_run(store, "nested", {"k": "p"}, run_name="p")
    _, child, _ = open_run(store, "nested", {"k": "c's"}, run_name="c",
                           parent_run_id=parent.info.run_id)
    _, found, reopened = open_run(store, "nested", {"k": "c's"}, run_name="c",
                                  parent_run_id=parent.info.run_id)
    assert reopened and found.info.run_id == child.info.run_id
    c, name = client(store), "it's a model"
    c.create_registered_model(name)
    where = "name=" + filter_value(name)
    assert [m.name for m in c.search_registered_models(where)] == [name]
    assert c.search_model_versions(where) == []  # ytmt.evaluation.registry's search


def test_a_value_with_both_quotes_is_refused_naming_the_tag():
    with pytest.raises(ValueError, match="tag ytmt.checkpoint = .*holds both"):
        tags_filter({KEY: "a'b\"c"})
    with pytest.raises(ValueError, match="backtick"):
        tags_filter({"a`b": "x"})
