"""The parameter table (imagine.params): the one description of every --parameter that the
parser, the Params model, the prompt line in Discord, /settings and the worker's notes read."""

from __future__ import annotations

import ast
import inspect
from types import ModuleType
from typing import Any, Literal, get_args, get_origin

import pytest
from pydantic import BaseModel, ValidationError

import imagine.request
import imagine.user_settings
from imagine.jobs import Job
from imagine.model_specs import BUILTIN_SPECS
from imagine.params import PARAMETERS, ignored_notes, params_text
from imagine.prompt import parse
from imagine.request import Params
from imagine.user_settings import UserSettings


def test_every_field_of_params_is_a_row_with_the_row_s_default() -> None:
    assert {row.field for row in PARAMETERS} == set(Params.model_fields)
    for row in PARAMETERS:
        assert Params.model_fields[row.field].default == row.default, row.name


@pytest.mark.parametrize("row", [r for r in PARAMETERS if r.kind in ("int", "number")], ids=lambda r: r.name)
def test_params_enforces_the_table_s_ranges(row) -> None:
    for value in (row.lo, row.hi):
        assert getattr(Params(**{row.field: value}), row.field) == value
    for value in (row.lo - 1, row.hi + 1):
        with pytest.raises(ValidationError):
            Params(**{row.field: value})


def test_params_takes_only_the_table_s_choices() -> None:
    assert Params(quality=0.5).quality == 0.5
    for field, value in (("quality", 3.0), ("style", "cute"), ("speed", "turbo")):
        with pytest.raises(ValidationError):
            Params(**{field: value})


def test_the_prompt_line_prints_set_parameters_back_in_table_order() -> None:
    [request] = parse("a fox --relax --draft --tile --s 250 --q .5 --ar 32:18 --no people, cars --seed 7 --r 2")
    assert params_text(request.params) == "--ar 16:9 --q 0.5 --s 250 --seed 7 --no people, cars --tile --draft --relax"
    assert params_text(Params()) == ""
    assert params_text(parse("a fox --fast --ar 1:1 --r 3")[0].params) == ""  # defaults, the mode, --repeat


def _declared_fields(module: ModuleType, name: str) -> dict[str, tuple[Any, Any]]:
    """The ``field: type = default`` lines of the class ``name`` in ``module``'s source (the
    declaration for type checkers, under TYPE_CHECKING), evaluated in the module."""
    [cls] = [node for node in ast.walk(ast.parse(inspect.getsource(module)))
             if isinstance(node, ast.ClassDef) and node.name == name]
    namespace = vars(module)
    return {
        line.target.id: (eval(ast.unparse(line.annotation), namespace), eval(ast.unparse(line.value), namespace))
        for line in cls.body
        if isinstance(line, ast.AnnAssign) and isinstance(line.target, ast.Name) and line.value is not None
    }


def _built_fields(model: type[BaseModel]) -> dict[str, tuple[Any, Any]]:
    """The fields the table built: (type, default); a Literal of floats reads as float (typing
    has no float literals, so the declaration says float)."""
    def typed(annotation: Any) -> Any:
        if get_origin(annotation) is Literal and all(isinstance(a, float) for a in get_args(annotation)):
            return float
        return annotation
    return {name: (typed(field.annotation), field.default) for name, field in model.model_fields.items()}


@pytest.mark.parametrize(("module", "model"), [(imagine.request, Params), (imagine.user_settings, UserSettings)],
                         ids=["Params", "UserSettings"])
def test_the_fields_type_checkers_see_are_the_table_s(module: ModuleType, model: type[BaseModel]) -> None:
    assert _declared_fields(module, model.__name__) == _built_fields(model)


def test_settings_fields_are_the_settable_rows() -> None:
    settable = {row.field for row in PARAMETERS if row.settable}
    assert settable == {"aspect", "stylize", "model", "speed"}
    assert set(UserSettings.model_fields) == settable | {"diagnostics", "options", "suffix"}  # + /prefer
    assert UserSettings().stylize is None  # nothing set: every field None
    with pytest.raises(ValidationError):  # the table's range
        UserSettings(stylize=1001)


def test_a_parameter_that_changes_nothing_on_a_model_is_noted_once_each() -> None:
    [request] = parse("a fox --weird 250 --style raw --iw 2 --s 250 --ar 16:9 --tile")
    shapes, turbo = BUILTIN_SPECS["shapes"], BUILTIN_SPECS["sd-turbo"]
    assert ignored_notes(request.params, shapes) == [
        "--weird 250 was ignored: shapes does not use it yet.",
        "--style raw was ignored: shapes does not use it yet.",
    ]
    assert ignored_notes(request.params, turbo)[0] == "--stylize 250 was ignored: sd-turbo runs without guidance."
    assert ignored_notes(parse("a fox --iw 1 --w 0")[0].params, shapes) == []  # the defaults say nothing


def test_a_job_stored_before_the_table_still_loads() -> None:
    stored = (
        '{"schema_version":1,"id":"abc","kind":"imagine","request":{"text":"a fox","image_urls":[],'
        '"parts":[{"text":"a fox","weight":1.0}],"params":{"aspect":{"width":16,"height":9},"seed":7,'
        '"chaos":0,"stylize":100,"quality":1.0,"stop":100,"tile":false,"repeat":1,"no":[],"weird":0,'
        '"iw":1.0,"style":null,"model":null,"speed":null}},"model":"tiny","speed":"fast","seed":7,'
        '"requester":{"user_id":"1"},"created_at":1.0}'
    )
    job = Job.model_validate_json(stored)
    assert job.request.notes == () and job.request.params.draft is False
    assert str(job.request.params.aspect) == "16:9"
