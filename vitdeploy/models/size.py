"""Input sizes: one frozen ``ImageSize(h, w)`` for every verb, model and metadata field (DESIGN 15).

Parsed from what a user or a file gives: an int (square), ``"N"``, ``"HxW"``, ``"H W"``, a pair.
Printed as today's ``"N"`` when square (so metadata, references and search files written before
H x W existed stay valid) and ``"HxW"`` otherwise; ``ImageSize.parse(str(s)) == s``.
Legality (which sizes a family's architecture takes) is the family's business:
``legal_multiple`` here only does the arithmetic and names the nearest legal sizes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence, Union

from vitdeploy.errors import UserError

_SPLIT = re.compile(r"^\s*(\d+)\s*(?:[xX×,]\s*|\s+)(\d+)\s*$")


@dataclass(frozen=True, order=True)
class ImageSize:
    h: int
    w: int

    @property
    def is_square(self) -> bool:
        return self.h == self.w

    @property
    def hw(self) -> tuple[int, int]:
        return (self.h, self.w)

    @property
    def pixels(self) -> int:
        return self.h * self.w

    def __str__(self) -> str:
        return str(self.h) if self.is_square else f"{self.h}x{self.w}"

    def label(self) -> str:
        """Always ``HxW`` (progress lines, tables)."""
        return f"{self.h}x{self.w}"

    def __iter__(self):
        return iter((self.h, self.w))

    def scaled(self, div: int) -> "ImageSize":
        return ImageSize(self.h // div, self.w // div)

    @classmethod
    def parse(cls, value: Union["ImageSize", int, str, Sequence], what: str = "--img-size",
              allow_zero: bool = False) -> "ImageSize":
        """int | "N" | "HxW" | "H W" | (h, w) | [n] -> ImageSize; UserError naming the value otherwise.

        allow_zero: a 0 is let through for a family check that names the nearest legal sizes."""
        if isinstance(value, ImageSize):
            return value
        if isinstance(value, bool):
            raise UserError(f"{what} {value!r}: expected N, H W or HxW")
        if isinstance(value, int):
            h = w = value
        elif isinstance(value, str):
            text = value.strip()
            if text.isdigit():
                h = w = int(text)
            elif m := _SPLIT.match(text):
                h, w = int(m.group(1)), int(m.group(2))
            else:
                raise UserError(f"{what} {value!r}: expected N (square), H W or HxW, e.g. 800 1344 or 800x1344")
        elif isinstance(value, (list, tuple)):
            vals = list(value)
            if len(vals) == 1:
                return cls.parse(vals[0], what, allow_zero)
            if len(vals) != 2:
                raise UserError(f"{what} takes one value (square) or two (H W), got {len(vals)}: "
                                f"{' '.join(map(str, vals))}")
            if any(isinstance(v, str) and not v.strip().isdigit() for v in vals) or \
                    any(isinstance(v, bool) for v in vals):
                raise UserError(f"{what} {' '.join(map(str, vals))}: expected two integers H W")
            h, w = (int(v) for v in vals)
        else:
            raise UserError(f"{what} {value!r}: expected N, H W or HxW")
        if h < 0 or w < 0 or (not allow_zero and (h == 0 or w == 0)):
            raise UserError(f"{what} {h}x{w}: height and width must be positive")
        return cls(h, w)


def as_size(value) -> ImageSize:
    """Internal call sites: an int (square, the pre-H x W API) or an ImageSize."""
    return ImageSize.parse(value, "img_size")


def nearest_multiples(n: int, m: int, minimum: int) -> list[int]:
    """The legal values (multiples of m, >= minimum) nearest n: one below and one above."""
    lo = max(minimum, (n // m) * m)
    hi = max(minimum, -(-n // m) * m)
    return sorted({lo, hi})


def check_multiple(size: ImageSize, m: int, minimum: int, family: str, why: str) -> None:
    """UserError naming the nearest legal sizes unless H and W are multiples of m, >= minimum."""
    if size.h % m == 0 and size.w % m == 0 and size.h >= minimum and size.w >= minimum:
        return
    hs = [size.h] if size.h % m == 0 and size.h >= minimum else nearest_multiples(size.h, m, minimum)
    ws = [size.w] if size.w % m == 0 and size.w >= minimum else nearest_multiples(size.w, m, minimum)
    pairs = [(h, h) for h in hs] if size.is_square else [(h, w) for h in hs for w in ws]
    near = " or ".join(f"{h}x{w}" if h != w else str(h) for h, w in pairs)
    raise UserError(f"--img-size {size.label()} is not legal for {family}: H and W must each be a multiple of "
                    f"{m} (>= {minimum}; {why}); nearest legal: {near}")
