"""Gene endpoints: describe the shipped gene table, resolve identifiers to canonical gene keys."""

from __future__ import annotations

from fastapi import APIRouter

from app.genes.schemas import GeneCandidate, GeneResolution, GeneResolveRequest, GeneResolveResponse, GeneTableRead
from models.gene_table import RULES, GeneTable, Resolution, default_table, summarise_resolutions

router = APIRouter(prefix="/genes", tags=["genes"])


def _read(resolution: Resolution, table: GeneTable) -> GeneResolution:
    """One resolution as the API shows it, candidates with their symbols."""
    return GeneResolution(
        identifier=resolution.name,
        key=resolution.key,
        symbol=resolution.symbol,
        rule=resolution.rule,
        ambiguous=resolution.ambiguous,
        candidates=[GeneCandidate(key=k, symbol=table.symbol(k)) for k in resolution.candidates],
    )


@router.get("", response_model=GeneTableRead)
def describe_gene_table() -> GeneTableRead:
    """Describe the gene table identifiers are resolved with: version and size."""
    table = default_table()
    return GeneTableRead(version=table.version, n_genes=len(table), rules=list(RULES))


@router.post("/resolve", response_model=GeneResolveResponse)
def resolve_identifiers(request: GeneResolveRequest) -> GeneResolveResponse:
    """Resolve gene identifiers to canonical keys (NCBI gene id, else Ensembl id), naming the rule used."""
    table = default_table()
    resolutions = table.resolve(request.identifiers, excel_dates=request.excel_dates)
    return GeneResolveResponse(
        version=table.version,
        n_identifiers=len(resolutions),
        n_resolved=sum(r.resolved for r in resolutions),
        summary=summarise_resolutions(resolutions),
        results=[_read(r, table) for r in resolutions],
    )
