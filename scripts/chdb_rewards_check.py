#!/usr/bin/env python3
"""scripts/chdb_rewards_check.py: the reward contacts' schema on a current ClickHouse.

The project's server is ClickHouse 18.16; the loader's statements (rewards/sql/schema.sql,
written from rewards/src/store.rs by its unit test) and the statements it runs (inserts, the
erasure's DELETE by subquery on `erasing`, the retention's DELETE, TRUNCATE) run here in chdb,
the in-process engine of a current release, and the view `reward_contacts` must return exactly
the latest read of each contact id, replayed copies collapsed. Exits non-zero on a mismatch.

Uses the virtualenv of scripts/chdb_check.py ($BASKETFLOW_VENV, default <repo>/.venv), which
installs chdb; run that script once first, or: python3 -m venv .venv && .venv/bin/pip install chdb
"""
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.environ.get("BASKETFLOW_VENV") or os.path.join(REPO, ".venv")
VENV_PY = os.path.join(VENV, "bin", "python")
DB = "rewards_check"

try:
    import chdb.session  # noqa: E402
except ImportError:
    if os.path.realpath(sys.prefix) != os.path.realpath(VENV) and os.path.exists(VENV_PY):
        os.execv(VENV_PY, [VENV_PY, os.path.abspath(__file__)] + sys.argv[1:])
    sys.exit("chdb is not installed: run scripts/chdb_check.py first (it installs it)")


def main():
    with open(os.path.join(REPO, "rewards", "sql", "schema.sql")) as f:
        statements = [s.strip() for s in f.read().replace("{database}", DB).split(";\n") if s.strip()]
    with tempfile.TemporaryDirectory() as path:
        s = chdb.session.Session(path)
        q = lambda sql: s.query(sql, "TSV").bytes().decode()  # noqa: E731
        for st in statements:
            q(st)
        cols = ("retailer_id, shopper_id, contact_id, email, campaign_id, order_id, submitted_at, "
                "received_at, received_ms, kafka_partition, kafka_offset, loaded_at")
        rows = [
            # c1 of s1, replayed (identical copy), then sent again with another address.
            "('r1','s1','c1','old@shop.example','game','',1796380000,1796380000,1796380000000,0,0,1796380000)",
            "('r1','s1','c1','old@shop.example','game','',1796380000,1796380000,1796380000000,0,0,1796380001)",
            "('r1','s1','c1','new@shop.example','game','o1',1796380005,1796380005,1796380005000,0,2,1796380005)",
            "('r1','s2','c2','max@shop.example','game','',1796380001,1796380001,1796380001000,0,1,1796380001)",
            "('r2','s1','c1','other@shop.example','game','',1796380001,1796380001,1796380001000,0,3,1796380001)",
        ]
        q(f"INSERT INTO {DB}.reward_contacts_log ({cols}) VALUES " + ", ".join(rows))
        view = lambda: sorted(q(  # noqa: E731
            f"SELECT retailer_id, contact_id, shopper_id, email, order_id FROM {DB}.reward_contacts"
        ).splitlines())
        expect(view(), [
            "r1\tc1\ts1\tnew@shop.example\to1",
            "r1\tc2\ts2\tmax@shop.example\t",
            "r2\tc1\ts1\tother@shop.example\t",
        ], "the latest read per contact id")
        # Erasure of (r1, s1): by subquery on `erasing`, as the loader does it.
        q(f"INSERT INTO {DB}.erasing VALUES ('r1', 's1')")
        named = f"(retailer_id, shopper_id) IN (SELECT retailer_id, shopper_id FROM {DB}.erasing)"
        expect(q(f"SELECT count() FROM {DB}.reward_contacts_log WHERE {named}").split(), ["3"], "rows of the shopper")
        q(f"ALTER TABLE {DB}.reward_contacts_log DELETE WHERE {named} SETTINGS mutations_sync = 1")
        q(f"TRUNCATE TABLE {DB}.erasing")
        expect(view(), ["r1\tc2\ts2\tmax@shop.example\t", "r2\tc1\ts1\tother@shop.example\t"], "after the erasure")
        # Retention: the default period, except r2's own.
        q(f"ALTER TABLE {DB}.reward_contacts_log DELETE WHERE received_ms < 1796380002000 "
          f"AND NOT has(['r2'], retailer_id) SETTINGS mutations_sync = 1")
        expect(view(), ["r2\tc1\ts1\tother@shop.example\t"], "after retention")
        q(f"INSERT INTO {DB}.rewards_audit (request_id, retailer_id, kind, rows_removed, at) "
          f"VALUES ('erase-1', 'r1', 'erasure', 3, now())")
        q(f"INSERT INTO {DB}.loader_positions VALUES ('t', 0, 4, now()), ('t', 0, 5, now())")
        expect(q(f"SELECT topic, kafka_partition, max(next_offset) FROM {DB}.loader_positions "
                 f"GROUP BY topic, kafka_partition").splitlines(), ["t\t0\t5"], "positions")
    print("chdb: the reward contacts' schema, view, erasure and retention statements hold")


def expect(got, want, what):
    if got != want:
        sys.exit(f"chdb rewards check: {what}: got {got!r}, want {want!r}")


if __name__ == "__main__":
    main()
