"""Reference layouts: a fixed table shape, such as the published insurance-claims datasets,
laid over a trace-store frame.

A layout maps each column of the target table to the frame column (a reference such as
``classify_claim_value.outputs.is_low_value_claim``) it stands for. In a layout every value
is a number and what a node did not produce is 0, as in the reference datasets: booleans are
1.0/0.0 and a branch not taken leaves 0 in its columns.

Layout files are YAML: ``columns:`` (or the top level) maps column name to reference, in
the table's column order.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import yaml


def load_layout(path: str | Path) -> dict[str, str]:
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    columns = doc.get("columns", doc) if isinstance(doc, dict) else None
    if not isinstance(columns, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in columns.items()
    ):
        raise ValueError(f"{path}: a layout maps column names to references (under 'columns:')")
    return dict(columns)


def to_layout(frame: pd.DataFrame, layout: Mapping[str, str]) -> pd.DataFrame:
    """``frame`` as the layout's columns (same index); absent values and columns become 0.
    ValueError, naming the column and its reference, for a column whose values are not
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
                raise ValueError(f"layout column {name!r} ({ref}) holds text, not numbers "
                                 f"(e.g. {text.iloc[0]!r} for request {text.index[0]!r}): a "
                                 "layout takes numeric tensors only")
    return out.astype("float64").fillna(0.0)
