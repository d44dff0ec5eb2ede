"""The web console's page in real headless Chromium (one browser for the whole module),
against a simulated lift run by the real engine: the flow graph, the lift view, a ride in the
list with its chart, the debug sidebar, a live re-deploy, a fleet's lift in the Lifts panel,
and a wrong token.

Screenshots land in build/test-artifacts/; with LES02_UPDATE_SCREENSHOT=1 the ride one also
replaces docs/web-console.png (the README's screenshot).
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import ROOT, RunningFlow, get_json, screenshot, wait_for

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
    start_delay: 1.0
  bus: {{type: can_source, channel: {CHANNEL}, wires: [parse]}}
  parse:
    type: les02_parse
    wires: {{out: [rides]}}
  rides:
    type: ride_detect
    stop_time: 0.5
    sample_period: 0.004
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


def nodes_shown(driver: Any) -> dict[str, Any]:
    return {
        g.get_attribute("data-node"): g
        for g in driver.find_elements("css selector", "#flow g.node")
    }


def test_graph_shows_every_node_and_its_counters_increase(
    page: Any, lift: tuple[RunningFlow, str]
) -> None:
    flow, _ = lift
    expected = set(flow.engine.nodes)
    wait_for(lambda: set(nodes_shown(page)) == expected, "every node in the graph")
    shown = nodes_shown(page)
    assert shown["parse"].get_attribute("data-type") == "les02_parse"
    assert "les02_parse" in shown["parse"].text
    wait_for(lambda: int(nodes_shown(page)["parse"].get_attribute("data-in") or 0) > 0, "counts")
    first = int(nodes_shown(page)["parse"].get_attribute("data-in"))
    wait_for(
        lambda: int(nodes_shown(page)["parse"].get_attribute("data-in")) > first,
        "parse's counter to increase",
    )
    wait_for(lambda: "/s" in nodes_shown(page)["parse"].text, "a rate under the node")
    wires = page.find_elements("css selector", "#flow path.wire:not(.bus)")
    assert len(wires) == sum(
        len(t) for n in flow.engine.flow.nodes.values() for t in n.wires.values()
    )
    status = nodes_shown(page)["bus"].find_element("css selector", "circle.status")
    assert status.get_attribute("data-state") == "ok"


def debug_items(driver: Any) -> list[tuple[str, bool]]:
    """(type, displayed) of every entry in the debug list, read in one go (it changes live)."""
    items: list[list[Any]] = driver.execute_script(
        "return [...document.querySelectorAll('#debug-list li')]"
        ".map(li => [li.dataset.type, li.offsetParent !== null]);"
    )
    return [(str(t), bool(shown)) for t, shown in items]


def test_debug_panel_filters_by_type_and_pauses(page: Any) -> None:
    from selenium.webdriver.support.ui import Select

    wait_for(
        lambda: {"position_sample", "status"} <= {t for t, _ in debug_items(page)},
        "samples and statuses in the debug list",
    )
    select = Select(page.find_element("id", "debug-filter"))
    wait_for(
        lambda: page.find_elements("css selector", '#debug-filter option[value="status"]'),
        "a 'status' filter option",
    )
    select.select_by_value("status")
    wait_for(lambda: {t for t, shown in debug_items(page) if shown} == {"status"}, "only statuses")
    assert any(not shown for _, shown in debug_items(page))  # the others are there, hidden
    # events arriving while filtered stay filtered
    before = page.execute_script("return document.querySelector('#debug-list li').outerHTML;")
    wait_for(
        lambda: (
            page.execute_script("return document.querySelector('#debug-list li').outerHTML;")
            != before
        ),
        "new debug entries",
    )
    assert {t for t, shown in debug_items(page) if shown} <= {"status"}

    pause = page.find_element("id", "debug-pause")
    pause.click()
    assert pause.get_attribute("aria-pressed") == "true"
    first = page.execute_script("return document.querySelector('#debug-list li').outerHTML;")
    wait_for(lambda: "held" in page.find_element("id", "debug-note").text, "events held")
    assert (
        page.execute_script("return document.querySelector('#debug-list li').outerHTML;") == first
    )
    pause.click()
    select.select_by_value("")
    assert all(shown for _, shown in debug_items(page))


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
    tee = nodes_shown(page)["tee"]
    assert tee.get_attribute("data-type") == "debug"
    wait_for(
        lambda: page.find_elements("css selector", '#flow path.wire[data-to="tee"]'), "its wire"
    )
    screenshot(page, "web-console-redeploy")


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
    row = page.find_element("css selector", row_css)
    assert ride["direction"] in row.text
    assert f"{round(ride['distance_mm']):,} mm" in row.text
    stored = get_json(port, f"/api/rides/{ride['ride_id']}/samples")["samples"]
    assert len(stored) > 100
    row.click()
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
        path = screenshot(page, "web-console")
    finally:
        page.set_window_size(size["width"], size["height"])
    if os.environ.get("LES02_UPDATE_SCREENSHOT"):
        shutil.copy(path, ROOT / "docs" / "web-console.png")


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
            rows = page.find_elements("css selector", "#lifts-body tr[data-source='lift-7']")
            return bool(rows) and rows[0].get_attribute("data-state") == state

        wait_for(row_state, f"the Lifts panel to show lift-7 {state}")
    assert card.is_displayed()
    row = page.find_element("css selector", "#lifts-body tr[data-source='lift-7']")
    assert row.get_attribute("data-site") == "hq" and "offline" in row.text


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
