"""S2 cell ids for many points at once: latitude/longitude -> leaf cell (level 30) -> parent at a level.

s2sphere defines the cells (ids, tokens, centres); its ``CellId.from_lat_lng`` is pure Python,
one call per point, too slow for MP-16's 4.7M photos or PlaNet's 126M (docs/geolocation.md,
Decisions). This module is the same computation written once over numpy arrays, step for step as
s2sphere's ``sphere.py`` (itself a port of the C++ S2 library's ``s2coords.h``):

    lat/lng (degrees) -> unit vector (x, y, z)        LatLng.to_point
    -> face = largest |component| (+3 if negative)    xyz_to_face_uv / Point.largest_abs_component
    -> (u, v) on that face                            valid_face_xyz_to_uv
    -> (s, t) by the quadratic projection             CellId.uv_to_st (QUADRATIC_PROJECTION)
    -> (i, j) = floor(2^30 * s), clamped             CellId.st_to_ij
    -> Hilbert position, 4 bits of i and j at a time  CellId.from_face_ij with s2sphere's LOOKUP_POS

Every operation is the same IEEE double operation in the same order, so the ids are bit for bit
s2sphere's (tested on random points, the poles, the antimeridian and cube-face edges). Two notes:
numpy's sin/cos must match libm's (true on this project's machines, checked by the tests; a last-bit
difference could only move a point lying within 1e-16 of a leaf-cell edge), and the C++ library
rounds ``2^30 * s - 0.5`` half-to-even where s2sphere floors ``2^30 * s``: these differ only for
a point exactly on a leaf edge; we follow s2sphere, which defines the cells here.

Ids are ``uint64`` (faces 4 and 5 have the top bit set).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import s2sphere

MAX_LEVEL = s2sphere.CellId.MAX_LEVEL  # 30: leaf cells are about 1 cm across
_POS_BITS = s2sphere.CellId.POS_BITS  # 61 = 2 * 30 + 1
_MAX_SIZE = float(s2sphere.CellId.MAX_SIZE)  # 2^30 leaf cells along a face edge
_LOOKUP_BITS = 4  # s2sphere's LOOKUP_BITS: the Hilbert table maps 4 bits of i and j per step
# s2sphere's table (i, j 4-bit chunks + orientation -> position chunk + orientation), as an array.
_LOOKUP_POS = np.asarray(s2sphere.sphere.LOOKUP_POS, dtype=np.uint64)
_SWAP_MASK = 1  # s2sphere.sphere.SWAP_MASK
_ORIENTATION_MASK = 3  # SWAP_MASK | INVERT_MASK


def lat_lng_to_xyz(lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
    """Unit vectors (N, 3) of points given in degrees, as ``s2sphere.LatLng.to_point``."""
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    theta = np.radians(np.asarray(lng, dtype=np.float64))
    cos_phi = np.cos(phi)
    return np.stack([np.cos(theta) * cos_phi, np.sin(theta) * cos_phi, np.sin(phi)], axis=1)


def _face_uv(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cube face (0..5) and face coordinates (u, v) in [-1, 1], as ``s2sphere.xyz_to_face_uv``."""
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    ax, ay, az = np.abs(x), np.abs(y), np.abs(z)
    # Point.largest_abs_component, with its strict comparisons (ties go to the later axis).
    axis = np.where(ax > ay, np.where(ax > az, 0, 2), np.where(ay > az, 1, 2))
    major = np.choose(axis, (x, y, z))
    face = axis + 3 * (major < 0)
    # valid_face_xyz_to_uv: (numerator_u, numerator_v) / major component, per face.
    num_u = np.choose(face, (y, -x, -x, z, z, -y))
    num_v = np.choose(face, (z, z, -y, y, -x, -x))
    return face, num_u / major, num_v / major


def _uv_to_ij(u: np.ndarray) -> np.ndarray:
    """Leaf coordinate along a face edge, ``st_to_ij(uv_to_st(u))`` (quadratic projection)."""
    with np.errstate(invalid="ignore"):  # each branch's sqrt sees the other branch's inputs too
        s = np.where(u >= 0, 0.5 * np.sqrt(1 + 3 * u), 1 - 0.5 * np.sqrt(1 - 3 * u))
    return np.clip(np.floor(_MAX_SIZE * s), 0, _MAX_SIZE - 1).astype(np.uint64)


def _face_ij_to_id(face: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Leaf cell ids from (face, i, j), as ``s2sphere.CellId.from_face_ij``."""
    face = face.astype(np.uint64)
    n = face << np.uint64(_POS_BITS - 1)
    bits = face & np.uint64(_SWAP_MASK)
    chunk = np.uint64((1 << _LOOKUP_BITS) - 1)
    for k in range(7, -1, -1):
        shift = np.uint64(k * _LOOKUP_BITS)
        bits = bits + (((i >> shift) & chunk) << np.uint64(_LOOKUP_BITS + 2))
        bits = bits + (((j >> shift) & chunk) << np.uint64(2))
        bits = _LOOKUP_POS[bits]
        n |= (bits >> np.uint64(2)) << np.uint64(2 * k * _LOOKUP_BITS)
        bits &= np.uint64(_ORIENTATION_MASK)
    return n * np.uint64(2) + np.uint64(1)


def leaf_ids(lat: np.ndarray, lng: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    """Level-30 S2 cell ids (uint64) of points in degrees: ``CellId.from_lat_lng`` for arrays.

    Works in chunks so the temporaries stay a few MB whatever the number of points.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lng = np.asarray(lng, dtype=np.float64)
    out = np.empty(lat.shape[0], dtype=np.uint64)
    for start in range(0, lat.shape[0], chunk):
        stop = start + chunk
        face, u, v = _face_uv(lat_lng_to_xyz(lat[start:stop], lng[start:stop]))
        out[start:stop] = _face_ij_to_id(face, _uv_to_ij(u), _uv_to_ij(v))
    return out


def lsb_for_level(level: int) -> np.uint64:
    """The lowest set bit of every cell id at ``level`` (``CellId.lsb_for_level``)."""
    return np.uint64(1 << (2 * (MAX_LEVEL - level)))


def parent_ids(ids: np.ndarray, level: int) -> np.ndarray:
    """The ancestors at ``level`` of cells at a deeper (or the same) level, as ``CellId.parent(level)``."""
    lsb = lsb_for_level(level)
    return (ids & ~(lsb - np.uint64(1))) | lsb  # (id & -lsb) | lsb in two's complement


def id_levels(ids: np.ndarray) -> np.ndarray:
    """The level of each cell id (``CellId.level``): 30 minus half the trailing zero count."""
    ids = np.asarray(ids, dtype=np.uint64)
    lowest = ids & (~ids + np.uint64(1))  # the lsb, two's complement in uint64
    return MAX_LEVEL - (np.log2(lowest.astype(np.float64)).astype(np.int64) // 2)


def range_min(ids: np.ndarray) -> np.ndarray:
    """The smallest leaf id inside each cell (``CellId.range_min``)."""
    lowest = ids & (~ids + np.uint64(1))
    return ids - (lowest - np.uint64(1))


def range_max(ids: np.ndarray) -> np.ndarray:
    """The largest leaf id inside each cell (``CellId.range_max``)."""
    lowest = ids & (~ids + np.uint64(1))
    return ids + (lowest - np.uint64(1))


def to_tokens(ids: Iterable[int]) -> list[str]:
    """S2 tokens (``CellId.to_token``: hex without trailing zeros) of cell ids."""
    return [s2sphere.CellId(int(i)).to_token() for i in ids]


def from_tokens(tokens: Iterable[str]) -> np.ndarray:
    """Cell ids (uint64) of S2 tokens (``CellId.from_token``)."""
    return np.asarray([s2sphere.CellId.from_token(t).id() for t in tokens], dtype=np.uint64)


def is_valid_id(cell_id: int) -> bool:
    """Whether ``cell_id`` is a valid S2 cell id (``CellId.is_valid``)."""
    return s2sphere.CellId(int(cell_id)).is_valid()


def centers(ids: Iterable[int]) -> np.ndarray:
    """(N, 2) latitude/longitude in degrees of each cell's own center (``CellId.to_lat_lng``)."""
    out = []
    for cell_id in ids:
        ll = s2sphere.CellId(int(cell_id)).to_lat_lng()
        out.append((ll.lat().degrees, ll.lng().degrees))
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)
