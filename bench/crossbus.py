"""Cross-process bus benchmark (issue 16): sender process -> udp_multicast -> SUT -> clients.

    .venv/bin/python -m bench.crossbus              # the three scenarios, 10 s each, both SUTs
    .venv/bin/python -m bench.crossbus --quick      # 5 s each
    .venv/bin/python -m bench.crossbus --duration 20 --no-append

Everything runs inside a private network namespace (``unshare -rn``: loopback only, multicast
routed to ``lo``): the command re-executes itself there. Nothing leaves the machine.

Per scenario and system under test, in this order, each in its own process:

1. the SUT: ``les02-flow run flows/default.yaml`` (the real CLI; ``--set sim.disabled=true
   bus.interface=udp_multicast ...``: can_source -> les02_parse -> ride_detect -> ws_sink +
   ride_store, can_source -> file_recorder + ecuconnect_tcp_sink), or the seed design
   (:mod:`bench.baselines.seed_listener` ``--serve``: its listener and its logger, each with
   its own python-can reader of the same bus, as the seed ran them as two programs);
2. the clients (:mod:`bench.live_client`, raw sockets, nothing parsed per message);
3. the sender (``--send``): a python-can ``udp_multicast`` bus, LES02 traffic paced
   drift-free (:class:`bench.traffic.PacedSender`), like a CAN controller's FIFO.

Measured from outside the SUT, the same way for both:

* delivery against what was SENT: every TCP client must get every frame sent, every WS client
  every position frame sent as a ``position_sample`` event; the recorder's file must hold
  every frame sent (les02-flow; the seed has no recorder);
* kernel drops: the ``drops`` column of ``/proc/net/udp`` for every UDP socket the SUT holds
  (found through ``/proc/PID/fd``), and les02-flow's own ``kernel_drops`` counter;
* CPU of the SUT process (all threads, user + system, ``/proc/PID/stat``) over the sending
  period, as a fraction of one core: receive path, pipeline, sinks, recorder, everything; the
  sender's and the clients' CPU are reported beside it, not included; *incl. catching up*:
  the SUT's CPU from the start of sending until it has caught up, over the sending period --
  what the load needs even when a shared machine gave the SUT less and it fell behind;
* latency: client receipt - frame timestamp, every 10th message; python-can stamps a
  udp_multicast frame with the kernel's receive time at the SUT's socket, so latency starts
  when the datagram reached the SUT's socket (the sender's own lateness is not in it).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench import py_spy
from bench.live import pct

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).with_name("RESULTS.md")
FLOW = ROOT / "flows" / "default.yaml"
GROUP = "239.74.163.2"
UDP_PORT = 43113
WS_PORT = 18765  # inside the private namespace: no other process can hold these
TCP_PORT = 18766
NETNS_SETUP = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo"
#: (rate, WS clients, TCP clients)
SCENARIOS = ((500, 1, 0), (500, 10, 2), (12600, 10, 2))
SYSTEMS = ("les02-flow", "seed")
ALL_SYSTEMS = (*SYSTEMS, "floor-recv", "floor-write")
#: seconds the harness waits after sending at least, and at most for the SUT to go idle
DRAIN = 2.0
DRAIN_MAX = 60.0
#: a SUT below this fraction of a core has drained
IDLE_CPU = 0.15


# -- sender ------------------------------------------------------------------------------------


def send(rate: float, duration: float) -> int:
    """``--send``: wait for a line on stdin, send, print ``{sent, positions, ...}``."""
    import can

    from bench.traffic import PacedSender, les02_traffic

    traffic = les02_traffic(rate, duration)
    positions = sum(1 for _, m in traffic if m.arbitration_id & 0xFE == 0x80 and m.dlc == 4)
    bus = can.Bus(interface="udp_multicast", channel=GROUP, port=UDP_PORT)
    # the sender's socket is in the group too and never reads: keep its buffer small
    bus._multicast._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # type: ignore[attr-defined]
    sender = PacedSender("", traffic, bus=bus)
    print("ready", flush=True)
    sys.stdin.readline()
    sender.start()
    sender.join()
    st = sender.stats
    print(json.dumps({"sent": st.sent, "positions": positions, "wall": st.wall, "cpu": st.cpu,
                      "behind_ms": st.max_behind * 1e3}), flush=True)  # fmt: skip
    return 0


# -- measuring from outside ----------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def task_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread (tid) of a process."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _sleeping(pid: int) -> bool:
    """The process's main thread is asleep (state S), not running or waiting for a CPU."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "S"


def udp_drops(pid: int) -> int:
    """Kernel drops summed over the UDP sockets process ``pid`` holds (``/proc/net/udp``)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    total = 0
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        with open(path, encoding="ascii") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if len(cols) >= 13 and cols[9] in inodes:
                    total += int(cols[12])
    return total


def _wait_port(port: int, proc: subprocess.Popen[str], limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"SUT exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def _bar(done: float, total: float, label: str, width: int = 30) -> None:
    frac = min(1.0, done / total) if total else 1.0
    fill = int(frac * width)
    sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {frac:4.0%} {label:<60}")
    sys.stderr.flush()


@dataclass
class Result:
    system: str
    rate: int
    ws: int
    tcp: int
    sent: int = 0
    positions: int = 0
    achieved: float = 0.0
    cpu: float = 0.0
    sender_cpu: float = 0.0
    client_cpu: float = 0.0
    #: the SUT's main thread (its event loop) alone
    loop_cpu: float = 0.0
    #: seconds from the end of sending until the SUT was idle (it had caught up)
    drain_s: float = 0.0
    #: CPU from the start of sending until caught up, over the sending period: what the load
    #: needs, also when the SUT got less than that on a shared machine and fell behind
    demand: float = 0.0
    kernel_drops: int = 0
    counted_drops: int | None = None
    recorded: int | None = None
    ws_got: list[int] = field(default_factory=list)
    tcp_got: list[int] = field(default_factory=list)
    ws_lat: list[float] = field(default_factory=list)
    tcp_lat: list[float] = field(default_factory=list)

    def delivered(self) -> float:
        """The worst client's share of what it should have got (1.0 = everything)."""
        shares = [g / self.positions for g in self.ws_got if self.positions]
        shares += [g / self.sent for g in self.tcp_got if self.sent]
        return min(shares, default=0.0)

    def row(self) -> str:
        lat = sorted(self.ws_lat + self.tcp_lat)
        rec = "—"
        if self.recorded is not None:
            rec = f"{self.recorded:,} ({self.recorded / max(self.sent, 1):.2%})"
        counted = "—" if self.counted_drops is None else f"{self.counted_drops:,}"
        ws = f"{min(self.ws_got, default=0):,}/{self.positions:,}" if self.ws else "—"
        tcp = f"{min(self.tcp_got, default=0):,}/{self.sent:,}" if self.tcp else "—"
        return (
            f"| {self.system} | {self.rate:,} | {self.ws} WS + {self.tcp} TCP | "
            f"{self.sent:,} ({self.achieved:,.0f}/s) | {self.drain_s:.1f} | {ws} | {tcp} | {rec} | "
            f"{self.delivered():.2%} | {self.kernel_drops:,} | {counted} | "
            f"{pct(lat, 50):.2f} / {pct(lat, 99):.2f} / {max(lat, default=float('nan')):.1f} | "
            f"{self.cpu:.1%} ({self.loop_cpu:.1%}) | {self.demand:.1%} | "
            f"{self.sender_cpu:.0%} | {self.client_cpu:.0%} |"
        )


HEADER = (
    "| system | frames/s | clients | sent (achieved) | caught up after (s) "
    "| WS min got / position frames sent "
    "| TCP min got / frames sent | recorded | worst client delivered | kernel drops "
    "(/proc/net/udp) | drops counted by SUT | latency p50 / p99 / max (ms) "
    "| SUT CPU, one core (main thread) | SUT CPU incl. catching up | sender CPU "
    "| clients CPU |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _popen(cmd: list[str], **kw: Any) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env, **kw)  # fmt: skip


def _line(stream: IO[str] | None) -> str:
    assert stream is not None
    return stream.readline().strip()


def run_one(
    system: str,
    rate: int,
    n_ws: int,
    n_tcp: int,
    duration: float,
    label: str,
    profile: Path | None = None,
    extra_set: tuple[str, ...] = (),
    floor_window: float = 0.0,
) -> Result:
    tmp = tempfile.mkdtemp(prefix="bench-crossbus-")
    res = Result(system, rate, n_ws, n_tcp)
    name, _, tree = system.split("+", 1)[0].partition("@")
    if name == "les02-flow":  # les02-flow[@TREE][+node.key=value+...]
        extra_set = (*extra_set, *system.split("+")[1:])
        exe = str(Path(sys.executable).with_name("les02-flow"))
        if tree:  # another checkout's code (its own venv), e.g. main, in the same run
            exe = str(Path(tree) / ".venv" / "bin" / "les02-flow")
        cmd = [exe, "run", str(FLOW), "--log-level", "INFO"]
        for kv in (
            "sim.disabled=true", "bus.interface=udp_multicast", f"bus.channel={GROUP}",
            "ws.host=127.0.0.1", f"ws.port={WS_PORT}", "ws.ping_interval=null",
            f"tcp.port={TCP_PORT}", f"store.path={tmp}/rides.sqlite",
            f"recorder.path={tmp}/bench.log",
            *extra_set,
        ):  # fmt: skip
            cmd += ["--set", kv]
        cmd += ["--stats-interval", "0"]
        sut = _popen(cmd, stderr=open(f"{tmp}/sut.err", "w"))  # noqa: SIM115
    elif system.startswith("floor"):
        cmd = [sys.executable, "-m", "bench.crossfloor", "--channel", GROUP, "--port",
               str(UDP_PORT), "--ws-port", str(WS_PORT), "--tcp-port", str(TCP_PORT),
               "--window", str(floor_window)]  # fmt: skip
        if system == "floor-write":
            cmd.append("--write")
        sut = _popen(cmd, stderr=open(f"{tmp}/sut.err", "w"))  # noqa: SIM115
    else:
        cmd = [sys.executable, "-m", "bench.baselines.seed_listener", "--serve", "--channel",
               GROUP, "--ws-port", str(WS_PORT), "--tcp-port", str(TCP_PORT)]  # fmt: skip
        sut = _popen(cmd, stderr=open(f"{tmp}/sut.err", "w"))  # noqa: SIM115
    procs: list[subprocess.Popen[str]] = [sut]
    try:
        _wait_port(WS_PORT, sut)
        _wait_port(TCP_PORT, sut)
        args = []
        if n_ws:
            args += ["--ws", f"127.0.0.1:{WS_PORT}:{n_ws}"]
        if n_tcp:
            args += ["--tcp", f"127.0.0.1:{TCP_PORT}:{n_tcp}"]
        client = _popen([sys.executable, "-m", "bench.live_client", *args])
        procs.append(client)
        if _line(client.stdout) != "ready":
            raise RuntimeError("clients did not start")
        sender = _popen([sys.executable, "-m", "bench.crossbus", "--send", str(rate),
                         str(duration)])  # fmt: skip
        procs.append(sender)
        if _line(sender.stdout) != "ready":
            raise RuntimeError("sender did not start")
        time.sleep(0.5)  # the SUT has accepted the clients
        if profile is not None:  # sample the sending period only
            spy = subprocess.Popen(
                [py_spy(), "record", "--pid", str(sut.pid),
                 "--rate", "250", "--format", "raw", "--duration", str(max(1, int(duration))),
                 "-o", str(profile)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            procs.append(spy)
            time.sleep(1.0)  # attached
        drops0 = udp_drops(sut.pid)
        c0, t0, k0 = proc_cpu(sut.pid), time.monotonic(), task_cpu(sut.pid)
        assert sender.stdin is not None
        sender.stdin.write("go\n")
        sender.stdin.flush()
        while sender.poll() is None:
            _bar(time.monotonic() - t0, duration, f"{label}: sending")
            time.sleep(0.25)
        c1, t1, k1 = proc_cpu(sut.pid), time.monotonic(), task_cpu(sut.pid)
        main_cpu = (k1.get(sut.pid, 0.0) - k0.get(sut.pid, 0.0)) / (t1 - t0)
        res.loop_cpu = main_cpu
        sent = json.loads(_line(sender.stdout))
        res.sent, res.positions = sent["sent"], sent["positions"]
        res.achieved = sent["sent"] / sent["wall"]
        res.sender_cpu = sent["cpu"] / sent["wall"]
        res.cpu = (c1 - c0) / (t1 - t0)
        # drained = the SUT has gone (nearly) idle: what it still held has gone out
        drain0 = time.monotonic()
        last = proc_cpu(sut.pid)
        quiet = 0
        while time.monotonic() - drain0 < DRAIN_MAX:
            time.sleep(0.5)
            now = proc_cpu(sut.pid)
            _bar(1, 1, f"{label}: draining {time.monotonic() - drain0:.0f} s")
            # idle = little CPU AND its event loop asleep (a SUT starved by other processes
            # also uses little CPU, but is runnable), twice in a row
            quiet = quiet + 1 if now - last < 0.5 * IDLE_CPU and _sleeping(sut.pid) else 0
            if quiet >= 2 and time.monotonic() - drain0 >= DRAIN:
                break
            last = now
        res.drain_s = time.monotonic() - drain0
        # what the frames cost however long it took: sending period + catching up
        res.demand = (proc_cpu(sut.pid) - c0) / (t1 - t0)
        res.kernel_drops = udp_drops(sut.pid) - drops0
        if profile is not None:
            procs[-1].wait(30)
        assert client.stdin is not None
        client.stdin.write("stop\n")
        client.stdin.flush()
        rep = json.loads(_line(client.stdout))
        res.client_cpu = rep["cpu"] / rep["active"] if rep["active"] > 0 else 0.0
        for c in rep["conns"]:
            if c["kind"] == "ws":
                res.ws_got.append(c["positions"])
                res.ws_lat += c["lat_ms"]
            else:
                res.tcp_got.append(c["count"])
                res.tcp_lat += c["lat_ms"]
        sut.send_signal(signal.SIGINT)
        if sut.stdin is not None:
            sut.stdin.close()  # the seed stops at EOF
        sut.wait(20)
        if system.startswith("les02-flow"):
            log = Path(tmp) / "bench.log"
            if log.exists():  # (not with --set recorder.disabled=true)
                with log.open(encoding="utf-8", errors="replace") as f:
                    res.recorded = sum(1 for line in f if line.startswith("("))
            err = Path(f"{tmp}/sut.err").read_text(encoding="utf-8", errors="replace")
            res.counted_drops = _counted_drops(err)
        return res
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        with contextlib.suppress(OSError):  # for a look after the run
            shutil.copy(f"{tmp}/sut.err", Path(tempfile.gettempdir()) / "bench-crossbus-sut.err")
        shutil.rmtree(tmp, ignore_errors=True)


def _counted_drops(stderr: str) -> int:
    """les02-flow's kernel_drops from its final stats line (0 when it never counted one)."""
    best = 0
    for line in stderr.splitlines():
        for part in line.split():
            if part.startswith("kernel_drops="):
                best = max(best, int(part.split("=", 1)[1]))
    return best


def main(
    duration: float,
    append: bool,
    command: str,
    scenarios: tuple[tuple[int, int, int], ...] = SCENARIOS,
    extra_set: tuple[str, ...] = (),
    systems: tuple[str, ...] = SYSTEMS,
    floor_window: float = 0.0,
) -> list[Result]:
    t_start = time.monotonic()
    results: list[Result] = []
    total = len(scenarios) * len(systems)
    for rate, n_ws, n_tcp in scenarios:
        for system in systems:
            label = f"{len(results) + 1}/{total} {system} {rate:,}/s {n_ws} WS + {n_tcp} TCP"
            results.append(run_one(system, rate, n_ws, n_tcp, duration, label,
                                   extra_set=extra_set, floor_window=floor_window))  # fmt: skip
            sys.stderr.write("\n")
            print(results[-1].row(), flush=True)
    elapsed = time.monotonic() - t_start
    print(HEADER)
    for r in results:
        print(r.row())
    if append:
        _append(results, elapsed, command)
    return results


def _append(results: list[Result], elapsed: float, command: str) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(f"\n## {stamp} — cross-process bus: sender → udp_multicast → SUT → clients "
                "(issue 16)\n\n")  # fmt: skip
        f.write(
            f"Command: `{command}` on {platform.python_implementation()} "
            f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs shared "
            f"with other engineers' work (noisy: compare the two systems row by row); took "
            f"{elapsed:.0f} s. Sender, SUT and clients are three processes in a private network "
            "namespace. SUT CPU = the SUT process (all threads: receive path, pipeline, "
            "sinks, recorder) over the sending period, read from /proc (incl. catching up: until "
            "the SUT had caught up, over the sending period); sender and clients not "
            "included. Kernel drops = /proc/net/udp `drops` of the SUT's sockets. WS "
            "clients are counted in position_sample events against position frames sent, "
            "TCP clients and the recorder in frames against frames sent, after the SUT has caught "
            "up (gone idle, at most 60 s after sending). Latency from the "
            "kernel's receive stamp at the SUT's socket to the client's receipt.\n\n"
        )
        f.write(HEADER + "\n")
        for r in results:
            f.write(r.row() + "\n")


def _inside_namespace(argv: list[str]) -> int:
    if os.environ.get("BENCH_CROSSBUS_NETNS") == "1":
        return -1
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        sys.exit("bench.crossbus needs 'unshare' and 'ip' (util-linux, iproute2)")
    env = dict(os.environ, BENCH_CROSSBUS_NETNS="1")
    cmd = ["unshare", "-rn", "sh", "-c", f'{NETNS_SETUP} && exec "$@"', "sh",
           sys.executable, "-m", "bench.crossbus", *argv]  # fmt: skip
    return subprocess.call(cmd, env=env, cwd=ROOT)


def _cli() -> int:
    argv = sys.argv[1:]
    if argv and argv[0] == "--send":
        return send(float(argv[1]), float(argv[2]))
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="5 s per run")
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--no-append", action="store_true", help="do not append to RESULTS.md")
    p.add_argument("--profile", type=Path, default=None,
                   help="only: py-spy les02-flow at --rate into this raw file")  # fmt: skip
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE.KEY=VALUE",
        help="extra --set for les02-flow (e.g. bus.read_interval=0.005)",
    )
    p.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="RATE:WS:TCP",
        help="instead of the default three, e.g. 500:1:0",
    )
    p.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated, of {', '.join(ALL_SYSTEMS)} (default: {','.join(SYSTEMS)}); "
        "floor-recv / floor-write: bench.crossfloor, a do-nothing receiver of the same bus; "
        "les02-flow+NODE.KEY=VALUE[+...]: les02-flow with these --set (variants in one run); "
        "les02-flow@DIR: the les02-flow of another checkout (DIR/.venv), e.g. of the commit "
        "before a change",
    )
    p.add_argument(
        "--floor-window",
        type=float,
        default=0.0,
        help="floor systems: seconds they leave the socket alone after a read",
    )
    p.add_argument("--rate", type=int, default=12600, help="with --profile")
    p.add_argument("--ws", type=int, default=10, help="with --profile")
    p.add_argument("--tcp", type=int, default=2, help="with --profile")
    a = p.parse_args(argv)
    if a.profile is not None:
        py_spy()  # before the long run: the hint when it is missing
    rc = _inside_namespace(argv)
    if rc >= 0:
        return rc
    duration = a.duration or (5.0 if a.quick else 10.0)
    if a.profile is not None:
        from bench.live import profile_top

        r = run_one("les02-flow", a.rate, a.ws, a.tcp, duration, "profile", a.profile,
                    tuple(a.set))  # fmt: skip
        sys.stderr.write("\n")
        print(HEADER + "\n" + r.row())
        for share, name in profile_top(a.profile, top=25):
            print(f"{share:<22} {name}")
        return 0
    command = ".venv/bin/python -m bench.crossbus" + (f" {' '.join(argv)}" if argv else "")
    scenarios = tuple(tuple(int(x) for x in sc.split(":")) for sc in a.scenario) or SCENARIOS
    systems = tuple(x for x in a.systems.split(",") if x)
    unknown = sorted(x for x in systems if x.split("+", 1)[0].partition("@")[0] not in ALL_SYSTEMS)
    if unknown:
        p.error(f"unknown system(s) {', '.join(unknown)}: choose from {', '.join(ALL_SYSTEMS)}")
    main(duration, not a.no_append, command, scenarios, tuple(a.set), systems,  # type: ignore[arg-type]
         a.floor_window)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
