"""Reading a user's CSV table: any of the usual encodings and separators, and one sentence for what is
not a table at all (a folder, an image or other binary file, an empty file)."""

import csv
from pathlib import Path
from typing import Tuple

from .errors import GliomaSuiteError

#: Separators a spreadsheet export may use (a European Excel writes ";").
SEPARATORS = ",;\t"


def read_table_text(path, what: str = "table") -> Tuple[str, str]:
    """``(text, separator)`` of the CSV file ``path``. UTF-8 (with or without a byte-order mark) is tried
    first, then Windows-1252 / Latin-1, which decodes any byte; the separator is sniffed from the first
    lines among comma, semicolon and tab (comma when they do not say)."""
    path = Path(path)
    if not path.exists():
        raise GliomaSuiteError(f"The {what} {path} does not exist; check the path.")
    if path.is_dir():
        raise GliomaSuiteError(f"{path} is a folder; give the {what} as a CSV file.")
    data = path.read_bytes()
    if not data.strip():
        raise GliomaSuiteError(f"{path} is empty; give a CSV table with a header row.")
    head = data[:4096]
    if b"\x00" in head or head.startswith((b"\x1f\x8b", b"\x89PNG", b"PK\x03\x04", b"%PDF")):
        raise GliomaSuiteError(f"{path} is not a text table (it is a binary file, such as an image or a spreadsheet); "
                               "save the table as CSV and give that file.")
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    sample = "\n".join(text.splitlines()[:20])
    try:
        separator = csv.Sniffer().sniff(sample, delimiters=SEPARATORS).delimiter
    except csv.Error:
        separator = ","
    return text, separator
