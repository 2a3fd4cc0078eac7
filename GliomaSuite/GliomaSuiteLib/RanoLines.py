"""RANO diameters as markups line pairs a reader can drag, with their lesion kept on the nodes.

Each measured enhancing lesion of a follow-up time point gets two ``vtkMRMLMarkupsLineNode`` lines,
its longest diameter and the longest one perpendicular to it, placed where the core measured them
(``followup.json`` gives the ends in ITK's LPS millimetres; Slicer's world is RAS). Which time point,
lesion track and diameter a line is lives in node attributes prefixed ``GliomaSuite.rano.``, so a
saved and reloaded scene still knows them (line names are for people and may be renamed).

Usage::

    long, short = addLinePair(scene, "TP2", lesion)        # lesion: a "lesions" entry of followup.json
    lineIdentity(long)                                     # ("TP2", 1, "long")
    lineLengthMm(long)                                     # as the reader has left it

MRML only (no Qt).
"""

from typing import Optional, Sequence, Tuple

import numpy as np
import vtk

#: Prefix of the attributes a RANO line carries.
ATTRIBUTE_PREFIX = "GliomaSuite.rano."
TIMEPOINT_ATTRIBUTE = ATTRIBUTE_PREFIX + "timepoint"
TRACK_ATTRIBUTE = ATTRIBUTE_PREFIX + "trackId"
ROLE_ATTRIBUTE = ATTRIBUTE_PREFIX + "role"
#: Whether the core found the lesion measurable (both diameters at least 10 mm) as first measured.
MEASURABLE_ATTRIBUTE = ATTRIBUTE_PREFIX + "measurable"

LONG, SHORT = "long", "short"
#: Keys of a lesion's "diameters" entry in followup.json holding each line's two ends (LPS mm).
ENDS_KEYS = {LONG: "long_ends_lps", SHORT: "short_ends_lps"}
#: Line colours: the longest diameter in yellow, its perpendicular in cyan, as many RANO tools draw them.
COLOURS = {LONG: (1.0, 0.85, 0.1), SHORT: (0.1, 0.85, 1.0)}
LINE_THICKNESS = 0.3  # relative to the glyph size: thin enough not to hide the lesion's edge


def ras_from_lps(point: Sequence[float]) -> np.ndarray:
    """A point in ITK's LPS millimetres as Slicer's RAS (the first two axes flipped)."""
    x, y, z = (float(value) for value in point)
    return np.array([-x, -y, z])


def addLinePair(scene, timepoint: str, lesion: dict) -> Tuple[object, object]:
    """The (long, short) line nodes of one measured lesion of ``timepoint``; ``lesion`` is its
    ``followup.json`` entry (with ``diameters``)."""
    diameters = lesion["diameters"]
    lines = []
    for role in (LONG, SHORT):
        name = scene.GenerateUniqueName(f"{timepoint} lesion {lesion['track_id']} {role}")
        line = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", name)
        line.SetAttribute(TIMEPOINT_ATTRIBUTE, timepoint)
        line.SetAttribute(TRACK_ATTRIBUTE, str(int(lesion["track_id"])))
        line.SetAttribute(ROLE_ATTRIBUTE, role)
        line.SetAttribute(MEASURABLE_ATTRIBUTE, "true" if diameters["measurable"] else "false")
        for end in diameters[ENDS_KEYS[role]]:
            line.AddControlPoint(vtk.vtkVector3d(*ras_from_lps(end)))
        line.CreateDefaultDisplayNodes()
        display = line.GetDisplayNode()
        display.SetSelectedColor(*COLOURS[role])
        display.SetColor(*COLOURS[role])
        display.SetLineThickness(LINE_THICKNESS)
        lines.append(line)
    return lines[0], lines[1]


def lineIdentity(line) -> Optional[Tuple[str, int, str]]:
    """(time point label, track id, "long" or "short") of a RANO line, or None for any other node."""
    timepoint, track, role = (line.GetAttribute(name) for name in (TIMEPOINT_ATTRIBUTE, TRACK_ATTRIBUTE,
                                                                     ROLE_ATTRIBUTE))
    if not timepoint or not track or role not in (LONG, SHORT):
        return None
    try:
        return timepoint, int(track), role
    except ValueError:
        return None


def lineLengthMm(line) -> Optional[float]:
    """The line's length in millimetres as drawn (world coordinates), None while it lacks an end."""
    if line.GetNumberOfDefinedControlPoints() < 2:
        return None
    return float(line.GetLineLengthWorld())


def lineEndsRas(line) -> np.ndarray:
    """The line's two ends in world RAS millimetres, shape (2, 3)."""
    ends = np.zeros((2, 3))
    for index in range(2):
        line.GetNthControlPointPositionWorld(index, ends[index])
    return ends
