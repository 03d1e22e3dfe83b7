"""Synthetic MIMIC-Eye-shaped sources: the REFLACX, MIMIC-CXR-JPG, MIMIC-IV and MIMIC-IV-ED trees.

:func:`generate` writes, under ``source_dir``, exactly the layout, file names, columns and types of
:mod:`mdfnet.data.schema` (so the join runs unchanged on real downloads), with the real tables' messiness and a
learnable image ↔ clinical signal.

Generative model
================
patient → episode (latent conditions) → {lesions (noisy-OR of the conditions), triage vitals (additive effects of
the same conditions)} → image (each lesion drawn inside its box) → REFLACX readings (jittered ellipses per reader).
Lesions and vitals are independent given the conditions, so the triage carries information about the lesions
that the image does not (the look-alike pair below).

**Patient.** gender ∈ {F, M} (1:1); ``anchor_age`` = round(N(60, 17)) clipped to [18, 91]; ``anchor_year`` ~
U{2110..2186} (MIMIC's shifted years); ``anchor_year_group`` a real 3-year group; ``dod`` empty for 96 %.
The age at an event is ``anchor_age + (event year − anchor_year)`` (what the join computes).

**Episode** (one per REFLACX study and one per background ED stay): four latent binary conditions. Infection and
fluid overload are mutually exclusive (one acute cause per episode), cardiomegaly and splinting independent:

=================  ======================================  ==================================================
condition          prior                                   effect on the triage vitals
=================  ======================================  ==================================================
infection          0.35                                    temperature +U(1.8, 4.2) °F, heartrate +20,
                                                           resprate +3, o2sat −U(0, 3)
fluid_overload     σ(−0.62 + 0.04·(age − 62)) (≈ 0.35),    resprate +9, o2sat −U(4, 12), heartrate +12
                   at most 1 − 0.35; never with infection
cardiomegaly       σ(−1.4 + 0.06·(age − 62))               sbp +18, dbp +6
splinting          0.2                                     pain U{5..10} (post-operative / pleuritic pain)
=================  ======================================  ==================================================

on top of baselines temperature 98.0 + N(0, 0.55) °F, heartrate 80 + N(0, 12), resprate 16 + N(0, 1.8),
o2sat 98.3 − |N(0, 1.3)|, sbp 125 + 0.45·(age − 62) + N(0, 17), dbp 74 + 0.12·(age − 62) + N(0, 10),
pain 0 (45 %) or U{0..6}, acuity 1..5 (lower = sicker when any condition holds).

**Lesions** (the 5 classes) are a noisy-OR of the conditions:
``P(lesion j) = 1 − (1 − LEAK[j]) · Π_c (1 − CAUSE[c, j] · condition_c)`` with (rows = conditions,
columns = ECS, Atelectasis, Pleural abnormality, Consolidation, Pulmonary edema; see :data:`CAUSE`, :data:`LEAK`)::

    infection       0     0.10  0.20  0.95  0
    fluid_overload  0.30  0     0.35  0     0.95
    cardiomegaly    0.85  0     0     0     0
    splinting       0     0.70  0.05  0     0
    leak            0.03  0.04  0.03  0     0

An image keeps at most 3 lesions (a random 3 when more are drawn). Hence fever ↔ consolidation,
tachypnoea/low o2sat ↔ pulmonary edema, age/sbp ↔ enlarged cardiac silhouette, pain ↔ atelectasis; the look-alike
pair never shares an image, and each of its lesions has its clinical cause (no leak), so the rule that tells them
apart holds for every case and is learnable from a few hundred training images.

**Image** (grayscale JPEG, width and height drawn independently in [0.75, 1.25]·``image_size``, never square so
that a swapped x/y shows up): a chest
background (dark lung fields, bright mediastinum, spine and heart, faint rib arcs, noise, per-image anatomy
jitter and contrast), then one opacity per lesion inside its box:

- *Consolidation* and *Pulmonary edema* are rendered by the **same** textured-opacity renderer with the **same**
  location/size distribution (a patchy blob in the lower two thirds of either lung): the image cannot tell them
  apart, the clinical data (temperature vs resprate/o2sat) can — a clinical-fusion model can beat image-only;
- *Enlarged cardiac silhouette*: the heart blob is drawn wider (0.19–0.24·W half-width vs 0.11–0.145·W);
  its box is the heart's bounding box;
- *Pleural abnormality*: a bright homogeneous meniscus (crescent) at a lung base's lateral edge;
- *Atelectasis*: a dense slightly oblique band across a lung, 4–7 % of the image height thick (3–4 px at 64 px;
  it was 1.6–3.2 %, 1–2 px and barely visible at 64 px, which made its AP mostly noise there).

**Readings** (REFLACX): 1 reader per image (80 %), 2 (13 %) or 3 (7 %), distinct radiologists. A single reading
is phase 3 with probability 0.7 (else 1 or 2); readings of multi-read images are phase 1/2/3 w.p. 0.45/0.45/0.1.
Each reader sees each lesion w.p. 0.9 and draws an ellipse whose bounding box is the lesion box with every edge
moved by N(0, 0.06·side) px, clipped to the image, integer pixels in the original image frame; certainty
1..5 w.p. 0.05/0.10/0.20/0.30/0.35. 12 % of readings add one ellipse of a non-target label of their phase (phase 1:
Support devices, Emphysema, Nodule, Other; phases 2–3: Support devices, Enlarged hilum, Lung nodule or mass, Other;
not rendered). Each phase file and ellipse file has exactly its phase's label columns, sorted
(:func:`mdfnet.data.schema.reflacx_labels`: 18 labels in phase 1, 16 in phases 2–3), and CRLF line ends, as REFLACX
writes them. Phase-1 pleural ellipses mark "Pleural effusion" (70 %), "Pleural thickening" (10 %) or both (20 %);
phases 2–3 mark "Pleural abnormality". Metadata label columns hold the reading's maximum certainty per label
(0 = absent). Images with no lesion (and readers who missed every lesion) give header-only ellipse files. 3 % of the
readings of ordinary images (``n_studies ≥ 10``) have ``eye_tracking_data_discarded`` True (their ellipse files written all the same, as
REFLACX did); the join drops them by default.

**What a model can learn.** The look-alike pair is *Consolidation* vs *Pulmonary edema*: same renderer, same
box distribution, so from the image alone only their co-occurring findings hint at which (edema comes with an
enlarged heart or effusion more often). The triage separates them. Measured on the joined readings of a
3000-study run (seed 0, join with ``check_images=False``, after cleaning; 3,424 readings, Consolidation on 30 %,
edema on 30 %, never both): consolidation readings average 101.0 °F / resprate 19.0 / o2sat 95.6 against
98.0 °F / 25.0 / 89.3 for edema ones; one threshold on temperature alone tells the two apart with 0.971 accuracy
(resprate 0.924, o2sat 0.952; majority class 0.50), and a logistic regression on the 9 numeric features (trained on
every other reading) with 0.999 on the others. Correlations of lesion presence with the features (same run):
consolidation–temperature 0.82, edema–resprate 0.74, edema–o2sat −0.77, ECS–age 0.31, ECS–sbp 0.38,
atelectasis–pain 0.45. (Before the REFLACX phase labels were corrected and discarded readings dropped: 3,511
readings; 0.966 / 0.926 / 0.955; 0.998.)
``tests/test_synthetic_signal.py`` checks these directions and the separability.

Messiness and special cases
===========================
- ``StudyTime`` is an unpadded HHMMSS.fff float (93512.125 = 09:35:12.125); 40 % of studies are before 10:00.
- triage ``pain`` is free text: numbers "0".."10", "UA" (3 %), "unable" (1 %), "8-10" (15 % of pains ≥ 8),
  empty (4 %); ``temperature`` recorded in °C for 5 %; each vital missing for 5 %; implausible values for 0.3 %
  per vital (dbp 278, heartrate 0/400, o2sat 150, resprate 0); acuity float 1..5.
- REFLACX frontal views are PA (60 %) or AP; 90 % of PA studies also have a LATERAL row (a dicom without readings);
  background studies add more CXR rows (2 % with an empty ViewPosition, some "LL"), half of them during an ED
  stay and half at a random time (no stay contains them). A REFLACX patient has its study's stay plus 0–3
  unrelated stays ≥ 3 days away (10 % of them also a second study 40–400 days later, with its own stay);
  background stays fall at random on background patients (≈1.5 per patient, so many have several).
- Disjoint reserved REFLACX images (drawn at random; each kind ≥ 1 when ``n_studies ≥ 10``, none below), with the
  join exclusion they cause:

  ==================  ========  =================================================================
  kind                share     what is written
  ==================  ========  =================================================================
  ``no_cxr``          1 %       frontal dicom absent from the CXR metadata → "no CXR metadata"
  ``no_image``        1 %       JPEG not written (image mode only) → "missing image file"
  ``no_stay``         5 %       no stay contains the study (70 % have a stay ending/starting 1–12 h
                                away) → "no ED stay containing the study"
  ``two_stays``       3 %       a second, overlapping stay of the same episode also contains it
                                (half start earlier, half later); both have triage → kept
  ``no_triage``       1 %       the containing stay has no triage row → "no triage record"
  ==================  ========  =================================================================

  Readings marked ``eye_tracking_data_discarded`` (above) are all on ordinary images, so each is excluded for that
  reason alone ("eye-tracking data discarded").

  Runs with ``n_studies ≥ 10`` also always contain: a study before 10:00, an image read by ≥ 2 radiologists,
  every phase, a phase-1 reading with a pleural ellipse, a reading with no ellipse, a discarded reading, and in the
  triage table "UA", "unable", "8-10", an empty pain, a °C temperature and an implausible dbp, heartrate, o2sat and
  resprate.

Scale and determinism
=====================
Background rows (patients, ED stays with triage, CXR rows without readings) scale with ``n_studies``: with
``tables_only`` ≈ 99×, 148× and 126× ``n_studies`` (3000 studies → ≈300k patients, ≈450k stays, ≈380k CXR rows:
MIMIC scale, for benchmarks); with images only 2×, 3× and 3×. All background rows are vectorised.
One seed gives identical bytes (values rounded before writing, shortest-repr floats, gzip ``mtime=0``, one child
generator per image); tables are ``.csv.gz`` for the CXR metadata, patients and ED stays (as downloaded), plain
``.csv`` for triage and REFLACX.
Writing into an existing tree replaces each table (its ``.csv``/``.csv.gz`` twin is removed).

Layouts
=======
``layout="physionet"`` (default) writes the four downloads side by side; ``layout="mimic-eye"`` writes the same
cohort (same seed → same rows, readings and pixels) as MIMIC-Eye's builder lays it out
(:mod:`mdfnet.data.synthetic.mimic_eye`): ``patient_<subject_id>/`` folders for the REFLACX patients only (the
background ED stays and CXR rows are not written), the whole patients table in ``spreadsheets/Hosp/patients.csv``,
every table with pandas' index as first column; the join gives the same instances, boxes and exclusions from
either tree (``tests/test_mimic_eye.py``).
"""

from mdfnet.data.synthetic.clinical import (
    CAUSE,
    CONDITIONS,
    CONSOL,
    ECS,
    EDEMA,
    LEAK,
    MAX_LESIONS,
    P_INFECTION,
    PLEURAL,
    lesion_probabilities,
    sample_conditions,
    sample_lesions,
)
from mdfnet.data.synthetic.common import study_date_int, study_time_float
from mdfnet.data.synthetic.geometry import opacity_box, sample_anatomy, sample_lesion_geometry
from mdfnet.data.synthetic.reflacx import MIN_RESERVED_STUDIES
from mdfnet.data.synthetic.render import render_image
from mdfnet.data.synthetic.sources import generate
from mdfnet.data.synthetic.writers import csv_bytes

__all__ = [
    "CAUSE", "CONDITIONS", "CONSOL", "ECS", "EDEMA", "LEAK", "MAX_LESIONS", "MIN_RESERVED_STUDIES", "P_INFECTION",
    "PLEURAL", "csv_bytes", "generate", "lesion_probabilities", "opacity_box", "render_image", "sample_anatomy",
    "sample_conditions", "sample_lesion_geometry", "sample_lesions", "study_date_int", "study_time_float",
]
