"""Cut the small real fixtures in tests/data from the shared datasets (run once; the output is committed).

    python tests/data/make_fixtures.py ../shared/data

Each slice keeps the datasets' own files and formats (BEIR: corpus.jsonl, queries.jsonl,
qrels/*.tsv), so the loaders meet the real thing: the first documents of each corpus, every
document judged for the queries kept, and the judgements of those queries only; besides, the
two empty Cranfield documents and two Debian ids that the corpus repeats, which tests need.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_qrels(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    return [line.split("\t") for line in lines[1:] if line.strip()]


def write_slice(source: Path, name: str, first_docs: int, queries_per_split: dict[str, int], also: tuple[str, ...] = ()) -> None:
    corpus = read_jsonl(source / "corpus.jsonl")
    queries = read_jsonl(source / "queries.jsonl")
    keep_docs = {row["_id"] for row in corpus[:first_docs]} | set(also)
    kept_qrels: dict[str, list[list[str]]] = {}
    keep_queries: set[str] = set()
    for split, count in queries_per_split.items():
        rows = read_qrels(source / "qrels" / f"{split}.tsv")
        order = list(dict.fromkeys(row[0] for row in rows))[:count]
        chosen = set(order)
        kept_qrels[split] = [row for row in rows if row[0] in chosen]
        keep_queries |= chosen
        keep_docs |= {row[1] for row in kept_qrels[split]}
    target = HERE / name
    (target / "qrels").mkdir(parents=True, exist_ok=True)
    with (target / "corpus.jsonl").open("w", encoding="utf-8") as out:
        for row in corpus:
            if row["_id"] in keep_docs:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
    with (target / "queries.jsonl").open("w", encoding="utf-8") as out:
        for row in queries:
            if row["_id"] in keep_queries:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
    for split, rows in kept_qrels.items():
        with (target / "qrels" / f"{split}.tsv").open("w") as out:
            out.write("query-id\tcorpus-id\tscore\n")
            for row in rows:
                out.write("\t".join(row) + "\n")


def write_head(source: Path, name: str, lines: int) -> None:
    with source.open(encoding="utf-8") as handle, (HERE / "train" / name).open("w", encoding="utf-8") as out:
        for _, line in zip(range(lines), handle):
            out.write(line)


def main() -> None:
    shared = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
    write_slice(
        shared / "cranfield", "cranfield", first_docs=200, queries_per_split={"test": 40}, also=("471", "995")
    )  # the two empty documents
    write_slice(shared / "scifact", "scifact", first_docs=150, queries_per_split={"test": 60, "train": 40})
    write_slice(
        shared / "debian", "debian", first_docs=150, queries_per_split={"test": 30}, also=("default-jdk", "default-jre")
    )  # repeated ids
    (HERE / "train").mkdir(exist_ok=True)
    write_head(shared / "train" / "debian-pairs.jsonl", "debian-pairs.jsonl", 64)
    write_head(shared / "train" / "stsb-train.jsonl", "stsb-train.jsonl", 64)
    write_head(shared / "train" / "scifact-train-pairs.jsonl", "scifact-train-pairs.jsonl", 32)


if __name__ == "__main__":
    main()
