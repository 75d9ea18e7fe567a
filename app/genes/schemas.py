"""Pydantic schemas of the gene identifier endpoints."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.db.orm import NAME_LENGTH

MAX_IDENTIFIERS = 100_000

Identifier = Annotated[str, StringConstraints(max_length=NAME_LENGTH)]


class GeneResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    identifiers: list[Identifier] = Field(
        min_length=1,
        max_length=MAX_IDENTIFIERS,
        description="Gene identifiers as found in one file (symbols, previous symbols, aliases, Ensembl or NCBI "
        f"ids, TCGA SYMBOL|ENTREZ, probe sets); at most {MAX_IDENTIFIERS:,}.",
    )
    excel_dates: bool | None = Field(
        default=None,
        description="Read spreadsheet dates (1-Mar, 2-Sep) as the symbols they replaced; null decides from the "
        "list (only when the other identifiers are symbols).",
    )


class GeneCandidate(BaseModel):
    key: str = Field(description="Canonical key: NCBI gene id, or Ensembl gene id when the gene has none.")
    symbol: str | None = Field(description="Current official symbol.")


class GeneResolution(BaseModel):
    identifier: str = Field(description="The identifier as sent.")
    key: str = Field(
        description="Canonical key (NCBI gene id, else Ensembl gene id); for ambiguous or unresolved identifiers "
        "the normalised identifier, probe sets as sent."
    )
    symbol: str | None = Field(description="Current official symbol of the gene, null when unresolved.")
    rule: str = Field(
        description="What resolved it: symbol, alias, ensembl, ensembl_par_y, ensembl_only, ncbi_id, tcga, loc_id, "
        "excel_date, probe, ambiguous or unresolved."
    )
    ambiguous: bool = Field(description="The identifier names several genes; none was chosen.")
    candidates: list[GeneCandidate] = Field(description="The genes an ambiguous identifier may denote.")


class GeneResolveResponse(BaseModel):
    version: str = Field(description="Gene table version (its snapshot dates); record it with the results.")
    n_identifiers: int
    n_resolved: int = Field(description="Identifiers that denote one gene (or a probe set by its own id).")
    summary: dict[str, int] = Field(description="Number of identifiers per rule.")
    results: list[GeneResolution] = Field(description="One per identifier, in request order.")


class GeneTableRead(BaseModel):
    version: str
    n_genes: int = Field(description="NCBI genes in the table.")
    rules: list[str] = Field(description="Rules a resolution may name, in the order they are tried or reported.")
