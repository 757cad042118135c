"""The embedded default data: procedural text-motion pairs in HumanML3D's layout.

``python -m motion_env.procedural --out data/procedural --num-clips 2000 --seed 0``
"""

from motion_env.procedural.dataset import PRIMITIVES, ensure_dataset, generate_dataset

__all__ = ["PRIMITIVES", "ensure_dataset", "generate_dataset"]
