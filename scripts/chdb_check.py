#!/usr/bin/env python3
"""scripts/chdb_check.py: the ClickHouse sink's schema and analyst views on a current ClickHouse.

The project's server is ClickHouse 18.16 (Debian's); this check runs the very same statements
(sinks/sql/*.sql, as the Rust migrator includes them) in chdb, the in-process engine of a
current ClickHouse release, inserts version rows and progress rows, and asserts that every
analyst view returns exactly the expected rows, including after merges. Then it runs the example
analyst queries (examples/sql/*.sql) over a small data set in a database of their own and
asserts their exact results: the same data set and results as examples/tests/analyst_queries.rs,
which runs them on the 18.16 server. Last, the statements of a retailer copy
(sinks/sql/generated/copies_check.sql, written from the code by a test) on two databases: the copy holds
exactly its retailer's rows, also after an erasure by subquery. Exits non-zero on any mismatch.

Installs chdb into $BASKETFLOW_VENV (default <repo>/.venv) when missing (idempotent), then re-runs itself there.
Usage: scripts/chdb_check.py   (or .venv/bin/python scripts/chdb_check.py)
"""
import glob
import os
import re
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
QUERIES_DIR = os.path.join(REPO, "examples", "sql")
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


def statements(db=None):
    """The migrator's statements, in its order (that of their include_str! in schema.rs:
    tables, progress first, then views, a view after those it reads)."""
    db = db or DB
    with open(os.path.join(REPO, "sinks", "src", "clickhouse", "schema.rs")) as f:
        names = re.findall(r'include_str!\("\.\./\.\./sql/((?:table|view)_\w+\.sql)"\)', f.read())
    on_disk = sorted(os.path.basename(p) for p in glob.glob(os.path.join(SQL_DIR, "*.sql")))
    if sorted(names) != on_disk:
        failures.append("schema.rs and sinks/sql differ")
        print(f"MISMATCH schema files: {sorted(names)} vs {on_disk}")
    for name in names:
        with open(os.path.join(SQL_DIR, name)) as f:
            yield name, f.read().replace(PLACEHOLDER, db)


failures = []


def check(session, what, sql, expected, fmt="CSV"):
    try:
        got = str(session.query(sql, fmt)).strip()
    except Exception as e:  # noqa: BLE001 (a failing query is a failed check)
        got = f"ERROR: {e}"
    if got != expected.strip():
        failures.append(what)
        print(f"MISMATCH {what}\n  query:    {sql}\n  expected:\n{expected.strip()}\n  got:\n{got}\n")
    else:
        print(f"ok  {what}")


# ---- The example analyst queries (examples/sql) ----

# The data set of examples/tests/analyst_queries.rs, as the read models see it: every paid
# order (retailer, order, shopper, ordered_at UTC, lines (product, category, units, unit
# price), cancelled). Keep the two in step.
ORDERS = [
    ("r1", "o1", "s1", "2026-11-20 10:00:00", [("p-pasta", "pasta", 3, 150), ("p-sauce", "sauce", 1, 300)], False),
    ("r1", "o2", "s2", "2026-11-21 12:00:00", [("p-pasta", "pasta", 2, 150), ("p-sauce", "sauce", 2, 300),
                                              ("p-cheese", "dairy", 1, 500), ("p-cheese", "deli", 1, 450)], False),
    ("r1", "o3", "s3", "2026-11-22 09:00:00", [("p-pasta", "pasta", 1, 150), ("p-wine", "drinks", 1, 1200)], True),
    ("r1", "o4", "s1", "2026-11-10 08:00:00", [("p-wine", "drinks", 5, 1200)], False),
    ("r1", "o5", "s4", "2026-11-23 08:00:00", [("p-cheese", "dairy", 10, 500)], False),
    ("r1", "o6", "s2", "2026-11-19 10:00:00", [("p-sauce", "sauce", 1, 300)], True),
    ("r2", "o1", "s1", "2026-11-21 10:00:00", [("q-00", "pasta", 4, 100)], False),
    ("r2", "o7", "s5", "2026-11-18 10:00:00", [(f"q-{i:02}", "snacks", 1, 10) for i in range(1, 12)], False),
]
# Experience decisions: (decision_id, retailer, shopper, kind, occurred_at UTC).
DECISIONS = [
    ("d1", "r1", "s1", "recommendation", "2026-11-20 09:30:00"),
    ("d2", "r1", "s1", "recommendation", "2026-11-19 11:00:00"),
    ("d3", "r1", "s3", "tension_cart", "2026-11-22 08:00:00"),
    ("d4", "r1", "s2", "personalized_promotion", "2026-11-20 11:00:00"),
    ("d5", "r1", "s2", "gamified_promotion", "2026-11-20 12:00:00"),
    ("d6", "r1", "s4", "gamified_promotion", "2026-11-23 08:00:00"),
    ("d7", "r2", "s1", "recommendation", "2026-11-21 09:00:00"),
    ("d8", "r1", "s1", "recommendation", "2026-11-21 09:00:00"),
]
# Query file -> placeholders -> exact TabSeparated result (as in analyst_queries.rs).
QUERIES = {
    "top_products_this_week.sql": ({"end_day": "2026-11-22"}, "\n".join(
        ["r1\tp-pasta\t5\t750", "r1\tp-sauce\t3\t900", "r1\tp-cheese\t2\t950", "r2\tq-00\t4\t400"]
        + [f"r2\tq-{i:02}\t1\t10" for i in range(1, 10)])),
    "cancellation_rate_by_category.sql": ({}, "\n".join([
        "r1\tdairy\t2\t0\t0", "r1\tdeli\t1\t0\t0", "r1\tdrinks\t2\t1\t0.5",
        "r1\tpasta\t3\t1\t0.3333", "r1\tsauce\t3\t1\t0.3333",
        "r2\tpasta\t1\t0\t0", "r2\tsnacks\t1\t0\t0"])),
    "bought_with.sql": ({"retailer_id": "r1", "product_id": "p-pasta"},
                        "p-sauce\t2\t1\np-cheese\t1\t0.5"),
    "decisions_by_kind_and_following_orders.sql": ({}, "\n".join([
        "gamified_promotion\t2\t2\t1\t1850", "personalized_promotion\t1\t1\t0\t0",
        "recommendation\t4\t2\t2\t1150", "tension_cart\t1\t1\t0\t0"])),
    # Over the campaigns data set below (a database of its own).
    "campaign_uplift_significance.sql": ({}, "\n".join([
        "coffee\tr1\t1\t1\t0\t0\t1\tnan\tnan\tnan\tnan\tnan",
        "pasta\tr1\t3\t2\t2\t1\t0.6667\t0.5\t0.1667\t0.3727\t-0.7078\t1.0412"])),
}
UPLIFT_QUERIES = {"campaign_uplift_significance.sql"}

# The campaigns data set of examples/tests/analyst_queries.rs (uplift_events,
# UPLIFT_DECISIONS, campaigns_insert): keep them in step.
UPLIFT_ORDERS = [
    ("r1", "o1", "s1", "2026-11-20 11:00:00", [("p-pasta", "pasta", 2, 150), ("c-1", "coffee", 1, 400),
                                              ("c-2", "coffee", 1, 500)], False),
    ("r1", "o2", "s1", "2026-11-22 11:00:00", [("p-pasta", "pasta", 1, 150)], False),
    ("r1", "o3", "s2", "2026-11-20 12:00:00", [("p-pasta", "pasta", 1, 150)], False),
    ("r1", "o4", "s2", "2026-11-21 12:00:00", [("p-pasta", "pasta", 1, 150), ("p-sauce", "sauce", 1, 300)], True),
    ("r1", "o5", "s3", "2026-11-21 08:00:00", [("p-sauce", "sauce", 1, 300)], False),
    ("r1", "o6", "s6", "2026-11-20 14:00:00", [("p-pasta", "pasta", 1, 150)], False),
]
UPLIFT_DECISIONS = [
    ("u1", "r1", "s1", "pasta", "shown", "2026-11-20 10:00:00"),
    ("u2", "r1", "s1", "pasta", "shown", "2026-11-21 10:00:00"),
    ("u3", "r1", "s2", "pasta", "shown", "2026-11-20 12:00:00"),
    ("u4", "r1", "s3", "pasta", "held_out", "2026-11-20 09:00:00"),
    ("u5", "r1", "s4", "pasta", "held_out", "2026-11-21 09:00:00"),
    ("u6", "r1", "s6", "pasta", "shown", "2026-11-20 13:00:00"),
    ("u7", "r1", "s1", "coffee", "shown", "2026-11-20 10:00:00"),
    ("u8", "r1", "s5", "other", "shown", "2026-11-20 10:00:00"),
    ("u9", "r2", "s1", "pasta", "shown", "2026-11-20 10:00:00"),
]
UPLIFT_EXPECTED = "\n".join([
    "coffee\tr1\t2026-11-20\tshown\t1\t1\t1\t1200\t400",
    "pasta\tr1\t2026-11-20\theld_out\t1\t1\t1\t300\t0",
    "pasta\tr1\t2026-11-20\tshown\t3\t2\t2\t1350\t450",
    "pasta\tr1\t2026-11-21\theld_out\t1\t0\t0\t0\t0"])


def uplift_inserts(db):
    lines = []
    for retailer, order, shopper, at, order_lines, cancelled in UPLIFT_ORDERS:
        for product, category, units, price in order_lines:
            lines.append(f"('{retailer}','{order}','{shopper}','{product}','{category}',{units},"
                         f"{units * price},toDateTime('{at}','UTC'),'{at[:10]}',{int(cancelled)},0,1)")
    yield f"INSERT INTO {db}.order_lines_versions VALUES " + ", ".join(lines)
    yield f"INSERT INTO {db}.progress (time, written_at, note) VALUES (1, now(), 'uplift')"
    for _ in range(2):
        yield (f"INSERT INTO {db}.experience_decisions_log (decision_id, retailer_id, shopper_id, "
               f"kind, tree_id, occurred_at, decided_at, time, campaign_group) VALUES " + ", ".join(
                   f"('{d}','{r}','{sh}','product_recommendation','{c}',toDateTime('{at}','UTC'),"
                   f"toDateTime('{at}','UTC'),1,'{g}')" for d, r, sh, c, g, at in UPLIFT_DECISIONS))
    yield (f"INSERT INTO {db}.campaigns_log VALUES "
           "('pasta','r1',1,'pasta',[],1000,60,toDateTime('2026-11-19 00:00:00','UTC')), "
           "('pasta','r1',2,'pasta',[],1000,172800,toDateTime('2026-11-19 01:00:00','UTC')), "
           "('coffee','r1',2,'coffee',['c-1'],0,86400,toDateTime('2026-11-19 01:00:00','UTC'))")



def read_model_inserts(db):
    """INSERTs of ORDERS as version rows at time 1 (order_lines, sold_products_daily,
    product_affinities), and the progress row that commits them."""
    lines, sold, pairs = {}, {}, {}
    for retailer, order, shopper, at, order_lines, cancelled in ORDERS:
        day = at[:10]
        for product, category, units, price in order_lines:
            row = lines.setdefault((retailer, order, product, category), [shopper, 0, 0, at, day, cancelled])
            row[1] += units
            row[2] += units * price
            if not cancelled:
                row = sold.setdefault((day, retailer, product, category), [0, 0, set()])
                row[0] += units
                row[1] += units * price
                row[2].add(order)
        if not cancelled:
            products = sorted({line[0] for line in order_lines})
            for i, a in enumerate(products):
                for b in products[i + 1:]:
                    pairs[(retailer, a, b)] = pairs.get((retailer, a, b), 0) + 1
    yield f"INSERT INTO {db}.order_lines_versions VALUES " + ", ".join(
        f"('{r}','{o}','{sh}','{p}','{c}',{u},{rev},toDateTime('{at}','UTC'),'{d}',{int(x)},0,1)"
        for (r, o, p, c), (sh, u, rev, at, d, x) in sorted(lines.items()))
    yield f"INSERT INTO {db}.sold_products_daily_versions VALUES " + ", ".join(
        f"('{d}','{r}','{p}','{c}',{u},{rev},{len(orders)},0,1)"
        for (d, r, p, c), (u, rev, orders) in sorted(sold.items()))
    yield f"INSERT INTO {db}.product_affinities_versions VALUES " + ", ".join(
        f"('{r}','{a}','{b}',{n},0,1)" for (r, a, b), n in sorted(pairs.items()))
    yield f"INSERT INTO {db}.progress (time, written_at, note) VALUES (1, now(), 'analyst queries')"


def decision_inserts(db):
    # Into the decisions log (sinks/sql), read through the experience_decisions view; each
    # decision twice, as a replay writes it, to check the view shows it once.
    for _ in range(2):
        yield f"INSERT INTO {db}.experience_decisions_log VALUES " + ", ".join(
            f"('{d}','{r}','{sh}','x-{d}','{k}','{{}}','t-{sh}',1,'n1',['reason'],'e-{d}',0,0,"
            f"toDateTime('{at}','UTC'),toDateTime('{at}','UTC') + 1, 1, 'shown', 0, 0)"
            for d, r, sh, k, at in DECISIONS)


def query_text(name, params, db):
    """The query file with its placeholders and its database replaced, without the final ';'."""
    with open(os.path.join(QUERIES_DIR, name)) as f:
        sql = f.read()
    for key, value in params.items():
        sql = sql.replace("{" + key + "}", value)
    return sql.replace("basketflow.", f"{db}.").strip().rstrip(";")


def check_analyst_queries(s):
    db = "basketflow_queries"
    files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(QUERIES_DIR, "*.sql")))
    if files != sorted(QUERIES):
        failures.append("examples/sql files and QUERIES differ")
        print(f"MISMATCH query files: {files} vs {sorted(QUERIES)}")
    s.query(f"CREATE DATABASE {db}")
    for _, sql in statements(db):
        s.query(sql)
    for sql in list(read_model_inserts(db)) + list(decision_inserts(db)):
        s.query(sql)
    for name, (params, expected) in sorted(QUERIES.items()):
        if name not in UPLIFT_QUERIES:
            check(s, f"examples/sql/{name}", query_text(name, params, db), expected, "TabSeparated")
    uplift = "basketflow_uplift"
    s.query(f"CREATE DATABASE {uplift}")
    for _, sql in statements(uplift):
        s.query(sql)
    for sql in uplift_inserts(uplift):
        s.query(sql)
    check(s, "campaign_uplift", f"SELECT * FROM {uplift}.campaign_uplift "
          "ORDER BY campaign_id, retailer_id, first_decision_day, campaign_group",
          UPLIFT_EXPECTED, "TabSeparated")
    for name in sorted(UPLIFT_QUERIES):
        params, expected = QUERIES[name]
        check(s, f"examples/sql/{name}", query_text(name, params, uplift), expected, "TabSeparated")


def wait_mutations(s, db, table):
    for _ in range(600):
        pending = str(s.query(
            f"SELECT count() FROM system.mutations WHERE database = '{db}' "
            f"AND table = '{table}' AND is_done = 0", "CSV")).strip()
        if pending == "0":
            return
        time.sleep(0.1)
    failures.append(f"mutation on {table} not done after 60 s")


def check_privacy(s):
    """The statements ClickHouseStore::erase_all and ::apply_retention send, and the audit view."""
    db = "basketflow_privacy"
    s.query(f"CREATE DATABASE {db}")
    for _, sql in statements(db):
        s.query(sql)
    s.query(f"""INSERT INTO {db}.shopper_purchases_versions VALUES
        ('r1','s1','p1',2,1,toDateTime(1768471200),0,5), ('r1','s1','p1',2,1,toDateTime(1768471200),1,20),
        ('r1','s2','p1',1,1,toDateTime(1768471200),0,5), ('r2','s1','p1',1,1,toDateTime(1768471200),0,5)""")
    s.query(f"INSERT INTO {db}.progress (time, written_at, note) VALUES (20, now(), 'erasure')")
    # One mutation for all of a batch's erasures (s1 at r1, and s9 at r1 who has no rows).
    s.query(f"ALTER TABLE {db}.shopper_purchases_versions DELETE WHERE "
            f"(retailer_id = 'r1' AND shopper_id = 's1') OR (retailer_id = 'r1' AND shopper_id = 's9')")
    wait_mutations(s, db, "shopper_purchases_versions")
    check(s, "erasure: only the shopper of that retailer is gone",
          f"SELECT retailer_id, shopper_id FROM {db}.shopper_purchases ORDER BY retailer_id, shopper_id",
          '"r1","s2"\n"r2","s1"')
    for _ in range(2):  # a retried batch acknowledges twice; the view shows one row
        s.query(f"INSERT INTO {db}.privacy_audit_log (request_id, retailer_id, received_at, applied_at, "
                f"removed_shopper_purchases, removed_baskets, removed_order_lines, removed_experience_decisions, time) "
                f"VALUES ('q1', 'r1', toDateTime(20), toDateTime(30), 2, 0, 0, 0, 20)")
    s.query(f"INSERT INTO {db}.privacy_audit_log (request_id, retailer_id, received_at, applied_at, "
            f"removed_shopper_purchases, removed_baskets, removed_order_lines, removed_experience_decisions, time) "
            f"VALUES ('q1', 'r1', toDateTime(20), toDateTime(40), 0, 0, 0, 0, 20)")
    check(s, "privacy_audit: one row per request, first acknowledgement, true counts",
          f"SELECT request_id, retailer_id, toUnixTimestamp(received_at), toUnixTimestamp(applied_at), "
          f"removed_shopper_purchases, removed_baskets FROM {db}.privacy_audit",
          '"q1","r1",20,30,2,0')
    # Retention: per-retailer period for r2, the default for the others.
    s.query(f"ALTER TABLE {db}.shopper_purchases_versions DELETE WHERE "
            f"shopper_id != '' AND time < 10 AND NOT has(['r2'], retailer_id) "
            f"AND (retailer_id, shopper_id, product_id, time) NOT IN (SELECT retailer_id, shopper_id, product_id, max(time) "
            f"FROM {db}.shopper_purchases_versions WHERE time <= 20 GROUP BY retailer_id, shopper_id, product_id "
            f"HAVING argMax(deleted, time) = 0)")
    wait_mutations(s, db, "shopper_purchases_versions")
    s.query(f"ALTER TABLE {db}.shopper_purchases_versions DELETE WHERE "
            f"shopper_id != '' AND time < 3 AND retailer_id = 'r2'")
    wait_mutations(s, db, "shopper_purchases_versions")
    check(s, "retention: rows older than each retailer's period",
          f"SELECT retailer_id, shopper_id, time FROM {db}.shopper_purchases_versions ORDER BY retailer_id, shopper_id",
          # r1/s2's only version is old but still live (the newest): it stays.
          '"r1","s2",5\n"r2","s1",5')


def copy_sections():
    """sinks/sql/generated/copies_check.sql (written by a test of sinks/src/clickhouse/copies.rs
    from the statements the code sends): section name -> statements."""
    sections, current = {}, None
    with open(os.path.join(SQL_DIR, "generated", "copies_check.sql")) as f:
        for line in f:
            line = line.rstrip("\n")
            if line in ("-- feeders", "-- backfill"):
                current = sections.setdefault(line[3:], [])
            elif line and not line.startswith("--"):
                current.append(line.rstrip(";"))
    return sections


def check_copies(s):
    """A retailer copy (sinks/src/clickhouse/copies.rs) on a current ClickHouse, filled as the
    writer fills it (feeders, then the rows already there), then fed by inserts: it holds
    exactly its retailer's rows and every progress row, and an erasure by subquery (as
    ClickHouseStore::erase_all sends it) removes the shopper. (Who may read the copy cannot be
    checked here: chdb runs every query as `default`; basketflow/tests/analysts.rs checks it on
    the 18.16 server.)"""
    main, copy, r = "basketflow_copies", "basketflow_copy_r1", "'r\\'1'"
    for db in (main, copy):
        s.query(f"CREATE DATABASE {db}")
        for _, sql in statements(db):
            s.query(sql)
    sections = copy_sections()
    if sorted(sections) != ["backfill", "feeders"]:
        failures.append("copies_check.sql sections")
    # Before the copy: r'1 and r2 rows at time 10.
    s.query(f"INSERT INTO {main}.baskets_versions VALUES ({r},'s1','p1',2,0,10), ({r},'s2','p1',1,0,10), "
            f"('r2','s1','p1',5,0,10)")
    s.query(f"INSERT INTO {main}.shopper_purchases_versions VALUES ({r},'s1','p1',2,1,toDateTime(1768471200),0,10)")
    s.query(f"INSERT INTO {main}.progress (time, written_at, note) VALUES (10, now(), 'one')")
    for sql in sections["feeders"] + sections["backfill"]:
        s.query(sql)
    # Then through the feeders: a change of s1's basket, r2 rows, a progress row.
    s.query(f"INSERT INTO {main}.baskets_versions VALUES ({r},'s1','p1',3,0,20), ('r2','s3','p9',1,0,20)")
    s.query(f"INSERT INTO {main}.progress (time, written_at, note) VALUES (20, now(), 'two')")
    check(s, "copy: the retailer's rows of the view",
          f"SELECT * FROM {copy}.baskets ORDER BY shopper_id", '"r\'1","s1","p1",3\n"r\'1","s2","p1",1')
    check(s, "copy: equal to the main view filtered",
          f"SELECT (SELECT groupArray(tuple(*)) FROM (SELECT * FROM {copy}.baskets ORDER BY shopper_id)) = "
          f"(SELECT groupArray(tuple(*)) FROM (SELECT * FROM {main}.baskets WHERE retailer_id = {r} ORDER BY shopper_id))",
          "1")
    check(s, "copy: no other retailer's rows",
          f"SELECT count() FROM {copy}.baskets_versions WHERE retailer_id != {r}", "0")
    check(s, "copy: every progress row", f"SELECT max(time), uniqExact(time) FROM {copy}.progress", "20,2")
    # An erasure of s1, named by subquery (erasing_shoppers), in the main tables and the copy.
    s.query(f"CREATE TABLE {main}.erasing_shoppers (retailer_id String, shopper_id String) ENGINE = MergeTree() ORDER BY (retailer_id, shopper_id)")
    s.query(f"INSERT INTO {main}.erasing_shoppers VALUES ({r}, 's1')")
    for db in (main, copy):
        for t in ["baskets_versions", "shopper_purchases_versions"]:
            s.query(f"ALTER TABLE {db}.{t} DELETE WHERE (retailer_id, shopper_id) IN "
                    f"(SELECT retailer_id, shopper_id FROM {main}.erasing_shoppers)")
            wait_mutations(s, db, t)
    check(s, "copy: the erasure by subquery removes the shopper",
          f"SELECT shopper_id, count() FROM {copy}.baskets_versions GROUP BY shopper_id", '"s2",1')
    check(s, "copy: and from shopper_purchases", f"SELECT count() FROM {copy}.shopper_purchases_versions", "0")
    check(s, "main: the other retailer's s1 stays",
          f"SELECT retailer_id, shopper_id FROM {main}.baskets_versions WHERE shopper_id = 's1'", '"r2","s1"')


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
            "order_lines": f"SELECT * FROM {DB}.order_lines ORDER BY retailer_id, order_id, product_id, category",
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
        check(s, "order_lines columns",
              f"SELECT name, type FROM system.columns WHERE database = '{DB}' AND table = 'order_lines' ORDER BY position",
              '"retailer_id","String"\n"order_id","String"\n"shopper_id","String"\n"product_id","String"\n'
              '"category","String"\n"quantity","Int64"\n"revenue_cents","Int64"\n"ordered_at","DateTime"\n'
              '"day","Date"\n"cancelled","UInt8"')

        # Batch 1 (through 10): inserts at 5, a change and a deletion at 10.
        q(f"""INSERT INTO {DB}.sold_products_daily_versions VALUES
            ('2026-01-15','r1','p1','c1',2,200,1,0,5), ('2026-01-15','r1','p2','c1',1,150,1,0,5),
            ('2026-01-15','r1','p1','c1',5,500,2,0,10)""")
        q(f"""INSERT INTO {DB}.shopper_purchases_versions VALUES
            ('r1','s1','p1',2,1,toDateTime(1768471200),0,5)""")
        q(f"INSERT INTO {DB}.product_affinities_versions VALUES ('r1','p1','p2',1,0,5)")
        q(f"""INSERT INTO {DB}.baskets_versions VALUES
            ('r1','s1','p1',2,0,5), ('r1','s1','p3',1,0,5), ('r1','s1','p3',0,1,10)""")
        # o1 paid at 5, cancelled at 10 (a new version of its line); o2 paid at 10.
        q(f"""INSERT INTO {DB}.order_lines_versions VALUES
            ('r1','o1','s1','p1','c1',2,200,toDateTime(1768471200),'2026-01-15',0,0,5),
            ('r1','o1','s1','p1','c1',2,200,toDateTime(1768471200),'2026-01-15',1,0,10),
            ('r1','o2','s1','p2','c1',1,100,toDateTime(1768471200),'2026-01-15',0,0,10)""")
        for v, sql in views.items():
            check(s, f"{v}: batch 1 written, no progress row yet: invisible", sql, "")
        q(f"INSERT INTO {DB}.progress (time, written_at, note) VALUES (10, now(), 'batch 1')")

        after_1 = {
            "sold_products_daily": '"2026-01-15","r1","p1","c1",5,500,2\n"2026-01-15","r1","p2","c1",1,150,1',
            "shopper_purchases": '"r1","s1","p1",2,1,"2026-01-15 10:00:00"',
            "product_affinities": '"r1","p1","p2",1',
            "baskets": '"r1","s1","p1",2',
            "order_lines": '"r1","o1","s1","p1","c1",2,200,"2026-01-15 10:00:00","2026-01-15",1\n'
                           '"r1","o2","s1","p2","c1",1,100,"2026-01-15 10:00:00","2026-01-15",0',
        }
        # DateTime text depends on the session time zone: show it in UTC.
        views["shopper_purchases"] = (
            f"SELECT retailer_id, shopper_id, product_id, quantity, orders, toString(last_purchase_at, 'UTC') "
            f"FROM {DB}.shopper_purchases ORDER BY retailer_id, shopper_id, product_id")
        views["order_lines"] = (
            f"SELECT retailer_id, order_id, shopper_id, product_id, category, quantity, revenue_cents, "
            f"toString(ordered_at, 'UTC'), day, cancelled "
            f"FROM {DB}.order_lines ORDER BY retailer_id, order_id, product_id, category")
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
        # o2's winning payment changes at 15: its old line deleted (the tombstone's day is
        # 1970-01-01, another partition), a line of another product in another month.
        q(f"""INSERT INTO {DB}.order_lines_versions VALUES
            ('r1','o2','','p2','c1',0,0,toDateTime(0),toDate(0),0,1,15),
            ('r1','o2','s1','p3','c1',4,400,toDateTime(1769938200),'2026-02-01',0,0,15)""")
        q(f"INSERT INTO {DB}.progress (time, written_at, note) VALUES (20, now(), 'batch 2')")
        after_2 = {
            "sold_products_daily": '"2026-01-15","r1","p1","c1",5,500,2\n"2026-02-01","r1","p1","c1",1,100,1',
            "shopper_purchases": '"r1","s1","p1",3,2,"2026-01-16 13:00:00"',
            "product_affinities": '"r1","p1","p2",1',
            "baskets": '"r1","s1","p1",3',
            "order_lines": '"r1","o1","s1","p1","c1",2,200,"2026-01-15 10:00:00","2026-01-15",1\n'
                           '"r1","o2","s1","p3","c1",4,400,"2026-02-01 09:30:00","2026-02-01",0',
        }
        for v, sql in views.items():
            check(s, f"{v}: after batch 2", sql, after_2[v])

        # Batch 3, partially written (no progress row): invisible. Committed stays 20.
        q(f"INSERT INTO {DB}.sold_products_daily_versions VALUES ('2026-01-15','r1','p1','c1',9,900,9,0,30)")
        q(f"INSERT INTO {DB}.product_affinities_versions VALUES ('r1','p1','p3',1,0,30)")
        q(f"INSERT INTO {DB}.baskets_versions VALUES ('r1','s1','p1',0,1,30)")
        q(f"INSERT INTO {DB}.order_lines_versions VALUES "
          f"('r1','o3','s1','p1','c1',1,100,toDateTime(1769938200),'2026-02-01',0,0,30)")
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
        check(s, "filter on order_lines.cancelled",
              f"SELECT order_id, quantity FROM {DB}.order_lines WHERE cancelled = 0", '"o2",4')
        check(s, "filter on order_lines.day",
              f"SELECT order_id FROM {DB}.order_lines WHERE day < '2026-02-01'", '"o1"')

        # The recovery mutation, then batch 3 written again in full.
        for t in ["sold_products_daily_versions", "shopper_purchases_versions",
                  "product_affinities_versions", "baskets_versions", "order_lines_versions"]:
            # As ClickHouseStore::discard_uncommitted does it: a mutation, then poll
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
              f"(SELECT count() FROM {DB}.baskets_versions WHERE time > 20) + "
              f"(SELECT count() FROM {DB}.order_lines_versions WHERE time > 20)", "0")
        q(f"INSERT INTO {DB}.sold_products_daily_versions VALUES ('2026-01-15','r1','p1','c1',6,600,3,0,30)")
        q(f"INSERT INTO {DB}.progress (time, written_at, note) VALUES (30, now(), 'batch 3')")
        after_3 = dict(after_2)
        after_3["sold_products_daily"] = '"2026-01-15","r1","p1","c1",6,600,3\n"2026-02-01","r1","p1","c1",1,100,1'
        for v, sql in views.items():
            check(s, f"{v}: after batch 3 rewritten", sql, after_3[v])

        # Merges (ReplacingMergeTree keeps only the newest version per key) change nothing.
        for t in ["sold_products_daily_versions", "shopper_purchases_versions",
                  "product_affinities_versions", "baskets_versions", "order_lines_versions"]:
            q(f"OPTIMIZE TABLE {DB}.{t} FINAL")
        for v, sql in views.items():
            check(s, f"{v}: after OPTIMIZE FINAL", sql, after_3[v])

        check_privacy(s)
        check_analyst_queries(s)
        check_copies(s)

    if failures:
        print(f"\nFAILED: {len(failures)} check(s): {', '.join(failures)}")
        sys.exit(1)
    print("\nall chdb checks passed")


if __name__ == "__main__":
    main()
