"""What every command's ``--help`` shares: option defaults shown, and the model options naming the models."""

import argparse
import textwrap

from ..registry import (DEFAULT_SEGMENTATION_MODEL, DEFAULT_SURVIVAL_MODEL, REDUCED_SEGMENTATION_MODEL,
                        segmentation_model_names, survival_model_names)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; each option's help ends with its default where it has one (not for flags)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default is argparse.SUPPRESS or default == []
                or "default" in text.lower() or not action.option_strings):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})"

    def _split_lines(self, text, width):  # model names such as vnet-brats-cv4-v1 are not broken at their hyphens
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


DEVICE_HELP = "where the network runs (auto: the GPU when PyTorch finds one, else the CPU)"
SEGMENTATION_MODEL_HELP = (
    f"registered segmentation model or a weights file (.npz); default: {DEFAULT_SEGMENTATION_MODEL}, or "
    f"{REDUCED_SEGMENTATION_MODEL} for a study without T1 or T2; registered: {', '.join(segmentation_model_names())}")
SURVIVAL_MODEL_HELP = (f"survival model name or .json file; default: {DEFAULT_SURVIVAL_MODEL}; shipped: "
                       f"{', '.join(survival_model_names())}")
