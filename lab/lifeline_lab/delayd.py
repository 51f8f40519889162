"""Delay, jitter and burst loss without netem: an NFQUEUE daemon (one per namespace).

The kernel here has no netem, so packets are diverted with
``iptables -t raw -A PREROUTING -i IF -j NFQUEUE --queue-num N --queue-bypass`` (raw PREROUTING,
before conntrack: queueing later on a NAT router loses the first packets of new flows) or, for
packets leaving towards the laptop, ``-t mangle -A POSTROUTING -o IF`` (never in the laptop
itself: fping and the agent take RTT from the kernel's receive stamp, set before the queue), and
this daemon holds each one and gives the verdict later. The hold starts at the kernel's arrival
stamp, so the daemon's own wake-up lag is not added. ``--queue-bypass`` lets traffic through
unimpaired if the daemon is not running.

Control file (JSON, polled every 100 ms, so impairments change while traffic flows)::

    {"version": 7, "queues": {"3": {"delay_ms": 40, "jitter_ms": 5, "burst_loss_pct": 0, "burst_len": 0}}}

* ``delay_ms`` ± ``jitter_ms`` (uniform) is added to every packet of the queue. Packets of one
  queue leave in arrival order (like a real link, jitter does not reorder), so at high packet rates
  jitter adds a little extra delay.
* ``burst_loss_pct`` with ``burst_len`` is a Gilbert model: a two-state chain whose bad state
  drops everything, with mean burst length ``burst_len`` packets and average loss
  ``burst_loss_pct`` percent.

After applying a version the daemon writes ``<control>.ack`` with that version, so whoever changed
the file knows when the change is live. Needs CAP_NET_ADMIN in its namespace.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

POLL_S = 0.1
SPIN_S = 0.0004
QUEUE_MAXLEN = 20000


@dataclass(slots=True)
class QueueConfig:
    delay_s: float = 0.0
    jitter_s: float = 0.0
    burst_p: float = 0.0  # good → bad per packet
    burst_r: float = 1.0  # bad → good per packet

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QueueConfig:
        delay = max(0.0, float(data.get("delay_ms", 0.0))) / 1000.0
        jitter = max(0.0, float(data.get("jitter_ms", 0.0))) / 1000.0
        loss = min(max(float(data.get("burst_loss_pct", 0.0)) / 100.0, 0.0), 1.0)
        length = max(1.0, float(data.get("burst_len", 1.0) or 1.0))
        p, r = gilbert(loss, length)
        return cls(delay, min(jitter, delay), p, r)


def gilbert(loss: float, burst_len: float) -> tuple[float, float]:
    """Transition probabilities (p good→bad, r bad→good) for an average loss and mean burst length."""
    if loss <= 0.0:
        return 0.0, 1.0
    if loss >= 1.0:
        return 1.0, 0.0
    r = 1.0 / burst_len
    p = loss * r / (1.0 - loss)
    if p > 1.0:  # bursts too short for this much loss: stretch them
        p = 1.0
        r = (1.0 - loss) / loss
    return p, r


class Delayer:
    """Holds packets and releases them on time; one instance serves every queue of a namespace."""

    def __init__(self, control: str) -> None:
        import fnfqueue  # imported here: only the daemon needs the binding

        self._fnfqueue = fnfqueue
        self.control = control
        self.conn = fnfqueue.Connection(alloc_size=64, chunk_size=32, packet_size=4096)
        self.configs: dict[int, QueueConfig] = {}
        self.bad_state: dict[int, bool] = {}
        self.last_release: dict[int, float] = {}
        self.bound: set[int] = set()
        self.heap: list[tuple[float, int, Any]] = []
        self.cond = threading.Condition()
        self.verdict_lock = threading.Lock()
        self.counter = itertools.count()
        self.stopping = False
        self.mtime = 0.0
        self.rng = random.Random()

    # control ----------------------------------------------------------------------------------

    def poll_control(self) -> None:
        try:
            stat = os.stat(self.control)
        except FileNotFoundError:
            return
        if stat.st_mtime == self.mtime:
            return
        try:
            with open(self.control, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError) as exc:
            print(f"delayd: cannot read {self.control}: {exc}", file=sys.stderr, flush=True)
            return
        self.mtime = stat.st_mtime
        configs = {int(q): QueueConfig.from_json(c) for q, c in data.get("queues", {}).items()}
        for queue in sorted(set(configs) - self.bound):
            q = self.conn.bind(queue)
            q.set_mode(0, self._fnfqueue.COPY_META)
            q.set_maxlen(QUEUE_MAXLEN)
            self.bound.add(queue)
        with self.cond:
            self.configs = configs
        ack = {"version": data.get("version", 0), "bound": sorted(self.bound), "pid": os.getpid()}
        tmp = f"{self.control}.ack.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(ack, handle)
        os.replace(tmp, f"{self.control}.ack")

    def control_loop(self) -> None:
        while not self.stopping:
            self.poll_control()
            time.sleep(POLL_S)

    # packets ----------------------------------------------------------------------------------

    def _verdict(self, packet: Any, accept: bool) -> None:
        with self.verdict_lock:
            try:
                if accept:
                    packet.accept()
                else:
                    packet.drop()
            except OSError as exc:  # the queue went away (namespace deleted): nothing to do
                print(f"delayd: verdict failed: {exc}", file=sys.stderr, flush=True)

    def receive_loop(self) -> None:
        while not self.stopping:
            try:
                for packet in self.conn:
                    self.on_packet(packet)
                return
            except self._fnfqueue.BufferOverflowException:
                self.conn.reset()  # the kernel dropped some: as a full router queue would

    def on_packet(self, packet: Any) -> None:
        now = time.monotonic()
        try:  # the kernel's arrival stamp: our own wake-up lag (~0.1-0.3 ms) is not delay to add
            lag = time.time() - packet.time.timestamp()
            if 0.0 < lag < 0.05:
                now -= lag
        except self._fnfqueue.NoSuchAttributeException:
            pass
        queue = int(packet.packet.queue_id)
        with self.cond:
            cfg = self.configs.get(queue)
            if cfg is None:
                cfg = QueueConfig()
            bad = self.bad_state.get(queue, False)
            if cfg.burst_p > 0.0:
                bad = self.rng.random() >= cfg.burst_r if bad else self.rng.random() < cfg.burst_p
                self.bad_state[queue] = bad
            else:
                bad = False
                self.bad_state[queue] = False
            if not bad and cfg.delay_s > 0.0:
                jitter = self.rng.uniform(-cfg.jitter_s, cfg.jitter_s) if cfg.jitter_s else 0.0
                release = max(now + cfg.delay_s + jitter, self.last_release.get(queue, 0.0))
                self.last_release[queue] = release
                heapq.heappush(self.heap, (release, next(self.counter), packet))
                self.cond.notify()
                return
        self._verdict(packet, accept=not bad)

    def release_loop(self) -> None:
        # Sleeping until the release time wakes Python ~0.1-0.2 ms late; sleep until SPIN_S before
        # it and spin the rest, so a configured 40 ms is 40 ms and not 40.3.
        while True:
            with self.cond:
                while not self.stopping and (not self.heap or self.heap[0][0] - SPIN_S > time.monotonic()):
                    timeout = (self.heap[0][0] - SPIN_S - time.monotonic()) if self.heap else None
                    self.cond.wait(timeout)
                if self.stopping:
                    return
                target = self.heap[0][0]
            while time.monotonic() < target:
                pass
            due = []
            with self.cond:
                now = time.monotonic()
                while self.heap and self.heap[0][0] <= now:
                    due.append(heapq.heappop(self.heap)[2])
            for packet in due:
                self._verdict(packet, accept=True)

    def stop(self) -> None:
        self.stopping = True
        with self.cond:
            held = [item[2] for item in self.heap]
            self.heap.clear()
            self.cond.notify_all()
        for packet in held:  # let held packets go rather than dropping them on exit
            self._verdict(packet, accept=True)
        with contextlib.suppress(OSError):
            self.conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lifeline_lab.delayd", description=__doc__.split("\n")[0])
    parser.add_argument("--control", required=True, help="JSON control file to poll")
    args = parser.parse_args(argv)
    delayer = Delayer(args.control)
    done = threading.Event()

    def on_signal(_sig: int, _frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    delayer.poll_control()
    for target in (delayer.control_loop, delayer.release_loop, delayer.receive_loop):
        threading.Thread(target=target, daemon=True, name=target.__name__).start()
    done.wait()
    delayer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
