"""``local:`` GGUF models on llama.cpp through ``llama-cpp-python``.

llama.cpp is the physical reference for a quantized model on a CPU: it loads the GGUF as
is (no dequantizing, no torch import), so a 135M model loads in about 0.3 s and decodes
four times faster than transformers (``benchmarks/bench_local_model.py``).

One ``Llama`` per (file, threads) per process, one generation at a time on it: a llama.cpp
context holds one conversation's KV cache, so two requests are serialised by a lock rather
than interleaved in one context. Keeping the context between requests lets a follow-up
whose prompt starts like the last one reuse its cached prefix. Structured output and tool
calls use llama.cpp's grammar sampler, from a JSON Schema, so every token is legal.
"""

from __future__ import annotations

import atexit
import codecs
import json
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aillm_lab.errors import ModelNotAvailable, UnsupportedInput
from aillm_lab.llm.types import GenerationParams

GRAMMAR_MAX_ITEMS = 8  # the most items the grammar lets an unbounded array have
GRAMMAR_MAX_LENGTH = 200  # the most characters in a free string of the grammar
N_CTX = 8192  # SmolLM2's training context; the KV cache for it is about 190 MB at f16
_GRAMMARS_MAX = 32
_CACHE: dict[tuple[str, int], LlamaLoaded] = {}
_LOCK = threading.Lock()
_AVAILABLE: tuple[bool, str] | None = None


def available() -> tuple[bool, str]:
    """Whether ``llama_cpp`` imports here, and its version or the reason it does not."""
    global _AVAILABLE
    if _AVAILABLE is None:
        try:
            import llama_cpp

            _close_at_exit()  # its /dev/null handles are open from this import on
            _AVAILABLE = (True, f"llama-cpp-python {llama_cpp.__version__}")
        except Exception as exc:  # ImportError, or OSError from a broken libllama.so
            _AVAILABLE = (False, f"llama-cpp-python does not import ({type(exc).__name__}: "
                                 f"{str(exc)[:160]})")
    return _AVAILABLE


def default_threads() -> int:
    """Half the cores this process may use, at least 1, at most 4.

    A small model gains little from more threads, and loses a lot when they outnumber the
    cores that are free: llama.cpp's threads spin at each of the few hundred barriers per
    token, so on 2 busy cores 2 threads decoded SmolLM2 at 1-3 tok/s where 1 thread did 35-50
    (measured at load average 10). Half leaves room for the notebook, the server and the
    browser; set ``local.n_threads`` to use more on an idle machine.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus // 2))


def load_gguf(path: Path, n_threads: int | None = None) -> LlamaLoaded:
    """The loaded model for ``path``; blocking, so call it from a worker thread."""
    threads = n_threads or default_threads()
    key = (str(path.resolve()), threads)
    with _LOCK:
        loaded = _CACHE.get(key)
        if loaded is None:
            _close_at_exit()
            loaded = _CACHE[key] = _load(path, threads)
        return loaded


_EXIT_HOOKED = False


def _close_at_exit() -> None:
    global _EXIT_HOOKED
    if not _EXIT_HOOKED:
        _EXIT_HOOKED = True
        atexit.register(_close_all)


def _close_all() -> None:
    """Free the models while llama_cpp is still whole: left to ``__del__`` at interpreter
    exit, each one prints a TypeError from a half torn-down module. Its two module-level
    /dev/null handles go too, or they print a ResourceWarning under ``-W error``."""
    import llama_cpp._utils as utils

    with _LOCK:
        for loaded in _CACHE.values():
            loaded.llm.close()
        _CACHE.clear()
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(utils, name, None)
        if handle is not None and not handle.closed:
            handle.close()


@dataclass
class LlamaLoaded:
    """A llama.cpp model and its chat template, one generation at a time."""

    llm: Any
    template: Any
    source: Path
    n_threads: int
    load_s: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    _grammars: OrderedDict[str, Any] = field(default_factory=OrderedDict)

    def prompt_tokens(self, chat: list[dict[str, str]]) -> list[int]:
        """``chat`` rendered by the GGUF's own template and tokenized by its own vocabulary."""
        rendered = self.template(messages=chat)
        return self.llm.tokenize(rendered.prompt.encode("utf-8"),
                                 add_bos=not rendered.added_special, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def generate(self, chat: list[dict[str, str]], schema: dict[str, Any] | None,
                 params: GenerationParams, emit: Callable[[str], None],
                 stop: threading.Event) -> dict[str, Any]:
        """Decode token by token, checking ``stop`` after each one (a decode step is a few
        ms), and hand out text as soon as it is whole UTF-8."""
        import llama_cpp

        with self.lock:
            if stop.is_set():
                return {"input_tokens": 0, "output_tokens": 0, "eos": False}
            tokens = self.prompt_tokens(chat)
            room = self.llm.n_ctx() - len(tokens)
            if room < 1:
                raise UnsupportedInput(
                    f"the prompt is {len(tokens)} tokens, but {self.source.name} runs with a "
                    f"{self.llm.n_ctx()}-token context; shorten the messages")
            grammar = self.grammar(schema) if schema is not None else None
            self.llm.set_seed(params.seed if params.seed is not None
                              else random.getrandbits(31))
            sampling = _sampling(params)
            vocab = self.llm._model.vocab
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            limit, n_out, eos = min(params.max_tokens, room), 0, False
            for token in self.llm.generate(tokens, grammar=grammar, **sampling):
                n_out += 1
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    eos = True
                    break
                piece = decoder.decode(self.llm.detokenize([token]))
                if piece:
                    emit(piece)
                if n_out >= limit or stop.is_set():
                    break
            tail = decoder.decode(b"", final=True)
            if tail:
                emit(tail)
        return {"input_tokens": len(tokens), "output_tokens": n_out, "eos": eos}

    def grammar(self, schema: dict[str, Any]) -> Any:
        """The llama.cpp grammar for ``schema`` (compiled once, kept for the last 32)."""
        from llama_cpp import LlamaGrammar

        # never sort the keys: the grammar follows the schema's property order, so a tool
        # call is written "tool" first and its arguments are chosen knowing the tool
        key = json.dumps(schema)
        grammar = self._grammars.get(key)
        if grammar is None:
            grammar = LlamaGrammar.from_json_schema(json.dumps(strict(schema)), verbose=False)
            self._grammars[key] = grammar
            while len(self._grammars) > _GRAMMARS_MAX:
                self._grammars.popitem(last=False)
        self._grammars.move_to_end(key)
        return grammar


def strict(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` wherever an object leaves it open.

    The grammar is what the model may write, not what the validator accepts: an open object
    lets a 135M model invent keys until ``max_tokens`` runs out. xgrammar's strict mode,
    which the transformers backend uses, makes the same choice. For the same reason arrays
    and free strings get a length bound here (greedy decoding wrote ``"Liam", "Liam", ...``
    until the JSON was cut off): the bounds shape the grammar only, never the validation.
    """
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in ("properties", "$defs", "definitions", "patternProperties"):
        if isinstance(out.get(key), dict):
            out[key] = {name: strict(sub) for name, sub in out[key].items()}
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(out.get(key), list):
            out[key] = [strict(sub) for sub in out[key]]
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = strict(out[key])
    if "properties" in out and out.get("type", "object") == "object":
        out.setdefault("additionalProperties", False)
    kind = out.get("type")
    if kind == "array" and "maxItems" not in out:  # greedy decoding repeats items forever
        out["maxItems"] = max(GRAMMAR_MAX_ITEMS, int(out.get("minItems", 0)))
    if (kind == "string" and "maxLength" not in out
            and not {"enum", "const", "pattern", "format"} & set(out)):
        out["maxLength"] = max(GRAMMAR_MAX_LENGTH, int(out.get("minLength", 0)))
    return out


def _sampling(params: GenerationParams) -> dict[str, Any]:
    if params.temperature <= 0:
        return {"temp": 0.0, "repeat_penalty": 1.0}
    return {"temp": params.temperature, "top_p": params.top_p, "top_k": 0, "min_p": 0.0,
            "repeat_penalty": 1.0}


def _load(path: Path, threads: int) -> LlamaLoaded:
    started = time.perf_counter()
    try:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    except Exception as exc:
        raise ModelNotAvailable(f"{available()[1]}; install it with `make install` or "
                                "pip install 'aillm-lab[llama]', or set "
                                "local.backend = 'transformers'") from exc
    try:
        llm = Llama(model_path=str(path), n_ctx=N_CTX, n_threads=threads,
                    n_threads_batch=threads, verbose=False)
    except ValueError as exc:  # llama-cpp-python's word for a file it cannot load
        raise ModelNotAvailable(f"llama.cpp could not load {path}: {exc}. Check that it is "
                                "a complete GGUF file (aillm-lab models pull --force).") from exc
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise ModelNotAvailable(f"{path.name} has no chat template in its GGUF metadata "
                                "(tokenizer.chat_template); use an instruct model's GGUF")
    model = llm._model

    def text_of(token: int) -> str:
        return model.token_get_text(token) if token != -1 else ""

    formatter = Jinja2ChatFormatter(template=template, eos_token=text_of(llm.token_eos()),
                                    bos_token=text_of(llm.token_bos()),
                                    add_generation_prompt=True)
    return LlamaLoaded(llm, formatter, path, threads, time.perf_counter() - started)
