"""Structured output: schemas from types, JSON repair, and retries that show the model its error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

import aillm_lab as al
from aillm_lab.errors import AillmError, StructuredOutputError
from aillm_lab.llm.scripted import ScriptedModel, ScriptExhausted
from aillm_lab.llm.structured import complete_structured, json_schema, parse_output
from aillm_lab.llm.types import Completion, GenerationParams, Message
from aillm_lab.runtime import LoopRunner, run_sync


class Pet(BaseModel):
    name: str
    legs: int = Field(ge=0, le=8)


PET_JSON = '{"name": "Rex", "legs": 4}'
REX = Pet(name="Rex", legs=4)
POINT_SCHEMA = {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}


def ask(model: ScriptedModel, output, *, retries: int = 2,
        params: GenerationParams | None = None, prompt: str = "Describe a dog") -> Completion:
    messages = [Message.user(prompt)]
    return run_sync(complete_structured(model, messages, output, params or GenerationParams(),
                                        retries))


# -- json_schema ------------------------------------------------------------------------------
def test_json_schema_of_a_pydantic_model_lists_its_fields_and_required_ones():
    schema = json_schema(Pet)
    assert schema == Pet.model_json_schema()
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"name", "legs"}
    assert schema["properties"]["legs"]["type"] == "integer"
    assert schema["properties"]["legs"]["maximum"] == 8
    assert sorted(schema["required"]) == ["legs", "name"]


def test_json_schema_passes_a_dict_schema_through_unchanged():
    assert json_schema(POINT_SCHEMA) is POINT_SCHEMA


def test_json_schema_handles_plain_python_types():
    assert json_schema(list[int]) == {"type": "array", "items": {"type": "integer"}}


def test_json_schema_without_an_output_raises_a_type_error_saying_what_it_needs():
    with pytest.raises(TypeError, match="pydantic model class or a JSON Schema dict"):
        json_schema(None)


# -- parse_output -----------------------------------------------------------------------------
def test_parse_output_validates_clean_json_into_the_model():
    assert parse_output(PET_JSON, Pet) == REX


@pytest.mark.parametrize("text", [
    '{"name": "Rex", "legs": 4,}',  # trailing comma
    "{'name': 'Rex', 'legs': 4}",  # single quotes
    '{"name": "Rex", "legs": 4',  # missing closing brace
    '```json\n{"name": "Rex", "legs": 4}\n```',  # code fence
    'Sure! Here it is: {"name": "Rex", "legs": 4}',  # chatter before the JSON
])
def test_parse_output_repairs_slightly_broken_json(text):
    with pytest.raises(ValueError):
        json.loads(text)
    assert parse_output(text, Pet) == REX


def test_parse_output_with_a_dict_schema_returns_the_data_unvalidated():
    assert parse_output('{"x": 1.5, "extra": true}', POINT_SCHEMA) == {"x": 1.5, "extra": True}
    assert parse_output('{"x": 2,}', POINT_SCHEMA) == {"x": 2}


def test_parse_output_without_an_output_returns_the_parsed_json():
    assert parse_output("[1, 2, 3]", None) == [1, 2, 3]


def test_parse_output_validates_plain_python_types():
    assert parse_output("[1, 2, 3]", list[int]) == [1, 2, 3]
    with pytest.raises(StructuredOutputError):
        parse_output('["a", "b"]', list[int])


def test_parse_output_rejects_prose_that_is_not_json():
    with pytest.raises(StructuredOutputError, match="not JSON") as info:
        parse_output("I would rather not say.", Pet)
    assert info.value.raw == "I would rather not say."
    assert isinstance(info.value, AillmError)
    assert isinstance(info.value, ValueError)


def test_parse_output_rejects_prose_even_with_a_dict_schema():
    with pytest.raises(StructuredOutputError, match="not JSON"):
        parse_output("no idea", POINT_SCHEMA)


def test_parse_output_reports_which_field_failed_validation():
    with pytest.raises(StructuredOutputError) as info:
        parse_output('{"name": "Rex"}', Pet)
    message = str(info.value)
    assert "Pet" in message
    assert "legs" in message
    assert "Field required" in message
    assert info.value.raw == '{"name": "Rex"}'
    assert isinstance(info.value.__cause__, Exception)


def test_parse_output_enforces_field_constraints():
    with pytest.raises(StructuredOutputError, match="legs"):
        parse_output('{"name": "Octo", "legs": 9}', Pet)


# -- complete_structured ----------------------------------------------------------------------
def test_a_valid_first_reply_returns_the_completion_with_its_output():
    model = ScriptedModel([PET_JSON])
    completion = ask(model, Pet)
    assert completion.output == REX
    assert completion.text == PET_JSON
    assert len(model.requests) == 1
    assert model.requests[0].output is Pet


def test_a_repairable_reply_is_accepted_without_a_retry():
    model = ScriptedModel(['{"name": "Rex", "legs": 4,'])
    assert ask(model, Pet).output == REX
    assert len(model.requests) == 1


def test_an_invalid_reply_is_retried_with_the_error_fed_back_to_the_model():
    model = ScriptedModel(['{"name": "Rex"}', PET_JSON])
    completion = ask(model, Pet)
    assert completion.output == REX
    assert len(model.requests) == 2

    with pytest.raises(StructuredOutputError) as expected:
        parse_output('{"name": "Rex"}', Pet)
    second = model.requests[1].messages
    assert [m.role for m in second] == ["user", "assistant", "user"]
    assert second[0].text == "Describe a dog"
    assert second[1].text == '{"name": "Rex"}'
    feedback = second[2].text
    assert str(expected.value) in feedback
    assert "legs" in feedback and "Field required" in feedback
    assert json.dumps(json_schema(Pet)) in feedback


def test_prose_reply_is_retried_with_the_not_json_error():
    model = ScriptedModel(["Rex is a good dog.", PET_JSON])
    assert ask(model, Pet).output == REX
    assert "not JSON" in model.requests[1].messages[-1].text


def test_each_retry_sees_the_whole_conversation_so_far():
    model = ScriptedModel(["nope", '{"name": 1}', PET_JSON])
    assert ask(model, Pet, retries=2).output == REX
    third = model.requests[2].messages
    assert [m.role for m in third] == ["user", "assistant", "user", "assistant", "user"]
    assert [third[1].text, third[3].text] == ["nope", '{"name": 1}']


def test_the_callers_message_list_is_not_changed():
    model = ScriptedModel(["bad", PET_JSON])
    messages = [Message.user("Describe a dog")]
    run_sync(complete_structured(model, messages, Pet, GenerationParams(), 2))
    assert messages == [Message.user("Describe a dog")]


def test_after_all_attempts_fail_it_raises_with_raw_and_attempts():
    model = ScriptedModel(["first bad", "second bad", '{"name": "Rex", "legs": "many"}'],
                          name="stubborn")
    with pytest.raises(StructuredOutputError) as info:
        ask(model, Pet, retries=2)
    error = info.value
    assert error.attempts == 3
    assert error.raw == '{"name": "Rex", "legs": "many"}'
    assert len(model.requests) == 3
    message = str(error)
    assert "scripted:stubborn" in message
    assert "Pet" in message
    assert "3 attempts" in message


def test_retries_zero_means_a_single_attempt():
    model = ScriptedModel(["not json", PET_JSON])
    with pytest.raises(StructuredOutputError) as info:
        ask(model, Pet, retries=0)
    assert info.value.attempts == 1
    assert info.value.raw == "not json"
    assert len(model.requests) == 1


def test_the_seed_moves_on_with_each_attempt():
    model = ScriptedModel(["x", "y", PET_JSON])
    ask(model, Pet, params=GenerationParams(seed=7, max_tokens=99))
    assert [r.params.seed for r in model.requests] == [7, 8, 9]
    assert {r.params.max_tokens for r in model.requests} == {99}


def test_without_a_seed_every_attempt_gets_the_same_params():
    params = GenerationParams(temperature=0.7)
    model = ScriptedModel(["x", PET_JSON])
    ask(model, Pet, params=params)
    assert [r.params for r in model.requests] == [params, params]


def test_a_dict_schema_output_returns_the_parsed_dict():
    model = ScriptedModel(["nothing useful", '{"x": 3}'])
    completion = ask(model, POINT_SCHEMA)
    assert completion.output == {"x": 3}
    assert json.dumps(POINT_SCHEMA) in model.requests[1].messages[-1].text


def test_model_errors_are_not_swallowed_by_the_retry_loop():
    model = ScriptedModel(["bad"])
    with pytest.raises(ScriptExhausted):
        ask(model, Pet, retries=3)


def test_a_function_script_can_correct_itself_from_the_feedback():
    def script(messages, request) -> str:
        if "invalid" in messages[-1].text:
            return PET_JSON
        return '{"name": "Rex", "legs": -1}'

    model = ScriptedModel(script)
    assert ask(model, Pet).output == REX
    assert "legs" in model.requests[1].messages[-1].text


# -- through the Lab --------------------------------------------------------------------------
def test_lab_complete_returns_the_validated_instance_after_a_retry(tmp_path: Path):
    runner = LoopRunner(name="aillm-test-structured")
    model = ScriptedModel(['{"name": "Rex"}', PET_JSON])
    with al.Lab(al.LabSettings.load(home=tmp_path), model=model, runner=runner) as lab:
        assert lab.complete("Describe a dog", output=Pet) == REX
        model.enqueue("no", "still no")
        with pytest.raises(StructuredOutputError) as info:
            lab.complete("Describe a dog", output=Pet, retries=1)
    runner.close()
    assert info.value.attempts == 2
    assert info.value.raw == "still no"
    assert "legs" in model.requests[1].messages[-1].text


def test_a_dict_schema_is_enforced_not_just_parsed():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    assert parse_output('{"n": 3}', schema) == {"n": 3}
    with pytest.raises(StructuredOutputError, match="n: 'x' is not of type 'integer'"):
        parse_output('{"n": "x"}', schema)
    with pytest.raises(StructuredOutputError, match="'n' is a required property"):
        parse_output("{}", schema)


def test_a_dict_schema_violation_is_retried_with_the_error_shown_to_the_model():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    model = ScriptedModel(['{"n": "three"}', '{"n": 3}'])
    with al.Lab(model=model) as lab:
        assert lab.complete("count", output=schema) == {"n": 3}
    assert "is not of type 'integer'" in model.requests[1].messages[-1].text


def test_asking_for_tools_and_output_together_is_a_config_error():
    with al.Lab(model=ScriptedModel(['{"n": 1}'])) as lab, pytest.raises(al.ConfigError) as info:
        lab.complete("x", output={"type": "object"}, tools=[al.ToolSpec(name="t")])
    assert info.value.fields == ("tools", "output")
