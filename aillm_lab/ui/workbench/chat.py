"""The Chat page: a ``ChatInterface`` with a model picker, an agent picker and an image
attachment; plain replies and agent answers stream in through an async-generator callback.

Plain chat iterates ``Lab.astream``; an agent iterates its ``astream`` events (tokens as they
come, a line per tool call) and its answer carries the step trace in a collapsed card. Tool
calls that need approval ask inside this chat only (``InlineApprovals``). Everything runs on
the Lab's runner loop and is awaited here, so the server's loop never blocks.

The agents offered, and why some are left out, are in ``aillm_lab.ui.agent_choices`` (the
notebook's chat widget offers the same). Data analysis queries this session's Data page
uploads.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from aillm_lab.errors import AillmError, UnsupportedInput
from aillm_lab.llm.types import Completion, ImagePart, Message
from aillm_lab.tools.safety import approver_for_task
from aillm_lab.ui.agent_choices import AGENT_CHOICES, AgentChoice, agent_events
from aillm_lab.ui.workbench.approvals_inline import APPROVAL_USER, InlineApprovals
from aillm_lab.ui.workbench.chat_trace import run_footer, trace_card
from aillm_lab.ui.workbench.notices import Notice

if TYPE_CHECKING:
    from aillm_lab.core.lab import Lab

HISTORY_TURNS = 6  # earlier user/assistant turns sent along with each prompt
DEFAULT = ""  # the model picker's value for the Lab's own default (it may be an object)
_END = object()


def chat_models(lab: Lab, extra: list[str] | None = None) -> list[tuple[str, str]]:
    """Every model this Lab can run here, as ``(spec, why)``; the default comes first with
    the reason it is the default, then those a key, a download or the settings make usable."""
    from aillm_lab.llm.local_files import KNOWN_MODELS

    settings = lab.settings
    default, reason = lab.default_model_reason()
    found: dict[str, str] = {default: f"default: {reason}"}

    def add(spec: str, why: str) -> None:
        found.setdefault(spec, why)

    for spec in extra or ():
        add(spec, "offered by this server")
    if settings.model:
        add(settings.model, "AILLM_MODEL names it")
    for name, known in KNOWN_MODELS.items():
        if (settings.model_path / known.filename).is_file():
            add(f"local:{name}", f"downloaded under {settings.model_path}")
    if settings.openai_api_key is not None:
        for name in ("gpt-4o-mini", "gpt-4o"):
            add(f"openai:{name}", "an OpenAI key is set")
    if settings.anthropic_api_key is not None:
        add("anthropic:claude-3-5-haiku-latest", "an Anthropic key is set")
    for spec in settings.fallbacks:
        add(spec, "a fallback in the settings")
    add("scripted:echo", "the scripted echo model, always here (it repeats the prompt)")
    return list(found.items())


class ChatPage:
    """One session's chat: pickers, attachment, the ``ChatInterface`` and its notice line.

    ``respond`` is the chat's callback; tests await it directly (``approvals.pending`` holds
    the requests waiting for a click while an agent runs).
    """

    title = "Chat"

    def __init__(self, lab: Lab, *, max_tokens: int = 256, models: list[str] | None = None,
                 tables: Callable[[], dict[str, Any]] | None = None) -> None:
        import panel as pn

        self.lab, self.max_tokens = lab, max_tokens
        self.tables = tables or dict  # the session's tables by name (the Data page's uploads)
        self.models = chat_models(lab, models)
        default_id = self.models[0][0]
        options = {f"{default_id} (default)": DEFAULT,
                   **{spec: spec for spec, _ in self.models[1:]}}
        self.model_picker = pn.widgets.Select(label="Model", options=options, value=DEFAULT,
                                              width=320)
        self.agent_picker = pn.widgets.Select(
            label="Agent", options={c.label: key for key, c in AGENT_CHOICES.items()},
            value="chat", width=300)
        self.image = pn.widgets.FileInput(accept="image/*", label="Attach an image",
                                          width=260)
        self.chat = pn.chat.ChatInterface(
            callback=self.respond, callback_user=default_id, callback_exception="verbose",
            show_rerun=False, show_undo=False, placeholder_text="Thinking…",
            sizing_mode="stretch_width", height=640)
        self.header = pn.pane.Markdown(name="model-info", sizing_mode="stretch_width")
        self.notice = Notice("chat-notice")
        self.approvals = InlineApprovals(self.chat)
        self.model_picker.param.watch(lambda _: self._describe(), "value")
        self._describe()
        self.controls = pn.Row(self.model_picker, self.agent_picker, self.image,
                               sizing_mode="stretch_width")

    def _describe(self) -> None:
        from aillm_lab.ui.workbench.app import TITLE

        spec = self.model_picker.value or self.models[0][0]
        why = dict(self.models).get(spec, "picked")
        self.header.object = f"### {TITLE}\n**Model:** `{spec}` — {why}"
        self.chat.callback_user = spec

    @property
    def model(self) -> str | None:
        """The picked model's spec; None is the Lab's own default."""
        return self.model_picker.value or None

    def model_id(self) -> str:
        return self.model_picker.value or self.models[0][0]

    # -- the callback ----------------------------------------------------------------------
    async def respond(self, contents: Any, user: str, instance: Any) -> AsyncIterator[Any]:
        """Answer the message just sent with the picked model and agent."""
        self.notice.clear()
        self.approvals.loop = asyncio.get_running_loop()
        image = self._take_image()
        choice = AGENT_CHOICES[self.agent_picker.value]
        prompt = str(contents)
        if choice.make is None:
            messages = history(instance, prompt, image)
            if image is not None and (refusal := self._refuse_image()) is not None:
                yield refusal
                return
            async for item in plain_reply(self.lab, messages, self.model, self.max_tokens,
                                          on_error=self.notice.failed):
                yield item
            return
        if image is not None:
            yield self._error(f"The {choice.label} takes text only; pick Plain chat to send "
                              f"an image.")
            return
        async for item in self._agent_reply(choice, prompt):
            yield item

    def _take_image(self) -> ImagePart | None:
        """The attached image as a message part (then the attachment is cleared)."""
        data, mime = self.image.value, self.image.mime_type
        if not data:
            return None
        self.image.param.update(value=None, filename=None, mime_type=None)
        return ImagePart(data=base64.b64encode(data).decode(), media_type=mime or "image/png")

    def _refuse_image(self) -> dict[str, Any] | None:
        """A readable refusal when the picked model cannot take images, else None."""
        try:
            takes = bool(self.lab.model(self.model).supports_images)
        except AillmError as exc:
            self.notice.failed(exc)
            return {"object": f"⚠️ {type(exc).__name__}: {exc}", "user": "error"}
        if takes:
            return None
        return self._error(f"{self.model_id()} cannot take images (it is text-only); pick a "
                           f"vision model such as openai:gpt-4o-mini, or send text only.")

    def _error(self, text: str) -> dict[str, Any]:
        self.notice.error(text)
        return {"object": f"⚠️ {text}", "user": "error"}

    async def _agent_reply(self, choice: AgentChoice, task: str) -> AsyncIterator[Any]:
        """Stream an agent's answer (tokens, then a line per tool call), then its trace."""
        import panel as pn

        assert choice.make is not None
        try:
            agent = choice.make(self.lab, self.model)
        except AillmError as exc:
            self.notice.failed(exc)
            yield {"object": f"⚠️ {type(exc).__name__}: {exc}", "user": "error"}
            return
        inputs: dict[str, Any] = {}
        if choice.tables:
            inputs["data"] = self.tables()
            if not inputs["data"]:
                yield self._error("No tables yet: upload a CSV, Parquet or JSON file on the "
                                  "Data page, then ask here.")
                return
        queue: asyncio.Queue[Any] = asyncio.Queue()
        pump = asyncio.create_task(_pump(choice, agent, task, queue,
                                         self.approvals.approve, inputs))
        text, lines, run = "", [], None
        try:
            while (event := await queue.get()) is not _END:
                if isinstance(event, BaseException):
                    self.notice.failed(event)
                    yield {"object": f"⚠️ {type(event).__name__}: {event}", "user": "error"}
                    return
                if event.type == "token":
                    text += event.text
                elif event.type == "tool_call" and event.tool_call is not None:
                    lines.append(f"_calling `{event.tool_call.name}`…_")
                elif event.type == "final":
                    run = event.run
                    continue
                else:
                    continue
                yield "\n\n".join([*lines, text]) or "…"
        finally:
            if not pump.done():
                pump.cancel()
        if run is None:
            return
        from aillm_lab.core.orchestrator import output_text

        answer = output_text(run)
        if run.status != "completed":
            self.notice.error(f"The {run.agent} run ended with status {run.status}: "
                              f"{run.error or 'no answer'}")
        yield {"object": answer, "user": run.model,
               "footer_objects": [pn.pane.Str(run_footer(run), name="reply-stats"),
                                  trace_card(run)]}


async def _pump(choice: AgentChoice, agent: Any, task: str, queue: asyncio.Queue[Any],
                approver: Any, inputs: dict[str, Any]) -> None:
    """Run the agent in its own task, under this chat's approver: its events (or an error)
    go to ``queue``, then ``_END``. The approver is set in this task's context only, and
    the runner tasks the agent starts copy it."""
    try:
        with approver_for_task(approver):
            async for event in agent_events(agent, task, inputs):
                queue.put_nowait(event)
    except Exception as exc:  # shown as a notice, never a traceback
        queue.put_nowait(exc)
    finally:
        queue.put_nowait(_END)
        if hasattr(agent, "aclose"):
            await agent.aclose()


async def plain_reply(lab: Lab, messages: list[Message], model: str | None, max_tokens: int,
                      *, on_error: Callable[[BaseException], None] | None = None
                      ) -> AsyncIterator[Any]:
    """Stream the model's reply as growing text; finish with a footer of figures."""
    import panel as pn

    text, completion, start, first = "", None, time.perf_counter(), None
    try:
        async for event in lab.astream(messages, model, max_tokens=max_tokens):
            if event.text:
                first = first or time.perf_counter()
                text += event.text
                yield text
            if event.completion is not None:
                completion = event.completion
    except AillmError as exc:
        if on_error is not None:
            on_error(exc)
        if isinstance(exc, UnsupportedInput):
            yield {"object": f"⚠️ {exc}", "user": "error"}
        else:
            yield {"object": f"⚠️ {type(exc).__name__}: {exc}", "user": "error"}
        return
    stats = reply_stats(completion, time.perf_counter() - start,
                        None if first is None else first - start)
    reply: dict[str, Any] = {"object": text or "(empty reply)",
                             "footer_objects": [pn.pane.Str(stats, name="reply-stats")]}
    if completion is not None:
        reply["user"] = completion.model
    yield reply


def history(instance: Any, prompt: str, image: ImagePart | None = None) -> list[Message]:
    """The last few turns as messages, so the model sees the conversation; the new prompt
    carries the attached image, if any."""
    turns = []
    for message in instance.objects[:-1][-2 * HISTORY_TURNS:]:
        if message.user in ("error", APPROVAL_USER) or not isinstance(message.object, str):
            continue
        role = "user" if message.user == "User" else "assistant"
        turns.append(Message(role=role, content=message.object))
    last = Message.user(prompt, image) if image is not None else Message.user(prompt)
    return [*turns, last]


def reply_stats(completion: Completion | None, latency_s: float,
                ttft_s: float | None) -> str:
    """One line of figures for a reply: tokens in/out, latency, first token and speed."""
    if completion is None:
        return f"latency {latency_s:.2f} s"
    usage = completion.usage
    parts = [completion.model, f"{usage.input_tokens} in / {usage.output_tokens} out tokens",
             f"latency {latency_s:.2f} s"]
    if ttft_s is not None:
        parts.append(f"first token {ttft_s:.2f} s")
        decode = latency_s - ttft_s
        if usage.output_tokens > 1 and decode > 0:
            parts.append(f"{(usage.output_tokens - 1) / decode:.1f} tok/s")
    return " · ".join(parts)
