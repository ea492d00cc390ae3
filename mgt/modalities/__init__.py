"""Per-modality glue: data sources, preprocessing, writers and editing tools."""
