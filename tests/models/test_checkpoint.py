from __future__ import annotations

import numpy as np
import pytest
import torch

from models.checkpoint import (
    ArtifactError,
    classifier_from_payload,
    classifier_payload,
    dumps,
    encoder_from_payload,
    encoder_payload,
    loads,
    logreg_from_payload,
    logreg_payload,
    predictor_from_payload,
)
from models.classifiers import HeadParams, fit_encoder_classifier, fit_logistic_regression
from models.encoders import MLPEncoder
from models.preprocessing import Preprocessor

GENES = [f"G{i}" for i in range(20)]


def _fitted(labelled: tuple) -> tuple[MLPEncoder, Preprocessor, np.ndarray, np.ndarray]:
    x, y = labelled
    raw = np.expm1(x - x.min() + 1.0) * 50  # positive "expression" for the preprocessor to log
    pre = Preprocessor.fit(raw, GENES, log1p=True)
    torch.manual_seed(0)
    enc = MLPEncoder(20, hidden_dim=16, n_layers=2, dropout=0.1)
    enc.train()
    enc(torch.from_numpy(pre.transform(raw)))  # move BatchNorm running stats off their defaults
    return enc.eval(), pre, pre.transform(raw), y


def test_dumps_loads_plain_payload_and_rejects_numpy() -> None:
    payload = {"a": [1, 2.5, "x", None, True], "t": torch.arange(3), "nested": {"k": (1, 2)}}
    back = loads(dumps(payload))
    assert back["a"] == [1, 2.5, "x", None, True] and torch.equal(back["t"], torch.arange(3))
    with pytest.raises(TypeError, match=r"payload\['bad'\] holds a ndarray"):
        dumps({"bad": np.zeros(2)})
    with pytest.raises(ArtifactError, match="could not be loaded"):
        loads(b"not a torch file")


def test_encoder_round_trip_gives_identical_outputs(labelled: tuple) -> None:
    enc, pre, z, _ = _fitted(labelled)
    data = dumps(encoder_payload(enc, pre, method="scarf", params={"epochs": 3}))
    enc2, pre2, info = encoder_from_payload(loads(data))
    assert info == {"method": "scarf", "params": {"epochs": 3}}
    assert pre2.genes == GENES and pre2.log1p is True
    assert not enc2.training and enc2.config() == enc.config()
    with torch.inference_mode():
        assert torch.equal(enc2(torch.from_numpy(z)), enc(torch.from_numpy(z)))


def test_tampered_encoder_payloads_raise_artifact_error(labelled: tuple) -> None:
    enc, pre, _, _ = _fitted(labelled)
    good = encoder_payload(enc, pre, method="scarf", params={})

    wrong_genes = loads(dumps(good))
    wrong_genes["preprocessor"] = Preprocessor(GENES[:19], True, pre.mean[:19], pre.std[:19]).to_dict()
    with pytest.raises(ArtifactError, match="encoder expects 20 genes but the artifact's panel has 19"):
        encoder_from_payload(wrong_genes)

    short_stats = loads(dumps(good))
    short_stats["preprocessor"]["mean"] = short_stats["preprocessor"]["mean"][:5]
    with pytest.raises(ArtifactError, match="lengths differ"):
        encoder_from_payload(short_stats)

    wrong_weights = loads(dumps(good))
    wrong_weights["state_dict"]["net.0.weight"] = torch.zeros(16, 21)
    with pytest.raises(ArtifactError, match="weights do not match"):
        encoder_from_payload(wrong_weights)

    missing_key = loads(dumps(good))
    del missing_key["state_dict"]["net.1.running_mean"]
    with pytest.raises(ArtifactError, match="running_mean"):
        encoder_from_payload(missing_key)

    for key, value, message in [("kind", "classifier", "kind"), ("format_version", 99, "format_version")]:
        bad = {**good, key: value}
        with pytest.raises(ArtifactError, match=message):
            encoder_from_payload(bad)


def test_classifier_round_trip_gives_identical_predictions(labelled: tuple) -> None:
    enc, pre, z, y = _fitted(labelled)
    clf, _ = fit_encoder_classifier(
        enc, z, y, None, None, 3, freeze_encoder=False, params=HeadParams(max_epochs=3), device="cpu"
    )
    payload = classifier_payload(clf, pre, ["x", "y", "z"], head_kind="finetune", meta={"label": "subtype"})
    clf2, pre2, info = classifier_from_payload(loads(dumps(payload)))
    assert info == {
        "classes": ["x", "y", "z"], "head_kind": "finetune", "meta": {"label": "subtype"}, "uncertainty": None
    }
    new_raw = np.random.default_rng(3).uniform(0, 500, size=(9, 20))
    np.testing.assert_array_equal(
        clf2.predict_proba(pre2.transform(new_raw)), clf.predict_proba(pre.transform(new_raw))
    )
    model, _, _ = predictor_from_payload(loads(dumps(payload)))
    np.testing.assert_array_equal(model.predict_proba(z), clf.predict_proba(z))

    tampered = loads(dumps(payload))
    tampered["encoder_config"]["n_genes"] = 21
    with pytest.raises(ArtifactError, match="21 genes"):
        classifier_from_payload(tampered)
    with pytest.raises(ArtifactError, match="class names"):
        classifier_payload(clf, pre, ["x", "y"], head_kind="finetune")


def test_logreg_round_trip_matches_the_pipeline(labelled: tuple) -> None:
    _, pre, z, y = _fitted(labelled)
    pipe = fit_logistic_regression(z, y, C=0.1, seed=0)
    payload = loads(dumps(logreg_payload(pipe, pre, ["x", "y", "z"])))
    model, pre2, info = logreg_from_payload(payload)
    assert info["classes"] == ["x", "y", "z"] and info["head_kind"] == "logreg"
    assert pre2.genes == GENES
    new = np.random.default_rng(9).normal(size=(15, 20))
    np.testing.assert_allclose(model.predict_proba(new), pipe.predict_proba(new), rtol=1e-5, atol=1e-6)
    assert model.predict_proba(new).dtype == np.float32
    assert predictor_from_payload(payload)[0].predict_proba(new).shape == (15, 3)

    binary = fit_logistic_regression(z, (y == 2).astype(int))
    model_b, _, _ = logreg_from_payload(loads(dumps(logreg_payload(binary, pre, ["rest", "two"]))))
    np.testing.assert_allclose(model_b.predict_proba(new), binary.predict_proba(new), rtol=1e-5, atol=1e-6)

    tampered = loads(dumps(logreg_payload(pipe, pre, ["x", "y", "z"])))
    tampered["preprocessor"] = Preprocessor(GENES[:19], True, pre.mean[:19], pre.std[:19]).to_dict()
    with pytest.raises(ArtifactError, match="20 genes"):
        logreg_from_payload(tampered)
    with pytest.raises(ArtifactError, match="not a classifier"):
        predictor_from_payload({"kind": "encoder"})


def test_a_panel_naming_one_gene_twice_is_refused_at_fit_and_load(labelled: tuple) -> None:
    x, _ = labelled
    with pytest.raises(ValueError, match=r"1 gene id\(s\) appear more than once .*TP53: 'TP53', 'tp53'"):
        Preprocessor.fit(x, ["TP53", "tp53", *GENES[2:]])
    with pytest.raises(ValueError, match="ENSG00000141510: 'ENSG00000141510.16', 'ENSG00000141510'"):
        Preprocessor.fit(x, ["ENSG00000141510.16", "ENSG00000141510", *GENES[2:]])
    enc, pre, _, _ = _fitted(labelled)
    payload = encoder_payload(enc, pre, method="scarf", params={})
    payload["preprocessor"]["genes"][1] = "g0"  # a saved panel edited (or written before this check)
    with pytest.raises(ArtifactError, match="invalid preprocessor state: genes: .*G0: 'G0', 'g0'"):
        encoder_from_payload(loads(dumps(payload)))


def test_non_finite_weights_are_refused_at_save_and_load(labelled: tuple) -> None:
    enc, pre, z, y = _fitted(labelled)
    payload = encoder_payload(enc, pre, method="scarf", params={})
    payload["state_dict"]["net.0.weight"][0, 0] = float("nan")
    with pytest.raises(ArtifactError, match=r"weight 'net.0.weight' holds 1 NaN or infinite value\(s\)"):
        encoder_from_payload(loads(dumps(payload)))
    with torch.no_grad():
        enc.net[1].running_var[3] = float("inf")
    with pytest.raises(ArtifactError, match="weight 'net.1.running_var' holds 1 NaN"):
        encoder_payload(enc, pre, method="scarf", params={})
    clf, _ = fit_encoder_classifier(_fitted(labelled)[0], z, y, None, None, 3, freeze_encoder=True,
                                    params=HeadParams(max_epochs=2))
    good = classifier_payload(clf, pre, ["a", "b", "c"], head_kind="linear_probe")
    good["state_dict"]["head.linear.bias"][1] = float("-inf")
    with pytest.raises(ArtifactError, match="weight 'head.linear.bias'"):
        classifier_from_payload(loads(dumps(good)))
    logreg = logreg_payload(fit_logistic_regression(z, y), pre, ["a", "b", "c"])
    logreg["coef"][0, 0] = float("nan")
    with pytest.raises(ArtifactError, match="logistic regression coef holds NaN or infinite values"):
        logreg_from_payload(loads(dumps(logreg)))


def test_unknown_method_names_are_refused_at_save_and_load(labelled: tuple) -> None:
    enc, pre, _, _ = _fitted(labelled)
    with pytest.raises(ArtifactError, match=r"unknown SSL method 'simclr'; known: \['byol', 'scarf', 'vime'\]"):
        encoder_payload(enc, pre, method="simclr", params={})
    payload = encoder_payload(enc, pre, method="vime", params={})
    payload["method"] = "simclr"
    with pytest.raises(ArtifactError, match="unknown SSL method 'simclr'"):
        encoder_from_payload(loads(dumps(payload)))
