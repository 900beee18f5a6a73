"""The Parquet catalog of series, cases and lesions.

* `case`: the per-case stage (`catalog_case`): lesion table and case row of one case.
* `merge`: the merge stage (`build_catalog`): the catalog tables and the data dictionary.
* `schemas`: every column with its type, unit and description; the table writer.
* `lesion_features`: lesion morphometry on the T1C grid (pure functions).
* `dictionary`: `catalog/README.md` generated from the schemas.
"""
