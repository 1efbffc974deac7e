"""The shipped face-mapping presets, built from the fitted coefficients (written by
`python -m core.face.fit --presets echomask_blender/presets`).

- ARKit 52: Apple's blend-shape names; each shape the data relates to speech (see fitted.FaceFit.arkit) is
  driven by its fitted channel, the others are listed unmapped so an animator can fill them in.
- Rhubarb / Preston Blair mouth shapes A-H and X: driven by the phone-derived visemes (on the held-out GT
  take they beat the face-only classifier by far: docs/LIPSYNC.md).
- SMPL-X expressions: Exp000..Exp099 <- exp000..exp099 (for FLAME/SMPL-X-topology characters).
"""
from __future__ import annotations

from .fitted import FaceFit
from .mapping import FaceMapping, FaceTarget
from .phone_classes import SHAPE_NAMES

ARKIT_52 = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen",
    "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)


def arkit_preset(fit: FaceFit) -> FaceMapping:
    fitted = set(fit.arkit_names)
    targets = [FaceTarget(name, f"arkit.{name}" if name in fitted else "", True) for name in ARKIT_52]
    return FaceMapping(
        name="ARKit 52",
        description=(f"Apple ARKit blend shapes. {len(fitted)} are driven by coefficients fitted from a real "
                     f"ARKit capture with speech (the shapes whose relation to phones held on its held-out "
                     f"half); the others are unmapped: type a formula to drive them."),
        targets=targets)


def rhubarb_preset() -> FaceMapping:
    meanings = {"A": "closed (P B M)", "B": "slightly open, teeth together", "C": "open (EH AE)",
                "D": "wide open (AA)", "E": "slightly rounded (AO ER)", "F": "puckered (UW OW W)",
                "G": "teeth on lower lip (F V)", "H": "tongue up (L)", "X": "rest"}
    return FaceMapping(
        name="Rhubarb / Preston Blair mouths",
        description="Mouth shapes A-H and X (" + "; ".join(f"{k}: {v}" for k, v in meanings.items()) +
                    "), from the phones with co-articulation. Shape-key names 'A', 'Mouth_A', 'mouth.A' match.",
        targets=[FaceTarget(s, f"viseme.{s}") for s in SHAPE_NAMES])


def smplx_preset() -> FaceMapping:
    return FaceMapping(
        name="SMPL-X expressions",
        description="The 100 SMPL-X/FLAME expression coefficients onto shape keys Exp000..Exp099, unscaled.",
        targets=[FaceTarget(f"Exp{i:03d}", f"exp{i:03d}") for i in range(100)], value_range=(-10.0, 10.0))


PRESET_FILES = {"arkit52.json": arkit_preset, "rhubarb_mouths.json": lambda fit: rhubarb_preset(),
                "smplx_expressions.json": lambda fit: smplx_preset()}
