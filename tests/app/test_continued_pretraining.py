"""Continued pretraining over the API: an encoder pretrained on tissue_symbols (gene symbols) goes on
pretraining on a second cohort named by versioned Ensembl ids that lacks a fifth of its panel.

The continued encoder keeps the parent's panel and architecture, starts from its weights, standardises on
the new cohort (the genes it lacks keep the parent's statistics), reports how the cohort matched the panel,
serves predictors on the new cohort, and is deleted with the parent's cohort (lineage).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from app.db import orm
from app.db.session import session_factory
from app.storage import get_store
from models import checkpoint
from models.methods import METHODS
from models.preprocessing import Preprocessor
from tests.app.test_admin_pages import login
from tests.app.test_full_loop import COHORT, start, upload
from tests.app.test_gene_resolution import EXPRESSION, ensembl_names
from tests.conftest import LabKey, wait_for_job
from tests.models.test_continued_pretraining import weight_gap

SMALL = {"epochs": 8, "hidden_dim": 64, "n_layers": 2, "batch_size": 64}
N_DROPPED = 100  # of the 500 panel genes: coverage 80 %
PLATFORM_SHIFT = 1.5


def pretrain(
    client: TestClient, body: dict[str, Any], *, succeed: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    accepted = start(client, "/encoders", body)
    job = wait_for_job(client, accepted["job"]["id"])
    if succeed:
        assert job["state"] == "succeeded", job["error"]
    return client.get(f"/encoders/{accepted['encoder']['id']}").json(), job


def stored_encoder(encoder_id: str) -> tuple[torch.nn.Module, Preprocessor]:
    """An encoder's stored weights and preprocessing, read back from the artifact store."""
    with session_factory()() as session:
        row = session.get_one(orm.Encoder, encoder_id)
        key, sha256 = row.artifact_key, row.artifact_sha256
    assert key is not None and sha256 is not None
    payload = checkpoint.loads(get_store().get_bytes(key, sha256=sha256))
    encoder, preprocessor, _ = checkpoint.encoder_from_payload(payload)
    return encoder, preprocessor


def upload_frame(client: TestClient, frame: pd.DataFrame, name: str) -> dict[str, Any]:
    labels = pd.read_csv(COHORT / "labels.csv")
    files = {
        "expression": ("second.csv", frame.rename_axis("sample_id").to_csv().encode()),
        "labels": ("labels.csv", labels.to_csv(index=False).encode()),
    }
    response = client.post("/cohorts", files=files, data={"name": name})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def parent(client: TestClient) -> dict[str, Any]:
    cohort = upload(client)
    encoder, _ = pretrain(client, {"cohort_id": cohort["id"], "method": "scarf", "params": SMALL, "seed": 1})
    return encoder


@dataclass(frozen=True)
class Second:
    cohort: dict[str, Any]
    dropped: set[str]  # panel genes it lacks
    n_renamed: int  # kept columns named by an Ensembl id


@pytest.fixture
def second(client: TestClient) -> Second:
    """tissue_symbols as from another platform, uploaded: every value 1.5 higher (log scale), on Ensembl ids
    (versioned, shuffled), without ``N_DROPPED`` of its genes."""
    columns = list(EXPRESSION.columns)
    rng = np.random.default_rng(7)
    dropped = set(rng.choice(columns, size=N_DROPPED, replace=False).tolist())
    kept = [c for c in columns if c not in dropped]
    renamed = ensembl_names(kept)
    frame = (EXPRESSION[kept] + PLATFORM_SHIFT).rename(columns=renamed)
    frame = frame[rng.permutation(frame.columns)]
    return Second(upload_frame(client, frame, "tissues-ensembl"), dropped, len(renamed))


@pytest.mark.slow
def test_continued_encoder_keeps_the_panel_and_starts_from_the_parent(
    client: TestClient, parent: dict[str, Any], second: Second
) -> None:
    cohort, dropped, n_renamed = second.cohort, second.dropped, second.n_renamed
    assert cohort["gene_id_type"] == "ensembl" and cohort["n_genes"] == 400

    # A learning rate of almost 0: the trained encoder's weights are still the ones it started from.
    still = {"epochs": 2, "lr": 1e-10}
    child, job = pretrain(client, {"cohort_id": cohort["id"], "continue_from": parent["id"], "params": still})
    scratch, _ = pretrain(client, {"cohort_id": cohort["id"], "params": {**SMALL, **still}})

    assert child["parent_encoder_id"] == parent["id"] and scratch["parent_encoder_id"] is None
    assert child["method"] == "scarf" and child["name"] == "scarf-tissues+tissues-ensembl"
    # The parent's panel and architecture; the other parameters are the parent's unless the request says.
    assert child["n_genes"] == 500 and scratch["n_genes"] == 400
    assert child["params"] == {**parent["params"], **still}
    assert job["params"]["continue_from"] == parent["id"]
    pre = child["preprocessing"]
    assert pre["continued_from"] == parent["id"] and pre["standardise_on"] == "cohort"
    assert parent["preprocessing"]["pretraining_cohorts"] == [parent["cohort_id"]]
    assert pre["pretraining_cohorts"] == [parent["cohort_id"], cohort["id"]]
    alignment = pre["alignment"]
    assert (alignment["n_panel"], alignment["n_found"], alignment["n_missing"]) == (500, 400, 100)
    assert alignment["coverage"] == pytest.approx(0.8)
    assert alignment["n_matched_by_conversion"] == n_renamed and n_renamed > 380
    assert set(alignment["missing"]) <= dropped and len(alignment["missing"]) == 50  # the report's first 50
    # Started from the parent's weights, not from a fresh initialisation.
    parent_net, parent_pre = stored_encoder(parent["id"])
    child_net, child_pre = stored_encoder(child["id"])
    assert weight_gap(child_net, parent_net) < 1e-6
    # Standardised on the second cohort; the genes it lacks keep the parent's statistics.
    assert child_pre.genes == parent_pre.genes == list(EXPRESSION.columns)
    lacking = np.isin(child_pre.genes, sorted(dropped))
    np.testing.assert_array_equal(child_pre.mean[lacking], parent_pre.mean[lacking])
    np.testing.assert_allclose(child_pre.mean[~lacking], parent_pre.mean[~lacking] + PLATFORM_SHIFT, rtol=1e-5)
    np.testing.assert_allclose(child_pre.std, parent_pre.std, rtol=1e-4)

    # The continued encoder serves predictors on either naming.
    body = {"cohort_id": cohort["id"], "encoder_id": child["id"], "label_column": "tissue", "head": "linear_probe"}
    accepted = start(client, "/predictors", body)
    fitted = wait_for_job(client, accepted["job"]["id"])
    assert fitted["state"] == "succeeded", fitted["error"]
    predictor = client.get(f"/predictors/{accepted['predictor']['id']}").json()
    assert predictor["metrics"]["balanced_accuracy"] > 0.9
    card = client.get(f"/predictors/{predictor['id']}/card").json()
    assert card["encoder"]["parent_encoder_id"] == parent["id"]
    assert any(limit.startswith("The encoder was pretrained on this cohort") for limit in card["limits"])


@pytest.mark.slow
def test_standardising_on_the_parent_keeps_its_statistics(
    client: TestClient, parent: dict[str, Any], second: Second
) -> None:
    cohort = second.cohort

    child, _ = pretrain(client, {
        "cohort_id": cohort["id"], "continue_from": parent["id"], "standardise_on": "parent",
        "method": "byol", "params": {"epochs": 1, "batch_size": 64},
    })

    assert child["preprocessing"]["standardise_on"] == "parent"
    assert child["preprocessing"]["log1p"] is parent["preprocessing"]["log1p"] is False
    child_pre, parent_pre = stored_encoder(child["id"])[1], stored_encoder(parent["id"])[1]
    np.testing.assert_array_equal(child_pre.mean, parent_pre.mean)
    np.testing.assert_array_equal(child_pre.std, parent_pre.std)
    # Another method may continue: it takes its own defaults, with the parent's architecture.
    defaults = METHODS["byol"].params_class().to_dict()
    assert child["method"] == "byol"
    assert child["params"] == {**defaults, "hidden_dim": 64, "n_layers": 2, "epochs": 1, "batch_size": 64}


def test_requests_that_cannot_continue_are_refused(client: TestClient, parent: dict[str, Any]) -> None:
    cohort_id = parent["cohort_id"]

    def post(**body: Any) -> Any:
        return client.post("/encoders", json={"cohort_id": cohort_id, "continue_from": parent["id"], **body})

    response = post(params={"hidden_dim": 128, "epochs": 2})
    assert response.status_code == 422
    assert "hidden_dim=128 (parent: 64)" in response.json()["error"]["message"]
    response = post(standardise_on="parent", log1p="yes")
    assert response.status_code == 422 and "log1p" in response.json()["error"]["message"]
    assert post(continue_from="0" * 32).status_code == 404
    response = client.post("/encoders", json={"cohort_id": cohort_id, "standardise_on": "parent"})
    assert response.status_code == 422 and "standardise_on applies only with continue_from" in response.text
    # Another lab's encoder: tests/app/test_access.py (lab A ids in lab B's requests).


def test_a_continued_encoder_is_named_after_its_own_method(client: TestClient, parent: dict[str, Any]) -> None:
    assert parent["name"] == "scarf-tissues"
    body = {"cohort_id": parent["cohort_id"], "continue_from": parent["id"], "params": {"epochs": 1}}
    byol, _ = pretrain(client, {**body, "method": "byol"})
    scarf, _ = pretrain(client, body)
    assert byol["method"] == "byol" and byol["name"] == "byol-tissues+tissues"
    assert scarf["method"] == "scarf" and scarf["name"] == "scarf-tissues+tissues"
    further, _ = pretrain(client, {**body, "continue_from": byol["id"], "method": "vime"})
    assert further["name"] == "vime-tissues+tissues+tissues"


def test_a_cohort_covering_too_little_of_the_panel_fails_the_job(
    client: TestClient, parent: dict[str, Any]
) -> None:
    columns = list(EXPRESSION.columns)
    frame = EXPRESSION[columns[:200]]  # 40 % of the panel, under the 50 % gate
    cohort = upload_frame(client, frame, "narrow")

    child, job = pretrain(client, {"cohort_id": cohort["id"], "continue_from": parent["id"]}, succeed=False)

    assert job["state"] == "failed" and child["status"] == "failed"
    assert f"covers 40.0% of encoder {parent['id']}'s 500 genes" in job["error"]
    assert "EXPRSSL_MIN_GENE_COVERAGE" in job["error"]


def test_fitting_and_evaluating_an_encoder_whose_panel_the_cohort_barely_covers_fail(
    client: TestClient, parent: dict[str, Any]
) -> None:
    narrow = EXPRESSION[list(EXPRESSION.columns)[:200]]  # 40 % of the panel, under the 50 % gate
    cohort = upload_frame(client, narrow, "narrow")
    body = {"cohort_id": cohort["id"], "label_column": "tissue", "methods": [], "encoder_ids": [parent["id"]],
            "heads": ["linear_probe"], "fractions": [1.0], "n_seeds": 1}
    accepted = start(client, "/evaluations", body)

    job = wait_for_job(client, accepted["job"]["id"])
    assert job["state"] == "failed"  # not scored on constant input beside the baselines
    assert f"covers 40.0% of encoder {parent['id']}'s 500 genes (200 found); evaluating it needs at least 50%" in (
        job["error"]
    )
    evaluation = client.get(f"/evaluations/{accepted['evaluation']['id']}").json()
    assert evaluation["status"] == "failed" and evaluation["summary"] == []

    fit = start(client, "/predictors", {"cohort_id": cohort["id"], "label_column": "tissue", "encoder_id": parent["id"],
                                        "head": "linear_probe"})
    job = wait_for_job(client, fit["job"]["id"])
    assert job["state"] == "failed"
    assert "covers 40.0% of the encoder's 500 genes (200 found); fitting needs at least 50%" in job["error"]


def test_counts_are_not_standardised_with_a_log_scale_parents_statistics(
    client: TestClient, parent: dict[str, Any]
) -> None:
    counts = np.round(np.exp2(EXPRESSION)).astype(np.int64)  # the same samples as read counts
    cohort = upload_frame(client, counts, "tissue-counts")
    assert cohort["value_kind"] == "counts"

    child, job = pretrain(
        client, {"cohort_id": cohort["id"], "continue_from": parent["id"], "standardise_on": "parent"}, succeed=False
    )

    assert job["state"] == "failed" and child["status"] == "failed"
    assert f"cohort {cohort['id']} holds counts values (with log1p)" in job["error"]
    assert f"encoder {parent['id']}'s statistics are for values without log1p" in job["error"]


def test_counts_lacking_panel_genes_do_not_leave_a_log_scale_parents_statistics_in_the_encoder(
    client: TestClient, parent: dict[str, Any]
) -> None:
    counts = np.round(np.exp2(EXPRESSION)).astype(np.int64)
    whole = upload_frame(client, counts, "tissue-counts")
    partial = upload_frame(client, counts[list(counts.columns)[20:]], "tissue-counts-partial")

    child, job = pretrain(client, {"cohort_id": partial["id"], "continue_from": parent["id"]}, succeed=False)

    assert job["state"] == "failed" and child["status"] == "failed"
    assert f"cohort {partial['id']} holds counts values (with log1p) but encoder {parent['id']} was pretrained on " \
           "values without log1p, and the cohort lacks 20 of its 500 panel genes" in job["error"]
    # Holding the whole panel, every gene's statistics are refitted on the counts' scale: it continues.
    body = {"cohort_id": whole["id"], "continue_from": parent["id"], "params": {"epochs": 1}}
    whole_child, _ = pretrain(client, body)
    assert whole_child["preprocessing"]["log1p"] is True


def test_an_unfinished_parent_is_refused(client: TestClient) -> None:
    cohort = upload(client)
    accepted = start(client, "/encoders", {"cohort_id": cohort["id"], "params": {"epochs": 500}})
    pending = accepted["encoder"]["id"]

    response = client.post("/encoders", json={"cohort_id": cohort["id"], "continue_from": pending})

    assert response.status_code == 409 and f"encoder {pending} is" in response.json()["error"]["message"]
    assert client.post(f"/jobs/{accepted['job']['id']}/cancel").status_code == 200
    wait_for_job(client, accepted["job"]["id"])


@pytest.mark.slow
def test_deleting_the_parents_cohort_deletes_the_continued_encoder(
    client: TestClient, parent: dict[str, Any], second: Second, lab_a: LabKey
) -> None:
    # A chain that leaves the parent's cohort and comes back: parent (first cohort) -> child (second cohort)
    # -> grandchild (first cohort again).
    cohort, first_id = second.cohort, parent["cohort_id"]
    child, _ = pretrain(client, {"cohort_id": cohort["id"], "continue_from": parent["id"], "params": {"epochs": 1}})
    with session_factory()() as session:  # as encoders made before they recorded their pretraining cohorts
        for encoder_id in (parent["id"], child["id"]):
            row = session.get_one(orm.Encoder, encoder_id)
            row.preprocessing = {k: v for k, v in row.preprocessing.items() if k != "pretraining_cohorts"}
        session.commit()
    grandchild, _ = pretrain(client, {"cohort_id": first_id, "continue_from": child["id"], "params": {"epochs": 1}})
    assert grandchild["preprocessing"]["pretraining_cohorts"] == [first_id, cohort["id"], first_id]

    # The admin pages show the lineage both ways.
    pages = TestClient(client.app)
    login(pages, lab_a.key)
    page = pages.get(f"/admin/encoders/{child['id']}").text
    parent_link = re.search(r'id="encoder-parent"><a href="/admin/encoders/(\w+)">', page)
    assert parent_link is not None and parent_link.group(1) == parent["id"]
    assert "400 of its 500 panel genes in this cohort" in page
    assert f'id="encoder-children"><a href="/admin/encoders/{grandchild["id"]}">' in page

    refused = client.delete(f"/cohorts/{first_id}")
    assert refused.status_code == 409
    for encoder in (parent, child, grandchild):
        assert encoder["id"] in refused.json()["error"]["message"]
    # A continued pretraining still running on the second cohort keeps the first one, forced or not.
    running = start(client, "/encoders", {"cohort_id": cohort["id"], "continue_from": parent["id"],
                                          "params": {"epochs": 500}})
    busy = client.delete(f"/cohorts/{first_id}", params={"force": "true"})
    assert busy.status_code == 409 and running["job"]["id"] in busy.json()["error"]["message"]
    assert client.post(f"/jobs/{running['job']['id']}/cancel").status_code == 200
    assert wait_for_job(client, running["job"]["id"])["state"] == "cancelled"

    # An admin's forced delete takes the encoders continued from the parent too, even those trained on the
    # second cohort, which stays.
    deleted = client.delete(f"/cohorts/{first_id}", params={"force": "true"})
    assert deleted.status_code == 204, deleted.text
    for encoder in (parent, child, grandchild, running["encoder"]):
        assert client.get(f"/encoders/{encoder['id']}").status_code == 404
    assert client.get(f"/cohorts/{cohort['id']}").status_code == 200


@pytest.mark.slow
def test_an_evaluation_says_when_an_ancestors_pretraining_saw_the_cohort(
    client: TestClient, parent: dict[str, Any], second: Second
) -> None:
    child, _ = pretrain(
        client, {"cohort_id": second.cohort["id"], "continue_from": parent["id"], "params": {"epochs": 1}}
    )
    same_matrix = upload(client)  # an identical upload of the parent's cohort: another id, the same samples

    def notes(cohort_id: str) -> dict[str, str]:
        body = {
            "cohort_id": cohort_id, "label_column": "tissue", "methods": [], "encoder_ids": [parent["id"], child["id"]],
            "heads": ["linear_probe"], "fractions": [1.0], "n_seeds": 1,
            "head_params": {"max_epochs": 3},
        }
        accepted = start(client, "/evaluations", body)
        job = wait_for_job(client, accepted["job"]["id"])
        assert job["state"] == "succeeded", job["error"]
        return client.get(f"/evaluations/{accepted['evaluation']['id']}").json()["timings"]["notes"]

    on_first = notes(parent["cohort_id"])
    assert "; pretrained on this cohort, so its pretraining" in on_first[f"encoder:{parent['id']}"]
    assert f"; continued from encoder {parent['id']}, pretrained on this cohort" in on_first[f"encoder:{child['id']}"]
    on_copy = notes(same_matrix["id"])
    assert f"pretrained on cohort {parent['cohort_id']}, the same matrix" in on_copy[f"encoder:{parent['id']}"]
    on_second = notes(second.cohort["id"])
    assert "; pretrained on this cohort" in on_second[f"encoder:{child['id']}"]
    assert "saw the test samples" not in on_second[f"encoder:{parent['id']}"]
