"""SMPL-X skeleton: the 55 joints, their parents, the neutral rest pose and the body-part split.

Rest joints (neutral SMPL-X, betas = 0, Y up, metres) come from huggingface/lerobot (Apache-2.0,
"Copyright 2025 The HuggingFace Inc. team"), a standalone SMPL forward-kinematics module
(`_SKELETON_J`, `_SKELETON_PARENTS`) that vendors them from NVIDIA GR00T-WholeBodyControl; they are
J_regressor @ v_template of the SMPL-X model (MPI licence). When the user supplies their own SMPL-X model
file, `rest_joints_from_model` computes exact joints instead.
Joint order = BEAT2 `poses` order = the public SMPL-X joint order; eye names follow the SMPL-X Blender add-on.
"""
from __future__ import annotations

import numpy as np

JOINT_NAMES: tuple[str, ...] = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "jaw",
    "left_eye_smplhf",
    "right_eye_smplhf",
    "left_index1",
    "left_index2",
    "left_index3",
    "left_middle1",
    "left_middle2",
    "left_middle3",
    "left_pinky1",
    "left_pinky2",
    "left_pinky3",
    "left_ring1",
    "left_ring2",
    "left_ring3",
    "left_thumb1",
    "left_thumb2",
    "left_thumb3",
    "right_index1",
    "right_index2",
    "right_index3",
    "right_middle1",
    "right_middle2",
    "right_middle3",
    "right_pinky1",
    "right_pinky2",
    "right_pinky3",
    "right_ring1",
    "right_ring2",
    "right_ring3",
    "right_thumb1",
    "right_thumb2",
    "right_thumb3",
)
NUM_JOINTS = len(JOINT_NAMES)  # 55

PARENTS: tuple[int, ...] = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15, 20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38, 21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53)

# (55, 3) rest joint positions, Y up, metres.
REST_JOINTS_YUP = np.array([
    [0.00312326057, -0.351407468, 0.0120365508],
    [0.0613126531, -0.444170952, -0.0139646353],
    [-0.0601442158, -0.455315471, -0.0092138201],
    [0.000360562059, -0.241516858, -0.0155810807],
    [0.11600811, -0.822924376, -0.0233606994],
    [-0.104354173, -0.817695558, -0.0260377023],
    [0.00980826095, -0.109663606, -0.0215210654],
    [0.0725546628, -1.22598386, -0.055236645],
    [-0.0889373645, -1.22842336, -0.0462299734],
    [-0.00152215292, -0.0574284494, 0.00692583201],
    [0.119811967, -1.2839812, 0.0629796833],
    [-0.127749771, -1.28675175, 0.0728190243],
    [-0.0136866113, 0.107738607, -0.0246895105],
    [0.0448420048, 0.0275152735, -0.000294650905],
    [-0.0492170788, 0.0269102231, -0.00647406979],
    [0.0110968733, 0.268190414, -0.00395224523],
    [0.164081037, 0.0852432996, -0.0157555901],
    [-0.151794821, 0.0804346725, -0.0191425979],
    [0.41820389, 0.0130927814, -0.0582144447],
    [-0.422944367, 0.0439421907, -0.0456096828],
    [0.670190632, 0.0363140106, -0.060686525],
    [-0.672211826, 0.0394096449, -0.0609348677],
    [-0.00466776267, 0.267670691, -0.00959140249],
    [0.0315992832, 0.310832113, 0.0621951744],
    [-0.0315998755, 0.310831934, 0.0621943437],
    [0.772092462, 0.02762587, -0.041335389],
    [0.804040849, 0.0298441313, -0.0383249447],
    [0.82658577, 0.0274940506, -0.0382703729],
    [0.779588163, 0.0299863424, -0.0646673366],
    [0.81019938, 0.0307937432, -0.0686899945],
    [0.833714783, 0.028784994, -0.07280422],
    [0.754237473, 0.0217746813, -0.104436137],
    [0.769708216, 0.0206431001, -0.116435573],
    [0.785241723, 0.0189785324, -0.127652526],
    [0.767634928, 0.0270463768, -0.0880311728],
    [0.795681715, 0.0285318363, -0.0932971463],
    [0.818503499, 0.027073551, -0.100391433],
    [0.710826397, 0.0183372851, -0.0350756459],
    [0.727842093, 0.0193130989, -0.0100975055],
    [0.748365223, 0.0141535439, 0.005425571],
    [-0.772092402, 0.0276267808, -0.0413349308],
    [-0.804040551, 0.0298446734, -0.0383240953],
    [-0.826585472, 0.0274952874, -0.0382686853],
    [-0.779588223, 0.0299876984, -0.0646686926],
    [-0.81019938, 0.0307951719, -0.0686915368],
    [-0.833714902, 0.0287858527, -0.0728055611],
    [-0.754238546, 0.0217752066, -0.104437806],
    [-0.769708991, 0.0206431337, -0.116436549],
    [-0.785242379, 0.0189783983, -0.127652839],
    [-0.767635286, 0.027047703, -0.0880335942],
    [-0.795681715, 0.0285329074, -0.0932995006],
    [-0.818503737, 0.0270741172, -0.100392245],
    [-0.710824966, 0.0183352213, -0.0350735225],
    [-0.727840304, 0.0193113182, -0.0100959428],
    [-0.748365939, 0.0141541166, 0.00542560499],
], dtype=np.float64)

JOINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(JOINT_NAMES)}

# Slices of BEAT2's `poses` (N, 165) axis-angle vector.
POSE_ROOT = slice(0, 3)
POSE_BODY = slice(3, 66)     # joints 1..21
POSE_JAW = slice(66, 69)
POSE_EYES = slice(69, 75)
POSE_LEFT_HAND = slice(75, 120)
POSE_RIGHT_HAND = slice(120, 165)

NUM_EXPRESSIONS = 100
NUM_BETAS = 300
JAW = JOINT_INDEX["jaw"]
EYES = (JOINT_INDEX["left_eye_smplhf"], JOINT_INDEX["right_eye_smplhf"])
# Foot-contact joints of the method: left/right ankle and foot.
# The stance: pelvis, hips, knees, ankles, feet (parents come first). Root motion runs its forward kinematics
# on these alone; generation smooths them more than the gesture (core.generation.post.smooth_body).
STANCE_JOINTS = (0, 1, 2, 4, 5, 7, 8, 10, 11)
FOOT_CONTACT_JOINTS = (7, 8, 10, 11)
FOOT_CONTACT_SPEED = 0.01  # metres per frame below which a foot joint counts as planted

# Body parts of docs/METHOD.md §1; each has its own tokenizer.
UPPER_JOINTS = (3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21)
HAND_JOINTS = tuple(range(25, 55))
LOWER_JOINTS = (0, 1, 2, 4, 5, 7, 8, 10, 11)
PART_JOINTS: dict[str, tuple[int, ...]] = {
    "face": (JAW,),
    "upper": UPPER_JOINTS,
    "hands": HAND_JOINTS,
    "lower": LOWER_JOINTS,
}
# Per-frame feature size of each part in the network representation (rot6d + extras).
PART_DIMS = {"face": 6 + NUM_EXPRESSIONS, "upper": 6 * 13, "hands": 6 * 30, "lower": 6 * 9 + 3 + 4}
PARTS = ("face", "upper", "hands", "lower")


def _mirror_index() -> tuple[int, ...]:
    out = []
    for name in JOINT_NAMES:
        if name.startswith("left_"):
            out.append(JOINT_INDEX["right_" + name[5:]])
        elif name.startswith("right_"):
            out.append(JOINT_INDEX["left_" + name[6:]])
        else:
            out.append(JOINT_INDEX[name])
    return tuple(out)


# MIRROR_INDEX[j] is the joint that j becomes under a left/right mirror (x -> -x in SMPL-X's frame).
MIRROR_INDEX: tuple[int, ...] = _mirror_index()


def children(joint: int) -> list[int]:
    return [j for j, p in enumerate(PARENTS) if p == joint]


def rest_joints_from_model(model_npz_path: str, betas: np.ndarray | None = None) -> np.ndarray:
    """Exact rest joints (55, 3) from the user's own SMPL-X model file (J_regressor @ shaped template)."""
    data = np.load(model_npz_path, allow_pickle=False)
    for key in ("v_template", "J_regressor", "shapedirs"):
        if key not in data.files:
            raise ValueError(f"{model_npz_path} is not an SMPL-X model file: it has no '{key}' array")
    verts = np.asarray(data["v_template"], np.float64)
    if betas is not None:
        shapedirs = np.asarray(data["shapedirs"], np.float64)
        n = min(len(betas), shapedirs.shape[2])
        verts = verts + shapedirs[:, :, :n] @ np.asarray(betas[:n], np.float64)
    joints = np.asarray(data["J_regressor"], np.float64) @ verts
    return joints[:NUM_JOINTS]
