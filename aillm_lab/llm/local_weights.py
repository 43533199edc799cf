"""Weights for local models: loaded once per process, shared by every ``LocalModel``.

transformers dequantizes a GGUF file on load, which takes about 30 s on two cores. The first
load therefore saves the dequantized weights as a safetensors folder beside the GGUF, keyed by
the GGUF's sha256, so every later process (a notebook kernel, a test run) loads in about 6 s
on two cores, half of it importing torch and transformers (benchmarks/bench_local_model.py).
The GGUF stays the source of truth; deleting the folder only costs one slow load.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aillm_lab.llm.local_files import sha256_of
from aillm_lab.llm.types import GenerationParams

_CACHE: dict[str, Loaded] = {}
_LOCK = threading.Lock()
_GRAMMARS_MAX = 32


def load_weights(path: Path) -> Loaded:
    """The loaded model for ``path``; blocking, so call it from a worker thread."""
    key = str(path.resolve())
    with _LOCK:
        loaded = _CACHE.get(key)
        if loaded is None:
            loaded = _CACHE[key] = _load(path)
        return loaded


@dataclass
class Loaded:
    """A model and tokenizer with one generation at a time (transformers is not re-entrant)."""

    model: Any
    tokenizer: Any
    source: Path
    load_s: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    _grammars: OrderedDict[str, Any] = field(default_factory=OrderedDict)
    _compiler: Any = None

    def generate(self, chat: list[dict[str, str]], schema: dict[str, Any] | None,
                 params: GenerationParams, emit: Callable[[str], None],
                 stop: threading.Event) -> dict[str, Any]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        with self.lock:
            if stop.is_set():
                return {"input_tokens": 0, "output_tokens": 0, "eos": False}
            inputs = self.tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            n_in = int(inputs["input_ids"].shape[1])
            processors = [self._grammar_processor(schema)] if schema is not None else []
            kwargs: dict[str, Any] = {
                "max_new_tokens": params.max_tokens,
                "streamer": _streamer(self.tokenizer, emit),
                "stopping_criteria": StoppingCriteriaList([_halt(stop)]),
                "logits_processor": LogitsProcessorList(processors),
                "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            }
            if params.temperature > 0:
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                kwargs.update(do_sample=True, temperature=params.temperature,
                              top_p=params.top_p)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.inference_mode():
                out = self.model.generate(**inputs, **kwargs)
        new = out[0, n_in:].tolist()
        eos_ids = _eos_ids(self)
        return {"input_tokens": n_in, "output_tokens": len(new),
                "eos": bool(new) and new[-1] in eos_ids}

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def _grammar_processor(self, schema: dict[str, Any]) -> Any:
        import json

        import xgrammar as xgr
        from xgrammar.contrib.hf import LogitsProcessor

        if self._compiler is None:
            info = xgr.TokenizerInfo.from_huggingface(
                self.tokenizer, vocab_size=self.model.config.vocab_size)
            self._compiler = xgr.GrammarCompiler(info)
        # never sort the keys: the grammar follows the schema's property order, so a tool
        # call is written "tool" first and its arguments are chosen knowing the tool
        key = json.dumps(schema)
        compiled = self._grammars.get(key)
        if compiled is None:
            compiled = self._compiler.compile_json_schema(key, any_whitespace=False)
            self._grammars[key] = compiled
            while len(self._grammars) > _GRAMMARS_MAX:
                self._grammars.popitem(last=False)
        self._grammars.move_to_end(key)
        return LogitsProcessor(compiled)  # one per generate() call, as xgrammar requires


def _load(path: Path) -> Loaded:
    started = time.perf_counter()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    folder = _converted(path) if path.is_file() else path
    if folder is None:  # could not write the cache: load the GGUF directly every time
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                     dtype=torch.float32)
    else:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    return Loaded(model, tokenizer, path, time.perf_counter() - started)


def _converted(gguf: Path) -> Path | None:
    """A safetensors copy of ``gguf`` (made once, atomically), or None if not writable."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    digest = sha256_of(gguf)[:16]
    folder = gguf.parent / f".{gguf.stem}.hf-{digest}"
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return folder
    tmp = gguf.parent / f".{gguf.stem}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config  # weights are plain float32 now
        model.hf_quantizer = None
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, folder)
    except OSError:
        if folder.is_dir():  # another process won the race
            return folder
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for stale in gguf.parent.glob(f".{gguf.stem}.hf-*"):
        if stale != folder:
            shutil.rmtree(stale, ignore_errors=True)
    return folder


def _eos_ids(loaded: Loaded) -> set[int]:
    ids = loaded.model.generation_config.eos_token_id
    ids = ids if isinstance(ids, list) else [ids]
    return {i for i in [*ids, loaded.tokenizer.eos_token_id] if i is not None}


def _streamer(tokenizer: Any, emit: Callable[[str], None]) -> Any:
    from transformers import TextStreamer

    class _Emit(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                emit(text)

    return _Emit(tokenizer, skip_prompt=True, skip_special_tokens=True)


def _halt(stop: threading.Event) -> Any:
    import torch
    from transformers import StoppingCriteria

    class _Halt(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool)

    return _Halt()
