"""Arm primitives: waving, raising, clapping, punching, throwing, arm circles, strumming a guitar.

Hands are placed by two-bone IK at targets relative to the chest (chest axes: +X the
body's left, +Y up, +Z forward); the legs stand, feet planted.
"""

from __future__ import annotations

import numpy as np

from motion_env.procedural.base import SIDES, Primitive, blend, hang_arms, rest_wrist, settle, stand_legs
from motion_env.procedural.captions import number, times
from motion_env.procedural.timing import envelope, keyframes, minimum_jerk

SHOULDER_LEVEL = 0.14  # chest-relative height of the shoulders


def _sign(side: str) -> float:
    return 1.0 if side == "left" else -1.0


def _arms_for(side: str) -> tuple[str, ...]:
    return SIDES if side == "both" else (side,)


class Wave(Primitive):
    name = "wave"

    def sample(self, rng):
        return {"side": str(rng.choice(["left", "right", "right", "both"])), "count": int(rng.integers(1, 5))}

    def duration(self, p, style):
        return (1.3 + 0.5 * p["count"]) * style.tempo

    def animate(self, body, p, style):
        t = body.t
        d = self.duration(p, style)
        settle(body, style)
        stand_legs(body, style)
        raised = envelope(t, 0.2, d - 0.15, ramp=0.55 * style.tempo)
        wave_start, wave_time = 0.7 * style.tempo, 0.5 * style.tempo
        # Each wave is one full side-to-side swing of the forearm.
        swing = np.sin(2 * np.pi * np.clip(t - wave_start, 0, p["count"] * wave_time) / wave_time)
        targets, poles = {}, {}
        for side in _arms_for(p["side"]):
            s = _sign(side)
            up = np.array([s * 0.36, 0.42 * style.amplitude, 0.12])
            waving = up + np.stack([s * 0.11 * swing, -0.02 * np.abs(swing), np.zeros_like(t)], -1)
            targets[side] = blend(raised, rest_wrist(side, style), waving)
            poles[side] = np.array([s, -1.0, -0.3])
        hang_arms(body, style, left=targets.get("left"), right=targets.get("right"),
                  left_pole=poles.get("left"), right_pole=poles.get("right"))  # fmt: skip

    def phrases(self, p):
        c = times(p["count"])
        if p["side"] == "both":
            return [f"waves both hands {c}", "waves with both hands", "raises both hands and waves",
                    "waves both arms above the head"]  # fmt: skip
        s = p["side"]
        return [f"waves the {s} hand {c}", f"waves with the {s} hand", f"waves hello with the {s} hand",
                f"raises the {s} hand and waves {c}"]  # fmt: skip


class RaiseArms(Primitive):
    name = "raise_arms"

    def sample(self, rng):
        return {"side": str(rng.choice(["left", "right", "both"])),
                "direction": str(rng.choice(["up", "forward", "sideways"])), "hold": float(rng.uniform(0.4, 1.4))}  # fmt: skip

    def duration(self, p, style):
        return (1.6 * style.tempo + p["hold"]) + 0.2

    def animate(self, body, p, style):
        t = body.t
        d = self.duration(p, style)
        settle(body, style)
        stand_legs(body, style)
        raised = envelope(t, 0.15, d - 0.1, ramp=0.75 * style.tempo)
        targets = {}
        for side in _arms_for(p["side"]):
            s = _sign(side)
            pose = {"up": [s * 0.2, 0.68, 0.06], "forward": [s * 0.18, SHOULDER_LEVEL + 0.02, 0.5],
                    "sideways": [s * 0.67, SHOULDER_LEVEL + 0.03, 0.0]}[p["direction"]]  # fmt: skip
            targets[side] = blend(raised, rest_wrist(side, style), np.array(pose))
        poles = {side: np.array([_sign(side), -0.5, -1.0]) for side in SIDES}
        hang_arms(body, style, left=targets.get("left"), right=targets.get("right"), left_pole=poles["left"],
                  right_pole=poles["right"])  # fmt: skip

    def phrases(self, p):
        side, d = p["side"], p["direction"]
        limb = "both arms" if side == "both" else f"the {side} arm"
        hand = "both hands" if side == "both" else f"the {side} hand"
        where = {"up": "above the head", "forward": "forward", "sideways": "out to the side"}[d]
        if d == "sideways" and side == "both":
            where = "out to the sides"
        lift = {"up": "up", "forward": "in front", "sideways": "out to the side"}[d]
        them = "them" if side == "both" else "it"
        return [f"raises {limb} {where}", f"lifts {limb} {lift}", f"puts {hand} {lift} and lowers {them}",
                f"holds {limb} {where} and then lowers {them}"]  # fmt: skip


class Clap(Primitive):
    name = "clap"

    def sample(self, rng):
        return {"count": int(rng.integers(1, 5))}

    def duration(self, p, style):
        return (1.2 + 0.45 * p["count"]) * style.tempo

    def animate(self, body, p, style):
        t = body.t
        d = self.duration(p, style)
        settle(body, style)
        stand_legs(body, style)
        ready = envelope(t, 0.15, d - 0.1, ramp=0.45 * style.tempo)
        start, period = 0.6 * style.tempo, 0.45 * style.tempo
        # Hands meet at each clap and open between claps.
        gap = 0.5 - 0.5 * np.cos(2 * np.pi * np.clip(t - start, 0, p["count"] * period) / period)
        targets = {}
        for side in SIDES:
            s = _sign(side)
            clap = np.stack([s * (0.035 + 0.17 * (1 - gap)), np.full_like(t, 0.0), np.full_like(t, 0.33)], -1)
            targets[side] = blend(ready, rest_wrist(side, style), clap)
        hang_arms(body, style, left=targets["left"], right=targets["right"], left_pole=np.array([1.0, -0.6, -0.4]),
                  right_pole=np.array([-1.0, -0.6, -0.4]))  # fmt: skip

    def phrases(self, p):
        c = times(p["count"])
        n = number(p["count"])
        return [f"claps the hands {c}", f"claps {c}", f"claps {n} times".replace("one times", "one time"),
                f"brings the hands together {c}"]  # fmt: skip


class Punch(Primitive):
    name = "punch"

    def sample(self, rng):
        return {"side": str(rng.choice(["left", "right", "both"])), "count": int(rng.integers(1, 5))}

    def duration(self, p, style):
        return (1.1 + 0.55 * p["count"]) * style.tempo

    def animate(self, body, p, style):
        t = body.t
        d = self.duration(p, style)
        settle(body, style)
        stand_legs(body, style)
        guard = envelope(t, 0.1, d - 0.1, ramp=0.45 * style.tempo)
        start, period = 0.55 * style.tempo, 0.55 * style.tempo
        sides = [p["side"]] * p["count"] if p["side"] != "both" else ["right", "left"] * p["count"]
        period = period if p["side"] != "both" else period / 2 + 0.05
        extend = {"left": np.zeros_like(t), "right": np.zeros_like(t)}
        for i, side in enumerate(sides):
            t0 = start + i * period
            extend[side] += keyframes(t, [t0, t0 + 0.14, t0 + 0.22, t0 + 0.45], [0.0, 1.0, 1.0, 0.0])
        twist = 0.25 * (extend["right"] - extend["left"])
        body.spine_bend(twist_left=twist)
        targets = {}
        for side in SIDES:
            s = _sign(side)
            fist = np.array([s * 0.12, 0.02, 0.18])
            strike = np.array([s * 0.05, SHOULDER_LEVEL, 0.62 * style.amplitude])
            targets[side] = blend(guard, rest_wrist(side, style), blend(extend[side], fist, strike))
        hang_arms(body, style, left=targets["left"], right=targets["right"], left_pole=np.array([0.6, -1.0, -0.3]),
                  right_pole=np.array([-0.6, -1.0, -0.3]))  # fmt: skip

    def phrases(self, p):
        c = times(p["count"])
        if p["side"] == "both":
            return [f"punches with both fists {c}", "throws punches with both hands", "punches with both arms in turn",
                    "punches forward with the left and right fist"]  # fmt: skip
        s = p["side"]
        return [f"punches with the {s} fist {c}", f"punches forward with the {s} hand {c}",
                f"throws a {s} punch {c}", f"punches {c} with the {s} arm"]  # fmt: skip


class Throw(Primitive):
    name = "throw"

    def sample(self, rng):
        return {"side": str(rng.choice(["left", "right", "right", "right"]))}

    def duration(self, p, style):
        return 2.2 * style.tempo

    def animate(self, body, p, style):
        t = body.t
        tempo = style.tempo
        s = _sign(p["side"])
        keys = [0.2 * tempo, 0.8 * tempo, 1.05 * tempo, 1.3 * tempo, 2.0 * tempo]
        wind = keyframes(t, keys, [0.0, 1.0, -0.4, -0.6, 0.0])  # +1 wound back, negative = follow-through
        settle(body, style)
        stand_legs(body, style)
        body.spine_bend(twist_left=s * 0.45 * wind, forward=0.2 * np.clip(-wind, 0, None))
        back = np.array([s * 0.3, 0.36, -0.22])
        release = np.array([s * 0.1, 0.3, 0.5])
        through = np.array([-s * 0.12, -0.2, 0.35])
        w = np.clip(wind, 0, 1)[..., None]
        f = np.clip(-wind / 0.6, 0, 1)[..., None]
        active = envelope(t, keys[0], keys[-1], ramp=0.4 * tempo)[..., None]
        pose = np.where(wind[..., None] >= 0, back * w + release * (1 - w), release * (1 - f) + through * f)
        arm = rest_wrist(p["side"], style) * (1 - active) + pose * active
        other = "right" if p["side"] == "left" else "left"
        balance = rest_wrist(other, style) + np.stack([np.zeros_like(t), 0.2 * w[..., 0], 0.2 * w[..., 0]], -1)
        hang_arms(body, style, **{p["side"]: arm, other: balance},
                  **{f"{p['side']}_pole": np.array([s, -0.3, -1.0])})  # fmt: skip

    def phrases(self, p):
        s = p["side"]
        return [f"throws something with the {s} hand", f"throws a ball with the {s} arm",
                f"makes an overhead throw with the {s} hand",
                f"winds up and throws with the {s} hand"]  # fmt: skip


class ArmCircles(Primitive):
    name = "arm_circles"

    def sample(self, rng):
        return {"side": str(rng.choice(["left", "right", "both"])), "count": int(rng.integers(1, 5)),
                "direction": str(rng.choice(["forward", "backward"]))}  # fmt: skip

    def duration(self, p, style):
        return (0.9 + 1.0 * p["count"]) * style.tempo

    def animate(self, body, p, style):
        t = body.t
        d = self.duration(p, style)
        settle(body, style)
        stand_legs(body, style)
        active = envelope(t, 0.1, d - 0.1, ramp=0.3 * style.tempo)
        # The circle's angle advances with a min-jerk ramp in and out, so the arm starts and ends at rest.
        angle = 2 * np.pi * p["count"] * minimum_jerk((t - 0.3 * style.tempo) / (d - 0.6 * style.tempo))
        angle = angle if p["direction"] == "forward" else -angle
        radius = 0.47 * style.amplitude
        targets, poles = {}, {}
        for side in _arms_for(p["side"]):
            s = _sign(side)
            shoulder = np.array([s * 0.19, SHOULDER_LEVEL, -0.02])
            circle = shoulder + radius * np.stack([s * 0.25 * np.ones_like(t), -np.cos(angle), np.sin(angle)], -1)
            targets[side] = blend(active, rest_wrist(side, style), circle)
            poles[side] = np.array([s, 0.0, 0.0])
        hang_arms(body, style, left=targets.get("left"), right=targets.get("right"),
                  left_pole=poles.get("left"), right_pole=poles.get("right"))  # fmt: skip

    def phrases(self, p):
        c, d = times(p["count"]), p["direction"]
        limb = "both arms" if p["side"] == "both" else f"the {p['side']} arm"
        return [f"makes circles with {limb}", f"rotates {limb} in circles {d}", f"swings {limb} around {c}",
                f"circles {limb} {d} {c}"]  # fmt: skip


class StrumGuitar(Primitive):
    name = "strum_guitar"

    def sample(self, rng):
        return {"seconds": float(rng.uniform(2.0, 4.0))}

    def duration(self, p, style):
        return p["seconds"] * style.tempo + 1.2

    def animate(self, body, p, style):
        t = body.t
        d = self.duration(p, style)
        settle(body, style)
        stand_legs(body, style)
        active = envelope(t, 0.15, d - 0.15, ramp=0.5)
        body.head_turn(down=0.2 * active)
        strum = np.sin(2 * np.pi * 3.0 * t) * envelope(t, 0.6, d - 0.6, ramp=0.2)
        neck = np.array([0.38, 0.02, 0.27])  # fretting hand out on the guitar's neck
        picking = np.stack([np.full_like(t, -0.06), -0.2 + 0.07 * strum, np.full_like(t, 0.22)], -1)
        hang_arms(body, style, left=blend(active, rest_wrist("left", style), neck),
                  right=blend(active, rest_wrist("right", style), picking),
                  left_pole=np.array([0.3, -1.0, -0.5]), right_pole=np.array([-1.0, -0.3, -0.3]))  # fmt: skip

    def phrases(self, p):
        return ["plays the guitar", "strums a guitar", "pretends to play the guitar", "plays air guitar"]


PRIMITIVES = [Wave(), RaiseArms(), Clap(), Punch(), Throw(), ArmCircles(), StrumGuitar()]
