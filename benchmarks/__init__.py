"""CPU benchmarks of the project's models, one section per part, run by ``python -m benchmarks``.

Usage::

    python -m benchmarks                          # every section, full grids (several minutes)
    python -m benchmarks --section backbone --threads 2 --json runs/benchmark.json
    python -m benchmarks --section detection --quick   # seconds: a smoke run on tiny grids

Speed is printed as ratios against anchors measured in the same run (the fp32 ``torch.mm``
peak, torchvision's MobileNets and detectors): the machines are shared and noisy, so absolute
times from different runs do not compare. Tests never assert timings; ``tests/test_benchmark_smoke.py``
checks the structure of the quick mode's tables and JSON.

Modules:

* ``common``: timing (median after warm-up), denormal flushing, the mm peak, BN calibration of
  random models, markdown tables, the JSON file, and the section registry (``Section``,
  ``register``, ``SECTIONS``).
* ``backbone`` (section) with ``modes``: MobileNetV1 over width x resolution x batch, eager and
  optimised, against ``mobilenet_v2`` / ``mobilenet_v3_large``, and an ablation.
* ``detection`` (section) with ``detection_training`` and ``coco_eval``: SSD300 and Faster R-CNN
  against torchvision's detectors, SSD training throughput, COCO evaluation backends.

Adding a section (for example ``geolocation``):

1. Write ``benchmarks/geolocation.py`` with small functions that *measure* (return plain dicts
   or dataclass rows), *judge* (return the ``targets`` dict) and *print* (``print_heading``,
   ``markdown_table``, ``fmt``, ``verdict`` from ``benchmarks.common``), and a
   ``run(args) -> dict`` that calls them in that order and returns what goes into the JSON under
   the section's name.
2. Register it at the module's end, with its own options and their full and ``--quick`` values::

       SECTION = register(
           Section(
               "geolocation",
               run,
               options=(Option("--geo-images", 1000, quick=20, type=int, help="test images"),),
           )
       )

3. Import it below. ``--section geolocation``, ``--section all``, ``--help`` and ``--json`` then
   include it; add a test to ``tests/test_benchmark_smoke.py`` that runs
   ``main(["--quick", "--section", "geolocation"])`` and checks the printed tables and the JSON.
"""

# Importing a section module registers it; ``--section all`` runs them in this (alphabetical) order.
from benchmarks import backbone as backbone
from benchmarks import data as data
from benchmarks import deploy as deploy
from benchmarks import detection as detection
from benchmarks import face_attributes as face_attributes
from benchmarks import face_identification as face_identification
from benchmarks import face_index as face_index
from benchmarks import geolocation as geolocation
from benchmarks import multinode as multinode
from benchmarks import paper as paper
