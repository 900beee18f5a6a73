"""Lesions as star-shaped bodies with an analytic volume, and their exact planar cross-sections.

A lesion is r(u) = R * (1 + sum_j a_j * P_l_j(u . n_j)) around a centre c, for unit
directions u, with Legendre polynomials P_2/P_3 along random axes n_j. The amplitudes are
kept small (sum |a| <= 0.2) so the body stays convex: every planar cross-section is then a
convex polygon that is star-shaped around any interior point, which the contour tracer uses.
Because r^3 and r^4 are polynomials of degree <= 12 in u, Gauss-Legendre x trapezoid
quadrature of (1/3)∫r^3 dΩ and (1/4)∫r^4 u dΩ is exact to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

MAX_AMPLITUDE = 0.2


def _legendre(degree: int, x: np.ndarray) -> np.ndarray:
    if degree == 2:
        return 0.5 * (3.0 * x * x - 1.0)
    if degree == 3:
        return 0.5 * (5.0 * x**3 - 3.0 * x)
    raise ValueError(f"unsupported degree {degree}")


@dataclass(frozen=True)
class ShapeTerm:
    degree: int
    axis: tuple[float, float, float]
    coefficient: float


@dataclass
class Lesion:
    """One lesion in the T1C patient frame (LPS mm)."""

    centre_lps: np.ndarray
    radius_mm: float  # R, the unperturbed radius
    terms: list[ShapeTerm] = field(default_factory=list)
    ring_enhancing: bool = False
    core_fraction: float = 0.0  # necrotic core: rho < core_fraction * r(u)
    oedema_extent: float = 0.0  # oedema up to (1 + oedema_extent) * r(u)

    @property
    def max_radius_mm(self) -> float:
        return self.radius_mm * (1.0 + sum(abs(t.coefficient) for t in self.terms))

    @property
    def outer_radius_mm(self) -> float:
        return self.max_radius_mm * (1.0 + self.oedema_extent)

    def radius_along(self, unit_dirs: np.ndarray) -> np.ndarray:
        """r(u) for unit directions of shape (..., 3)."""
        pert = np.zeros(unit_dirs.shape[:-1])
        for term in self.terms:
            pert += term.coefficient * _legendre(term.degree, unit_dirs @ np.asarray(term.axis))
        return self.radius_mm * (1.0 + pert)

    def radial_ratio(self, points_lps: np.ndarray) -> np.ndarray:
        """|p - c| / r(direction): <= 1 inside the lesion. Shape (...,)."""
        d = points_lps - self.centre_lps
        rho = np.linalg.norm(d, axis=-1)
        safe = np.where(rho > 0, rho, 1.0)
        u = d / safe[..., None]
        return np.where(rho > 0, rho / self.radius_along(u), 0.0)

    def true_volume_mm3(self) -> float:
        dirs, weights = _sphere_quadrature()
        return float(np.sum(weights * self.radius_along(dirs) ** 3) / 3.0)

    def true_centroid_lps(self) -> np.ndarray:
        dirs, weights = _sphere_quadrature()
        r = self.radius_along(dirs)
        first_moment = np.sum((weights * r**4 / 4.0)[:, None] * dirs, axis=0)
        return self.centre_lps + first_moment / self.true_volume_mm3()

    def max_diameter_mm(self) -> float:
        """Largest caliper width, sampled over the quadrature directions (to ~0.1%)."""
        dirs, _ = _sphere_quadrature()
        pts = dirs * self.radius_along(dirs)[:, None]
        # width along u = max(p.u) - min(p.u); sampled on a subset of directions
        sub = dirs[:: max(1, len(dirs) // 600)]
        proj = pts @ sub.T
        return float(np.max(proj.max(axis=0) - proj.min(axis=0)))

    def cross_section(
        self, origin_lps: np.ndarray, row_dir: np.ndarray, col_dir: np.ndarray, point_spacing_mm: float = 1.5
    ) -> np.ndarray | None:
        """Exact boundary of the lesion ∩ plane, as (n, 3) LPS points on the plane, or None.

        The plane passes through origin_lps and is spanned by the unit vectors row_dir,
        col_dir. Points are boundary points found by bisection along rays from an interior
        point of the (convex) section, about one per point_spacing_mm of perimeter.
        """
        normal = np.cross(row_dir, col_dir)
        normal /= np.linalg.norm(normal)
        h = float(np.dot(self.centre_lps - origin_lps, normal))
        rmax = self.max_radius_mm
        if abs(h) >= rmax:
            return None
        centre_in_plane = self.centre_lps - h * normal
        inner = centre_in_plane
        if self.radial_ratio(inner) >= 1.0:
            # Off-centre cap: use the centroid of inside samples (convex => interior).
            half = np.sqrt(rmax * rmax - h * h)
            g = np.linspace(-half, half, 61)
            a, b = np.meshgrid(g, g, indexing="ij")
            pts = centre_in_plane + a[..., None] * row_dir + b[..., None] * col_dir
            inside = self.radial_ratio(pts) < 1.0
            if inside.sum() < 3:
                return None  # section narrower than ~half a grid step: negligible area
            inner = pts[inside].mean(axis=0)
        # perimeter estimate from a coarse ray cast, then the final one
        coarse = self._boundary_from(inner, row_dir, col_dir, 16)
        perimeter = float(np.sum(np.linalg.norm(np.diff(np.vstack([coarse, coarse[:1]]), axis=0), axis=1)))
        n_points = max(8, int(np.ceil(perimeter / point_spacing_mm)))
        return self._boundary_from(inner, row_dir, col_dir, n_points)

    def _boundary_from(self, inner: np.ndarray, row_dir: np.ndarray, col_dir: np.ndarray, n: int) -> np.ndarray:
        psi = 2.0 * np.pi * np.arange(n) / n
        dirs = np.cos(psi)[:, None] * row_dir + np.sin(psi)[:, None] * col_dir
        s_hi = 2.0 * self.max_radius_mm + np.linalg.norm(inner - self.centre_lps)
        # guard: one crossing per ray (convexity); check on a fine sampling first
        steps = np.linspace(0.0, s_hi, 96)
        ratio = self.radial_ratio(inner + steps[None, :, None] * dirs[:, None, :])
        outside = ratio >= 1.0
        crossings = np.sum(outside[:, 1:] != outside[:, :-1], axis=1)
        if np.any(crossings != 1):
            raise RuntimeError("lesion cross-section is not star-shaped around its interior point")
        lo = np.zeros(n)
        hi = np.full(n, s_hi)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            out = self.radial_ratio(inner + mid[:, None] * dirs) >= 1.0
            hi = np.where(out, mid, hi)
            lo = np.where(out, lo, mid)
        return inner + (0.5 * (lo + hi))[:, None] * dirs


@lru_cache(maxsize=1)
def _sphere_quadrature(n_mu: int = 48, n_phi: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Directions and weights integrating polynomials in u of degree < ~90 exactly over S^2."""
    mu, w_mu = np.polynomial.legendre.leggauss(n_mu)
    phi = 2.0 * np.pi * np.arange(n_phi) / n_phi
    m, p = np.meshgrid(mu, phi, indexing="ij")
    s = np.sqrt(1.0 - m * m)
    dirs = np.stack([s * np.cos(p), s * np.sin(p), m], axis=-1).reshape(-1, 3)
    weights = (w_mu[:, None] * np.full(n_phi, 2.0 * np.pi / n_phi)[None, :]).reshape(-1)
    dirs.setflags(write=False)
    weights.setflags(write=False)
    return dirs, weights


def random_unit_vector(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def random_shape_terms(rng: np.random.Generator) -> list[ShapeTerm]:
    """Low-order lobulation: two P2 terms and one P3 term, sum of |amplitudes| <= 0.2."""
    terms = [
        ShapeTerm(2, tuple(random_unit_vector(rng)), float(rng.uniform(-0.08, 0.08))),
        ShapeTerm(2, tuple(random_unit_vector(rng)), float(rng.uniform(-0.07, 0.07))),
        ShapeTerm(3, tuple(random_unit_vector(rng)), float(rng.uniform(-0.04, 0.04))),
    ]
    assert sum(abs(t.coefficient) for t in terms) <= MAX_AMPLITUDE
    return terms


def draw_lesion_count(rng: np.random.Generator) -> int:
    """Gamma-knife-like count: ~45% one, most of the rest 2-4, a tail up to 15."""
    u = rng.uniform()
    if u < 0.45:
        return 1
    if u < 0.80:
        return int(rng.choice([2, 3, 4], p=[0.45, 0.32, 0.23]))
    if u < 0.94:
        return int(rng.integers(5, 10))
    return int(rng.integers(10, 16))


def draw_diameters_mm(rng: np.random.Generator, n: int) -> np.ndarray:
    """Log-uniform on 2-40 mm (median ~9 mm): small lesions dominate."""
    return np.exp(rng.uniform(np.log(2.0), np.log(40.0), size=n))


def polygon_area_in_plane(points_lps: np.ndarray, row_dir: np.ndarray, col_dir: np.ndarray) -> float:
    """Shoelace area of a closed polygon after projecting onto the plane's axes."""
    a = points_lps @ row_dir
    b = points_lps @ col_dir
    return float(0.5 * abs(np.dot(a, np.roll(b, -1)) - np.dot(b, np.roll(a, -1))))
