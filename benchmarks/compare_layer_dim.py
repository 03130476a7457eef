"""Put several train_nested results side by side over (layer, dim): one markdown table.

python -m benchmarks.compare_layer_dim minilm-starbucks minilm-2d --out starbucks-vs-2d
"""

from __future__ import annotations

import argparse
import json

from benchmarks import common

RESULTS = common.RESULTS / "training"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tags", nargs="+")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    records = [json.loads((RESULTS / f"{tag}.json").read_text()) for tag in args.tags]
    keys = sorted({k for r in records for k in r["ndcg@10"]["trained"]}, key=lambda k: tuple(map(int, k.split(":"))))
    starbucks = {tuple(p) for r in records if r["metadata"].get("scheme") == "starbucks" for p in r["metadata"]["layer_dim_pairs"]}
    lines = [
        "# NDCG@10 on Cranfield by (layer, dim), same data and time budget",
        "",
        f"`{common.command()}`",
        "",
        "Made from: " + "; ".join(f"`{r['command']}`" for r in records),
        "",
        "| "
        + " | ".join(
            f"{r['tag']} ({r['metadata']['scheme']}, {r['metadata']['steps']} steps, {r['metadata']['train_seconds']:.0f} s)"
            for r in records
        )
        + " |",
    ]
    lines[-1] = "| layer:dim " + lines[-1]
    lines.append("|---" * (len(records) + 1) + "|")
    for key in keys:
        mark = " *" if tuple(map(int, key.split(":"))) in starbucks else ""
        lines.append(f"| {key}{mark} | " + " | ".join(str(r["ndcg@10"]["trained"].get(key, "")) for r in records) + " |")
    lines += ["", "`*` marks the Starbucks pairs (trained at every step); 2D Matryoshka samples one layer and one dim per step."]
    text = "\n".join(lines) + "\n"
    (RESULTS / f"{args.out}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
