"""Fuzz a real ``lifeline-collector serve`` process: schemathesis over its OpenAPI document and
hypothesis mutating real agent batches (tests/collector/fuzz_kit.py; the test suite runs a few
hundred of the same cases), ten thousand by default. Prints the answers by status code, the
requests that got no answer, what the collector logged as a failure, and its RSS before and after.
Goal: no 5xx, nothing logged as failed, RSS growth under 20 MB.

The RSS "before" is taken after a warm-up of valid batches, so it holds what normal operation
holds; the alert tick runs in the server as in production (its failures would be logged).

    .venv/bin/python bench/fuzz.py                  # 10,000 cases
    .venv/bin/python bench/fuzz.py --cases 300      # a quick look
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "collector"))

from _common import Proc, free_port, machine, mb, register_agents, table, tool, wait_http
from fuzz_kit import AGENT, Request, mutated_ingest, openapi_cases, real_envelopes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ADMIN_TOKEN = "fuzz-admin-token-0123456789"  # noqa: S105 - a throwaway server's
FAILURE_MARKS = (
    "Traceback",
    "alert evaluation failed",
    "could not be stored",
    " failed for ",
    "Exception in ASGI",
)


def start(workdir: Path, db_path: Path) -> tuple[Proc, str]:
    port = free_port()
    token_file = workdir / "admin.token"
    token_file.write_text(ADMIN_TOKEN)
    config = workdir / "collector.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://127.0.0.1:{port}"\n'
        f'[store]\npath = "{db_path}"\n'
        f'[api]\nadmin_token_file = "{token_file}"\nlockout_after = 1000\n'
        '[auth]\nread_access = "open"\n'
    )
    proc = Proc("collector", [tool("lifeline-collector"), "serve", "--config", str(config)], workdir)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc)
    return proc, url


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="fuzz cases to send (default 10,000)")
    parser.add_argument("--warmup", type=int, default=200, help="valid batches sent before RSS 'before'")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lifeline-fuzz-") as tmp:
        workdir = Path(tmp)
        db_path = workdir / "lifeline.db"
        token = register_agents(db_path, [AGENT])[AGENT]
        proc, url = start(workdir, db_path)
        statuses: Counter[str] = Counter()
        examples: dict[str, Request] = {}
        try:
            with httpx.Client(base_url=url, timeout=30) as client:
                auth = {"Authorization": f"Bearer {token}"}
                for seq in range(0, 2 * args.warmup, 2):
                    for body in real_envelopes(seq):
                        client.post("/api/v1/ingest", content=body, headers=auth)
                time.sleep(1.0)
                before = rss(proc.pid)
                started = time.monotonic()

                @settings(
                    max_examples=min(args.cases, 2000),
                    database=None,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                )
                @given(
                    st.one_of(mutated_ingest(token), mutated_ingest(token), openapi_cases(token, ADMIN_TOKEN))
                )
                def one(request: Request) -> None:
                    if sum(statuses.values()) >= args.cases:
                        return
                    try:
                        answer = client.request(
                            request.method,
                            request.path,
                            content=request.body,
                            headers=request.headers,
                            params=request.query,
                        )
                        key = str(answer.status_code)
                    except httpx.HTTPError as exc:
                        key = f"no answer ({type(exc).__name__})"
                    statuses[key] += 1
                    examples.setdefault(key, request)

                while sum(statuses.values()) < args.cases:
                    one()
                elapsed = time.monotonic() - started
                healthy = client.get("/healthz").status_code
                time.sleep(1.0)
                after = rss(proc.pid)
        finally:
            proc.stop()
        log = proc.log_path.read_text(errors="replace")

    failures = [line for line in log.splitlines() if any(mark in line for mark in FAILURE_MARKS)]
    server_errors = sum(count for code, count in statuses.items() if code.startswith("5"))
    print(f"# Collector fuzz — {machine()}")
    print(
        f"{sum(statuses.values())} cases in {elapsed:.0f} s (schemathesis over the OpenAPI document, and"
        " mutated real agent batches); the alert tick running in the server\n"
    )
    print(table("Answers", ["status", "requests"], sorted(statuses.items())))
    print()
    print(
        table(
            "Outcome",
            [
                "5xx answers",
                "no answer",
                "failures logged",
                "/healthz after",
                "RSS before MB",
                "RSS after MB",
                "growth MB",
            ],
            [
                [
                    server_errors,
                    sum(c for k, c in statuses.items() if k.startswith("no answer")),
                    len(failures),
                    healthy,
                    mb(before),
                    mb(after),
                    mb(after - before),
                ]
            ],
        )
    )
    for code, request in sorted(examples.items()):
        if code.startswith("5") or code.startswith("no answer"):
            body = (request.body or b"")[:300]
            print(f"\nfirst request answered {code}: {request.method} {request.path} {body!r}")
    for line in failures[:10]:
        print("logged:", line)
    if server_errors or failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
