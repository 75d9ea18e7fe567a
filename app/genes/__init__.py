"""Gene identifier resolution over HTTP (the shipped gene table of ``models.gene_table``)."""
