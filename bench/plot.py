"""One PNG of a `make bench` run: each scenario's Freight figure next to its baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(results: dict[str, Any], out: Path) -> Path | None:
    """The plot's path, or None (with a note) where matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: write the file only
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[dev]')")
        return None
    scenarios = results["scenarios"]
    panels = [name for name in _PANELS if name in scenarios]
    if not panels:
        return None
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4 * rows), squeeze=False)
    cells = [ax for row in axes for ax in row]
    for ax, name in zip(cells, panels, strict=False):
        _PANELS[name](ax, scenarios[name])
    for ax in cells[len(panels) :]:
        ax.axis("off")
    figure.suptitle(f"Freight against the machine — {results['machine']['summary']}")
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def _latency(ax: Any, r: dict[str, Any]) -> None:
    labels = ["p50", "p99"]
    x = range(len(labels))
    ax.bar(
        [i - 0.2 for i in x],
        [r["freight"]["p50_ms"], r["freight"]["p99_ms"]],
        0.4,
        label="Freight (POST → job_response)",
    )
    ax.bar(
        [i + 0.2 for i in x],
        [r["raw_container"]["p50_ms"], r["raw_container"]["p99_ms"]],
        0.4,
        label="docker SDK create+start+wait+rm",
    )
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("ms")
    ax.set_title("1. latency of `true`")
    ax.legend(fontsize=7)


def _throughput(ax: Any, r: dict[str, Any]) -> None:
    ax.bar(["Freight", "raw containers"], [r["freight_jobs_s"], r["raw_container_jobs_s"]])
    ax.set_ylabel("jobs/s")
    ax.set_title(f"2. throughput, {r['jobs']} jobs over {r['slots']} slots")


def _api(ax: Any, r: dict[str, Any]) -> None:
    for kind, colour in (("json", "tab:blue"), ("multipart", "tab:orange")):
        levels = [v for v in r["levels"].values() if v["kind"] == kind]
        clients = [v["clients"] for v in levels]
        ax.plot(clients, [v["submits_s"] for v in levels], "o-", color=colour, label=kind)
        if all("ceiling" in v for v in levels):
            ceiling = [v["ceiling"]["submits_s"] for v in levels]
            ax.plot(clients, ceiling, "o:", color=colour, label=f"{kind} ceiling")
    ax.axhline(600, linestyle="--", color="grey", label="target 600/s")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("submits/s")
    ax.set_title("3. API alone, and a bare app's ceiling")
    ax.legend(fontsize=7)


def _files(ax: Any, r: dict[str, Any]) -> None:
    names = ["local_copy", "upload", "into_job", "download"]
    ax.bar(names, [r[f"{n}_mb_s"] for n in names])
    ax.set_ylabel("MB/s")
    ax.set_title(f"5. files, {r['size_bytes'] // 2**20} MiB")


def _scale(ax: Any, r: dict[str, Any]) -> None:
    reads = {"GET /jobs/{id}": r["get_job"]} | {
        f"page, {name}": summary for name, summary in r.get("pages", {}).items()
    }
    x = range(len(reads))
    ax.bar([i - 0.2 for i in x], [v["p50_ms"] for v in reads.values()], 0.4, label="p50")
    ax.bar([i + 0.2 for i in x], [v["p99_ms"] for v in reads.values()], 0.4, label="p99")
    ax.axhline(20, linestyle="--", color="grey", label="target p99 20 ms")
    ax.set_xticks(list(x), list(reads), rotation=20, fontsize=7)
    ax.set_ylabel("ms")
    ax.set_title(f"4. reads, {r['jobs']} jobs")
    ax.legend(fontsize=7)


def _placement(ax: Any, r: dict[str, Any]) -> None:
    buckets = [b for b in r["buckets"] if b["n"]]
    depths = [int(b["depth"].split("..")[0]) for b in buckets]
    ax.plot(depths, [b["p50_ms"] for b in buckets], "o-", label="p50")
    ax.plot(depths, [b["p99_ms"] for b in buckets], "o--", label="p99")
    ax.set_xlabel("jobs queued")
    ax.set_ylabel("ms from a free slot to the next placement")
    ax.set_ylim(bottom=0)
    ax.set_title(f"4. placement, {r['slots']} slots")
    ax.legend(fontsize=7)


_PANELS = {
    "latency": _latency,
    "throughput": _throughput,
    "api": _api,
    "scale": _scale,
    "placement": _placement,
    "files": _files,
}
