"""The UDS traffic generator, checked by an independent ISO-TP reassembler and UDS decoder.

The reassembler below is written from ISO 15765-2 and ISO 14229 directly; it does not use
``les02_flow.nodes.uds.isotp``. ``tests/e2e/test_uds_sim_cli.py`` loads this file to check the
stream the CLI serves over TCP with the same decoder.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pytest

from les02_flow.nodes.uds.generator import Frame, UdsSimParams, UdsTrafficGenerator

# -- an independent ISO-TP reassembler --------------------------------------------------------


class IsoTpError(AssertionError):
    """The stream breaks ISO-TP; the message says at which frame and why."""


@dataclass
class Message:
    """One reassembled ISO-TP message."""

    can_id: int
    payload: bytes
    t_first: int  # µs of its first frame
    t_last: int  # µs of its last frame


@dataclass
class _Rx:
    """A multi-frame message in progress, seen from its receiver."""

    length: int
    data: bytearray
    t_first: int
    next_sn: int = 1
    awaiting_fc: bool = True
    block_size: int = 0
    st_min_us: int = 0
    in_block: int = 0
    last_t: int = 0


@dataclass
class StreamStats:
    """What the reassembler saw (so tests can check the interesting cases happened)."""

    flow_controls: list[tuple[int, int, int]] = field(default_factory=list)  # (status, bs, st)
    first_frames: int = 0
    consecutive_frames: int = 0
    padding: set[int] = field(default_factory=set)


def decode_st_min(raw: int) -> int:
    """STmin byte -> µs (ISO 15765-2: 0..127 ms, 0xF1..0xF9 = 100..900 µs, else 127 ms)."""
    if raw <= 0x7F:
        return raw * 1000
    if 0xF1 <= raw <= 0xF9:
        return (raw - 0xF0) * 100
    return 127_000


def reassemble(
    frames: Iterable[tuple[int, int, bytes]],
    tester_id: int = 0x7E0,
    ecu_id: int = 0x7E8,
    functional_id: int = 0x7DF,
    stats: StreamStats | None = None,
) -> list[Message]:
    """``(t_us, can_id, data)`` frames -> messages; raises :class:`IsoTpError` on a violation.

    Checks: 8-byte frames; only the three ids; the functional id carries single frames only;
    single-frame lengths 1..7; first-frame lengths 8..4095 and exactly as many bytes delivered
    (a surplus CF or a new message before the last CF is an error); consecutive frames only
    after a flow control CTS from the receiver *on the receiver's id*, sequence numbers
    1..15, 0, ..; no more CFs per block than the block size, then a new flow control; every CF
    at least STmin after the previous frame of the transfer; padding bytes all equal;
    timestamps strictly increasing.
    """
    stats = stats if stats is not None else StreamStats()
    peer = {tester_id: ecu_id, ecu_id: tester_id}
    rx: dict[int, _Rx] = {}  # sender id -> message in progress
    out: list[Message] = []
    last_t = -1

    def fail(i: int, t: int, can_id: int, data: bytes, why: str) -> IsoTpError:
        return IsoTpError(f"frame {i} at {t} µs id 0x{can_id:03X} {data.hex()}: {why}")

    def check_pad(i: int, t: int, can_id: int, data: bytes, used: int) -> None:
        rest = set(data[used:])
        if len(rest) > 1:
            raise fail(i, t, can_id, data, f"padding bytes differ: {data[used:].hex()}")
        stats.padding.update(rest)

    for i, (t, can_id, data) in enumerate(frames):
        data = bytes(data)
        if t <= last_t:
            raise fail(i, t, can_id, data, f"time does not increase (previous {last_t})")
        last_t = t
        if len(data) != 8:
            raise fail(i, t, can_id, data, "not 8 bytes (ISO-TP frames are padded)")
        if can_id not in (tester_id, ecu_id, functional_id):
            raise fail(i, t, can_id, data, "unexpected id")
        kind, low = data[0] >> 4, data[0] & 0x0F
        if can_id == functional_id:
            if kind != 0:
                raise fail(i, t, can_id, data, "functional requests must be single frames")
            if not 1 <= low <= 7:
                raise fail(i, t, can_id, data, f"bad single-frame length {low}")
            check_pad(i, t, can_id, data, 1 + low)
            out.append(Message(can_id, data[1 : 1 + low], t, t))
            continue
        if kind in (0, 1) and can_id in rx:
            raise fail(i, t, can_id, data, "new message before the last one was complete")
        if kind == 0:
            if not 1 <= low <= 7:
                raise fail(i, t, can_id, data, f"bad single-frame length {low}")
            check_pad(i, t, can_id, data, 1 + low)
            out.append(Message(can_id, data[1 : 1 + low], t, t))
        elif kind == 1:
            length = (low << 8) | data[1]
            if length < 8:
                raise fail(i, t, can_id, data, f"first frame announces only {length} bytes")
            stats.first_frames += 1
            rx[can_id] = _Rx(length, bytearray(data[2:8]), t, last_t=t)
        elif kind == 2:
            cur = rx.get(can_id)
            if cur is None:
                raise fail(i, t, can_id, data, "consecutive frame without a first frame")
            if cur.awaiting_fc:
                raise fail(i, t, can_id, data, "consecutive frame before the flow control")
            if low != cur.next_sn:
                raise fail(i, t, can_id, data, f"sequence number {low}, expected {cur.next_sn}")
            if t - cur.last_t < cur.st_min_us:
                raise fail(
                    i,
                    t,
                    can_id,
                    data,
                    f"only {t - cur.last_t} µs after the previous frame, "
                    f"STmin is {cur.st_min_us} µs",
                )
            stats.consecutive_frames += 1
            cur.next_sn = (cur.next_sn + 1) & 0x0F
            cur.last_t = t
            need = cur.length - len(cur.data)
            cur.data += data[1 : 1 + min(7, need)]
            if len(cur.data) == cur.length:
                check_pad(i, t, can_id, data, 1 + need)
                out.append(Message(can_id, bytes(cur.data), cur.t_first, t))
                del rx[can_id]
                continue
            cur.in_block += 1
            if cur.block_size and cur.in_block == cur.block_size:
                cur.awaiting_fc = True
        elif kind == 3:
            sender = peer[can_id]
            cur = rx.get(sender)
            if cur is None or not cur.awaiting_fc:
                raise fail(i, t, can_id, data, "flow control nobody waits for (wrong id?)")
            if low not in (0, 1):
                raise fail(i, t, can_id, data, f"flow status {low} (overflow or reserved)")
            check_pad(i, t, can_id, data, 3)
            stats.flow_controls.append((low, data[1], data[2]))
            cur.last_t = t
            if low == 0:
                cur.awaiting_fc = False
                cur.block_size = data[1]
                cur.st_min_us = decode_st_min(data[2])
                cur.in_block = 0
        else:
            raise fail(i, t, can_id, data, f"unknown frame type {kind}")
    if rx:
        raise IsoTpError(f"stream ends inside multi-frame messages from {sorted(rx)}")
    return out


# -- an independent UDS / OBD-II transaction decoder -------------------------------------------


@dataclass
class Transaction:
    request: Message
    pending: int  # response-pending NRCs (0x78) before the final answer
    final: bytes

    @property
    def sid(self) -> int:
        return self.request.payload[0]

    @property
    def positive(self) -> bool:
        return self.final[0] == self.sid + 0x40

    @property
    def nrc(self) -> int | None:
        return None if self.positive else self.final[2]


# services whose positive response echoes the sub-function / identifier bytes
_ECHO = {0x10: 1, 0x11: 1, 0x19: 1, 0x27: 1, 0x28: 1, 0x3E: 1, 0x85: 1, 0x31: 3, 0x22: 2,
         0x2E: 2, 0x36: 1, 0x01: 1, 0x09: 1}  # fmt: skip


def transactions(messages: Sequence[Message], ecu_id: int = 0x7E8) -> list[Transaction]:
    """Pair requests with their answers; raises AssertionError on anything unanswered, an
    answer without a request, a wrong service id or a missing echo."""
    out: list[Transaction] = []
    open_req: Message | None = None
    pending = 0
    for m in messages:
        if m.can_id != ecu_id:
            assert open_req is None, f"request {m.payload.hex()} while {open_req} is unanswered"
            open_req, pending = m, 0
            continue
        assert open_req is not None, f"response {m.payload.hex()} without a request"
        sid = open_req.payload[0]
        p = m.payload
        if p[0] == 0x7F:
            assert len(p) == 3, f"negative response of {len(p)} bytes: {p.hex()}"
            assert p[1] == sid, f"NRC for service {p[1]:#x}, request was {sid:#x}"
            if p[2] == 0x78:
                pending += 1
                continue
        else:
            assert p[0] == sid + 0x40, f"response {p.hex()} to request {open_req.payload.hex()}"
            n = _ECHO.get(sid, 0)
            assert p[1 : 1 + n] == open_req.payload[1 : 1 + n], (
                f"response {p.hex()} does not echo request {open_req.payload.hex()}"
            )
        out.append(Transaction(open_req, pending, p))
        open_req = None
    assert open_req is None, f"last request {open_req} unanswered"
    return out


def check_stream(
    frames: Iterable[tuple[int, int, bytes]],
    tester_id: int = 0x7E0,
    ecu_id: int = 0x7E8,
    functional_id: int = 0x7DF,
    stats: StreamStats | None = None,
) -> list[Transaction]:
    """Reassemble and pair; every check of both layers applies."""
    msgs = reassemble(frames, tester_id, ecu_id, functional_id, stats)
    for m in msgs:  # functional requests are answered by the ECU; physical ones from the tester
        assert m.can_id in (tester_id, ecu_id, functional_id)
    return transactions(msgs, ecu_id)


def as_tuples(frames: Iterable[Frame]) -> list[tuple[int, int, bytes]]:
    return [(f.t_us, f.can_id, f.data) for f in frames]


def generate(seed: int, sessions: int = 1, **params: int) -> list[Frame]:
    return list(UdsTrafficGenerator(UdsSimParams(seed=seed, **params)).frames(sessions))


Mutation = Callable[[list[tuple[int, int, bytes]], int], list[tuple[int, int, bytes]]]


# -- tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_stream_is_valid_isotp_and_every_request_is_answered(seed: int) -> None:
    stats = StreamStats()
    txs = check_stream(as_tuples(generate(seed, sessions=2)), stats=stats)
    assert stats.padding == {0xAA}
    assert stats.first_frames > 10 and stats.consecutive_frames > 100
    sids = {tx.sid for tx in txs}
    # the whole reprogramming sequence and the OBD-II polling are there
    assert {0x10, 0x22, 0x19, 0x31, 0x85, 0x28, 0x27, 0x2E, 0x34, 0x36, 0x37, 0x11, 0x14} <= sids
    assert {0x01, 0x22} <= sids
    for tx in txs:
        assert tx.final[0] in (tx.sid + 0x40, 0x7F)


def test_the_session_runs_in_order_with_the_expected_content() -> None:
    txs = check_stream(as_tuples(generate(11, transfer_blocks=5)))
    physical = [tx for tx in txs if tx.request.can_id == 0x7E0]
    functional = [tx for tx in txs if tx.request.can_id == 0x7DF]
    # OBD-II polling first, then the UDS session
    assert txs[0].request.can_id == 0x7DF and txs[0].request.payload == b"\x01\x00"
    assert max(tx.request.t_first for tx in functional) < physical[0].request.t_first
    assert all(tx.positive for tx in functional)
    for tx in functional:
        if tx.sid == 0x01:
            assert tx.final[:2] == bytes([0x41, tx.request.payload[1]])
    order = [tx.request.payload[:2].hex() for tx in physical if tx.positive]
    assert order[0] == "1003"
    steps = ["1003", "22f1", "1902", "3101", "8502", "2803", "1002", "2701", "2702", "2ef1",
             "3101", "3400", "3601", "37", "3101", "1101", "1001", "14ff", "1902",
             "22f1"]  # fmt: skip
    pos = 0
    for step in steps:  # each step appears, in this order
        pos = order.index(step, pos) + 1
    vin = next(tx for tx in physical if tx.request.payload == b"\x22\xf1\x90")
    assert vin.positive and len(vin.final) == 3 + 17
    assert vin.final[3:].isalnum()
    assert vin.request.can_id == 0x7E0
    # erase memory keeps the tester waiting with several response-pending NRCs
    erase = next(tx for tx in physical if tx.request.payload[:4] == b"\x31\x01\xff\x00")
    assert erase.pending >= 2 and erase.positive


def test_response_pending_is_always_followed_by_a_final_answer() -> None:
    total_pending = 0
    for seed in range(20, 26):
        frames = generate(seed, transfer_blocks=30)
        txs = check_stream(as_tuples(frames))  # raises on a pending without a final answer
        total_pending += sum(tx.pending for tx in txs)
        for tx in txs:
            assert tx.final[:3] != bytes([0x7F, tx.sid, 0x78])
    assert total_pending >= 6 * 2


def test_pending_without_final_answer_is_detected() -> None:
    msgs = [Message(0x7E0, b"\x31\x01\xff\x00", 0, 0), Message(0x7E8, b"\x7f\x31\x78", 1, 1)]
    with pytest.raises(AssertionError, match="unanswered"):
        transactions(msgs)
    wrong_sid = [Message(0x7E0, b"\x10\x03", 0, 0), Message(0x7E8, b"\x51\x03", 1, 1)]
    with pytest.raises(AssertionError, match="response 5103"):
        transactions(wrong_sid)


def test_transfer_block_counters_run_1_to_255_and_wrap_to_0() -> None:
    blocks = 300
    txs = check_stream(as_tuples(generate(5, transfer_blocks=blocks)))
    download = next(tx for tx in txs if tx.sid == 0x34)
    size = int.from_bytes(download.request.payload[7:11], "big")
    max_len = int.from_bytes(download.final[2:4], "big")
    assert download.final[1] == 0x20  # two bytes of maxNumberOfBlockLength
    transfers = [tx for tx in txs if tx.sid == 0x36]
    accepted = [tx.request.payload[1] for tx in transfers if tx.positive]
    assert accepted == [(i + 1) & 0xFF for i in range(blocks)]
    assert accepted[254:257] == [255, 0, 1]
    for a, b in itertools.pairwise(transfers):
        if not a.positive:  # a rejected block is sent again with the same counter and data
            assert a.nrc in (0x71, 0x72, 0x73)
            assert b.request.payload == a.request.payload
    assert sum(len(tx.request.payload) - 2 for tx in transfers if tx.positive) == size
    assert all(len(tx.request.payload) <= max_len for tx in transfers)


def test_negative_responses_and_retries_happen_across_seeds() -> None:
    nrcs: dict[tuple[int, int], int] = {}
    for seed in range(30, 42):
        txs = check_stream(as_tuples(generate(seed)))
        for i, tx in enumerate(txs):
            if tx.positive:
                continue
            assert tx.nrc is not None
            nrcs[(tx.sid, tx.nrc)] = nrcs.get((tx.sid, tx.nrc), 0) + 1
            nxt = txs[i + 1]
            if tx.nrc == 0x35:  # invalid key: a new seed request, then the right key
                assert nxt.request.payload == b"\x27\x01" and nxt.positive
                assert txs[i + 2].request.payload[:2] == b"\x27\x02" and txs[i + 2].positive
            elif tx.nrc == 0x21:  # busy: the same request again
                assert nxt.request.payload == tx.request.payload
    assert (0x27, 0x35) in nrcs
    assert any(sid == 0x36 and nrc in (0x71, 0x72, 0x73) for sid, nrc in nrcs)
    assert any(nrc == 0x21 for _, nrc in nrcs)


def test_flow_control_block_size_and_st_min_are_exercised() -> None:
    stats = StreamStats()
    for seed in range(50, 60):
        check_stream(as_tuples(generate(seed, transfer_blocks=20)), stats=stats)
    cts = [(bs, st) for status, bs, st in stats.flow_controls if status == 0]
    assert any(bs > 0 for bs, _ in cts), "some flow control uses a block size"
    assert any(decode_st_min(st) >= 1000 for _, st in cts), "some flow control asks for STmin"
    assert any(0xF1 <= st <= 0xF9 for _, st in cts), "a sub-millisecond STmin is used"
    assert any(status == 1 for status, _, _ in stats.flow_controls), "flow control WAIT"


def test_flow_control_goes_to_the_right_id() -> None:
    frames = generate(7, transfer_blocks=4)
    tuples = as_tuples(frames)
    for i, (_t, can_id, data) in enumerate(tuples):
        if data[0] >> 4 == 1:  # a first frame: the next frame is the receiver's flow control
            nxt = tuples[i + 1]
            assert nxt[2][0] >> 4 == 3
            assert nxt[1] == {0x7E0: 0x7E8, 0x7E8: 0x7E0}[can_id]
    # an ECU response to a functional request (mode 09 VIN, mode 03) gets its FC from the tester
    found = [
        tx
        for seed in range(60, 70)
        for tx in check_stream(as_tuples(generate(seed, transfer_blocks=1)))
        if tx.request.can_id == 0x7DF and len(tx.final) > 7
    ]
    assert found, "no multi-frame answer to a functional request in ten sessions"


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda fs, i: fs[:i] + fs[i + 1 :], "sequence number"),
        (lambda fs, i: [*fs[: i + 1], (fs[i][0] + 1, *fs[i][1:]), *fs[i + 1 :]], "sequence number"),
    ],
    ids=["drop-cf", "duplicate-cf"],
)  # fmt: skip
def test_reassembler_catches_broken_streams(mutate: Mutation, error: str) -> None:
    fs = as_tuples(generate(3, transfer_blocks=2))
    i = next(k for k, f in enumerate(fs) if f[2][0] >> 4 == 2 and fs[k + 1][2][0] >> 4 == 2)
    broken = mutate(fs, i)
    with pytest.raises(IsoTpError, match=error):
        reassemble(broken)


def test_reassembler_catches_st_min_and_length_violations() -> None:
    fc = bytes([0x30, 0, 10, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA])  # STmin 10 ms
    ff = bytes([0x10, 0x0A, 0x22, 1, 2, 3, 4, 5])  # announces 10 bytes
    cf = bytes([0x21, 6, 7, 8, 9, 0xAA, 0xAA, 0xAA])  # delivers 4 more: exact
    ok = [(0, 0x7E8, ff), (1000, 0x7E0, fc), (12000, 0x7E8, cf)]
    assert reassemble(ok)[0].payload == bytes([0x22, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    too_soon = [(0, 0x7E8, ff), (1000, 0x7E0, fc), (5000, 0x7E8, cf)]
    with pytest.raises(IsoTpError, match="STmin is 10000"):
        reassemble(too_soon)
    fc_wrong_id = [(0, 0x7E8, ff), (1000, 0x7E8, fc)]
    with pytest.raises(IsoTpError, match="nobody waits"):
        reassemble(fc_wrong_id)
    long_ff = bytes([0x10, 0x14, 0x22, 1, 2, 3, 4, 5])  # announces 20, delivers 10
    with pytest.raises(IsoTpError, match="ends inside"):
        reassemble([(0, 0x7E8, long_ff), (1000, 0x7E0, fc), (12000, 0x7E8, cf)])
    bs1 = bytes([0x30, 1, 0, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA])  # block size 1
    two_cfs = [(0, 0x7E8, long_ff), (1000, 0x7E0, bs1), (2000, 0x7E8, cf),
               (3000, 0x7E8, bytes([0x22]) + bytes(7))]  # fmt: skip
    with pytest.raises(IsoTpError, match="before the flow control"):
        reassemble(two_cfs)


def test_same_seed_same_bytes_and_times() -> None:
    a = generate(99, sessions=2, transfer_blocks=10)
    b = generate(99, sessions=2, transfer_blocks=10)
    assert a == b
    assert generate(100, sessions=2, transfer_blocks=10) != a
    gen = UdsTrafficGenerator(UdsSimParams(transfer_blocks=3))  # unseeded: drawn, then kept
    assert list(gen.frames()) == list(gen.frames())
    assert UdsTrafficGenerator(UdsSimParams(seed=gen.seed, transfer_blocks=3)).seed == gen.seed


def test_frames_are_classic_padded_and_strictly_increasing() -> None:
    frames = generate(12, sessions=2, transfer_blocks=8)
    assert all(len(f.data) == 8 and 0 <= f.can_id <= 0x7FF for f in frames)
    assert all(b.t_us > a.t_us for a, b in itertools.pairwise(frames))
    assert frames[0].t == frames[0].t_us / 1e6


def test_configurable_ids_and_padding() -> None:
    params = dict(tester_id=0x7E2, ecu_id=0x7EA, functional_id=0x7DF, padding=0x55)
    frames = generate(13, transfer_blocks=4, **params)
    assert {f.can_id for f in frames} == {0x7E2, 0x7EA, 0x7DF}
    stats = StreamStats()
    check_stream(as_tuples(frames), 0x7E2, 0x7EA, 0x7DF, stats)
    assert stats.padding == {0x55}


def test_endless_run_is_lazy_and_continues_in_time() -> None:
    gen = UdsTrafficGenerator(UdsSimParams(seed=4, transfer_blocks=2))
    one = list(gen.frames(1))
    many = list(itertools.islice(gen.frames(None), len(one) * 3))
    assert many[: len(one)] == one
    assert all(b.t_us > a.t_us for a, b in itertools.pairwise(many))
    check_stream(as_tuples(list(gen.frames(3))))
    assert list(gen.frames(0)) == []


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"tester_id": 0x800}, "tester_id"),
        ({"ecu_id": 0x7E0}, "must differ"),
        ({"padding": 256}, "padding"),
        ({"transfer_blocks": 0}, "transfer_blocks"),
    ],
)
def test_invalid_params_are_rejected(params: dict[str, int], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        UdsSimParams(**params)
    with pytest.raises(ValueError, match="sessions"):
        list(UdsTrafficGenerator(UdsSimParams()).frames(-1))


def test_sim_config_is_the_params_plus_the_node_fields() -> None:
    from les02_flow.nodes.uds.sim import UdsSimConfig

    config = UdsSimConfig.model_validate(
        {"seed": 3, "tester_id": "0x7E2", "ecu_id": 0x7EA, "transfer_blocks": 2, "loop": False}
    )
    params = config.params()
    assert type(params) is UdsSimParams
    assert params == UdsSimParams(seed=3, tester_id=0x7E2, ecu_id=0x7EA, transfer_blocks=2)
    own = set(UdsSimConfig.model_fields) - set(UdsSimParams.model_fields)
    assert own == {"speed", "loop", "interface", "channel", "bitrate", "start_delay"}
    for name, info in UdsSimParams.model_fields.items():  # one definition: same default, text
        assert UdsSimConfig.model_fields[name].description == info.description
        assert UdsSimConfig.model_fields[name].default == info.default
    with pytest.raises(ValueError, match="must differ"):
        UdsSimConfig(ecu_id=0x7E0)
    with pytest.raises(ValueError, match="interface needs a channel"):
        UdsSimConfig(interface="virtual")
