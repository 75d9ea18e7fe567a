from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import models


def test_method_modules_and_classes_import_from_the_package() -> None:
    from models import METHODS, Byol, Scarf, Vime, byol, scarf, vime

    assert (scarf.Scarf, vime.Vime, byol.Byol) == (Scarf, Vime, Byol)
    assert METHODS == {"scarf": Scarf, "vime": Vime, "byol": Byol}
    assert scarf.ScarfParams().epochs == 1000 and vime.VimeParams().lr == 1e-3 and byol.ByolParams().tau == 0.9
    with pytest.raises(AttributeError, match="no attribute 'simclr'"):
        models.simclr  # noqa: B018


def test_the_package_docstring_example_runs() -> None:
    example = textwrap.dedent(models.__doc__.split("::\n", 1)[1].split("\nNames are")[0])
    namespace: dict[str, object] = {}
    exec(compile(example, "models.__doc__", "exec"), namespace)  # noqa: S102 - our own docstring
    z, proba, losses = namespace["z"], namespace["proba"], namespace["losses"]
    assert isinstance(z, np.ndarray) and z.shape == (120, 256)
    assert isinstance(proba, np.ndarray) and proba.shape == (120, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert isinstance(losses, list) and len(losses) == 3 and all(np.isfinite(losses))


def test_importing_a_light_submodule_does_not_load_torch() -> None:
    code = "import sys, models.genes; from models import scarf; print('torch' in sys.modules)"
    light = "import sys, models.genes; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", light], capture_output=True, text=True, check=True).stdout == "False\n"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "True\n"
