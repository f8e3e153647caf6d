"""Matplotlib figures rendered to PNG bytes (Agg backend, no display needed)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def figure_png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def similarity_histogram(synthetic: np.ndarray, null: np.ndarray, threshold: float,
                         null_label: str = "real vs. other real identities (null)",
                         null_weights: np.ndarray | None = None) -> bytes:
    """Nearest-neighbour similarity of synthetic faces vs. the null (``null_weights``: as the decision
    weighted it, towards the synthetic faces' population), with the threshold line."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    values = [v for v in (synthetic, null) if len(v)]
    low = min(float(np.min(v)) for v in values) if values else 0.0
    high = max(max(float(np.max(v)) for v in values), threshold) if values else 1.0
    bins = np.linspace(min(low, threshold) - 0.01, high + 0.01, 50)
    if len(null):
        if null_weights is not None:
            null_label += ", weighted to SYN's population"
        ax.hist(null, bins=bins, density=True, weights=null_weights, alpha=0.55, color="#7f8c8d",
                label=f"{null_label}, n={len(null)}")
    if len(synthetic):
        ax.hist(synthetic, bins=bins, density=True, alpha=0.6, color="#c0392b",
                label=f"synthetic faces' best real match, n={len(synthetic)}")
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1.5, label=f"threshold {threshold:.3f}")
    ax.set_xlabel("cosine similarity to the nearest real face")
    ax.set_ylabel("density")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return figure_png(fig)
