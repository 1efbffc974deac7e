"""Retarget an SMPL-X take onto a rig's bones: rest directions compared in one space, all frames at once.

Spaces. SMPL-X axes are x = the character's left, y = up, z = forward. The target rig lives in its
armature space (the space of `Bone.matrix_local`). `F` (3x3) maps SMPL-X axes to armature axes; it is
fitted from the target's rest bones (up = the pelvis bone to the neck/head bone, left = its right to left
hips/shoulders), so rigs that are Z-up, Y-up under a rotated object, or facing -Y/+Y all work.

Rest matching (not copying local rotations). For each mapped joint j on bone k we take a rest *frame*:
the direction from the joint to its next mapped child (upper arm -> elbow, ...), completed by an across
direction (hips, collars, index-to-pinky knuckles) or, for plain chains, by the body axis most orthogonal
to it. `Q_k` = (F S_j) T_k^T turns the target's rest frame T_k into the source's S_j, so T-pose, A-pose,
"everything points up" BVH rest poses and arbitrary bone rolls are all matched by their world directions.
Each frame, bone k's armature-space rotation is then

    W_k(t) = F G_j(t) F^T Q_k A_k       (G_j: SMPL-X global rotation, A_k: rest rotation of bone k)

so the target segment turns exactly as the source segment does in the world. Bones that are not mapped
follow their parent rigidly (or copy another bone, for the world-space Copy Transforms/Rotation/Location
constraints of control rigs such as Rigify), and each mapped bone's local pose rotation is solved from its
parent's actual rotation: L_k = (A_p^T A_k)^T W_p^T W_k.

Root. The pelvis bone's head follows the source pelvis, scaled by the ratio of leg lengths (target /
source, which also converts units), about the same pivot as the source pelvis; then, per frame, the root is
shifted so that the target's lowest foot joint keeps the source's clearance above the floor (and, when the
character travels, its support foot stays where the source's does): feet stay on the floor where the
source's do, whatever the target's proportions. `root_motion="IN_PLACE"` drops horizontal travel.

Everything is numpy over all frames (a 60 s take retargets in a few tens of milliseconds). `inverse` turns
keyed target channels back into an SMPL-X take (for re-keying, intensity and .npz export of a mapped rig).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..motion import rotations as R
from ..errors import EchoMaskError
from ..motion.root_motion import FOOT_CLEARANCE
from ..motion.skeleton import JOINT_INDEX, JOINT_NAMES, NUM_JOINTS, PARENTS, REST_JOINTS_YUP
from ..motion.take import Take

ROTATION_MODES = ("QUATERNION", "AXIS_ANGLE", "XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")
FOOT_JOINTS = ("left_ankle", "left_foot", "right_ankle", "right_foot")
LEG_CHAINS = (("left_hip", "left_knee", "left_ankle"), ("right_hip", "right_knee", "right_ankle"))
REST_WARN_DEG = 35.0   # upper arms further than this from both T (0 deg) and A (45 deg) below horizontal: warn


class RetargetError(EchoMaskError):
    """A rig or bone map the take cannot be retargeted onto (the message names the bones involved)."""


# --------------------------------------------------------------------------------------------- joint topology

def _direction_children() -> dict[str, tuple[str, ...]]:
    out = {"pelvis": ("spine1", "spine2", "spine3", "neck", "head"), "spine1": ("spine2", "spine3", "neck", "head"),
           "spine2": ("spine3", "neck", "head"), "spine3": ("neck", "head"), "neck": ("head",)}
    for s in ("left", "right"):
        out.update({f"{s}_hip": (f"{s}_knee", f"{s}_ankle"), f"{s}_knee": (f"{s}_ankle",),
                    f"{s}_ankle": (f"{s}_foot",), f"{s}_collar": (f"{s}_shoulder", f"{s}_elbow"),
                    f"{s}_shoulder": (f"{s}_elbow", f"{s}_wrist"), f"{s}_elbow": (f"{s}_wrist",),
                    f"{s}_wrist": (f"{s}_middle1", f"{s}_ring1", f"{s}_index1", f"{s}_pinky1")})
        for f in ("index", "middle", "ring", "pinky", "thumb"):
            out[f"{s}_{f}1"] = (f"{s}_{f}2", f"{s}_{f}3")
            out[f"{s}_{f}2"] = (f"{s}_{f}3",)
    return out


DIRECTION_CHILDREN = _direction_children()
ACROSS = {"pelvis": (("left_hip", "right_hip"),),
          "spine3": (("left_collar", "right_collar"), ("left_shoulder", "right_shoulder")),
          "left_wrist": (("left_index1", "left_pinky1"), ("left_index1", "left_ring1"), ("left_middle1", "left_pinky1")),
          "right_wrist": (("right_index1", "right_pinky1"), ("right_index1", "right_ring1"),
                          ("right_middle1", "right_pinky1"))}
_BODY_AXES = (np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))  # fwd, left, up


# --------------------------------------------------------------------------------------------- the target rig

@dataclasses.dataclass
class Copy:
    """A world-space Copy Transforms / Rotation / Location constraint on an unmapped bone (REPLACE mix)."""
    kind: str          # "TRANSFORMS", "ROTATION" or "LOCATION"
    target: str        # the bone copied
    influence: float


@dataclasses.dataclass
class TargetBone:
    name: str
    parent: str | None
    matrix: np.ndarray                  # (4, 4) rest matrix in armature space (Blender's Bone.matrix_local)
    rotation_mode: str = "QUATERNION"
    inherit_rotation: bool = True
    copies: list[Copy] = dataclasses.field(default_factory=list)
    constrained: bool = False           # has constraints that would override its own keys

    @property
    def head(self) -> np.ndarray:
        return np.asarray(self.matrix, np.float64)[:3, 3]

    @property
    def rotation(self) -> np.ndarray:
        return np.asarray(self.matrix, np.float64)[:3, :3]

    @property
    def axis(self) -> np.ndarray:
        """The bone's direction (head -> tail) = its rest Y axis."""
        return np.asarray(self.matrix, np.float64)[:3, 1]


@dataclasses.dataclass
class TargetRig:
    name: str
    bones: list[TargetBone]

    def __post_init__(self):
        self.index = {b.name: i for i, b in enumerate(self.bones)}

    def bone(self, name: str) -> TargetBone:
        return self.bones[self.index[name]]

    def parents(self) -> dict[str, str | None]:
        return {b.name: b.parent for b in self.bones}

    def depends_on(self, name: str) -> set[str]:
        """Every bone whose pose moves this one: ancestors and copy-constraint targets, recursively."""
        out, stack = set(), [name]
        while stack:
            b = self.bone(stack.pop())
            for d in ([b.parent] if b.parent else []) + [c.target for c in b.copies if c.target in self.index]:
                if d not in out:
                    out.add(d)
                    stack.append(d)
        return out

    def ancestors(self, name: str) -> list[str]:
        out, bone = [], self.bone(name).parent
        while bone is not None:
            out.append(bone)
            bone = self.bone(bone).parent
        return out


@dataclasses.dataclass
class RetargetOptions:
    root_motion: str = "TRAVEL"          # "TRAVEL": as generated; "IN_PLACE": no horizontal travel
    foot_correction: bool = True         # keep the lowest foot's floor clearance (and support foot) as the source's
    contact_softness: float = 0.01       # metres: soft-min width choosing the support foot joint
    source_rest: np.ndarray | None = None  # (55, 3) SMPL-X rest joints (default: the neutral skeleton)


# --------------------------------------------------------------------------------------------- plan

@dataclasses.dataclass
class RetargetPlan:
    rig: TargetRig
    joint_bone: dict[str, str]           # SMPL-X joint -> bone, mapped joints only
    model_frame: np.ndarray              # F (3, 3): armature <- SMPL-X axes
    scale: float                         # target units per source metre (leg-length ratio)
    align: dict[str, np.ndarray]         # bone -> Q (3, 3)
    order: list[str]                     # bones computed, dependencies first
    root_bone: str                       # bone mapped to the pelvis (gets `location`)
    keyed: list[str]                     # bones keyed: mapped + unmapped links between mapped bones
    source_rest: np.ndarray
    options: RetargetOptions
    notes: list[str]
    warnings: list[str]
    pelvis_point: np.ndarray             # target point matching the SMPL-X pelvis joint at the aligned rest
    stand: np.ndarray                    # (3,) source pelvis position when standing on the floor at the origin
    floor: float                         # target floor height along the up axis
    foot_bones: dict[str, str]           # foot joint -> bone
    foot_rest_height: dict[str, float]   # target foot joint height above the floor when planted
    foot_rest_pos: dict[str, np.ndarray] # target foot joint positions at the aligned rest (armature space)

    @property
    def up(self) -> np.ndarray:
        return self.model_frame[:, 1]

    def bone_for(self, joint: str) -> str | None:
        return self.joint_bone.get(joint)


def _frame(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    e1 = primary / np.linalg.norm(primary)
    s = secondary - np.dot(secondary, e1) * e1
    e2 = s / np.linalg.norm(s)
    return np.stack([e1, e2, np.cross(e1, e2)], -1)


def _snap_axis_aligned(rotation: np.ndarray, tolerance_deg: float = 10.0) -> np.ndarray:
    snapped = np.zeros((3, 3))
    for row in range(3):
        col = int(np.argmax(np.abs(rotation[row])))
        snapped[row, col] = np.sign(rotation[row, col])
    if abs(np.linalg.det(snapped) - 1.0) > 1e-6:
        return rotation
    cos_angle = (np.trace(snapped.T @ rotation) - 1.0) / 2.0
    return snapped if cos_angle >= np.cos(np.radians(tolerance_deg)) else rotation


def _toposort(rig: TargetRig, needed: set[str]) -> list[str]:
    deps = {}
    for name in needed:
        b = rig.bone(name)
        deps[name] = ({b.parent} if b.parent else set()) | {c.target for c in b.copies}
    order, state = [], {}

    def visit(n, path):
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise RetargetError(f"The rig's bones depend on each other in a loop: {' -> '.join(path + [n])}.")
        state[n] = 1
        for d in sorted(deps.get(n, ())):
            if d in needed:
                visit(d, path + [n])
        state[n] = 2
        order.append(n)

    for n in sorted(needed, key=lambda n: rig.index[n]):
        visit(n, [])
    return order


def _fit_model_frame(rig: TargetRig, joint_bone: dict[str, str]) -> np.ndarray:
    head = {j: rig.bone(b).head for j, b in joint_bone.items()}
    top = next((head[j] for j in ("head", "neck", "spine3", "spine2") if j in head), None)
    if top is None or "pelvis" not in head:
        raise RetargetError("Cannot tell which way is up on this rig: the bone map needs the pelvis (hips) and "
                            "the neck or head (or a spine bone).")
    up = top - head["pelvis"]
    lefts = [head[a] - head[b] for a, b in (("left_hip", "right_hip"), ("left_shoulder", "right_shoulder"),
                                            ("left_collar", "right_collar"), ("left_elbow", "right_elbow"))
             if a in head and b in head]
    if not lefts:
        raise RetargetError("Cannot tell the rig's left from its right: map at least one left/right pair "
                            "(thighs or upper arms).")
    left = np.sum([v / max(np.linalg.norm(v), 1e-12) for v in lefts], axis=0)
    if np.linalg.norm(up) < 1e-9 or np.linalg.norm(np.cross(up, left)) < 1e-9:
        raise RetargetError("The rig's rest pose is degenerate: its pelvis, neck and left/right bones are in line.")
    u = up / np.linalg.norm(up)
    x = left - np.dot(left, u) * u
    x /= np.linalg.norm(x)
    return _snap_axis_aligned(np.stack([x, u, np.cross(x, u)], -1))


def _chain_length(points: list[np.ndarray]) -> float:
    return float(sum(np.linalg.norm(b - a) for a, b in zip(points[:-1], points[1:])))


def plan_retarget(rig: TargetRig, joint_bone: dict[str, str], options: RetargetOptions | None = None) -> RetargetPlan:
    """Everything that depends on the rig and the map only (rest frames, scale, order); checks the map.

    Raises RetargetError naming the bones involved (missing bones, two joints on one bone, a joint's bone
    not below its parent joint's bone, constrained bones, no pelvis). Non-fatal findings go to
    `plan.notes` (skipped joints) and `plan.warnings` (rest pose far from T or A).
    """
    options = options or RetargetOptions()
    rest = REST_JOINTS_YUP if options.source_rest is None else np.asarray(options.source_rest, np.float64)
    if not joint_bone:
        raise RetargetError(f"No SMPL-X joint is mapped onto '{rig.name}': none of its bones was recognised. "
                            f"Pick a preset (Mixamo, Rigify, Unreal, SMPL-X) or fill in the bone map.")
    missing = sorted({b for b in joint_bone.values() if b not in rig.index})
    if missing:
        raise RetargetError(f"The bone map names bones that '{rig.name}' does not have: {', '.join(missing)}.")
    unknown = [j for j in joint_bone if j not in JOINT_INDEX]
    if unknown:
        raise RetargetError(f"Not SMPL-X joints: {', '.join(unknown)}.")
    by_bone: dict[str, list[str]] = {}
    for j, b in joint_bone.items():
        by_bone.setdefault(b, []).append(j)
    dup = {b: js for b, js in by_bone.items() if len(js) > 1}
    if dup:
        raise RetargetError("A bone can follow one joint only; these are mapped twice: " +
                            "; ".join(f"'{b}' <- {', '.join(js)}" for b, js in dup.items()))
    if "pelvis" not in joint_bone:
        raise RetargetError("The bone map has no bone for the pelvis (the hips / root of the body).")
    constrained = sorted(b for b in joint_bone.values() if rig.bone(b).constrained)
    if constrained:
        raise RetargetError(f"These bones are driven by constraints, so keys on them would be overridden: "
                            f"{', '.join(constrained)}. Map the rig's control bones instead (e.g. Rigify's FK "
                            f"controls, the 'rigify' preset).")
    # hierarchy: each joint's bone must lie below the bone of its nearest mapped SMPL-X ancestor
    for j, b in joint_bone.items():
        p = PARENTS[JOINT_INDEX[j]]
        while p >= 0 and JOINT_NAMES[p] not in joint_bone:
            p = PARENTS[p]
        if p >= 0 and joint_bone[JOINT_NAMES[p]] not in rig.depends_on(b):
            raise RetargetError(f"The map puts {j} on '{b}', which is not below '{joint_bone[JOINT_NAMES[p]]}' "
                                f"({JOINT_NAMES[p]}) in the rig's hierarchy; check the two rows.")
    notes = []
    skipped = [j for j in JOINT_NAMES if j not in joint_bone]
    if skipped:
        fingers = [j for j in skipped if any(f in j for f in ("index", "middle", "ring", "pinky", "thumb"))]
        others = [j for j in skipped if j not in fingers]
        if fingers:
            notes.append(f"{len(fingers)} finger joints have no bone on '{rig.name}' and are skipped.")
        if others:
            notes.append(f"Not mapped, skipped: {', '.join(others)}.")
    F = _fit_model_frame(rig, joint_bone)
    up = F[:, 1]

    # scale: leg lengths (else the spine)
    src_len, tgt_len = [], []
    for chain in LEG_CHAINS:
        if all(j in joint_bone for j in chain):
            src_len.append(_chain_length([rest[JOINT_INDEX[j]] for j in chain]))
            tgt_len.append(_chain_length([rig.bone(joint_bone[j]).head for j in chain]))
    if not src_len:
        top = next(j for j in ("head", "neck", "spine3", "spine2", "spine1") if j in joint_bone)
        src_len = [float(np.linalg.norm(rest[JOINT_INDEX[top]] - rest[0]))]
        tgt_len = [float(np.linalg.norm(rig.bone(joint_bone[top]).head - rig.bone(joint_bone["pelvis"]).head))]
        notes.append("The legs are not mapped: the root motion is scaled by the spine's length instead.")
    scale = float(np.mean(tgt_len) / np.mean(src_len))
    if not np.isfinite(scale) or scale <= 1e-9:
        raise RetargetError(f"'{rig.name}' has zero-length legs in its rest pose; cannot scale the root motion.")

    # rest frames and alignment
    align: dict[str, np.ndarray] = {}
    mapped_joints = [j for j in JOINT_NAMES if j in joint_bone]   # SMPL-X order: parents first
    for j in mapped_joints:
        bone = rig.bone(joint_bone[j])
        child = next((c for c in DIRECTION_CHILDREN.get(j, ()) if c in joint_bone), None)
        if child is None:   # a leaf on this rig: keeps its rest relation to its nearest mapped ancestor
            p = PARENTS[JOINT_INDEX[j]]
            while p >= 0 and JOINT_NAMES[p] not in joint_bone:
                p = PARENTS[p]
            align[bone.name] = align[joint_bone[JOINT_NAMES[p]]] if p >= 0 else np.eye(3)
            continue
        src_p = rest[JOINT_INDEX[child]] - rest[JOINT_INDEX[j]]
        tgt_p = rig.bone(joint_bone[child]).head - bone.head
        if np.linalg.norm(tgt_p) < 1e-9 * max(scale, 1e-9):
            raise RetargetError(f"'{bone.name}' ({j}) and '{joint_bone[child]}' ({child}) sit at the same place "
                                f"in the rest pose; map a bone further along the limb.")
        pair = next(((a, b) for a, b in ACROSS.get(j, ()) if a in joint_bone and b in joint_bone), None)
        if pair is not None:
            src_s = rest[JOINT_INDEX[pair[0]]] - rest[JOINT_INDEX[pair[1]]]
            tgt_s = rig.bone(joint_bone[pair[0]]).head - rig.bone(joint_bone[pair[1]]).head
        else:
            src_s = tgt_s = None
        if src_s is None or abs(np.dot(src_s, src_p)) > 0.9 * np.linalg.norm(src_s) * np.linalg.norm(src_p) \
                or abs(np.dot(tgt_s, tgt_p)) > 0.9 * np.linalg.norm(tgt_s) * np.linalg.norm(tgt_p):
            ps, pt = src_p / np.linalg.norm(src_p), (F.T @ tgt_p) / np.linalg.norm(tgt_p)
            axis = next(a for a in _BODY_AXES if abs(np.dot(ps, a)) < 0.8 and abs(np.dot(pt, a)) < 0.8) \
                if any(abs(np.dot(ps, a)) < 0.8 and abs(np.dot(pt, a)) < 0.8 for a in _BODY_AXES) else _BODY_AXES[0]
            src_s, tgt_s = axis, F @ axis
        align[bone.name] = (F @ _frame(src_p, src_s)) @ _frame(tgt_p, tgt_s).T

    # rest pose far from T or A: the upper arms' angle below the horizontal
    warnings = []
    for s in ("left", "right"):
        a, b = f"{s}_shoulder", f"{s}_elbow"
        if a in joint_bone and b in joint_bone:
            d = F.T @ (rig.bone(joint_bone[b]).head - rig.bone(joint_bone[a]).head)
            d /= np.linalg.norm(d)
            drop = float(np.degrees(np.arcsin(np.clip(-d[1], -1, 1))))
            if min(abs(drop), abs(drop - 45.0)) > REST_WARN_DEG or abs(d[0]) < 0.3:
                where = f"{abs(drop):.0f} deg {'below' if drop >= 0 else 'above'} the horizontal" \
                    if abs(d[0]) >= 0.3 else "not pointing sideways"
                warnings.append(f"The rest pose of '{joint_bone[a]}' is far from a T- or A-pose ({where}); it is "
                                f"matched by its direction, but check the result.")
                break
    for chain in LEG_CHAINS:
        if all(j in joint_bone for j in chain[:2]):
            d = F.T @ (rig.bone(joint_bone[chain[1]]).head - rig.bone(joint_bone[chain[0]]).head)
            if d[1] > -0.5 * np.linalg.norm(d):
                warnings.append(f"'{joint_bone[chain[0]]}' does not point down in the rest pose; it is matched "
                                f"by its direction, but check the result.")
                break

    # bones to compute and to key
    mapped_bones = set(joint_bone.values())
    needed: set[str] = set()
    stack = list(mapped_bones)
    while stack:
        n = stack.pop()
        if n in needed:
            continue
        needed.add(n)
        b = rig.bone(n)
        if b.parent:
            stack.append(b.parent)
        stack.extend(c.target for c in b.copies if c.target in rig.index)
    order = _toposort(rig, needed)
    root_bone = joint_bone["pelvis"]
    below_root = {n for n in needed if root_bone in rig.ancestors(n)}
    links = set()
    for n in mapped_bones:   # unmapped, unconstrained bones on the path between mapped bones: keyed at rest
        for a in rig.ancestors(n):
            if a == root_bone or a in mapped_bones:
                break
            if a in below_root and not rig.bone(a).constrained and not rig.bone(a).copies:
                links.add(a)
    keyed = [n for n in order if n in mapped_bones or n in links]

    # root: pivot, standing height, floor, foot rest heights (at the aligned rest pose)
    plan = RetargetPlan(rig=rig, joint_bone=dict(joint_bone), model_frame=F, scale=scale, align=align, order=order,
                        root_bone=root_bone, keyed=keyed, source_rest=rest, options=options, notes=notes,
                        warnings=warnings, pelvis_point=np.zeros(3), stand=np.zeros(3), floor=0.0, foot_bones={},
                        foot_rest_height={}, foot_rest_pos={})
    H_r = rig.bone(root_bone).head
    if "left_hip" in joint_bone and "right_hip" in joint_bone:
        mid_t = 0.5 * (rig.bone(joint_bone["left_hip"]).head + rig.bone(joint_bone["right_hip"]).head)
        mid_s = 0.5 * (rest[1] + rest[2])
        pelvis_rest = mid_t + scale * F @ (rest[0] - mid_s)
    else:
        pelvis_rest = H_r.copy()
    Q_r = align[root_bone]
    plan.pelvis_point = H_r + Q_r @ (pelvis_rest - H_r)
    foot_idx = [JOINT_INDEX[j] for j in FOOT_JOINTS]
    lowest = float(rest[foot_idx, 1].min())
    plan.stand = np.array([rest[0, 0], rest[0, 1] - lowest + FOOT_CLEARANCE, rest[0, 2]])
    plan.foot_bones = {j: joint_bone[j] for j in FOOT_JOINTS if j in joint_bone}
    eye = np.broadcast_to(np.eye(3), (1, NUM_JOINTS, 3, 3))
    W, H = _pose(plan, eye, H_r[None])
    if plan.foot_bones:
        heights = {j: float(np.dot(H[0, order.index(b)], up)) for j, b in plan.foot_bones.items()}
        plan.floor = min(heights.values()) - scale * FOOT_CLEARANCE
        plan.foot_rest_height = {j: h - plan.floor for j, h in heights.items()}
        plan.foot_rest_pos = {j: H[0, order.index(b)].copy() for j, b in plan.foot_bones.items()}
    else:
        plan.floor = float(np.dot(plan.pelvis_point, up)) - scale * (plan.stand[1])
    return plan


# --------------------------------------------------------------------------------------------- posing

def _slerp_matrices(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    qa, qb = R.matrix_to_quaternion(a), R.matrix_to_quaternion(b)
    return R.quaternion_to_matrix(R.quaternion_slerp(qa, qb, np.full(qa.shape[:-1], t)))


def _pose(plan: RetargetPlan, G: np.ndarray, root_head: np.ndarray, locals_: dict[str, np.ndarray] | None = None):
    """World (armature-space) rotations W (N, B, 3, 3) and heads H (N, B, 3) of `plan.order`.

    Mapped bones take F G F^T Q A (or, with `locals_`, their parent's rotation times the given local
    rotation: the inverse direction); the others follow their parent or copy their constraint targets.
    """
    rig, F = plan.rig, plan.model_frame
    n = G.shape[0]
    pos = {name: i for i, name in enumerate(plan.order)}
    W = np.empty((n, len(plan.order), 3, 3))
    H = np.empty((n, len(plan.order), 3))
    bone_joint = {b: JOINT_INDEX[j] for j, b in plan.joint_bone.items()}
    for i, name in enumerate(plan.order):
        b = rig.bone(name)
        A = b.rotation
        p = pos.get(b.parent) if b.parent else None
        if p is not None:
            Ap = rig.bone(b.parent).rotation
            rel = Ap.T @ A
            follow = W[:, p] @ rel if b.inherit_rotation else np.broadcast_to(A, (n, 3, 3))
        else:
            follow = np.broadcast_to(A, (n, 3, 3))
        if locals_ is not None and name in locals_:
            W[:, i] = follow @ locals_[name]
        elif locals_ is None and name in bone_joint:
            W[:, i] = (F @ G[:, bone_joint[name]] @ F.T) @ (plan.align[name] @ A)
        else:
            W[:, i] = follow
        if name == plan.root_bone:
            H[:, i] = root_head
        elif p is not None:
            H[:, i] = H[:, p] + W[:, p] @ (rig.bone(b.parent).rotation.T @ (b.head - rig.bone(b.parent).head))
        else:
            H[:, i] = b.head
        if name not in bone_joint:
            for c in b.copies:
                if c.target not in pos or c.influence <= 0:
                    continue
                k = pos[c.target]
                if c.kind in ("TRANSFORMS", "ROTATION"):
                    W[:, i] = W[:, k] if c.influence >= 1 else _slerp_matrices(W[:, i], W[:, k], c.influence)
                if c.kind in ("TRANSFORMS", "LOCATION"):
                    H[:, i] = H[:, i] + c.influence * (H[:, k] - H[:, i])
    return W, H


def _parent_frame(plan: RetargetPlan, W: np.ndarray, H: np.ndarray, name: str):
    """(N, 3, 3) rotation and (N, 3) head that bone `name` would have with an identity local pose."""
    rig = plan.rig
    b = rig.bone(name)
    pos = {n: i for i, n in enumerate(plan.order)}
    n = W.shape[0]
    if b.parent and b.parent in pos:
        p = pos[b.parent]
        Ap = rig.bone(b.parent).rotation
        rot = W[:, p] @ (Ap.T @ b.rotation) if b.inherit_rotation else np.broadcast_to(b.rotation, (n, 3, 3))
        head = H[:, p] + W[:, p] @ (Ap.T @ (b.head - rig.bone(b.parent).head))
        return rot, head
    return np.broadcast_to(b.rotation, (n, 3, 3)), np.broadcast_to(b.head, (n, 3))


@dataclasses.dataclass
class RetargetResult:
    plan: RetargetPlan
    rotations: dict[str, np.ndarray]     # keyed bone -> (N, 3, 3) local pose rotation
    root_location: np.ndarray            # (N, 3) pose `location` of plan.root_bone
    world_rotations: np.ndarray          # (N, B, 3, 3) armature space, plan.order
    heads: np.ndarray                    # (N, B, 3) armature space
    correction: np.ndarray               # (N, 3) root shift applied for foot contact (armature units)

    def channels(self) -> list[tuple[str, str, np.ndarray]]:
        """[(bone, property, (N, C) values)] in each bone's own rotation mode; the root's location last."""
        out = []
        for name in self.plan.keyed:
            mode = self.plan.rig.bone(name).rotation_mode
            out.append((name, rotation_property(mode), rotation_to_channels(self.rotations[name], mode)))
        out.append((self.plan.root_bone, "location", self.root_location))
        return out


def source_fk(take: Take, rest: np.ndarray | None = None):
    """SMPL-X world positions (N, 55, 3) and global rotations (N, 55, 3, 3) of a take (Y up, metres)."""
    rest = REST_JOINTS_YUP if rest is None else rest
    rot = R.axis_angle_to_matrix(take.joint_rotations().astype(np.float64))
    return R.forward_kinematics(rot, rest, PARENTS, take.trans.astype(np.float64))


def retarget(plan: RetargetPlan, take: Take) -> RetargetResult:
    """The take on the plan's rig: local rotations of the keyed bones and the root's location, all frames."""
    take.validate("take")
    rest = plan.source_rest
    F, s, up = plan.model_frame, plan.scale, plan.up
    pos_s, G = source_fk(take, rest)
    n = take.num_frames
    p = rest[0] + take.trans.astype(np.float64)                       # source pelvis (world)
    delta = F @ (p - plan.stand)[..., None]                           # (N, 3, 1)
    if plan.options.root_motion == "IN_PLACE":
        horizontal = delta[..., 0] - (delta[..., 0] @ up)[:, None] * up
        delta = delta - horizontal[..., None]
    elif plan.options.root_motion != "TRAVEL":
        raise RetargetError(f"Unknown root motion '{plan.options.root_motion}' (use TRAVEL or IN_PLACE).")
    pelvis_t = plan.pelvis_point + s * delta[..., 0]
    rot0 = F @ G[:, 0] @ F.T
    H_r = plan.rig.bone(plan.root_bone).head
    root_head = pelvis_t + (rot0 @ (H_r - plan.pelvis_point)[:, None])[..., 0]
    W, H = _pose(plan, G, root_head)
    correction = np.zeros((n, 3))
    if plan.options.foot_correction and plan.foot_bones:
        correction = _foot_correction(plan, pos_s, H)
        moved = [i for i, name in enumerate(plan.order)   # the root and what hangs below it (not its parents)
                 if name == plan.root_bone or plan.root_bone in plan.rig.depends_on(name)]
        H = H.copy()
        H[:, moved] += correction[:, None, :]
    pos = {name: i for i, name in enumerate(plan.order)}
    rotations = {}
    for name in plan.keyed:
        parent_rot, _ = _parent_frame(plan, W, H, name)
        rotations[name] = np.swapaxes(parent_rot, -1, -2) @ W[:, pos[name]]
    parent_rot, parent_head = _parent_frame(plan, W, H, plan.root_bone)
    offset = H[:, pos[plan.root_bone]] - parent_head
    root_location = (np.swapaxes(parent_rot, -1, -2) @ offset[..., None])[..., 0]
    return RetargetResult(plan, rotations, root_location, W, H, correction)


def _foot_correction(plan: RetargetPlan, pos_s: np.ndarray, H: np.ndarray) -> np.ndarray:
    """(N, 3) root shift so the target's support foot keeps the (scaled) source's clearance and, when
    travelling, its position; the support foot is a soft minimum of the source's clearances."""
    F, s, up = plan.model_frame, plan.scale, plan.up
    rest = plan.source_rest
    pos = {name: i for i, name in enumerate(plan.order)}
    lowest = rest[[JOINT_INDEX[j] for j in FOOT_JOINTS], 1].min()
    joints = list(plan.foot_bones)
    idx = [JOINT_INDEX[j] for j in joints]
    planted_h = rest[idx, 1] - lowest + FOOT_CLEARANCE                 # source joint height when planted
    clear_s = pos_s[:, idx, 1] - planted_h                               # (N, J) source clearance, metres
    tgt = np.stack([H[:, pos[plan.foot_bones[j]]] for j in joints], 1)  # (N, J, 3)
    clear_t = tgt @ up - plan.floor - np.array([plan.foot_rest_height[j] for j in joints])
    tau = plan.options.contact_softness
    w = np.exp(-(clear_s - clear_s.min(1, keepdims=True)) / tau)
    w /= w.sum(1, keepdims=True)
    dz = (w * (s * clear_s - clear_t)).sum(1)
    out = dz[:, None] * up
    if plan.options.root_motion == "TRAVEL":
        src = pos_s[:, idx] - (rest[idx] - rest[0] + plan.stand)          # source foot displacement from standing
        src_t = s * (src @ F.T)
        tgt_d = tgt - np.stack([plan.foot_rest_pos[j] for j in joints])[None]
        diff = src_t - tgt_d
        diff = diff - (diff @ up)[..., None] * up                          # horizontal part only
        out = out + (w[..., None] * diff).sum(1)
    return out


# --------------------------------------------------------------------------------------------- inverse

def inverse(plan: RetargetPlan, rotations: dict[str, np.ndarray], root_location: np.ndarray | None,
            fps: float = 30.0) -> Take:
    """Keyed target channels (local rotations per bone, root location) back to an SMPL-X take.

    Joints the rig lacks read as their rest pose; the foot-contact shift is not undone (its size is the
    target's proportions' effect on the feet, a few millimetres to centimetres).
    """
    n = next(iter(rotations.values())).shape[0] if rotations else len(root_location)
    F, s = plan.model_frame, plan.scale
    eye = np.broadcast_to(np.eye(3), (n, 3, 3))
    locals_ = {name: rotations.get(name, eye) for name in plan.keyed}
    rig = plan.rig
    pos = {name: i for i, name in enumerate(plan.order)}
    G_dummy = np.broadcast_to(np.eye(3), (n, NUM_JOINTS, 3, 3))
    # the root head from its location needs the parent's pose, which does not depend on the root
    W, H = _pose(plan, G_dummy, np.zeros((n, 3)), locals_)
    if root_location is not None:
        parent_rot, parent_head = _parent_frame(plan, W, H, plan.root_bone)
        root_head = parent_head + (parent_rot @ np.asarray(root_location, np.float64)[..., None])[..., 0]
    else:
        root_head = np.broadcast_to(rig.bone(plan.root_bone).head, (n, 3))
    G = np.broadcast_to(np.eye(3), (n, NUM_JOINTS, 3, 3)).copy()
    have = np.zeros(NUM_JOINTS, bool)
    for j in JOINT_NAMES:
        k = JOINT_INDEX[j]
        if j in plan.joint_bone:
            b = plan.joint_bone[j]
            QA = plan.align[b] @ rig.bone(b).rotation
            G[:, k] = F.T @ W[:, pos[b]] @ QA.T @ F
            have[k] = True
        elif PARENTS[k] >= 0:
            G[:, k] = G[:, PARENTS[k]]
    local = G.copy()
    for k in range(1, NUM_JOINTS):
        local[:, k] = np.swapaxes(G[:, PARENTS[k]], -1, -2) @ G[:, k]
    poses = R.matrix_to_axis_angle(local).reshape(n, -1)
    rot0 = F @ G[:, 0] @ F.T
    H_r = rig.bone(plan.root_bone).head
    pelvis_t = root_head - (rot0 @ (H_r - plan.pelvis_point)[:, None])[..., 0]
    p = (pelvis_t - plan.pelvis_point) @ F / s + plan.stand
    trans = p - plan.source_rest[0]
    return Take(poses=poses.astype(np.float32), trans=trans.astype(np.float32),
                expressions=np.zeros((n, 100), np.float32), fps=float(fps))


# --------------------------------------------------------------------------------------------- rotation modes

def rotation_property(mode: str) -> str:
    if mode == "QUATERNION":
        return "rotation_quaternion"
    if mode == "AXIS_ANGLE":
        return "rotation_axis_angle"
    if mode in ROTATION_MODES:
        return "rotation_euler"
    raise RetargetError(f"Unknown rotation mode '{mode}'.")


def _axis_matrix(axis: int, angle: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    m = np.zeros(angle.shape + (3, 3))
    m[..., axis, axis] = 1.0
    i, j = ((1, 2), (2, 0), (0, 1))[axis]
    m[..., i, i] = c
    m[..., j, j] = c
    m[..., i, j] = -s
    m[..., j, i] = s
    return m


def euler_to_matrix(angles: np.ndarray, order: str) -> np.ndarray:
    """(..., 3) angles (x, y, z, as Blender stores them) applied in `order` (Blender's 'XYZ' = X first)."""
    angles = np.asarray(angles, np.float64)
    m = np.broadcast_to(np.eye(3), angles.shape[:-1] + (3, 3)).copy()
    for ch in order:
        a = "XYZ".index(ch)
        m = _axis_matrix(a, angles[..., a]) @ m
    return m


def matrix_to_euler(m: np.ndarray, order: str) -> np.ndarray:
    """(..., 3, 3) -> (..., 3) Euler angles (x, y, z) for `order`; the middle angle in [-90, 90] deg."""
    i, j, k = ("XYZ".index(c) for c in order)
    e = 1.0 if (i, j, k) in ((0, 1, 2), (1, 2, 0), (2, 0, 1)) else -1.0
    out = np.empty(m.shape[:-2] + (3,))
    out[..., j] = np.arcsin(np.clip(-e * m[..., k, i], -1.0, 1.0))
    out[..., i] = np.arctan2(e * m[..., k, j], m[..., k, k])
    out[..., k] = np.arctan2(e * m[..., j, i], m[..., i, i])
    return out


def rotation_to_channels(rot: np.ndarray, mode: str) -> np.ndarray:
    """(N, 3, 3) local rotations -> (N, C) keyable values, continuous over time (no sign flips, no 360s)."""
    if mode == "QUATERNION":
        return R.make_quaternions_continuous(R.matrix_to_quaternion(rot), axis=0)
    if mode == "AXIS_ANGLE":
        q = R.make_quaternions_continuous(R.matrix_to_quaternion(rot), axis=0)
        if len(q) and q[0, 0] < 0:
            q = -q
        v = q[:, 1:]
        s = np.linalg.norm(v, axis=-1)
        angle = 2.0 * np.arctan2(s, q[:, 0])
        axis = np.where(s[:, None] > 1e-9, v / np.maximum(s, 1e-12)[:, None], np.array([0.0, 1.0, 0.0]))
        return np.concatenate([angle[:, None], axis], -1)
    euler = np.unwrap(matrix_to_euler(rot, mode), axis=0)
    if len(euler) > 1 and np.abs(np.diff(euler, axis=0)).max() > 1.0:
        euler = _compatible_euler(euler, mode)   # through gimbal lock: pick the equivalent nearest the last
    return euler


def _compatible_euler(euler: np.ndarray, order: str) -> np.ndarray:
    """Per frame, of the two equivalent Euler triples (a, b, c) and (a+pi, pi-b, c+pi), each wrapped by 2 pi,
    the one nearest the previous frame's (as Blender's make_compatible); only runs across gimbal locks."""
    i, j, k = ("XYZ".index(c) for c in order)
    out = euler.copy()
    for t in range(1, len(out)):
        prev = out[t - 1]
        a = euler[t].copy()
        b = a.copy()
        b[i] += np.pi
        b[j] = np.pi - b[j]
        b[k] += np.pi
        best = None
        for cand in (a, b):
            cand = cand + 2 * np.pi * np.round((prev - cand) / (2 * np.pi))
            if best is None or np.abs(cand - prev).sum() < np.abs(best - prev).sum():
                best = cand
        out[t] = best
    return out


def channels_to_rotation(values: np.ndarray, mode: str) -> np.ndarray:
    """(N, C) keyed values -> (N, 3, 3)."""
    values = np.asarray(values, np.float64)
    if mode == "QUATERNION":
        return R.quaternion_to_matrix(values)
    if mode == "AXIS_ANGLE":
        axis = values[:, 1:]
        axis = axis / np.maximum(np.linalg.norm(axis, axis=-1, keepdims=True), 1e-12)
        return R.axis_angle_to_matrix(axis * values[:, :1])
    return euler_to_matrix(values, mode)


def channel_count(mode: str) -> int:
    return 3 if mode not in ("QUATERNION", "AXIS_ANGLE") else 4
