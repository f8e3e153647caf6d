"""Does a "leak" verdict hold its stated error rate? Leak-free simulations and real-face scenarios.

Every verdict here goes through idleak's own decision code (``idleak.decide``): the same nulls,
statistics and tests the audit uses. Three families of cells:

* ``scores``: exchangeable null and synthetic scores (no leak), synthetic identities of ``size`` faces
  with within-identity correlation ``rho``; null sizes 10^2..10^5, SYN 10^3..10^6. Tests the
  finite-null and cluster machinery alone.
* ``vectors``: unit vectors with identity structure and two populations (a spread one and a dense
  one: mutually similar faces), REAL mixing both and SYN strangers drawn from the dense one only.
  Tests the statistic (raw vs csls) under population shift.
* ``faces``: real embeddings of the photos in ../shared/data/faces, split by identity into REAL,
  SYN strangers and HOLDOUT at random in every repetition; planted leaks (other photos of REAL
  people) measure recall.
* ``children``: young children (UTKFace) against adults and other children, with and without the
  apparent-age strata.
* ``population``: REAL mixing two populations (LFW + UTKFace) and SYN strangers of one, with the
  population-weighted null (the default) and the pooled one (``--reweight none``).

UTKFace has no identity labels and holds one person under several file names: ``Photos`` joins re-uploads
and the pairs seen to be one person (``bench/utkface_same_person.txt``), and UTKFace's photos of LFW people
are left out of its adults (they are not strangers to an LFW REAL).

    python bench/calibration_harness.py --size small            # what CI runs (tests/test_decide.py)
    python bench/calibration_harness.py --size full --out bench/calibration.md
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace

import numpy as np

from idleak.decide import DecisionOptions, Null, build_null, choose_method, choose_score, decide_queries, judge
from idleak.decide.scores import neighbours_needed
from idleak.search import topk


@dataclass
class Cell:
    family: str
    name: str
    alpha: float
    reps: int
    false_leaks: int
    recall: float | None = None
    seconds: float = 0.0
    undecided: int = 0  # "too_few_to_decide" verdicts
    recall_by: dict | None = None  # recall of leaked identities by how many of their photos leaked: (found, planted)
    faces: tuple[float, int] = (0.0, 0)  # leak-free cells: (sum over strangers of their share of faces with
    # p <= alpha, number of strangers with a decided face)
    leak_verdicts: int | None = None  # recall cells: repetitions whose verdict was "leak" (the dataset-level recall)

    @property
    def face_rate(self) -> float | None:
        """Per-face false-flag rate: the chance that a random face of a random stranger (synthetic identity
        or cluster) has p <= alpha, the unit the conformal p-value is exact for (None: nothing decided)."""
        return self.faces[0] / self.faces[1] if self.faces[1] else None

    @property
    def rate(self) -> float:
        return self.false_leaks / self.reps

    @property
    def upper(self) -> float:
        """Rate that sampling error alone would exceed with probability 2.5% (binomial quantile)."""
        from scipy import stats

        return float(stats.binom.ppf(0.975, self.reps, self.alpha)) / self.reps

    @property
    def holds(self) -> bool:
        return self.rate <= self.upper


def _add_face_rate(faces: tuple[float, int], decision, alpha: float) -> tuple[float, int]:
    decided = ~decision.set_aside
    if not decided.any():
        return faces
    clusters = decision.clusters[decided]
    hits = np.bincount(clusters, weights=(decision.p_values[decided] <= alpha).astype(float))
    sizes = np.bincount(clusters)
    share = hits[sizes > 0] / sizes[sizes > 0]
    return faces[0] + float(share.sum()), faces[1] + int(len(share))


# -- scores --------------------------------------------------------------------------------------------
def score_cell(m: int, n_ids: int, size: int, rho: float, alpha: float, reps: int, seed: int = 0) -> Cell:
    rng = np.random.default_rng(seed)
    clusters = np.repeat(np.arange(n_ids), size)
    false = 0
    start = time.perf_counter()
    for r in range(reps):
        null_values = rng.standard_normal(m)
        shared = rng.standard_normal(n_ids)[clusters]
        x = np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.standard_normal(n_ids * size)
        null = Null("leave_one_identity_out", "raw", m, null_values, null_values)
        decision = judge(x, null, clusters, "identity", alpha, seed=r)
        false += decision.verdict == "leak"
    name = f"null {m:,}, SYN {n_ids * size:,} ({n_ids:,} ids x {size}), rho {rho}"
    return Cell("scores", name, alpha, reps, false, seconds=time.perf_counter() - start)


# -- vectors ---------------------------------------------------------------------------------------------
def _population(rng: np.random.Generator, n_ids: int, per_id: int, dim: int, spread: float, centre: np.ndarray | None,
                within: float = 0.35) -> np.ndarray:
    """Faces of ``n_ids`` people: identity centres around ``centre`` (None: anywhere), faces around them."""
    base = rng.standard_normal((n_ids, dim))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    if centre is not None:
        base = centre[None, :] + spread * base
        base /= np.linalg.norm(base, axis=1, keepdims=True)
    faces = np.repeat(base, per_id, axis=0) + within * rng.standard_normal((n_ids * per_id, dim)) / np.sqrt(dim)
    return (faces / np.linalg.norm(faces, axis=1, keepdims=True)).astype(np.float32)


def vector_cell(score: str, alpha: float, reps: int, dim: int = 64, seed: int = 0, leak: bool = False,
                reweight: str = "population", strangers: int = 40) -> Cell:
    """REAL: 150 spread people + 50 dense people (x5 photos); SYN: ``strangers`` dense strangers (x5)."""
    rng = np.random.default_rng(seed)
    false, found, planted = 0, 0, 0
    options = DecisionOptions(alpha=alpha, score=score, seed=seed, reweight=reweight)
    start = time.perf_counter()
    for r in range(reps):
        centre = rng.standard_normal(dim)
        centre /= np.linalg.norm(centre)
        spread_real = _population(rng, 150, 5, dim, 1.0, None)
        dense_real = _population(rng, 50, 5, dim, 0.6, centre)
        real = np.concatenate([spread_real, dense_real])
        real_ids = np.array([f"r{i // 5}" for i in range(len(real))], dtype=object)
        syn = _population(rng, strangers, 5, dim, 0.6, centre)
        syn_ids = np.array([f"s{i // 5}" for i in range(len(syn))], dtype=object)
        if leak:  # 10 synthetic identities are new photos of dense REAL people
            people = rng.choice(50, 10, replace=False)
            for j, p in enumerate(people):
                centre_p = dense_real[p * 5:(p + 1) * 5].mean(0)
                photos = centre_p + 0.35 * rng.standard_normal((5, dim)) / np.sqrt(dim)
                syn[j * 5:(j + 1) * 5] = photos / np.linalg.norm(photos, axis=1, keepdims=True)
        decision = _decide(syn, syn_ids, real, real_ids, options, seed=r)
        if leak:
            planted += 10
            found += int(len(np.unique(decision.clusters[:50][decision.flagged[:50]])))
        else:
            false += decision.verdict == "leak"
    name = (f"{strangers} dense strangers vs mixed REAL, score {score}, reweight {reweight}"
            + (" (10 leaked ids)" if leak else ""))
    return Cell("vectors", name, alpha, reps, false, found / planted if leak else None, time.perf_counter() - start)


#: model id of the stores the ``faces`` cells read (their age model assigns the apparent-age strata)
MODEL_ID = "none"


def _decide(syn, syn_ids, real, real_ids, options, holdout=None, holdout_ids=None, seed=0, model_id=None):
    options = replace(options, seed=seed)
    model_id = model_id or MODEL_ID
    method = choose_method(real_ids, options, holdout is not None)
    score = choose_score(method, options, len(real))
    k = min(len(real), neighbours_needed(score, options.cohort))
    top = topk(syn, real, k)
    null = build_null(real, real_ids, model_id, options, method, score, queries=syn, holdout=holdout,
                      holdout_identities=holdout_ids, query_identities=syn_ids)
    return decide_queries(syn, syn_ids, top, null, real_ids, options)


# -- real faces ------------------------------------------------------------------------------------------
def face_cell(name: str, vectors: np.ndarray, identities: np.ndarray, alpha: float, reps: int, score: str = "auto",
              holdout: bool = False, leak_ids: int = 0, min_photos: int = 2, seed: int = 0,
              strangers: tuple[np.ndarray, np.ndarray] | None = None, max_people: int | None = None,
              strata: str = "age", model_id: str | None = None, reweight: str = "population") -> Cell:
    """Random identity splits of one population: half REAL, half SYN strangers (or ``strangers`` from
    another population); with ``holdout`` a third part is the holdout; ``leak_ids`` REAL people give
    their other photos to SYN (recall)."""
    rng = np.random.default_rng(seed)
    ids = np.asarray(identities, dtype=object)
    people, counts = np.unique(ids, return_counts=True)
    people = people[counts >= min_photos]
    options = DecisionOptions(alpha=alpha, score=score, strata=strata, reweight=reweight)
    false, found, planted, undecided, leak_verdicts = 0, 0, 0, 0, 0
    faces = (0.0, 0)
    by_photos: dict[int, tuple[int, int]] = {}
    start = time.perf_counter()
    for r in range(reps):
        order = rng.permutation(people)[:max_people]
        parts = np.array_split(order, 3 if holdout else 2)
        real_people = set(parts[0])
        real_mask = np.array([i in real_people for i in ids])
        if leak_ids:
            leaked = set(list(parts[0])[:leak_ids])
            rows = {p: np.flatnonzero(ids == p) for p in leaked}
            give = np.concatenate([rows[p][len(rows[p]) // 2:] for p in leaked])
            real_mask[give] = False
        if strangers is not None:
            pick = rng.choice(len(strangers[0]), min(len(strangers[0]), int(real_mask.sum())), replace=False)
            syn, syn_ids = strangers[0][pick], strangers[1][pick]
        else:
            syn_people = set(parts[1])
            syn_mask = np.array([i in syn_people for i in ids])
            syn, syn_ids = vectors[syn_mask], ids[syn_mask]
        if leak_ids:
            syn = np.concatenate([syn, vectors[give]])
            syn_ids = np.concatenate([syn_ids, np.array([f"leak_{i}" for i in ids[give]], dtype=object)])
        hold = hold_ids = None
        if holdout:
            hold_people = set(parts[2])
            hold_mask = np.array([i in hold_people for i in ids])
            hold, hold_ids = vectors[hold_mask], ids[hold_mask]
        if max_people is not None:  # the people not drawn this time are in no part
            drawn = set(order)
            real_mask &= np.array([i in drawn for i in ids])
        decision = _decide(syn, syn_ids, vectors[real_mask], ids[real_mask], options, hold, hold_ids, seed=r,
                           model_id=model_id)
        if leak_ids:
            is_leak = np.array([str(i).startswith("leak_") for i in syn_ids])
            planted += leak_ids
            found += len(np.unique(decision.clusters[is_leak & decision.flagged]))
            leak_verdicts += decision.verdict == "leak"
            for person in leaked:
                mine = syn_ids == f"leak_{person}"
                key = min(int(mine.sum()), 3)
                hit, total = by_photos.get(key, (0, 0))
                by_photos[key] = (hit + int(decision.flagged[mine].any()), total + 1)
        else:
            false += decision.verdict == "leak"
            undecided += decision.verdict == "too_few_to_decide"
            faces = _add_face_rate(faces, decision, alpha)
    what = (f"{name}, {'holdout' if holdout else 'loio'} null, score {score}" + (f", {leak_ids} leaked ids" if leak_ids else "")
            + ("" if strata == "age" else f", strata {strata}") + f", reweight {reweight}")
    return Cell("faces", what, alpha, reps, false, found / planted if leak_ids else None, time.perf_counter() - start,
                undecided, dict(sorted(by_photos.items())) if leak_ids else None, faces,
                leak_verdicts if leak_ids else None)


#: UTKFace photos more similar than this are taken for one photo uploaded twice (one identity)
LINK_SAME_PHOTO = 0.99


def children_in_real_cell(lfw: tuple[np.ndarray, np.ndarray], photos: Photos, alpha: float, reps: int,
                          strata: str = "age", lfw_people: int = 400, seed: int = 0, leak: int = 0,
                          holdout: bool = False, label: str = "UTKFace children", reweight: str = "population") -> Cell:
    """REAL holds adults (LFW) *and* young children (half of UTKFace's); SYN is strangers: the other half
    of the children. UTKFace has no identity labels: photos known to show one person (``Photos.people``:
    re-uploads and listed pairs) are one identity, split together and one synthetic identity in SYN. With ``leak``, SYN also gets that
    many REAL children's photos with a copy-level perturbation (recall: the share of them flagged). With
    ``holdout``, the children are split in thirds: REAL, SYN strangers and a HOLDOUT (the holdout null)."""
    rng = np.random.default_rng(seed)
    vectors, ids = lfw
    people = np.unique(ids)
    children, child_id = photos.vectors, photos.people
    groups = np.unique(child_id)
    options = DecisionOptions(alpha=alpha, strata=strata, reweight=reweight)
    false, undecided, found, planted = 0, 0, 0, 0
    faces = (0.0, 0)
    start = time.perf_counter()
    for r in range(reps):
        chosen = set(rng.choice(people, lfw_people, replace=False))
        adults = np.array([i in chosen for i in ids])
        order = rng.permutation(groups)
        cut = len(order) // 3 if holdout else len(order) // 2
        real_group = np.isin(child_id, order[:cut])
        hold_group = np.isin(child_id, order[cut:2 * cut]) if holdout else np.zeros(len(child_id), bool)
        in_real, strangers = np.flatnonzero(real_group), np.flatnonzero(~real_group & ~hold_group)
        in_real = in_real[rng.permutation(len(in_real))]
        real = np.concatenate([vectors[adults], children[in_real]])
        real_ids = np.concatenate([ids[adults], np.array([f"child{child_id[k]}" for k in in_real], dtype=object)])
        syn = children[strangers]
        syn_ids = np.array([f"s{child_id[k]}" for k in strangers], dtype=object)
        if leak:
            copies = children[in_real[:leak]] + 0.15 * rng.standard_normal((leak, children.shape[1])) / np.sqrt(
                children.shape[1])
            syn = np.concatenate([syn, copies / np.linalg.norm(copies, axis=1, keepdims=True)])
            syn_ids = np.concatenate([syn_ids, np.array([f"leak{k}" for k in range(leak)], dtype=object)])
        hold = children[hold_group] if holdout else None
        hold_ids = np.array([f"h{child_id[k]}" for k in np.flatnonzero(hold_group)], dtype=object) if holdout else None
        decision = _decide(syn.astype(np.float32), syn_ids, real.astype(np.float32), real_ids, options, hold,
                           hold_ids, seed=r)
        if leak:
            planted += leak
            found += int(decision.flagged[-leak:].sum())
        else:
            false += decision.verdict == "leak"
            undecided += decision.verdict == "too_few_to_decide"
            faces = _add_face_rate(faces, decision, alpha)
    name = ((f"LFW ({lfw_people} people) + " if lfw_people else "") + f"{label} REAL vs {label} "
            f"strangers, {'holdout' if holdout else 'loio'} null, strata {strata}"
            + (f", {leak} near-copies of REAL {label.removeprefix('UTKFace ')}" if leak else "") + f", reweight {reweight}")
    return Cell("faces", name, alpha, reps, false, found / planted if leak else None, time.perf_counter() - start,
                undecided, faces=faces)


def face_cells(stores: str, reps: int, max_people: int = 600) -> list[Cell]:
    """Real-face cells from stores made by ``idleak embed`` (store-lfw, store-orl, store-yaleb-aligned, store-utk)."""
    import os

    def have(name: str) -> bool:
        return os.path.isdir(os.path.join(stores, name))

    from idleak.store import EmbeddingStore

    global MODEL_ID
    cells: list[Cell] = []
    lfw = load_store(os.path.join(stores, "store-lfw"))
    MODEL_ID = EmbeddingStore.open(os.path.join(stores, "store-lfw")).model_id
    others = {}
    for name, label in (("store-orl", "ORL"), ("store-yaleb-aligned", "Yale B")):
        if have(name):
            v, i = load_store(os.path.join(stores, name))
            others[label] = (v, np.array([f"{label}_{x}" for x in i], dtype=object))
    if have("store-utk"):
        utk, ages, names = load_utk(os.path.join(stores, "store-utk"))
        young = Photos.of(utk[ages < 13], names[ages < 13])
        children, child_ids = young.vectors, young.ids("utk")
        others["UTKFace children (<13)"] = (children, child_ids)
        # what --exclude-children leaves of them: the children the age model takes for adults
        from idleak.age import is_child

        kept = ~is_child(children, EmbeddingStore.open(os.path.join(stores, "store-utk")).model_id)
        others["UTKFace children left by --exclude-children"] = (children[kept], child_ids[kept])
    for alpha in (0.05, 0.01):
        for score in ("raw", "csls"):
            for holdout in (False, True):
                cells.append(face_cell("LFW", *lfw, alpha, reps, score=score, holdout=holdout, min_photos=1,
                                            max_people=max_people))
                print(table(cells[-1:]).splitlines()[-1], flush=True)
            for holdout in (False, True):
                cells.append(face_cell("LFW", *lfw, alpha, max(5, reps // 20), score=score, leak_ids=30,
                                       holdout=holdout, max_people=max_people))
            for label, strangers in others.items():
                cells.append(face_cell(f"LFW REAL vs {label} strangers", *lfw, alpha, reps, score=score,
                                       min_photos=1, strangers=strangers, max_people=max_people))
                print(table(cells[-1:]).splitlines()[-1], flush=True)
            for label in ("ORL", "Yale B"):
                if label in others:
                    cells.append(face_cell(label, *others[label], alpha, reps, score=score))
                    print(table(cells[-1:]).splitlines()[-1], flush=True)
    return cells


def children_cells(stores: str, reps: int) -> list[Cell]:
    """Young children (UTKFace, under 13) against adults and against other children, with and without the
    apparent-age strata; LFW with strata (what they cost adults)."""
    lfw, children, adults = load_lfw_and_utk(stores)
    strangers = (children.vectors, children.ids("utk"))
    cells: list[Cell] = []

    def show(cell: Cell) -> None:
        cells.append(cell)
        print(table([cell]).splitlines()[-1], flush=True)

    for alpha in (0.05, 0.01):
        for strata in ("none", "age"):
            show(face_cell("LFW REAL vs UTKFace children (<13) strangers", *lfw, alpha, reps, min_photos=1,
                           strangers=strangers, max_people=600, strata=strata))
        show(face_cell("LFW", *lfw, alpha, reps, min_photos=1, max_people=600, strata="age"))
        show(face_cell("LFW", *lfw, alpha, max(5, reps // 20), leak_ids=30, max_people=600, strata="age"))
        for lfw_people in (0, 400):
            show(children_in_real_cell(lfw, children, alpha, reps, lfw_people=lfw_people))
        for holdout in (False, True):
            show(children_in_real_cell(lfw, children, alpha, max(5, reps // 20), lfw_people=0, leak=20,
                                       holdout=holdout))
        show(children_in_real_cell(lfw, children, alpha, reps, lfw_people=0, holdout=True))
        # two adult populations in one REAL: in-the-wild LFW and UTKFace's cropped web photos
        for lfw_people in (0, 400):
            show(children_in_real_cell(lfw, adults, alpha, reps, lfw_people=lfw_people, label="UTKFace adults"))
    return cells


def population_cells(stores: str, reps: int) -> list[Cell]:
    """Population weights (``--reweight population``, the default) against the pooled null (``none``):
    REAL mixing two populations, strangers of one; one population; strangers of a population REAL
    lacks; planted leaks (recall)."""
    import os

    lfw, children, adults = load_lfw_and_utk(stores)
    orl = load_store(os.path.join(stores, "store-orl"))
    strangers = {"UTKFace adults": (adults.vectors, adults.ids("utka")),
                 "ORL": (orl[0], np.array([f"ORL_{x}" for x in orl[1]], dtype=object))}
    for name, label in (("store-yaleb-aligned", "Yale B"), ("store-johns", "johns")):  # studio light, aligned chips
        if os.path.isdir(os.path.join(stores, name)):
            v, i = load_store(os.path.join(stores, name))
            strangers[label] = (v, np.array([f"{label}_{x}" for x in i], dtype=object))
    cells: list[Cell] = []

    def show(cell: Cell) -> None:
        cells.append(cell)
        extra = f" {cell.recall_by}" if cell.recall_by else ""
        print(table([cell]).splitlines()[-1] + extra, flush=True)

    for alpha in (0.05, 0.01):
        for reweight in ("none", "population"):
            show(children_in_real_cell(lfw, adults, alpha, reps, lfw_people=400, label="UTKFace adults",
                                       reweight=reweight))
            show(children_in_real_cell(lfw, children, alpha, reps, lfw_people=400, reweight=reweight))
            show(face_cell("LFW", *lfw, alpha, reps, min_photos=1, max_people=600, reweight=reweight))
            show(face_cell("LFW", *lfw, alpha, max(5, reps // 5), leak_ids=30, max_people=600, reweight=reweight))
            for label, people in strangers.items():
                show(face_cell(f"LFW REAL vs {label} strangers", *lfw, alpha, reps, min_photos=1, strangers=people,
                               max_people=600, reweight=reweight))
        show(children_in_real_cell(lfw, adults, alpha, reps, lfw_people=0, label="UTKFace adults"))
    return cells


@dataclass
class Photos:
    """Faces of a dataset without identity labels (UTKFace) and the person each is taken for.

    ``people`` joins photos known to show one person: re-uploads of one photo (cosine above
    ``LINK_SAME_PHOTO``) and the pairs listed in ``utkface_same_person.txt`` (seen to be one person).
    Other photos count as different people (as before the list: a pair missed is two "strangers").
    """

    vectors: np.ndarray
    names: np.ndarray  # file name of each photo
    people: np.ndarray  # person id of each photo (0..P-1)

    @classmethod
    def of(cls, vectors: np.ndarray, names: np.ndarray) -> Photos:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        from idleak.decide import synthetic_clusters

        same_photo, _ = synthetic_clusters(vectors, np.full(len(vectors), None, dtype=object), LINK_SAME_PHOTO,
                                           DecisionOptions())
        where = {name: k for k, name in enumerate(names)}
        listed = [(where[a], where[b]) for a, b in same_person_pairs() if a in where and b in where]
        _, first = np.unique(same_photo, return_index=True)  # the first photo of each re-upload group
        edges = listed + [(k, int(first[g])) for k, g in enumerate(same_photo)]
        rows, cols = (np.array(x, np.int64) for x in zip(*edges)) if edges else (np.zeros(0, np.int64),) * 2
        graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(vectors), len(vectors)))
        _, people = connected_components(graph, directed=False)
        return cls(vectors, np.asarray(names, dtype=object), people.astype(np.int64))

    def without_people_of(self, names: set[str]) -> Photos:
        """The photos of everyone but the people shown in ``names`` (all their photos go)."""
        gone = np.isin(self.people, self.people[np.isin(self.names, list(names))])
        _, people = np.unique(self.people[~gone], return_inverse=True)
        return Photos(self.vectors[~gone], self.names[~gone], people.ravel().astype(np.int64))

    def ids(self, prefix: str) -> np.ndarray:
        """An identity label per photo: one per person."""
        return np.array([f"{prefix}{p}" for p in self.people], dtype=object)


def same_person_pairs() -> list[tuple[str, str]]:
    """UTKFace file names seen to show one person (``bench/utkface_same_person.txt``)."""
    import os

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "utkface_same_person.txt")
    with open(path, encoding="utf-8") as handle:
        return [tuple(line.split()) for line in handle if line.strip() and not line.startswith("#")]


def load_lfw_and_utk(stores: str) -> tuple[tuple[np.ndarray, np.ndarray], Photos, Photos]:
    """LFW (vectors, identities), UTKFace children (under 13) and adults (20-59, the first 1,500, less the
    people of LFW among them); sets ``MODEL_ID`` to the stores' model (their age model assigns the strata)."""
    import os

    from idleak.store import EmbeddingStore

    global MODEL_ID
    lfw = load_store(os.path.join(stores, "store-lfw"))
    MODEL_ID = EmbeddingStore.open(os.path.join(stores, "store-lfw")).model_id
    utk, ages, names = load_utk(os.path.join(stores, "store-utk"))
    children = np.flatnonzero(ages < 13)
    adults = np.flatnonzero((ages >= 20) & (ages < 60))[:1500]
    in_lfw = {a for a, b in same_person_pairs() if b.startswith("LFW/")}  # not strangers to an LFW REAL
    return (lfw, Photos.of(utk[children], names[children]),
            Photos.of(utk[adults], names[adults]).without_people_of(in_lfw))


def load_utk(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectors, ages and file names of a store made from UTKFace (the age is the file name's first number)."""
    import os

    from idleak.store import EmbeddingStore

    rows = EmbeddingStore.open(path).rows()
    ok = np.array([r is None for r in rows.reason]) & (rows.face == 0)
    names = np.array([os.path.basename(str(p)) for p in rows.path[ok]], dtype=object)
    return rows.vectors[ok], np.array([int(n.split("_")[0]) for n in names]), names


def load_store(path: str, aligned: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Vectors and identities of the faces in an idleak store (largest face per image)."""
    from idleak.store import EmbeddingStore

    rows = EmbeddingStore.open(path).rows()
    ok = np.array([r is None for r in rows.reason]) & (rows.face == 0)
    return rows.vectors[ok], np.asarray(rows.identity[ok], dtype=object)


def table(cells: list[Cell]) -> str:
    lines = ["| family | cell | alpha | reps | false 'leak' verdicts | rate | within sampling error | too few to decide "
             "| recall of leaked ids | per-face false-flag rate |", "|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for c in cells:
        rate = "" if c.recall is not None else f"{c.rate:.3f}"
        ok = "" if c.recall is not None else ("yes" if c.holds else f"**no** (> {c.upper:.3f})")
        recall = f"{c.recall:.2f}" if c.recall is not None else ""
        if c.leak_verdicts is not None:
            recall += f" (verdict 'leak': {c.leak_verdicts}/{c.reps})"
        false = "" if c.recall is not None else str(c.false_leaks)
        per_face = f"{c.face_rate:.4f}" if c.face_rate is not None else ""
        lines.append(f"| {c.family} | {c.name} | {c.alpha} | {c.reps} | {false} | {rate} | {ok} | "
                     f"{c.undecided if c.recall is None else ''} | {recall} | {per_face} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("small", "full"), default="small")
    parser.add_argument("--stores", default=None, help="folder with store-orl, store-lfw, ... (idleak embed outputs)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--families", default="scores,vectors,faces", help="which cell families to run")
    parser.add_argument("--max-people", type=int, default=600, help="LFW people drawn per repetition (faces cells)")
    args = parser.parse_args(argv)
    full = args.size == "full"
    reps = 200 if full else 40
    families = set(args.families.split(","))
    cells: list[Cell] = []
    grid = ([(100, 50, 20), (1000, 50, 20), (1000, 500, 20), (10_000, 5_000, 20), (100_000, 50_000, 20)]
            if full else [(1000, 50, 20), (1000, 500, 20)])
    for alpha in (0.01, 0.05) if families & {"scores", "vectors"} else ():
        for m, n_ids, size in grid if "scores" in families else ():
            for rho in (0.0, 0.3, 0.6):
                cells.append(score_cell(m, n_ids, size, rho, alpha, reps))
                print(table(cells[-1:]).splitlines()[-1], flush=True)
        for score in ("raw", "csls") if "vectors" in families else ():
            cells.append(vector_cell(score, alpha, reps))
            cells.append(vector_cell(score, alpha, max(10, reps // 10), leak=True))
            for c in cells[-2:]:
                print(table([c]).splitlines()[-1], flush=True)
    if args.stores and "faces" in families:
        cells += face_cells(args.stores, reps if full else 20, args.max_people)
    if args.stores and "children" in families:
        cells += children_cells(args.stores, reps if full else 20)
    if args.stores and "population" in families:
        cells += population_cells(args.stores, reps if full else 20)
    text = table(cells)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
