"""Personal lookup: is this person's face in a dataset?

Every face of the dataset is compared with every photo of the person; a dataset face whose best
match is above the audit's calibrated threshold for that dataset is a **match**. The threshold is
set so that a stranger's photo passes with probability ``alpha / P`` for P photos of the person
(Bonferroni), so a person who is not in the dataset gets any match at all with probability about
``alpha`` at most.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from idleak.decide import DecisionOptions, GalleryDecider
from idleak.embedding import FaceSet
from idleak.errors import IdleakError
from idleak.search import topk


@dataclass
class LookupOptions(DecisionOptions):
    """Settings of the decision (the audit's); alpha is split over the person's photos."""


@dataclass
class DatasetLookup:
    """The person searched in one dataset."""

    name: str
    threshold: GalleryDecider | None
    alpha_per_photo: float
    n_faces: int
    matches: list[dict] = field(default_factory=list)  # most similar first
    closest: dict | None = None  # the most similar pair, matched or not
    value: float = float("inf")  # the similarity threshold used (the strictest over the photos decided)
    n_photos_undecided: int = 0  # the person's photos no null could decide (may be a young child's)

    @property
    def found(self) -> bool:
        return bool(self.matches)

    @property
    def decidable(self) -> bool:
        """False when the dataset's null cannot resolve alpha / P for this person's faces (too few labelled
        faces; or every photo may show a young child, decided only against a holdout's children)."""
        return self.threshold is not None and self.threshold.resolvable and bool(np.isfinite(self.value))



def check_person(person: FaceSet) -> None:
    """A lookup is for one person: at least one face, at most one identity label."""
    if len(person) == 0:
        raise IdleakError("no face found in the person's photos (see excluded.csv)")
    labels = {str(i) for i in person.identities if i is not None}
    if len(labels) > 1:
        raise IdleakError(f"--person holds {len(labels)} identities ({', '.join(sorted(labels)[:3])} ...); "
                          "give the photos of one person")


def lookup_dataset(person: FaceSet, dataset: FaceSet, model_id: str, name: str,
                   options: LookupOptions | None = None) -> DatasetLookup:
    """Search the person's faces in ``dataset`` and keep the dataset faces above its calibrated threshold."""
    options = options or LookupOptions()
    options.validate()
    check_person(person)
    alpha_per_photo = options.alpha / len(person)
    if len(dataset) == 0:
        return DatasetLookup(name, None, alpha_per_photo, 0)
    # raw similarity, so that every dataset face above the threshold can be listed as a match
    threshold = GalleryDecider.build(dataset.vectors, dataset.identities, model_id,
                                     dataclasses.replace(options, score="raw"), level=alpha_per_photo, score="raw")
    # each photo at its apparent-age stratum's threshold; a photo no null can decide is not used
    limits = threshold.thresholds_for(person.vectors)
    found = topk(dataset.vectors, person.vectors, len(person), block_size=options.block_size)
    above = found.scores > limits[np.maximum(found.indices, 0)]
    matched = above.any(1)
    # the photo reported per dataset face: the closest one that passes, else the closest one
    pick = np.where(matched, np.argmax(above, axis=1), 0)
    scores = found.scores[np.arange(len(dataset)), pick]
    best = found.indices[np.arange(len(dataset)), pick]
    rows = []
    for i in np.argsort(-scores, kind="stable"):
        j = int(best[i])
        rows.append({
            "dataset": name, "dataset_path": str(dataset.paths[i]), "dataset_identity": dataset.identities[i],
            "person_path": str(person.paths[j]), "similarity": float(scores[i]),
            "identical_file": bool(dataset.hashes[i] == person.hashes[j]),
            "dataset_box": _box(dataset.boxes[i]), "person_box": _box(person.boxes[j]), "matched": bool(matched[i]),
        })
    matches = [r for r in rows if r.pop("matched")]
    decided = np.isfinite(limits)
    value = float(limits[decided].max()) if decided.any() else float("inf")
    return DatasetLookup(name, threshold, alpha_per_photo, len(dataset), matches, rows[0] if rows else None, value,
                         int((~decided).sum()))


def statement(results: list[DatasetLookup], alpha: float, n_person_faces: int, n_person_excluded: int) -> dict:
    """Plain-language summary: what was found, what a match proves and what no match does not prove."""
    found = [r for r in results if r.found]
    lines = []
    undecided = [r for r in results if not r.found and not r.decidable and r.n_faces]
    for r in results:
        if not r.found and not r.decidable and r.n_faces:
            lines.append(f"{r.name}: cannot decide at this error rate ({r.n_faces} faces: too few labelled faces, "
                         "or the photos may show a young child, whose false-match rate a dataset's own faces "
                         "cannot calibrate); no match could be found, which proves nothing.")
        elif r.found:
            ids = sorted({str(m["dataset_identity"]) for m in r.matches if m["dataset_identity"] is not None})
            who = f" (labelled {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''})" if ids else ""
            lines.append(f"{r.name}: {len(r.matches)} of {r.n_faces} faces match this person{who}.")
        else:
            lines.append(f"{r.name}: no match among {r.n_faces} faces.")
        if r.n_photos_undecided and r.decidable:
            lines[-1] += (f" {r.n_photos_undecided} of the person's photos may show a young child and were not used: "
                          "a child's false-match rate cannot be calibrated on the dataset's own faces.")
    if found:
        headline = f"Faces matching this person were found in {len(found)} of {len(results)} dataset(s)."
    elif undecided:
        headline = (f"Too few to decide in {len(undecided)} of {len(results)} dataset(s): their calibration cannot "
                    f"resolve the error rate alpha / {n_person_faces}; no match elsewhere.")
    else:
        headline = f"No match for this person in {'the dataset' if len(results) == 1 else 'any of the datasets'}."
    match_means = (
        f"A match is evidence, not proof: the threshold is set so that a stranger's face passes it with "
        f"probability about {alpha:g} over all {n_person_faces} photo(s), but lookalikes exist and twins or "
        "relatives pass more often. Look at the pairs by eye (idleak review) before acting on them."
    )
    no_match_means = (
        "No match does not prove absence: photos of the same person in another pose, at another age, in poor "
        "light or at low resolution can score below the threshold; the face detector can miss faces (those "
        "images are not searched at all); and the threshold, set to keep strangers out, also lets some true "
        "matches fall below it. More, and more varied, photos of the person make a miss less likely."
    )
    if n_person_excluded:
        no_match_means += f" {n_person_excluded} of the person's photos had no usable face and were not used."
    return {"found": bool(found), "decided": not undecided or bool(found), "headline": headline,
            "per_dataset": lines, "match_means": match_means,
            "no_match_means": no_match_means}


def _box(box: np.ndarray) -> list[float] | None:
    return [float(v) for v in box] if np.all(np.isfinite(box)) else None
