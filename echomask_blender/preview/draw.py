"""The fast preview's pictures: the posed skeleton drawn with numpy into small frames (no bpy, no GL).

One frame (640x360) has four views of the same pose, each an orthographic projection:

    +------------+--------+--------------+
    |            |        |  face front  |
    | body front |  body  +--------------+
    |            |  side  |  face side   |
    +------------+--------+--------------+

The body views follow the pelvis sideways (floor ticks show the travel) and keep one height scale for the
take; the face views follow the head, ten times larger, so the jaw opening and head turns read clearly:
the upper lip moves with the head bone, the lower lip and chin with the jaw bone. Left limbs are orange,
right limbs blue, the jaw and lips red. A bar along the bottom shows the time in the take.

Pixels are float RGBA in linear light, row 0 at the bottom (what Blender's render result takes).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ...core.motion import skeleton

SIZE = (640, 360)
# (x, y, width, height) of each view, y from the bottom
PANELS = {
    "body_front": (0, 0, 240, 360),
    "body_side": (240, 0, 160, 360),
    "face_front": (400, 180, 240, 180),
    "face_side": (400, 0, 240, 180),
}
FACE_VIEW_HEIGHT = 0.30   # metres of the face views' height (a head is about 0.23 m)
BODY_MARGIN = 0.08        # share of the body views left above and below the figure


def _linear(rgb) -> np.ndarray:
    """sRGB 0-255 -> linear float (the render result is scene-linear; 'Standard' shows it back as sRGB)."""
    c = np.asarray(rgb, np.float32) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


BACKGROUND = _linear((44, 46, 52))
PANEL_EDGE = _linear((80, 84, 92))
FLOOR = _linear((110, 114, 122))
CENTRE = _linear((225, 225, 220))
LEFT = _linear((240, 150, 60))
RIGHT = _linear((80, 165, 240))
MOUTH = _linear((240, 70, 85))
EYES = _linear((255, 255, 255))
TIME_BAR = _linear((150, 200, 120))

# Face landmarks, in SMPL-X model axes (x left, y up, z forward; metres) relative to their bone's rest head.
HEAD_CENTRE = (0.0, 0.045, 0.02)
HEAD_RADIUS = 0.105
NOSE = (0.0, 0.04, 0.125)
# each lip: its corners (the front view's line) and its middle from back to front (the side view's line)
UPPER_LIP = ((0.025, -0.005, 0.095), (-0.025, -0.005, 0.095), (0.0, -0.005, 0.08), (0.0, -0.005, 0.107))  # head
LOWER_LIP = ((0.022, -0.015, 0.09), (-0.022, -0.015, 0.09), (0.0, -0.015, 0.075), (0.0, -0.015, 0.1))   # jaw
CHIN = (0.0, -0.065, 0.085)                                   # on the jaw bone

FINE_JOINTS = ("index", "middle", "ring", "pinky", "thumb")


@dataclasses.dataclass
class PosedFrame:
    """What one frame shows, in world coordinates (Blender axes): NaN rows for joints the rig lacks."""

    joints: np.ndarray          # (55, 3) SMPL-X joint positions (bone heads)
    head_centre: np.ndarray     # (3,)
    nose: np.ndarray            # (3,)
    upper_lip: np.ndarray       # (4, 3) left corner, right corner, middle back, middle front
    lower_lip: np.ndarray       # (4, 3)
    chin: np.ndarray            # (3,)


@dataclasses.dataclass
class Views:
    """The take's fixed projection axes (unit world vectors) and scales."""

    left: np.ndarray            # the character's left at rest
    up: np.ndarray
    forward: np.ndarray         # where the character faces at rest
    body_low: float             # lowest and highest height (along `up`) reached in the take
    body_high: float
    floor: float                # the feet's lowest height
    scale: float = 1.0          # rig units per metre (face landmark offsets are in metres)

    def project(self, view: str, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(screen x, screen y, depth towards the viewer) of world points for 'front' or 'side'.

        Front: the viewer faces the character (its left is on screen right). Side: the viewer stands at
        the character's right, who faces screen right.
        """
        height = points @ self.up
        if view == "front":
            return points @ self.left, height, points @ self.forward
        return points @ self.forward, height, -(points @ self.left)


def _segments() -> list[tuple[int, int]]:
    return [(int(p), j) for j, p in enumerate(skeleton.PARENTS) if p >= 0]


SEGMENTS = _segments()
_SEGMENT_CHILD_NAMES = [skeleton.JOINT_NAMES[j] for _, j in SEGMENTS]
SEGMENT_COLOURS = np.array([LEFT if n.startswith("left") else RIGHT if n.startswith("right") else CENTRE
                            for n in _SEGMENT_CHILD_NAMES], np.float32)
SEGMENT_RADII = np.array([1 if any(f in n for f in FINE_JOINTS) or "eye" in n or n == "jaw" else 2
                          for n in _SEGMENT_CHILD_NAMES], np.int32)
# The eye and jaw "bones" from the head joint are replaced by the face landmarks in the drawing.
_DRAWN = np.array(["eye" not in n and n != "jaw" for n in _SEGMENT_CHILD_NAMES])
_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 33)), np.sin(np.linspace(0, 2 * np.pi, 33))], -1)


def _disc_offsets(radius: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(-radius, radius + 1)
    dx, dy = np.meshgrid(r, r)
    keep = dx ** 2 + dy ** 2 <= radius ** 2 + radius
    return dx[keep], dy[keep]


_KERNELS = {r: _disc_offsets(r) for r in (0, 1, 2, 3)}


class Canvas:
    """A frame being drawn: an (H, W, 4) float image, row 0 at the bottom."""

    def __init__(self, template: np.ndarray):
        self.pixels = template.copy()

    def lines(self, panel, a: np.ndarray, b: np.ndarray, colours: np.ndarray, radii: np.ndarray) -> None:
        """Segments a[i] -> b[i] (panel pixel coordinates, (n, 2)), drawn in order (later ones on top).

        A line is stepped one pixel at a time along its longer axis and widened across it (2r + 1 pixels):
        a quarter of the writes of stamping a disc at every step, which is most of a frame's cost.
        """
        ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)
        a, b, colours, radii = a[ok], b[ok], colours[ok], radii[ok]
        if not len(a):
            return
        _, _, w, h = panel
        steps = np.ceil(np.abs(b - a).max(1)).astype(np.int64) + 1
        steps = np.minimum(steps, 4 * (w + h))     # a wild point must not cost a huge line
        seg = np.repeat(np.arange(len(a)), steps)
        start = np.cumsum(steps) - steps
        t = (np.arange(len(seg)) - start[seg]) / np.maximum(steps[seg] - 1, 1)
        points = a[seg] + t[:, None] * (b[seg] - a[seg])
        across_y = (np.abs(b[:, 0] - a[:, 0]) >= np.abs(b[:, 1] - a[:, 1]))[seg]   # mostly horizontal
        r = radii[seg]
        width = int(r.max())
        offsets = np.arange(-width, width + 1)
        keep = np.abs(offsets)[None, :] <= r[:, None]                               # (points, 2w + 1)
        xs = np.rint(points[:, 0])[:, None] + np.where(across_y[:, None], 0, offsets[None])
        ys = np.rint(points[:, 1])[:, None] + np.where(across_y[:, None], offsets[None], 0)
        self._put(panel, xs[keep], ys[keep], np.broadcast_to(colours[seg][:, None], keep.shape + (3,))[keep])

    def dots(self, panel, points: np.ndarray, colour, radius: int) -> None:
        points = points[np.isfinite(points).all(1)]
        dx, dy = _KERNELS[radius]
        xs = (np.rint(points[:, 0])[:, None] + dx).ravel()
        ys = (np.rint(points[:, 1])[:, None] + dy).ravel()
        self._put(panel, xs, ys, np.broadcast_to(colour, (len(xs), 3)))

    def _put(self, panel, xs, ys, rgb) -> None:
        x0, y0, w, h = panel
        xs, ys = xs.astype(np.int64), ys.astype(np.int64)
        inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
        self.pixels[ys[inside] + y0, xs[inside] + x0, :3] = rgb[inside]


def background() -> np.ndarray:
    """The empty frame: panels with their edges."""
    width, height = SIZE
    image = np.empty((height, width, 4), np.float32)
    image[..., :3] = BACKGROUND
    image[..., 3] = 1.0
    for x, y, w, h in PANELS.values():
        image[y:y + h, x, :3] = PANEL_EDGE
        image[y, x:x + w, :3] = PANEL_EDGE
    return image


class Drawer:
    """Draws `PosedFrame`s of one take with the take's fixed `Views`."""

    def __init__(self, views: Views):
        self.views = views
        self.template = background()
        span = max(views.body_high - views.body_low, 0.5 * views.scale)
        body_h = PANELS["body_front"][3]
        self.body_scale = body_h * (1 - 2 * BODY_MARGIN) / span                  # pixels per rig unit
        self.face_scale = PANELS["face_front"][3] / (FACE_VIEW_HEIGHT * views.scale)

    def _body_xy(self, panel, view, points, centre_x):
        x, y, depth = self.views.project(view, points)
        _, _, w, h = panel
        px = (x - centre_x) * self.body_scale + w / 2
        py = (y - self.views.body_low) * self.body_scale + h * BODY_MARGIN
        return np.stack([px, py], -1), depth

    def _face_xy(self, panel, view, points, centre):
        x, y, depth = self.views.project(view, points)
        cx, cy, _ = self.views.project(view, centre[None])
        _, _, w, h = panel
        return np.stack([(x - cx) * self.face_scale + w / 2, (y - cy) * self.face_scale + h / 2], -1), depth

    def _skeleton(self, canvas, panel, xy, depth, fine_radius_boost=0):
        a, b = xy[[p for p, _ in SEGMENTS]][_DRAWN], xy[[j for _, j in SEGMENTS]][_DRAWN]
        seg_depth = (depth[[p for p, _ in SEGMENTS]] + depth[[j for _, j in SEGMENTS]])[_DRAWN]
        order = np.argsort(seg_depth, kind="stable")                 # far bones first, near ones on top
        radii = np.minimum(SEGMENT_RADII[_DRAWN] + fine_radius_boost, 3)
        canvas.lines(panel, a[order], b[order], SEGMENT_COLOURS[_DRAWN][order], radii[order])

    def _face(self, canvas, panel, to_xy, pose: PosedFrame, head_radius_px, view: str):
        """Head ring, nose, lips and eyes; the jaw line from the side, the chin as a dot from the front."""
        joint = skeleton.JOINT_INDEX
        points = np.concatenate([pose.joints[[joint["head"], joint["jaw"]]], pose.nose[None], pose.upper_lip,
                                 pose.lower_lip, pose.chin[None], pose.head_centre[None],
                                 pose.joints[[joint["left_eye_smplhf"], joint["right_eye_smplhf"]]]])
        xy, _ = to_xy(points)
        head, jaw, nose, upper, lower, chin, centre, eyes = xy[0], xy[1], xy[2], xy[3:7], xy[7:11], xy[11], xy[12], xy[13:]
        ring = centre + head_radius_px * _CIRCLE
        a = [ring[:-1], head[None], upper[[0, 2]], lower[[0, 2]]]
        b = [ring[1:], nose[None], upper[[1, 3]], lower[[1, 3]]]
        colours = [np.broadcast_to(CENTRE, (33, 3)), np.broadcast_to(MOUTH, (4, 3))]
        radii = [np.ones(33, np.int32), np.full(4, 2, np.int32)]
        if view == "side":
            a.append(jaw[None])
            b.append(chin[None])
            colours.append(MOUTH[None])
            radii.append(np.full(1, 2, np.int32))
        canvas.lines(panel, np.concatenate(a), np.concatenate(b), np.concatenate(colours), np.concatenate(radii))
        canvas.dots(panel, eyes, EYES, 2)
        if view == "front":
            canvas.dots(panel, chin[None], MOUTH, 2)

    def _floor(self, canvas, panel, view, centre_x):
        """The floor line, with ticks every half metre that slide as the character travels."""
        _, _, w, h = panel
        y = (self.views.floor - self.views.body_low) * self.body_scale + h * BODY_MARGIN
        canvas.lines(panel, np.array([[0.0, y]]), np.array([[w - 1.0, y]]), FLOOR[None], np.zeros(1, np.int32))
        step = 0.5 * self.views.scale
        first = np.floor((centre_x - w / 2 / self.body_scale) / step) * step
        ticks = (first + step * np.arange(int(w / self.body_scale / step) + 2) - centre_x) * self.body_scale + w / 2
        a = np.stack([ticks, np.full_like(ticks, y)], -1)
        canvas.lines(panel, a, a - [0.0, 6.0], np.broadcast_to(FLOOR, (len(a), 3)).copy(),
                     np.zeros(len(a), np.int32))

    def draw(self, pose: PosedFrame, time_fraction: float | None = None) -> np.ndarray:
        """The frame of one pose: (H, W, 4) float32, linear RGBA, row 0 at the bottom."""
        canvas = Canvas(self.template)
        pelvis = pose.joints[0]
        for view in ("front", "side"):
            panel = PANELS[f"body_{view}"]
            centre_x = self.views.project(view, pelvis[None])[0][0]
            if not np.isfinite(centre_x):
                centre_x = 0.0
            self._floor(canvas, panel, view, centre_x)
            xy, depth = self._body_xy(panel, view, pose.joints, centre_x)
            self._skeleton(canvas, panel, xy, depth)
            head_px = HEAD_RADIUS * self.views.scale * self.body_scale
            self._face(canvas, panel, lambda p, v=view, c=centre_x, pn=panel: self._body_xy(pn, v, p, c), pose,
                       head_px, view)

            panel = PANELS[f"face_{view}"]
            xy, depth = self._face_xy(panel, view, pose.joints, pose.head_centre)
            self._skeleton(canvas, panel, xy, depth, fine_radius_boost=1)
            head_px = HEAD_RADIUS * self.views.scale * self.face_scale
            self._face(canvas, panel, lambda p, v=view, pn=panel: self._face_xy(pn, v, p, pose.head_centre), pose,
                       head_px, view)
        if time_fraction is not None:
            width = int(round(np.clip(time_fraction, 0.0, 1.0) * (SIZE[0] - 1)))
            canvas.pixels[0:3, :width + 1, :3] = TIME_BAR
        return canvas.pixels


def views_for_take(joints: np.ndarray, left, up, forward, scale: float = 1.0) -> Views:
    """Projection axes from the rig's rest orientation and height range from every sampled pose (n, 55, 3)."""
    up = np.asarray(up, np.float64)
    heights = joints @ (up / np.linalg.norm(up))
    finite = heights[np.isfinite(heights)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.8 * scale)
    top = high + 0.12 * scale                   # the head's ring reaches above the head joint
    feet = [skeleton.JOINT_INDEX[n] for n in ("left_foot", "right_foot", "left_ankle", "right_ankle")]
    foot_heights = heights[:, feet]
    floor = float(np.nanmin(foot_heights)) if np.isfinite(foot_heights).any() else low
    unit = [np.asarray(v, np.float64) / np.linalg.norm(v) for v in (left, up, forward)]
    return Views(left=unit[0], up=unit[1], forward=unit[2], body_low=min(low, floor), body_high=top,
                 floor=floor, scale=scale)
