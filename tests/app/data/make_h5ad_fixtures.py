"""Write the .h5ad fixtures with the real anndata library (not a project dependency: it pins pandas < 3).

Run once, from the repository root, with a Python that has anndata installed:
    python tests/app/data/make_h5ad_fixtures.py
The tests read the files with the project's h5py reader, so they check it against anndata's own writer.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[3] / "shared" / "data"


def synthetic_counts() -> np.ndarray:
    """12 samples x 30 genes of sparse integer counts; the tests recompute the same formula."""
    i, j = np.meshgrid(np.arange(12), np.arange(30), indexing="ij")
    return np.where((i + j) % 3 == 0, ((i + 1) * (j + 2)) % 97 + 150, 0).astype(np.int32)


def main() -> None:
    frame = pd.read_parquet(SHARED / "tissue_symbols" / "expression.parquet")
    labels = pd.read_csv(SHARED / "tissue_symbols" / "labels.csv", dtype=str, index_col=0)
    obs = pd.DataFrame({"tissue": pd.Categorical(labels.loc[frame.index, "tissue"])}, index=frame.index.astype(str))
    dense = ad.AnnData(X=frame.to_numpy(np.float32), obs=obs, var=pd.DataFrame(index=frame.columns.astype(str)))
    dense.write_h5ad(HERE / "tissue_symbols.h5ad")

    counts = synthetic_counts()
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(["treated", "control"] * 6),
            "donor": [f"d{k // 2}" for k in range(12)],
            "n_counts": counts.sum(axis=1),
        },
        index=[f"cell{k:02d}" for k in range(12)],
    )
    var = pd.DataFrame(index=[f"ENSG{k:011d}.{k % 3 + 1}" for k in range(30)])
    for name, matrix in (("counts_csr.h5ad", sp.csr_matrix(counts)), ("counts_csc.h5ad", sp.csc_matrix(counts))):
        ad.AnnData(X=matrix, obs=obs, var=var).write_h5ad(HERE / name)


if __name__ == "__main__":
    main()
