"""Dataset-quality report: ``vde report OUT`` writes ``OUT/report/index.html`` from a run's manifests.

One self-contained page (CSS, script, SVG charts and JPEG previews inline; a Content-Security-Policy forbids
any request) with: the filter funnel (videos -> decoded -> with clips -> clips -> scored -> kept -> in shards)
and the clips dropped per reason; distributions of clip duration, size, orientation, frame rate and of every
numeric score column the scorers added, as kept/dropped histograms with the pipeline's thresholds drawn on
them; caption length, categories and DSG-Video results when the run has them; errors by cause with the files;
a sortable, filterable gallery of sampled kept and dropped clips; the run's pipeline, versions and per-stage
timings.

Modules: ``data`` (pyarrow/numpy aggregation, the threshold-key convention), ``charts`` (SVG), ``thumbs``
(preview strips), ``render`` (the page), ``report`` (``build_report``), ``cli``, ``synthetic`` (a generated
run with known counts, for tests and the benchmark).
"""

import _vde_torchvision  # noqa: F401 - torchvision importable on CPU torch, for whatever imports it next
