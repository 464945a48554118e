#!/usr/bin/env python3
"""A worked example of a reader that acknowledges what it has indexed.

    mkfifo /tmp/flusso-acks
    flusso-pg follow --config flusso.yaml --ack-file /tmp/flusso-acks \
        | python3 ack_reader.py --ack-file /tmp/flusso-acks --index-file docs.ndjson

flusso-pg confirms its replication slot only up to the LSNs this reader writes
back, so a crash of the reader after reading but before indexing loses nothing:
flusso-pg delivers those lines again on its next start.

It may open the ack FIFO before reading a line: flusso-pg opens its end at
start, beside the backfill, so neither side waits for the other.

The rules this reader follows:
  * lines arrive in non-decreasing "lsn" order;
  * the last line of every batch flusso-pg flushes (backfill batches too)
    carries "ack": true;
  * after a line marked "ack": true and every line before it are durably
    indexed, write back its "lsn": once per marked line, in order. Backfill
    lines all carry the snapshot's LSN, so flusso-pg counts these
    acknowledgements to know how far the backfill is stored;
  * a rebuild (every backfill, and an inline rebuild after partition
    maintenance, a default column list that changed, a table back in the
    publication) sits between "rebuild_start" and "rebuild_done": at
    rebuild_done, every document of that index not upserted since
    rebuild_start is gone. This reader deletes them (it remembers the ids it
    holds); a search engine can instead fill a fresh index from rebuild_start
    and swap an alias at rebuild_done.

Here "indexing" appends the folded documents to a file and fsyncs it; a real
reader would send a bulk request to Elasticsearch, OpenSearch, Meilisearch or
Typesense and wait for it to succeed.
"""
import argparse
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ack-file", required=True, help="the FIFO passed to flusso-pg --ack-file")
    ap.add_argument("--index-file", required=True, help="where the example 'indexes' documents")
    ap.add_argument("--batch", type=int, default=500, help="lines per bulk request")
    args = ap.parse_args()

    acks = open(args.ack_file, "w", buffering=1)  # line-buffered: one LSN per line
    index = open(args.index_file, "a")
    batch = []
    held = {}     # index -> {id: key}: the documents the index holds
    rebuilt = {}  # index -> ids upserted since its rebuild_start

    def index_batch():
        # One bulk request: here, append and fsync.
        for line in batch:
            index.write(json.dumps(line) + "\n")
        index.flush()
        os.fsync(index.fileno())
        batch.clear()

    def fold(line):
        # What the index holds, so a rebuild_done knows what to delete.
        name, op = line["index"], line["op"]
        docs = held.setdefault(name, {})
        if op == "upsert":
            docs[line["id"]] = line["key"]
            if name in rebuilt:
                rebuilt[name].add(line["id"])
        elif op == "delete":
            docs.pop(line["id"], None)
        elif op == "truncate":
            docs.clear()
        elif op == "rebuild_start":
            rebuilt[name] = set()
        elif op == "rebuild_done":
            # A rebuild_done written again after a kill finds its set
            # still there: it deletes the same, nothing more.
            keep = rebuilt.get(name, set())
            for id_, key in list(docs.items()):
                if id_ not in keep:
                    batch.append({"index": name, "op": "delete", "key": key, "id": id_, "lsn": line["lsn"]})
                    del docs[id_]

    for raw in sys.stdin:
        line = json.loads(raw)
        fold(line)
        batch.append(line)
        if line.get("ack") or len(batch) >= args.batch:
            index_batch()
        if line.get("ack"):
            # Everything up to this line is stored: flusso-pg may confirm it.
            acks.write(line["lsn"] + "\n")


if __name__ == "__main__":
    main()
