"""A bounded load test of `tinylm serve` on loopback: throughput, latency and errors at several concurrency levels.

    python benchmarks/serve_load.py                       # both runtimes, about 3 minutes on 2 cores
    python benchmarks/serve_load.py --quick               # smoke run (levels 1 and 32, 2 s each), about 1 minute
    python benchmarks/serve_load.py --model runs/demo/finetune-pretrained --runtimes onnx --levels 1 8 32
    python benchmarks/serve_load.py --student runs/student   # also rows for a distilled student (`tinylm distill`)

What it does. Starts `tinylm serve MODEL` in a subprocess on 127.0.0.1 (a free port; nothing else is ever
contacted), then for each concurrency level C runs C client loops over keep-alive connections until either
--requests requests were sent or --duration seconds passed (whichever first), so every level stops by itself.
The same is repeated against a second server with micro-batching off (--max-batch 1 --max-wait-ms 0) at the
lowest and highest level, to show what batching itself contributes. Then the server is stopped. This runs once
per runtime (PyTorch; ONNX Runtime on a graph exported into a temporary folder; and ONNX Runtime on that graph's
int8 version, `tinylm export onnx --quantize int8`, served with `--runtime onnx --onnx FILE`), and once more per
runtime for a distilled student when --student is given (rows "student/torch", "student/onnx-int8", ...).

Model: --model, else runs/demo/finetune-pretrained (what `tinylm demo` leaves), else a demo-preset classifier
fine-tuned here on the shipped AG News sample (about 15 s more).

Request mix (fixed rotation, so every level sees the same mix): of every 20 requests, 16 are good (real AG News
test texts from the shipped demo sample; every 4th good one is a list of 4 texts, the others one text) and 4 are
bad, cycling through the bad cases the server must refuse with a 4xx: malformed JSON, a wrong type, an empty
text, too many texts, a text over the length limit, a body over the size limit, a non-JSON content type.
Each response's status is checked against the status its case expects; anything else counts as unexpected.

Figures per level: requests/s (all, good, texts/s), p50/p95/p99 latency of good requests as the client sees it
(send to full response), status counts, 5xx count, connection errors, and the server's own batching counters
(mean texts per forward pass). The client is a minimal asyncio HTTP/1.1 client (a few lines, no library), since
it shares the machine's cores with the server and must cost little per request.

Results: benchmarks/results/serve_load.json and a printed table. Threads: the server runs with TINYLM_THREADS
(default 1 here: on the 2-core reference machine one core runs the model, the other the event loop and client).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "serve_load.json"
ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # loopback only, always
DEMO_MODEL = ROOT / "runs" / "demo" / "finetune-pretrained"
# Server limits for this run; the bad cases are built against them.
MAX_TEXTS, MAX_CHARS, MAX_BODY = 16, 2000, 64 * 1024


# ----- a minimal keep-alive HTTP/1.1 client -----


class Connection:
    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes = b"",
                      content_type: str = "application/json") -> tuple[int, bytes]:
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        head = (f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            await self.close()
            raise ConnectionError("connection closed by the server")
        status = int(status_line.split()[1])
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
            elif name.strip().lower() == "connection" and value.strip().lower() == "close":
                close = True
        payload = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, payload


# ----- the request mix -----


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    expect: int
    texts: int = 0  # texts a good request classifies
    content_type: str = "application/json"

    @property
    def good(self) -> bool:
        return self.expect == 200


def build_cases(texts: list[str]) -> list[Case]:
    """One rotation of 20 requests: 16 good (every 4th a list of 4 texts), 4 bad (cycling over the bad kinds)."""
    bad = [
        Case("malformed_json", b'{"text": "unterminated', 400),
        Case("wrong_type", json.dumps({"text": 42}).encode(), 422),
        Case("empty_text", json.dumps({"text": "   "}).encode(), 422),
        Case("too_many_texts", json.dumps({"texts": texts[:MAX_TEXTS + 1]}).encode(), 422),
        Case("text_too_long", json.dumps({"text": "word " * (MAX_CHARS // 5 + 1)}).encode(), 422),
        Case("body_too_large", json.dumps({"text": "x" * (MAX_BODY + 1)}).encode(), 413),
        Case("not_json", b"text=hello", 415, content_type="application/x-www-form-urlencoded"),
    ]
    cases: list[Case] = []
    t = b = g = 0
    for slot in range(20):
        if slot % 5 == 4:
            cases.append(bad[b % len(bad)])
            b += 1
        elif g % 4 == 3:
            batch = [texts[(t + k) % len(texts)] for k in range(4)]
            cases.append(Case("good_list4", json.dumps({"texts": batch}).encode(), 200, texts=4))
            t, g = t + 4, g + 1
        else:
            cases.append(Case("good_text", json.dumps({"text": texts[t % len(texts)]}).encode(), 200, texts=1))
            t, g = t + 1, g + 1
    return cases


def rotations(texts: list[str], count: int) -> list[Case]:
    """`count` rotations with different texts in each, so requests are not all the same text."""
    out: list[Case] = []
    for r in range(count):
        shifted = texts[(r * 23) % len(texts):] + texts[:(r * 23) % len(texts)]
        out.extend(build_cases(shifted))
    return out


# ----- one concurrency level -----


@dataclass
class LevelResult:
    concurrency: int
    sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    by_case: dict[str, dict[str, int]] = field(default_factory=dict)
    unexpected: int = 0
    connection_errors: int = 0
    good_latencies: list[float] = field(default_factory=list)
    good_texts: int = 0
    seconds: float = 0.0

    def record(self, case: Case, status: int, seconds: float) -> None:
        self.sent += 1
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
        per = self.by_case.setdefault(case.name, {})
        per[str(status)] = per.get(str(status), 0) + 1
        if status != case.expect:
            self.unexpected += 1
        if case.good and status == 200:
            self.good_latencies.append(seconds)
            self.good_texts += case.texts

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.good_latencies)

        def pct(q: float) -> float | None:
            return round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else None

        return {
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 2),
            "requests": self.sent,
            "requests_per_s": round(self.sent / self.seconds, 1),
            "good_requests_per_s": round(len(lat) / self.seconds, 1),
            "texts_per_s": round(self.good_texts / self.seconds, 1),
            "latency_ms_good": {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99),
                                "mean": round(1000 * statistics.fmean(lat), 2) if lat else None},
            "statuses": dict(sorted(self.statuses.items())),
            "errors_5xx": sum(v for k, v in self.statuses.items() if k.startswith("5")),
            "unexpected_status": self.unexpected,
            "connection_errors": self.connection_errors,
            "by_case": {k: dict(sorted(v.items())) for k, v in sorted(self.by_case.items())},
        }


async def run_level(port: int, cases: list[Case], concurrency: int, max_requests: int,
                    duration: float) -> LevelResult:
    result = LevelResult(concurrency)
    next_index = 0
    stop_at = time.perf_counter() + duration

    async def client() -> None:
        nonlocal next_index
        conn = Connection(port)
        try:
            while next_index < max_requests and time.perf_counter() < stop_at:
                case = cases[next_index % len(cases)]
                next_index += 1
                started = time.perf_counter()
                try:
                    status, _ = await asyncio.wait_for(
                        conn.request("POST", "/predict", case.body, case.content_type), timeout=30)
                except (OSError, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
                    result.connection_errors += 1
                    await conn.close()
                    continue
                result.record(case, status, time.perf_counter() - started)
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


async def get_json(port: int, path: str) -> dict[str, Any]:
    conn = Connection(port)
    try:
        status, body = await conn.request("GET", path)
    finally:
        await conn.close()
    if status != 200:
        raise RuntimeError(f"GET {path}: HTTP {status}")
    return json.loads(body)


# ----- the server process -----


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, model: Path, runtime: str, threads: int, max_batch: int, max_wait_ms: float,
                 onnx: Path | None = None):
        self.port = free_port()
        self.cmd = [sys.executable, "-m", "tinylm.cli", "serve", str(model), "--host", HOST, "--port", str(self.port),
                    "--runtime", runtime, "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
                    "--max-texts", str(MAX_TEXTS), "--max-chars", str(MAX_CHARS), "--max-body-bytes", str(MAX_BODY)]
        if onnx is not None:
            self.cmd += ["--onnx", str(onnx)]
        env = {**os.environ, "TINYLM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop); a file, as a full pipe blocks the server
        self.proc = subprocess.Popen(self.cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    async def ready(self, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"server exited: {self.log.read().decode(errors='replace')[-2000:]}")
            try:
                return await get_json(self.port, "/info")
            except (OSError, ConnectionError, RuntimeError):
                await asyncio.sleep(0.2)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


async def measure(server: ServerProcess, cases: list[Case], levels: list[int], max_requests: int,
                  duration: float) -> list[dict[str, Any]]:
    await run_level(server.port, cases, 4, 60, 5.0)  # warm-up: first passes, allocator, connections
    out = []
    for level in levels:
        before = (await get_json(server.port, "/health"))["stats"]
        result = await run_level(server.port, cases, level, max_requests, duration)
        after = (await get_json(server.port, "/health"))["stats"]
        summary = result.summary()
        passes = after["batches"] - before["batches"]
        busy = after["busy_seconds"] - before["busy_seconds"]
        summary["server"] = {"forward_passes": passes,
                             "mean_texts_per_pass": round((after["texts"] - before["texts"]) / max(passes, 1), 2),
                             "busy_fraction": round(busy / result.seconds, 3)}
        out.append(summary)
        lat = summary["latency_ms_good"]
        print(f"  c={level:>3}  {summary['requests_per_s']:>7.1f} req/s  good {summary['good_requests_per_s']:>7.1f}/s"
              f"  p50 {lat['p50']} p95 {lat['p95']} p99 {lat['p99']} ms  5xx {summary['errors_5xx']}  "
              f"unexpected {summary['unexpected_status']}  conn-err {summary['connection_errors']}  "
              f"texts/pass {summary['server']['mean_texts_per_pass']}", flush=True)
    return out


# ----- model and main -----


def demo_size_model(workdir: Path) -> Path:
    """A demo-preset classifier fine-tuned on the shipped AG News sample (about 15 s), when no model is given."""
    from tinylm.config import FINETUNE_PRESETS, replace
    from tinylm.experiments.demo import DEMO_DATA
    from tinylm.train.finetune import finetune

    cfg = replace(FINETUNE_PRESETS["demo"], task="ag_news", tokenizer="tinylm-wiki-4k", epochs=5)
    finetune(cfg, workdir / "ft", root=DEMO_DATA)
    return workdir / "ft" / "model"


def check_texts(count: int = 200) -> list[str]:
    from tinylm.data import load_task
    from tinylm.experiments.demo import DEMO_DATA

    task = load_task("ag_news", DEMO_DATA, train_per_label=0, test_per_label=count // 4, seed=7)
    return [e.text[:MAX_CHARS] for e in task.test]


def machine() -> dict[str, Any]:
    import torch

    cpu = "unknown"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def headline(runs: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue asks for, for one runtime: c_high vs c_low throughput with batching, 5xx count; and
    for context the same ratio without batching, and batched vs unbatched at each end."""
    on = {lv["concurrency"]: lv for lv in runs["batched"]["levels"]}
    off = {lv["concurrency"]: lv for lv in runs["unbatched"]["levels"]}
    lo, hi = min(on), max(on)
    levels = [lv for r in runs.values() for lv in r["levels"]]

    def ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
        return round(a["good_requests_per_s"] / b["good_requests_per_s"], 2)

    return {
        "concurrency_low": lo, "concurrency_high": hi,
        "good_requests_per_s_low": on[lo]["good_requests_per_s"],
        "good_requests_per_s_high": on[hi]["good_requests_per_s"],
        "throughput_ratio_high_vs_low": ratio(on[hi], on[lo]),
        "unbatched_good_requests_per_s_low": off[lo]["good_requests_per_s"],
        "unbatched_good_requests_per_s_high": off[hi]["good_requests_per_s"],
        "unbatched_throughput_ratio_high_vs_low": ratio(off[hi], off[lo]),
        "batched_vs_unbatched_at_high": ratio(on[hi], off[hi]),
        "batched_vs_unbatched_at_low": ratio(on[lo], off[lo]),
        "errors_5xx_total": sum(lv["errors_5xx"] for lv in levels),
        "unexpected_status_total": sum(lv["unexpected_status"] for lv in levels),
        "connection_errors_total": sum(lv["connection_errors"] for lv in levels),
    }


async def run_runtime(runtime: str, model: Path, onnx: Path | None, cases: list[Case],
                      args: argparse.Namespace, label: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    runs: dict[str, Any] = {}
    configs = {"batched": (args.max_batch, args.max_wait_ms, args.levels),
               "unbatched": (1, 0.0, [min(args.levels), max(args.levels)])}
    info: dict[str, Any] = {}
    for name, (max_batch, wait, levels) in configs.items():
        print(f"{label or runtime}, {name}: max_batch {max_batch}, max_wait_ms {wait}", flush=True)
        server = ServerProcess(model, runtime, args.threads, max_batch, wait, onnx)
        try:
            info = await server.ready()
            levels_out = await measure(server, cases, levels, args.requests, args.duration)
        finally:
            server.stop()
        runs[name] = {"max_batch": max_batch, "max_wait_ms": wait, "levels": levels_out}
    return runs, info


def graph_for(model: Path, runtime: str, workdir: Path) -> Path | None:
    """The ONNX graph a runtime serves (none for torch), exported into `workdir` so the model folder is left as it
    is. Accuracy is recorded in the export report, not judged: this is a load test, and a model given here may
    come without a task sample."""
    if runtime == "torch":
        return None
    from tinylm.inference.onnx import export_onnx

    workdir.mkdir(parents=True, exist_ok=True)
    quantize = "int8" if runtime == "onnx-int8" else None
    graph = workdir / ("model.int8.onnx" if quantize else "model.onnx")
    return Path(export_onnx(model, graph, quantize=quantize, accuracy_tolerance=None)["onnx"])


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    machine_start = machine()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else (DEMO_MODEL if (DEMO_MODEL / "model").is_dir() else None)
        if model is None:
            print("no --model and no runs/demo: fine-tuning a demo-size classifier on the shipped sample", flush=True)
            model = demo_size_model(Path(tmp))
        cases = rotations(check_texts(), 10)
        systems = [("", model)] + ([("student/", Path(args.student))] if args.student else [])
        infos = []
        for prefix, folder in systems:
            for runtime in args.runtimes:
                onnx = graph_for(folder, runtime, Path(tmp) / (prefix or "model"))
                server_runtime = "torch" if runtime == "torch" else "onnx"
                runs, info = await run_runtime(server_runtime, folder, onnx, cases, args, prefix + runtime)
                results[prefix + runtime] = {"headline": headline(runs), "runs": runs,
                                             **({"model": str(folder)} if prefix else {})}
                infos.append(info)
        info = infos[0]  # the main model's
    return {
        "benchmark": "serve_load",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {**machine_start, "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "model": {"path": str(model), "kind": info["kind"], "members": info["members"], "labels": info["labels"],
                  "max_length": info["max_length"]},
        "settings": {"host": HOST, "levels": args.levels, "max_requests_per_level": args.requests,
                     "max_seconds_per_level": args.duration, "server_threads": args.threads,
                     "batching": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms},
                     "limits": {"max_texts": MAX_TEXTS, "max_chars": MAX_CHARS, "max_body_bytes": MAX_BODY},
                     "mix": "per 20 requests: 12 one-text + 4 four-text good requests, 4 bad (7 kinds in rotation)",
                     "latency": "client side, request sent to response read, good requests only",
                     "unbatched": "a second server with --max-batch 1 --max-wait-ms 0, lowest and highest level"},
        "runtimes": results,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model or committee folder (default: runs/demo/"
                        "finetune-pretrained, else a demo-size model fine-tuned here)")
    parser.add_argument("--runtimes", choices=["torch", "onnx", "onnx-int8"], nargs="+",
                        default=["torch", "onnx", "onnx-int8"])
    parser.add_argument("--student", default=None, help="also serve this distilled student (`tinylm distill`'s "
                        "OUT/model) with every runtime: rows student/torch, student/onnx-int8, ...")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--requests", type=int, default=4000, help="most requests per level")
    parser.add_argument("--duration", type=float, default=10.0, help="most seconds per level")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("TINYLM_THREADS") or 1))
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="levels 1 and 32, 2 s each (smoke run)")
    parser.add_argument("--out", default=None, help=f"results JSON (default: {RESULTS.relative_to(ROOT)}; "
                        "--quick writes none unless given)")
    args = parser.parse_args()
    if args.quick:
        args.levels, args.duration = [1, 32], 2.0
    result = asyncio.run(main_async(args))
    for runtime, r in result["runtimes"].items():
        h = r["headline"]
        print(f"{runtime}: throughput c={h['concurrency_high']} / c={h['concurrency_low']}: "
              f"{h['throughput_ratio_high_vs_low']}x (without batching {h['unbatched_throughput_ratio_high_vs_low']}x;"
              f" batched vs unbatched at c={h['concurrency_high']}: {h['batched_vs_unbatched_at_high']}x); "
              f"5xx: {h['errors_5xx_total']}, unexpected statuses: {h['unexpected_status_total']}, "
              f"connection errors: {h['connection_errors_total']}")
    if args.out or not args.quick:
        out = Path(args.out or RESULTS)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
