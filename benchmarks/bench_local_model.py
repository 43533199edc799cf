"""Load time, time to first token and decode speed of the embedded model ``local:smollm2``.

Everything goes through the public API (``al.Lab``, ``lab.model``, ``lab.stream``):

* cold load     a fresh interpreter imports aillm_lab, resolves the model and times
                ``lab.runner.run(model.load())`` (torch + transformers import and the
                weights from the safetensors cache beside the GGUF; the OS page cache is warm,
                because an untimed warm-up process runs first). The same process then streams
                one short reply, to show what the first call after a cold start costs.
* warm load     in this process, after one load: a new ``Lab`` and a new model object, then
                ``model.load()`` again, which the per-process weights cache answers.
* streaming     ``lab.stream(PROMPT, max_tokens=64)`` at temperature 0, after one untimed
                warm-up reply. TTFT is timed here from the call to the first text event
                (client side), and also read from ``Completion.ttft_s`` (model side, after the
                load). Decode speed is ``(usage.output_tokens - 1) / (latency_s - ttft_s)``,
                as the dashboard shows it; end-to-end is ``output_tokens / latency_s``.
* floor         plain ``loaded.model.generate`` on the very weights ``model.load()`` returned
                (same chat template, greedy, same max_tokens, no streamer), interleaved with
                the streamed replies: what this CPU does without aillm_lab, so a slow figure
                can be told apart from a slow machine.

Targets (medians): cold load <= 5 s, warm load <= 10 ms, client TTFT <= 1 s, decode >= 10
tok/s. Printed, not asserted.

    .venv/bin/python benchmarks/bench_local_model.py [--reps 3] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import environment, save  # benchmarks/ is sys.path[0] when run as a script

import aillm_lab as al

ROOT = Path(__file__).resolve().parent.parent
NAME = "bench_local_model"
MODEL = "local:smollm2"
PROMPT = "Write a long story about a dragon."
TARGETS = {"cold_load_s": 5.0, "warm_load_s": 0.010, "client_ttft_s": 1.0,
           "decode_tok_s": 10.0}

COLD = f"""
import json, time
t0 = time.perf_counter()
import aillm_lab as al
lab = al.Lab()
model = lab.model({MODEL!r})
t1 = time.perf_counter()
loaded = lab.runner.run(model.load())
t2 = time.perf_counter()
first = None
for event in lab.stream({PROMPT!r}, max_tokens=8):
    if first is None and event.type == "text":
        first = time.perf_counter() - t2
t3 = time.perf_counter()
lab.close()
print(json.dumps({{"import_resolve_s": t1 - t0, "load_s": t2 - t1, "load_s_reported":
                  loaded.load_s, "first_reply_ttft_s": first, "first_reply_s": t3 - t2,
                  "start_to_first_token_s": t2 - t0 + first}}))
"""


def cold_load() -> dict[str, float]:
    """One fresh process: import, resolve, load, then a short first reply."""
    done = subprocess.run([sys.executable, "-c", COLD], cwd=ROOT, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        sys.exit(f"cold-load child failed ({done.returncode}):\n{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def warm_load() -> float:
    """A new Lab and model object in this process; the weights come from the process cache."""
    lab = al.Lab()
    model = lab.model(MODEL)
    started = time.perf_counter()
    lab.runner.run(model.load())
    return time.perf_counter() - started


def stream_once(lab: al.Lab, max_tokens: int) -> dict[str, Any]:
    started = time.perf_counter()
    first = None
    completion = None
    for event in lab.stream(PROMPT, MODEL, max_tokens=max_tokens):
        if first is None and event.type == "text":
            first = time.perf_counter() - started
        if event.type == "done":
            completion = event.completion
    wall = time.perf_counter() - started
    assert completion is not None and completion.latency_s and completion.ttft_s
    out = completion.usage.output_tokens
    decode = completion.latency_s - completion.ttft_s
    return {"client_ttft_s": first, "model_ttft_s": completion.ttft_s,
            "latency_s": completion.latency_s, "client_wall_s": wall,
            "input_tokens": completion.usage.input_tokens, "output_tokens": out,
            "decode_s": decode, "decode_tok_s": (out - 1) / decode if decode > 0 else None,
            "end_to_end_tok_s": out / completion.latency_s,
            "finish_reason": completion.finish_reason, "text": completion.text}


def raw_generate(loaded: Any, max_tokens: int) -> dict[str, Any]:
    """The floor: transformers' generate on the same weights, without the library around it."""
    import torch

    chat = [{"role": "user", "content": PROMPT}]
    with loaded.lock:  # the lock LocalModel takes; nothing else generates meanwhile
        inputs = loaded.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        started = time.perf_counter()
        with torch.inference_mode():
            out = loaded.model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False,
                                        temperature=None, top_p=None, top_k=None,
                                        pad_token_id=loaded.tokenizer.eos_token_id)
        wall = time.perf_counter() - started
    n = int(out.shape[1] - inputs["input_ids"].shape[1])
    return {"latency_s": wall, "output_tokens": n, "end_to_end_tok_s": n / wall}


def median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each measurement")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]  # other work on the machine skews every figure

    lab = al.Lab()
    try:
        model = lab.model(MODEL)
    except al.ModelNotAvailable as exc:
        # the message names the exact pull command for this models dir
        print(f"{NAME}: cannot run, {MODEL} is not available: {exc}", file=sys.stderr)
        sys.exit(1)

    warmup_child = cold_load()  # untimed: page cache, .pyc files, the safetensors copy
    colds = [cold_load() for _ in range(args.reps)]

    started = time.perf_counter()
    loaded = lab.runner.run(model.load())
    first_in_process = time.perf_counter() - started
    warms = [warm_load() for _ in range(args.reps)]

    stream_once(lab, args.max_tokens)  # untimed warm-ups
    raw_generate(loaded, args.max_tokens)
    replies, floors = [], []
    for _ in range(args.reps):  # interleave library and floor
        replies.append(stream_once(lab, args.max_tokens))
        floors.append(raw_generate(loaded, args.max_tokens))
    lab.close()

    cold = median(colds, "load_s")
    warm = statistics.median(warms)
    ttft = median(replies, "client_ttft_s")
    decode = median(replies, "decode_tok_s")
    e2e = median(replies, "end_to_end_tok_s")
    floor = median(floors, "end_to_end_tok_s")
    figures = {"cold_load_s": cold, "warm_load_s": warm, "client_ttft_s": ttft,
               "decode_tok_s": decode, "end_to_end_tok_s": e2e, "floor_tok_s": floor,
               "ratio_to_floor": e2e / floor}
    checks = {"cold_load_s": cold <= TARGETS["cold_load_s"],
              "warm_load_s": warm <= TARGETS["warm_load_s"],
              "client_ttft_s": ttft <= TARGETS["client_ttft_s"],
              "decode_tok_s": decode >= TARGETS["decode_tok_s"]}
    verdict = "PASS" if all(checks.values()) else "FAIL"

    env = environment(load_at_start)
    ms = 1000.0
    lines = [f"# {NAME}: {MODEL} through the public API ({args.reps} reps each, medians; "
             f"{args.max_tokens}-token replies to {PROMPT!r})",
             "# " + ", ".join(f"{k}={v}" for k, v in env.items()), "",
             f"{'load':44} {'median':>10} {'min':>10} {'max':>10}"]

    def row(label: str, values: list[float], scale: float = 1.0, unit: str = "s",
            digits: int = 3) -> str:
        v = [x * scale for x in sorted(values)]
        cells = " ".join(f"{x:{10 - len(unit)}.{digits}f}{unit}"
                         for x in (statistics.median(v), v[0], v[-1]))
        return f"{label:44} {cells}"

    lines += [row("cold load, fresh process (model.load())", [c["load_s"] for c in colds]),
              row("  as Loaded.load_s reports it", [c["load_s_reported"] for c in colds]),
              row("  import aillm_lab + Lab + lab.model", [c["import_resolve_s"] for c in colds]),
              row("  then first 8-token reply: TTFT", [c["first_reply_ttft_s"] for c in colds]),
              row("  process start to first token", [c["start_to_first_token_s"]
                                                     for c in colds]),
              row("first load in this process", [first_in_process]),
              row("warm load, new Lab in same process", warms, ms, "ms"),
              "", f"{'stream (max_tokens=' + str(args.max_tokens) + ')':44} {'median':>10} "
                  f"{'min':>10} {'max':>10}"]
    for label, key, unit, digits in [
            ("TTFT, client side (call -> first text)", "client_ttft_s", "s", 3),
            ("TTFT, model side (Completion.ttft_s)", "model_ttft_s", "s", 3),
            ("latency (Completion.latency_s)", "latency_s", "s", 3),
            ("decode time (latency_s - ttft_s)", "decode_s", "s", 3),
            ("output tokens (usage.output_tokens)", "output_tokens", "", 0),
            ("decode speed (output_tokens - 1) / decode", "decode_tok_s", "t/s", 1),
            ("end-to-end speed output_tokens / latency", "end_to_end_tok_s", "t/s", 1)]:
        lines.append(row(label, [float(r[key]) for r in replies], 1.0, unit, digits))
    lines += [row("floor: raw generate latency", [r["latency_s"] for r in floors]),
              row("floor: raw generate output_tokens / latency",
                  [r["end_to_end_tok_s"] for r in floors], 1.0, "t/s", 1)]
    finishes = sorted({str(r["finish_reason"]) for r in replies})
    lines += ["",
              f"untimed warm-up process: load {warmup_child['load_s']:.3f} s; "
              f"finish reasons: {', '.join(finishes)}; input tokens: "
              f"{replies[0]['input_tokens']}",
              f"cold load {cold:.3f} s, warm load {warm * ms:.3f} ms "
              f"({cold / warm:.0f}x faster warm), TTFT {ttft:.3f} s, decode {decode:.1f} tok/s",
              f"end-to-end {e2e:.1f} tok/s vs raw transformers floor {floor:.1f} tok/s on the "
              f"same weights: ratio {e2e / floor:.2f}x",
              f"target: cold load <= {TARGETS['cold_load_s']:.0f} s, warm load <= "
              f"{TARGETS['warm_load_s'] * ms:.0f} ms, TTFT <= {TARGETS['client_ttft_s']:.0f} s, "
              f"decode >= {TARGETS['decode_tok_s']:.0f} tok/s  ->  {verdict}"]
    failed = [k for k, ok in checks.items() if not ok]
    if failed:
        lines.append(f"  failed: {', '.join(failed)}")
    save(NAME, "\n".join(lines), {"environment": env, "model": MODEL, "prompt": PROMPT,
         "max_tokens": args.max_tokens, "reps": args.reps, "figures": figures,
         "cold": colds, "warmup_child": warmup_child,
         "first_load_in_process_s": first_in_process, "warm_load_s": warms,
         "replies": replies, "floor": floors, "targets": TARGETS, "checks": checks,
         "verdict": verdict})


if __name__ == "__main__":
    main()
