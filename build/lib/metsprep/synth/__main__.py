"""CLI: python -m metsprep.synth OUT --cases N --seed S --layout {per_case,nested,flat}."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metsprep.synth", description=__doc__)
    parser.add_argument("out", type=Path, help="output folder (receives dicom/ and truth/)")
    parser.add_argument("--cases", type=int, default=6, help="number of patients")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--layout", choices=["per_case", "nested", "flat"], default="per_case")
    parser.add_argument("--case-options", type=str, default=None,
                        help='JSON object {case_index: {option: value}}, e.g. \'{"0": {"tilt_deg": 12}}\'')
    args = parser.parse_args(argv)
    from .cohort import generate_cohort

    options = {int(k): v for k, v in json.loads(args.case_options).items()} if args.case_options else None
    start = time.perf_counter()
    truth = generate_cohort(args.out, args.cases, args.seed, layout=args.layout, case_options=options)
    elapsed = time.perf_counter() - start
    n_lesions = sum(c["n_lesions"] for c in truth["cases"])
    print(f"wrote {truth['n_studies']} studies of {args.cases} patients, {n_lesions} lesions, "
          f"to {args.out} in {elapsed:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
