"""Whole-body primitives with the feet planted (or one foot kicking): squat, lunge, sit,
bow, touch the toes, side stretch, kick, stand still.

Planted feet are solved by leg IK from pelvis-relative ankle targets: lowering the
pelvis is raising the targets, and the compose step puts the lowest foot on the floor.
"""

from __future__ import annotations

import numpy as np

from motion_env.procedural.base import ANKLE_REST, SIDES, Primitive, blend, hang_arms, rest_wrist, settle, stand_legs
from motion_env.procedural.body import LEFT_STANCE, RIGHT_STANCE
from motion_env.procedural.captions import number, times
from motion_env.procedural.timing import keyframes


def _feet(style, drop, back=None):
    """Ankle targets for a pelvis lowered by ``drop`` and moved back by ``back`` (both (T,))."""
    back = np.zeros_like(drop) if back is None else back
    out = {}
    for side in SIDES:
        rest = ANKLE_REST[side] + [np.sign(ANKLE_REST[side][0]) * style.stance_width, 0.0, 0.0]
        out[side] = rest + np.stack([np.zeros_like(drop), drop, back], -1)
    return out


def _reps(t, count, start, period, shape):
    """Sum of ``count`` copies of a keyframed shape ``(times, values)`` scaled to ``period``."""
    total = np.zeros_like(t)
    for i in range(count):
        t0 = start + i * period
        total += keyframes(t, [t0 + f * period for f in shape[0]], shape[1])
    return total


class Squat(Primitive):
    name = "squat"

    def sample(self, rng):
        return {"count": int(rng.integers(1, 5)), "depth": float(rng.uniform(0.3, 0.45))}

    def duration(self, p, style):
        return 0.4 + p["count"] * 1.7 * style.tempo + 0.3

    def animate(self, body, p, style):
        t = body.t
        down = _reps(t, p["count"], 0.3, 1.7 * style.tempo, ([0.0, 0.45, 0.6, 1.0], [0.0, 1.0, 1.0, 0.0]))
        settle(body, style)
        body.pelvis_tilt(forward=0.45 * down)
        body.spine_bend(forward=0.15 * down)
        feet = _feet(style, drop=p["depth"] * down, back=0.16 * down)
        stand_legs(body, style, left=feet["left"], right=feet["right"])
        arms = {s: blend(down, rest_wrist(s, style), np.array([np.sign(rest_wrist(s, style)[0]) * 0.17, 0.1, 0.5]))
                for s in SIDES}  # fmt: skip
        hang_arms(body, style, left=arms["left"], right=arms["right"])

    def phrases(self, p):
        c, n = times(p["count"]), number(p["count"])
        plural = "squat" if p["count"] == 1 else "squats"
        return [f"squats down {c}", f"does {n} {plural}", f"bends the knees and squats {c}",
                f"squats down and stands back up {c}"]  # fmt: skip


class Lunge(Primitive):
    name = "lunge"

    def sample(self, rng):
        return {"side": str(rng.choice(["left", "right"])), "count": int(rng.integers(1, 3))}

    def duration(self, p, style):
        return 0.3 + p["count"] * 2.6 * style.tempo + 0.2

    def animate(self, body, p, style):
        t = body.t
        front, rear = p["side"], ("right" if p["side"] == "left" else "left")
        period = 2.6 * style.tempo
        phases = [0.0, 0.25, 0.45, 0.6, 0.78, 1.0]
        out = _reps(t, p["count"], 0.3, period, (phases, [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]))  # feet apart
        low = _reps(t, p["count"], 0.3, period, (phases, [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]))  # pelvis down
        lift = np.sin(np.pi * np.clip(out, 0, 1))  # the stepping foot clears the floor mid-step
        stride = 0.75 * style.amplitude
        settle(body, style)
        body.spine_bend(forward=0.05 * low)
        feet = _feet(style, drop=0.1 * out + 0.24 * low)  # a long stride needs the pelvis lower to reach
        zero = np.zeros_like(t)
        feet[front] = feet[front] + np.stack([zero, 0.1 * lift, stride / 2 * out], -1)
        feet[rear] = feet[rear] + np.stack([zero, zero, -stride / 2 * out], -1)
        stand_legs(body, style, left=feet["left"], right=feet["right"])
        body.stance[lift > 0.01] = RIGHT_STANCE if rear == "right" else LEFT_STANCE
        hang_arms(body, style)

    def phrases(self, p):
        s, c = p["side"], times(p["count"])
        return [f"lunges forward with the {s} leg {c}", f"does a lunge with the {s} leg",
                f"steps forward into a lunge on the {s} leg", f"lunges with the {s} foot forward {c}"]  # fmt: skip


class SitStand(Primitive):
    name = "sit_stand"

    def sample(self, rng):
        return {"hold": float(rng.uniform(0.5, 2.0))}

    def duration(self, p, style):
        return 3.4 * style.tempo + p["hold"]

    def animate(self, body, p, style):
        t = body.t
        tempo = style.tempo
        keys = [0.2, 0.2 + 1.5 * tempo, 0.2 + 1.5 * tempo + p["hold"], 0.2 + 3.1 * tempo + p["hold"]]
        seated = keyframes(t, keys, [0.0, 1.0, 1.0, 0.0])
        # The trunk leans forward while the weight moves over the feet, upright once seated.
        transfer = np.clip(seated * (1 - seated) * 4, 0, 1)
        settle(body, style)
        body.pelvis_tilt(forward=0.35 * transfer + 0.1 * seated)
        body.spine_bend(forward=0.35 * transfer)
        feet = _feet(style, drop=0.43 * seated, back=0.36 * seated)
        stand_legs(body, style, left=feet["left"], right=feet["right"])
        arms = {s: blend(seated, rest_wrist(s, style), np.array([np.sign(rest_wrist(s, style)[0]) * 0.16, -0.3, 0.38]))
                for s in SIDES}  # fmt: skip
        hang_arms(body, style, left=arms["left"], right=arms["right"])

    def phrases(self, p):
        return ["sits down and stands back up", "sits down then gets up", "sits on a chair and then stands up",
                "takes a seat and then stands up".replace("takes a seat", "sits down for a while")]  # fmt: skip


class Bow(Primitive):
    name = "bow"

    def sample(self, rng):
        return {"depth": float(rng.uniform(0.5, 0.9))}

    def duration(self, p, style):
        return 2.4 * style.tempo

    def animate(self, body, p, style):
        t = body.t
        bend = keyframes(t, [0.2, 0.9 * style.tempo, 1.4 * style.tempo, 2.2 * style.tempo], [0.0, 1.0, 1.0, 0.0])
        settle(body, style)
        body.pelvis_tilt(forward=0.45 * p["depth"] * bend)
        body.spine_bend(forward=0.6 * p["depth"] * bend)
        body.head_turn(down=0.2 * bend)
        feet = _feet(style, drop=0.0 * bend, back=0.08 * bend)
        stand_legs(body, style, left=feet["left"], right=feet["right"])
        for side in SIDES:  # arms hang straight down while the trunk bends
            body.reach(side, rest_wrist(side, style), np.array([np.sign(rest_wrist(side, style)[0]) * 0.4, 0, -1.0]),
                       frame="chest_upright")  # fmt: skip

    def phrases(self, p):
        return ["bows", "bows forward", "takes a bow", "bends forward in a bow"]


class TouchToes(Primitive):
    name = "touch_toes"

    def sample(self, rng):
        return {"count": int(rng.integers(1, 3))}

    def duration(self, p, style):
        return 0.3 + p["count"] * 2.4 * style.tempo + 0.2

    def animate(self, body, p, style):
        t = body.t
        bend = _reps(t, p["count"], 0.3, 2.4 * style.tempo, ([0.0, 0.4, 0.6, 1.0], [0.0, 1.0, 1.0, 0.0]))
        settle(body, style)
        body.pelvis_tilt(forward=1.0 * bend)
        body.spine_bend(forward=0.55 * bend)
        body.head_turn(down=0.2 * bend)
        feet = _feet(style, drop=0.02 * bend, back=0.18 * bend)
        stand_legs(body, style, left=feet["left"], right=feet["right"])
        # Hands go straight down toward the toes: targets relative to the pelvis, not tilting with it.
        for side in SIDES:
            rest = rest_wrist(side, style) + [0.0, 0.33, 0.0]  # chest sits ~0.33 m above the pelvis
            toe = np.array([np.sign(rest[0]) * 0.12, -0.8, 0.3])
            body.reach(side, blend(bend, rest, toe), np.array([np.sign(rest[0]) * 0.3, 0.0, -1.0]), frame="heading")

    def phrases(self, p):
        c = times(p["count"])
        return ["bends down and touches the toes", f"touches the toes {c}", f"bends over to touch the toes {c}",
                "reaches down to the toes"]  # fmt: skip


class SideStretch(Primitive):
    name = "side_stretch"

    def sample(self, rng):
        return {"side": str(rng.choice(["left", "right"])), "count": int(rng.integers(1, 3))}

    def duration(self, p, style):
        return 0.3 + p["count"] * 2.4 * style.tempo + 0.2

    def animate(self, body, p, style):
        t = body.t
        lean = _reps(t, p["count"], 0.3, 2.4 * style.tempo, ([0.0, 0.4, 0.65, 1.0], [0.0, 1.0, 1.0, 0.0]))
        s = 1.0 if p["side"] == "left" else -1.0
        settle(body, style)
        body.spine_bend(left=s * 0.5 * style.amplitude * lean)
        body.pelvis_tilt(left=s * 0.08 * lean)
        stand_legs(body, style)
        over, down = ("right", "left") if p["side"] == "left" else ("left", "right")
        over_pose = np.array([-s * 0.05, 0.62, 0.05])  # the far arm arches over the head
        down_pose = rest_wrist(down, style) + [0.0, -0.1, 0.0]
        hang_arms(body, style, **{over: blend(lean, rest_wrist(over, style), over_pose),
                                  down: blend(lean, rest_wrist(down, style), down_pose)},
                  **{f"{over}_pole": np.array([-s, 0.2, -0.6])})  # fmt: skip

    def phrases(self, p):
        s = p["side"]
        other = "right" if s == "left" else "left"
        return [f"stretches to the {s} side", f"leans to the {s} with the {other} arm over the head",
                f"bends sideways to the {s}", f"does a side stretch to the {s}"]  # fmt: skip


class Kick(Primitive):
    name = "kick"

    def sample(self, rng):
        return {"side": str(rng.choice(["left", "right", "right"])), "count": int(rng.integers(1, 4)),
                "height": float(rng.uniform(0.8, 1.3))}  # fmt: skip

    def duration(self, p, style):
        return 0.4 + p["count"] * 1.25 * style.tempo + 0.3

    def animate(self, body, p, style):
        t = body.t
        kicker, support = p["side"], ("right" if p["side"] == "left" else "left")
        shape = ([0.0, 0.3, 0.45, 0.62, 1.0], [0.0, 1.0, 1.0, 1.0, 0.0])
        chamber = _reps(t, p["count"], 0.4, 1.25 * style.tempo, shape)
        snap = _reps(t, p["count"], 0.4, 1.25 * style.tempo, ([0.0, 0.3, 0.42, 0.55, 0.75], [0, 0, 1, 0, 0]))
        settle(body, style)
        body.pelvis_tilt(forward=-0.12 * chamber)
        body.hip_flex(kicker, p["height"] * style.amplitude * chamber)
        body.knee_flex(kicker, 1.5 * chamber**2 * (1 - snap) + 0.05)  # the thigh lifts first: no toe drag
        body.ankle_flex(kicker, -0.4 * snap)
        body.knee_flex(support, 0.12 * chamber + 0.05)
        body.stance[chamber > 0] = RIGHT_STANCE if support == "right" else LEFT_STANCE
        guard = {s: blend(chamber, rest_wrist(s, style), rest_wrist(s, style) + [0.0, 0.25, 0.2]) for s in SIDES}
        hang_arms(body, style, left=guard["left"], right=guard["right"])

    def phrases(self, p):
        s, c = p["side"], times(p["count"])
        return [f"kicks with the {s} leg {c}", f"kicks forward with the {s} foot {c}",
                f"does a {s} kick {c}".replace("a left kick twice", "two left kicks").replace(
                    "a right kick twice", "two right kicks"), f"kicks {c} with the {s} foot"]  # fmt: skip


class StandStill(Primitive):
    name = "stand"

    def sample(self, rng):
        return {"seconds": float(rng.uniform(1.5, 3.0))}

    def duration(self, p, style):
        return p["seconds"]

    def animate(self, body, p, style):
        settle(body, style)
        stand_legs(body, style)
        hang_arms(body, style)

    def phrases(self, p):
        return ["stands still", "stands in place", "stands and waits", "remains still"]


PRIMITIVES = [Squat(), Lunge(), SitStand(), Bow(), TouchToes(), SideStretch(), Kick(), StandStill()]
