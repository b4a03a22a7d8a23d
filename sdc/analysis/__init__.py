"""Fleet analysis: pure functions over evidence columns that find wrong, slow and inconsistent
chips with the false-alarm rate under control, and turn what they find into verdicts.

``load`` and ``pipeline`` read the store; everything else
takes arrays and returns values.
"""

from sdc.analysis.config import AnalysisConfig
from sdc.analysis.evidence import Evidence, EvidenceBuilder, JobEvidence
from sdc.analysis.findings import Finding
from sdc.analysis.ledger import analyze, to_verdicts

__all__ = ["AnalysisConfig", "Evidence", "EvidenceBuilder", "Finding", "JobEvidence", "analyze", "to_verdicts"]
