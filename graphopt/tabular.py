"""Reading a CSV file column by column, with errors that name the file and the line."""

import csv

from graphopt.errors import DataError


def read_csv_cells(path, choose_columns):
    """The cells of the columns ``choose_columns(header)`` picks, as {column: [(line, text)]}.

    Errors name the file and the line: an empty file, a truncated row, text that is not UTF-8 or
    not CSV. ``choose_columns`` may raise its own DataError (a missing column is on line 1).
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: the file is empty; it needs a header line and rows")
            header = [h.strip() for h in header]
            index = {c: header.index(c) for c in choose_columns(header)}
            cells = {c: [] for c in index}
            for line_no, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) < len(header):
                    raise DataError(
                        f"{path}, line {line_no}: {len(row)} cells where the header has "
                        f"{len(header)}; fix or remove the truncated row"
                    )
                for c, i in index.items():
                    cells[c].append((line_no, row[i]))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason}); give a CSV file") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a valid CSV ({exc})") from None
    return cells
