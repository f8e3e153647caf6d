"""Identity membership attack: was this person in the generator's training set?

"This Person (Probably) Exists" (Webster et al., 2021): a generator's faces match *other* photos of
its training identities more closely than photos of people it never saw. Each identity gets a
score, the highest similarity of any generated face to any of its photos; members are positives.

* Threshold for ``n_over_threshold``: the null comes from the non-members, on the same scale as the
  score: each non-member photo's best similarity to any generated face is what chance gives; the
  threshold is the conformal (1 - alpha) quantile of those (``decide.stats.threshold_at``). A generated face counts
  for the identity of its nearest real photo (members and non-members together) when its similarity
  to that photo is above the threshold, as a flagged face counts for an identity in the audit.
* Distributions (Tinsley et al., 2021), all nearest-neighbour similarities: real-real genuine (each
  photo's closest other photo of the same person), real-real impostor (closest photo of anyone else:
  the audit's leave-one-identity-out null) and real-generated (each generated face's closest real
  photo), with d' and the KS statistic of real-generated against impostor. Beyond
  ``max_impostor_queries`` photos the impostor values come from a random sample of photos.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from idleak.decide import Threshold, group_ids, leave_one_identity_out_null
from idleak.decide.stats import threshold_at
from idleak.embedding import FaceSet
from idleak.errors import IdleakError
from idleak.metrics import RocResult, d_prime, ks_statistic, roc_metrics
from idleak.search import topk


@dataclass
class MiaOptions:
    """Settings of the attack's statistics; defaults are the CLI's."""

    alpha: float = 0.01
    n_bootstrap: int = 1000
    bootstrap_seed: int = 0
    block_size: int = 65_536
    #: The impostor distribution (a plot, d', KS) searches at most this many photos, sampled at random.
    max_impostor_queries: int = 20_000


@dataclass
class MiaResult:
    """Per-identity scores, the ROC and what the report shows.

    Arrays indexed by identity: ``identities``, ``member``, ``score``, ``n_over``, ``n_photos``,
    ``best_photo`` (row into ``photos``) and ``best_generated`` (row into the generated faces or
    reconstructions, -1 if none).
    """

    attack: str  # "generated_faces" or "latent_recovery"
    identities: np.ndarray
    member: np.ndarray
    score: np.ndarray
    n_over: np.ndarray
    n_photos: np.ndarray
    best_photo: np.ndarray
    best_generated: np.ndarray
    photos: FaceSet
    roc: RocResult
    threshold: Threshold
    distributions: dict[str, np.ndarray] = field(default_factory=dict)
    separation: dict = field(default_factory=dict)
    over_representation: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)

    @property
    def n_members(self) -> int:
        return int(self.member.sum())

    @property
    def n_nonmembers(self) -> int:
        return int((~self.member).sum())


def combine_photos(members: FaceSet, nonmembers: FaceSet) -> tuple[FaceSet, np.ndarray]:
    """Members' and non-members' labelled faces as one set, and a per-face member flag.

    Unlabelled faces are left out (listed in ``excluded`` as ``unlabelled``); an identity named on
    both sides, or a side without any labelled face, is an ``IdleakError``.
    """
    parts, flags, excluded = [], [], []
    for faces, is_member, role in ((members, True, "members"), (nonmembers, False, "non-members")):
        labelled = faces.labelled
        if not labelled.any():
            raise IdleakError(f"{role} have no usable identity-labelled faces (one sub-folder per person; "
                              "see excluded.csv)")
        excluded += [(str(p), "unlabelled", f"{role}: not in a per-person sub-folder")
                     for p in faces.paths[~labelled]]
        kept = faces.subset(labelled)
        kept.excluded = []
        parts.append(kept)
        flags.append(np.full(len(kept), is_member))
    both = set(map(str, parts[0].identities)) & set(map(str, parts[1].identities))
    if both:
        names = ", ".join(sorted(both)[:5])
        raise IdleakError(f"identities in both members and non-members: {names}"
                          f"{' ...' if len(both) > 5 else ''}")
    combined = FaceSet(*(np.concatenate([getattr(parts[0], a), getattr(parts[1], a)]) for a in
                         ("vectors", "paths", "identities", "hashes", "boxes", "det_scores", "n_faces")),
                       excluded=excluded)
    return combined, np.concatenate(flags)


def per_identity_max(photo_scores: np.ndarray, groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Max score per group and the photo row that attains it (first on ties)."""
    best = np.full(n_groups, -np.inf)
    arg = np.full(n_groups, -1, dtype=np.int64)
    order = np.lexsort((np.arange(len(photo_scores)), -photo_scores))  # highest first, then row order
    present, first = np.unique(groups[order], return_index=True)
    arg[present] = order[first]
    best[present] = photo_scores[order[first]]
    return best, arg


def genuine_nearest(vectors: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each face's similarity to the closest other face of its own identity (identities with 2+ faces)."""
    out = []
    for g in np.unique(groups[groups >= 0]):
        rows = np.flatnonzero(groups == g)
        if len(rows) < 2:
            continue
        sims = vectors[rows] @ vectors[rows].T
        np.fill_diagonal(sims, -np.inf)
        out.append(sims.max(axis=1))
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def separation(generated_nn: np.ndarray, genuine: np.ndarray, impostor: np.ndarray) -> dict:
    """d' and KS of real-generated against impostor nearest-neighbour similarities (and genuine, for scale)."""
    ks, ks_p = ks_statistic(generated_nn, impostor)
    return {
        "d_prime_generated_vs_impostor": d_prime(generated_nn, impostor),
        "ks_generated_vs_impostor": ks,
        "ks_p_value": ks_p,
        "d_prime_genuine_vs_impostor": d_prime(genuine, impostor),
        "mean_genuine": float(np.mean(genuine)) if len(genuine) else None,
        "mean_impostor": float(np.mean(impostor)) if len(impostor) else None,
        "mean_generated": float(np.mean(generated_nn)) if len(generated_nn) else None,
    }


def over_representation(identities: np.ndarray, member: np.ndarray, score: np.ndarray,
                        train_counts: dict[str, int] | None) -> dict:
    """Members' training-image counts against their scores: Spearman correlation and the points to plot."""
    if not train_counts:
        return {}
    names = [str(i) for i in identities]
    counts = np.array([train_counts.get(n, -1) for n in names], dtype=np.int64)
    have = member & (counts >= 0)
    rho, p = (float("nan"), float("nan"))
    if have.sum() >= 3 and len(np.unique(counts[have])) > 1 and len(np.unique(score[have])) > 1:
        result = stats.spearmanr(counts[have], score[have])
        rho, p = float(result.statistic), float(result.pvalue)
    member_names = {n for n, m in zip(names, member) if m}
    return {
        "n_train": counts,
        "n_members_with_counts": int(have.sum()),
        "members_without_counts": [n for n, h, m in zip(names, have, member) if m and not h],
        "counted_not_members": sorted(set(train_counts) - member_names),
        "spearman_rho": rho,
        "spearman_p_value": p,
    }


def aggregate(attack: str, photos: FaceSet, photo_member: np.ndarray, photo_score: np.ndarray,
              photo_best: np.ndarray, options: MiaOptions) -> tuple[np.ndarray, ...]:
    """Per-identity max of per-photo scores; member flags; the non-member null and its threshold."""
    groups = group_ids(photos.identities)
    n_groups = int(groups.max()) + 1
    identities = np.empty(n_groups, dtype=object)
    member = np.zeros(n_groups, dtype=bool)
    for row, g in enumerate(groups):
        identities[g] = photos.identities[row]
        member[g] = photo_member[row]
    score, best_photo = per_identity_max(photo_score, groups, n_groups)
    best_generated = np.where(best_photo >= 0, photo_best[np.maximum(best_photo, 0)], -1)
    n_photos = np.bincount(groups, minlength=n_groups)
    null = photo_score[~photo_member].astype(np.float32)
    value = threshold_at(null, options.alpha)
    threshold = Threshold(value, "nonmember_null", options.alpha, null,
                          {"null_size": int(len(null)), "null_identities": int((~member).sum()),
                           "null_false_flag_rate": float(np.mean(null > value))})
    return groups, identities, member, score, best_photo, best_generated, n_photos, threshold


def run_mia(generated: FaceSet, members: FaceSet, nonmembers: FaceSet, options: MiaOptions | None = None,
            train_counts: dict[str, int] | None = None) -> MiaResult:
    """Score every member and non-member identity against the generated faces, with ROC metrics."""
    options = options or MiaOptions()
    if not 0 < options.alpha < 1:
        raise IdleakError(f"--alpha must be between 0 and 1, got {options.alpha}")
    if len(generated) == 0:
        raise IdleakError("no face was found in any generated image (see excluded.csv)")
    photos, photo_member = combine_photos(members, nonmembers)
    # each photo's best generated face (photos as queries, generated faces as gallery)
    best = topk(photos.vectors, generated.vectors, 1, block_size=options.block_size)
    photo_score, photo_best = best.scores[:, 0].astype(np.float64), best.indices[:, 0]
    groups, identities, member, score, best_photo, best_generated, n_photos, threshold = aggregate(
        "generated_faces", photos, photo_member, photo_score, photo_best, options)
    # each generated face's nearest real photo: counts per identity above the threshold
    nearest = topk(generated.vectors, photos.vectors, 1, block_size=options.block_size)
    generated_nn = nearest.scores[:, 0]
    over = generated_nn > threshold.value
    n_over = np.bincount(groups[nearest.indices[over, 0]], minlength=len(identities))
    roc, distributions, separated = _roc_and_distributions(photos, groups, member, score, photo_score,
                                                          photo_member, generated_nn, options)
    return MiaResult("generated_faces", identities, member, score, n_over, n_photos, best_photo, best_generated,
                     photos, roc, threshold, distributions, separated,
                     over_representation(identities, member, score, train_counts),
                     {"n_generated_over_threshold": int(over.sum())})


def run_photo_scores(attack: str, photos: FaceSet, photo_member: np.ndarray, photo_score: np.ndarray,
                     options: MiaOptions | None = None, train_counts: dict[str, int] | None = None) -> MiaResult:
    """The same per-identity aggregation and metrics for any per-photo membership score (higher = member),
    e.g. the latent-recovery attack's reconstruction similarity; photo ``i``'s own reconstruction is row ``i``.

    ``n_over`` counts a person's photos whose score is above the non-member threshold.
    """
    options = options or MiaOptions()
    photo_score = np.asarray(photo_score, np.float64)
    groups, identities, member, score, best_photo, best_generated, n_photos, threshold = aggregate(
        attack, photos, photo_member, photo_score, np.arange(len(photos)), options)
    n_over = np.bincount(groups[photo_score > threshold.value], minlength=len(identities))
    roc, distributions, separated = _roc_and_distributions(photos, groups, member, score, photo_score,
                                                          photo_member, photo_score, options)
    return MiaResult(attack, identities, member, score, n_over, n_photos, best_photo, best_generated, photos, roc,
                     threshold, distributions, separated, over_representation(identities, member, score, train_counts))


def _roc_and_distributions(photos: FaceSet, groups: np.ndarray, member: np.ndarray, score: np.ndarray,
                           photo_score: np.ndarray, photo_member: np.ndarray, generated: np.ndarray,
                           options: MiaOptions) -> tuple[RocResult, dict[str, np.ndarray], dict]:
    """The ROC over identities, and the genuine / impostor / real-generated distributions with their separation."""
    roc = roc_metrics(score, member, options.n_bootstrap, options.bootstrap_seed)
    genuine = genuine_nearest(photos.vectors, groups)
    impostor = leave_one_identity_out_null(photos.vectors, photos.identities, options.max_impostor_queries,
                                           block_size=options.block_size)
    distributions = {"genuine": genuine, "impostor": impostor, "generated": np.asarray(generated, np.float32),
                     "photo_best": photo_score.astype(np.float32), "photo_member": photo_member}
    return roc, distributions, separation(generated, genuine, impostor)
