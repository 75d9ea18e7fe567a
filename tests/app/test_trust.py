"""Calibrated probabilities, prediction sets, OOD flags, drift and the model card, through the API.

Cohort: tissue_symbols (189 samples x 500 genes, seven tissues); the predictor is logistic regression (fast).
"""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app.db import orm
from app.db.session import session_factory
from tests.app.test_full_loop import COHORT, start, upload
from tests.conftest import SHARED_DATA, lab_caller, wait_for_job

SAMPLE_FIELDS = {"sample_id", "label", "top_label", "probabilities", "prediction_set", "ood_score",
                 "ood_percentile", "ood_flag"}


def _fit(client: TestClient, cohort_id: str, **extra: object) -> dict:
    body = {"cohort_id": cohort_id, "label_column": "tissue", "head": "logistic_regression", "seed": 1, **extra}
    fit = start(client, "/predictors", body)
    job = wait_for_job(client, fit["job"]["id"])
    assert job["state"] == "succeeded", job["error"]
    return client.get(f"/predictors/{fit['predictor']['id']}").json()


def _foreign(genes: list[str], n: int = 5) -> dict[str, np.ndarray]:
    """all_leukemia's log2 values of random probe sets named as the panel's genes, and uniform noise."""
    rng = np.random.default_rng(0)
    leukemia = pd.read_parquet(SHARED_DATA / "all_leukemia" / "expression.parquet").to_numpy()
    return {
        "leuk": leukemia[:n, rng.choice(leukemia.shape[1], size=len(genes), replace=False)],
        "noise": rng.uniform(4.2, 14.1, size=(n, len(genes))),
    }


@pytest.mark.slow
def test_predictions_carry_sets_calibration_ood_and_drift(client: TestClient) -> None:
    cohort = upload(client)
    predictor = _fit(client, cohort["id"])
    split, calibration = predictor["split"], predictor["calibration"]
    assert split["n_test"] == 38 and split["n_calibration"] >= 25
    assert split["n_train"] + split["n_calibration"] == split["n_train_pool"]
    assert not set(split["calibration_sample_ids"]) & set(split["train_sample_ids"] + split["test_sample_ids"])
    assert sum(split["class_counts"]["calibration"].values()) == split["n_calibration"]
    assert split["gene_panel"]["n_genes"] == 500 and len(split["gene_panel"]["sha256"]) == 64
    test = calibration["test"]
    assert test["n_bins"] == 15 and test["ece_after"] <= test["ece_before"] and calibration["temperature"] > 0
    assert calibration["conformal"]["method"] == "lac" and calibration["conformal"]["test_coverage"]["0.9"] >= 0.8
    assert calibration["ood"]["space"] == "expression" and calibration["ood"]["test_flag_rate"] <= 0.1
    lo, hi = predictor["metrics"]["bootstrap"]["accuracy"]
    assert lo <= predictor["metrics"]["accuracy"] <= hi
    assert {"torch", "scikit-learn", "numpy", "exprssl"} <= set(predictor["environment"])

    expression = pd.read_parquet(COHORT / "expression.parquet")
    labels = pd.read_csv(COHORT / "labels.csv", dtype=str).set_index("sample_id")["tissue"]
    genes = list(expression.columns)
    samples = [{"sample_id": s, "values": expression.loc[s].tolist()} for s in split["test_sample_ids"]]
    foreign = _foreign(genes)
    samples += [{"sample_id": f"{k}{i}", "values": row.tolist()} for k, rows in foreign.items()
                for i, row in enumerate(rows)]
    response = client.post(f"/predictors/{predictor['id']}/predictions", json={"genes": genes, "samples": samples})
    assert response.status_code == 201, response.text
    prediction = response.json()
    results = {r["sample_id"]: r for r in prediction["results"]}
    for r in results.values():
        assert set(r) == SAMPLE_FIELDS
        assert r["label"] == (r["prediction_set"][0] if len(r["prediction_set"]) == 1 else "uncertain")
        assert r["prediction_set"] == sorted(r["prediction_set"], key=lambda c: -r["probabilities"][c])
        assert r["ood_flag"] == (r["ood_percentile"] > 99)
    inside = [results[s] for s in split["test_sample_ids"]]
    assert np.mean([labels[r["sample_id"]] in r["prediction_set"] for r in inside]) >= 0.8
    assert sum(r["ood_flag"] for r in inside) <= 2
    assert all(results[f"{k}{i}"]["ood_flag"] for k in foreign for i in range(5))
    summary = prediction["uncertainty"]
    assert summary["coverage"] == 0.9 and summary["ood_percentile"] == 99 and summary["ood_space"] == "expression"
    assert summary["share_flagged"] == pytest.approx(sum(r["ood_flag"] for r in results.values()) / len(results))
    drift = prediction["drift"]
    assert drift["n_samples"] == len(samples) and drift["n_genes_compared"] == 500
    assert drift["share_flagged"] == summary["share_flagged"] and len(drift["top_genes"]) == 20
    smd = [abs(g["smd"]) for g in drift["top_genes"]]
    assert smd == sorted(smd, reverse=True)
    stored = client.get(f"/predictions/{prediction['id']}").json()
    assert stored["results"] == prediction["results"] and stored["drift"] == drift
    assert stored["uncertainty"] == summary
    # The same results as a table, one row per sample, for spreadsheets and pandas.
    csv = client.get(f"/predictions/{prediction['id']}", params={"format": "csv"})
    parquet = client.get(f"/predictions/{prediction['id']}", params={"format": "parquet"})
    assert csv.headers["content-type"].startswith("text/csv") and csv.headers["x-gene-coverage"] == "1.000000"
    tables = (pd.read_csv(io.StringIO(csv.text), keep_default_na=False), pd.read_parquet(io.BytesIO(parquet.content)))
    for table in tables:
        assert table["sample_id"].tolist() == [r["sample_id"] for r in prediction["results"]]
        assert table["label"].tolist() == [r["label"] for r in prediction["results"]]
        assert table["prediction_set"].tolist() == ["|".join(r["prediction_set"]) for r in prediction["results"]]
        assert table["ood_flag"].astype(bool).tolist() == [r["ood_flag"] for r in prediction["results"]]
        kidney = [r["probabilities"]["kidney"] for r in prediction["results"]]
        np.testing.assert_allclose(table["p_kidney"].astype(float), kidney, rtol=1e-6)

    # Coverage and flag percentile per request; a coverage the calibration split cannot back gives every label.
    one = {"genes": genes, "samples": samples[:3]}
    wide = client.post(f"/predictors/{predictor['id']}/predictions", json={**one, "coverage": 0.99}).json()
    assert all(len(r["prediction_set"]) == 7 and r["label"] == "uncertain" for r in wide["results"])
    assert wide["uncertainty"]["threshold"] is None and "exceeds" in wide["uncertainty"]["notes"][0]
    strict = client.post(f"/predictors/{predictor['id']}/predictions", json={**one, "ood_percentile": 0.5}).json()
    assert strict["uncertainty"]["ood_percentile"] == 0.5 and all(r["ood_flag"] for r in strict["results"])
    for bad in ({"coverage": 1.0}, {"coverage": 0}, {"ood_percentile": 100}):
        assert client.post(f"/predictors/{predictor['id']}/predictions", json={**one, **bad}).status_code == 422
    single = client.post(f"/predictors/{predictor['id']}/predictions", json={"genes": genes, "samples": samples[:1]})
    assert single.json()["drift"] is None

    # A stored cohort: its own samples, mostly in distribution, with little drift.
    batch = client.post(f"/predictors/{predictor['id']}/predictions", json={"cohort_id": cohort["id"]}).json()
    assert batch["drift"]["n_samples"] == 189 and batch["drift"]["share_flagged"] < 0.05
    assert batch["drift"]["mean_abs_smd"] < 0.2


def test_the_card_says_when_auroc_leaves_out_classes_the_test_split_lacks() -> None:
    from app.predictors.card import _metric_lines
    from app.predictors.schemas import ModelCard

    def auroc_line(auroc_classes: int) -> str:
        card = ModelCard.model_construct(classes=["a", "b", "c", "d"],
                                         metrics={"auroc": 0.9, "auroc_classes": auroc_classes})
        return next(line for line in _metric_lines(card) if "auroc" in line)

    assert auroc_line(3).startswith("| auroc (over the 3 of 4 classes in the test split) | 0.9")
    assert auroc_line(4).startswith("| auroc | 0.9")


@pytest.mark.slow
def test_model_card_as_json_and_markdown(client: TestClient) -> None:
    cohort = upload(client)
    predictor = _fit(client, cohort["id"], calibration_size=0.25)
    url = f"/predictors/{predictor['id']}/card"
    card = client.get(url).json()
    assert card["training_cohort"]["checksum"] == cohort["checksum"] and card["training_cohort"]["n_samples"] == 189
    assert card["class_counts"]["kidney"] == 39 and card["encoder"] is None
    assert card["split"]["calibration_size"] == 0.25 and "train_sample_ids" not in card["split"]
    assert card["calibration"]["test"]["ece_before"] >= 0 and card["prediction_sets"]["method"] == "lac"
    assert card["out_of_distribution"]["space"] == "expression" and card["evaluation"] is None
    assert card["libraries"]["torch"] and any("refused" in limit for limit in card["limits"])

    # The newest ready evaluation on the same cohort and label column joins the card.
    with session_factory()() as session:
        lab_id = lab_caller().lab_id
        job = orm.Job(lab_id=lab_id, kind=orm.JobKind.EVALUATE, state=orm.JobState.SUCCEEDED)
        session.add(job)
        session.flush()
        summary = [{"model": m, "fraction": f, "n_seeds": 3, "n_train": 10.0,
                    "accuracy": {"mean": 0.9, "std": 0.01}, "balanced_accuracy": {"mean": 0.88, "std": 0.02}}
                   for m in ("logistic_regression", "mlp_scratch") for f in (0.1, 1.0)]
        session.add(orm.Evaluation(lab_id=lab_id, name="le", cohort_id=cohort["id"], job_id=job.id,
                                   label_column="tissue",
                                   status=orm.ArtifactStatus.READY, config={"n_seeds": 3}, summary=summary,
                                   label_savings={"reference": "mlp_scratch"}))
        session.commit()
    evaluation = client.get(url).json()["evaluation"]
    assert evaluation["model"] == "logistic_regression" and len(evaluation["curve"]) == 2
    assert {r["fraction"] for r in evaluation["at_fraction"]} == {1.0}

    for response in (client.get(url, params={"format": "markdown"}),
                     client.get(url, headers={"Accept": "text/markdown"})):
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/markdown")
        text = response.text
        for heading in ("# Model card", "## Training data", "## Calibration", "## Prediction sets",
                        "## Out-of-distribution detection", "## Label efficiency", "## Limits"):
            assert heading in text
        assert cohort["checksum"] in text
    assert client.get(url, params={"format": "json"}, headers={"Accept": "text/markdown"}).json()["name"]
    assert client.get("/predictors/nope/card").status_code == 404


@pytest.mark.slow
def test_encoder_predictors_score_ood_in_the_embedding(client: TestClient) -> None:
    cohort = upload(client)
    accepted = start(client, "/encoders", {"cohort_id": cohort["id"], "method": "scarf", "params": {"epochs": 3}})
    assert wait_for_job(client, accepted["job"]["id"])["state"] == "succeeded"
    body = {"cohort_id": cohort["id"], "label_column": "tissue", "head": "linear_probe",
            "encoder_id": accepted["encoder"]["id"], "params": {"max_epochs": 20}}
    fit = start(client, "/predictors", body)
    assert wait_for_job(client, fit["job"]["id"])["state"] == "succeeded"
    predictor = client.get(f"/predictors/{fit['predictor']['id']}").json()
    assert predictor["calibration"]["ood"]["space"] == "embedding" and predictor["calibration"]["ood"]["dim"] == 256
    card = client.get(f"/predictors/{predictor['id']}/card").json()
    assert card["encoder"]["method"] == "scarf" and card["encoder"]["pretraining_cohort"]["id"] == cohort["id"]
    assert card["encoder"]["parent_encoder_id"] is None
    assert "The encoder was pretrained on this cohort, so its pretraining (without labels) saw the test samples: the " \
        "test metrics may be optimistic for new cohorts." in card["limits"]
    expression = pd.read_parquet(COHORT / "expression.parquet").iloc[:4]
    body = {"genes": list(expression.columns),
            "samples": [{"sample_id": s, "values": row.tolist()} for s, row in expression.iterrows()]}
    prediction = client.post(f"/predictors/{predictor['id']}/predictions", json=body).json()
    assert prediction["uncertainty"]["ood_space"] == "embedding"
    assert all(r["ood_score"] is not None and r["prediction_set"] is not None for r in prediction["results"])
    assert prediction["drift"]["reference"] == "encoder's pretraining cohort"


def test_openapi_documents_every_new_field(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    components = spec["components"]["schemas"]
    # The prediction request is documented inline (its endpoint parses the body itself, for speed).
    post = spec["paths"]["/predictors/{predictor_id}/predictions"]["post"]
    components["PredictionCreate"] = post["requestBody"]["content"]["application/json"]["schema"]
    embed = spec["paths"]["/encoders/{encoder_id}/embeddings"]["post"]  # parsed the same way
    components["SamplesInput"] = embed["requestBody"]["content"]["application/json"]["schema"]
    assert set(components["SamplesInput"]["properties"]) == {"cohort_id", "genes", "samples"}
    for name in ("SamplePrediction", "PredictionUncertainty", "DriftSummary", "DriftGene", "ModelCard",
                 "CohortFacts", "EncoderFacts", "EvaluationFacts", "PredictionCreate", "SamplesInput"):
        undocumented = [k for k, v in components[name]["properties"].items() if "description" not in v]
        assert undocumented == [], name
    for field in ("calibration", "environment"):
        assert components["PredictorRead"]["properties"][field]["description"]
    for field in ("uncertainty", "drift"):
        assert components["PredictionRead"]["properties"][field]["description"]


def test_the_markdown_card_shows_names_as_written_never_as_markup(client: TestClient) -> None:
    labels = pd.read_csv(COHORT / "labels.csv")
    labels["tissue"] = labels["tissue"].replace({"kidney": "<b>kid|ney</b>", "liver": "li_ver*"})
    files = {"expression": ("e.parquet", (COHORT / "expression.parquet").read_bytes()),
             "labels": ("l.csv", labels.to_csv(index=False).encode())}
    cohort = client.post("/cohorts", files=files, data={"name": "<script>alert(1)</script> [x](y)"}).json()
    predictor = _fit(client, cohort["id"])

    text = client.get(f"/predictors/{predictor['id']}/card", params={"format": "markdown"}).text

    assert re.search(r"(?<!\\)[<|\[]", text.split("## Performance")[0]) is None  # each escaped, before the tables
    assert r"(\<script\>alert(1)\</script\> \[x\](y))" in text
    assert r"\<b\>kid\|ney\</b\> 39" in text and r"li\_ver\* 26" in text
