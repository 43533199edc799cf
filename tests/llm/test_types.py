"""The shared vocabulary: messages, parts, tools, usage, completions, events and params."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

import aillm_lab as al
from aillm_lab.llm.types import (
    Completion,
    GenerationParams,
    ImagePart,
    Message,
    StreamEvent,
    TextPart,
    ToolCall,
    ToolSpec,
    Usage,
    as_messages,
)

PNG_BYTES = b"\x89PNG\r\n\x1a\nnot-really-a-png"


# -- messages ---------------------------------------------------------------------------------
def test_user_message_from_one_string_keeps_plain_content():
    message = Message.user("hello")
    assert message.role == "user"
    assert message.content == "hello"
    assert message.text == "hello"
    assert message.images == []


def test_user_message_with_text_and_image_parts_keeps_their_order():
    image = ImagePart(url="https://example.org/cat.png")
    message = Message.user("Look: ", image, "what is it?")
    assert [type(p) for p in message.content] == [TextPart, ImagePart, TextPart]
    assert message.text == "Look: what is it?"
    assert message.images == [image]


def test_user_message_with_only_an_image_has_no_text():
    image = ImagePart(data="AAAA")
    message = Message.user(image)
    assert message.content == [image]
    assert message.text == ""
    assert message.images == [image]


def test_system_and_assistant_constructors_set_role_and_content():
    assert Message.system("rules").model_dump(include={"role", "content"}) == {
        "role": "system", "content": "rules"}
    call = ToolCall(id="c1", name="lookup", arguments={"q": "x"})
    assistant = Message.assistant("thinking", [call])
    assert (assistant.role, assistant.text, assistant.tool_calls) == ("assistant", "thinking",
                                                                      [call])
    assert Message.assistant().tool_calls == []
    assert Message.assistant().text == ""


def test_tool_message_serialises_non_string_results_as_json():
    message = Message.tool({"temp": 21, "sky": ["clear"]}, call_id="c7", name="weather")
    assert message.role == "tool"
    assert json.loads(message.text) == {"temp": 21, "sky": ["clear"]}
    assert (message.tool_call_id, message.name) == ("c7", "weather")
    assert Message.tool("already text", call_id="c8").text == "already text"


def test_tool_message_falls_back_to_str_for_values_json_cannot_encode():
    message = Message.tool({"where": Path("/tmp/x")}, call_id="c1")
    assert json.loads(message.text) == {"where": str(Path("/tmp/x"))}


def test_message_parts_validate_from_dicts_by_their_type():
    message = Message.model_validate({
        "role": "user",
        "content": [{"type": "text", "text": "hi "},
                    {"type": "image", "url": "https://example.org/a.jpg",
                     "media_type": "image/jpeg"}],
    })
    assert message.text == "hi "
    assert message.images[0].url == "https://example.org/a.jpg"


def test_message_round_trips_through_json():
    original = Message.user("caption this", ImagePart(data="QUJD", media_type="image/gif"))
    assert Message.model_validate_json(original.model_dump_json()) == original


def test_invalid_role_is_rejected_naming_the_field():
    with pytest.raises(ValidationError) as info:
        Message(role="robot", content="beep")
    assert info.value.errors()[0]["loc"] == ("role",)
    assert "robot" in str(info.value)


def test_unknown_part_type_is_rejected():
    with pytest.raises(ValidationError, match="video"):
        Message.model_validate({"role": "user", "content": [{"type": "video", "url": "x"}]})


def test_parts_are_frozen():
    part = TextPart(text="fixed")
    with pytest.raises(ValidationError):
        part.text = "changed"


# -- images -----------------------------------------------------------------------------------
def test_image_data_url_uses_the_url_when_given_else_inline_data():
    assert ImagePart(url="https://example.org/x.png").data_url == "https://example.org/x.png"
    inline = ImagePart(data="QUJD", media_type="image/webp")
    assert inline.data_url == "data:image/webp;base64,QUJD"


@pytest.mark.parametrize(("filename", "media_type"), [
    ("photo.jpg", "image/jpeg"),
    ("photo.JPG", "image/jpeg"),
    ("photo.jpeg", "image/jpeg"),
    ("chart.png", "image/png"),
    ("anim.gif", "image/gif"),
])
def test_image_from_path_encodes_bytes_and_guesses_media_type(tmp_path, filename, media_type):
    path = tmp_path / filename
    path.write_bytes(PNG_BYTES)
    image = ImagePart.from_path(path)
    assert base64.b64decode(image.data) == PNG_BYTES
    assert image.media_type == media_type
    assert image.url is None
    assert image.data_url.startswith(f"data:{media_type};base64,")


def test_image_from_path_accepts_an_explicit_media_type(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(PNG_BYTES)
    assert ImagePart.from_path(str(path), media_type="image/png").media_type == "image/png"


def test_image_from_a_missing_path_raises():
    with pytest.raises(FileNotFoundError):
        ImagePart.from_path("/nonexistent/definitely/missing.png")


# -- as_messages ------------------------------------------------------------------------------
def test_as_messages_wraps_a_string_as_one_user_message():
    assert as_messages("hi there") == [Message.user("hi there")]


def test_as_messages_wraps_a_single_message():
    message = Message.assistant("ok")
    assert as_messages(message) == [message]


def test_as_messages_accepts_dicts_and_messages_mixed():
    result = as_messages([{"role": "system", "content": "sys"},
                          Message.user("q"),
                          {"role": "assistant", "content": "a"}])
    assert [(m.role, m.text) for m in result] == [("system", "sys"), ("user", "q"),
                                                 ("assistant", "a")]
    assert all(isinstance(m, Message) for m in result)


def test_as_messages_system_argument_replaces_any_system_message_and_goes_first():
    result = as_messages([Message.user("q"), Message.system("old")], system="new")
    assert [(m.role, m.text) for m in result] == [("system", "new"), ("user", "q")]
    assert [m.role for m in as_messages("q", system="s")] == ["system", "user"]


def test_as_messages_without_system_keeps_existing_system_messages():
    result = as_messages([Message.system("keep"), Message.user("q")])
    assert [m.text for m in result] == ["keep", "q"]


def test_as_messages_rejects_a_dict_with_a_bad_role():
    with pytest.raises(ValidationError, match="role"):
        as_messages([{"role": "narrator", "content": "once upon a time"}])


def test_as_messages_rejects_a_dict_without_a_role():
    with pytest.raises(ValidationError, match="role"):
        as_messages([{"content": "who am I"}])


def test_as_messages_returns_a_new_list():
    original = [Message.user("q")]
    result = as_messages(original)
    assert result == original
    assert result is not original


# -- tools ------------------------------------------------------------------------------------
def test_tool_spec_defaults_to_an_empty_object_schema():
    spec = ToolSpec(name="ping")
    assert spec.description == ""
    assert spec.parameters == {"type": "object", "properties": {}}
    spec.parameters["properties"]["x"] = {}
    assert ToolSpec(name="pong").parameters == {"type": "object", "properties": {}}


@pytest.mark.parametrize("name", ["search", "_private", "ns.tool-v2", "a" * 64])
def test_tool_spec_accepts_valid_names(name):
    assert ToolSpec(name=name).name == name


@pytest.mark.parametrize("name", ["", "1starts_with_digit", "has space", "semi;colon", "a" * 65])
def test_tool_spec_rejects_invalid_names(name):
    with pytest.raises(ValidationError, match="name"):
        ToolSpec(name=name)


def test_tool_call_keeps_arguments_and_defaults_to_an_empty_dict():
    call = ToolCall(id="c1", name="add", arguments={"a": 1, "b": [2, 3]})
    assert call.arguments == {"a": 1, "b": [2, 3]}
    assert ToolCall(id="c2", name="noop").arguments == {}


def test_tool_call_requires_id_and_name():
    with pytest.raises(ValidationError) as info:
        ToolCall(arguments={})
    assert {e["loc"][0] for e in info.value.errors()} == {"id", "name"}


def test_tool_call_arguments_must_be_a_mapping():
    with pytest.raises(ValidationError, match="arguments"):
        ToolCall(id="c1", name="add", arguments=[1, 2])


# -- usage ------------------------------------------------------------------------------------
def test_usage_total_is_input_plus_output():
    usage = Usage(input_tokens=7, output_tokens=5, reasoning_tokens=100)
    assert usage.total_tokens == 12


def test_usage_adds_every_field():
    a = Usage(input_tokens=1, output_tokens=2, cache_read_tokens=3, cache_write_tokens=4,
              reasoning_tokens=5)
    b = Usage(input_tokens=10, output_tokens=20, cache_read_tokens=30, cache_write_tokens=40,
              reasoning_tokens=50)
    total = a + b
    assert total == Usage(input_tokens=11, output_tokens=22, cache_read_tokens=33,
                          cache_write_tokens=44, reasoning_tokens=55)
    assert a == Usage(input_tokens=1, output_tokens=2, cache_read_tokens=3,
                      cache_write_tokens=4, reasoning_tokens=5)
    assert sum([a, b], Usage()) == total


def test_usage_defaults_to_zero():
    assert Usage().model_dump() == dict.fromkeys(Usage.model_fields, 0)


# -- completions and stream events ------------------------------------------------------------
def test_completion_str_is_its_text():
    completion = Completion(text="Paris is the capital.", model="scripted:x")
    assert str(completion) == "Paris is the capital."
    assert f"{completion}" == "Paris is the capital."
    assert str(Completion()) == ""


def test_completion_to_message_is_an_assistant_message_with_tool_calls():
    call = ToolCall(id="c1", name="lookup", arguments={"q": "Paris"})
    message = Completion(text="checking", tool_calls=[call]).to_message()
    assert message == Message.assistant("checking", [call])


def test_completion_markdown_shows_text_tool_calls_model_and_usage():
    completion = Completion(
        text="Done.", tool_calls=[ToolCall(id="c1", name="lookup", arguments={"q": 1})],
        usage=Usage(input_tokens=3, output_tokens=4), model="scripted:md", latency_s=1.234)
    markdown = completion._repr_markdown_()
    assert markdown.startswith("Done.")
    assert '`lookup({"q": 1})`' in markdown
    assert "scripted:md" in markdown
    assert "3→4 tokens" in markdown
    assert "1.23 s" in markdown
    assert " s</sub>" not in Completion(text="x")._repr_markdown_()


def test_completion_rejects_an_unknown_finish_reason():
    with pytest.raises(ValidationError, match="finish_reason"):
        Completion(text="x", finish_reason="bored")


def test_stream_event_str_is_the_text_delta():
    events = [StreamEvent(type="text", text="Hel"), StreamEvent(type="text", text="lo"),
              StreamEvent(type="usage", usage=Usage(output_tokens=1)),
              StreamEvent(type="done", completion=Completion(text="Hello"))]
    assert "".join(map(str, events)) == "Hello"
    assert str(events[-1]) == ""
    assert events[-1].completion.text == "Hello"


def test_stream_event_rejects_an_unknown_type():
    with pytest.raises(ValidationError, match="type"):
        StreamEvent(type="thinking", text="hmm")


# -- generation params ------------------------------------------------------------------------
def test_generation_params_defaults():
    params = GenerationParams()
    assert (params.max_tokens, params.temperature, params.top_p) == (256, 0.0, 1.0)
    assert (params.stop, params.seed, params.tool_choice) == ([], None, "auto")


def test_generation_params_are_frozen_so_the_shared_default_cannot_drift():
    from aillm_lab.llm.types import DEFAULT_PARAMS

    with pytest.raises(ValidationError, match="frozen"):
        DEFAULT_PARAMS.temperature = 1.5
    warmer = DEFAULT_PARAMS.model_copy(update={"temperature": 0.7})
    assert warmer.temperature == 0.7 and DEFAULT_PARAMS.temperature == 0.0


def test_generation_params_accepts_one_stop_string_as_a_list():
    assert GenerationParams(stop="###").stop == ["###"]
    assert GenerationParams(stop=["a", "b"]).stop == ["a", "b"]


def test_generation_params_tool_choice_may_name_a_tool():
    assert GenerationParams(tool_choice="get_weather").tool_choice == "get_weather"


def test_generation_params_rejects_an_unknown_field_by_name():
    with pytest.raises(ValidationError) as info:
        GenerationParams(temprature=0.3)
    errors = info.value.errors()
    assert [(e["loc"], e["type"]) for e in errors] == [(("temprature",), "extra_forbidden")]
    assert "temprature" in str(info.value)


@pytest.mark.parametrize(("field", "value"), [
    ("max_tokens", 0),
    ("max_tokens", 1_000_001),
    ("temperature", -0.1),
    ("temperature", 2.5),
    ("top_p", 0.0),
    ("top_p", 1.5),
])
def test_generation_params_rejects_out_of_range_values(field, value):
    with pytest.raises(ValidationError) as info:
        GenerationParams(**{field: value})
    assert info.value.errors()[0]["loc"] == (field,)


def test_lab_reports_an_unknown_generation_param_with_the_allowed_ones(tmp_path):
    lab = al.Lab(al.LabSettings.load(home=tmp_path), model="scripted:echo")
    with pytest.raises(al.ConfigError) as info:
        lab.chat("hi", temprature=0.3)
    assert info.value.fields == ("temprature",)
    message = str(info.value)
    assert "temprature" in message
    assert "temperature" in message and "max_tokens" in message


def test_public_names_are_the_same_objects():
    assert al.Message is Message
    assert al.Completion is Completion
    assert al.GenerationParams is GenerationParams
    assert al.StreamEvent is StreamEvent


@pytest.mark.parametrize("kwargs", [{}, {"url": "https://x/cat.png", "data": "aGk="}])
def test_an_image_part_needs_exactly_one_of_url_or_data(kwargs):
    with pytest.raises(ValidationError, match="exactly one of url= or data="):
        ImagePart(**kwargs)


@pytest.mark.parametrize(("name", "kind"), [("a.svg", "image/svg+xml"), ("a.tif", "image/tiff"),
                                            ("a.jpg", "image/jpeg"), ("a.png", "image/png")])
def test_image_from_path_uses_the_standard_media_type(tmp_path, name, kind):
    path = tmp_path / name
    path.write_bytes(b"img")
    assert ImagePart.from_path(path).media_type == kind


def test_image_from_path_refuses_a_file_that_is_not_an_image(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hi")
    with pytest.raises(ValueError, match="media_type="):
        ImagePart.from_path(path)
