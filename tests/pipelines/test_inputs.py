import pyarrow as pa
import pytest

from pipelines.inputs import choose_tasks, tasks_in
from storage import InputError

TYPES = {"ret": "retrieval", "cls": "classification", "sts": "sts"}


def test_tasks_are_read_in_order_of_first_appearance():
    examples = pa.table({"task": ["b", "a", "b"], "task_type": ["sts", "retrieval", "sts"]})
    assert list(tasks_in(examples).items()) == [("b", "sts"), ("a", "retrieval")]


def test_every_task_of_an_allowed_type_or_the_requested_ones_checked():
    assert choose_tasks(TYPES, (), ("retrieval", "classification"), "examples/x", "mined") == {
        "ret": "retrieval", "cls": "classification"}
    assert choose_tasks(TYPES, ("cls",), ("classification",), "examples/x", "mined") == {"cls": "classification"}
    with pytest.raises(InputError, match="examples/x has no task 'nope' \\(tasks: ret, cls, sts\\)"):
        choose_tasks(TYPES, ("nope",), ("retrieval",), "examples/x", "mined")
    with pytest.raises(InputError, match="task sts is a sts task: hard negatives are mined for retrieval and "
                                         "classification tasks"):
        choose_tasks(TYPES, ("sts",), ("retrieval", "classification"), "examples/x", "hard negatives are mined for")
    with pytest.raises(InputError, match="examples/x has no clustering task"):
        choose_tasks(TYPES, (), ("clustering",), "examples/x", "mined")
