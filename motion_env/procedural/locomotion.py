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
    elbow_back,
    hang_arms,
    rest_wrist,
    settle,
    stand_legs,
)
from motion_env.procedural.body import AIRBORNE, AUTO, LEFT_STANCE, RIGHT_STANCE, Body
from motion_env.procedural.captions import number, times
from motion_env.procedural.timing import envelope, keyframes, minimum_jerk

GRAVITY = 9.81
DEG = np.pi / 180


def _cycle_profile(stance: float, hip_flex: float, hip_ext: float, knee_stance: float, knee_swing: float,
                   ankle_push: float, resolution: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Hip, knee and ankle angles over one gait cycle (heel strike at phase 0)."""
    phase = np.arange(resolution) / resolution
    in_stance = phase < stance
    s_stance = phase / stance
    s_swing = (phase - stance) / (1 - stance)
    # Stance: the hip extends at a constant rate, so the body moves at a steady speed.
    hip = np.where(in_stance, hip_flex - (hip_flex + hip_ext) * s_stance,
                   -hip_ext + (hip_flex + hip_ext) * minimum_jerk(s_swing))  # fmt: skip
    # Knee: a small loading bump in stance, a large flexion early in swing.
    knee = np.where(in_stance, knee_stance * np.sin(np.pi * s_stance) ** 2,
                    knee_swing * np.sin(np.pi * np.clip(s_swing, 0, 1) ** 0.8) ** 2)  # fmt: skip
    # Ankle: flat at heel strike, rolls over the forefoot, pushes off, then clears the toes.
    ankle = np.where(in_stance, 0.15 * np.sin(np.pi * s_stance) - ankle_push * s_stance**4,
                     -ankle_push * (1 - minimum_jerk(s_swing * 2)) + 0.1 * np.sin(np.pi * s_swing))  # fmt: skip
    smooth = lambda x: gaussian_filter1d(x, resolution * 0.02, mode="wrap")  # noqa: E731
    return smooth(hip), smooth(knee), smooth(ankle)


def gait(body: Body, style: Style, *, cycle: float, steps: int, stance: float, hip_flex: float, hip_ext: float,
         knee_stance: float, knee_swing: float, ankle_push: float, arm_swing: float, lean: float,
         backward: bool = False, running: bool = False, turn: float = 0.0,
         lead: str = "left") -> None:  # fmt: skip
    """A walking/running gait of ``steps`` steps, starting and ending at rest.

    Roots are not animated here: the compose step moves the body by locking the stance foot.
    """
    t = body.t
    start, end = 0.35 * cycle, 0.35 * cycle + steps * cycle / 2
    weight = envelope(t, start, end, ramp=0.5 * cycle)  # gait amplitude, 0 at the ends
    sign = -1.0 if backward else 1.0
    phase_left = np.clip(t - start, 0, end - start) / cycle * sign + (0.0 if lead == "left" else 0.5)
    hip_c, knee_c, ankle_c = _cycle_profile(stance, hip_flex, hip_ext, knee_stance, knee_swing, ankle_push)
    res = len(hip_c)

    settle(body, style)
    body.spine_bend(forward=lean * weight)
    for side, offset in (("left", 0.0), ("right", 0.5)):
        idx = (np.floor(((phase_left + offset) % 1.0) * res).astype(int)) % res
        body.hip_flex(side, weight * hip_c[idx])
        body.knee_flex(side, weight * knee_c[idx] + 0.05)
        body.ankle_flex(side, weight * ankle_c[idx])
    # Pelvis turns toward the swinging leg; the chest counter-rotates.
    swing = np.sin(2 * np.pi * phase_left)
    body.pelvis_tilt(twist_left=-0.08 * weight * swing, left=0.03 * weight * np.cos(2 * np.pi * phase_left * 2))
    body.spine_bend(twist_left=0.1 * weight * swing)

    phase_of = lambda off: (phase_left + off) % 1.0  # noqa: E731
    body.stance[:] = AUTO
    left_on, right_on = phase_of(0.0) < stance, phase_of(0.5) < stance
    active = weight > 0.3
    newest_left = phase_of(0.0) < phase_of(0.5)
    body.stance[active & left_on & (~right_on | newest_left)] = LEFT_STANCE
    body.stance[active & right_on & (~left_on | ~newest_left)] = RIGHT_STANCE
    if running:
        flying = active & ~left_on & ~right_on
        body.stance[flying] = AIRBORNE
        flight_time = (0.5 - stance) * cycle
        tau = ((phase_left % 0.5) - stance) * cycle
        body.flight[:] = np.where(flying, 0.5 * GRAVITY * tau * (flight_time - tau), 0.0)
    if turn:
        body.yaw[:] = turn * minimum_jerk((t - start) / max(end - start, 1e-6))

    # Arms swing opposite to the legs; running carries them higher with bent elbows.
    targets = {}
    for side, offset in (("left", 0.5), ("right", 0.0)):
        rest = rest_wrist(side, style)
        carried = rest + ([0.0, 0.17, 0.12] if running else [0.0, 0.02, 0.02])
        base = blend(weight, rest, carried)
        idx = (np.floor(phase_of(offset) * res).astype(int)) % res
        forward = hip_c[idx] / max(hip_flex, 1e-6) * arm_swing * weight
        targets[side] = base + np.stack([np.zeros_like(t), 0.25 * np.abs(forward), forward], -1)
    hang_arms(body, style, left=targets["left"], right=targets["right"])


class Walk(Primitive):
    name = "walk"
    travels = True

    def sample(self, rng):
        return {
            "steps": int(rng.integers(4, 9)),
            "speed": str(rng.choice(["slow", "normal", "normal", "fast"])),
            "direction": str(rng.choice(["forward", "forward", "forward", "backward"])),
            "curve": str(rng.choice(["straight", "straight", "straight", "left", "right"])),
        }

    def _cycle(self, p, style):
        return {"slow": 1.3, "normal": 1.05, "fast": 0.9}[p["speed"]] * style.tempo ** 0.5

    def duration(self, p, style):
        return self._cycle(p, style) * (0.7 + p["steps"] / 2) + 0.3

    def animate(self, body, p, style):
        amp = style.amplitude ** 0.5 * {"slow": 0.8, "normal": 1.0, "fast": 1.15}[p["speed"]]
        backward = p["direction"] == "backward"
        gait(body, style, cycle=self._cycle(p, style), steps=p["steps"], stance=0.62,
             hip_flex=(0.3 if not backward else 0.2) * amp, hip_ext=(0.22 if not backward else 0.18) * amp,
             knee_stance=0.2, knee_swing=1.05 * amp, ankle_push=0.3 * amp, arm_swing=0.12 * amp,
             lean=0.04 if not backward else -0.03, backward=backward,
             turn={"straight": 0.0, "left": 1.2, "right": -1.2}[p["curve"]])  # fmt: skip

    def phrases(self, p):
        manner = {"slow": ["slowly ", "slowly "], "normal": ["", ""], "fast": ["quickly ", "fast "]}[p["speed"]]
        d = p["direction"]
        curve = {"straight": "", "left": " while curving to the left", "right": " while curving to the right"}[p["curve"]]
        bend = {"straight": "", "left": " in a curve to the left", "right": " in a curve to the right"}[p["curve"]]
        n = number(p["steps"])
        if d == "forward":
            return [f"walks {manner[0]}forward{curve}", f"{manner[1]}walks ahead{bend}",
                    f"takes {n} steps forward{curve}", f"moves forward {manner[0]}on foot{bend}".replace(" on foot", "")]  # fmt: skip
        return [f"walks {manner[0]}backward{curve}", f"{manner[1]}walks backwards{bend}",
                f"takes {n} steps backward{curve}", f"steps {manner[0]}backward{bend}"]  # fmt: skip


class Run(Primitive):
    name = "run"
    travels = True

    def sample(self, rng):
        return {"steps": int(rng.integers(4, 9)), "speed": str(rng.choice(["jog", "run", "sprint"]))}

    def _cycle(self, p, style):
        return {"jog": 0.78, "run": 0.7, "sprint": 0.62}[p["speed"]] * style.tempo ** 0.3

    def duration(self, p, style):
        return self._cycle(p, style) * (0.7 + p["steps"] / 2) + 0.4

    def animate(self, body, p, style):
        amp = {"jog": 0.8, "run": 1.0, "sprint": 1.2}[p["speed"]] * style.amplitude ** 0.5
        gait(body, style, cycle=self._cycle(p, style), steps=p["steps"], stance=0.4, hip_flex=0.45 * amp,
             hip_ext=0.3 * amp, knee_stance=0.45, knee_swing=1.6 * amp, ankle_push=0.45, arm_swing=0.2 * amp,
             lean=0.12 * amp, running=True)  # fmt: skip

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
        return 0.72 * style.tempo**0.3 * (0.7 + p["steps"] / 2) + 0.4

    def animate(self, body, p, style):
        gait(body, style, cycle=0.72 * style.tempo**0.3, steps=p["steps"], stance=0.42, hip_flex=0.35 * style.amplitude,
             hip_ext=-0.35 * style.amplitude, knee_stance=0.3, knee_swing=1.4, ankle_push=0.35, arm_swing=0.12,
             lean=0.03, running=True)  # fmt: skip
        # In place: the hip holds its angle through stance, and nothing carries the body in flight.
        body.air_velocity[body.stance == AIRBORNE] = 0.0

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
        for side in SIDES:
            body.hip_flex(side, 1.4 * style.amplitude * lift[side])
            body.knee_flex(side, 1.6 * lift[side] + 0.05)
            body.ankle_flex(side, -0.3 * lift[side])
        body.stance[lift["left"] > 0.05] = RIGHT_STANCE
        body.stance[lift["right"] > 0.05] = LEFT_STANCE
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

    def duration(self, p, style):
        return (1.0 + p["angle"] / 180) * style.tempo

    def animate(self, body, p, style):
        t = body.t
        d = self.duration(p, style)
        sign = 1.0 if p["direction"] == "left" else -1.0
        body.yaw[:] = sign * p["angle"] * np.pi / 180 * minimum_jerk((t - 0.25) / (d - 0.5))
        settle(body, style)
        # Small alternating steps carry the turn; the foot on the inside of the turn goes first.
        steps = max(2, int(round(p["angle"] / 45)))
        step_time = (d - 0.5) / steps
        first = p["direction"]
        lift = {"left": np.zeros_like(t), "right": np.zeros_like(t)}
        for i in range(steps):
            side = first if i % 2 == 0 else ("right" if first == "left" else "left")
            t0 = 0.25 + i * step_time
            lift[side] += np.sin(np.pi * np.clip((t - t0) / step_time, 0, 1)) ** 2
        for side in SIDES:
            body.hip_flex(side, 0.35 * lift[side])
            body.knee_flex(side, 0.7 * lift[side] + 0.05)
        body.stance[lift["left"] > 0.02] = RIGHT_STANCE
        body.stance[lift["right"] > 0.02] = LEFT_STANCE
        body.head_turn(left=sign * 0.25 * envelope(t, 0.1, d - 0.4, 0.3))
        hang_arms(body, style)

    def phrases(self, p):
        d, a = p["direction"], p["angle"]
        if a == 180:
            return [f"turns around to the {d}", f"turns around", f"turns to face the other way",
                    f"turns back over the {d} shoulder"]  # fmt: skip
        if a == 360:
            return [f"turns a full circle to the {d}", f"spins around to the {d}", f"turns all the way around",
                    f"does a full turn to the {d}"]  # fmt: skip
        return [f"turns to the {d}", f"turns {d}", f"turns ninety degrees to the {d}", f"faces to the {d}"]


class StepSideways(Primitive):
    name = "step_sideways"
    travels = True

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
        keys_t, lead_x, trail_x, lead_up, trail_up, stance = [0.0], [0.0], [0.0], [0.0], [0.0], []
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
    travels = True

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
        body.hip_flex(free, 0.45 * raised)
        body.knee_flex(free, 1.4 * raised + 0.05)
        body.pelvis_tilt(left=(0.06 if hop_side == "left" else -0.06) * raised)
        flight, period = 0.3, 0.6 * style.tempo
        hip, knee, ankle = (np.zeros_like(t) for _ in range(3))
        body.stance[raised > 0.05] = LEFT_STANCE if hop_side == "left" else RIGHT_STANCE
        for i in range(p["count"]):
            t0 = 0.75 + i * period
            keys = [t0, t0 + 0.12, t0 + 0.2, t0 + 0.2 + flight, t0 + 0.2 + flight + 0.1]
            hip += keyframes(t, keys, [0.0, 0.45, 0.0, 0.05, 0.0])
            knee += keyframes(t, keys, [0.0, 0.75, 0.05, 0.15, 0.0])
            ankle += keyframes(t, keys, [0.0, 0.3, -0.5, -0.2, 0.0])
            airborne = (t >= keys[2]) & (t < keys[3])
            tau = t - keys[2]
            body.flight += np.where(airborne, 0.5 * GRAVITY * tau * (flight - tau), 0.0)
            body.stance[airborne] = AIRBORNE
            body.air_velocity[airborne] = [0.0, 0.0]
        body.hip_flex(hop_side, hip)
        body.knee_flex(hop_side, knee + 0.05)
        body.ankle_flex(hop_side, ankle)
        out = np.stack([0.12 * raised, 0.1 * raised, 0.05 * raised], -1)
        hang_arms(body, style, left=rest_wrist("left", style) + out * [1, 1, 1],
                  right=rest_wrist("right", style) + out * [-1, 1, 1])  # fmt: skip

    def phrases(self, p):
        s, c = p["side"], times(p["count"])
        return [f"hops on the {s} foot {c}", f"hops on the {s} leg {c}", f"jumps on the {s} foot {c}",
                f"stands on the {s} leg and hops {c}"]  # fmt: skip


PRIMITIVES = [Walk(), Run(), JogInPlace(), KneeRaise(), Turn(), StepSideways(), Jump(), Hop()]
del elbow_back  # imported for gestures' symmetry; not used here
