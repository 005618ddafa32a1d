"""fastmask benchmarks: every available backend against the reference and the code it replaces.

Run ``python -m fastmask.bench`` (or ``fastmask-bench``; ``--help`` for the options). For each case
(an operation at one shape) it times fastmask's public API under every backend available on the
device, fastmask's reference backend and the case's baseline on the same inputs, checks the
project's performance goals, prints the tables and writes ``<out>/<device>.json``, ``.md`` and
``.png`` (``build/bench-results`` unless ``--out`` says otherwise).

Modules: ``cases`` (what is timed, the shapes), ``baselines`` (Transformers4Rec and RecBole, loaded
as they are), ``timing`` (how), ``runner`` (contenders, time budget, derived figures), ``goals``,
``report`` and ``cli``. ``bench/`` at the top of the repository holds a pytest-benchmark suite on the
same shapes.
"""
