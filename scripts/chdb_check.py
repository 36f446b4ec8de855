#!/usr/bin/env python3
"""scripts/chdb_check.py: the ClickHouse sink's schema and analyst views on a current ClickHouse.

The project's server is ClickHouse 18.16 (Debian's); this check runs the very same statements
(sinks/sql/*.sql, as the Rust migrator includes them) in chdb, the in-process engine of a
current ClickHouse release, inserts version rows and progress rows, and asserts that every
analyst view returns exactly the expected rows, including after merges. Exits non-zero on any
mismatch.

Installs chdb into $BASKETFLOW_VENV (default <repo>/.venv) when missing (idempotent), then re-runs itself there.
Usage: scripts/chdb_check.py   (or .venv/bin/python scripts/chdb_check.py)
"""
import glob
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The virtualenv holding chdb: $BASKETFLOW_VENV, or <repo>/.venv.
VENV = os.environ.get("BASKETFLOW_VENV") or os.path.join(REPO, ".venv")
# Pinned: the check is about a known current ClickHouse engine.
CHDB = "chdb==4.4.0"
VENV_PY = os.path.join(VENV, "bin", "python")
SQL_DIR = os.path.join(REPO, "sinks", "sql")
PLACEHOLDER = "{database}"
DB = "basketflow_check"


def ensure_chdb():
    """Import chdb, installing it into .venv and re-executing there when needed."""
    try:
        import chdb  # noqa: F401
        return
    except ImportError:
        pass
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        subprocess.check_call([VENV_PY, "-m", "pip", "install", "--quiet", CHDB])
        return
    if not os.path.exists(VENV_PY):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    probe = subprocess.run([VENV_PY, "-c", "import chdb"], capture_output=True)
    if probe.returncode != 0:
        subprocess.check_call([VENV_PY, "-m", "pip", "install", "--quiet", CHDB])
    os.execv(VENV_PY, [VENV_PY, os.path.abspath(__file__)] + sys.argv[1:])


def statements():
    """The migrator's statements, in its order: tables (progress first), then views."""
    tables = sorted(glob.glob(os.path.join(SQL_DIR, "table_*.sql")))
    progress = os.path.join(SQL_DIR, "table_progress.sql")
    tables.remove(progress)
    views = sorted(glob.glob(os.path.join(SQL_DIR, "view_*.sql")))
    for path in [progress] + tables + views:
        with open(path) as f:
            yield os.path.basename(path), f.read().replace(PLACEHOLDER, DB)


failures = []


def check(session, what, sql, expected):
    got = str(session.query(sql, "CSV")).strip()
    if got != expected.strip():
        failures.append(what)
        print(f"MISMATCH {what}\n  query:    {sql}\n  expected:\n{expected.strip()}\n  got:\n{got}\n")
    else:
        print(f"ok  {what}")


def main():
    ensure_chdb()
    import chdb
    from chdb import session as chs

    with tempfile.TemporaryDirectory(prefix="bf_chdb_") as path:
        s = chs.Session(path)
        version = str(s.query("SELECT version()", "CSV")).strip().strip('"')
        print(f"chdb {chdb.__version__}, ClickHouse engine {version}")
        s.query(f"CREATE DATABASE IF NOT EXISTS {DB}")
        for _ in range(2):  # twice: the statements are idempotent
            for name, sql in statements():
                s.query(sql)
        q = lambda sql: s.query(sql)  # noqa: E731

        views = {
            "sold_products_daily": f"SELECT * FROM {DB}.sold_products_daily ORDER BY day, retailer_id, product_id, category",
            "shopper_purchases": f"SELECT * FROM {DB}.shopper_purchases ORDER BY retailer_id, shopper_id, product_id",
            "product_affinities": f"SELECT * FROM {DB}.product_affinities ORDER BY retailer_id, product_a, product_b",
            "baskets": f"SELECT * FROM {DB}.baskets ORDER BY retailer_id, shopper_id, product_id",
        }
        for v, sql in views.items():
            check(s, f"{v}: empty before any progress", sql, "")

        # Column names and types the analysts get.
        check(s, "sold_products_daily columns",
              f"SELECT name, type FROM system.columns WHERE database = '{DB}' AND table = 'sold_products_daily' ORDER BY position",
              '"day","Date"\n"retailer_id","String"\n"product_id","String"\n"category","String"\n'
              '"quantity","Int64"\n"revenue_cents","Int64"\n"orders","Int64"')
        check(s, "shopper_purchases columns",
              f"SELECT name, type FROM system.columns WHERE database = '{DB}' AND table = 'shopper_purchases' ORDER BY position",
              '"retailer_id","String"\n"shopper_id","String"\n"product_id","String"\n"quantity","Int64"\n'
              '"orders","Int64"\n"last_purchase_at","DateTime"')
        check(s, "product_affinities columns",
              f"SELECT name, type FROM system.columns WHERE database = '{DB}' AND table = 'product_affinities' ORDER BY position",
              '"retailer_id","String"\n"product_a","String"\n"product_b","String"\n"orders_together","Int64"')
        check(s, "baskets columns",
              f"SELECT name, type FROM system.columns WHERE database = '{DB}' AND table = 'baskets' ORDER BY position",
              '"retailer_id","String"\n"shopper_id","String"\n"product_id","String"\n"quantity","Int64"')

        # Batch 1 (through 10): inserts at 5, a change and a deletion at 10.
        q(f"""INSERT INTO {DB}.sold_products_daily_versions VALUES
            ('2026-01-15','r1','p1','c1',2,200,1,0,5), ('2026-01-15','r1','p2','c1',1,150,1,0,5),
            ('2026-01-15','r1','p1','c1',5,500,2,0,10)""")
        q(f"""INSERT INTO {DB}.shopper_purchases_versions VALUES
            ('r1','s1','p1',2,1,toDateTime(1768471200),0,5)""")
        q(f"INSERT INTO {DB}.product_affinities_versions VALUES ('r1','p1','p2',1,0,5)")
        q(f"""INSERT INTO {DB}.baskets_versions VALUES
            ('r1','s1','p1',2,0,5), ('r1','s1','p3',1,0,5), ('r1','s1','p3',0,1,10)""")
        for v, sql in views.items():
            check(s, f"{v}: batch 1 written, no progress row yet: invisible", sql, "")
        q(f"INSERT INTO {DB}.progress VALUES (10, now(), 'batch 1')")

        after_1 = {
            "sold_products_daily": '"2026-01-15","r1","p1","c1",5,500,2\n"2026-01-15","r1","p2","c1",1,150,1',
            "shopper_purchases": '"r1","s1","p1",2,1,"2026-01-15 10:00:00"',
            "product_affinities": '"r1","p1","p2",1',
            "baskets": '"r1","s1","p1",2',
        }
        # DateTime text depends on the session time zone: show it in UTC.
        views["shopper_purchases"] = (
            f"SELECT retailer_id, shopper_id, product_id, quantity, orders, toString(last_purchase_at, 'UTC') "
            f"FROM {DB}.shopper_purchases ORDER BY retailer_id, shopper_id, product_id")
        for v, sql in views.items():
            check(s, f"{v}: after batch 1", sql, after_1[v])

        # Batch 2 (through 20): deletions at 15, a key retracted at 15 and re-added at 20, a new
        # month (another partition).
        q(f"""INSERT INTO {DB}.sold_products_daily_versions VALUES
            ('2026-01-15','r1','p2','c1',0,0,0,1,15), ('2026-02-01','r1','p1','c1',1,100,1,0,15)""")
        q(f"""INSERT INTO {DB}.shopper_purchases_versions VALUES
            ('r1','s1','p1',3,2,toDateTime(1768568400),0,15)""")
        q(f"""INSERT INTO {DB}.baskets_versions VALUES
            ('r1','s1','p1',0,1,15), ('r1','s1','p1',3,0,20)""")
        q(f"INSERT INTO {DB}.progress VALUES (20, now(), 'batch 2')")
        after_2 = {
            "sold_products_daily": '"2026-01-15","r1","p1","c1",5,500,2\n"2026-02-01","r1","p1","c1",1,100,1',
            "shopper_purchases": '"r1","s1","p1",3,2,"2026-01-16 13:00:00"',
            "product_affinities": '"r1","p1","p2",1',
            "baskets": '"r1","s1","p1",3',
        }
        for v, sql in views.items():
            check(s, f"{v}: after batch 2", sql, after_2[v])

        # Batch 3, partially written (no progress row): invisible. Committed stays 20.
        q(f"INSERT INTO {DB}.sold_products_daily_versions VALUES ('2026-01-15','r1','p1','c1',9,900,9,0,30)")
        q(f"INSERT INTO {DB}.product_affinities_versions VALUES ('r1','p1','p3',1,0,30)")
        q(f"INSERT INTO {DB}.baskets_versions VALUES ('r1','s1','p1',0,1,30)")
        for v, sql in views.items():
            check(s, f"{v}: partial batch 3 invisible", sql, after_2[v])

        # Filters and aggregates over the views as analysts write them.
        check(s, "filter on a value column", f"SELECT product_id, quantity FROM {DB}.sold_products_daily WHERE quantity = 5", '"p1",5')
        check(s, "filter on a key column", f"SELECT sum(quantity) FROM {DB}.sold_products_daily WHERE day >= '2026-02-01'", "1")
        check(s, "aggregate over a view", f"SELECT sum(revenue_cents), count() FROM {DB}.sold_products_daily", "600,2")
        check(s, "join of two views",
              f"SELECT b.product_id, b.quantity, p.orders FROM {DB}.baskets AS b "
              f"INNER JOIN {DB}.shopper_purchases AS p ON b.retailer_id = p.retailer_id "
              f"AND b.shopper_id = p.shopper_id AND b.product_id = p.product_id", '"p1",3,2')

        # The recovery mutation, then batch 3 written again in full.
        for t in ["sold_products_daily_versions", "shopper_purchases_versions",
                  "product_affinities_versions", "baskets_versions"]:
            # As ClickHouseSink::discard_uncommitted does it: a mutation, then poll
            # system.mutations (18.16 has no mutations_sync).
            q(f"ALTER TABLE {DB}.{t} DELETE WHERE time > 20")
            for _ in range(600):
                pending = str(s.query(
                    f"SELECT count() FROM system.mutations WHERE database = '{DB}' "
                    f"AND table = '{t}' AND is_done = 0", "CSV")).strip()
                if pending == "0":
                    break
                time.sleep(0.1)
            else:
                failures.append(f"mutation on {t} not done after 60 s")
        check(s, "no version after the committed time",
              f"SELECT (SELECT count() FROM {DB}.sold_products_daily_versions WHERE time > 20) + "
              f"(SELECT count() FROM {DB}.product_affinities_versions WHERE time > 20) + "
              f"(SELECT count() FROM {DB}.baskets_versions WHERE time > 20)", "0")
        q(f"INSERT INTO {DB}.sold_products_daily_versions VALUES ('2026-01-15','r1','p1','c1',6,600,3,0,30)")
        q(f"INSERT INTO {DB}.progress VALUES (30, now(), 'batch 3')")
        after_3 = dict(after_2)
        after_3["sold_products_daily"] = '"2026-01-15","r1","p1","c1",6,600,3\n"2026-02-01","r1","p1","c1",1,100,1'
        for v, sql in views.items():
            check(s, f"{v}: after batch 3 rewritten", sql, after_3[v])

        # Merges (ReplacingMergeTree keeps only the newest version per key) change nothing.
        for t in ["sold_products_daily_versions", "shopper_purchases_versions",
                  "product_affinities_versions", "baskets_versions"]:
            q(f"OPTIMIZE TABLE {DB}.{t} FINAL")
        for v, sql in views.items():
            check(s, f"{v}: after OPTIMIZE FINAL", sql, after_3[v])

    if failures:
        print(f"\nFAILED: {len(failures)} check(s): {', '.join(failures)}")
        sys.exit(1)
    print("\nall chdb checks passed")


if __name__ == "__main__":
    main()
