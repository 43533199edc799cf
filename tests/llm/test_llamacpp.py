"""The llama.cpp engine for ``local:``: which engine runs and why, threads, cancel, and two
requests on one model. The shared behaviour (streaming, stops, usage, tools) is tested on
both engines in test_local.py."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

import aillm_lab as al
from aillm_lab.config import LabSettings
from aillm_lab.errors import ConfigError, ModelNotAvailable
from aillm_lab.llm import llamacpp
from aillm_lab.llm.local import LocalModel, choose_backend
from aillm_lab.llm.local_files import KNOWN_MODELS
from aillm_lab.llm.types import GenerationParams, Message


def _gguf() -> Path:
    path = LabSettings.load().model_path / KNOWN_MODELS["smollm2"].filename
    if not path.is_file():
        pytest.skip("local:smollm2 is not downloaded: aillm-lab models pull smollm2")
    return path


def _needs_llama() -> None:
    ok, detail = llamacpp.available()
    if not ok:
        pytest.skip(f"{detail}: `make install` builds it")


@pytest.fixture(scope="module")
def model(module_runner) -> LocalModel:
    _needs_llama()
    m = al.resolve("local:smollm2", LabSettings.load(local={"backend": "llama.cpp"}))
    assert isinstance(m, LocalModel) and m.backend == "llama.cpp"
    module_runner.run(m.load(), timeout=120)
    return m


# -- which engine, and why ----------------------------------------------------------------------
def test_auto_picks_llama_cpp_when_it_imports_and_says_why(tmp_path):
    _needs_llama()
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    backend, why = choose_backend(gguf, LabSettings.load())
    assert backend == "llama.cpp"
    assert "llama-cpp-python" in why and "auto" in why


def test_without_llama_cpp_auto_falls_back_to_transformers_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(llamacpp, "_AVAILABLE", (False, "llama-cpp-python does not import"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    backend, why = choose_backend(gguf, LabSettings.load())
    assert backend == "transformers"
    assert "does not import" in why and "make install" in why


def test_asking_for_llama_cpp_without_it_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(llamacpp, "_AVAILABLE", (False, "llama-cpp-python does not import"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ModelNotAvailable, match="make install.*local.backend = 'auto'"):
        choose_backend(gguf, LabSettings.load(local={"backend": "llama.cpp"}))


def test_transformers_when_asked_and_always_for_a_hugging_face_folder(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert choose_backend(gguf, LabSettings.load(local={"backend": "transformers"}))[0] == (
        "transformers")
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    backend, why = choose_backend(folder, LabSettings.load(local={"backend": "llama.cpp"}))
    assert backend == "transformers" and "Hugging Face folder" in why


def test_the_factory_passes_backend_threads_and_reason_to_the_model(tmp_path):
    _needs_llama()
    (tmp_path / KNOWN_MODELS["smollm2"].filename).write_bytes(b"GGUF")
    settings = LabSettings.load(models_dir=tmp_path, local={"n_threads": 3})
    m = al.resolve("local:smollm2", settings)
    assert isinstance(m, LocalModel)
    assert (m.backend, m.n_threads) == ("llama.cpp", 3)
    assert "auto" in m.why and "llama.cpp" in repr(m)


def test_doctor_says_which_engine_runs_local_models_and_why(capsys, monkeypatch):
    from aillm_lab import cli

    monkeypatch.setattr(llamacpp, "_AVAILABLE", (True, "llama-cpp-python 9.9"))
    monkeypatch.setenv("AILLM_LOCAL", '{"n_threads": 3}')
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert ("engine                 llama.cpp: llama-cpp-python 9.9 is installed "
            "(local.backend = 'auto'); 3 threads (local.n_threads)") in out
    assert "llama-cpp-python " in out  # its version, beside torch's, in the package list
    monkeypatch.setattr(llamacpp, "_AVAILABLE", (False, "llama-cpp-python does not import"))
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "engine                 transformers: llama-cpp-python does not import" in out
    assert "make install" in out
    monkeypatch.setenv("AILLM_LOCAL", '{"backend": "llama.cpp"}')
    assert cli.main(["doctor"]) == 0
    assert "engine                 none: local.backend = 'llama.cpp', but" in (
        capsys.readouterr().out)


@pytest.mark.parametrize("bad", [{"n_threads": 0}, {"n_threads": "many"},
                                 {"backend": "vllm"}, {"threads": 2}])
def test_bad_local_settings_are_refused_naming_the_field(bad):
    with pytest.raises(ConfigError, match=r"local\."):
        LabSettings.load(local=bad)


def test_default_threads_fit_the_cores_this_process_may_use():
    import os

    cpus = len(os.sched_getaffinity(0))
    assert llamacpp.default_threads() == max(1, min(4, cpus // 2))


def test_an_unloadable_file_is_a_typed_error_naming_it(tmp_path):
    _needs_llama()
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelNotAvailable, match="broken.gguf"):
        llamacpp.load_gguf(bad, 1)


# -- the loaded model ---------------------------------------------------------------------------
def test_the_model_loads_with_the_threads_asked_for(model):
    loaded = model.load_sync()
    assert loaded.n_threads == llamacpp.default_threads()
    assert loaded.llm.n_ctx() == llamacpp.N_CTX
    assert loaded.template(messages=[{"role": "user", "content": "hi"}]).prompt.rstrip(
        ).endswith("assistant")  # the GGUF's own chat template, with the generation prompt


def test_a_512_token_generation_cancelled_from_another_thread_stops_within_half_a_second(
        module_runner, model):
    loaded = model.load_sync()
    started = threading.Event()

    async def long_story() -> None:
        params = GenerationParams(max_tokens=512, temperature=0.8, seed=1)
        async for event in model.stream([Message.user("Write a very long story about a "
                                                      "dragon and a knight.")], params=params):
            if event.type == "text":
                started.set()

    future = asyncio.run_coroutine_threadsafe(long_story(), module_runner.loop)
    assert started.wait(60), "no token came"
    time.sleep(0.3)  # well inside the 512 tokens
    cancelled_at: list[float] = []

    def cancel() -> None:  # what the kernel's interrupt does: cancel the task from elsewhere
        cancelled_at.append(time.perf_counter())
        future.cancel()

    canceller = threading.Thread(target=cancel)
    canceller.start()
    canceller.join()
    assert loaded.lock.acquire(timeout=5), "generation kept running after cancel"
    stopped = time.perf_counter() - cancelled_at[0]
    loaded.lock.release()
    assert stopped < 0.5, f"took {stopped:.2f} s to stop"
    reply = module_runner.run(model.complete([Message.user("Name the capital of France.")],
                                             params=GenerationParams(max_tokens=16)), timeout=60)
    assert "paris" in reply.text.lower()


def test_two_concurrent_requests_are_serialised_never_interleaved(module_runner, model):
    prompts = ["Write a poem about the sea.", "List three fruits and their colours."]
    params = GenerationParams(max_tokens=40)

    async def one(prompt: str) -> str:
        return (await model.complete([Message.user(prompt)], params=params)).text

    alone = [module_runner.run(one(p), timeout=120) for p in prompts]

    async def both() -> list[str]:
        return list(await asyncio.gather(*(one(p) for p in prompts)))

    together = module_runner.run(both(), timeout=120)
    assert together == alone  # greedy decoding: any interleaving in one context shows here
    assert len(set(alone)) == 2


def test_a_follow_up_reuses_the_cached_prompt_prefix(module_runner, model):
    loaded = model.load_sync()
    chat = [Message.system("You are terse. " * 40), Message.user("Name a colour.")]
    module_runner.run(model.complete(chat, params=GenerationParams(max_tokens=4)), timeout=60)
    assert loaded.llm.n_tokens > 100  # the context kept the conversation
    follow = [*chat[:1], Message.user("Name an animal.")]
    reply = module_runner.run(model.complete(follow, params=GenerationParams(max_tokens=4)),
                              timeout=60)
    assert reply.text and reply.usage.input_tokens > 100


def test_a_prompt_longer_than_the_context_is_refused_with_the_sizes(module_runner, model):
    from aillm_lab.errors import UnsupportedInput

    huge = "word " * (llamacpp.N_CTX + 100)
    with pytest.raises(UnsupportedInput, match=f"{llamacpp.N_CTX}-token context"):
        module_runner.run(model.complete([Message.user(huge)],
                                         params=GenerationParams(max_tokens=4)), timeout=120)


def test_asking_whether_llama_cpp_imports_leaves_no_open_file_at_exit():
    """llama_cpp opens two /dev/null handles when it is imported; a process that only asked
    (``aillm-lab doctor``) must close them too, or exit prints a ResourceWarning."""
    import subprocess
    import sys

    _needs_llama()
    code = "from aillm_lab.llm import llamacpp; assert llamacpp.available()[0]"
    done = subprocess.run([sys.executable, "-X", "dev", "-W", "error", "-c", code],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ResourceWarning" not in done.stderr, done.stderr
