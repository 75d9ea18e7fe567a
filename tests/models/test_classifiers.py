from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.classifiers import EncoderClassifier, HeadParams, fit_encoder_classifier, fit_logistic_regression
from models.encoders import MLPEncoder
from models.heads import LinearHead
from models.uncertainty import ood_features


def _encoder(n_genes: int = 20, seed: int = 0) -> MLPEncoder:
    torch.manual_seed(seed)
    return MLPEncoder(n_genes, hidden_dim=32, n_layers=2, dropout=0.1)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _val_loss(clf: EncoderClassifier, x: np.ndarray, y: np.ndarray) -> float:
    proba = clf.predict_proba(x)
    return float(F.nll_loss(torch.log(torch.from_numpy(proba)), torch.from_numpy(y)).item())


def test_mlp_encoder_shape_and_config() -> None:
    enc = MLPEncoder(20, hidden_dim=16, n_layers=3, dropout=0.0)
    assert enc.config() == {"n_genes": 20, "hidden_dim": 16, "n_layers": 3, "dropout": 0.0}
    assert enc.out_dim == 16 and enc(torch.zeros(5, 20)).shape == (5, 16)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in enc.modules()) == 3
    assert MLPEncoder(**enc.config()).config() == enc.config()


def test_finetune_learns_and_never_mutates_the_callers_encoder(labelled: tuple) -> None:
    x, y = labelled
    enc = _encoder()
    before = _state(enc)
    epochs: list[int] = []
    clf, losses = fit_encoder_classifier(
        enc,
        x,
        y,
        None,
        None,
        3,
        freeze_encoder=False,
        params=HeadParams(lr=3e-3, max_epochs=15, batch_size=32),
        device="cpu",
        on_epoch_end=lambda e, loss: epochs.append(e),
    )
    assert epochs == list(range(1, 16)) and len(losses) == 15
    assert losses[-1] < losses[0] / 2
    assert not clf.training and next(clf.parameters()).device.type == "cpu"
    proba = clf.predict_proba(x)
    assert proba.dtype == np.float32 and proba.shape == (120, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert (proba.argmax(axis=1) == y).mean() > 0.95
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(clf.encoder.state_dict()[k], before[k]) for k in before)


def test_linear_probe_freezes_the_encoder(labelled: tuple) -> None:
    x, y = labelled
    enc = _encoder()
    before = _state(enc)
    clf, losses = fit_encoder_classifier(
        enc,
        x,
        y,
        None,
        None,
        3,
        freeze_encoder=True,
        params=HeadParams.from_dict({"max_epochs": 30}, linear_probe=True),
        device="cpu",
    )
    assert losses[-1] < losses[0]
    for k, v in clf.encoder.state_dict().items():  # weights and BatchNorm running stats
        assert torch.equal(v, before[k]), k
    assert not any(p.requires_grad for p in clf.encoder.parameters())
    assert (clf.predict_proba(x).argmax(axis=1) == y).mean() > 0.7  # chance is 1/3


def test_early_stopping_restores_the_best_weights() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 20)).astype(np.float32)
    y = rng.integers(0, 2, size=100)  # pure noise: validation loss rises once the head overfits
    params = HeadParams(lr=1e-2, max_epochs=200, batch_size=16, patience=3)
    enc = _encoder()
    best, losses = fit_encoder_classifier(
        enc, x[:60], y[:60], x[60:], y[60:], 2, freeze_encoder=False, params=params, seed=5, device="cpu"
    )
    assert 3 < len(losses) < 200
    # Same seed without validation for the same number of epochs follows the same trajectory.
    last, losses_again = fit_encoder_classifier(
        enc,
        x[:60],
        y[:60],
        None,
        None,
        2,
        freeze_encoder=False,
        params=HeadParams(lr=1e-2, max_epochs=len(losses), batch_size=16, patience=3),
        seed=5,
        device="cpu",
    )
    assert losses_again == losses
    assert _val_loss(best, x[60:], y[60:]) < _val_loss(last, x[60:], y[60:])


def test_fit_encoder_classifier_validates(labelled: tuple) -> None:
    x, y = labelled
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\)"):
        fit_encoder_classifier(_encoder(), x, y, None, None, 2, freeze_encoder=True, params=HeadParams())
    with pytest.raises(ValueError, match="shape"):
        fit_encoder_classifier(_encoder(), x[:, :5], y, None, None, 3, freeze_encoder=True, params=HeadParams())
    with pytest.raises(ValueError, match="together"):
        fit_encoder_classifier(_encoder(), x, y, x, None, 3, freeze_encoder=True, params=HeadParams())


def test_logistic_regression_scaler_fitted_on_training_data(labelled: tuple) -> None:
    x, y = labelled
    order = np.random.default_rng(0).permutation(120)
    train, test = order[:80], order[80:]
    pipe = fit_logistic_regression(x[train] + 1.0, y[train], C=0.1, seed=0)
    np.testing.assert_allclose(pipe.named_steps["scaler"].mean_, (x[train] + 1.0).mean(axis=0), rtol=1e-5)
    assert pipe.named_steps["logreg"].C == 0.1 and pipe.named_steps["logreg"].max_iter == 2000
    assert (pipe.predict(x[test] + 1.0) == y[test]).mean() > 0.9


def test_one_pass_gives_the_probabilities_and_the_embedding(labelled: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = labelled
    classifier = EncoderClassifier(MLPEncoder(x.shape[1], 16, 2, 0.2), LinearHead(16, 3))

    proba, z = classifier.predict_with_embedding(x, batch_size=50)

    with torch.inference_mode():
        direct = torch.softmax(classifier.eval()(torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(proba, direct, atol=1e-6)
    np.testing.assert_array_equal(z, ood_features(classifier, x, batch_size=50))
    assert proba.shape == (120, 3) and z.shape == (120, 16)


def _probe(x: np.ndarray, y: object, params: object, freeze: bool = True) -> EncoderClassifier:
    clf, _ = fit_encoder_classifier(_encoder(), x, y, None, None, 3, freeze_encoder=freeze, params=params)  # type: ignore[arg-type]
    return clf


def test_labels_must_be_class_indices_of_two_or_more_classes(labelled: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = labelled
    quick = HeadParams(max_epochs=1)
    with pytest.raises(ValueError, match=r"y_train must hold integer class indices, got 0.5 at position 0"):
        _probe(x, y + 0.5, quick)
    with pytest.raises(ValueError, match="y_train must hold integer class indices, got <U1 values such as"):
        _probe(x, np.array(list("abc"))[y], quick)
    with pytest.raises(ValueError, match=r"y_train holds one class only \(\[1\]\)"):
        _probe(x, np.ones_like(y), quick)
    with pytest.raises(ValueError, match="y_val must hold integer class indices"):
        fit_encoder_classifier(_encoder(), x, y, x, y - 0.25, 3, freeze_encoder=True, params=quick)
    whole = _probe(x, y.astype(np.float64), quick)  # floats that are whole numbers are indices
    torch.testing.assert_close(_state(whole), _state(_probe(x, y, quick)))
    with pytest.raises(ValueError, match="y_train must hold integer class indices"):
        fit_logistic_regression(x, y + 0.5)


def test_an_unset_lr_is_the_heads_default_whichever_way_params_are_given(
    labelled: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = labelled
    probe_rate = _state(_probe(x, y, HeadParams(lr=1e-3, max_epochs=3)))
    torch.testing.assert_close(_state(_probe(x, y, HeadParams(max_epochs=3))), probe_rate)
    torch.testing.assert_close(_state(_probe(x, y, HeadParams.from_dict({"max_epochs": 3}, linear_probe=True))),
                               probe_rate)
    torch.testing.assert_close(_state(_probe(x, y, {"max_epochs": 3})), probe_rate)  # a plain dict is accepted
    finetune_rate = _state(_probe(x, y, HeadParams(lr=1e-4, max_epochs=3), freeze=False))
    torch.testing.assert_close(_state(_probe(x, y, {"max_epochs": 3}, freeze=False)), finetune_rate)
    slower = _state(_probe(x, y, HeadParams(lr=1e-4, max_epochs=3)))
    assert not torch.equal(slower["head.linear.weight"], probe_rate["head.linear.weight"])
    with pytest.raises(TypeError, match="params must be a HeadParams or a dict of its fields, got list"):
        _probe(x, y, [("max_epochs", 3)])


def test_prediction_refuses_nan_and_inf_naming_the_first(labelled: tuple[np.ndarray, np.ndarray]) -> None:
    from models.checkpoint import LogisticRegressionModel, logreg_from_payload, logreg_payload
    from models.preprocessing import Preprocessor

    x, y = labelled
    clf = _probe(x, y, HeadParams(max_epochs=1))
    bad = x[:6].copy()
    bad[4, 7] = np.nan
    bad[5, 2] = np.inf
    with pytest.raises(ValueError, match=r"x holds 2 infinite or NaN value\(s\); the first is nan in row 4, column 7"):
        clf.predict_proba(bad)
    pre = Preprocessor.fit(x, [f"G{j}" for j in range(20)], log1p=False)
    logreg: LogisticRegressionModel = logreg_from_payload(logreg_payload(fit_logistic_regression(x, y), pre, "abc"))[0]
    with pytest.raises(ValueError, match="row 4, column 7"):
        logreg.predict_proba(bad)
    assert np.isfinite(clf.predict_proba(x[:4])).all() and np.isfinite(logreg.predict_proba(x[:4])).all()


def test_transform_refuses_inf_but_imputes_nan(labelled: tuple[np.ndarray, np.ndarray]) -> None:
    from models.preprocessing import Preprocessor

    x, _ = labelled
    pre = Preprocessor.fit(x, [f"G{j}" for j in range(20)], log1p=False)
    missing = x[:3].astype(np.float64)
    missing[1, 5] = np.nan
    assert pre.transform(missing)[1, 5] == 0.0  # a missing gene: the training mean
    missing[2, 9] = -np.inf
    message = r"x holds 1 infinite value\(s\); the first is -inf in row 2, column 9 \(gene 'G9'\)"
    with pytest.raises(ValueError, match=message):
        pre.transform(missing)
    with pytest.raises(ValueError, match="the first is -inf in row 2, column 9"):
        Preprocessor.fit(missing, [f"G{j}" for j in range(20)], log1p=False)
