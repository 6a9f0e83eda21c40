"""
The DBOS comparator of ``bench_durable.py``: the order flow (amount 500) as a DBOS workflow on SQLite.

Run by ``bench_durable.py`` with an interpreter that has ``dbos`` (and this
project's dependencies: it imports the example's services), e.g.::

    python -m venv .venv-dbos && .venv-dbos/bin/pip install dbos -e .
    .venv-dbos/bin/python bench/dbos_order.py --dir /tmp/x --journal wal --n 60 --runs 5

One workflow with five ``@DBOS.step`` functions calling the example's services
(``UserService``, ``InventoryService``, ``PaymentService``) as the engine's steps do,
run sequentially (call, wait for the result, next). ``--journal wal`` creates the
SQLite file in WAL mode before DBOS opens it; ``delete`` leaves DBOS's default
(SQLite's rollback journal). SQLite's ``synchronous`` stays at its default, FULL.
Prints one ``RESULT {json}`` line: the seconds of each run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.order_process import InventoryService, Item, PaymentService, UserService

STOCK = 10**12


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--journal", choices=("wal", "delete"), default="wal")
    p.add_argument("--n", type=int, default=60)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    logging.getLogger("dbos").setLevel(logging.WARNING)

    dbos: Any = importlib.import_module("dbos")
    version = importlib.import_module("importlib.metadata").version("dbos")
    DBOS: Any = dbos.DBOS  # noqa: N806 - DBOS's own name
    path = Path(args.dir) / "dbos.sqlite"
    if args.journal == "wal":
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA journal_mode=WAL")

    users = UserService()
    inventory = InventoryService(stock={"BOOK": STOCK})
    payments = PaymentService()
    log = logging.getLogger("bench.dbos.confirm")

    def validate_order(order_id: str, customer_id: str) -> bool:
        return users.validateOrder(order_id=order_id, customer_id=customer_id)

    def check_inventory(items: list[Item]) -> bool:
        return inventory.checkStock(items=items)

    def process_payment(order_id: str, amount: float, key: str) -> str:
        return payments.processPayment(order_id=order_id, amount=amount, idempotency_key=key)

    def update_inventory(order_id: str, items: list[Item], key: str) -> None:
        inventory.updateStock(order_id=order_id, items=items, idempotency_key=key)

    def send_confirmation(order_id: str) -> bool:
        log.info("confirmation_sent %s", order_id)
        return True

    DBOS(config={"name": "smo-bench", "system_database_url": f"sqlite:///{path}", "log_level": "WARNING"})
    validate: Any = DBOS.step()(validate_order)
    check: Any = DBOS.step()(check_inventory)
    pay: Any = DBOS.step()(process_payment)
    update: Any = DBOS.step()(update_inventory)
    confirm: Any = DBOS.step()(send_confirmation)

    def order_workflow(order_id: str, customer_id: str, amount: float, items: list[Item]) -> str:
        if not validate(order_id, customer_id):
            return "invalid"
        check(items)
        if amount > 1000:  # the example's rule
            return "needs approval"
        workflow_id = str(DBOS.workflow_id)
        payment_id: str = pay(order_id, amount, workflow_id + ":2")
        update(order_id, items, workflow_id + ":3")
        confirm(order_id)
        return payment_id

    workflow: Any = DBOS.workflow()(order_workflow)
    DBOS.launch()
    try:
        item = Item("BOOK", 1)
        for i in range(5):  # warm-up
            workflow(f"W-{i}", "CUST-W", 500.0, [item])
        seconds: list[float] = []
        for run in range(args.runs):
            t0 = time.perf_counter()
            for i in range(args.n):
                result = workflow(f"R{run}-{i:05d}", f"CUST-{i % 1000:04d}", 500.0, [item])
                if not str(result).startswith("pay-"):
                    msg = f"DBOS order workflow returned {result!r}"
                    raise RuntimeError(msg)
            seconds.append(time.perf_counter() - t0)
    finally:
        DBOS.destroy()
    print("RESULT " + json.dumps({"version": version, "n": args.n, "seconds": seconds}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
