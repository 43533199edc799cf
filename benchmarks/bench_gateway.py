"""The gateway's cost against the bare SDK, and how closely its rate limiter keeps a rate.

* overhead   2,000 chat calls at concurrency 100 to a loopback FakeOpenAI answering after
             20 ms: through a Lab (gateway, limits, call log), through a bare ``AsyncOpenAI``
             with an ``asyncio.Semaphore`` (its default httpx2 transport), and through a bare
             ``AsyncOpenAI`` on the SDK's ``DefaultAioHttpClient`` (the transport the Lab
             uses), interleaved in one run. Reports calls/s for each, the ratios against both
             bare clients (the second is the gateway's own cost), and p50/p99 latency.
             Target: the gateway reaches >= 0.9x the bare SDK's calls/s.
* rate       the RPM bucket at 60, 600 and 6,000 RPM: achieved rate over a fixed number of
             acquisitions against the configured one (real clock). Target: within 5%.
* 120 RPM    60 calls fired at once through a Lab limited to 120 RPM, timed by their
             arrival at the fake server. Target: 29-31 s from first to last arrival plus
             one interval, and no 1-second window holding more than its share (2) plus 1.

    .venv/bin/python benchmarks/bench_gateway.py [--calls 2000] [--concurrency 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import httpx2
import openai
from _common import environment, save  # benchmarks/ is sys.path[0] when run as a script

import aillm_lab as al
from aillm_lab.llm.limits import TokenBucket
from aillm_lab.runtime import LoopRunner
from aillm_lab.testing import FakeOpenAI, Fault

NAME = "bench_gateway"
LATENCY_S = 0.02
TARGET_RATIO = 0.9
WARMUP = 200  # calls per path before the timed rounds
RATE_TOLERANCE = 0.05


async def _drive(call, n: int, concurrency: int) -> tuple[float, list[float]]:
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - start, latencies


async def bare_client(url: str, concurrency: int, *, aiohttp: bool = False) -> openai.AsyncOpenAI:
    """One long-lived client per bare path, as the Lab keeps one: no path pays connection
    set-up in the timed rounds."""
    http = openai.DefaultAioHttpClient(limits=httpx2.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency)) if aiohttp else None
    return openai.AsyncOpenAI(api_key="bench", base_url=url, max_retries=0, http_client=http)


async def bare(client: openai.AsyncOpenAI, n: int, concurrency: int) -> tuple[float, list[float]]:
    async def call(i: int) -> None:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"call {i}"}])

    return await _drive(call, n, concurrency)


async def gateway(lab: al.Lab, url: str, n: int, concurrency: int) -> tuple[float, list[float]]:
    model = f"openai:gpt-4o-mini@{url}"

    async def call(i: int) -> None:
        await lab.achat(f"call {i}", model=model)

    return await _drive(call, n, concurrency)


async def rate(rpm: float, acquisitions: int) -> float:
    bucket = TokenBucket.per_minute(rpm)
    await bucket.acquire()  # the first token is there at start; time the steady state
    start = time.perf_counter()
    for _ in range(acquisitions):
        await bucket.acquire()
    return acquisitions / (time.perf_counter() - start) * 60.0


async def paced(lab: al.Lab, url: str, calls: int) -> None:
    model = f"openai:gpt-4o-mini@{url}"
    await asyncio.gather(*(lab.achat(f"paced {i}", model=model) for i in range(calls)))


def pacing(runner: LoopRunner, rpm: float = 120.0, calls: int = 60) -> dict[str, float]:
    """Arrival times at the server for ``calls`` concurrent calls under an RPM limit."""
    with FakeOpenAI() as server, tempfile.TemporaryDirectory() as home:
        lab = al.Lab(home=home, runner=runner,
                     limits={"openai:gpt-4o-mini": {"rpm": rpm, "concurrency": calls}})
        start = time.monotonic()
        runner.run(paced(lab, server.url, calls))
        lab.close()
        arrivals = sorted(r.received_at - start for r in server.requests)
    interval = 60.0 / rpm
    span = arrivals[-1] - arrivals[0] + interval  # n calls occupy n intervals
    busiest = max(sum(1 for t in arrivals if a <= t < a + 1.0) for a in arrivals)
    return {"calls": len(arrivals), "span_s": span, "first_s": arrivals[0],
            "busiest_1s_window": busiest, "share_per_s": rpm / 60.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=4,
                        help="interleaved rounds the calls are split into, to even out drift")
    args = parser.parse_args()
    runner = LoopRunner(name="bench-gateway")
    per_round = args.calls // args.rounds
    results: dict[str, dict[str, list[float]]] = {"bare SDK": {}, "bare SDK, aiohttp": {},
                                                  "gateway (Lab)": {}}
    with FakeOpenAI() as server, tempfile.TemporaryDirectory() as home:
        server.fault_rate(1.0, kinds=[Fault.delay(LATENCY_S)])
        lab = al.Lab(home=home, runner=runner,
                     limits={"openai:gpt-4o-mini": {"concurrency": args.concurrency}})
        clients = {name: runner.run(bare_client(server.url, args.concurrency,
                                                aiohttp=name.endswith("aiohttp")))
                   for name in results if name != "gateway (Lab)"}

        def timed(name: str, n: int) -> tuple[float, list[float]]:
            coro = (gateway(lab, server.url, n, args.concurrency) if name == "gateway (Lab)"
                    else bare(clients[name], n, args.concurrency))
            return runner.run(coro)

        for name in results:  # warm-up, not counted: connections, the Lab's model and log
            timed(name, WARMUP)
        for _ in range(args.rounds):
            for name in results:
                elapsed, lat = timed(name, per_round)
                slot = results[name]
                slot.setdefault("elapsed", []).append(elapsed)
                slot.setdefault("latencies", []).extend(lat)
        logged = len(lab.calls()) - WARMUP
        for client in clients.values():
            runner.run(client.close())
        lab.close()
    rates = {rpm: runner.run(rate(rpm, n)) for rpm, n in ((60, 5), (600, 30), (6000, 200))}
    paced_120 = pacing(runner)
    runner.close()

    rows, figures = [], {}
    for name, slot in results.items():
        lat = sorted(slot["latencies"])
        cps = len(lat) / sum(slot["elapsed"])
        figures[name] = {"calls_per_s": cps, "p50_ms": statistics.median(lat) * 1000,
                         "p99_ms": lat[int(len(lat) * 0.99)] * 1000, "calls": len(lat)}
        rows.append(f"{name:18} {cps:10.1f} {figures[name]['p50_ms']:9.1f} "
                    f"{figures[name]['p99_ms']:9.1f}")
    ratio = figures["gateway (Lab)"]["calls_per_s"] / figures["bare SDK"]["calls_per_s"]
    same_transport = (figures["gateway (Lab)"]["calls_per_s"]
                      / figures["bare SDK, aiohttp"]["calls_per_s"])
    added_p50 = figures["gateway (Lab)"]["p50_ms"] - figures["bare SDK"]["p50_ms"]
    added_p99 = figures["gateway (Lab)"]["p99_ms"] - figures["bare SDK"]["p99_ms"]
    rate_err = {rpm: abs(got - rpm) / rpm for rpm, got in rates.items()}
    paced_ok = (29.0 <= paced_120["span_s"] <= 31.0
                and paced_120["busiest_1s_window"] <= paced_120["share_per_s"] + 1)
    verdict = ("PASS" if ratio >= TARGET_RATIO and max(rate_err.values()) <= RATE_TOLERANCE
               and paced_ok else "FAIL")
    env = environment()
    lines = [f"# {NAME}: {args.calls} chat calls each at concurrency {args.concurrency}, "
             f"server latency {LATENCY_S * 1000:.0f} ms, {args.rounds} interleaved rounds",
             "# " + ", ".join(f"{k}={v}" for k, v in env.items()), "",
             f"{'path':18} {'calls/s':>10} {'p50 ms':>9} {'p99 ms':>9}", *rows, "",
             f"gateway / bare SDK calls/s: {ratio:.2f}x (target >= {TARGET_RATIO}x)",
             f"gateway / bare SDK on the same aiohttp transport: {same_transport:.2f}x "
             "(the gateway's own cost; the Lab uses the SDK's DefaultAioHttpClient)",
             f"added latency: p50 {added_p50:+.1f} ms, p99 {added_p99:+.1f} ms",
             f"call-log rows written by the gateway run: {logged}", "",
             "rate limiter (RPM bucket, real clock):"]
    lines += [f"  configured {rpm:>6} RPM -> achieved {got:8.1f} RPM ({rate_err[rpm]:.1%} off)"
              for rpm, got in rates.items()]
    lines += ["", f"120 RPM through a Lab: {paced_120['calls']} calls took "
              f"{paced_120['span_s']:.2f} s (target 29-31 s; first arrival after "
              f"{paced_120['first_s']:.2f} s), busiest 1-second window "
              f"{paced_120['busiest_1s_window']} calls (target <= "
              f"{paced_120['share_per_s']:.0f} + 1)  ->  {'PASS' if paced_ok else 'FAIL'}"]
    lines.append(f"target: >= {TARGET_RATIO}x bare SDK, rates within "
                 f"{RATE_TOLERANCE:.0%} and the 120 RPM pacing  ->  {verdict}")
    save(NAME, "\n".join(lines), {"environment": env, "figures": figures, "ratio": ratio,
                                  "ratio_same_transport": same_transport,
                                  "added_p50_ms": added_p50, "added_p99_ms": added_p99,
                                  "rates": rates, "paced_120_rpm": paced_120,
                                  "verdict": verdict})


if __name__ == "__main__":
    main()
