"""``report.pdf``, rendered from ``report.json`` alone (reportlab platypus, A4, one or two pages).

Every number printed is the one in the JSON, printed with the decimals it was rounded to there, so
the PDF, ``report.json`` and ``report.csv`` can never disagree. The PDF is written in reportlab's
invariant mode (no creation time or random document id), so the same report gives the same bytes.
Text is set in DejaVu Sans, the TrueType font matplotlib ships, registered at run time (no font file
in this package): the PDF's standard fonts have no "³", "Δ" or "≥".
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional
from xml.sax.saxutils import escape

from .. import __version__
from ..errors import GliomaSuiteError
from .content import DEIDENTIFIED, MM_DECIMALS, PERCENT_DECIMALS, REGION_NAMES, REGIONS, VOLUME_DECIMALS

FONT, BOLD, ITALIC, BOLD_ITALIC = "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique"
ACCENT = "#1f4e79"
WARNING_RED = "#a61b1b"
GRID = "#b8c4d0"
HEAD_FILL = "#e8eef4"
MARGIN_CM = 1.5
NONE = "–"


def register_fonts() -> None:
    """Register DejaVu Sans (regular, bold, oblique) from matplotlib's own fonts, once."""
    import matplotlib
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if FONT in pdfmetrics.getRegisteredFontNames():
        return
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    for name in (FONT, BOLD, ITALIC, BOLD_ITALIC):
        file = folder / f"{name}.ttf"
        if not file.is_file():
            raise GliomaSuiteError(f"The font {file} that matplotlib ships is missing, so the PDF cannot print cm³ "
                                   "or Δ; reinstall matplotlib (pip install --force-reinstall matplotlib).")
        pdfmetrics.registerFont(TTFont(name, str(file)))
    pdfmetrics.registerFontFamily(FONT, normal=FONT, bold=BOLD, italic=ITALIC, boldItalic=BOLD_ITALIC)


def _styles() -> dict:
    from reportlab.lib import colors
    from reportlab.lib.styles import ParagraphStyle

    body = ParagraphStyle("body", fontName=FONT, fontSize=8.3, leading=10.4)
    return {
        "body": body,
        "small": ParagraphStyle("small", parent=body, fontSize=7.2, leading=8.8),
        "cell": ParagraphStyle("cell", parent=body, fontSize=7.8, leading=9.4),
        "title": ParagraphStyle("title", parent=body, fontName=BOLD, fontSize=16, leading=19,
                                textColor=colors.HexColor(ACCENT)),
        "use": ParagraphStyle("use", parent=body, fontName=BOLD, fontSize=9, leading=11,
                              textColor=colors.HexColor(WARNING_RED)),
        "h2": ParagraphStyle("h2", parent=body, fontName=BOLD, fontSize=10.5, leading=13, spaceBefore=7,
                             spaceAfter=3, textColor=colors.HexColor(ACCENT)),
        "caption": ParagraphStyle("caption", parent=body, fontSize=7, leading=8.5, textColor=colors.HexColor("#444444")),
    }


def _num(value, decimals: int) -> str:
    return NONE if value is None else f"{value:.{decimals}f}"


def _signed(value, decimals: int = PERCENT_DECIMALS) -> str:
    return NONE if value is None else f"{value:+.{decimals}f}%"


def _text(value) -> str:
    return NONE if value in (None, "") else escape(str(value))


def _known(value) -> str:
    return "not known" if value in (None, "") else escape(str(value))


def _table(rows, widths, header_rows: int = 1, styles: Optional[list] = None):
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    table = Table(rows, colWidths=widths, hAlign="LEFT", repeatRows=header_rows)
    commands = [("FONTNAME", (0, 0), (-1, -1), FONT), ("FONTSIZE", (0, 0), (-1, -1), 7.8),
                ("LEADING", (0, 0), (-1, -1), 9.4), ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor(GRID)),
                ("TOPPADDING", (0, 0), (-1, -1), 1.6), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.6)]
    if header_rows:
        commands += [("BACKGROUND", (0, 0), (-1, header_rows - 1), colors.HexColor(HEAD_FILL)),
                     ("FONTNAME", (0, 0), (-1, header_rows - 1), BOLD)]
    table.setStyle(TableStyle(commands + (styles or [])))
    return table


def _image(folder: Path, relative: Optional[str], width: float, max_height: Optional[float] = None):
    from reportlab.platypus import Image

    if not relative:
        return None
    path = folder / relative
    if not path.is_file():
        return None
    from reportlab.lib.utils import ImageReader

    w, h = ImageReader(str(path)).getSize()
    height = width * h / w
    if max_height and height > max_height:
        width, height = max_height * w / h, max_height
    image = Image(str(path), width=width, height=height)
    image.hAlign = "LEFT"
    return image


def render_pdf(report: dict, folder, path) -> int:
    """Write ``path`` from ``report`` (the content of ``report.json``); figures are read relative to
    ``folder``. Returns the number of pages."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import cm
    from reportlab.platypus import SimpleDocTemplate

    register_fonts()
    folder = Path(folder)
    st = _styles()
    width = A4[0] - 2 * MARGIN_CM * cm
    story: List = []
    story += _header(report, st, width)
    story += _images(report, st, folder, width)
    story += _volumes(report, st, width)
    story += _lesions(report, st, width)
    story += _models(report, st, width)
    story += _survival(report, st, folder, width)
    story += _followup(report, st, folder, width)
    story += _quality(report, st)

    def footer(canvas, doc):
        canvas.saveState()
        canvas.setFont(FONT, 6.8)
        canvas.setFillColorRGB(0.35, 0.35, 0.35)
        canvas.drawString(MARGIN_CM * cm, 0.8 * cm, f"GliomaSuite {report.get('gliomasuite_version', __version__)} · "
                                                    f"{report['intended_use']}")
        canvas.drawRightString(A4[0] - MARGIN_CM * cm, 0.8 * cm, f"page {doc.page}")
        canvas.restoreState()

    doc = SimpleDocTemplate(str(path), pagesize=A4, leftMargin=MARGIN_CM * cm, rightMargin=MARGIN_CM * cm,
                            topMargin=1.2 * cm, bottomMargin=1.3 * cm, title=report["title"],
                            author="GliomaSuite", subject=report["intended_use"], creator=f"GliomaSuite {__version__}",
                            invariant=1)
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return doc.page


# ----------------------------------------------------------------------------------------------
# sections


def _header(report, st, width) -> list:
    from reportlab.lib.units import cm
    from reportlab.platypus import Paragraph

    patient, study = report["patient"], report["study"]
    if patient["deidentified"]:
        who = [("Patient", f"{DEIDENTIFIED} (pseudonym {patient['pseudonym']})"),
               ("Birth date", _text(patient["birth_date"]))]
    else:
        who = [("Patient", _known(patient["name"])), ("Patient ID", _known(patient["id"])),
               ("Birth date", _known(patient["birth_date"]))]
    who.append(("Age", _known(None if patient["age_years"] is None else f"{patient['age_years']:g} years")))
    what = [("Study", _known(study["id"])), ("Study date", _known(study["date"])),
            ("Sequences", escape(", ".join(study["sequences"])) + (
                f" (no {escape(', '.join(study['missing_sequences']))})" if study["missing_sequences"] else "")),
            ("Slices show", _text(study["shown"]) + f" ({escape(study['format'])})")]
    rows = []
    for i in range(max(len(who), len(what))):
        left = who[i] if i < len(who) else ("", "")
        right = what[i] if i < len(what) else ("", "")
        rows.append([Paragraph(f"<b>{left[0]}</b>", st["cell"]), Paragraph(left[1], st["cell"]),
                     Paragraph(f"<b>{right[0]}</b>", st["cell"]), Paragraph(right[1], st["cell"])])
    return [Paragraph(escape(report["title"]), st["title"]),
            Paragraph(escape(report["intended_use"]), st["use"]),
            _spacer(0.15 * cm),
            _table(rows, [2.3 * cm, width / 2 - 2.3 * cm, 3.0 * cm, width / 2 - 3.0 * cm], header_rows=0)]


def _spacer(height):
    from reportlab.platypus import Spacer

    return Spacer(1, height)


def _images(report, st, folder, width) -> list:
    from reportlab.lib.units import cm
    from reportlab.platypus import Paragraph

    out = [Paragraph("Key slices", st["h2"])]
    slices = _image(folder, report["figures"]["key_slices"], width)
    if slices:
        out.append(slices)
    out.append(Paragraph(f"Slices {escape(report['key_slices']['rule'])}; outlines: NCR red, ED green, ET yellow. "
                         "Radiological convention (patient's right on the left). Positions in mm as Slicer shows them.",
                         st["caption"]))
    projection = _image(folder, report["figures"]["projection"], width * 0.8)
    if projection:
        out += [_spacer(0.1 * cm), projection,
                Paragraph("3D impression: each part of the tumour projected through the whole brain (necrotic core "
                          "drawn over enhancing tumour over edema), within the brain's outline.", st["caption"])]
    return out


def _volumes(report, st, width) -> list:
    from reportlab.lib.units import cm
    from reportlab.platypus import Paragraph

    v = report["volumes"]
    rows = [[""] + list(REGIONS),
            [""] + [REGION_NAMES[r] for r in REGIONS],
            ["Volume (cm³)"] + [_num(v[r]["cm3"], VOLUME_DECIMALS) for r in REGIONS]]
    seg = report["segmentation"]
    voxel = " × ".join(f"{s:g}" for s in seg["voxel_mm"])
    first = 2.6 * cm
    table = _table(rows, [first] + [(width - first) / len(REGIONS)] * len(REGIONS), header_rows=1,
                   styles=[("ALIGN", (1, 0), (-1, -1), "CENTER"), ("FONTSIZE", (1, 1), (-1, 1), 6.8),
                           ("FONTNAME", (0, 2), (-1, 2), BOLD)])
    made_by = _text(seg["made_by"]) if seg["made_by"] else "no GliomaSuite stamp (a reader's or another tool's)"
    return [Paragraph("Tumour volumes", st["h2"]), table,
            Paragraph(f"TC = NCR + ET, WT = NCR + ED + ET; {voxel} mm voxels. Label map: {made_by}.", st["caption"])]


def _lesions(report, st, width) -> list:
    from reportlab.lib.units import cm
    from reportlab.platypus import KeepTogether, Paragraph

    les = report["lesions"]
    count = les["count"]
    text = f"<b>{count}</b> lesion{'s' if count != 1 else ''} ({escape(les['rule'])})."
    if les["hemisphere"]:
        side = "midline" if les["hemisphere"] == "midline" else f"{les['hemisphere']} hemisphere"
        text += f" Whole tumour: {side}, {_num(les['left_percent'], PERCENT_DECIMALS)}% of it on the patient's left."
    text += f" Lobe: {escape(les['lobe'])} ({escape(les['lobe_why'])})."
    out = [Paragraph("Lesions and location", st["h2"]), Paragraph(text, st["body"])]
    if les["listed"]:
        rows = [["Lesion", "Volume (cm³)", "Enhancing (cm³)", "Hemisphere", "Lobe"]]
        for lesion in les["listed"]:
            rows.append([str(lesion["number"]), _num(lesion["volume_cm3"], VOLUME_DECIMALS),
                         _num(lesion["enhancing_cm3"], VOLUME_DECIMALS), lesion["hemisphere"], lesion["lobe"]])
        if les["not_listed"]:
            rows.append([f"+{les['not_listed']}", "smaller lesions not listed", "", "", ""])
        out += [_spacer(0.1 * cm), _table(rows, [1.4 * cm, 2.4 * cm, 2.6 * cm, 2.4 * cm, 2.4 * cm],
                                          styles=[("ALIGN", (0, 0), (-1, -1), "CENTER")])]
    return [KeepTogether(out)]


def _survival(report, st, folder, width) -> list:
    from reportlab.lib.units import cm
    from reportlab.platypus import KeepTogether, Paragraph, Table

    s = report["survival"]
    if not s:
        return []
    lo, hi = s["median_ci95_months"]
    median = (f"{_num(s['median_months'], 1)} months" + (f" (95% CI {_num(lo, 1)} to {_num(hi, 1)})"
                                                          if lo is not None or hi is not None else "")
              if s["median_estimable"] else "not reached within the cohort's follow-up")
    rows = [["Median survival", median]]
    for months, p in s["p_alive"].items():
        rows.append([f"P(alive) at {months} months",
                     NONE if not p else f"{p['percent']}% (95% CI {p['lower_percent']}–{p['upper_percent']}%)"])
    rows += [["Risk group", f"{_text(s['risk_group'])} (hazard × {_num(s['hazard_ratio'], 2)} vs cohort average)"],
             ["BraTS survival class", _text(s["brats_class"])],
             ["SOM cluster", (f"node {s['som_node'][0]},{s['som_node'][1]}: {s['similar_patients']} similar patients, "
                              f"median {_num(s['similar_median_months'], 1)} months") if s["som_node"] else NONE],
             ["Age used", NONE if s["age_years"] is None else f"{s['age_years']:g} years"],
             ["Model", f"{_text(s['model'])} ({_text(s['variant'])}), C-index {_num(s['cv_cindex'], 2)}"]]
    figure = _image(folder, report["figures"]["survival"], 9.2 * cm)
    side = width - (9.4 * cm if figure else 0)
    cells = [[Paragraph(f"<b>{a}</b>", st["cell"]), Paragraph(b, st["cell"])]
             for a, b in rows]
    numbers = _table(cells, [4.1 * cm, side - 4.1 * cm], header_rows=0)
    body = Table([[figure, numbers]], colWidths=[9.4 * cm, side], hAlign="LEFT",
                 style=[("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)]) if figure else numbers
    return [KeepTogether([Paragraph("Survival estimate", st["h2"]), body,
                          Paragraph("Estimates for groups of similar patients from a model fitted on BraTS 2020 "
                                    "(pre-operative glioblastoma), not a prediction for this individual. Model choice: "
                                    + escape(s["why"] or NONE) + ".", st["caption"])])]


def _followup(report, st, folder, width) -> list:
    from reportlab.lib import colors
    from reportlab.lib.units import cm
    from reportlab.platypus import KeepTogether, Paragraph

    f = report["followup"]
    if not f:
        return []
    head = ["Time point", "Day"] + [f"{r} (cm³)" for r in REGIONS] + ["SPD (mm²)"]
    rows, styles = [head], []
    for tp in f["timepoints"]:
        name = tp["label"] + (" (baseline)" if tp["is_baseline"] else " (pre-baseline)" if tp["is_pre_baseline"] else "")
        if tp["date"]:
            name += f"\n{tp['date']}"
        rows.append([name, _text(tp["days_from_baseline"])]
                    + [_num(tp["volumes_cm3"][r], VOLUME_DECIMALS) for r in REGIONS]
                    + [_num(tp["sum_of_products_mm2"], MM_DECIMALS)])
        styles.append(("FONTNAME", (2, len(rows) - 1), (-2, len(rows) - 1), BOLD))
        if not tp["is_baseline"] and not tp["is_pre_baseline"]:
            for key, what in (("change_from_baseline_percent", "Δ from baseline"),
                              ("change_from_nadir_percent", "Δ from nadir")):
                rows.append(["", what] + [_signed(tp[key][r]) for r in REGIONS] + [""])
                styles += [("TEXTCOLOR", (0, len(rows) - 1), (-1, len(rows) - 1), colors.HexColor("#444444")),
                           ("FONTSIZE", (0, len(rows) - 1), (-1, len(rows) - 1), 7)]
    first, second = 3.2 * cm, 2.0 * cm
    rest = (width - first - second) / (len(REGIONS) + 1)
    volumes = _table(rows, [first, second] + [rest] * (len(REGIONS) + 1),
                     styles=[("ALIGN", (1, 0), (-1, -1), "CENTER")] + styles)
    lesion_rows = [["Time point", "Lesion", "Status", "Long × short (mm)", "Product (mm²)", "Measurable", "Side"]]
    for tp in f["timepoints"]:
        for les in tp["lesions"]:
            lesion_rows.append([tp["label"], str(les["track_id"]), les["status"],
                                f"{_num(les['long_mm'], MM_DECIMALS)} × {_num(les['short_mm'], MM_DECIMALS)}"
                                + (" (edited)" if les["edited"] else ""),
                                _num(les["product_mm2"], MM_DECIMALS), "yes" if les["measurable"] else "no (< 10 mm)",
                                les["hemisphere"] or NONE])
    out = [Paragraph("Follow-up (RANO 2.0)", st["h2"]), volumes,
           Paragraph("Δ: change of each volume from the baseline and from the nadir (the smallest since baseline). "
                     "SPD: sum of the products of the measurable enhancing lesions' diameters.", st["caption"])]
    if len(lesion_rows) > 1:
        out += [_spacer(0.12 * cm), _table(lesion_rows, [3.2 * cm, 1.3 * cm, 2.0 * cm, 3.4 * cm, 2.4 * cm, 2.4 * cm,
                                                         width - 14.7 * cm], styles=[("ALIGN", (1, 0), (-1, -1), "CENTER")])]
    response = f["response"]
    story = [KeepTogether(out)]
    if response:
        story.append(_spacer(0.12 * cm))
        story.append(Paragraph(f"<b>Response at {escape(response['label'])}:</b> "
                               f"{escape(response['sentence'] or response['category_name'])}", st["body"]))
    story.append(Paragraph(f"<b>Recurrence:</b> {escape(f['recurrence']['text'].rstrip('.'))}.", st["body"]))
    figure = _image(folder, report["figures"]["followup"], width * 0.78, max_height=6.2 * cm)
    if figure:
        story += [_spacer(0.1 * cm), figure]
    return story


def _quality(report, st) -> list:
    from reportlab.platypus import KeepTogether, Paragraph

    q = report["quality"]
    check = q["brain_check"]
    lines = [("passed" if check["passed"] else "failed (see below)") if check["run"]
             else f"not run ({escape(check['why'] or '')})"]
    out = [Paragraph("Quality", st["h2"]), Paragraph(f"<b>Brain check:</b> {lines[0]}.", st["body"])]
    flags = sorted(q["flags"], key=lambda item: item["level"] != "warning")
    for item in flags:
        mark = f"<font color='{WARNING_RED}'><b>warning</b></font>" if item["level"] == "warning" else "note"
        out.append(Paragraph(f"• {mark} ({escape(item['source'])}): {escape(item['text'])}", st["small"]))
    if not flags:
        out.append(Paragraph("No warnings or notes in the inputs.", st["small"]))
    return [KeepTogether(out)]


def _models(report, st, width) -> list:
    from reportlab.lib.units import cm
    from reportlab.platypus import KeepTogether, Paragraph

    m = report["models"]
    rows = [["GliomaSuite (report)", m["gliomasuite_version"]],
            ["Segmentation", m["segmentation"] or "not stamped (a reader's or another tool's label map)"]]
    if m["survival"]:
        rows.append(["Survival model", f"{m['survival']}, written by GliomaSuite {m['survival_gliomasuite_version'] or '?'}"])
    if m["followup_segmented_by"]:
        rows.append(["Follow-up", f"segmented by {', '.join(m['followup_segmented_by'])}, written by GliomaSuite "
                                  f"{m['followup_gliomasuite_version'] or '?'}"])
    cells = [[Paragraph(f"<b>{escape(a)}</b>", st["cell"]), Paragraph(escape(str(b)), st["cell"])] for a, b in rows]
    return [KeepTogether([Paragraph("Models and versions", st["h2"]), _table(cells, [4.2 * cm, width - 4.2 * cm],
                                                                             header_rows=0)])]
