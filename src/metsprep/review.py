"""Reviewer decisions: the ratings file, and the local server behind ``metsprep review``.

A decision is a row of ``qc/ratings.tsv`` (path: config ``qc.ratings``, relative to the
output folder): ``case_id``, ``roi_number`` (empty for the whole case), ``rating`` (pass
or fail), ``comment``, ``reviewed_at``. The QC pages write it in one of two ways: served by
``metsprep review`` they post each decision to the server, which merges it into the file;
opened from disk they keep decisions in the browser and offer the file as a download. The
next pipeline run reads the file into cases.parquet and lesions.parquet (``qc_rating``,
``qc_comment``) and leaves failed cases out of the exports.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from metsprep.atomic import write_text

RATING_COLUMNS = ("case_id", "roi_number", "rating", "comment", "reviewed_at")
RATINGS = ("pass", "fail")
DEFAULT_RATINGS = "qc/ratings.tsv"
_CASE_ID = re.compile(r"^sub-[0-9A-Za-z]+_ses-[0-9A-Za-z]+$")
MAX_COMMENT = 2000


@dataclass(frozen=True)
class Rating:
    case_id: str
    roi_number: int | None  # None: the whole case
    rating: str  # pass | fail
    comment: str
    reviewed_at: str

    @property
    def key(self) -> tuple[str, int | None]:
        return self.case_id, self.roi_number


@dataclass(frozen=True)
class Ratings:
    by_case: dict[str, Rating] = field(default_factory=dict)
    by_lesion: dict[tuple[str, int], Rating] = field(default_factory=dict)
    problems: tuple[str, ...] = ()  # rows that were not taken, and why

    def failed_cases(self) -> dict[str, str]:
        return {cid: r.comment for cid, r in self.by_case.items() if r.rating == "fail"}


def _clean(text: Any) -> str:
    """One line of text: tabs and line breaks become spaces (a TSV cell)."""
    return re.sub(r"[\t\r\n]+", " ", str(text or "")).strip()[:MAX_COMMENT]


def parse_row(row: dict[str, Any], where: str) -> tuple[Rating | None, str | None]:
    """A Rating from one row, or why the row cannot be one."""
    case_id = _clean(row.get("case_id"))
    if not _CASE_ID.match(case_id):
        return None, f"{where}: case_id {case_id!r} is not sub-<label>_ses-<label>"
    roi_text = _clean(row.get("roi_number"))
    try:
        roi_number = int(roi_text) if roi_text else None
    except ValueError:
        return None, f"{where}: roi_number {roi_text!r} is not a number"
    rating = _clean(row.get("rating")).lower()
    if rating not in RATINGS:
        return None, f"{where}: rating {rating!r} is not pass or fail"
    return Rating(case_id, roi_number, rating, _clean(row.get("comment")), _clean(row.get("reviewed_at"))), None


def parse_tsv(text: str, where: str) -> tuple[list[Rating], list[str]]:
    reader = csv.DictReader(io.StringIO(text), delimiter="\t")
    missing = [c for c in ("case_id", "rating") if c not in (reader.fieldnames or [])]
    if missing:
        return [], [f"{where}: no column {', '.join(missing)}; expected {', '.join(RATING_COLUMNS)}"]
    ratings, problems = [], []
    for line, row in enumerate(reader, start=2):
        rating, problem = parse_row(row, f"{where} line {line}")
        if rating:
            ratings.append(rating)
        if problem:
            problems.append(problem)
    return ratings, problems


def read_ratings(path: Path | None, known_cases: Iterable[str] = ()) -> Ratings:
    """The decisions of a ratings file; a later row for the same case or lesion wins."""
    if path is None or not Path(path).exists():
        return Ratings()
    rows, problems = parse_tsv(Path(path).read_text(encoding="utf-8"), str(path))
    known = set(known_cases)
    by_case: dict[str, Rating] = {}
    by_lesion: dict[tuple[str, int], Rating] = {}
    for r in rows:
        if known and r.case_id not in known:
            problems.append(f"{path}: no case {r.case_id} in this run; its decision is not used")
            continue
        if r.roi_number is None:
            by_case[r.case_id] = r
        else:
            by_lesion[r.case_id, r.roi_number] = r
    return Ratings(by_case, by_lesion, tuple(problems))


def to_tsv(ratings: Sequence[Rating]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerow(RATING_COLUMNS)
    for r in sorted(ratings, key=lambda r: (r.case_id, -1 if r.roi_number is None else r.roi_number)):
        writer.writerow([r.case_id, "" if r.roi_number is None else r.roi_number, r.rating, r.comment, r.reviewed_at])
    return out.getvalue()


def merge(existing: Sequence[Rating], new: Sequence[Rating]) -> list[Rating]:
    merged = {r.key: r for r in existing}
    merged.update({r.key: r for r in new})
    return list(merged.values())


# ----------------------------------------------------------------------------- server


class _Handler(SimpleHTTPRequestHandler):
    """Static files of the output folder, plus GET/POST /api/ratings (the ratings file)."""

    ratings_path: Path
    lock: threading.Lock

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a reviewer's terminal shows the URL, not every request

    def _reply(self, status: HTTPStatus, payload: Any) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _current(self) -> list[Rating]:
        if not self.ratings_path.exists():
            return []
        return parse_tsv(self.ratings_path.read_text(encoding="utf-8"), str(self.ratings_path))[0]

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/api/ratings":
            with self.lock:
                rows = self._current()
            self._reply(HTTPStatus.OK, [r.__dict__ for r in rows])
            return
        super().do_GET()

    def do_POST(self) -> None:
        if self.path.split("?")[0] != "/api/ratings":
            self._reply(HTTPStatus.NOT_FOUND, {"error": "only /api/ratings takes a POST"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            rows = json.loads(self.rfile.read(min(length, 10_000_000)) or b"[]")
            assert isinstance(rows, list)
        except (ValueError, AssertionError):
            self._reply(HTTPStatus.BAD_REQUEST, {"error": "the body must be a JSON list of decisions"})
            return
        parsed = [parse_row(row if isinstance(row, dict) else {}, f"decision {i + 1}") for i, row in enumerate(rows)]
        problems = [p for _, p in parsed if p]
        if problems:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": "; ".join(problems)})
            return
        with self.lock:
            merged = merge(self._current(), [r for r, _ in parsed if r])
            write_text(self.ratings_path, to_tsv(merged))
        self._reply(HTTPStatus.OK, {"saved": len(rows), "total": len(merged), "file": str(self.ratings_path)})


def make_server(output_dir: Path, ratings_path: Path, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """The review server (not started): the output folder read-only, decisions into ``ratings_path``."""
    handler = type("ReviewHandler", (_Handler,), {"ratings_path": Path(ratings_path), "lock": threading.Lock()})
    return ThreadingHTTPServer((host, port), partial(handler, directory=str(output_dir)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metsprep", description="metsprep tools")
    sub = parser.add_subparsers(dest="command", required=True)
    review = sub.add_parser("review", help="serve the QC pages of an output folder and record decisions")
    review.add_argument("output_dir", nargs="?", default="results", type=Path, help="the pipeline's output folder")
    review.add_argument("--port", type=int, default=8765)
    review.add_argument("--ratings", type=Path, default=None,
                        help=f"ratings file (default: <output_dir>/{DEFAULT_RATINGS}, what the pipeline reads)")
    args = parser.parse_args(argv)
    output_dir = args.output_dir.resolve()
    if not (output_dir / "qc" / "index.html").exists():
        parser.error(f"{output_dir} has no qc/index.html: run the pipeline first")
    ratings = (args.ratings or output_dir / DEFAULT_RATINGS).resolve()
    server = make_server(output_dir, ratings, port=args.port)
    print(f"Review at http://127.0.0.1:{server.server_address[1]}/qc/index.html ; decisions go to {ratings}. "
          "Ctrl-C stops; then run the pipeline again to take them in.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
