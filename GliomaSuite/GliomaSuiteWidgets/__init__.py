"""The module's Qt panels, one file each, every decision left to the MRML logics in ``GliomaSuiteLib``.

Only Slicer's application loads these (they need Qt); ``GliomaSuite.py`` builds its tabs from them.
"""
