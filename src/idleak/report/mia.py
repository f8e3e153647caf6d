"""Plots and report.html of the identity membership attack, from its OUT files alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from idleak.metrics import FPR_LEVELS, fpr_key
from idleak.outputs import read_csv
from idleak.report.plots import figure_png, plt
from idleak.report.thumbs import data_uri

#: Rows of the per-identity table shown with thumbnails (the rest are in identities.csv).
MAX_IDENTITIES_SHOWN = 200
PLOTS = {"roc": "roc.png", "distributions": "distributions.png", "over_representation": "over_representation.png"}
MEMBER_COLOUR, NONMEMBER_COLOUR = "#c0392b", "#7f8c8d"


def read_identities(out: Path) -> list[dict]:
    """identities.parquet (typed, with boxes) or, failing that, identities.csv."""
    if (out / "identities.parquet").is_file():
        return pq.read_table(out / "identities.parquet").to_pylist()
    rows = read_csv(out / "identities.csv")
    for row in rows:
        row["member"] = row["member"] == "true"
        row["score"] = float(row["score"])
        row["n_over_threshold"] = int(row["n_over_threshold"])
        row["n_train"] = int(row["n_train"]) if row.get("n_train") else None
    return rows


def roc_plot(fpr: np.ndarray, tpr: np.ndarray, summary: dict) -> bytes:
    """The empirical ROC on log-log axes (left) and linear axes (right), TPR at the FPR levels marked."""
    n0, n1 = summary["n_nonmembers"], summary["n_members"]
    fig, (ax_log, ax_lin) = plt.subplots(1, 2, figsize=(9.5, 4.0))
    x_min, y_min = 0.5 / max(n0, 1), 0.5 / max(n1, 1)
    x_min = min(x_min, min(FPR_LEVELS) / 2)
    for ax, log in ((ax_log, True), (ax_lin, False)):
        if log:
            ax.step(np.maximum(fpr, x_min), np.maximum(tpr, y_min), where="post", color=MEMBER_COLOUR, linewidth=1.8,
                    label=f"attack, AUC {summary['auc']:.3f}")
            grid = np.logspace(np.log10(x_min), 0, 100)
            ax.plot(grid, grid, "--", color="#999", linewidth=1, label="chance")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(x_min, 1.02)
            ax.set_ylim(y_min, 1.05)
            ax.axvline(1.0 / max(n0, 1), color="#bbb", linewidth=1, linestyle=":",
                       label=f"1 / {n0} non-members (smallest FPR resolved)")
            for level in FPR_LEVELS:
                key = fpr_key(level)
                value = summary["tpr_at_fpr"][key]
                ok = summary["tpr_at_fpr_resolvable"][key]
                if value is None:  # not quoted: the non-members cannot resolve this FPR
                    continue
                ax.plot([level], [max(value, y_min)], "o", color="black" if ok else "#bbb", markersize=5)
                ax.annotate(f"{value:.2f}{'' if ok else ' (n/r)'}", (level, max(value, y_min)), fontsize=7,
                            xytext=(4, -10), textcoords="offset points")
            ax.set_title("log axes: the low-FPR regime", fontsize=9)
            ax.legend(fontsize=7, loc="lower right")
        else:
            ax.plot(fpr, tpr, color=MEMBER_COLOUR, linewidth=1.8, drawstyle="steps-post")
            ax.plot([0, 1], [0, 1], "--", color="#999", linewidth=1)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.set_title("linear axes", fontsize=9)
        ax.set_xlabel("false-positive rate (non-members called members)")
        ax.set_ylabel("true-positive rate (members found)")
        ax.spines[["top", "right"]].set_visible(False)
    return figure_png(fig)


def distributions_plot(scores: dict, summary: dict) -> bytes:
    """Genuine, impostor and real-generated nearest-neighbour similarities, with d' and KS."""
    sep = summary.get("separation") or {}
    latent = summary.get("attack") == "latent_recovery"
    series = [
        ("genuine", "real-real genuine (closest other photo of the same person)", "#27ae60"),
        ("impostor", "real-real impostor (closest photo of anyone else)", NONMEMBER_COLOUR),
        ("generated", "photo vs. its reconstruction" if latent else "real-generated (each generated face's "
         "closest real photo)", MEMBER_COLOUR),
    ]
    values = [np.asarray(scores[k]) for k, _, _ in series if len(scores[k])]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    if values:
        low = min(float(v.min()) for v in values)
        high = max(float(v.max()) for v in values)
        bins = np.linspace(low - 0.01, high + 0.01, 50)
        for key, label, colour in series:
            data = np.asarray(scores[key])
            if len(data):
                ax.hist(data, bins=bins, density=True, alpha=0.5, color=colour, label=f"{label}, n={len(data)}")
    title = (f"d' (generated vs impostor) = {sep.get('d_prime_generated_vs_impostor', float('nan')):.2f}, "
             f"KS = {sep.get('ks_generated_vs_impostor', float('nan')):.2f}; "
             f"d' (genuine vs impostor) = {sep.get('d_prime_genuine_vs_impostor', float('nan')):.2f}")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.legend(fontsize=7, loc="upper left")
    ax.spines[["top", "right"]].set_visible(False)
    return figure_png(fig)


def over_representation_plot(rows: list[dict], summary: dict) -> bytes:
    """Members' number of training images against their score (non-members at 0 for reference)."""
    over = summary.get("over_representation") or {}
    fig, ax = plt.subplots(figsize=(7, 3.8))
    members = [r for r in rows if r["member"] and r.get("n_train") is not None]
    others = [r for r in rows if not r["member"]]
    if others:
        ax.scatter([0] * len(others), [r["score"] for r in others], color=NONMEMBER_COLOUR, alpha=0.6, s=18,
                   label=f"non-members (0 training images), n={len(others)}")
    if members:
        ax.scatter([r["n_train"] for r in members], [r["score"] for r in members], color=MEMBER_COLOUR, s=22,
                   label=f"members, n={len(members)}")
    rho = over.get("spearman_rho")
    ax.set_title("Does an over-represented person leak more?"
                 + (f" Spearman rho (members) = {rho:.2f}, p = {over.get('spearman_p_value'):.2g}"
                    if rho is not None and np.isfinite(rho) else ""), fontsize=9)
    ax.set_xlabel("training images of the person")
    ax.set_ylabel("membership score")
    ax.legend(fontsize=7, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    return figure_png(fig)


def write_mia_plots(out: str | os.PathLike[str]) -> dict[str, Path]:
    """roc.png, distributions.png and (with training counts) over_representation.png in ``out``."""
    out = Path(out)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    scores = dict(np.load(out / "scores.npz"))
    written = {"roc": out / PLOTS["roc"], "distributions": out / PLOTS["distributions"]}
    written["roc"].write_bytes(roc_plot(scores["fpr"], scores["tpr"], summary))
    written["distributions"].write_bytes(distributions_plot(scores, summary))
    if summary.get("over_representation"):
        written["over_representation"] = out / PLOTS["over_representation"]
        written["over_representation"].write_bytes(over_representation_plot(read_identities(out), summary))
    return written


def write_mia_report(out: str | os.PathLike[str], review: dict | None = None) -> Path:
    """report.html for a membership attack, from the files in ``out`` alone (plots redrawn if missing)."""
    from idleak.report.html import ThumbCache, render

    out = Path(out)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    if not all((out / PLOTS[k]).is_file() for k in ("roc", "distributions")) or (
            summary.get("over_representation") and not (out / PLOTS["over_representation"]).is_file()):
        write_mia_plots(out)
    plots = {k: data_uri((out / name).read_bytes()) for k, name in PLOTS.items() if (out / name).is_file()}
    rows = read_identities(out)
    rows.sort(key=lambda r: (-r["score"], str(r["identity"])))
    thumbs = ThumbCache()
    shown = []
    for rank, row in enumerate(rows[:MAX_IDENTITIES_SHOWN], start=1):
        shown.append({**row, "rank": rank,
                      "gen_thumb": thumbs.get(row["best_generated_path"], _box(row.get("best_generated_box")))
                      if row.get("best_generated_path") else "",
                      "photo_thumb": thumbs.get(row["best_photo_path"], _box(row.get("best_photo_box")))
                      if row.get("best_photo_path") else ""})
    levels = [{"level": fpr_key(level), "tpr": summary["tpr_at_fpr"][fpr_key(level)],
               "ci": summary["tpr_at_fpr_ci"][fpr_key(level)],
               "resolvable": summary["tpr_at_fpr_resolvable"][fpr_key(level)]} for level in FPR_LEVELS]
    return render("mia.html.j2", out / "report.html", s=summary, plots=plots, rows=shown,
                  hidden=max(0, len(rows) - MAX_IDENTITIES_SHOWN), levels=levels, review=review,
                  versions=summary.get("versions"), created=summary.get("created"))


def _box(box: list | None) -> np.ndarray | None:
    return None if box is None else np.asarray(box, dtype=np.float32)
