"""GliomaSuite core: glioma MRI segmentation, follow-up and survival, with no Slicer dependency.

This package never imports ``slicer``, ``qt`` or ``ctk``; the Slicer module (``GliomaSuite.py``)
and its MRML helpers (``GliomaSuiteLib``) build on it.
"""

__version__ = "0.1.0"
