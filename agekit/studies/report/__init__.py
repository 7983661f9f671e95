"""A study's report: report.md, summary.json, summary.csv, the figures and the closing table,
written from what the study folder's runs hold (:func:`write_report`).

The numbers come from :mod:`agekit.studies.statistics`, the answer sentence from
:mod:`agekit.studies.answer`, the plots from :mod:`agekit.studies.figures`, and which keys lead,
with the direction that is better, from the metric classes (:mod:`agekit.studies.headline`).
Here: what the report reads (:mod:`.records`), the numbers it keeps (:mod:`.summary`), the
markdown's sections (:mod:`.sections`, :mod:`.setting_section`, :mod:`.tuning_section`), the
table printed at the end (:mod:`.closing_table`) and the writer that composes them
(:mod:`.writer`).
"""

from agekit.studies.report.records import ReportError
from agekit.studies.report.writer import write_report

__all__ = ["ReportError", "write_report"]
