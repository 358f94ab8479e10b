"""Write tests/fixtures/scenic/official_heads.npz: logits of the official Scenic ViViT on tiny random models.

Each case is a classifier / representation_size / input size of one model kind, run by the official code
itself (`scenic.projects.vivit.model.ViViT` and `SpaceTimeViViT`), with every parameter random (so that no
zero-initialised head or cls hides a mistake). Stored per case: the parameter tree (flat 'a/b' keys), the
input (B, T, H, W, C) and the official logits; `cases` (JSON) says what each case is.

Needs jax, flax, ml_collections, immutabledict, absl-py, scipy and a Scenic checkout (SCENIC_SRC, tested at
4a38d47): `SCENIC_SRC=~/scenic python tests/make_scenic_fixtures.py`. Not run by the test suite.
"""

import json
import os
import sys
import types
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "fixtures" / "scenic" / "official_heads.npz"
D, HEADS, MLP, CLASSES, FRAMES = 8, 2, 16, 3, 4
ATTENTION = {"st": dict(type="spacetime"), "fdp": dict(type="factorized_dot_product_attention"),
             "fsa": dict(type="factorized_self_attention_block", attention_order="time_space"),
             "fe": dict(type="factorized_encoder"), "fe-avg": dict(type="factorized_encoder", spatial_only_baseline=True)}
# (kind, classifier, representation_size, (H, W))
CASES = [("st", "token", None, (8, 8)), ("st", "0", None, (8, 8)), ("st", "gmp", None, (8, 8)),
         ("st", "gsp", None, (8, 8)), ("st", "token", 6, (8, 8)), ("st", "gap", None, (16, 8)),
         ("fe", "0", None, (8, 8)), ("fe", "gmp", None, (8, 8)), ("fe", "gsp", 6, (8, 8)), ("fe", "token", 5, (16, 8)),
         ("fe-avg", "gmp", None, (8, 8)), ("fsa", "gsp", None, (8, 8)), ("fsa", "gmp", None, (8, 16)),
         ("fdp", "gmp", 6, (8, 8))]


def official_model(kind: str, classifier: str, representation_size: int | None):
    import ml_collections
    from scenic.projects.vivit import model as vivit_model

    common = dict(num_classes=CLASSES, hidden_size=D, representation_size=representation_size, classifier=classifier,
                  patches=ml_collections.ConfigDict(dict(size=(4, 4, 2))),  # (h, w, t), as the official configs
                  temporal_encoding_config=ml_collections.ConfigDict(dict(method="3d_conv", kernel_init_method=None)),
                  attention_config=ml_collections.ConfigDict(ATTENTION[kind]), dropout_rate=0.0, attention_dropout_rate=0.0)
    if kind.startswith("fe"):
        return vivit_model.SpaceTimeViViT(spatial_mlp_dim=MLP, spatial_num_layers=1, spatial_num_heads=HEADS,
                                          temporal_mlp_dim=MLP, temporal_num_layers=1, temporal_num_heads=HEADS, **common)
    return vivit_model.ViViT(mlp_dim=MLP, num_layers=1, num_heads=HEADS, **common)


def main() -> None:
    sys.path.insert(0, os.environ["SCENIC_SRC"])
    for name in ("clu", "clu.parameter_overview", "tensorflow", "tensorflow.io"):  # imported, unused by the models
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["tensorflow.io"].gfile = None
    import jax
    from flax.traverse_util import flatten_dict, unflatten_dict

    arrays, cases = {}, []
    for i, (kind, classifier, representation_size, (h, w)) in enumerate(CASES):
        model = official_model(kind, classifier, representation_size)
        rng = np.random.default_rng(i)
        x = rng.standard_normal((1, FRAMES, h, w, 3)).astype(np.float32)
        shapes = flatten_dict(jax.device_get(model.init(jax.random.PRNGKey(i), x, train=False)["params"]))
        params = {k: (0.5 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in shapes.items()}
        logits = model.apply({"params": unflatten_dict(params)}, x, train=False)
        arrays.update({f"{i}/params/{'/'.join(k)}": v for k, v in params.items()})
        arrays.update({f"{i}/x": x, f"{i}/logits": np.asarray(logits)})
        cases.append(dict(kind=kind, classifier=classifier, representation_size=representation_size, size=[h, w]))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, cases=np.array(json.dumps(cases)), **arrays)
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
