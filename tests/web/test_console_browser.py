"""The web console's page in real headless Chromium (one browser for the whole module),
against a simulated lift run by the real engine: the flow graph, the lift view, a ride in the
list with its chart, the debug sidebar, a live re-deploy, a fleet's lift in the Lifts panel,
and a wrong token.

Screenshots land in build/test-artifacts/ (never in docs/: the README's docs/web-console.png
shows flows/default.yaml and is made by `make screenshot`, tests/web/screenshot.py).
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Iterator
from typing import Any

import can
import pytest

from les02_flow.nodes.les02.elevator import STATUS_MASTER_ID, encode_status

from .conftest import RunningFlow, get_json, screenshot, wait_for

CHANNEL = f"browser{os.getpid()}"

FLOW = f"""\
version: 1
name: browser-test
nodes:
  sim:
    type: les02_sim
    channel: {CHANNEL}
    floors_mm: [0, 1500, 3000]
    a_max: 1.6
    j_max: 4.0
    dwell_min: 0.9
    dwell_max: 1.2
    trips: 2
    seed: 7
  bus: {{type: can_source, channel: {CHANNEL}, wires: [parse]}}
  parse:
    type: les02_parse
    wires: {{out: [rides]}}
  rides:
    type: ride_detect
    stop_time: 0.5
    wires: [store, console, last]
  store: {{type: ride_store, path: "{{DB}}"}}
  console:
    type: web_console
    host: 127.0.0.1
    port: 0
    store: store
    history: 20
  last: {{type: last_events}}
"""


@pytest.fixture(scope="module")
def lift(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningFlow, str]]:
    db = tmp_path_factory.mktemp("browser") / "rides.sqlite"
    text = FLOW.replace("{DB}", str(db))
    flow = RunningFlow(text).start()
    try:
        yield flow, text
    finally:
        flow.stop()


@pytest.fixture(scope="module")
def page(browser: Any, lift: tuple[RunningFlow, str]) -> Any:
    flow, _ = lift
    browser.get(f"http://127.0.0.1:{flow.node('console').port}/")
    wait_for(
        lambda: browser.find_element("id", "conn").get_attribute("data-state") == "live", "live"
    )
    return browser


def nodes_shown(driver: Any) -> dict[str, dict[str, str]]:
    """Every node in the graph: its ``data-*`` attributes, the text under it (``text``) and its
    status dot's state (``status``), read in one go: the page redraws the graph (hello, a
    re-deploy, the graph fetched again), so an element found a moment ago may be gone."""
    nodes: dict[str, dict[str, str]] = driver.execute_script(
        "const out = {};"
        "for (const g of document.querySelectorAll('#flow g.node')) {"
        "  const d = Object.assign({}, g.dataset);"
        "  d.text = [...g.querySelectorAll('text')].map(t => t.textContent).join(' ');"
        "  const dot = g.querySelector('circle.status');"
        "  d.status = dot ? dot.getAttribute('data-state') || '' : '';"
        "  out[g.dataset.node] = d;"
        "}"
        "return out;"
    )
    return nodes


def test_graph_shows_every_node_and_its_counters_increase(
    page: Any, lift: tuple[RunningFlow, str]
) -> None:
    flow, _ = lift
    expected = set(flow.engine.nodes)
    wait_for(lambda: set(nodes_shown(page)) == expected, "every node in the graph")
    shown = nodes_shown(page)
    assert shown["parse"]["type"] == "les02_parse"
    assert "les02_parse" in shown["parse"]["text"]
    wait_for(lambda: int(nodes_shown(page)["parse"].get("in") or 0) > 0, "counts")
    first = int(nodes_shown(page)["parse"]["in"])
    # status frames from here too, on the same virtual bus: the simulated lift (a few seconds)
    # may have finished before a loaded machine got the page this far
    with can.Bus(interface="virtual", channel=CHANNEL) as bus:
        sequence = itertools.count(1000)

        def risen() -> bool:
            status = encode_status(next(sequence))
            bus.send(
                can.Message(arbitration_id=STATUS_MASTER_ID, data=status, is_extended_id=False)
            )
            return int(nodes_shown(page)["parse"].get("in") or 0) > first

        wait_for(risen, "parse's counter to increase")
    wait_for(lambda: "/s" in nodes_shown(page)["parse"]["text"], "a rate under the node")
    wires = page.find_elements("css selector", "#flow path.wire:not(.bus)")
    assert len(wires) == sum(
        len(t) for n in flow.engine.flow.nodes.values() for t in n.wires.values()
    )
    assert nodes_shown(page)["bus"]["status"] == "ok"


def debug_items(driver: Any) -> list[tuple[str, bool, str]]:
    """(type, displayed, payload text) of every entry in the debug list, read in one go (it
    changes live)."""
    items: list[list[Any]] = driver.execute_script(
        "return [...document.querySelectorAll('#debug-list li')]"
        ".map(li => [li.dataset.type, li.offsetParent !== null,"
        " (li.querySelector('code') || {}).textContent || '']);"
    )
    return [(str(t), bool(shown), str(text)) for t, shown, text in items]


def inject(flow: RunningFlow, type_: str, mark: str) -> None:
    """Hand the console one event (as its wire would), marked so the page's entry is found."""
    ev = {"proto": 1, "type": type_, "ts": 1_737_000_000.0, "source": "", "payload": {"mark": mark}}
    flow.on_loop(functools.partial(flow.node("console").consume, ev))


def shown_mark(driver: Any, mark: str) -> bool | None:
    """Whether the debug entry carrying ``mark`` is displayed; ``None`` while it is not there."""
    for _, shown, text in debug_items(driver):
        if f'"{mark}"' in text:
            return shown
    return None


def test_debug_panel_filters_by_type_and_pauses(page: Any, lift: tuple[RunningFlow, str]) -> None:
    from selenium.webdriver.support.ui import Select

    flow, _ = lift
    wait_for(
        lambda: {"position_sample", "status"} <= {t for t, _, _ in debug_items(page)},
        "samples and statuses in the debug list",
    )
    select = Select(page.find_element("id", "debug-filter"))
    wait_for(
        lambda: page.find_elements("css selector", '#debug-filter option[value="status"]'),
        "a 'status' filter option",
    )
    select.select_by_value("status")
    wait_for(
        lambda: {t for t, shown, _ in debug_items(page) if shown} == {"status"}, "only statuses"
    )
    assert any(not shown for _, shown, _ in debug_items(page))  # the others are there, hidden
    # events arriving while filtered stay filtered (handed to the console here: the simulated
    # lift may have finished by now)
    inject(flow, "status", "probe-status")
    inject(flow, "test_probe", "probe-other")
    wait_for(lambda: shown_mark(page, "probe-other") is not None, "the new debug entries")
    assert shown_mark(page, "probe-other") is False
    assert shown_mark(page, "probe-status") is True
    assert {t for t, shown, _ in debug_items(page) if shown} <= {"status"}

    pause = page.find_element("id", "debug-pause")
    pause.click()
    assert pause.get_attribute("aria-pressed") == "true"
    first = page.execute_script("return document.querySelector('#debug-list li').outerHTML;")
    inject(flow, "status", "probe-held")
    wait_for(lambda: "held" in page.find_element("id", "debug-note").text, "events held")
    assert (
        page.execute_script("return document.querySelector('#debug-list li').outerHTML;") == first
    )
    assert shown_mark(page, "probe-held") is None
    pause.click()
    wait_for(lambda: shown_mark(page, "probe-held") is True, "the held entry after resuming")
    select.select_by_value("")
    assert all(shown for _, shown, _ in debug_items(page))


def test_redeploy_that_adds_a_node_shows_it_without_reload(
    page: Any, lift: tuple[RunningFlow, str]
) -> None:
    flow, text = lift
    page.execute_script("window.__notReloaded = true;")
    edited = text.replace("wires: [store, console, last]", "wires: [store, console, last, tee]")
    edited += "  tee: {type: debug, rate_limit: 1}\n"
    result = flow.apply(edited)
    assert result.added == ["tee"] and "console" in result.kept
    wait_for(lambda: "tee" in nodes_shown(page), "the added node on the page")
    assert page.execute_script("return window.__notReloaded === true;")
    assert nodes_shown(page)["tee"]["type"] == "debug"
    wait_for(
        lambda: page.find_elements("css selector", '#flow path.wire[data-to="tee"]'), "its wire"
    )
    screenshot(page, "web-console-redeploy")


def click(driver: Any, css: str) -> bool:
    """Click the element ``css`` finds; ``False`` when it was replaced meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        driver.find_element("css selector", css).click()
    except StaleElementReferenceException:
        return False
    return True


def test_a_simulated_trip_appears_with_its_chart(page: Any, lift: tuple[RunningFlow, str]) -> None:
    flow, _ = lift
    last = flow.node("last")
    ride = wait_for(
        lambda: last.ride_ends and last.ride_ends[0]["payload"], f"a ride ({sorted(last.last)})", 40
    )
    port = flow.node("console").port
    row_css = f'#rides-body tr[data-ride="{ride["ride_id"]}"]'
    # listed at once from the live ride_end, then (with download links) from the store
    wait_for(lambda: page.find_elements("css selector", row_css), "the ride in the list")
    links = wait_for(
        lambda: page.execute_script(
            "return [...document.querySelectorAll(arguments[0] + ' a')].map(a => a.href);",
            row_css,
        ),
        "the stored ride's download links",
    )
    assert [h.rsplit("/", 1)[1] for h in links] == ["export.csv", "export.json"]
    # the list is redrawn when the next ride ends or the store answers: read the row in one go
    # and click a fresh one (again if it was replaced under the click)
    row_text = page.execute_script(
        "return document.querySelector(arguments[0]).innerText;", row_css
    )
    assert ride["direction"] in row_text
    assert f"{round(ride['distance_mm']):,} mm" in row_text
    stored = get_json(port, f"/api/rides/{ride['ride_id']}/samples")["samples"]
    assert len(stored) > 100
    wait_for(lambda: click(page, row_css), "a click on the ride's row")
    chart = page.find_element("id", "ride-chart")
    wait_for(lambda: chart.get_attribute("data-ride") == ride["ride_id"], "the ride's chart")
    assert int(chart.get_attribute("data-samples")) == len(stored)
    # the chart is drawn: the canvas has non-background pixels
    painted = page.execute_script(
        "const c = document.getElementById('ride-chart');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 200) n++; return n;"
    )
    assert painted > 200
    size = page.get_window_size()
    page.set_window_size(1600, 1660)  # the whole page, for the README
    try:
        screenshot(page, "web-console")
    finally:
        page.set_window_size(size["width"], size["height"])


def test_lift_view_shows_the_last_position_sample(page: Any, lift: tuple[RunningFlow, str]) -> None:
    flow, _ = lift
    view = flow.engine.view
    wait_for(lambda: flow.on_loop(view.statuses)["sim"]["finished"], "the simulated trips", 40)
    last = flow.node("last")
    for channel in ("master", "slave"):
        span = page.find_element("id", f"pos-{channel}")

        def same(span: Any = span, channel: str = channel) -> bool:
            # the car stands: many samples carry the same position, so compare the time too
            sample = last.last[("position_sample", channel)]
            raw = span.get_attribute("data-raw")
            ts = float(span.get_attribute("data-ts") or 0)
            return bool(
                raw == str(sample["payload"]["position_raw"]) and abs(ts - sample["ts"]) < 1e-6
            )

        wait_for(same, f"the page's {channel} position to be the last sample")
        sample = last.last[("position_sample", channel)]
        assert span.get_attribute("data-raw") == str(sample["payload"]["position_raw"])
    assert "F" in page.find_element("id", "pos-master").text  # at a floor


def lift_row(driver: Any) -> dict[str, str]:
    """lift-7's row in the Lifts panel (its data-* and text, read in one go), or ``{}``."""
    row: dict[str, str] | None = driver.execute_script(
        "const tr = document.querySelector(\"#lifts-body tr[data-source='lift-7']\");"
        "return tr ? Object.assign({text: tr.innerText}, tr.dataset) : null;"
    )
    return row or {}


def test_lifts_panel_is_hidden_for_one_lift_and_shows_a_fleets_lift(
    page: Any, lift: tuple[RunningFlow, str]
) -> None:
    flow, _ = lift
    card = page.find_element("id", "lifts-card")
    assert not card.is_displayed()  # the single-lift flow's events carry no site
    console = flow.node("console")
    for state in ("online", "offline"):
        ev = {
            "proto": 1,
            "type": "edge_status",
            "ts": 1_737_000_000.0,
            "source": "lift-7",
            "site": "hq",
            "payload": {"state": state},
        }
        flow.on_loop(functools.partial(console.consume, ev))

        def row_state(state: str = state) -> bool:
            return bool(lift_row(page).get("state") == state)

        wait_for(row_state, f"the Lifts panel to show lift-7 {state}")
    assert card.is_displayed()
    row = lift_row(page)
    assert row["site"] == "hq" and "offline" in row["text"]


def test_wrong_token_gets_401(browser: Any) -> None:
    os.environ["BROWSER_TOKEN"] = "right-token"
    try:
        flow = RunningFlow(
            f"""\
            version: 1
            nodes:
              sim: {{type: les02_sim, channel: tok{os.getpid()}}}
              bus: {{type: can_source, channel: tok{os.getpid()}, wires: [parse]}}
              parse: {{type: les02_parse, wires: {{out: [console]}}}}
              console:
                type: web_console
                host: 127.0.0.1
                port: 0
                token_env: BROWSER_TOKEN
            """
        ).start()
    finally:
        os.environ.pop("BROWSER_TOKEN", None)
    try:
        base = f"http://127.0.0.1:{flow.node('console').port}"
        browser.get(f"{base}/?token=wrong")
        wait_for(
            lambda: browser.find_element("id", "conn").get_attribute("data-state") == "error",
            "the page to say the token is wrong",
        )
        assert "missing or wrong token" in browser.find_element("id", "conn").text
        status = browser.execute_async_script(
            "const done = arguments[0];"
            "fetch('/api/flow', {headers: {Authorization: 'Bearer wrong'}})"
            ".then(r => done(r.status));"
        )
        assert status == 401
        assert not nodes_shown(browser)  # no data without the token
        browser.get(f"{base}/?token=right-token")
        wait_for(
            lambda: browser.find_element("id", "conn").get_attribute("data-state") == "live",
            "the page with the right token",
        )
        wait_for(lambda: "parse" in nodes_shown(browser), "the graph")
    finally:
        flow.stop()
