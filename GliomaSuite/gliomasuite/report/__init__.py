"""One patient's report: what segmentation, survival and follow-up wrote, gathered into PDF, JSON and CSV.

Nothing here runs a model: :mod:`.content` reads the label map, the study images and the
``survival.json`` / ``followup.json`` the other commands wrote, and builds ``report.json`` (fields in
``docs/report-schema.md``); :mod:`.figures` draws the key slices and a projection of the tumour;
:mod:`.pdf` renders the PDF from ``report.json`` alone; :mod:`.pipeline` writes the lot into place
atomically. ``gliomasuite report`` (:mod:`gliomasuite.commands.report`) is the command line.
"""
