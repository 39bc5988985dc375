"""Reference layouts: a fixed table shape, such as the published insurance-claims datasets,
laid over a trace-store frame.

A layout maps each column of the target table to the frame column (a reference such as
``classify_claim_value.outputs.is_low_value_claim``) it stands for. In a layout every value
is a number and what a node did not produce is 0, as in the reference datasets: booleans are
1.0/0.0 and a branch not taken leaves 0 in its columns.

Layout files are YAML: ``columns:`` maps column name to reference, in the table's column
order.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import yaml


class LayoutError(ValueError):
    """A layout file that is no layout, or a frame that cannot be laid out (text where the
    layout takes numbers)."""


def load_layout(path: str | Path) -> dict[str, str]:
    """The ``columns:`` mapping of the layout file at ``path``. A file without ``columns:`` is
    refused rather than read as a layout of its top-level keys: those are no column names,
    and the windows would then fail with a misleading "no column is a node"."""
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise LayoutError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise LayoutError(f"{path}: not valid YAML{where} ({problem})") from None
    columns = doc.get("columns") if isinstance(doc, dict) else None
    if not isinstance(columns, dict) or not columns or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in columns.items()
    ):
        raise LayoutError(f"{path}: a layout file maps column names to references under "
                          "'columns:' (e.g. causal/layouts/insurance_claims.yaml)")
    return dict(columns)


def to_layout(frame: pd.DataFrame, layout: Mapping[str, str]) -> pd.DataFrame:
    """``frame`` as the layout's columns (same index); absent values and columns become 0.
    :class:`LayoutError`, naming the column and its reference, for a column whose values are not
    numbers (a BYTES tensor's text)."""
    out = pd.DataFrame(
        {name: frame.get(ref, 0.0) for name, ref in layout.items()},
        index=frame.index,
    )
    for name, ref in layout.items():
        column = out[name]
        if not pd.api.types.is_numeric_dtype(column):
            numbers = pd.to_numeric(column, errors="coerce")
            text = column[numbers.isna() & column.notna()]
            if len(text):
                raise LayoutError(f"layout column {name!r} ({ref}) holds text, not numbers "
                                 f"(e.g. {text.iloc[0]!r} for request {text.index[0]!r}): a "
                                 "layout takes numeric tensors only")
    return out.astype("float64").fillna(0.0)
