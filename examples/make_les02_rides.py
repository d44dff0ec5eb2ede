"""Write ``les02-rides.log``: the small recording ``flows/default_test.yaml`` replays.

About 15 seconds of LES02 traffic made by the project's own elevator model
(:class:`les02_flow.nodes.les02.elevator.ElevatorSim`, seed 4): a ride up from floor 0 to
1,500 mm, a 12 mm re-levelling, a ride back down; plus what goes wrong on a real bus:

* a **dropout**: 60 ms of master position frames missing in the middle of the second ride;
* two **invalid frames**: an unknown id ``0x123`` and a master position frame with DLC 2.

Run it again to re-create the file byte for byte (``tests/e2e/test_flow_tests_cli.py`` checks
that it does)::

    .venv/bin/python examples/make_les02_rides.py
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import can

from les02_flow.nodes.les02.elevator import ElevatorParams, ElevatorSim
from les02_flow.nodes.recording.formats import detect_format, open_writer

OUT = Path(__file__).with_name("les02-rides.log")
#: 2026-01-01 00:00:00 UTC: recordings carry epoch timestamps
T0 = 1767225600.0
PARAMS = ElevatorParams(
    floors_mm=(0.0, 1500.0, 1512.0),
    start_floor=0,
    v_max=1.0,
    dwell_min=2.6,
    dwell_max=2.8,
    trips=3,
    seed=4,
)
#: master position frames dropped (run time, seconds): inside the second ride
DROPOUT = (None, 0.060)
INVALID = [
    (1.5005, 0x123, bytes.fromhex("DEADBEEF00000000")),  # unknown id
    (3.0007, 0x080, bytes.fromhex("0001")),  # a position frame with DLC 2
]


def frames() -> Iterator[can.Message]:
    sim = ElevatorSim(PARAMS)
    trips = list(sim.schedule())
    assert [abs(t.to_mm - t.from_mm) for t in trips] == [1500.0, 12.0, 1512.0], trips
    last = trips[2]
    gap_start = (last.start_t + last.end_t) / 2
    gap_end = gap_start + (DROPOUT[1] or 0.0)
    invalid = sorted(INVALID)
    for f in sim.frames():
        while invalid and invalid[0][0] <= f.t:
            t, can_id, data = invalid.pop(0)
            yield can.Message(
                timestamp=T0 + t,
                arbitration_id=can_id,
                data=data,
                is_extended_id=False,
                channel="can0",
            )
        if f.can_id == 0x80 and gap_start <= f.t < gap_end:
            continue
        yield can.Message(
            timestamp=T0 + f.t,
            arbitration_id=f.can_id,
            data=f.data,
            is_extended_id=False,
            channel="can0",
        )


def write(path: Path = OUT) -> int:
    """(Re)write the recording; returns the number of frames."""
    path.unlink(missing_ok=True)
    batch = list(frames())
    writer = open_writer(str(path), detect_format(str(path)))
    try:
        writer.write(batch)
    finally:
        writer.close()
    return len(batch)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    n = write(target)
    print(f"wrote {target}: {n} frames")
