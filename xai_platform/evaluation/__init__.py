"""Metrics that score explanations.

:mod:`.metrics` scores one explanation (faithfulness, randomisation, stability, agreement,
localisation, X-ray focus); :mod:`.scorecard` gathers them per explanation, ranks methods and
renders them; :mod:`.report` runs them over a data set (``python -m xai_platform evaluate``).
Importing this package imports none of them (scipy and matplotlib load on first use).
"""
