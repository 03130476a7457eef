"""Put several train_nested results side by side over (layer, dim): one markdown table.

python -m benchmarks.compare_layer_dim minilm-starbucks minilm-2d --out starbucks-vs-2d
"""

from __future__ import annotations

import argparse

from benchmarks import common

RESULTS = common.RESULTS / "training"


def layer_dim(key: str) -> tuple[int, ...]:
    """``"2:64"`` → (2, 64), for sorting."""
    return tuple(map(int, key.split(":")))


def table(results: list[common.Result]) -> str:
    """The markdown table: NDCG@10 of each result (a column) at each (layer, dim) any of them measured (a row)."""
    records = [result.results for result in results]
    keys = sorted({k for r in records for k in r["ndcg@10"]["trained"]}, key=layer_dim)
    starbucks = {tuple(p) for r in records if r["metadata"].get("scheme") == "starbucks" for p in r["metadata"]["layer_dim_pairs"]}
    columns = " | ".join(
        f"{r['tag']} ({r['metadata']['scheme']}, {r['metadata']['steps']} steps, {r['metadata']['train_seconds']:.0f} s)" for r in records
    )
    lines = [
        "# NDCG@10 on Cranfield by (layer, dim), same data and time budget",
        "",
        f"`{common.command()}`",
        "",
        "Made from: " + "; ".join(f"`{result.command}`" for result in results),
        "",
        f"| layer:dim | {columns} |",
        "|---" * (len(records) + 1) + "|",
    ]
    for key in keys:
        mark = " *" if layer_dim(key) in starbucks else ""
        lines.append(f"| {key}{mark} | " + " | ".join(str(r["ndcg@10"]["trained"].get(key, "")) for r in records) + " |")
    lines += ["", "`*` marks the Starbucks pairs (trained at every step); 2D Matryoshka samples one layer and one dim per step."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tags", nargs="+")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    text = table([common.read_result(RESULTS / f"{tag}.json") for tag in args.tags])
    (RESULTS / f"{args.out}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
