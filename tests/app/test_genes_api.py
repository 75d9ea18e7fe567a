from __future__ import annotations

from fastapi.testclient import TestClient

from app.genes.schemas import MAX_IDENTIFIERS
from models.gene_table import gene_table_version

VERSION = "org.Hs.eg.db 3.16.0 (NCBI 2022-09-12, Ensembl 2022-06-28)"


def resolve(client: TestClient, identifiers: list[str], **extra: object) -> dict:
    response = client.post("/genes/resolve", json={"identifiers": identifiers, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def test_resolve_names_keys_rules_and_version(client: TestClient) -> None:
    names = ["SEPT9", "HER2", "ENSG00000141510.17", "TP53|7157", "SEPT2", "1007_s_at", "not-a-gene", "1-Mar"]
    body = resolve(client, names)
    assert body["version"] == VERSION == gene_table_version()
    rows = {r["identifier"]: r for r in body["results"]}
    assert [r["identifier"] for r in body["results"]][0] == "SEPT9"  # request order
    assert rows["SEPT9"] == {
        "identifier": "SEPT9",
        "key": "10801",
        "symbol": "SEPTIN9",
        "rule": "alias",
        "ambiguous": False,
        "candidates": [],
    }
    assert (rows["HER2"]["key"], rows["HER2"]["symbol"]) == ("2064", "ERBB2")
    assert rows["ENSG00000141510.17"]["key"] == rows["TP53|7157"]["key"] == "7157"
    assert rows["SEPT2"]["ambiguous"] and rows["SEPT2"]["rule"] == "ambiguous" and rows["SEPT2"]["symbol"] is None
    assert rows["SEPT2"]["candidates"] == [{"key": "4735", "symbol": "SEPTIN2"}, {"key": "23157", "symbol": "SEPTIN6"}]
    assert (rows["1007_s_at"]["key"], rows["1007_s_at"]["rule"]) == ("1007_s_at", "probe")
    assert (rows["not-a-gene"]["key"], rows["not-a-gene"]["rule"]) == ("NOT-A-GENE", "unresolved")
    assert rows["1-Mar"]["rule"] == "unresolved"  # too few symbols around it to read it as MARCH1
    assert body["summary"] == {"alias": 2, "ensembl": 1, "tcga": 1, "probe": 1, "ambiguous": 1, "unresolved": 2}
    assert body["n_identifiers"] == 8 and body["n_resolved"] == 5


def test_excel_dates_follow_the_list_or_the_flag(client: TestClient) -> None:
    symbols = ["TP53", "ERBB2", "GAPDH", "ACTB", "MYC", "1-Mar"]
    assert resolve(client, symbols)["results"][-1]["symbol"] == "MARCHF1"
    assert resolve(client, ["1-Mar"], excel_dates=True)["results"][0]["key"] == "55016"
    assert resolve(client, symbols, excel_dates=False)["results"][-1]["rule"] == "unresolved"


def test_describe_gene_table(client: TestClient) -> None:
    body = client.get("/genes").json()
    assert body["version"] == VERSION and body["n_genes"] == 77_614 and "excel_date" in body["rules"]


def test_limits_answer_422(client: TestClient) -> None:
    assert client.post("/genes/resolve", json={"identifiers": []}).status_code == 422
    assert client.post("/genes/resolve", json={"identifiers": ["x" * 201]}).status_code == 422
    assert client.post("/genes/resolve", json={"ids": ["TP53"]}).status_code == 422
    too_many = {"identifiers": ["TP53"] * (MAX_IDENTIFIERS + 1)}
    assert client.post("/genes/resolve", json=too_many).status_code == 422


def test_the_largest_request_is_answered(client: TestClient) -> None:
    body = resolve(client, [f"ENSG{i:011d}" for i in range(MAX_IDENTIFIERS)])
    assert body["n_identifiers"] == MAX_IDENTIFIERS and set(body["summary"]) <= {"ensembl", "ensembl_only", "ambiguous"}
