"""The supervisor's board: what it costs to render, and whether open boards slow ingest.

    .venv/bin/python bench/board.py            # 2,000 positions; ingest with 0 and 50 open boards
    .venv/bin/python bench/board.py --quick    # 200 positions, 10 boards (smoke test)

Part 1 (in process): a collector holding N positions, each reported once through the ingest
endpoint; times the hub's full pass over every row, the board page (GET /, logged in) and the
position page. Part 2 (a real ``lifeline-collector serve`` process): P positions report through
``POST /api/v1/ingest`` in turn, each report flipping the position between healthy and degraded
so every request changes a row that the open boards must receive; throughput and latency with no
board open, then with B boards holding the live stream (server-sent events) open and reading it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "collector"))


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered) * 1000:8.1f} {p95 * 1000:8.1f}"


async def render(positions: int, rounds: int) -> list[tuple[str, list[float]]]:
    from lifeline_collector.app import create_app
    from lifeline_collector.config import parse
    from lifeline_collector.store import Store
    from lifeline_lab.boardfeed import PASSWORD, judgement
    from lifeline_wire import Batch, Envelope, encode

    workdir = Path(tempfile.mkdtemp(prefix="lifeline-bench-board-"))
    config = parse({"store": {"path": str(workdir / "c.db")}, "heartbeat": {"listen": "127.0.0.1:0"}})
    registry = Store(str(workdir / "c.db"))
    tokens = {
        f"pos-{n:05d}": registry.add_agent(
            f"pos-{n:05d}", site=f"site-{n % 20:02d}", position=str(n), now_ms=0
        )
        for n in range(positions)
    }
    registry.close()
    app = create_app(config, ticker=False)
    async with app.router.lifespan_context(app):
        service = app.state.collector
        service.tick()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://collector") as http:
            now_ms = int(time.time() * 1000)
            for n, (agent, token) in enumerate(tokens.items()):
                kw = (
                    {"layers": {"internet": "degraded"}, "verdict": ("internet", "losing packets")}
                    if n % 7 == 0
                    else {}
                )
                batch = Batch(
                    agent_id=agent, boot_id="b", seq=1, created_ms=now_ms, samples=judgement(now_ms, **kw)
                )  # type: ignore[arg-type]
                answer = await http.post(
                    "/api/v1/ingest",
                    content=encode(Envelope(version=1, batches=[batch], sent_ms=now_ms)),
                    headers={"Authorization": f"Bearer {token}"},
                )
                answer.raise_for_status()
            app.state.accounts.add("bench", "viewer", PASSWORD, by="bench", address="bench")
            form = await http.get("/login")
            csrf = form.text.split('name="csrf" value="')[1].split('"')[0]
            await http.post("/login", data={"name": "bench", "password": PASSWORD, "csrf": csrf, "next": "/"})
            hub = app.state.board.hub
            first, full, clock_pass, page, position = [], [], [], [], []
            for _ in range(rounds):
                hub.rows.clear()  # every row computed and rendered, as at the collector's start
                start = time.perf_counter()
                hub.refresh_all()
                first.append(time.perf_counter() - start)
                start = time.perf_counter()
                hub.refresh_all()  # every row computed again, none changed (every 10 s)
                full.append(time.perf_counter() - start)
                start = time.perf_counter()
                hub._refresh(hub._clock_due())  # what the clock may have changed (every second)
                clock_pass.append(time.perf_counter() - start)
                start = time.perf_counter()
                answer = await http.get("/", headers={"Accept": "text/html"})
                page.append(time.perf_counter() - start)
                assert answer.status_code == 200
                assert answer.text.count("<tr id=") == positions
                start = time.perf_counter()
                answer = await http.get("/positions/pos-00007", headers={"Accept": "text/html"})
                position.append(time.perf_counter() - start)
                assert answer.status_code == 200
            size = len(answer.content)
    del size
    return [
        (f"hub first pass: {positions} rows computed, rendered", first),
        (f"hub full pass: {positions} rows, none changed", full),
        ("hub clock pass (every second)", clock_pass),
        (f"GET / (board page, {positions} positions)", page),
        ("GET /positions/{id} (position page)", position),
    ]


def _ingest_run(url: str, tokens: dict[str, str], seconds: float) -> tuple[int, list[float]]:
    from lifeline_lab.boardfeed import judgement
    from lifeline_wire import Batch, Envelope, encode

    latencies: list[float] = []
    seq = dict.fromkeys(tokens, 0)
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=10) as http:
        while time.monotonic() < deadline:
            for agent, token in tokens.items():
                seq[agent] += 1
                now_ms = int(time.time() * 1000)
                bad = seq[agent] % 2 == 0  # every report changes the row: the boards must hear it
                kw = (
                    {"layers": {"internet": "degraded"}, "verdict": ("internet", "losing packets")}
                    if bad
                    else {}
                )
                batch = Batch(
                    agent_id=agent,
                    boot_id="b",
                    seq=seq[agent],
                    created_ms=now_ms,
                    samples=judgement(now_ms, **kw),
                )  # type: ignore[arg-type]
                body = encode(Envelope(version=1, batches=[batch], sent_ms=now_ms))
                start = time.perf_counter()
                http.post(
                    "/api/v1/ingest", content=body, headers={"Authorization": f"Bearer {token}"}
                ).raise_for_status()
                latencies.append(time.perf_counter() - start)
                if time.monotonic() >= deadline:
                    break
    return len(latencies), latencies


def _board(url: str, cookie: str, stop: threading.Event, counts: list[int], index: int) -> None:
    http = httpx.Client(base_url=url, timeout=None, cookies={"lifeline_session": cookie})  # noqa: S113
    with http, http.stream("GET", "/board/events?v=0") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: rows"):
                counts[index] += 1
            if stop.is_set():
                return


def ingest_with_boards(
    positions: int, boards: int, seconds: float
) -> list[tuple[str, int, float, list[float], int]]:
    from lifeline_lab.boardfeed import PASSWORD, BoardScene

    out = []
    with tempfile.TemporaryDirectory(prefix="lifeline-bench-sse-") as workdir:
        scene = BoardScene(Path(workdir))
        scene.write_config()
        scene.add_user("bench", "viewer")
        for n in range(positions):
            scene.add_position(f"pos-{n:04d}", f"site-{n % 5}", str(n))
        scene.start()
        try:
            tokens = {agent: p.token for agent, p in scene.positions.items()}
            with httpx.Client(base_url=scene.url) as http:
                form = http.get("/login")
                csrf = form.text.split('name="csrf" value="')[1].split('"')[0]
                http.post("/login", data={"name": "bench", "password": PASSWORD, "csrf": csrf, "next": "/"})
                cookie = http.cookies["lifeline_session"]
            _ingest_run(scene.url, tokens, 2.0)  # warm up
            for open_boards in (0, boards):
                stop = threading.Event()
                counts = [0] * open_boards
                threads = [
                    threading.Thread(target=_board, args=(scene.url, cookie, stop, counts, i), daemon=True)
                    for i in range(open_boards)
                ]
                for thread in threads:
                    thread.start()
                time.sleep(1.0)
                requests, latencies = _ingest_run(scene.url, tokens, seconds)
                stop.set()
                received = min(counts) if counts else 0
                out.append((f"{open_boards} open boards", requests, requests / seconds, latencies, received))
                time.sleep(1.5)  # the next message ends each stream's reader
        finally:
            scene.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    positions, boards, seconds, rounds = (200, 10, 5.0, 3) if args.quick else (2000, 50, 20.0, 5)

    rows = asyncio.run(render(positions, rounds))
    print(f"Board rendering, {rounds} rounds (in process, one core)\n")
    print(f"{'what':52} {'median ms':>9} {'p95 ms':>8}")
    for what, values in rows:
        print(f"{what:52} {_ms(values)}")

    print(f"\nIngest with open boards: {min(positions, 200)} positions reporting in turn for {seconds:g} s,")
    print("every report changing its row (a real collector process; client on the same 2 cores)\n")
    print(
        f"{'':16} {'requests':>9} {'req/s':>8} {'median ms':>9} {'p95 ms':>8} {'messages each board got':>24}"
    )
    for what, requests, rate, latencies, received in ingest_with_boards(min(positions, 200), boards, seconds):
        print(f"{what:16} {requests:9d} {rate:8.1f} {_ms(latencies)} {received if received else '—':>24}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
