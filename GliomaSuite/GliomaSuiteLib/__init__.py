"""GliomaSuite's Slicer glue: MRML nodes from and to the core package's images and results.

MRML only (no Qt), so everything here also runs on a bare scene from the ``slicer-core`` wheel.
"""

from .SegmentationNodes import (
    image_from_volume_node,
    image_on_volume_grid,
    ijk_to_ras_from_image,
    ijk_to_ras_from_volume_node,
    labels_from_segmentation_node,
    save_segmentation,
    segmentation_node_from_labels,
    terminology_entry,
    volume_node_from_array,
    volume_node_from_image,
)

__all__ = [
    "image_from_volume_node",
    "image_on_volume_grid",
    "ijk_to_ras_from_image",
    "ijk_to_ras_from_volume_node",
    "labels_from_segmentation_node",
    "save_segmentation",
    "segmentation_node_from_labels",
    "terminology_entry",
    "volume_node_from_array",
    "volume_node_from_image",
]
