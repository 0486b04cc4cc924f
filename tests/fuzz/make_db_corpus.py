#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_db (tests/fuzz/corpus/db): small results databases
(512-byte pages) built from schemas/sql, and broken variants. Run by hand from the source
root when the schema changes; the output is committed."""
import os
import sqlite3
import sys

root = os.path.dirname(os.path.abspath(__file__))
src = os.path.normpath(os.path.join(root, '..', '..'))
out = os.path.join(root, 'corpus', 'db')


def build(path, version=None, rows=True):
    if os.path.exists(path):
        os.remove(path)
    con = sqlite3.connect(path)
    con.execute('PRAGMA page_size = 512')
    with open(os.path.join(src, 'schemas', 'sql', '0001_init.sql')) as f:
        con.executescript(f.read())
    con.executescript('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, '
                      'name TEXT NOT NULL, applied REAL NOT NULL);'
                      "INSERT INTO schema_migrations VALUES (1, 'init', 0);")
    con.execute('PRAGMA user_version = %d' % (version or 1))
    if rows:
        con.execute("INSERT INTO runs (uuid, pipeline, start_time, status) VALUES "
                    "('0f0e0d0c-0b0a-4000-8000-000000000001', 'seed', 1.5, 'FINISHED')")
        con.execute("INSERT INTO samples VALUES ('0f0e0d0c-0b0a-4000-8000-000000000001', 0, "
                    "'s0', 'h', 'p', '[\"a\"]', 'FINISHED', NULL)")
        con.execute("INSERT INTO metrics VALUES ('0f0e0d0c-0b0a-4000-8000-000000000001', "
                    "NULL, 'score/x', 0.5, 0, 1.5)")
    con.commit()
    con.close()
    with open(path, 'rb') as f:
        return f.read()


def main():
    os.makedirs(out, exist_ok=True)
    good = build(os.path.join(out, 'valid.db'))
    build(os.path.join(out, 'newer.db'), version=99)
    with open(os.path.join(out, 'truncated.db'), 'wb') as f:
        f.write(good[:len(good) // 2])
    with open(os.path.join(out, 'header_only.db'), 'wb') as f:
        f.write(good[:100])
    with open(os.path.join(out, 'text.txt'), 'wb') as f:
        f.write(b'name: not a database\n')
    with open(os.path.join(out, 'empty'), 'wb') as f:
        pass
    con = sqlite3.connect(os.path.join(out, 'foreign.db'))
    con.execute('PRAGMA page_size = 512')
    con.execute('CREATE TABLE notes (x TEXT)')
    con.commit()
    con.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
