"""Live pipeline benchmark (issue 8): flows/default.yaml against the seed design, side by side.

    .venv/bin/python -m bench.live                  # rates table + sustainable-rate search
    .venv/bin/python -m bench.live --quick          # rates table only, 5 s per run
    .venv/bin/python -m bench.live --profile DIR    # also py-spy the SUT at 12,600 frames/s
    .venv/bin/python -m bench.live --profile-only DIR   # just that py-spy run

Systems under test, each in its own process, fed by a paced sender thread inside that process
(python-can ``virtual`` buses are in-process only; see :mod:`bench.traffic`):

* ``les02-flow``: :mod:`bench.live_sut` -- flows/default.yaml as ``les02-flow run`` builds it
  (can_source -> les02_parse -> ride_detect -> ws_sink + ride_store; can_source ->
  file_recorder + ecuconnect_tcp_sink), the simulator replaced by the sender;
* ``seed``: :mod:`bench.baselines.seed_listener` -- the seed listener's design (reader thread
  -> queue -> polling loop -> json + ``asyncio.gather`` per event) and the seed logger's
  blocking ``sendall`` broadcast.

Clients: 10 WebSocket + 2 ECUconnect TCP connections in :data:`CLIENT_PROCS` separate
processes (:mod:`bench.live_client`); they count every message and take every 10th one's
timestamp for latency = receipt time - frame timestamp (same clock). Per run: delivered
fraction per client (the SUT reports how many messages each client should get), latency
p50/p99/max, server CPU as a fraction of one core (process CPU minus the sender thread's, over
the sending period), peak RSS, and the busiest client process' CPU -- marked ``CLIENT-BOUND``
when it is above 90 % of a core (the clients, not the server, limit that run).

"Sustains" a rate = every client got every message, WS and TCP p99 <= 10 ms, and the sender
kept pace (achieved rate >= 98 % of the target). The search climbs :data:`LADDER` from the
rates-table results until the first failure.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench import py_spy

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).with_name("RESULTS.md")
SYSTEMS = {"les02-flow": "bench.live_sut", "seed": "bench.baselines.seed_listener"}
RATES = (500, 2000, 5000, 12600)
LADDER = (
    500, 750, 1000, 1250, 1500, 1750, 2000, 3000, 4000, 5000, 6500, 8000, 10000, 12600,
    16000, 20000, 25000, 32000, 40000, 50000,
)  # fmt: skip
WS_CLIENTS = 10
TCP_CLIENTS = 2
CLIENT_PROCS = 2
P99_LIMIT_MS = 10.0
#: a client process above this fraction of one core limits the run
CLIENT_BOUND = 0.9


@dataclass
class Run:
    """One system at one rate."""

    system: str
    rate: float
    duration: float
    sut: dict[str, Any]
    conns: list[dict[str, Any]]
    client_cpu: list[float]
    ws_lat: list[float] = field(default_factory=list)
    tcp_lat: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        for c in self.conns:
            (self.ws_lat if c["kind"] == "ws" else self.tcp_lat).extend(c["lat_ms"])
        self.ws_lat.sort()
        self.tcp_lat.sort()

    def delivered(self, kind: str) -> list[float]:
        want = self.sut[f"{kind}_expected"]
        return [c["count"] / want if want else 0.0 for c in self.conns if c["kind"] == kind]

    @property
    def achieved(self) -> float:
        return float(self.sut["sent"]) / max(float(self.sut["send_wall"]), 1e-9)

    @property
    def client_bound(self) -> bool:
        return max(self.client_cpu, default=0.0) > CLIENT_BOUND

    def failures(self) -> list[str]:
        """Why this run does not sustain its rate (empty: it does)."""
        why = []
        if self.achieved < 0.98 * self.rate:
            why.append(f"sender reached only {self.achieved:,.0f}/s")
        for kind in ("ws", "tcp"):
            got = self.delivered(kind)
            if got and min(got) < 1.0:
                why.append(f"{kind} lost {1 - min(got):.2%}")
            p99 = pct(self.ws_lat if kind == "ws" else self.tcp_lat, 99)
            if p99 > P99_LIMIT_MS:
                why.append(f"{kind} p99 {p99:.1f} ms")
        return why


def pct(sorted_values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of an ascending list; nan when empty.

    >>> pct([1.0, 2.0, 3.0, 4.0], 50), pct([1.0, 2.0, 3.0, 4.0], 99)
    (2.0, 4.0)
    """
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, -(-len(sorted_values) * p // 100) - 1))
    return sorted_values[int(k)]


def _json_line(stream: IO[str], who: str) -> dict[str, Any]:
    """The next JSON object line (other lines, e.g. py-spy's, are skipped)."""
    while True:
        line = stream.readline()
        if not line:
            raise RuntimeError(f"{who} ended without a result")
        if line.startswith("{"):
            obj: dict[str, Any] = json.loads(line)
            if "error" in obj:
                raise RuntimeError(f"{who}: {obj['error']}")
            return obj


def _send(p: subprocess.Popen[str], line: str) -> None:
    assert p.stdin is not None
    p.stdin.write(line + "\n")
    p.stdin.flush()


def _finish(p: subprocess.Popen[str], timeout: float = 20.0) -> None:
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    for f in (p.stdin, p.stdout):
        if f is not None:
            f.close()


def _client_args(ws_port: int, tcp_port: int) -> list[list[str]]:
    """Split the connections over :data:`CLIENT_PROCS` processes (round robin)."""
    ws = [0] * CLIENT_PROCS
    tcp = [0] * CLIENT_PROCS
    for i in range(WS_CLIENTS):
        ws[i % CLIENT_PROCS] += 1
    for i in range(TCP_CLIENTS):
        tcp[(i + WS_CLIENTS) % CLIENT_PROCS] += 1
    out = []
    for k in range(CLIENT_PROCS):
        args = []
        if ws[k]:
            args += ["--ws", f"127.0.0.1:{ws_port}:{ws[k]}"]
        if tcp[k]:
            args += ["--tcp", f"127.0.0.1:{tcp_port}:{tcp[k]}"]
        if args:
            out.append(args)
    return out


def run_once(system: str, rate: float, duration: float, profile: Path | None = None) -> Run:
    """Start the SUT and the clients, drive ``rate`` frames/s for ``duration`` s, collect."""
    tmp = tempfile.mkdtemp(prefix="bench-live-")
    cmd = [sys.executable, "-m", SYSTEMS[system], "--rate", str(rate)]
    cmd += ["--duration", str(duration), "--tmp", tmp]
    cmd += ["--ws-clients", str(WS_CLIENTS), "--tcp-clients", str(TCP_CLIENTS)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    sut = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                           cwd=ROOT, env=env)  # fmt: skip
    clients: list[subprocess.Popen[str]] = []
    try:
        assert sut.stdout is not None
        ready = _json_line(sut.stdout, system)
        for args in _client_args(ready["ws_port"], ready["tcp_port"]):
            c = subprocess.Popen(
                [sys.executable, "-m", "bench.live_client", *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                env=env,
            )
            clients.append(c)
            assert c.stdout is not None
            if c.stdout.readline().strip() != "ready":
                raise RuntimeError("client did not start")
        spy: subprocess.Popen[str] | None = None
        if profile is not None:  # sample the sending period only
            exe = py_spy()
            spy = subprocess.Popen(
                [exe, "record", "--pid", str(sut.pid), "--rate", "250", "--format", "raw",
                 "--duration", str(max(1, int(duration) - 1)), "-o", str(profile)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            time.sleep(0.5)  # attached
        _send(sut, "go")
        result = _json_line(sut.stdout, system)
        if spy is not None:
            spy.wait(30)
        time.sleep(0.3)  # the last bytes in flight
        conns: list[dict[str, Any]] = []
        cpus: list[float] = []
        for c in clients:
            _send(c, "stop")
            assert c.stdout is not None
            rep = _json_line(c.stdout, "client")
            conns += rep["conns"]
            cpus.append(rep["cpu"] / rep["active"] if rep["active"] > 0 else 0.0)
        _send(sut, "quit")
        # what each client should have got: everything the pipeline produced by now (events
        # still queued when the drain timeout ended count as lost)
        result.update(_json_line(sut.stdout, system))
        return Run(system, rate, duration, result, conns, cpus)
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
            _finish(c, 5.0)
        if sut.poll() is None and sut.stdin is not None and not sut.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                _send(sut, "quit")
        _finish(sut)
        shutil.rmtree(tmp, ignore_errors=True)


def describe(r: Run) -> str:
    """One table row (markdown) for a run."""
    ws, tcp = r.delivered("ws"), r.delivered("tcp")

    def lat(v: list[float]) -> str:
        return f"{pct(v, 50):.2f} / {pct(v, 99):.2f} / {max(v, default=float('nan')):.1f}"

    fails = r.failures()
    verdict = "sustains" if not fails else "; ".join(fails)
    if r.client_bound:
        verdict += f"; CLIENT-BOUND (client CPU {max(r.client_cpu):.0%})"
    return (
        f"| {r.system} | {r.rate:,.0f} | {r.achieved:,.0f} | "
        f"{min(ws, default=0):.2%} ({statistics.fmean(ws) if ws else 0:.2%}) | "
        f"{min(tcp, default=0):.2%} | {lat(r.ws_lat)} | {lat(r.tcp_lat)} | "
        f"{r.sut['cpu']:.1%} ({r.sut['cpu_with_sender']:.0%}) | {r.sut['rss_mib']:.0f} | "
        f"{max(r.client_cpu, default=0):.0%} | {verdict} |"
    )


HEADER = (
    "| system | rate (frames/s) | sent (frames/s) | WS delivered min (mean) | TCP delivered min "
    "| WS latency p50 / p99 / max (ms) | TCP latency p50 / p99 / max (ms) "
    "| server CPU, one core (with sender) | peak RSS (MiB) | busiest client proc CPU "
    "| verdict |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def thread_line(r: Run) -> str:
    """Server CPU per thread (fraction of one core), busiest first."""
    shares = sorted(r.sut.get("threads", {}).items(), key=lambda kv: -kv[1])
    return f"{r.system} @ {r.rate:,.0f}/s: " + ", ".join(f"{k} {v:.1%}" for k, v in shares)


def search(system: str, known: dict[float, Run], duration: float) -> tuple[float, list[Run]]:
    """Climb :data:`LADDER` between the highest passing and lowest failing known rate."""
    runs: list[Run] = []
    ok = {rate: not r.failures() for rate, r in known.items()}
    while True:
        hi = min((rate for rate, good in ok.items() if not good), default=float("inf"))
        lo = max((rate for rate, good in ok.items() if good and rate < hi), default=0.0)
        todo = [rate for rate in LADDER if lo < rate < hi]
        if not todo:
            return lo, runs
        rate = todo[0]
        r = run_once(system, rate, duration)
        print(describe(r), flush=True)
        runs.append(r)
        ok[rate] = not r.failures()


def profile_top(raw: Path, top: int = 15) -> list[tuple[str, str]]:
    """Costs from a py-spy ``--format raw`` file: CPU share per thread, then the event-loop
    thread's top self and inclusive functions (shares of all samples of running threads)."""
    threads: collections.Counter[str] = collections.Counter()
    self_n: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        if "threading.py:Thread._bootstrap" in frames[0]:
            body = [f for f in frames if "threading.py:" not in f and "thread.py:" not in f]
            threads[f"thread {body[0] if body else frames[-1]}"] += n
            continue
        threads["event loop (main thread)"] += n
        self_n[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    rows = [("samples", f"{total} (running threads only, 250 Hz, sending period)")]
    for name, n in threads.most_common():
        rows.append((f"{n / total:.1%}", name))
    for name, n in self_n.most_common(top):
        rows.append((f"loop self {n / total:.1%}", name))
    skip = ("<frozen", "asyncio/runners.py", "bench/live_sut.py", "asyncio/base_events.py")
    shown = 0
    for name, n in incl.most_common():
        if shown >= top:
            break
        if not name.startswith(skip):
            rows.append((f"loop incl {n / total:.1%}", name))
            shown += 1
    return rows


def _short(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``file.py:func`` with a shortened path."""
    func, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", f"{ROOT}/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{func}"


def main(
    quick: bool = False, profile_dir: Path | None = None, command: str = ""
) -> list[tuple[str, str]]:
    """Run the rates table for both systems, the search, the optional profile; append."""
    duration = 5.0 if quick else 10.0
    t_start = time.perf_counter()
    print(HEADER, flush=True)
    table: dict[str, dict[float, Run]] = {s: {} for s in SYSTEMS}
    for rate in RATES:
        for system in SYSTEMS:
            r = run_once(system, rate, duration)
            table[system][rate] = r
            print(describe(r), flush=True)
            print("    " + thread_line(r), flush=True)
    best: dict[str, float] = {}
    extra: list[Run] = []
    if not quick:
        for system in SYSTEMS:
            best[system], more = search(system, table[system], 5.0)
            extra += more
    prof_rows: list[tuple[str, str]] = []
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        raw = profile_dir / "live-12600.txt"
        r = run_once("les02-flow", 12600, duration, profile=raw)
        print(describe(r), flush=True)
        prof_rows = profile_top(raw)
        for name, value in prof_rows:
            print(f"{name:<20} {value}")
    elapsed = time.perf_counter() - t_start
    rows: list[tuple[str, str]] = []
    for system in SYSTEMS:
        for run in table[system].values():
            rows.append((f"live {system} @ {run.rate:,.0f}/s", describe(run)))
    if best:
        ratio = best["les02-flow"] / best["seed"] if best.get("seed") else float("inf")
        top = LADDER[-1]
        rows.append(
            (
                "sustainable rate (p99 <= 10 ms, no loss, 10 WS + 2 TCP)",
                f"les02-flow {best['les02-flow']:,.0f}/s"
                + (" (top of the ladder)" if best["les02-flow"] >= top else "")
                + f", seed {best['seed']:,.0f}/s, ratio {ratio:.1f}x",
            )
        )
    _append(table, extra, rows, prof_rows, elapsed, quick, profile_dir, command)
    return rows


def _append(
    table: dict[str, dict[float, Run]],
    extra: list[Run],
    rows: list[tuple[str, str]],
    prof_rows: list[tuple[str, str]],
    elapsed: float,
    quick: bool,
    profile_dir: Path | None,
    command: str,
) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if not command:
        command = ".venv/bin/python -m bench.live" + (" --quick" if quick else "")
        if profile_dir is not None:
            command += f" --profile {profile_dir}"
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(f"\n## {stamp} — live pipeline vs seed design (issue 8)\n\n")
        f.write(f"Command: `{command}` on {platform.python_implementation()} ")
        f.write(f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs; ")
        f.write(
            f"{WS_CLIENTS} WS + {TCP_CLIENTS} TCP clients in {CLIENT_PROCS} processes; "
            f"took {elapsed:.0f} s. Server CPU excludes the in-process paced sender thread "
            "(in parentheses: with it). Latency = client receipt - frame timestamp, every "
            "10th message.\n\n"
        )
        f.write(HEADER + "\n")
        for system in SYSTEMS:
            for r in table[system].values():
                f.write(describe(r) + "\n")
        for r in extra:
            f.write(describe(r) + "\n")
        f.write("\nServer CPU by thread (fraction of one core, /proc per-thread times):\n\n")
        for system in SYSTEMS:
            for r in table[system].values():
                f.write(f"- {thread_line(r)}\n")
        f.write("\n")
        for name, value in rows:
            if name.startswith("sustainable"):
                f.write(f"**{name}**: {value}\n")
        if prof_rows:
            f.write("\npy-spy profile of les02-flow at 12,600 frames/s (top self, inclusive):\n\n")
            f.write("| share | function |\n|---|---|\n")
            for name, value in prof_rows:
                f.write(f"| {name} | `{value}` |\n")


def profile_only(profile_dir: Path, rate: float = 12600, duration: float = 10.0) -> None:
    """Only the py-spy run of les02-flow at ``rate``; appends its row and profile."""
    profile_dir.mkdir(parents=True, exist_ok=True)
    raw = profile_dir / f"live-{rate:.0f}.txt"
    r = run_once("les02-flow", rate, duration, profile=raw)
    print(HEADER + "\n" + describe(r) + "\n" + thread_line(r), flush=True)
    rows = profile_top(raw)
    for name, value in rows:
        print(f"{name:<20} {value}")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(f"\n## {stamp} — live pipeline profile at {rate:,.0f} frames/s (issue 8)\n\n")
        f.write(f"Command: `.venv/bin/python -m bench.live --profile-only {profile_dir}` ")
        f.write(
            "(py-spy record --rate 250 --format raw attached for the sending period; raw "
            f"stacks in {raw.name}). The profiler slows the SUT down.\n\n"
        )
        f.write(HEADER + "\n" + describe(r) + "\n\n" + thread_line(r) + "\n\n")
        f.write("| share of samples | function |\n|---|---|\n")
        for name, value in rows:
            f.write(f"| {name} | `{value}` |\n")


def _cli() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="rates table only, 5 s per run")
    p.add_argument("--profile", type=Path, default=None, help="py-spy the SUT at 12,600/s")
    p.add_argument("--profile-only", type=Path, default=None, help="only the py-spy run")
    a = p.parse_args()
    if a.profile is not None or a.profile_only is not None:
        py_spy()  # before the long run: the hint when it is missing
    if a.profile_only is not None:
        profile_only(a.profile_only)
        return 0
    main(a.quick, a.profile)
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
