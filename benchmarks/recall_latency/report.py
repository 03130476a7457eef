"""Plots and markdown tables from the JSON files that ``run.py`` writes.

    python -m benchmarks.recall_latency.report            # every JSON in results/recall-latency/

Per run: ``<run>.png`` (recall@10 against single-query and batch-64 latency, every method) and
``<run>.md`` (equal-recall and equal-latency comparisons, then every configuration measured).
Result files in the schema of :mod:`benchmarks.common` and the flat ones written before it read alike.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast

from benchmarks.common import read_result
from benchmarks.recall_latency.run import OUT

Row = dict[str, Any]
"""A JSON object of a run: the run itself, one of its methods, or one configuration of a method."""

RECALL_TARGETS = (0.90, 0.95, 0.99)
SCALE_NAMES = {10_000: "10k", 100_000: "100k", 1_000_000: "1m"}
LATENCY_BUDGETS_MS = (0.5, 1.0, 2.0, 5.0, 10.0)


def read_run(path: Path) -> Row:
    """One run's file as the flat record the tables read: its results, with its command and machine."""
    result = read_result(path)
    return {**result.results, "command": result.command, "machine": result.machine}


def latency(row: Row, timing: str = "batch1") -> float:
    """The latency the comparisons use: CPU ms per query (see ``measure.Timing``)."""
    return row[timing]["cpu_median_ms"]


def _funnel(method: Row) -> bool:
    return method["method"] == "funnel"


def fastest_at(method: Row, target: float, key: str = "recall@10") -> Row | None:
    rows = [row for row in method["configs"] if row[key] >= target]
    return min(rows, key=latency) if rows else None


def best_within(method: Row, budget_ms: float, key: str = "recall@10") -> Row | None:
    rows = [row for row in method["configs"] if latency(row) <= budget_ms]
    return max(rows, key=lambda row: row[key]) if rows else None


def picked(methods: list[Row], pick: Callable[[Row], Row | None]) -> list[tuple[Row, Row]]:
    """(row, method) for each of ``methods`` where ``pick`` finds a row, in order."""
    return [(row, method) for method in methods if (row := pick(method)) is not None]


def title(run: Row) -> str:
    scale = f"{run['scale'] // 1000}k" if run["scale"] < 1_000_000 else f"{run['scale'] // 1_000_000}M"
    gpu = ", GPU" if run.get("gpu") else ""
    return f"{scale} documents, {run['source']['vectors']}{gpu}"


def plot(run: Row, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    figure, axes = plt.subplots(1, 2, figsize=(15, 6.5), sharey=True)
    styles = {"funnel": "-", "exact": "", "faiss-refine": "--", "st-quantized": ":", "hnsw-full": "-."}
    colours = cast(Sequence[Any], cast(ListedColormap, plt.get_cmap("tab20")).colors)
    for axis, timing in zip(axes, ("batch1", "batch64")):
        for number, method in enumerate(run["methods"]):
            rows = sorted((row for row in method["configs"] if row.get(timing)), key=lambda row: latency(row, timing))
            if not rows:
                continue
            x = [latency(row, timing) for row in rows]
            y = [row["recall@10"] for row in rows]
            if method["method"] == "exact":
                axis.scatter(x, y, marker="*", s=220, color="black", zorder=5, label=method["family"])
                continue
            colour = colours[number % len(colours)]
            axis.scatter(x, y, s=14, color=colour, alpha=0.6)
            front, best = [], -1.0  # the Pareto front: each point beats every faster one on recall
            for xi, yi in zip(x, y):
                if yi > best:
                    front.append((xi, yi))
                    best = yi
            axis.plot(
                *zip(*front),
                styles[method["method"]],
                marker="o",
                markersize=4,
                linewidth=2.2 if _funnel(method) else 1.4,
                color=colour,
                label=method["family"],
            )
        axis.set_xscale("log")
        axis.set_xlabel(
            "CPU ms per query, one query per call, one thread (median)"
            if timing == "batch1"
            else "CPU ms per query in batches of 64, all threads of the process (median)"
        )
        axis.axhline(0.99, color="grey", linewidth=0.6, linestyle=":")
        axis.grid(True, which="both", alpha=0.3)
        axis.set_ylim(max(0.0, min(min(r["recall@10"] for m in run["methods"] for r in m["configs"]) - 0.02, 0.8)), 1.005)
    axes[0].set_ylabel("recall@10 against exact full-dim search")
    axes[1].legend(fontsize=7.5, loc="lower right")
    figure.suptitle(f"recall@10 vs latency — {title(run)} ({run['machine']['cores']} cores, {run['machine']['cpu']})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _ms(row: Row | None) -> str:
    return f"{latency(row):.3g}" if row else "—"


def markdown(run: Row, name: str) -> str:
    exact = next(m for m in run["methods"] if m["method"] == "exact")
    exact_ms = latency(exact["configs"][0])
    exact_wall = exact["configs"][0]["batch1"]["median_ms"]
    funnels = [m for m in run["methods"] if _funnel(m)]
    others = [m for m in run["methods"] if not _funnel(m)]
    lines = [f"## {title(run)}", ""]
    lines.append(
        f"{run['queries']} queries for recall, {run['latency_queries']} timed one at a time, k=10. "
        f"Latency here is CPU time per query (single-query calls on one thread: what the call takes on an idle core); "
        f"wall-clock figures are in the last table. Exact flat search: {exact_ms:.2f} ms CPU ({exact_wall:.2f} ms wall) per query at the start of the run, "
        + (
            f"{run['exact_batch1_cpu_ms_start_end'][1]:.2f} ms CPU ({run['exact_batch1_ms_start_end'][1]:.2f} ms wall) at the end. "
            if run["exact_batch1_cpu_ms_start_end"][1] is not None
            else "not re-measured at the end (run cut short). "
        )
        + f"Load average at start/end: "
        f"{run['load_average_start_end'][0][0]:.1f} / {run['load_average_start_end'][1][0]:.1f} on {run['machine']['cores']} cores. "
        f"FAISS threads: {run.get('threads', {}).get('faiss_omp', '?')}. "
        f"Run took {run['seconds_total'] / 60:.1f} min wall, {run.get('cpu_seconds_total', 0) / 60:.1f} min CPU"
        f"{'' if run.get('complete', True) else ' (cut short by the time budget: the methods below are those it finished)'}. Command: `{run['command']}`."
        + (
            f" Methods come from {len(run['exact_cpu_ms_per_process'])} processes run one after another (wall and CPU above are their sums); exact search in each: "
            + ", ".join(f"{ms:.1f}" for ms in run["exact_cpu_ms_per_process"])
            + " ms CPU; the first is the reference here."
            if run.get("exact_cpu_ms_per_process")
            else ""
        )
    )
    lines.append("")

    def best_funnel_at(target: float) -> tuple[Row, Row] | None:
        found = picked(funnels, partial(fastest_at, target=target))
        return min(found, key=lambda pair: latency(pair[0])) if found else None

    alternatives = [m for m in others if m["method"] != "exact"]
    lines += ["### Headline", ""]
    for target in (0.99, 0.95, 0.90):
        text = f"- recall@10 ≥ {target:.2f}: "
        best_pair = best_funnel_at(target)
        if best_pair:
            best, best_method = best_pair
            text += (
                f"funnel **{latency(best):.2f} ms** CPU per query ({best_method['family']}, {best['label']}, recall@10 {best['recall@10']:.3f}), "
                f"**{exact_ms / latency(best):.1f}× faster than exact** search ({exact_ms:.1f} ms)"
            )
        else:
            text += "no funnel setting reached it"
        rivals = picked(alternatives, partial(fastest_at, target=target))
        if rivals:
            rival, rival_method = min(rivals, key=lambda pair: latency(pair[0]))
            text += f"; best alternative: {rival_method['family']} ({rival['label']}) {latency(rival):.2f} ms, {exact_ms / latency(rival):.1f}× exact."
        else:
            text += "; no alternative reached it."
        lines.append(text)
    for divisor in (30, 10):
        budget = exact_ms / divisor
        found = picked(funnels, partial(best_within, budget_ms=budget))
        rivals = picked(alternatives, partial(best_within, budget_ms=budget))
        text = f"- within exact/{divisor} ({budget:.2f} ms CPU): "
        if found:
            row, method = max(found, key=lambda pair: pair[0]["recall@10"])
            text += f"funnel's best recall@10 **{row['recall@10']:.3f}** ({method['family']}, {row['label']}, {latency(row):.2f} ms)"
        else:
            text += "no funnel setting is that fast"
        if rivals:
            row, method = max(rivals, key=lambda pair: pair[0]["recall@10"])
            text += f"; best alternative {row['recall@10']:.3f} ({method['family']}, {row['label']}, {latency(row):.2f} ms)."
        lines.append(text)
    lines.append("")
    lines += ["### Equal recall: lowest single-query CPU ms (median) reaching recall@10 ≥ target", ""]
    header = "| method | " + " | ".join(f"≥ {t:.2f}" for t in RECALL_TARGETS) + " |"
    lines += [header, "|---|" + "---:|" * len(RECALL_TARGETS)]
    for method in funnels + others:
        cells = []
        for target in RECALL_TARGETS:
            fastest = fastest_at(method, target)
            funnel_best = best_funnel_at(target)
            ratio = (
                f" ({latency(fastest) / latency(funnel_best[0]):.1f}× funnel's)" if fastest and funnel_best and not _funnel(method) else ""
            )
            speed = f", {exact_ms / latency(fastest):.1f}× exact" if fastest and method["method"] != "exact" else ""
            cells.append(f"{_ms(fastest)}{speed}{ratio}" if fastest else "—")
        lines.append(f"| {method['family']} | " + " | ".join(cells) + " |")
    lines.append("")

    lines += ["### Equal latency: best recall@10 within a single-query CPU budget (median ms)", ""]
    budgets = LATENCY_BUDGETS_MS + (float(f"{exact_ms / 30:.3g}"),)
    lines += [
        "| method | " + " | ".join(f"≤ {b:g} ms" + (" (exact/30)" if b == budgets[-1] else "") for b in budgets) + " |",
        "|---|" + "---:|" * len(budgets),
    ]
    for method in funnels + others:
        cells = []
        for budget in budgets:
            within = best_within(method, budget)
            cells.append(f"{within['recall@10']:.3f}" if within else "—")
        lines.append(f"| {method['family']} | " + " | ".join(cells) + " |")
    lines.append("")

    lines += [
        "### Cost of each index",
        "",
        "| method | build s | RAM MB | memory-mapped MB | disk MB | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for method in run["methods"]:
        lines.append(
            f"| {method['family']} | {method['build_seconds']:.1f} | {method['ram_bytes'] / 2**20:.1f} | "
            f"{method['mapped_bytes'] / 2**20:.1f} | {method['disk_bytes'] / 2**20:.1f} | {method['notes']} |"
        )
    for skipped in run.get("skipped", []):
        lines.append(f"| {skipped['method']} | not run | | | | {skipped['why']} |")
    lines.append("")

    lines += [
        "### Every configuration",
        "",
        "| method | setting | recall@10 | recall@100 | batch 1: CPU ms | × exact (CPU) | wall median ms | wall p95 ms | wall QPS | batch 64: CPU ms/query | wall ms/query | wall p95 | wall QPS |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method in run["methods"]:
        for row in method["configs"]:
            one, many = row["batch1"], row.get("batch64")
            many_cells = (
                f"{many['cpu_median_ms']:.3f} | {many['median_ms']:.3f} | {many['p95_ms']:.3f} | {many['qps']:.0f}"
                if many
                else "— | — | — | —"
            )
            lines.append(
                f"| {method['family']} | {row['label']} | {row['recall@10']:.4f} | {row['recall@100']:.4f} | "
                f"{one['cpu_median_ms']:.3f} | {exact_ms / one['cpu_median_ms']:.1f} | {one['median_ms']:.3f} | {one['p95_ms']:.3f} | {one['qps']:.0f} | {many_cells} |"
            )
    lines.append("")
    lines.append(f"![recall vs latency]({name}.png)")
    return "\n".join(lines) + "\n"


def merged(paths: list[Path]) -> Row:
    """Runs of one scale and vectors made by separate processes (``--tag``) as one: the first run's
    exact search is the reference for the comparisons; each run's own is listed beside it."""
    runs = [read_run(path) for path in paths]
    run = dict(runs[0])
    run["methods"] = list(runs[0]["methods"]) + [m for other in runs[1:] for m in other["methods"] if m["method"] != "exact"]
    run["complete"] = all(r.get("complete", True) for r in runs)
    if len(runs) > 1:
        run["command"] = "` and `".join(r["command"] for r in runs)
        run["seconds_total"] = sum(r["seconds_total"] for r in runs)  # the suite runs them one after another
        run["cpu_seconds_total"] = sum(r.get("cpu_seconds_total", 0) for r in runs)
        run["exact_cpu_ms_per_process"] = [r["methods"][0]["configs"][0]["batch1"]["cpu_median_ms"] for r in runs]
    return run


# Runs whose vectors were rotated before any method saw them (the appendix's); today's runs give
# every method the model's vectors and funnel rotates its own index.
ORDER_NAMES = {"minilm-pca": " (PCA order)", "surrogate-pca": " (PCA order)"}


def scale_headlines(runs: list[Row]) -> str:
    """Per scale: funnel's best against the best alternative, at two recall targets and two speed budgets."""
    by_scale: dict[int, list[Row]] = {}
    for run in runs:
        by_scale.setdefault(run["scale"], []).append(run)
    lines = [
        "## Per scale: funnel's best against the best alternative",
        "",
        "CPU ms per query, one query per call (median); × = exact search's CPU ms in the same run divided by the method's. "
        "funnel stores the vectors in the rotation its index build fits (`--rotation auto`); every other method gets the model's vectors "
        "(full-dimension methods do not depend on the order: a rotation keeps every inner product).",
        "",
        "| scale | vectors | exact ms | target | funnel: best | × exact | best alternative | × exact |",
        "|---|---|---:|---|---|---:|---|---:|",
    ]

    def entry(row: Row, method: Row, run: Row) -> tuple[str, float]:
        exact_ms = latency(next(m for m in run["methods"] if m["method"] == "exact")["configs"][0])
        return (
            f"{method['family']}, {row['label']}{ORDER_NAMES.get(run['vectors'], '')}: {row['recall@10']:.3f} at {latency(row):.2f} ms",
            exact_ms / latency(row),
        )

    for scale, group in sorted(by_scale.items()):
        exact_ms = min(latency(next(m for m in r["methods"] if m["method"] == "exact")["configs"][0]) for r in group)
        vectors = group[0]["source"]["vectors"].split(",")[0]
        for target in (0.99, 0.95):
            cells = []
            for want_funnel in (True, False):
                found = [
                    (row, m, r)
                    for r in group
                    for m in r["methods"]
                    if _funnel(m) == want_funnel and m["method"] != "exact" and (row := fastest_at(m, target)) is not None
                ]
                if found:
                    text, ratio = entry(*min(found, key=lambda f: latency(f[0])))
                    cells += [text, f"{ratio:.1f}×"]
                else:
                    best = [
                        (max(m["configs"], key=lambda row: row["recall@10"]), m, r)
                        for r in group
                        for m in r["methods"]
                        if _funnel(m) == want_funnel and m["method"] != "exact"
                    ]
                    text, ratio = entry(*max(best, key=lambda f: f[0]["recall@10"])) if best else ("—", 0)
                    cells += [f"not reached; highest {text}" if best else "—", f"{ratio:.1f}×" if best else ""]
            lines.append(
                f"| {SCALE_NAMES.get(scale, scale)} | {vectors} | {exact_ms:.2f} | recall@10 ≥ {target:.2f} | " + " | ".join(cells) + " |"
            )
        for divisor in (30, 10):
            cells = []
            for want_funnel in (True, False):
                found = []
                for r in group:
                    run_exact = latency(next(m for m in r["methods"] if m["method"] == "exact")["configs"][0])
                    found += [
                        (row, m, r)
                        for m in r["methods"]
                        if _funnel(m) == want_funnel and m["method"] != "exact" and (row := best_within(m, run_exact / divisor)) is not None
                    ]
                if found:
                    text, ratio = entry(*max(found, key=lambda f: f[0]["recall@10"]))
                    cells += [text, f"{ratio:.1f}×"]
                else:
                    cells += ["none that fast", ""]
            lines.append(
                f"| {SCALE_NAMES.get(scale, scale)} | {vectors} | {exact_ms:.2f} | ≥ {divisor}× below exact: highest recall@10 | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(lines) + "\n"


def _fastest_or_best(methods: list[Row], target: float) -> tuple[Row, Row, bool] | None:
    """The fastest configuration reaching ``target`` recall@10 among ``methods``; if none does,
    the highest-recall one. Returns (row, method, reached); None for no configuration at all."""
    reached = picked(methods, partial(fastest_at, target=target))
    if reached:
        row, method = min(reached, key=lambda pair: latency(pair[0]))
        return row, method, True
    rows = [(row, m) for m in methods for row in m["configs"]]
    if not rows:
        return None
    row, method = max(rows, key=lambda pair: (pair[0]["recall@10"], -latency(pair[0])))
    return row, method, False


def memory_per_document(method: Row, count: int) -> float:
    """Bytes a document costs to answer queries: what the method holds in memory plus the
    memory-mapped files its searches read (funnel's stored vectors)."""
    return (method["ram_bytes"] + method.get("mapped_bytes", 0)) / count


ALTERNATIVE_GROUPS = (
    ("full-dim HNSW", lambda m: m["method"] == "hnsw-full"),
    ("best FAISS refine index", lambda m: m["method"] == "faiss-refine"),
    ("sentence-transformers quantized + rescore", lambda m: m["method"] == "st-quantized"),
)


def _run_name(run: Row) -> str:
    return f"{run['vectors']} {SCALE_NAMES.get(run['scale'], run['scale'])}"


def _setting(row: Row, method: Row, reached: bool = True) -> str:
    """A table cell naming a method's setting and its recall@10, e.g. ``funnel pq → 384, n=200: 0.991``."""
    return f"{method['family']}, {row['label']}: {row['recall@10']:.3f}" + ("" if reached else " (target not reached)")


def headline(runs: list[Row], target: float = 0.99) -> str:
    """The opening of summary.md: per run, funnel's fastest plan at ``target`` recall@10 against
    exact search and each alternative; then what a query costs end to end, with memory per document."""
    lines = [
        f"## Headline: recall@10 ≥ {target} on real vectors",
        "",
        "Single-query CPU ms (median, FAISS on one thread); × exact = exact flat search's ms in the same run divided by the method's; "
        "funnel ÷ alternative > 1 means funnel is faster. A method that never reached the target shows its highest recall instead.",
        "",
        "| run | vectors | exact ms | funnel's fastest ≥ target | ms | × exact | alternative | its fastest ≥ target (or best) | ms | funnel ÷ alternative |",
        "|---|---|---:|---|---:|---:|---|---|---:|---:|",
    ]
    table = [
        "## End to end: where a query's time goes",
        "",
        "What a user waits for one query: encoding the query text with the run's model (wall ms, the process's threads), the search "
        "(CPU ms, one thread, as above) and fetching the 10 hits' documents from funnel's Arrow files (the same fetch is assumed for "
        "every method: the alternatives hold no documents). Memory per document: bytes held in memory plus memory-mapped files the "
        "searches read (funnel's float16 vectors), over the run's documents.",
        "",
        "| run | method | setting | recall@10 | encode ms | search ms | fetch ms | total ms | memory per document |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in sorted(runs, key=lambda r: (-r["scale"], r["vectors"])):
        name = _run_name(run)
        vectors = run["source"]["vectors"]
        exact = next(m for m in run["methods"] if m["method"] == "exact")
        exact_ms = latency(exact["configs"][0])
        fastest = _fastest_or_best([m for m in run["methods"] if _funnel(m)], target)
        if fastest is None:
            continue
        funnel_row, funnel_method, funnel_reached = fastest
        funnel_cell = _setting(funnel_row, funnel_method, funnel_reached)
        for label, wanted in ALTERNATIVE_GROUPS:
            alternative_best = _fastest_or_best([m for m in run["methods"] if wanted(m)], target)
            if alternative_best is None:
                continue
            row, method, reached = alternative_best
            alternative = _setting(row, method, reached)
            lines.append(
                f"| {name} | {vectors} | {exact_ms:.2f} | {funnel_cell} | {latency(funnel_row):.2f} | {exact_ms / latency(funnel_row):.1f}× | "
                f"{label} | {alternative} | {latency(row):.2f} | {latency(row) / latency(funnel_row):.2f}× |"
            )
        encode = (run.get("encode_ms") or {}).get("median_ms")
        fetch = run.get("fetch_ms")
        entries = [("funnel (fastest ≥ target)", funnel_row, funnel_method), ("exact flat", exact["configs"][0], exact)]
        lexical = _fastest_or_best([m for m in run["methods"] if _funnel(m) and "bm25" in m["family"]], target)
        if lexical is not None:  # the lexical stage's cost: the same family with BM25 candidates
            entries.insert(1, ("funnel with BM25 candidates", lexical[0], lexical[1]))
        for label, wanted in ALTERNATIVE_GROUPS[:2]:
            alternative_best = _fastest_or_best([m for m in run["methods"] if wanted(m)], target)
            if alternative_best is not None:
                entries.append((label, alternative_best[0], alternative_best[1]))
        for label, row, method in entries:
            search = latency(row)
            total = search + (encode or 0) + (fetch or 0)
            table.append(
                f"| {name} | {label}: {method['family']} | {row['label']} | {row['recall@10']:.3f} | "
                f"{'—' if encode is None else f'{encode:.2f}'} | {search:.2f} | {'—' if fetch is None else f'{fetch:.3f}'} | {total:.2f} | "
                f"{memory_per_document(method, run['scale']):,.0f} B |"
            )
    return "\n".join(lines) + "\n\n" + tuned_table(runs, target) + "\n" + "\n".join(table) + "\n"


def tuned_table(runs: list[Row], target: float = 0.99) -> str:
    """Per run, the fastest plan ``funnel tune`` chose (on calibration queries, none of the measured
    ones) that reached ``target`` on the measured queries, against the fastest alternative that did."""
    lines = [
        f"## funnel's tuned plans against the fastest alternative, recall@10 ≥ {target}",
        "",
        "The plan `funnel tune` chose for each family, measured like every other row; the fastest alternative of every group above.",
        "",
        "| run | funnel's fastest tuned plan ≥ target | ms | fastest alternative ≥ target | ms | funnel ÷ alternative |",
        "|---|---|---:|---|---:|---:|",
    ]
    for run in sorted(runs, key=lambda r: (-r["scale"], r["vectors"])):
        name = _run_name(run)
        tuned = [{**m, "configs": [c for c in m["configs"] if c["label"].startswith("tuned")]} for m in run["methods"] if _funnel(m)]
        mine = picked(tuned, partial(fastest_at, target=target))
        rivals = picked(
            [m for m in run["methods"] if any(wanted(m) for _, wanted in ALTERNATIVE_GROUPS)], partial(fastest_at, target=target)
        )
        if not mine:
            continue
        row, method = min(mine, key=lambda pair: latency(pair[0]))
        if not rivals:
            lines.append(f"| {name} | {_setting(row, method)} | {latency(row):.3f} | none reached it | | |")
            continue
        rival, rival_method = min(rivals, key=lambda pair: latency(pair[0]))
        lines.append(
            f"| {name} | {_setting(row, method)} | {latency(row):.3f} | "
            f"{_setting(rival, rival_method)} | {latency(rival):.3f} | {latency(rival) / latency(row):.2f}× |"
        )
    return "\n".join(lines) + "\n"


def wall_clock_table(groups: dict[str, list[Path]]) -> str:
    """Wall-clock per scale: the runs of a scale one after another (as ``python -m benchmarks.recall_latency`` runs them)."""
    by_scale: dict[int, list[Row]] = {}
    for paths in groups.values():
        for path in paths:
            run = read_run(path)
            by_scale.setdefault(run["scale"], []).append(run)
    lines = [
        "## Wall clock per scale",
        "",
        "Each run's own wall and CPU time (from its JSON; vectors are prepared and cached before, outside these times). "
        "Load average is the 1-minute figure at the start and end of each run, on this machine's cores.",
        "",
        "| scale | runs | wall min | CPU min | load average start → end |",
        "|---|---|---:|---:|---|",
    ]
    for scale, runs in sorted(by_scale.items()):
        names = ", ".join(f"{r['vectors']}{' (cut short)' if not r.get('complete', True) else ''}" for r in runs)
        load = "; ".join(f"{r['load_average_start_end'][0][0]:.1f} → {r['load_average_start_end'][1][0]:.1f}" for r in runs)
        lines.append(
            f"| {SCALE_NAMES.get(scale, scale)} | {names} | {sum(r['seconds_total'] for r in runs) / 60:.1f} | "
            f"{sum(r.get('cpu_seconds_total', 0) for r in runs) / 60:.1f} | {load} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=OUT)
    args = parser.parse_args()
    groups: dict[str, list[Path]] = {}
    for path in sorted(args.dir.glob("*.json")):
        run = read_run(path)
        name = f"{run['vectors']}-{SCALE_NAMES.get(run['scale'], run['scale'])}{'-gpu' if run.get('gpu') else ''}"
        groups.setdefault(name, []).append(path)
    sections = []
    for name, paths in sorted(groups.items(), key=lambda item: (read_run(item[1][0])["scale"], item[0])):
        run = merged(sorted(paths, key=lambda p: (len(p.stem), p.name)))
        path = args.dir / f"{name}.json"
        plot(run, path.with_suffix(".png"))
        text = markdown(run, path.stem)
        path.with_suffix(".md").write_text(text)
        sections.append(
            text.split("### Cost of each index")[0] + f"Details: [{path.stem}.md]({path.stem}.md)\n\n![{path.stem}]({path.stem}.png)\n"
        )
    runs = [merged(sorted(paths, key=lambda p: (len(p.stem), p.name))) for paths in groups.values()]
    (args.dir / "summary.md").write_text(
        "# Recall against latency: every run\n\n"
        + headline(runs)
        + "\n"
        + scale_headlines(runs)
        + "\n"
        + wall_clock_table(groups)
        + "\n"
        + "\n".join(sections)
    )
    print(f"wrote {len(groups)} plots and tables under {args.dir}")


if __name__ == "__main__":
    main()
