"""Primitives that move the feet: walking, running, jogging, stepping, turning, jumping, hopping."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from motion_env.procedural.base import (
    ANKLE_REST,
    SIDES,
    Primitive,
    Style,
    blend,
    hang_arms,
    rest_wrist,
    settle,
    stand_legs,
)
from motion_env.procedural.body import AIRBORNE, LEFT_STANCE, RIGHT_STANCE, Body
from motion_env.procedural.captions import number, times
from motion_env.procedural.timing import envelope, keyframes, minimum_jerk
from motion_env.skeleton import FPS, REST_OFFSETS, rest_joints

GRAVITY = 9.81
_REST = rest_joints()
SIDE_WIDTH = {"left": ANKLE_REST["left"][0], "right": ANKLE_REST["right"][0]}  # feet under the hips
ANKLE_HEIGHT = _REST[7, 1] - _REST[10, 1]  # ankle above the floor when the foot is flat
HIP_DROP = -_REST[1, 1]  # hip joints below the pelvis
LEG_REACH = 0.985 * (np.linalg.norm(REST_OFFSETS[4]) + np.linalg.norm(REST_OFFSETS[7]))
STAND_HEIGHT = ANKLE_HEIGHT - ANKLE_REST["left"][1]  # pelvis height of the standing pose


def _smooth(x: np.ndarray, sigma_frames: float) -> np.ndarray:
    return gaussian_filter1d(x, max(sigma_frames, 1e-3), axis=0, mode="nearest")


def gait(body: Body, style: Style, *, steps: int, step_length: float, step_time: float, stance: float,
         lift: float, crouch: float, arm_swing: float, lean: float, direction: float = 1.0, turn: float = 0.0,
         lead: str = "left", running: bool = False) -> None:  # fmt: skip
    """Walk, run or jog by planning footsteps and solving the legs by IK.

    Each foot stays exactly where it landed until it lifts (no sliding, by construction),
    swings to its next footstep on a min-jerk arc, and the pelvis follows the mean of the feet
    along the path. The pelvis sinks when the feet are far apart (the legs must reach) and, in
    a run, flies on a ballistic arc while both feet are off the ground.

    Args:
        steps: footfalls, the last of which brings the feet together.
        step_length: metres between successive footfalls along the path (0 = in place).
        step_time: seconds from one footfall to the next.
        stance: fraction of a stride a foot spends on the ground (< 0.5 gives flight phases).
        direction: +1 forward, -1 backward (the body keeps facing forward).
        turn: heading change over the whole walk (radians, + = to the left).
    """
    t = body.t
    n = body.num_frames
    start = 0.35
    swing_time = (1.0 - stance) * 2 * step_time
    path_length = max(steps - 1, 1) * step_length
    curvature = turn / max(path_length, 1e-6) if path_length > 0 else 0.0
    sides = [lead, "right" if lead == "left" else "left"]

    # Footfalls along the path coordinate s: half a step first, full steps, the last closes the
    # feet. Each footfall also sets the foot's heading: along the curve, or, turning in place,
    # an equal share of the turn per step.
    s_feet = {"left": np.zeros(n), "right": np.zeros(n)}
    theta_feet = {"left": np.zeros(n), "right": np.zeros(n)}
    lift_of = {"left": np.zeros(n), "right": np.zeros(n)}
    position = {"left": 0.0, "right": 0.0}
    facing = {"left": 0.0, "right": 0.0}
    swing_end = start
    for k in range(steps):
        side = sides[k % 2]
        target = (min(k, steps - 2) + 0.5) * step_length if steps > 1 else 0.5 * step_length
        target_theta = curvature * target if path_length > 0 else turn * min(k + 1, steps - 1) / max(steps - 1, 1)
        t0 = start + k * step_time
        u = minimum_jerk(np.clip((t - t0) / swing_time, 0.0, 1.0))
        moving = (t >= t0) & (t < t0 + swing_time)
        later = t >= t0
        s_feet[side] = np.where(later, position[side] + (target - position[side]) * u, s_feet[side])
        theta_feet[side] = np.where(later, facing[side] + (target_theta - facing[side]) * u, theta_feet[side])
        lift_of[side] += np.where(moving, lift * np.sin(np.pi * np.clip((t - t0) / swing_time, 0, 1)) ** 1.5, 0.0)
        position[side], facing[side] = target, target_theta
        swing_end = t0 + swing_time
    in_swing = {side: lift_of[side] > 0 for side in SIDES}

    # Pelvis along the path: the feet's mean, smoothed into a steady speed and turn rate.
    s_pelvis = _smooth((s_feet["left"] + s_feet["right"]) / 2, 0.45 * step_time * FPS)
    heading = _smooth((theta_feet["left"] + theta_feet["right"]) / 2, 0.45 * step_time * FPS)

    def along(s):  # path position (x, z) at arc length s; the path turns at a constant rate
        theta = curvature * s
        if abs(curvature) < 1e-9:
            return np.stack([np.zeros_like(s), s], -1)
        return np.stack([(1 - np.cos(theta)) / curvature, np.sin(theta) / curvature], -1)

    normal = lambda theta: np.stack([np.cos(theta), -np.sin(theta)], -1)  # noqa: E731  body's left
    pelvis_xz = along(direction * s_pelvis)
    feet_xz = {}
    for side in SIDES:
        width = SIDE_WIDTH[side] + np.sign(SIDE_WIDTH[side]) * style.stance_width
        feet_xz[side] = along(direction * s_feet[side]) + width * normal(theta_feet[side])

    # Pelvis height: as high as the legs allow (a slight knee bend), lower in a crouched run,
    # ballistic while both feet are in the air.
    reach = LEG_REACH * (1.0 - crouch)
    height = np.full(n, STAND_HEIGHT)
    for side in SIDES:
        hip_xz = pelvis_xz + SIDE_WIDTH[side] * normal(heading)
        gap = np.linalg.norm(feet_xz[side] - hip_xz, axis=-1)
        allowed = HIP_DROP + np.sqrt(np.maximum(reach**2 - gap**2, 0.05)) + ANKLE_HEIGHT
        height = np.where(in_swing[side], height, np.minimum(height, allowed))
    both_up = in_swing["left"] & in_swing["right"]
    height = _ballistic(t, height, both_up)
    height = _smooth(height, 1.0)

    body.root_path = np.stack([pelvis_xz[:, 0], height, pelvis_xz[:, 1]], -1)
    body.yaw[:] = heading
    body.stance[both_up] = AIRBORNE

    settle(body, style)
    weight = envelope(t, start, swing_end, ramp=step_time)
    body.spine_bend(forward=lean * weight)
    spread = (s_feet["left"] - s_feet["right"]) / max(step_length, 0.3)
    body.pelvis_tilt(twist_left=-0.12 * spread)
    body.spine_bend(twist_left=0.15 * spread)
    targets = {}
    c, s_ = np.cos(heading), np.sin(heading)
    for side in SIDES:
        rel = feet_xz[side] - pelvis_xz
        # Into the heading frame: rotate by -heading about +Y.
        x = c * rel[:, 0] - s_ * rel[:, 1]
        z = s_ * rel[:, 0] + c * rel[:, 1]
        y = ANKLE_HEIGHT + lift_of[side] - height
        targets[side] = np.stack([x, y, z], -1)
    stand_legs(body, style, left=targets["left"], right=targets["right"],
               foot_yaw={side: theta_feet[side] - heading for side in SIDES})  # fmt: skip

    arm_targets = {}
    for side in SIDES:
        rest = rest_wrist(side, style)
        carried = rest + ([0.0, 0.17, 0.12] if running else [0.0, 0.02, 0.02])
        base = blend(weight, rest, carried)
        behind = (s_pelvis - s_feet[side]) / max(step_length, 0.3)  # arm swings forward with the opposite leg
        forward = np.clip(behind, -1, 1) * arm_swing * direction
        arm_targets[side] = base + np.stack([np.zeros(n), 0.25 * np.abs(forward), forward], -1)
    hang_arms(body, style, left=arm_targets["left"], right=arm_targets["right"])


def _ballistic(t: np.ndarray, height: np.ndarray, airborne: np.ndarray) -> np.ndarray:
    """Replace each airborne span of ``height`` by a parabola under gravity between its ends."""
    out = height.copy()
    idx = np.flatnonzero(airborne)
    if idx.size == 0:
        return out
    runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
    for run in runs:
        a, b = max(run[0] - 1, 0), min(run[-1] + 1, len(t) - 1)
        duration = t[b] - t[a]
        tau = t[a : b + 1] - t[a]
        out[a : b + 1] = height[a] + (height[b] - height[a]) * tau / duration + 0.5 * GRAVITY * tau * (duration - tau)
    return out


class Walk(Primitive):
    name = "walk"

    def sample(self, rng):
        return {
            "steps": int(rng.integers(4, 9)),
            "speed": str(rng.choice(["slow", "normal", "normal", "fast"])),
            "direction": str(rng.choice(["forward", "forward", "forward", "backward"])),
            "curve": str(rng.choice(["straight", "straight", "straight", "left", "right"])),
        }

    def _step_time(self, p, style):
        return {"slow": 0.65, "normal": 0.53, "fast": 0.45}[p["speed"]] * style.tempo**0.5

    def duration(self, p, style):
        return 0.35 + p["steps"] * self._step_time(p, style) + 0.5

    def animate(self, body, p, style):
        backward = p["direction"] == "backward"
        length = {"slow": 0.5, "normal": 0.65, "fast": 0.78}[p["speed"]] * style.amplitude**0.5 * (0.7 if backward else 1)
        gait(body, style, steps=p["steps"], step_length=length, step_time=self._step_time(p, style), stance=0.62,
             lift=0.1, crouch=0.01, arm_swing=0.14, lean=0.04 if not backward else -0.03,
             direction=-1.0 if backward else 1.0, turn={"straight": 0.0, "left": 1.2, "right": -1.2}[p["curve"]])  # fmt: skip

    def phrases(self, p):
        manner = {"slow": ["slowly ", "slowly "], "normal": ["", ""], "fast": ["quickly ", "fast "]}[p["speed"]]
        curve = {"straight": "", "left": " while curving to the left", "right": " while curving to the right"}[p["curve"]]
        bend = {"straight": "", "left": " in a curve to the left", "right": " in a curve to the right"}[p["curve"]]
        n = number(p["steps"])
        if p["direction"] == "forward":
            return [f"walks {manner[0]}forward{curve}", f"{manner[1]}walks ahead{bend}",
                    f"takes {n} steps forward{curve}", f"moves {manner[0]}forward{bend}"]  # fmt: skip
        return [f"walks {manner[0]}backward{curve}", f"{manner[1]}walks backwards{bend}",
                f"takes {n} steps backward{curve}", f"steps {manner[0]}backward{bend}"]  # fmt: skip


class Run(Primitive):
    name = "run"

    def sample(self, rng):
        return {"steps": int(rng.integers(4, 9)), "speed": str(rng.choice(["jog", "run", "sprint"]))}

    def _step_time(self, p, style):
        return {"jog": 0.38, "run": 0.34, "sprint": 0.31}[p["speed"]] * style.tempo**0.3

    def duration(self, p, style):
        return 0.35 + p["steps"] * self._step_time(p, style) + 0.6

    def animate(self, body, p, style):
        length = {"jog": 0.95, "run": 1.2, "sprint": 1.45}[p["speed"]] * style.amplitude**0.5
        gait(body, style, steps=p["steps"], step_length=length, step_time=self._step_time(p, style), stance=0.36,
             lift=0.22, crouch=0.06, arm_swing=0.2, lean=0.12, running=True)  # fmt: skip

    def phrases(self, p):
        return {
            "jog": ["jogs forward", "jogs ahead", "runs forward at a slow pace", "jogs in a straight line"],
            "run": ["runs forward", "runs ahead", "runs in a straight line", "runs forwards"],
            "sprint": ["sprints forward", "runs forward fast", "runs quickly ahead", "sprints ahead"],
        }[p["speed"]]


class JogInPlace(Primitive):
    name = "jog_in_place"

    def sample(self, rng):
        return {"steps": int(rng.integers(4, 9))}

    def duration(self, p, style):
        return 0.35 + p["steps"] * 0.36 * style.tempo**0.3 + 0.6

    def animate(self, body, p, style):
        gait(body, style, steps=p["steps"], step_length=0.0, step_time=0.36 * style.tempo**0.3, stance=0.4,
             lift=0.2 * style.amplitude, crouch=0.05, arm_swing=0.08, lean=0.03, running=True)  # fmt: skip

    def phrases(self, p):
        return ["jogs in place", "runs on the spot", "jogs on the spot", "does a jog in place"]


class KneeRaise(Primitive):
    name = "knee_raise"

    def sample(self, rng):
        return {"side": str(rng.choice(["left", "right", "both"])), "count": int(rng.integers(1, 5))}

    def duration(self, p, style):
        return (0.6 + p["count"] * (1.6 if p["side"] == "both" else 0.9)) * style.tempo

    def animate(self, body, p, style):
        t = body.t
        settle(body, style)
        period = 0.9 * style.tempo
        sides = ["left", "right"] * p["count"] if p["side"] == "both" else [p["side"]] * p["count"]
        lift = {"left": np.zeros_like(t), "right": np.zeros_like(t)}
        for i, side in enumerate(sides):
            t0 = 0.3 * style.tempo + i * period
            lift[side] += envelope(t, t0, t0 + period * 0.85, ramp=period * 0.35)
        zero = np.zeros_like(t)
        for side in SIDES:  # the foot rises straight up off the floor, the knee leads
            up = lift[side] * style.amplitude
            body.plant_foot(side, ANKLE_REST[side] + np.stack([zero, 0.42 * up, 0.12 * up], -1))
        body.stance[lift["left"] > 0] = RIGHT_STANCE
        body.stance[lift["right"] > 0] = LEFT_STANCE
        hang_arms(body, style)

    def phrases(self, p):
        if p["side"] == "both":
            n = number(p["count"] * 2)
            return ["marches in place", "marches on the spot", f"raises the knees {n} times in turn".replace(
                "two times", "twice"), "lifts one knee and then the other"]  # fmt: skip
        s, c = p["side"], times(p["count"])
        return [f"raises the {s} knee {c}", f"lifts the {s} knee up {c}", f"lifts the {s} leg with the knee bent {c}",
                f"brings the {s} knee up {c}"]  # fmt: skip


class Turn(Primitive):
    name = "turn"

    def sample(self, rng):
        return {"direction": str(rng.choice(["left", "right"])), "angle": int(rng.choice([90, 90, 180, 180, 360]))}

    def _steps(self, p):
        return max(2, int(round(p["angle"] / 45))) + 1  # the last step closes the feet

    def duration(self, p, style):
        return 0.35 + self._steps(p) * 0.45 * style.tempo + 0.5

    def animate(self, body, p, style):
        sign = 1.0 if p["direction"] == "left" else -1.0
        # Stepping round on the spot, the foot on the inside of the turn first.
        gait(body, style, steps=self._steps(p), step_length=0.0, step_time=0.45 * style.tempo, stance=0.6,
             lift=0.07, crouch=0.02, arm_swing=0.0, lean=0.0, turn=sign * np.radians(p["angle"]),
             lead=p["direction"])  # fmt: skip

    def phrases(self, p):
        d, a = p["direction"], p["angle"]
        if a == 180:
            return [f"turns around to the {d}", "turns around", "turns to face the other way",
                    f"turns back over the {d} shoulder"]  # fmt: skip
        if a == 360:
            return [f"turns a full circle to the {d}", f"spins around to the {d}", "turns all the way around",
                    f"does a full turn to the {d}"]  # fmt: skip
        return [f"turns to the {d}", f"turns {d}", f"turns ninety degrees to the {d}", f"faces to the {d}"]


class StepSideways(Primitive):
    name = "step_sideways"

    def sample(self, rng):
        return {"side": str(rng.choice(["left", "right"])), "count": int(rng.integers(1, 5))}

    def duration(self, p, style):
        return (0.5 + p["count"] * 0.9) * style.tempo

    def animate(self, body, p, style):
        t = body.t
        settle(body, style)
        sign = 1.0 if p["side"] == "left" else -1.0
        lead, trail = p["side"], ("right" if p["side"] == "left" else "left")
        width = 0.32 * style.amplitude
        period = 0.9 * style.tempo
        # Pelvis-relative ankle x offsets: the lead foot reaches out while the trailing foot carries
        # the body, then the trailing foot closes while the lead foot carries it.
        keys_t, lead_x, trail_x = [0.0], [0.0], [0.0]
        for i in range(p["count"]):
            t0 = 0.25 * style.tempo + i * period
            keys_t += [t0 + period * 0.45, t0 + period]
            lead_x += [width / 2, 0.0]
            trail_x += [-width / 2, 0.0]
        keys_t.append(t[-1] + 1.0)
        lead_x.append(0.0)
        trail_x.append(0.0)
        dx_lead = keyframes(t, keys_t, lead_x)
        dx_trail = keyframes(t, keys_t, trail_x)
        phase = np.zeros_like(t, dtype=int)  # 0 standing, 1 lead swinging, 2 trail swinging
        lift_lead, lift_trail = np.zeros_like(t), np.zeros_like(t)
        for i in range(p["count"]):
            t0 = 0.25 * style.tempo + i * period
            a = np.clip((t - t0) / (period * 0.45), 0, 1)
            b = np.clip((t - t0 - period * 0.45) / (period * 0.55), 0, 1)
            lift_lead += 0.07 * np.sin(np.pi * a) * (a < 1) * (a > 0)
            lift_trail += 0.06 * np.sin(np.pi * b) * (b < 1) * (b > 0)
            phase[(a > 0) & (a < 1)] = 1
            phase[(b > 0) & (b < 1)] = 2
        lead_rest, trail_rest = ANKLE_REST[lead], ANKLE_REST[trail]
        zero = np.zeros_like(t)
        lead_target = lead_rest + np.stack([sign * dx_lead, lift_lead, zero], -1)
        trail_target = trail_rest + np.stack([sign * dx_trail, lift_trail, zero], -1)
        stand_legs(body, style, **{lead: lead_target, trail: trail_target})
        trail_code, lead_code = (RIGHT_STANCE, LEFT_STANCE) if lead == "left" else (LEFT_STANCE, RIGHT_STANCE)
        body.stance[phase == 1] = trail_code
        body.stance[phase == 2] = lead_code
        body.pelvis_tilt(left=0.0)
        hang_arms(body, style)

    def phrases(self, p):
        s, c = p["side"], p["count"]
        return [f"steps to the {s}", f"sidesteps to the {s} {times(c)}", f"takes {number(c)} steps sideways to the {s}".replace(
            "one steps", "one step"), f"shuffles sideways to the {s}"]  # fmt: skip


class Jump(Primitive):
    name = "jump"

    def sample(self, rng):
        return {"count": int(rng.integers(1, 5)), "mode": str(rng.choice(["up", "up", "forward"])),
                "height": float(rng.uniform(0.15, 0.35))}  # fmt: skip

    def _flight(self, p):
        return np.sqrt(8 * p["height"] / GRAVITY)

    def _period(self, p, style):
        return 0.55 * style.tempo + 0.25 + self._flight(p) + 0.35 * style.tempo

    def duration(self, p, style):
        return 0.2 + p["count"] * self._period(p, style) + 0.35

    def animate(self, body, p, style):
        t = body.t
        settle(body, style)
        flight = self._flight(p)
        crouch, push, land = 0.55 * style.tempo, 0.2, 0.35 * style.tempo
        hip, knee, ankle, trunk = (np.zeros_like(t) for _ in range(4))
        arms = np.zeros_like(t)  # -1 swung back, +1 swung forward-up
        for i in range(p["count"]):
            t0 = 0.2 + i * self._period(p, style)
            keys = [t0, t0 + crouch, t0 + crouch + push, t0 + crouch + push + flight,
                    t0 + crouch + push + flight + 0.15, t0 + crouch + push + flight + 0.15 + land]  # fmt: skip
            hip += keyframes(t, keys, [0.0, 0.9, 0.0, 0.0, 0.7, 0.0]) * style.amplitude
            knee += keyframes(t, keys, [0.0, 1.5, 0.05, 0.1, 1.1, 0.0]) * style.amplitude
            ankle += keyframes(t, keys, [0.0, 0.45, -0.55, -0.2, 0.35, 0.0])
            trunk += keyframes(t, keys, [0.0, 0.5, 0.05, 0.1, 0.35, 0.0])
            arms += keyframes(t, keys, [0.0, -1.0, 1.0, 0.6, -0.3, 0.0])
            take_off, touch = keys[2], keys[3]
            airborne = (t >= take_off) & (t < touch)
            tau = t - take_off
            body.flight += np.where(airborne, 0.5 * GRAVITY * tau * (flight - tau), 0.0)
            body.stance[airborne] = AIRBORNE
            forward = 0.6 * style.amplitude / flight if p["mode"] == "forward" else 0.0
            body.air_velocity[airborne] = [0.0, forward]
        body.spine_bend(forward=trunk)
        body.pelvis_tilt(forward=0.3 * hip)
        for side in SIDES:
            body.hip_flex(side, hip)
            body.knee_flex(side, knee)
            body.ankle_flex(side, ankle)
        swing = np.stack([np.zeros_like(t), 0.25 * np.clip(arms, 0, None), 0.28 * arms], -1)
        hang_arms(body, style, left=rest_wrist("left", style) + swing, right=rest_wrist("right", style) + swing)

    def phrases(self, p):
        c = times(p["count"])
        if p["mode"] == "forward":
            return [f"jumps forward {c}", f"leaps forward {c}", f"jumps ahead with both feet {c}",
                    f"does a forward jump {c}".replace("a forward jump twice", "two forward jumps")]  # fmt: skip
        return [f"jumps up {c}", f"jumps in place {c}", f"jumps up and down {c}", f"jumps on the spot {c}"]


class Hop(Primitive):
    name = "hop"

    def sample(self, rng):
        return {"side": str(rng.choice(["left", "right"])), "count": int(rng.integers(1, 5))}

    def duration(self, p, style):
        return 0.9 + p["count"] * 0.6 * style.tempo + 0.5

    def animate(self, body, p, style):
        t = body.t
        settle(body, style)
        hop_side, free = p["side"], ("right" if p["side"] == "left" else "left")
        total = self.duration(p, style)
        raised = envelope(t, 0.25, total - 0.3, ramp=0.45)
        zero = np.zeros_like(t)
        # The free foot lifts straight up off the floor (no scuff), knee forward.
        body.plant_foot(free, ANKLE_REST[free] + np.stack([zero, 0.3 * raised, -0.05 * raised], -1))
        body.pelvis_tilt(left=(0.06 if hop_side == "left" else -0.06) * raised)
        flight, period = 0.3, 0.6 * style.tempo
        # The hopping foot is placed by IK under its hip, so it lands where it took off; the
        # pelvis dips (crouch, landing) by raising the ankle target.
        dip = np.zeros_like(t)
        body.stance[raised > 0] = LEFT_STANCE if hop_side == "left" else RIGHT_STANCE
        for i in range(p["count"]):
            t0 = 0.75 + i * period
            keys = [t0, t0 + 0.12, t0 + 0.2, t0 + 0.2 + flight, t0 + 0.2 + flight + 0.1]
            dip += keyframes(t, keys, [0.0, 0.12, 0.0, 0.04, 0.0])
            airborne = (t >= keys[2]) & (t < keys[3])
            tau = t - keys[2]
            body.flight += np.where(airborne, 0.5 * GRAVITY * tau * (flight - tau), 0.0)
            body.stance[airborne] = AIRBORNE
            body.air_velocity[airborne] = [0.0, 0.0]
        body.plant_foot(hop_side, ANKLE_REST[hop_side] + np.stack([np.zeros_like(t), dip, np.zeros_like(t)], -1))
        out = np.stack([0.12 * raised, 0.1 * raised, 0.05 * raised], -1)
        hang_arms(body, style, left=rest_wrist("left", style) + out * [1, 1, 1],
                  right=rest_wrist("right", style) + out * [-1, 1, 1])  # fmt: skip

    def phrases(self, p):
        s, c = p["side"], times(p["count"])
        return [f"hops on the {s} foot {c}", f"hops on the {s} leg {c}", f"jumps on the {s} foot {c}",
                f"stands on the {s} leg and hops {c}"]  # fmt: skip


PRIMITIVES = [Walk(), Run(), JogInPlace(), KneeRaise(), Turn(), StepSideways(), Jump(), Hop()]
