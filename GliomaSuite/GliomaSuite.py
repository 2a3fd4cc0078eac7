"""GliomaSuite: the 3D Slicer module.

Thin by design: the engine lives in the ``gliomasuite`` core package (no Slicer dependency) and the
MRML glue in ``GliomaSuiteLib``; this file holds only what Slicer needs to show the module and to
run its self-test (Slicer's Developer Tools > Self Tests, or ctest in an extension build).
"""

import importlib
import logging
import pkgutil

import ctk
import qt
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)


class GliomaSuite(ScriptedLoadableModule):
    """Module metadata shown in Slicer's module list and Help & Acknowledgement panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("GliomaSuite")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.contributors = ["GliomaSuite contributors"]
        self.parent.helpText = _("""
GliomaSuite works on glioma MRI studies (T1, T1ce, T2 and FLAIR): it segments the necrotic core,
edema and enhancing tumour with a V-Net, compares follow-up scans (RANO 2.0 response and a
recurrence risk map), places the patient on survival models and exports a report.
Research software: not for clinical diagnosis or treatment decisions.
<p>References:</p>
<ul>
<li>Milletari F, Navab N, Ahmadi SA. V-Net: Fully Convolutional Neural Networks for Volumetric
Medical Image Segmentation. 3DV 2016.
<a href="https://arxiv.org/abs/1606.04797">arXiv:1606.04797</a></li>
<li>Menze BH, et al. The Multimodal Brain Tumor Image Segmentation Benchmark (BRATS).
IEEE Trans Med Imaging 2015;34(10):1993-2024.
<a href="https://doi.org/10.1109/TMI.2014.2377694">doi:10.1109/TMI.2014.2377694</a></li>
<li>Bakas S, et al. Advancing The Cancer Genome Atlas glioma MRI collections with expert
segmentation labels and radiomic features. Sci Data 2017;4:170117.
<a href="https://doi.org/10.1038/sdata.2017.117">doi:10.1038/sdata.2017.117</a></li>
<li>Wen PY, et al. RANO 2.0: Update to the Response Assessment in Neuro-Oncology Criteria for High-
and Low-Grade Gliomas in Adults. J Clin Oncol 2023;41(33):5187-5199.
<a href="https://doi.org/10.1200/JCO.23.01059">doi:10.1200/JCO.23.01059</a></li>
</ul>
""")
        self.parent.acknowledgementText = _("""
GliomaSuite is developed by the GliomaSuite contributors and released under the Apache License 2.0.
It builds on 3D Slicer, PyTorch and MONAI, and follows the label conventions of the BraTS
challenges; we thank their organisers and the institutions that contributed the data.
""")


class GliomaSuiteWidget(ScriptedLoadableModuleWidget):
    """The module panel. Its tabs come with the features they expose."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)

        statusSection = ctk.ctkCollapsibleButton()
        statusSection.text = _("GliomaSuite")
        self.layout.addWidget(statusSection)
        statusLayout = qt.QVBoxLayout(statusSection)

        statusLabel = qt.QLabel(_(
            "The Segment, Follow-up, Survival and Report tabs arrive here with their features. "
            "This version installs the GliomaSuite engine and its Slicer helpers; "
            "it has no processing steps to run yet."
        ))
        statusLabel.wordWrap = True
        statusLayout.addWidget(statusLabel)

        self.layout.addStretch(1)


class GliomaSuiteLogic(ScriptedLoadableModuleLogic):
    """Entry point for scripts that drive the module without its panel.

    It delegates to ``GliomaSuiteLib`` and the ``gliomasuite`` core package and gains its methods
    with the features (segmentation first).
    """


class GliomaSuiteTest(ScriptedLoadableModuleTest):
    """Self-test run inside Slicer: the module's packages import with Slicer's own Python."""

    #: Our packages. A ModuleNotFoundError for one of these is a packaging fault (a file missing
    #: from GliomaSuite/CMakeLists.txt); for any other name it is an optional dependency.
    OWN_PACKAGES = ("gliomasuite", "GliomaSuiteLib")

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PackagesImport()

    def test_PackagesImport(self):
        """Every module of the core and of GliomaSuiteLib imports in Slicer.

        This catches what only Slicer's environment reveals: a file left out of the packaged
        extension, or code that Slicer's Python version or bundled libraries cannot run.
        Modules that need a dependency installed on first use (torch, say) are reported, not failed.
        """
        self.delayDisplay(_("Importing the GliomaSuite packages"))
        for packageName in self.OWN_PACKAGES:
            package = importlib.import_module(packageName)
            logging.info(f"{packageName} imported from {package.__path__[0]}")
            # onerror: a subpackage that fails to import is yielded anyway and imported below,
            # where its error is judged like any other module's.
            modules = pkgutil.walk_packages(
                package.__path__, packageName + ".", onerror=lambda name: None
            )
            for module in modules:
                try:
                    importlib.import_module(module.name)
                except ModuleNotFoundError as error:
                    missing = (error.name or "").split(".")[0]
                    if not missing or missing in self.OWN_PACKAGES:
                        raise
                    logging.info(f"{module.name} not checked: it needs {error.name}, not installed")
        self.delayDisplay(_("GliomaSuite packages import"))
