"""The SQL of the SQLite store: the schema and the statements several methods share.  Named
parameters: `:ns` the namespace, `:t` the store clock, `:ids` a JSON list of escaped ids
(`json_ids`)."""

import json
import sqlite3
from collections.abc import Iterable

from keyrouter.store.codec import escape
from keyrouter.store.decisions import DECISION_ACTIONS


def json_ids(ids: Iterable[str]) -> str:
    """An id list as one JSON parameter for json_each, each id through `escape` first: SQLite's
    JSON functions would cut a string at NUL and mangle a lone surrogate."""
    return json.dumps([escape(id) for id in ids])


SCHEMA = """
CREATE TABLE IF NOT EXISTS finished (
    ns TEXT NOT NULL, id TEXT NOT NULL, kind TEXT NOT NULL, expires_at REAL,
    PRIMARY KEY (ns, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS finished_expiry ON finished (ns, expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS work (
    ns TEXT NOT NULL, id TEXT NOT NULL, owner TEXT, lease_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0, retry_at REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (ns, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS progress (
    ns TEXT NOT NULL, id TEXT NOT NULL, entry TEXT NOT NULL,
    PRIMARY KEY (ns, id, entry)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead (
    ns TEXT NOT NULL, id TEXT NOT NULL, error TEXT NOT NULL, attempts INTEGER NOT NULL,
    failed_at REAL NOT NULL, rule TEXT, row TEXT NOT NULL,
    PRIMARY KEY (ns, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dead_at ON dead (ns, failed_at, id);
CREATE TABLE IF NOT EXISTS stats (
    ns TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY (ns, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS optouts (
    ns TEXT NOT NULL, message_id TEXT NOT NULL, action TEXT NOT NULL, number TEXT NOT NULL,
    keyword TEXT, received_at REAL NOT NULL, handled_at REAL NOT NULL,
    outcome TEXT, transaction_id TEXT, dated INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (ns, message_id, action)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS optouts_received ON optouts (ns, received_at);
CREATE TABLE IF NOT EXISTS optouts_pending (
    ns TEXT NOT NULL, message_id TEXT NOT NULL, action TEXT NOT NULL, number TEXT NOT NULL,
    keyword TEXT, received_at REAL NOT NULL, handled_at REAL NOT NULL,
    outcome TEXT, transaction_id TEXT, dated INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (ns, message_id, action)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS optouts_page ON optouts (ns, received_at, (message_id || '|' || action));
CREATE TABLE IF NOT EXISTS optouts_latest (
    ns TEXT NOT NULL, number TEXT NOT NULL, message_id TEXT NOT NULL, action TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (ns, number)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS surveys (
    ns TEXT NOT NULL, survey TEXT NOT NULL, last_vote_at REAL, rejected INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (ns, survey)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS votes (
    ns TEXT NOT NULL, survey TEXT NOT NULL, voter TEXT NOT NULL, choice TEXT NOT NULL,
    PRIMARY KEY (ns, survey, voter)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vote_ids (
    ns TEXT NOT NULL, survey TEXT NOT NULL, vote_id TEXT NOT NULL,
    PRIMARY KEY (ns, survey, vote_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fetch (
    ns TEXT NOT NULL PRIMARY KEY, owner TEXT, lease_until REAL, token INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS published (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ns TEXT NOT NULL, id TEXT NOT NULL, row TEXT NOT NULL,
    UNIQUE (ns, id));
CREATE TABLE IF NOT EXISTS polls (ns TEXT NOT NULL PRIMARY KEY, at REAL NOT NULL,
    rows INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS touches (ns TEXT NOT NULL PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS routed (
    ns TEXT NOT NULL, hour INTEGER NOT NULL, rule TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (ns, hour, rule)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conv_current (
    ns TEXT NOT NULL, respondent TEXT NOT NULL, message_id TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (ns, respondent)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conv_runs (
    ns TEXT NOT NULL, conversation TEXT NOT NULL, respondent TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (ns, conversation, respondent)) WITHOUT ROWID;
"""

# `j` rows of json_each(:ids) that are finished (a live done/skipped marker, or dead).
FINISHED = """(EXISTS (SELECT 1 FROM finished f WHERE f.ns = :ns AND f.id = j.value
                       AND (f.expires_at IS NULL OR f.expires_at > :t))
             OR EXISTS (SELECT 1 FROM dead d WHERE d.ns = :ns AND d.id = j.value))"""

UNFINISHED = f"SELECT j.value FROM json_each(:ids) j WHERE NOT {FINISHED} ORDER BY j.key"

# A row's owner stays after its lease expired (until finish, fail or release): a claim over another
# owner's expired lease is a take-over.
CLAIMABLE = f"""
SELECT j.value, coalesce(w.attempts, 0), coalesce(w.owner <> :owner, 0) FROM json_each(:ids) j
LEFT JOIN work w ON w.ns = :ns AND w.id = j.value
WHERE NOT {FINISHED}
  AND (w.id IS NULL OR (w.retry_at <= :now
       AND (w.owner IS NULL OR w.owner = :owner OR w.lease_until <= :t)))
ORDER BY j.key LIMIT :limit"""

# Rows (id, row) of :rows whose id is unfinished, in order; a published id keeps its first row.
PUBLISH = f"""
INSERT OR IGNORE INTO published (ns, id, row)
SELECT :ns, j.value, j.row FROM (SELECT key, json_extract(value, '$[0]') AS value,
                                        json_extract(value, '$[1]') AS row FROM json_each(:rows)) j
WHERE NOT {FINISHED} ORDER BY j.key"""

LEASE = """
INSERT INTO work (ns, id, owner, lease_until) SELECT :ns, value, :owner, :until
FROM json_each(:ids) WHERE true
ON CONFLICT (ns, id) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until"""

SURVEY = "ns = :ns AND survey = :survey"
RESULTS = f"""
SELECT (SELECT last_vote_at FROM surveys WHERE {SURVEY}), (SELECT rejected FROM surveys WHERE {SURVEY}),
       (SELECT json_group_object(choice, n) FROM
            (SELECT choice, count(*) AS n FROM votes WHERE {SURVEY} GROUP BY choice))"""

IN = "ns = :ns AND id IN (SELECT value FROM json_each(:ids))"

# The ids of :ids another owner holds a live lease on: finish, fail and dead_letter leave them be.
TAKEN = f"SELECT id FROM work WHERE {IN} AND owner <> :owner AND lease_until > :t"

# optouts_latest keeps, per number, the key of the entry latest_optout returns; a new entry takes
# its place when it comes at the same place or later in keyrouter/ordering.py's order (ties: the
# one recorded last wins), which the caller decides in the same transaction.
LATEST_UPDATE = """
INSERT INTO optouts_latest VALUES (:ns, :number, :message_id, :action, :received_at)
ON CONFLICT (ns, number) DO UPDATE SET message_id = excluded.message_id,
    action = excluded.action, received_at = excluded.received_at"""

# Ledger rows: the column names of inserts, and OptOut's fields in order for selects.
LEDGER_COLUMNS = ("ns, message_id, action, number, keyword, received_at, handled_at, outcome,"
                   " transaction_id, dated")
LEDGER_VALUES = (":ns, :message_id, :action, :number, :keyword, :received_at, :handled_at,"
                 " :outcome, :transaction_id, :dated")
ENTRY = ("number, action, message_id, keyword, received_at, handled_at, outcome, transaction_id,"
         " dated")


LATEST = """
SELECT o.number, o.action, o.message_id, o.keyword, o.received_at, o.handled_at, o.outcome,
       o.transaction_id, o.dated
FROM optouts_latest l JOIN optouts o
    ON o.ns = l.ns AND o.message_id = l.message_id AND o.action = l.action
WHERE l.ns = :ns AND l.number = :number"""


def add_ledger_columns(db: sqlite3.Connection) -> None:
    """A ledger file from before the İYS columns gets them (NULL for old lines), and the `dated`
    column (1: old lines all had a provider date or were taken as if they had)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(optouts)")}
    for column in ("outcome", "transaction_id"):
        if column not in have:
            db.execute(f"ALTER TABLE optouts ADD COLUMN {column} TEXT")
    for table in ("optouts", "optouts_pending"):
        if "dated" not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
            db.execute(f"ALTER TABLE {table} ADD COLUMN dated INTEGER NOT NULL DEFAULT 1")


#: `claim_decision`'s holder of each number (store/decisions.py).
DECISIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS optouts_holder (
    ns TEXT NOT NULL, number TEXT NOT NULL, message_id TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (ns, number)) WITHOUT ROWID
"""

HOLDER = ("SELECT message_id, at FROM optouts_holder WHERE ns = :ns AND number = :number")
HOLDER_PENDING = ("SELECT 1 FROM optouts_pending WHERE ns = :ns AND message_id = :holder"
                  f" AND action IN ({', '.join(repr(a) for a in DECISION_ACTIONS)}) LIMIT 1")
LINE = ("SELECT 1 FROM optouts WHERE ns = :ns AND message_id = :other AND action = :action")
RECORDED = ("SELECT 1 FROM optouts WHERE ns = :ns AND message_id = :message_id"
            " AND action = :action")
PENDING_ADD = f"INSERT OR IGNORE INTO optouts_pending ({LEDGER_COLUMNS}) VALUES ({LEDGER_VALUES})"
HOLDER_SET = """
INSERT INTO optouts_holder VALUES (:ns, :number, :message_id, :t)
ON CONFLICT (ns, number) DO UPDATE SET message_id = excluded.message_id, at = excluded.at"""
