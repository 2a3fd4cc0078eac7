"""Fixtures for testing GliomaSuiteLib on a real MRML scene from the ``slicer-core`` wheel.

``slicer-core`` brings Slicer's MRML nodes and module logics (no Qt, no ``slicer.app``), so these
fixtures do by hand what Slicer's application does at start-up: a scene, the application logic, the
module logics registered under their Slicer module names, and on demand an offscreen 3D view.

Usage in a test::

    def test_something(mrml, threed_view, tmp_path):
        node = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        mrml.logic("Segmentations") ...
        threed_view.reset_camera()
        rgb = threed_view.capture(tmp_path / "view.png")

Offscreen rendering uses EGL (no X server needed; Mesa's software EGL is enough). Without a display
we select VTK's EGL window before VTK is imported, which avoids a failed X connection first.
"""

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

try:
    import slicer
    import slicerio  # noqa: F401  (the independent .seg.nrrd reader the tests check against)
    import vtk
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkCommonCore import vtkCollection

    SLICER_MISSING = None if hasattr(slicer, "vtkMRMLScene") else "'import slicer' found no MRML classes"
except ImportError as error:
    SLICER_MISSING = str(error)

if SLICER_MISSING:
    # Skip every test module here with the reason. (pytest.skip in a conftest fails outright when
    # this folder is named on the command line, so the modules are replaced instead of imported.)
    class _NeedsSlicerCore(pytest.File):
        def collect(self):
            pytest.skip(f"needs the slicer-core wheel (pip install slicer-core slicerio): {SLICER_MISSING}")

    def pytest_pycollect_makemodule(module_path, parent):
        return _NeedsSlicerCore.from_parent(parent, path=module_path)


# GliomaSuiteLib and the core package live in GliomaSuite/, as in the installed Slicer module.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "GliomaSuite"))


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slicer)


# Module logics a GliomaSuite scene uses, by the names Slicer registers them under, so that code
# calling ``appLogic.GetModuleLogic("VolumeRendering")`` behaves the same here and in Slicer.
# Terminologies is left out: its logic loads Slicer's terminology JSON files on start-up, which the
# wheel does not ship (terminology strings are built with its static methods, no instance needed).
MODULE_LOGICS = {
    "SubjectHierarchy": "vtkSlicerSubjectHierarchyModuleLogic",
    "Volumes": "vtkSlicerVolumesLogic",
    "Segmentations": "vtkSlicerSegmentationsModuleLogic",
    "VolumeRendering": "vtkSlicerVolumeRenderingLogic",
    "Tables": "vtkSlicerTablesLogic",
    "Plots": "vtkSlicerPlotsLogic",
    "Sequences": "vtkSlicerSequencesLogic",
}


@dataclass
class MRMLApp:
    """A scene with Slicer's application logic and module logics, as Slicer sets them up."""

    scene: object
    app_logic: object
    logics: dict = field(default_factory=dict)

    def logic(self, module_name: str):
        """The module logic registered under Slicer's module name, e.g. ``"Segmentations"``."""
        return self.logics[module_name]


def build_mrml_app() -> MRMLApp:
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app_logic.SetSliceLogics(vtkCollection())
    app_logic.SetViewLogics(vtkCollection())
    # Default colour tables (grey for volumes, generic anatomy for labels) that display nodes expect.
    color_logic = app_logic.GetColorLogic()
    color_logic.SetMRMLScene(scene)
    color_logic.AddDefaultColorNodes()
    app_logic.SetModuleLogic("Colors", color_logic)
    # Slicer's Colors module (vtkSlicerColorLogic) registers the colour legend node class with the scene.
    scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())

    crosshair = slicer.vtkMRMLCrosshairNode()
    crosshair.SetCrosshairName("default")
    scene.AddNode(crosshair)

    logics = {"Colors": color_logic}
    for module_name, class_name in MODULE_LOGICS.items():
        logic_class = getattr(slicer, class_name, None)
        if logic_class is None:  # an older or slimmer wheel: tests needing it will say so
            continue
        logic = logic_class()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(module_name, logic)
        logics[module_name] = logic
    return MRMLApp(scene=scene, app_logic=app_logic, logics=logics)


@pytest.fixture
def mrml():
    """A fresh MRML scene with application and module logics (see :class:`MRMLApp`)."""
    app = build_mrml_app()
    yield app
    app.scene.Clear(True)


@pytest.fixture
def scene(mrml):
    """Just the scene of :func:`mrml`, for tests that need no logic."""
    return mrml.scene


def capture_window(render_window, png_path=None) -> np.ndarray:
    """Render an offscreen VTK window and return it as an (height, width, 3) uint8 array, top row
    first; also write it as a PNG if asked."""
    render_window.Render()
    grabber = vtk.vtkWindowToImageFilter()
    grabber.SetInput(render_window)
    grabber.SetInputBufferTypeToRGB()
    grabber.ReadFrontBufferOff()
    grabber.Update()
    if png_path is not None:
        writer = vtk.vtkPNGWriter()
        writer.SetFileName(str(png_path))
        writer.SetInputData(grabber.GetOutput())
        writer.Write()
    image = grabber.GetOutput()
    width, height, _ = image.GetDimensions()
    rgb = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, 3)
    return rgb[::-1]  # VTK rows run bottom-up


class OffscreenThreeDView:
    """A Slicer 3D view (view node, view logic, displayable managers) rendering into an offscreen
    window: what qMRMLThreeDView does, minus Qt."""

    DISPLAYABLE_MANAGERS = (
        "vtkMRMLCameraDisplayableManager",
        "vtkMRMLViewDisplayableManager",
        "vtkMRMLModelDisplayableManager",
        "vtkMRMLSegmentationsDisplayableManager3D",
        "vtkMRMLVolumeRenderingDisplayableManager",
    )

    def __init__(self, app: MRMLApp, size=(400, 400), name="1"):
        self.renderer = vtk.vtkRenderer()
        self.render_window = vtk.vtkRenderWindow()
        self.render_window.SetOffScreenRendering(True)
        self.render_window.SetSize(*size)
        self.render_window.SetMultiSamples(0)
        self.render_window.AddRenderer(self.renderer)
        self.interactor = vtk.vtkRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.render_window)

        factory = slicer.vtkMRMLThreeDViewDisplayableManagerFactory.GetInstance()
        factory.SetMRMLApplicationLogic(app.app_logic)
        for manager in self.DISPLAYABLE_MANAGERS:
            if not factory.IsDisplayableManagerRegistered(manager):
                factory.RegisterDisplayableManager(manager)
        self.displayable_managers = slicer.vtkMRMLDisplayableManagerGroup()
        self.displayable_managers.Initialize(factory, self.renderer)

        self.view_logic = slicer.vtkMRMLViewLogic()
        self.view_logic.SetMRMLApplicationLogic(app.app_logic)
        self.view_logic.SetMRMLScene(app.scene)
        app.app_logic.GetViewLogics().AddItem(self.view_logic)
        self.view_node = self.view_logic.AddViewNode(name)
        self.view_node.SetBoxVisible(False)
        self.view_node.SetAxisLabelsVisible(False)
        self.displayable_managers.SetMRMLDisplayableNode(self.view_node)

    def set_background(self, rgb):
        self.view_node.SetBackgroundColor(*rgb)
        self.view_node.SetBackgroundColor2(*rgb)

    def reset_camera(self, direction="Anterior"):
        """Look at everything shown from a patient direction (Anterior, Left, Superior, ...)."""
        self.render_window.Render()
        camera_manager = self.displayable_managers.GetDisplayableManagerByClassName(
            "vtkMRMLCameraDisplayableManager")
        camera_node = camera_manager.GetCameraNode()
        camera_node.RotateTo(getattr(slicer.vtkMRMLCameraNode, direction))
        self.renderer.ResetCamera()
        self.renderer.ResetCameraClippingRange()

    def capture(self, png_path=None) -> np.ndarray:
        """Render and return the view as an (height, width, 3) uint8 array; also write a PNG if asked."""
        return capture_window(self.render_window, png_path)

    def finalize(self):
        self.displayable_managers.SetMRMLDisplayableNode(None)
        self.render_window.Finalize()


def _offscreen_rendering_problem():
    """None if an offscreen OpenGL context works here, else the reason it does not."""
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(True)
    window.SetSize(8, 8)
    try:
        if not window.SupportsOpenGL():
            return f"{window.GetClassName()} found no usable OpenGL (install Mesa's EGL: libegl1, libgl1)"
    finally:
        window.Finalize()
    return None


@pytest.fixture(scope="session")
def offscreen_rendering():
    problem = _offscreen_rendering_problem()
    if problem:
        pytest.skip(f"offscreen 3D rendering unavailable: {problem}")


@pytest.fixture
def threed_view(mrml, offscreen_rendering):
    """An offscreen 3D view on the :func:`mrml` scene (skips the test where OpenGL is unavailable)."""
    view = OffscreenThreeDView(mrml)
    yield view
    view.finalize()
