"""Fonts for printed digits, from pip packages (the `train` extra), so a fresh machine has the same ones.

Training and the evaluation pages use different families, so the evaluation measures fonts the model
never saw:

- training: matplotlib's DejaVu Sans, Sans Mono and Serif (Bitstream Vera licence), STIX General (SIL OFL)
  and Computer Modern (cmr, cmb, cmss, cmti, cmtt; Knuth/AMS, free); Lato, Source Sans Pro, Red Hat
  Display (SIL OFL) and Roboto (Apache 2.0); Intuitive and Amatic SC, two hand-lettered fonts (SIL OFL):
  72 faces, from the `font-*` packages of those names but matplotlib's.
- evaluation only: Source Serif Pro, Caladea (Apache 2.0), Hanken Grotesk, Manrope and Fredoka One (the
  `font-*` packages of those names; SIL OFL unless noted): 34 faces.

Faces without plain digit glyphs (symbol fonts, cmmi's old-style figures, variable fonts) are left out.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

MATPLOTLIB_FACES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmti10.ttf",
    "cmtt10.ttf",
)
TRAIN_PACKAGES = ("font_lato", "font_source_sans_pro", "font_rhd", "font_roboto", "font_intuitive", "font_amatic_sc")
EVAL_PACKAGES = ("font_source_serif_pro", "font_caladea", "font_hanken_grotesk", "font_manrope", "font_fredoka_one")


LICENCES = {
    "training": {
        "DejaVu Sans, Sans Mono, Serif (matplotlib)": "Bitstream Vera licence (DejaVu changes public domain)",
        "STIX General (matplotlib)": "SIL OFL 1.1",
        "Computer Modern cmr, cmb, cmss, cmti, cmtt (matplotlib)": "BaKoMa licence (free redistribution)",
        "Lato (font-lato)": "SIL OFL 1.1",
        "Source Sans Pro (font-source-sans-pro)": "SIL OFL 1.1",
        "Red Hat Display (font-rhd)": "SIL OFL 1.1",
        "Roboto (font-roboto)": "Apache 2.0",
        "Intuitive (font-intuitive)": "SIL OFL 1.1",
        "Amatic SC (font-amatic-sc)": "SIL OFL 1.1",
    },
    "evaluation_only": {
        "Source Serif Pro (font-source-serif-pro)": "SIL OFL 1.1",
        "Caladea (font-caladea)": "Apache 2.0",
        "Hanken Grotesk (font-hanken-grotesk)": "SIL OFL 1.1",
        "Manrope (font-manrope)": "SIL OFL 1.1",
        "Fredoka One (font-fredoka-one)": "SIL OFL 1.1",
    },
}
"""Families and licences, for the model card. Glyphs are rendered into training images; no font file is
copied into the repository or the model."""


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        name = package.replace("_", "-")
        raise FileNotFoundError(f"the `{name}` package is missing; install the train extra (make install-train)")
    return Path(next(iter(spec.submodule_search_locations)))


def _faces(package: str) -> list[Path]:
    """A font package's faces: .ttf where it ships both .ttf and .otf of a face; no variable fonts."""
    files = sorted((_package_dir(package) / "files").glob("*.[ot]tf"))
    stems = {f.stem for f in files if f.suffix == ".ttf"}
    return [f for f in files if "Variable" not in f.stem and (f.suffix == ".ttf" or f.stem not in stems)]


def train_fonts() -> list[Path]:
    folder = _package_dir("matplotlib") / "mpl-data" / "fonts" / "ttf"
    return [folder / face for face in MATPLOTLIB_FACES] + [f for p in TRAIN_PACKAGES for f in _faces(p)]


def eval_fonts() -> list[Path]:
    return [f for p in EVAL_PACKAGES for f in _faces(p)]
