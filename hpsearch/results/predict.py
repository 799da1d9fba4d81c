"""``hpsearch predict``: the study's best model on a CSV file of raw rows, written to another CSV.

Rows are read as the study's features (by name when the study had named columns, extra columns
such as the target are ignored); the model's stored preprocessing is applied. With ``mc`` samples,
the prediction is the MC-dropout mean and standard-deviation (and, for classifiers, entropy)
columns are added (:mod:`hpsearch.results.uncertainty`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hpsearch.errors import DataError, UserError
from hpsearch.results.best import load_best

__all__ = ["predict_file"]


def _read_rows(path: Path, names: list[str] | None) -> Any:
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path}: no such file; give a CSV file of rows to predict")
    try:
        frame = pd.read_csv(path)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as CSV ({type(exc).__name__}); give a CSV file with a header row")\
            from None
    if names:
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise DataError(f"{path}: lacks feature column {missing[0]!r}; the model was trained on {', '.join(names)}")
        return frame[names]
    return frame.to_numpy()


def predict_file(study: str, path: str, output: str, *, mc: int | None = None, storage: str | None = None,
                 artifacts: str | None = None, seed: int | None = 0) -> dict[str, Any]:
    """Predict every row of ``path`` with the best model of ``study`` and write ``output`` (CSV).

    Returns a summary (rows, columns, output path) for the console."""
    import pandas as pd

    out = Path(output)
    if out.exists():
        raise UserError(f"-o {output}: already exists; remove it or choose another path")
    if not out.parent.exists():
        raise UserError(f"-o {output}: folder {out.parent} does not exist; create it first")
    est = load_best(study, storage, artifacts)
    pre = est.preprocessor_
    X = _read_rows(Path(path), pre.feature_names if pre is not None else None)
    columns: dict[str, Any] = {}
    classes = list(getattr(est, "classes_", [])) if pre is not None and pre.classes is not None else None
    if mc is None:
        if classes is not None:
            proba = est.predict_proba(X)
            columns["prediction"] = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
            columns.update({f"proba_{c}": proba[:, i] for i, c in enumerate(classes)})
        else:
            columns["prediction"] = est.predict(X)
    else:
        u = est.predict_uncertainty(X, samples=mc, seed=seed)
        if classes is not None:
            columns["prediction"] = np.asarray(classes, dtype=object)[u.mean.argmax(axis=1)]
            columns.update({f"proba_{c}": u.mean[:, i] for i, c in enumerate(classes)})
            columns.update({f"std_{c}": u.std[:, i] for i, c in enumerate(classes)})
            columns["entropy"] = u.entropy
        else:
            columns["prediction"] = u.mean
            columns["std"] = u.std
    pd.DataFrame(columns).to_csv(out, index=False)
    return {"study": study, "rows": len(columns["prediction"]), "columns": list(columns), "output": str(out),
            "mc_samples": mc}
