"""Scale guards: estimate a job's time and memory from its sizes and measured rates, before it starts,
and refuse a plan that cannot fit in memory with the option that would.

The rates are the project's measurements on its 2-core VM (bench/RESULTS.md, "Large datasets"); on a
faster machine the time estimates are pessimistic, the memory estimates do not change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from idleak.errors import IdleakError
from idleak.search import choose_engine
from idleak.search_ivf import IVF_SCAN_COST, default_nlist, default_nprobe

#: exact top-k, query x gallery products per second at d=128 (bench_search: 32,768 x 1M in 80.9 s)
EXACT_PAIRS_PER_S = 4.0e8
#: the same products as dense multiply-adds per second (ivf coarse assignment and k-means run at this rate)
FLOPS = 2 * 128 * EXACT_PAIRS_PER_S
#: images embedded per second per worker process (bench_embed, dlib)
EMBED_PER_S_PER_WORKER = 10.0
#: Python-side bytes per face besides its vector (path and identity strings, hash, box, score)
META_BYTES_PER_FACE = 400
#: fixed working memory of a run (interpreter, libraries, search buffers, one output chunk)
BASE_BYTES = 600 * 2**20
#: a plan may use at most this share of the available memory
MEMORY_SHARE = 0.85


@dataclass
class Plan:
    """What a job will cost: seconds per stage and peak bytes; ``text`` is one printable line."""

    n_query: int
    n_gallery: int
    dim: int
    engine: str
    seconds: dict[str, float]
    bytes: int
    available: int | None

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    @property
    def text(self) -> str:
        stages = ", ".join(f"{k} {_duration(v)}" for k, v in self.seconds.items() if v >= 1)
        avail = f" of {self.available / 2**30:.1f} GB available" if self.available else ""
        return (f"plan: {self.n_query:,} x {self.n_gallery:,} faces, search {self.engine}; about "
                f"{_duration(self.total_seconds)} ({stages or 'seconds'}), peak memory about "
                f"{self.bytes / 2**30:.1f} GB{avail}")


def available_memory() -> int | None:
    """Bytes this process may still use: MemAvailable, capped by a cgroup limit if one is set;
    IDLEAK_MEMORY_BYTES overrides both (to leave room for other jobs)."""
    if os.environ.get("IDLEAK_MEMORY_BYTES"):
        return int(os.environ["IDLEAK_MEMORY_BYTES"])
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:
            limits.append(int(raw))
    return min(limits) if limits else None


def search_bytes(n_query: int, n_gallery: int, dim: int, engine: str, k: int) -> int:
    vectors = 4 * dim * (n_query + n_gallery)
    meta = META_BYTES_PER_FACE * (n_query + n_gallery)
    results = 12 * k * n_query
    extra = 0
    if engine == "ivf":
        nlist = default_nlist(n_gallery)
        extra = n_gallery * (4 * dim + 8) + 2 * 4 * 4096 * nlist
    return BASE_BYTES + vectors + meta + results + extra


def search_seconds(n_query: int, n_gallery: int, dim: int, engine: str, rescore_share: float = 0.01) -> float:
    scale = dim / 128
    if engine != "ivf":
        return n_query * n_gallery * scale / EXACT_PAIRS_PER_S
    nlist = default_nlist(n_gallery)
    probe = default_nprobe(nlist)
    train = 10 * min(n_gallery, 64 * nlist) * nlist * dim * 2 / FLOPS
    assign = (n_gallery + n_query) * nlist * dim * 2 / FLOPS
    scan = n_query * n_gallery * IVF_SCAN_COST * probe / nlist * scale / EXACT_PAIRS_PER_S  # lists cost more
    rescore = rescore_share * n_query * n_gallery * scale / EXACT_PAIRS_PER_S
    return train + assign + scan + rescore


def plan_audit(n_synthetic: int, n_real: int, dim: int, engine: str = "exact", k: int = 5,
               n_to_embed: int = 0, workers: int = 1, null_queries: int | None = 50_000,
               available: int | None = None) -> Plan:
    """The audit's plan: embed what the store lacks, the LOIO null's search, the SYN x REAL search."""
    engine = choose_engine(engine, n_synthetic, n_real)
    seconds = {
        "embed": n_to_embed / (EMBED_PER_S_PER_WORKER * max(1, workers)),
        "null": search_seconds(min(n_real, null_queries or n_real), n_real, dim, "exact"),
        "search": search_seconds(n_synthetic, n_real, dim, engine),
    }
    return Plan(n_synthetic, n_real, dim, engine, seconds, search_bytes(n_synthetic, n_real, dim, engine, k),
                available_memory() if available is None else available)


def check_memory(plan: Plan) -> None:
    """One-line ``IdleakError`` if the plan cannot fit in memory, naming the option that would."""
    if not plan.available or plan.bytes <= MEMORY_SHARE * plan.available:
        return
    budget = MEMORY_SHARE * plan.available
    need, have = plan.bytes / 2**30, plan.available / 2**30
    if plan.engine == "ivf" and search_bytes(plan.n_query, plan.n_gallery, plan.dim, "exact", 5) <= budget:
        hint = "use --search exact (no index copy of REAL; slower)"
    else:
        per_query = search_bytes(1_000_000, plan.n_gallery, plan.dim, plan.engine, 5) - \
            search_bytes(0, plan.n_gallery, plan.dim, plan.engine, 5)
        fits = int((budget - search_bytes(0, plan.n_gallery, plan.dim, plan.engine, 5)) / per_query * 1_000_000)
        hint = (f"split SYN into parts of at most {fits:,} faces (audit each against the same REAL store)"
                if fits > 0 else f"REAL alone needs more: use a machine with at least {need / MEMORY_SHARE:.0f} GB")
    raise IdleakError(f"this audit needs about {need:.2f} GB of memory, {have:.2f} GB available: {hint}")


def pending_images(n_records: int, kind: str) -> int:
    """Images that may need embedding (stores and tables need none; folders at most all)."""
    return 0 if kind in ("store", "table") else n_records


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
